"""``~/reach_visual_goal`` over real rclpy.action / Fast DDS (harness: test/node_harness.py, tiny random model).

Goals from the tiny model are random pictures that a camera frame cannot be registered against, so here the
harness's predictor returns the start image with one block inverted (``GatedPredictor.edit_start``, after running
the real model): with the pixel scorer (the harness's setting) a camera frame equal to that goal scores progress 1,
which makes ``reached`` deterministic. The embedded default editor with the learned scorer on a replayed world
episode is test_the_default_model_reaches_a_world_goal_with_the_learned_scorer.
"""
import math
import os
import signal
import threading

import numpy as np
import pytest
import rclpy
from action_msgs.msg import GoalStatus
from node_harness import (  # noqa: F401 - model_dir and ros are fixtures
    GOOD_INSTRUCTION,
    WAIT,
    Planner,
    deliver_frame,
    ensure_goal,
    frame,
    model_dir,
    ros,
    spin_in_background,
    stamp,
    start_module,
    wait_for,
)
from rclpy.action import ActionClient
from rclpy.parameter import Parameter
from std_srvs.srv import Trigger

from actedit_ros.action import ReachVisualGoal
from actedit_ros.editing import GoalPredictor
from actedit_ros.ros.conversions import image_msg_to_rgb, rgb_to_image_msg
from actedit_ros.ros.goal_node import GoalNode
from actedit_ros.world import generate_episode
from actedit_ros.world.readout import EndStateReadout

Result = ReachVisualGoal.Result
ACTION = "/goal_node/reach_visual_goal"
FEEDBACK_TOPIC = ACTION + "/_action/feedback"


def wait_until_feedback_reaches(node, clients: int) -> None:
    """Until the node's graph sees `clients` feedback subscriptions: feedback is a plain topic, and a client whose
    subscription is not discovered yet misses what is published meanwhile (wait_for_server only covers the
    services), which a loaded machine made visible."""
    wait_for(lambda: node.count_subscribers(FEEDBACK_TOPIC) >= clients, f"{clients} feedback subscription(s)")


class Goal:
    """One goal sent by an action client: its feedback as it arrives, its handle and result futures."""

    def __init__(self, client: ActionClient, **fields):
        self.feedback: list = []
        request = ReachVisualGoal.Goal(**fields)
        assert client.wait_for_server(WAIT)
        sent = client.send_goal_async(request, feedback_callback=lambda msg: self.feedback.append(msg.feedback))
        wait_for(sent.done, "the goal response")
        self.handle = sent.result()
        self.result_future = self.handle.get_result_async() if self.handle.accepted else None

    def result(self, what="the action result", timeout=WAIT):
        wait_for(self.result_future.done, what, timeout)
        return self.result_future.result()

    @property
    def done(self) -> bool:
        return self.result_future.done()

    def tracking(self):
        """The first tracking feedback (goal id and image), once it arrives."""
        return wait_for(lambda: [f for f in self.feedback if f.phase == "tracking"], "the tracking feedback")[0]

    def cancel(self):
        cancel = self.handle.cancel_goal_async()
        wait_for(cancel.done, "the cancel response")
        return cancel.result()


@pytest.fixture(scope="module")
def client(ros):
    _, planner, predictor = ros
    predictor.edit_start = True
    action_client = ActionClient(planner.node, ReachVisualGoal, ACTION)
    wait_until_feedback_reaches(ros[0], 1)
    # Not destroyed here: the harness's executor still spins the planner node, and destroying a waitable under a
    # spinning executor races with its wait set (rclpy); it goes with the planner node's context.
    yield action_client
    predictor.edit_start = False


def stream_until(planner, rgb, first_sec, condition, what):
    """Publish ``rgb`` with increasing stamps until ``condition()`` holds (best-effort camera: frames may drop)."""
    for sec in range(first_sec, first_sec + 400):
        planner.send_frame(rgb, sec)
        try:
            return wait_for(condition, what, timeout=0.1)
        except AssertionError:
            continue
    raise AssertionError(f"timed out waiting for {what}")


def start_tracking(ros, client, sec, **fields):
    node, planner, _ = ros
    deliver_frame(node, planner, frame(sec), sec)
    goal = Goal(client, instruction=fields.pop("instruction", GOOD_INSTRUCTION), **fields)
    assert goal.handle.accepted
    return goal, goal.tracking()


