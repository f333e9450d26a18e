"""launch/goal_node.launch.py and config/goal_node.yaml against the node's declared parameters.

Where launch_ros is installed (a ROS 2 install) the launch description is built; everywhere the launch file's
argument table is read with ast (launch_ros is not on PyPI) and compared with the node, so they cannot drift apart.
"""
import ast
import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import rclpy
import torch
import yaml

from actedit_ros.editing import GoalPredictor
from actedit_ros.editing.tiny import make_tiny_model
from actedit_ros.ros.goal_node import NODE_PARAMETERS, GoalNode, main

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_FILE = ROOT / "launch" / "goal_node.launch.py"
CONFIG_FILE = ROOT / "config" / "goal_node.yaml"
PARAMETERS = {p.name: p for p in NODE_PARAMETERS}
TYPE_NAMES = {str: "str", int: "int", float: "float"}
# Every node parameter is tuned per robot (model, device, dtype, scheduler, sampling, topics, QoS, thresholds), so
# every one is a launch argument (issue 11, item 12).


def launch_argument_table():
    tree = ast.parse(LAUNCH_FILE.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "LAUNCH_ARGUMENTS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("launch file has no LAUNCH_ARGUMENTS table")


def test_launch_arguments_match_node_parameters():
    table = launch_argument_table()
    names = [name for name, _, _ in table]
    assert len(names) == len(set(names)), "duplicate launch arguments"
    unknown = set(names) - set(PARAMETERS)
    assert not unknown, f"launch arguments that are not node parameters: {unknown}"
    missing = set(PARAMETERS) - set(names)
    assert not missing, f"node parameters without a launch argument: {missing}"
    for name, kind, description in table:
        assert kind == TYPE_NAMES[type(PARAMETERS[name].default)], f"{name}: launch casts to {kind}"
        assert len(description) > 15, f"{name} has no real description"


def test_launch_file_structure():
    source = LAUNCH_FILE.read_text()
    tree = ast.parse(source)
    functions = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert "generate_launch_description" in functions
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    node_calls = [c for c in calls if getattr(c.func, "id", "") == "Node"]
    assert len(node_calls) == 1
    keywords = {k.arg: k.value for k in node_calls[0].keywords}
    # the executable CMakeLists.txt installs, in the package package.xml names
    assert ast.literal_eval(keywords["package"]) == "actedit_ros"
    assert ast.literal_eval(keywords["executable"]) == "goal_node"
    assert "RENAME goal_node" in (ROOT / "CMakeLists.txt").read_text()
    assert "<name>actedit_ros</name>" in (ROOT / "package.xml").read_text()
    assert '"config", "goal_node.yaml"' in source and CONFIG_FILE.is_file()
    declared = [c for c in calls if getattr(c.func, "id", "") == "DeclareLaunchArgument"]
    assert declared and all(any(k.arg == "description" for k in c.keywords) for c in declared)


def test_launch_file_starts_the_managed_node_and_drives_it_to_active():
    """managed:=true: a launch_ros LifecycleNode running the installed goal_lifecycle_node, configured at once and
    activated when configuring ends in inactive (launch_ros's documented ChangeState / OnStateTransition events)."""
    source = LAUNCH_FILE.read_text()
    tree = ast.parse(source)
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    lifecycle_calls = [c for c in calls if getattr(c.func, "id", "") == "LifecycleNode"]
    assert len(lifecycle_calls) == 1
    assert ast.literal_eval({k.arg: k.value for k in lifecycle_calls[0].keywords}["executable"]) == "goal_lifecycle_node"
    assert "RENAME goal_lifecycle_node" in (ROOT / "CMakeLists.txt").read_text()
    assert (ROOT / "scripts" / "actedit_goal_lifecycle_node").is_file()
    handlers = [{k.arg: k.value for k in c.keywords} for c in calls if getattr(c.func, "id", "") == "OnStateTransition"]
    ends = {(ast.literal_eval(h["start_state"]), ast.literal_eval(h["goal_state"])): h for h in handlers}
    assert sorted(ends) == [("configuring", "inactive"), ("configuring", "unconfigured")]
    assert "TRANSITION_CONFIGURE" in source and "TRANSITION_ACTIVATE" in source
    # a failed configure fails the launch (exit 1) instead of leaving it waiting on an unconfigured node for ever
    # (what `ros2 launch ... managed:=true model_path:=/nonexistent` did)
    failed = ast.unparse(ends["configuring", "unconfigured"]["entities"])
    assert "OpaqueFunction(function=_configure_failed)" in failed
    raising = next(f for f in tree.body if isinstance(f, ast.FunctionDef) and f.name == "_configure_failed")
    assert any(isinstance(n, ast.Raise) for n in ast.walk(raising))
    assert 'DeclareLaunchArgument("managed", default_value="false"' in source


needs_launch_ros = pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None,
                                      reason="launch_ros is not installed (not on PyPI)")
