"""The colcon install holds the generated interfaces and the hand-written package side by side in one `actedit_ros`.

The install checked is the `colcon_install` fixture's (test/conftest.py): the workspace's under `colcon test`, this
checkout's install/ under scripts/env.sh.
"""
import os
import subprocess
import sys
from pathlib import Path

from conftest import find_colcon_install

PYTHON_DIR = f"python{sys.version_info.major}.{sys.version_info.minor}"

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


def test_install_alone_provides_interfaces_and_python_modules(tmp_path, colcon_install):
    site = colcon_install / "lib" / PYTHON_DIR / "site-packages"
    env = dict(os.environ, PYTHONPATH=str(site))
    result = subprocess.run([sys.executable, "-c", CHECK.format(site=str(site))], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok 0.0 True"


def test_install_has_node_executable_launch_and_config(colcon_install):
    assert os.access(colcon_install / "lib" / "actedit_ros" / "goal_node", os.X_OK)
    assert os.access(colcon_install / "lib" / "actedit_ros" / "goal_lifecycle_node", os.X_OK)
    assert list((colcon_install / "share" / "actedit_ros" / "launch").glob("*.launch.py"))
    assert list((colcon_install / "share" / "actedit_ros" / "config").glob("*.yaml"))
    assert (colcon_install / "share" / "actedit_ros" / "package.xml").is_file()


def test_the_install_found_is_the_one_on_the_ament_prefix_path(tmp_path, monkeypatch):
    """A workspace's install on AMENT_PREFIX_PATH (what colcon test and install/setup.bash set) is found, and wins
    over this checkout's install/; without one, the checkout's install/ (scripts/setup.sh) is used."""
    workspace = tmp_path / "ws" / "install" / "actedit_ros"
    (workspace / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (workspace / "share" / "ament_index" / "resource_index" / "packages" / "actedit_ros").write_text("")
    other = tmp_path / "ws" / "install" / "other_pkg"
    other.mkdir()
    monkeypatch.setenv("AMENT_PREFIX_PATH", os.pathsep.join([str(other), str(workspace)]))
    assert find_colcon_install() == workspace
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(other))
    local = Path(__file__).resolve().parents[1] / "install" / "actedit_ros"
    assert find_colcon_install() == (local if (local / "share" / "actedit_ros" / "package.xml").is_file() else None)
