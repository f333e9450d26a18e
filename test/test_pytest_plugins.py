"""pytest.ini keeps the suite immune to the pytest plugins of a ROS install (issue 11, item 15).

A launch_testing from before ros2/launch#972/#974 registers (entry point ``pytest11``, name ``launch_testing``) a
``pytest_pycollect_makemodule(path, parent)`` hook, which pytest 9 rejects at start with PluginValidationError. The
test installs a plugin of that shape under that name on the path of a child pytest and runs a trivial test file with
and without the project's pytest.ini.
"""
import os
import subprocess
import sys
from pathlib import Path

PYTEST_INI = Path(__file__).resolve().parents[1] / "pytest.ini"
OLD_HOOKS = '''
import pytest

def pytest_pycollect_makemodule(path, parent):  # the pre-#972 signature: `path` is gone in pytest 9
    return pytest.Module.from_parent(parent, path=parent.path)
'''


def run_pytest(tmp_path: Path, inifile: Path) -> subprocess.CompletedProcess:
    plugins = tmp_path / "plugins"
    dist_info = plugins / "launch_testing-3.4.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: launch_testing\nVersion: 3.4.0\n")
    (dist_info / "entry_points.txt").write_text("[pytest11]\nlaunch_testing = old_launch_testing_hooks\n")
    (plugins / "old_launch_testing_hooks.py").write_text(OLD_HOOKS)
    tests = tmp_path / "tests"
    tests.mkdir(exist_ok=True)
    (tests / "test_trivial.py").write_text("def test_trivial():\n    assert True\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_DISABLE_PLUGIN_AUTOLOAD"}
    env["PYTHONPATH"] = os.pathsep.join([str(plugins), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "pytest", "-c", str(inifile), "--rootdir", str(tests), "-q",
                           "-p", "no:cacheprovider", str(tests)], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)


def test_an_old_launch_testing_plugin_breaks_plain_pytest(tmp_path):
    """The reproduction is real: without the project's pytest.ini the old plugin stops pytest before any test."""
    empty_ini = tmp_path / "empty.ini"
    empty_ini.write_text("[pytest]\n")
    result = run_pytest(tmp_path, empty_ini)
    assert result.returncode != 0
    assert "PluginValidationError" in result.stdout + result.stderr and "pytest_pycollect_makemodule" in (
        result.stdout + result.stderr)


def test_the_project_pytest_ini_disables_it(tmp_path):
    result = run_pytest(tmp_path, PYTEST_INI)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
