"""The goal node as a process: Ctrl-C during a prediction, and bad command lines (real subprocess, real rclpy)."""
import os
import signal
import subprocess
import time

import pytest
import rclpy
from node_harness import WAIT, frame, stamp, start_module

from actedit_ros.editing.tiny import make_tiny_model
from actedit_ros.ros import goal_node as goal_node_module
from actedit_ros.ros.conversions import rgb_to_image_msg
from actedit_ros.srv import PredictGoal

CONFIG = os.path.join(os.path.dirname(__file__), "..", "config", "goal_node.yaml")
LEAKS = ("Traceback", "InvalidHandle", "never retrieved", "Exception")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"), seed=0)


def start_node(name: str, model, *ros_args: str) -> subprocess.Popen:
    return start_module("actedit_ros.ros.goal_node", "--ros-args", "-r", f"__node:={name}",
                        "-p", f"model_path:={model}", "-p", "device:=cpu", "-p", "torch_threads:=1", *ros_args)


def test_ctrl_c_during_a_prediction_answers_the_caller_and_exits_promptly(tiny_model):
    """1000 denoising steps of the tiny model at a 96-pixel working size take minutes here (at its own 32 pixels a
    quiet machine once finished them in 18 s, inside the wait): the process must not wait for them."""
    process = start_node("sigint_node", tiny_model, "-p", "steps:=1000", "-p", "resolution:=96")
    context = rclpy.Context()
    rclpy.init(context=context)
    client_node = rclpy.create_node("sigint_planner", context=context)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(client_node)
    try:
        client = client_node.create_client(PredictGoal, "/sigint_node/predict_goal")
        assert client.wait_for_service(timeout_sec=60), process.stderr.read() if process.poll() is not None else ""

        def call(instruction):
            request = PredictGoal.Request(instruction=instruction, image=rgb_to_image_msg(frame(1), stamp(1)))
            return client.call_async(request)

        def spin_until(future, timeout=WAIT):
            deadline = time.monotonic() + timeout
            while not future.done() and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
            return future.done()

        def spin_until_any(futures, timeout=WAIT):
            deadline = time.monotonic() + timeout
            while not any(f.done() for f in futures) and time.monotonic() < deadline:
                executor.spin_once(timeout_sec=0.05)
            return [f for f in futures if f.done()]

        unanswered = [call("open the drawer")]
        deadline = time.monotonic() + WAIT
        while True:  # until a call is told busy: another one's prediction is running
            assert time.monotonic() < deadline, "no busy: answer, so the prediction never started"
            # A response sent before the service's reply writer has matched this client is lost (DDS discovery),
            # and a later call may reach the node first: whichever call is unanswered when one is told busy is the
            # one predicting.
            probe = call("close the drawer")
            if spin_until(probe, timeout=2.0) and probe.result().message.startswith("busy:"):
                break
            unanswered.append(probe)
        waiting = [f for f in unanswered if not f.done()]
        assert waiting, [f.result().message for f in unanswered]

        process.send_signal(signal.SIGINT)
        signalled = time.monotonic()
        answered = spin_until_any(waiting)
        assert answered, "the waiting caller got no answer after Ctrl-C"
        response = answered[0].result()
        assert not response.success and response.message.startswith("cancelled:"), response.message
        assert "shutting down (SIGINT)" in response.message and response.goal_id == ""
        out, err = process.communicate(timeout=WAIT)  # the prediction alone would take about a minute more
        exit_seconds = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        executor.shutdown()
        client_node.destroy_node()
        rclpy.shutdown(context=context)
    assert process.returncode == 0, err
    assert not [leak for leak in LEAKS if leak in err + out], err
    assert "stopping (SIGINT)" in err + out
    print(f"exit {exit_seconds:.1f} s after SIGINT")  # informational: timings belong in bench/, not in asserts


@pytest.mark.parametrize("args, expected", [
    (["--ros-args", "--bogus-flag"], "unknown arguments after --ros-args: ['--bogus-flag']"),
    (["--ros-args", "--params-file", "config/no_such.yaml"], "cannot use --params-file config/no_such.yaml: no such file"),
    (["--ros-args", "--params-file", "{bad_yaml}"], "cannot use --params-file {bad_yaml}: not a valid parameters file"),
    (["--ros-args", "-r"], "Couldn't parse trailing -r flag"),
])
def test_bad_command_line_is_one_clear_line(tmp_path, capfd, args, expected):
    bad_yaml = tmp_path / "broken.yaml"
    bad_yaml.write_text("goal_node:\n  ros__parameters:\n    steps: [1, 2\n")
    args = [a.format(bad_yaml=bad_yaml) for a in args]
    code = goal_node_module.main(["goal_node", *args])
    err = capfd.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("goal_node: bad arguments: "), err
    assert expected.format(bad_yaml=bad_yaml) in err and "Traceback" not in err and "/project/src" not in err
    if "params-file" in args:
        assert '"$(ros2 pkg prefix --share actedit_ros)/config/goal_node.yaml"' in err


def test_bad_value_in_params_file_is_one_clear_line(tmp_path, capfd):
    params = tmp_path / "params.yaml"
    params.write_text("goal_node:\n  ros__parameters:\n    steps: many\n")
    code = goal_node_module.main(["goal_node", "--ros-args", "--params-file", str(params), "-p", "device:=cpu"])
    err = capfd.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "cannot start" in err and "'steps'" in err, err


def test_shipped_params_file_parses(capfd, tmp_path):
    """config/goal_node.yaml itself is accepted (it fails later, on the missing model this test asks for)."""
    missing = tmp_path / "no_model"
    code = goal_node_module.main(["goal_node", "--ros-args", "--params-file", os.path.abspath(CONFIG),
                                  "-p", f"model_path:={missing}"])
    err = capfd.readouterr().err
    assert code == 1 and "bad arguments" not in err and str(missing) in err, err