# ------------------------------------------------------------------------------------------------- reached
def test_goal_is_predicted_tracked_and_reached_with_the_same_goal_everywhere(ros, client):
    node, planner, _ = ros
    goal, first = start_tracking(ros, client, 1000, seed=3)
    assert [f.phase for f in goal.feedback[:2]] == ["predicting", "tracking"]
    assert first.goal_id.startswith("goal-") and first.goal_id == node.current_goal_id
    goal_rgb = image_msg_to_rgb(first.goal_image)
    assert goal_rgb.shape == (120, 160, 3)
    latched = wait_for(lambda: [g for g in planner.goals if g.goal_id == first.goal_id], "the latched goal")[-1]
    np.testing.assert_array_equal(image_msg_to_rgb(latched.goal_image), goal_rgb)  # ~/goal shows the action's goal
    assert latched.seed == 3 and node.stats.last_prediction.goal_id == first.goal_id
    # the start frame scores no progress; the goal image itself does, until reached
    planner.send_frame(frame(1000), 1001)
    wait_for(lambda: [f for f in goal.feedback if f.frame_stamp.sec == 1001], "feedback for the start frame")
    stream_until(planner, goal_rgb, 1002, lambda: goal.done, "the goal to be reached")
    result = goal.result()
    assert result.status == GoalStatus.STATUS_SUCCEEDED
    assert result.result.reached and result.result.reason == Result.REACHED
    assert result.result.goal_id == first.goal_id and result.result.progress >= 0.8
    np.testing.assert_array_equal(image_msg_to_rgb(result.result.goal_image), goal_rgb)
    frames = [f for f in goal.feedback if f.phase == "tracking" and f.frame_stamp.sec > 0]
    start_feedback = [f for f in frames if f.frame_stamp.sec == 1001][0]
    assert start_feedback.raw_progress == pytest.approx(0.0, abs=0.05) and not start_feedback.reached
    assert frames[-1].reached and frames[-1].goal_id == first.goal_id
    assert not any(f.reached for f in frames[:-1])  # it succeeded on the first reached frame
    assert all(f.goal_id == first.goal_id for f in frames) and result.result.elapsed > 0
    assert node.current_goal_id == first.goal_id  # a reached goal stays the node's goal


def test_the_default_model_reaches_a_world_goal_with_the_learned_scorer():
    """The embedded default editor and the shipped learned progress model on a replayed held-out episode."""
    predictor = GoalPredictor.from_pretrained(None, device="cpu")
    episode = None
    for seed in range(30):
        candidate = generate_episode(seed=seed, regime="head", split="test", size=(320, 240), num_frames=14)
        goal = predictor.predict(candidate.frames[0], candidate.instruction, steps=10, seed=0).image
        if EndStateReadout(candidate).read(goal).correct:
            episode = candidate
            break
    assert episode is not None, "no held-out episode among 30 with a right predicted goal"
    context = rclpy.Context()
    rclpy.init(context=context)
    node = GoalNode(predictor=predictor, context=context, node_name="world_action_node",
                    parameter_overrides=[Parameter("steps", value=10), Parameter("seed", value=0)])
    planner = Planner(context, node_name="world_action_node")
    executor, thread = spin_in_background(node, num_threads=4)
    executor.add_node(planner.node)
    action_client = ActionClient(planner.node, ReachVisualGoal, "/world_action_node/reach_visual_goal")
    try:
        goal = Goal(action_client, instruction=episode.instruction, image=rgb_to_image_msg(episode.frames[0]))
        goal.tracking()
        scored = []
        for i, rgb in enumerate(episode.frames + [episode.frames[-1]] * 6):
            if goal.done:
                break
            for _ in range(10):  # best-effort camera QoS: a lost frame is sent again
                planner.send_frame(rgb, 100 + i)
                try:
                    scored.append(wait_for(lambda: [f for f in goal.feedback if f.frame_stamp.sec == 100 + i]
                                           or goal.done, f"feedback for frame {i}", 2.0))
                    break
                except AssertionError:
                    continue
            else:
                raise AssertionError(f"frame {i} never scored")
        result = goal.result()
        assert result.status == GoalStatus.STATUS_SUCCEEDED and result.result.reached, result.result.message
        reached_at = [f.frame_stamp.sec - 100 for f in goal.feedback if f.reached][0]
        assert episode.progress[min(reached_at, len(episode.progress) - 1)] >= 0.5  # not before the action is done
    finally:
        executor.shutdown()
        thread.join(10)
        action_client.destroy()
        planner.node.destroy_node()
        node.destroy_node()
        rclpy.shutdown(context=context)