# What `ros2 launch FILE name:=value ...` does (ros2launch.api.launch_a_launch_file), minus ros2cli.
LAUNCH = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # a background test runner may pass SIGINT on ignored
from launch import LaunchDescription, LaunchService
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
service = LaunchService(argv=sys.argv[2:])
service.include_launch_description(LaunchDescription([IncludeLaunchDescription(
    PythonLaunchDescriptionSource(sys.argv[1]), launch_arguments=[a.split(":=", 1) for a in sys.argv[2:]])]))
sys.exit(service.run())
"""


def run_launch(install: Path, arguments: list[str], interrupt_when: str = "", timeout: float = 120) -> tuple[int, str]:
    """Launch launch/goal_node.launch.py with the node from ``install``; SIGINT it (Ctrl-C) once a line of its
    output holds ``interrupt_when``. Returns the launch's exit code and its output."""
    env = dict(os.environ, AMENT_PREFIX_PATH=os.pathsep.join([str(install), os.environ.get("AMENT_PREFIX_PATH", "")]))
    # its own process group, so that a launch killed at the timeout takes its node with it (one was left running)
    process = subprocess.Popen([sys.executable, "-c", LAUNCH, str(LAUNCH_FILE), *arguments], env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)

    def kill_group():
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    killer = threading.Timer(timeout, kill_group)
    killer.start()
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if interrupt_when and interrupt_when in line:
                process.send_signal(signal.SIGINT)
                interrupt_when = ""
        return process.wait(), "".join(lines)
    finally:
        killer.cancel()
        kill_group()


@needs_launch_ros
@pytest.mark.parametrize("argument, error", [
    ("model_path:={missing}", "cannot start: model directory {missing} does not exist"),
    ("scheduler:=no_such_sampler", "cannot start: parameter scheduler='no_such_sampler' is not one of"),
])
def test_launch_fails_when_the_node_cannot_start(tmp_path, colcon_install, argument, error):  # pragma: no cover
    """`ros2 launch ... model_path:=/nonexistent` ends non-zero, not 0, with the node's error; the scheduler
    argument reaches the node (a bad one is refused by it)."""
    missing = tmp_path / "no_model_here"
    code, output = run_launch(colcon_install, [argument.format(missing=missing), "device:=cpu"])
    assert code == 1, output
    assert error.format(missing=missing) in output and "exited with code 1" in output, output


@needs_launch_ros
def test_launch_ends_cleanly_on_ctrl_c(tmp_path, colcon_install):  # pragma: no cover - runs on a ROS 2 install
    """A node that started and is stopped by Ctrl-C is no failure: the launch exits 0."""
    model = make_tiny_model(tmp_path / "tiny")
    code, output = run_launch(colcon_install, [f"model_path:={model}", "device:=cpu", "torch_threads:=1"],
                              interrupt_when="ready:")
    assert "ready:" in output and code == 0, output


@needs_launch_ros
def test_managed_launch_drives_the_lifecycle_node_to_active(tmp_path, colcon_install):  # pragma: no cover
    """managed:=true: the lifecycle node is configured and activated by the launch ("ready:" is logged when its
    interfaces come up, in activate), and Ctrl-C still ends the launch with 0."""
    model = make_tiny_model(tmp_path / "tiny")
    code, output = run_launch(colcon_install, [f"model_path:={model}", "device:=cpu", "torch_threads:=1",
                                               "managed:=true"], interrupt_when="ready:")
    assert "ready:" in output and code == 0, output


