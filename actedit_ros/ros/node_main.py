"""``goal_node``'s process: argument parsing, start-up errors, spinning, and a clean stop on Ctrl-C / SIGTERM.

Every way the command line or the start-up can be wrong (unknown ``--ros-args``, an unreadable or malformed
``--params-file``, a bad parameter value, a missing model) ends with one line on stderr naming what to fix and a
non-zero exit status, not a traceback.

Stopping: rclpy's own signal handler is not installed, because it shuts the context down at once, while a
``predict_goal`` caller may still be waiting: its answer could then never be sent (``InvalidHandle``, and "exception
was never retrieved" from the executor). Instead SIGINT/SIGTERM stop the spin loop; the node then answers every
waiting caller (``success: false``, a message starting ``cancelled:``), the executor finishes its callbacks, a
running prediction stops at its next denoising step (:mod:`actedit_ros.ros.prediction_worker`), and the node, then
the context, are shut down: the process exits promptly instead of after the prediction. A second signal while
stopping interrupts the clean-up.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import time

import rclpy
import rclpy.exceptions
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.signals import SignalHandlerOptions

from actedit_ros.editing import ModelLoadError
from actedit_ros.ros.stop_signals import StopOnSignals

PROG = "goal_node"
INSTALLED_PARAMS = '"$(ros2 pkg prefix --share actedit_ros)/config/goal_node.yaml"'
CALLBACK_GRACE = 0.3  # seconds for callbacks already taken to start (and see begin_shutdown) before the executor stops
RESPONSE_GRACE = 0.2  # seconds for responses just sent to reach their callers before the node's endpoints go
ACTION_END_WAIT = 5.0  # seconds the executor keeps spinning, after begin_shutdown, for action goals to end


def _parser(prog: str = PROG) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="ROS 2 node that predicts visual goal images for instructions and publishes progress toward "
                    f"them. Configure it with ROS parameters, e.g. --ros-args --params-file {INSTALLED_PARAMS} "
                    "-p model_path:=/path/to/model -r '~/image:=/camera/image_raw' (quoted: shells expand ~/).")
    parser.add_argument("--threads", type=int, default=4,
                        help="executor threads (camera and services run concurrently; at least 2)")
    return parser


def ros_args_error(err: Exception) -> str:
    """One line for an rcl argument-parsing error: what is wrong, which flag to fix, no C source locations."""
    text = re.sub(r",? at /\S+:\d+", "", str(err)).strip()
    text = re.sub(r"^Failed to parse ROS arguments: ", "", text)
    if type(err).__name__ == "UnknownROSArgsError":
        return (f"unknown arguments after --ros-args: {text}; ROS arguments are -p NAME:=VALUE, -r FROM:=TO, "
                f"--params-file FILE, --log-level LEVEL (ros2 run actedit_ros goal_node --help)")
    match = re.search(r"--params-file (.+?)'", text)
    if match:
        path = match.group(1)
        reason = ("no such file" + ("" if os.path.isabs(path) else f" in {os.getcwd()}")
                  if not os.path.exists(path) else f"not a valid parameters file ({text.split('Error: ')[-1]})")
        return f"cannot use --params-file {path}: {reason}. The installed copy is {INSTALLED_PARAMS}"
    return text


def _spin_until_stopped(node, executor: MultiThreadedExecutor) -> None:
    with StopOnSignals(executor.wake, second_signal_interrupts=True) as stop:
        while stop.requested is None and node.context.ok():
            executor.spin_once(timeout_sec=0.5)
        reason = stop.requested or "the ROS context was shut down"
        node.get_logger().info(f"stopping ({reason})")
        node.begin_shutdown(reason)
        _send_action_results(node, executor)
        # No callback is taken once spin_once stops, but rclpy's MultiThreadedExecutor.shutdown destroys its guard
        # condition before its threads finish, and a callback just taken triggers that guard before it runs
        # (InvalidHandle, "exception was never retrieved"). So let the taken ones start, and waiting callers see
        # begin_shutdown, first.
        time.sleep(CALLBACK_GRACE)
        executor.shutdown(timeout_sec=10.0)  # waits for the callbacks in flight: each waiting caller is answered
        time.sleep(RESPONSE_GRACE)


def _send_action_results(node, executor: MultiThreadedExecutor) -> None:
    """begin_shutdown ends every reach_visual_goal goal, but rclpy sends a goal's result from an executor task that
    runs after its execute callback returned: keep spinning until no goal executes and every result went out."""
    action = getattr(node, "goal_action", None)
    if action is None:
        return
    deadline = time.monotonic() + ACTION_END_WAIT
    while (action.busy or action.results_pending()) and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)


def main(argv: list[str] | None = None, node_class=None, prog: str = PROG) -> int:
    """Entry point of ``lib/actedit_ros/goal_node`` (``ros2 run actedit_ros goal_node --ros-args ...``); with
    ``node_class`` GoalLifecycleNode, of ``goal_lifecycle_node`` (its model loads at ``configure``)."""
    from actedit_ros.ros.goal_node import GoalNode  # noqa: PLC0415 - goal_node re-exports this main

    node_class = node_class or GoalNode
    argv = sys.argv if argv is None else argv
    context = rclpy.Context()
    node = None
    try:
        try:
            args = _parser(prog).parse_args(rclpy.utilities.remove_ros_args(argv)[1:])
            rclpy.init(args=argv, context=context, signal_handler_options=SignalHandlerOptions.NO)
        except RuntimeError as err:  # rclpy's UnknownROSArgsError / RCLInvalidROSArgsError
            print(f"{prog}: bad arguments: {ros_args_error(err)}", file=sys.stderr)
            return 2
        node = node_class(context=context)
        executor = MultiThreadedExecutor(num_threads=max(2, args.threads), context=context)
        executor.add_node(node)
        _spin_until_stopped(node, executor)
    except (ModelLoadError, ValueError, rclpy.exceptions.ParameterException) as err:
        print(f"{prog}: cannot start: {err}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, ExternalShutdownException):  # during start-up, or a second signal while stopping
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown(context=context)
    return 0