# ------------------------------------------------------------------------------------------------- cancel
def test_cancel_during_prediction_ends_at_once_and_adopts_nothing(ros, client):
    node, planner, predictor = ros
    before = ensure_goal(ros, 1100).goal_id
    predictor.gate.clear()
    predictor.entered.clear()
    try:
        goal = Goal(client, instruction="open the drawer")
        assert predictor.entered.wait(WAIT)
        assert goal.cancel().return_code == 0  # ERROR_NONE: accepted
        result = goal.result("the cancelled goal's result while its prediction is still held")
        assert node.predicting  # it ended before the prediction did
    finally:
        predictor.gate.set()
    assert result.status == GoalStatus.STATUS_CANCELED and result.result.reason == Result.CANCELLED
    assert not result.result.reached and result.result.goal_id == ""
    wait_for(lambda: not node.predicting, "the abandoned prediction to stop")
    assert node.current_goal_id == before  # the abandoned prediction was never adopted
    assert not [g for g in planner.goals if g.instruction == "open the drawer"]
    assert ensure_goal(ros, 1101).success  # and the node predicts again


def test_cancel_during_tracking_clears_the_goal(ros, client):
    node, planner, _ = ros
    goal, first = start_tracking(ros, client, 1200)
    planner.send_frame(frame(1200), 1201)
    wait_for(lambda: [f for f in goal.feedback if f.frame_stamp.sec == 1201], "tracking feedback")
    goal.cancel()
    result = goal.result()
    assert result.status == GoalStatus.STATUS_CANCELED and result.result.reason == Result.CANCELLED
    assert result.result.goal_id == first.goal_id
    assert node.current_goal_id == ""  # no stale goal left latched, as after clear_goal
    wait_for(lambda: planner.goals and planner.goals[-1].goal_id == "", "the no-goal announcement")


def test_a_client_that_missed_the_status_learns_it_while_the_goal_runs(ros, client):
    """A status array that reaches a client before its goal response is dropped (ros2/rclcpp#2782); in both of two
    `ros2 action send_goal` Ctrl-C tries here it was, and nothing was cancelled. The node republishes the status."""
    goal, _ = start_tracking(ros, client, 1250)
    wait_for(lambda: goal.handle.status == GoalStatus.STATUS_EXECUTING, "the executing status")
    goal.handle._status = GoalStatus.STATUS_UNKNOWN  # as after the race: no state change follows while tracking
    wait_for(lambda: goal.handle.status == GoalStatus.STATUS_EXECUTING, "the republished status", timeout=3.0)
    goal.cancel()
    assert goal.result().status == GoalStatus.STATUS_CANCELED


# ------------------------------------------------------------------------------------------------- ending
def test_timeout_while_tracking_and_while_predicting(ros, client):
    node, planner, predictor = ros
    for timeout in (1.0, 4.0, 15.0):  # the timeout counts the prediction too, which a loaded machine slows down
        deliver_frame(node, planner, frame(1300), 1300)
        goal = Goal(client, instruction=GOOD_INSTRUCTION, timeout=timeout)
        result = goal.result(timeout=WAIT + timeout)
        if any(f.phase == "tracking" for f in goal.feedback):
            break
        assert result.result.reason == Result.TIMEOUT and result.result.goal_id == ""  # timed out predicting
    else:
        raise AssertionError("no goal reached tracking within its timeout")
    assert result.status == GoalStatus.STATUS_ABORTED and result.result.reason == Result.TIMEOUT
    assert "timeout" in result.result.message and result.result.elapsed >= timeout
    assert node.current_goal_id == ""
    predictor.gate.clear()
    predictor.entered.clear()
    try:
        held = Goal(client, instruction="open the drawer", timeout=0.5)
        result = held.result("the timeout during a held prediction")
    finally:
        predictor.gate.set()
    assert result.result.reason == Result.TIMEOUT and result.result.goal_id == ""
    wait_for(lambda: not node.predicting, "the abandoned prediction to stop")