@needs_launch_ros
def test_managed_launch_fails_when_configure_fails(tmp_path, colcon_install):  # pragma: no cover
    """managed:=true with a model_path without a model: configure fails, and the launch ends with 1 (it kept
    running with the node unconfigured before)."""
    missing = tmp_path / "no_model_here"
    code, output = run_launch(colcon_install, [f"model_path:={missing}", "device:=cpu", "managed:=true"], timeout=60)
    assert code == 1, output
    assert f"model directory {missing} does not exist" in output and "configure failed" in output, output


@needs_launch_ros
def test_launch_description_builds():  # pragma: no cover - runs on a ROS 2 install
    from launch.actions import DeclareLaunchArgument

    spec = importlib.util.spec_from_file_location("goal_node_launch", LAUNCH_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    names = {a.name for a in description.entities if isinstance(a, DeclareLaunchArgument)}
    assert {name for name, _, _ in module.LAUNCH_ARGUMENTS} <= names


def test_config_file_holds_the_node_defaults():
    config = yaml.safe_load(CONFIG_FILE.read_text())
    values = config["/**"]["ros__parameters"]
    assert set(values) == set(PARAMETERS), set(values) ^ set(PARAMETERS)
    for name, value in values.items():
        default = PARAMETERS[name].default
        assert type(value) is type(default) and value == default, f"{name}: config {value!r}, node {default!r}"


def test_node_loads_the_config_file(tmp_path):
    """The params file is accepted by the real node (types match, `/**` applies) and its values win."""
    torch.set_num_threads(1)
    predictor = GoalPredictor.from_pretrained(str(make_tiny_model(tmp_path / "tiny")), device="cpu")
    changed = tmp_path / "changed.yaml"
    config = yaml.safe_load(CONFIG_FILE.read_text())
    config["/**"]["ros__parameters"].update(steps=7, stale_timeout=2.5, qos_reliability="reliable")
    changed.write_text(yaml.safe_dump(config))
    context = rclpy.Context()
    rclpy.init(context=context)
    try:
        node = GoalNode(predictor=predictor, node_name="config_test_node", context=context,
                        cli_args=["--ros-args", "--params-file", str(changed), "-r", "~/image:=/camera/image_raw"])
        try:
            assert node.get_parameter("steps").value == 7
            assert node.get_parameter("stale_timeout").value == 2.5
            assert node.get_parameter("qos_reliability").value == "reliable"
            assert node.get_parameter("image_topic").value == "~/image"
            assert node.image_sub.topic_name == "/camera/image_raw"  # ~/image is remappable
        finally:
            node.destroy_node()
    finally:
        rclpy.shutdown(context=context)


def test_installed_executable_fails_fast_on_a_missing_model(tmp_path, colcon_install):
    """The executable CMake installs (what `ros2 run` / the launch file start) runs main() and names the path."""
    executable = colcon_install / "lib" / "actedit_ros" / "goal_node"
    missing = tmp_path / "no_model_here"
    result = subprocess.run([str(executable), "--ros-args", "-p", f"model_path:={missing}", "-p", "device:=cpu"],
                            capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "cannot start" in result.stderr and str(missing) in result.stderr and "Traceback" not in result.stderr


# A remap a shell would tilde-expand: `-r ~/image:=...` becomes `-r $HOME/image:=...` and silently remaps nothing.
UNQUOTED_REMAP = re.compile(r"(?<![\'\"\w])~/[\w/]*:=")


def test_shown_remaps_are_quoted(capsys):
    """Every `~/name:=` remap a user may copy into a shell (README, launch file, the node's --help) is quoted."""
    with pytest.raises(SystemExit) as exit_info:
        main(["goal_node", "--help"])
    assert exit_info.value.code == 0
    texts = {"goal_node --help": capsys.readouterr().out, "README.md": (ROOT / "README.md").read_text(),
             "launch/goal_node.launch.py": LAUNCH_FILE.read_text()}
    assert "'~/image:=/camera/image_raw'" in texts["goal_node --help"]
    for where, text in texts.items():
        assert not UNQUOTED_REMAP.search(text), f"{where}: unquoted remap {UNQUOTED_REMAP.search(text).group()!r}"
