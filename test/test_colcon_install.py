"""The colcon install holds the generated interfaces and the hand-written package side by side in one `actedit_ros`."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "install" / "actedit_ros"
SITE = INSTALL / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"

CHECK = """
import actedit_ros, actedit_ros.editing, actedit_ros.image_conversion
from actedit_ros.msg import GoalImage, Progress
from actedit_ros.srv import PredictGoal
assert actedit_ros.__file__.startswith({site!r}), actedit_ros.__file__
assert actedit_ros.editing.__file__.startswith({site!r}), actedit_ros.editing.__file__
request = PredictGoal.Request(instruction="open the drawer")
assert request.seed == -1 and request.num_candidates == 1
print("ok", Progress().progress, GoalImage().goal_id == "")
"""


@pytest.mark.skipif(not SITE.is_dir(), reason="no colcon install (run scripts/setup.sh)")
def test_install_alone_provides_interfaces_and_python_modules(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(SITE))
    result = subprocess.run([sys.executable, "-c", CHECK.format(site=str(SITE))], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok 0.0 True"


@pytest.mark.skipif(not SITE.is_dir(), reason="no colcon install (run scripts/setup.sh)")
def test_install_has_node_executable_launch_and_config():
    assert os.access(INSTALL / "lib" / "actedit_ros" / "goal_node", os.X_OK)
    assert list((INSTALL / "share" / "actedit_ros" / "launch").glob("*.launch.py"))
    assert list((INSTALL / "share" / "actedit_ros" / "config").glob("*.yaml"))
    assert (INSTALL / "share" / "actedit_ros" / "package.xml").is_file()
