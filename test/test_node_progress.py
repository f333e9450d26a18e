"""The node's progress path over real rclpy / Fast DDS with the embedded default editor and the shipped learned
progress model: the goal the node predicts from a replayed held-out episode is reached by the end of the action,
and not before; ``progress_scorer`` switches new goals to the pixel scorer; a bad progress model fails at start-up."""
import numpy as np
import pytest
import rclpy
from node_harness import Planner, goal_node_module, spin_in_background, wait_for
from rclpy.parameter import Parameter

from actedit_ros.editing import GoalPredictor
from actedit_ros.progress import LearnedProgressScorer, ProgressScorer
from actedit_ros.ros.conversions import rgb_to_image_msg
from actedit_ros.ros.goal_node import GoalNode
from actedit_ros.world import generate_episode
from actedit_ros.world.readout import EndStateReadout

STEPS = 10


@pytest.fixture(scope="module")
def default_predictor():
    return GoalPredictor.from_pretrained(None, device="cpu")


@pytest.fixture(scope="module")
def episode(default_predictor):
    """A held-out head-camera episode whose predicted goal (node settings: STEPS steps, seed 0) is right."""
    for seed in range(30):
        candidate = generate_episode(seed=seed, regime="head", split="test", size=(320, 240), num_frames=14)
        goal = default_predictor.predict(candidate.frames[0], candidate.instruction, steps=STEPS, seed=0).image
        if EndStateReadout(candidate).read(goal).correct:
            return candidate
    raise AssertionError("no held-out episode among 30 with a right predicted goal")


@pytest.fixture(scope="module")
def ros(default_predictor):
    context = rclpy.Context()
    rclpy.init(context=context)
    node = GoalNode(predictor=default_predictor, context=context, node_name="progress_node",
                    parameter_overrides=[Parameter("steps", value=STEPS), Parameter("seed", value=0)])
    planner = Planner(context, node_name="progress_node")
    executor, thread = spin_in_background(node, num_threads=4)
    executor.add_node(planner.node)
    wait_for(lambda: planner.camera.get_subscription_count(), "the node's camera subscription")
    yield node, planner
    executor.shutdown()
    thread.join(10)
    planner.node.destroy_node()
    node.destroy_node()
    rclpy.shutdown(context=context)


def _replay(planner, frames, first_sec):
    """Publishes frames one at a time, each once the previous one's progress message arrived; returns those."""
    received = []
    for i, rgb in enumerate(frames):
        sec = first_sec + i
        for attempt in range(10):  # best-effort camera QoS: a lost frame is sent again
            planner.send_frame(rgb, sec)
            try:
                received.append(wait_for(lambda: planner.progress_for(sec), f"progress for frame {sec}", 2.0)[-1])
                break
            except AssertionError:
                if attempt == 9:
                    raise
    return received


def test_the_goal_the_node_predicts_is_reached_when_the_action_is_done(ros, episode):
    node, planner = ros
    node.set_parameters([Parameter("progress_scorer", value="learned")])
    response = planner.call(episode.instruction, image=rgb_to_image_msg(episode.frames[0]))
    assert response.success, response.message
    assert isinstance(node._goal.scorer, LearnedProgressScorer)
    held = [episode.frames[-1]] * 4  # the finished scene keeps streaming
    received = _replay(planner, episode.frames + held, first_sec=100)
    assert all(p.goal_id == response.goal_id for p in received)
    early = [p.reached for p, true in zip(received, episode.progress) if true < 0.5]
    assert early and not any(early)
    assert received[-1].reached and received[-1].progress >= 0.8
    assert np.mean([p.progress for p in received[:2]]) < 0.3


def test_progress_scorer_parameter_switches_new_goals_to_the_pixel_scorer(ros, episode):
    node, planner = ros
    assert not node.set_parameters([Parameter("progress_scorer", value="magic")])[0].successful
    assert node.set_parameters([Parameter("progress_scorer", value="pixel")])[0].successful
    try:
        response = planner.call(episode.instruction, image=rgb_to_image_msg(episode.frames[0]))
        assert response.success, response.message
        assert type(node._goal.scorer) is ProgressScorer
        received = _replay(planner, episode.frames[:3], first_sec=200)
        assert all(0.0 <= p.progress <= 1.0 for p in received)
    finally:
        node.set_parameters([Parameter("progress_scorer", value="learned")])