def test_camera_stale_too_long_aborts(ros, client):
    node, _, _ = ros
    goal, _ = start_tracking(ros, client, 1400, max_stale=1.2)  # 0.7 s after stale_timeout: room on a loaded machine
    result = goal.result()
    assert result.status == GoalStatus.STATUS_ABORTED and result.result.reason == Result.CAMERA_STALE
    assert "max_stale" in result.result.message and result.result.elapsed >= 1.2
    stale = [f for f in goal.feedback if f.stale]
    assert stale and all(not f.reached for f in stale)  # stale_timeout 0.5 s: flagged before the abort
    assert node.current_goal_id == ""


def test_clear_goal_ends_the_action(ros, client):
    node, planner, _ = ros
    goal, _ = start_tracking(ros, client, 1500)
    future = planner.clear.call_async(Trigger.Request())
    wait_for(future.done, "clear_goal")
    result = goal.result()
    assert result.status == GoalStatus.STATUS_ABORTED and result.result.reason == Result.CLEARED


# ------------------------------------------------------------------------------------------------- new goals
def test_a_second_client_preempts_and_reaches(ros, client):
    node, planner, _ = ros
    old, old_first = start_tracking(ros, client, 1600)
    second_node = rclpy.create_node("second_planner", context=node.context)
    executor = rclpy.executors.SingleThreadedExecutor(context=node.context)
    executor.add_node(second_node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    second = ActionClient(second_node, ReachVisualGoal, ACTION)
    try:
        wait_until_feedback_reaches(node, 2)
        new = Goal(second, instruction="open the drawer")
        result = old.result()
        assert result.status == GoalStatus.STATUS_ABORTED and result.result.reason == Result.PREEMPTED
        assert "replaced by a newer goal" in result.result.message and result.result.goal_id == old_first.goal_id
        new_first = new.tracking()
        assert new_first.goal_id != old_first.goal_id and node.current_goal_id == new_first.goal_id
        stream_until(planner, image_msg_to_rgb(new_first.goal_image), 1601, lambda: new.done, "the second goal")
        assert new.result().result.reason == Result.REACHED
    finally:
        executor.shutdown()
        spinner.join(10)
        second.destroy()
        second_node.destroy_node()


def test_preempt_during_prediction_and_by_the_service(ros, client):
    node, planner, predictor = ros
    predictor.gate.clear()
    predictor.entered.clear()
    try:
        old = Goal(client, instruction="open the drawer", image=rgb_to_image_msg(frame(1700), stamp(1700)))
        assert predictor.entered.wait(WAIT)
        new = Goal(client, instruction="close the drawer", image=rgb_to_image_msg(frame(1701), stamp(1701)))
        result = old.result("the preempted goal's result while its prediction is held")
        assert result.result.reason == Result.PREEMPTED and result.result.goal_id == ""
    finally:
        predictor.gate.set()
    first = new.tracking()  # it waited for the preempted prediction to stop, then predicted its own
    assert node.current_goal_id == first.goal_id
    assert [g.instruction for g in planner.goals if g.goal_id == first.goal_id] == ["close the drawer"]
    response = planner.call(GOOD_INSTRUCTION)  # an adopted predict_goal replaces the action's goal
    assert response.success, response.message
    result = new.result()
    assert result.result.reason == Result.PREEMPTED and response.goal_id in result.result.message
    assert node.current_goal_id == response.goal_id


def test_reject_mode_refuses_a_new_goal_and_keeps_the_active_one(ros, client):
    node, planner, _ = ros
    assert not node.set_parameters([Parameter("action_new_goal", value="queue")])[0].successful
    assert node.set_parameters([Parameter("action_new_goal", value="reject")])[0].successful
    try:
        old, first = start_tracking(ros, client, 1800)
        refused = Goal(client, instruction="open the drawer")
        assert not refused.handle.accepted
        assert not old.done and node.current_goal_id == first.goal_id
        stream_until(planner, image_msg_to_rgb(first.goal_image), 1801, lambda: old.done, "the kept goal")
        assert old.result().result.reason == Result.REACHED
        again = Goal(client, instruction="open the drawer")
        assert again.handle.accepted  # none active: accepted again
        again.tracking()
        again.cancel()
        assert again.result().result.reason == Result.CANCELLED
    finally:
        node.set_parameters([Parameter("action_new_goal", value="preempt")])


def test_a_service_prediction_in_flight_makes_a_goal_busy(ros, client):
    node, planner, predictor = ros
    predictor.gate.clear()
    predictor.entered.clear()
    try:
        call = planner.call_async("open the drawer", image=rgb_to_image_msg(frame(1900), stamp(1900)))
        assert predictor.entered.wait(WAIT)
        result = Goal(client, instruction="close the drawer").result()
        assert result.result.reason == Result.BUSY and result.result.message.startswith("busy:")
    finally:
        predictor.gate.set()
    wait_for(call.done, "the service call")
    assert call.result().success


# ------------------------------------------------------------------------------------------------- bad requests
@pytest.mark.parametrize("fields", [
    {"instruction": ""},
    {"instruction": GOOD_INSTRUCTION, "image": "tiny"},
    {"instruction": GOOD_INSTRUCTION, "seed": -5},
])
def test_bad_requests_are_aborted_with_the_services_message(ros, client, fields):
    node, planner, _ = ros
    deliver_frame(node, planner, frame(2000), 2000)
    fields = dict(fields)
    if fields.get("image") == "tiny":
        fields["image"] = rgb_to_image_msg(np.zeros((4, 4, 3), np.uint8), stamp(2000))
    before = node.current_goal_id
    result = Goal(client, **fields).result()
    assert result.status == GoalStatus.STATUS_ABORTED and result.result.reason == Result.BAD_REQUEST
    response = planner.call(**fields)
    assert not response.success and result.result.message == response.message
    assert node.current_goal_id == before


@pytest.mark.parametrize("fields, named", [({"reached_threshold": 1.5}, "reached_threshold"),
                                           ({"timeout": -1.0}, "timeout"), ({"max_stale": math.nan}, "max_stale")])
def test_bad_action_fields_are_refused_and_the_node_keeps_serving(ros, client, fields, named):
    result = Goal(client, instruction=GOOD_INSTRUCTION, **fields).result()
    assert result.result.reason == Result.BAD_REQUEST and named in result.result.message
    goal, _ = start_tracking(ros, client, 2100, reached_threshold=0.5)
    goal.cancel()
    assert goal.result().result.reason == Result.CANCELLED


# ------------------------------------------------------------------------------------------------- the process
def test_ctrl_c_during_an_action_goal_ends_it_and_the_process_exits_cleanly(model_dir):
    """The node as a process (1000 denoising steps: a minute here): SIGINT ends the goal with reason SHUTDOWN at
    once, the result reaches the client, and the process exits 0 without leaking errors."""
    process = start_module(
        "actedit_ros.ros.goal_node", "--ros-args", "-r", "__node:=sigint_action_node", "-p", f"model_path:={model_dir}",
        "-p", "device:=cpu", "-p", "torch_threads:=1", "-p", "steps:=1000", "-p", "resolution:=96")
    context = rclpy.Context()
    rclpy.init(context=context)
    client_node = rclpy.create_node("sigint_action_planner", context=context)
    executor = rclpy.executors.SingleThreadedExecutor(context=context)
    executor.add_node(client_node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    action_client = ActionClient(client_node, ReachVisualGoal, "/sigint_action_node/reach_visual_goal")
    try:
        assert action_client.wait_for_server(60), process.stderr.read() if process.poll() is not None else ""
        goal = Goal(action_client, instruction=GOOD_INSTRUCTION, image=rgb_to_image_msg(frame(1), stamp(1)))
        wait_for(lambda: [f for f in goal.feedback if f.phase == "predicting"], "the predicting feedback")
        process.send_signal(signal.SIGINT)
        result = goal.result("the result after Ctrl-C")
        out, err = process.communicate(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        executor.shutdown()
        spinner.join(10)
        action_client.destroy()
        client_node.destroy_node()
        rclpy.shutdown(context=context)
    assert result.status == GoalStatus.STATUS_ABORTED and result.result.reason == Result.SHUTDOWN
    assert "shutting down (SIGINT)" in result.result.message
    assert process.returncode == 0, err
    assert not [leak for leak in ("Traceback", "InvalidHandle", "never retrieved", "Exception") if leak in err + out]