def test_a_bad_progress_model_stops_the_node_at_start_up_naming_the_file(tmp_path, capsys):
    missing = tmp_path / "nothing.safetensors"
    code = goal_node_module.main(["goal_node", "--ros-args", "-p", f"progress_model_path:={missing}",
                                  "-p", "device:=cpu"])
    assert code == 1
    err = capsys.readouterr().err
    assert str(missing) in err and "Traceback" not in err


def test_goal_mode_composite_keeps_the_start_frame_outside_the_change(ros, episode):
    from node_harness import stamp

    from actedit_ros.ros.conversions import image_msg_to_rgb

    node, planner = ros
    start = episode.frames[0]
    assert node.get_parameter("goal_mode").value == "composite"  # the default
    assert not node.set_parameters([Parameter("goal_mode", value="blend")])[0].successful
    mixed = planner.call(episode.instruction, image=rgb_to_image_msg(start, stamp(21)), seed=3)
    assert node.set_parameters([Parameter("goal_mode", value="plain")])[0].successful
    try:
        plain = planner.call(episode.instruction, image=rgb_to_image_msg(start, stamp(22)), seed=3)
    finally:
        node.set_parameters([Parameter("goal_mode", value="composite")])
    assert plain.success and mixed.success, (plain.message, mixed.message)
    assert "start frame kept outside the predicted change" in mixed.message
    assert "start frame kept" not in plain.message
    plain_rgb, mixed_rgb = image_msg_to_rgb(plain.goal_image), image_msg_to_rgb(mixed.goal_image)
    kept = np.all(mixed_rgb == start, axis=2)
    assert np.all(plain_rgb == start, axis=2).mean() < kept.mean()  # the plain goal is the editor's output
    # wherever the composite is not the start frame, it is (a blend towards) the editor's goal
    assert np.abs(mixed_rgb.astype(int) - plain_rgb.astype(int))[~kept].mean() < \
        np.abs(mixed_rgb.astype(int) - start.astype(int))[~kept].mean()


def test_goal_refiner_parameter_switches_the_refiner_off_for_new_goals(ros, episode):
    from node_harness import stamp

    node, planner = ros
    start = episode.frames[0]
    assert node.get_parameter("goal_refiner").value == "auto"  # the default
    assert not node.set_parameters([Parameter("goal_refiner", value="on")])[0].successful
    refined = planner.call(episode.instruction, image=rgb_to_image_msg(start, stamp(23)), seed=3)
    assert node.set_parameters([Parameter("goal_refiner", value="off")])[0].successful
    try:
        decoded = planner.call(episode.instruction, image=rgb_to_image_msg(start, stamp(24)), seed=3)
    finally:
        node.set_parameters([Parameter("goal_refiner", value="auto")])
    assert refined.success and decoded.success, (refined.message, decoded.message)
    assert "goal refiner" in refined.message and "goal refiner" not in decoded.message


def test_spelling_parameter_says_how_a_typo_was_read(ros, episode):
    from node_harness import stamp

    node, planner = ros
    start = episode.frames[0]
    assert node.get_parameter("spelling").value == "correct"  # the default
    assert not node.set_parameters([Parameter("spelling", value="off")])[0].successful
    corrected = planner.call("eleate the cup", image=rgb_to_image_msg(start, stamp(25)), seed=3)
    assert node.set_parameters([Parameter("spelling", value="as_written")])[0].successful
    try:
        as_written = planner.call("eleate the cup", image=rgb_to_image_msg(start, stamp(26)), seed=3)
    finally:
        node.set_parameters([Parameter("spelling", value="correct")])
    assert corrected.success and as_written.success, (corrected.message, as_written.message)
    assert "read 'eleate' as 'elevate'" in corrected.message and "read 'eleate'" not in as_written.message
