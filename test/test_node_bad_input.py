"""Bad requests and bad camera input to the goal node: each is refused or dropped with a message naming the
problem, and the node keeps serving (harness: test/node_harness.py)."""
import time

import numpy as np
import pytest
from jpeg_corruption import corrupt_inside
from node_harness import (  # noqa: F401 - model_dir and ros are fixtures
    GOOD_INSTRUCTION,
    WAIT,
    GoalNode,
    Planner,
    assert_good_request_succeeds,
    ensure_goal,
    frame,
    model_dir,
    ros,
    spin_in_background,
    stamp,
    wait_for,
)
from sensor_msgs.msg import Image

from actedit_ros.ros.conversions import image_msg_to_rgb, rgb_to_compressed_msg, rgb_to_image_msg


# ------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("instruction, expected", [
    ("", "empty"),
    ("   \n\t ", "empty"),
    ("x" * 10_000, "10000 characters"),
    ("\x01\x02\x1b\x7f", "empty"),
])
def test_bad_instruction(ros, instruction, expected):
    node, planner, _ = ros
    kept = node.current_goal_id
    response = planner.call(instruction, image=rgb_to_image_msg(frame(70), stamp(70)))
    assert not response.success and expected in response.message and "instruction" in response.message
    assert response.goal_id == "" and node.current_goal_id == kept
    assert_good_request_succeeds(ros)


def test_instruction_with_control_characters_is_cleaned(ros):
    _, planner, _ = ros
    response = planner.call("put the cup\x07 in\tthe\r\nbowl", image=rgb_to_image_msg(frame(71), stamp(71)))
    assert response.success, response.message
    assert "control characters" in response.message
    goal = wait_for(lambda: [g for g in planner.goals if g.goal_id == response.goal_id], "the goal")[-1]
    assert goal.instruction == GOOD_INSTRUCTION


def bad_image(kind):
    good = rgb_to_image_msg(frame(80, (32, 24)), stamp(80))
    if kind == "unsupported encoding":
        good.encoding = "yuv422"
    elif kind == "zero size":
        good.height = good.width = good.step = 0
        good.data = b""
    elif kind == "data length":
        good.data = bytes(good.data)[:-5]
    elif kind == "no encoding":
        good.encoding = ""
    return good


@pytest.mark.parametrize("kind, expected", [
    ("unsupported encoding", "unsupported image encoding 'yuv422'"),
    ("zero size", "image is empty"),
    ("data length", "bytes but height * step"),
    ("no encoding", "has no encoding but a size or data"),
])
def test_bad_request_image(ros, kind, expected):
    node, planner, _ = ros
    kept = node.current_goal_id
    response = planner.call(GOOD_INSTRUCTION, image=bad_image(kind))
    assert not response.success and "bad request image" in response.message and expected in response.message
    assert node.current_goal_id == kept
    assert_good_request_succeeds(ros)


@pytest.mark.parametrize("seed, num_candidates, expected", [(-7, 1, "bad seed -7"), (0, 200, "num_candidates")])
def test_bad_seed_or_candidates(ros, seed, num_candidates, expected):
    node, planner, _ = ros
    kept = node.current_goal_id
    response = planner.call(GOOD_INSTRUCTION, image=rgb_to_image_msg(frame(85), stamp(85)), seed=seed,
                            num_candidates=num_candidates)
    assert not response.success and expected in response.message
    assert node.current_goal_id == kept
    assert_good_request_succeeds(ros)


def test_huge_request_image_is_downscaled(ros):
    node, planner, _ = ros
    huge = np.zeros((8000, 8000), np.uint8)
    huge[:, 4000:] = 200
    image = Image(header=stamp(90), height=8000, width=8000, encoding="mono8", step=8000, data=huge.tobytes())
    response = planner.call(GOOD_INSTRUCTION, image=image)
    assert response.success, response.message
    assert "downscaled from 8000x8000 to 256x256" in response.message
    assert (response.goal_image.width, response.goal_image.height) == (256, 256)
    goal = wait_for(lambda: [g for g in planner.goals if g.goal_id == response.goal_id], "the goal")[-1]
    start = image_msg_to_rgb(goal.start_image)
    assert start.shape == (256, 256, 3) and start[:, :120].max() == 0 and start[:, 136:].min() == 200
    assert_good_request_succeeds(ros)


def test_corrupt_jpeg_on_the_camera_is_dropped_with_a_warning(ros):
    node, planner, _ = ros
    ensure_goal(ros, 100)
    jpeg = rgb_to_compressed_msg(frame(100), stamp(101), "jpeg")
    jpeg.data = bytes(jpeg.data)[: len(jpeg.data) // 2]
    planner.compressed.publish(jpeg)
    warning = wait_for(lambda: [m for m in planner.logs if m.name == "goal_node" and "corrupt JPEG" in m.msg],
                       "the node's warning on /rosout")[-1]
    assert "dropped a camera frame" in warning.msg
    assert node._latest_frame.header.stamp.sec == 100  # the last good frame is kept
    planner.send_frame(frame(100), 102, compressed=True)
    wait_for(lambda: planner.progress_for(102), "progress for the next good frame")
    assert not planner.progress_for(101)
    assert_good_request_succeeds(ros)


@pytest.mark.parametrize("kind", ["bytes lost", "stray marker"])
def test_jpeg_corrupt_inside_is_dropped_counted_and_stderr_stays_quiet(ros, kind, capfd):
    """End marker kept, so only libjpeg's warning tells: each frame is dropped and counted, the node warns on
    /rosout (throttled: at most once per 2 s) and libjpeg prints nothing."""
    node, planner, _ = ros
    ensure_goal(ros, 150)
    bad = rgb_to_compressed_msg(frame(150), stamp(151), "jpeg")
    bad.data = corrupt_inside(bytes(bad.data), kind)
    first_log, first_dropped = len(planner.logs), node.dropped_frames
    is_warning = (lambda m: m.name == "goal_node" and "Corrupt JPEG data" in m.msg and "dropped a camera frame" in m.msg)

    def drop_one():  # the camera subscription is best effort: publish again until the node has taken one
        dropped = node.dropped_frames
        for _ in range(int(WAIT / 0.5)):
            planner.compressed.publish(bad)
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:
                if node.dropped_frames > dropped:
                    return
                time.sleep(0.01)
        raise AssertionError("the node never took (and dropped) the corrupt frame")

    started = time.monotonic()
    while not any(is_warning(m) for m in planner.logs[first_log:]):  # an earlier test's warning may still throttle
        assert time.monotonic() - started < WAIT, "no warning on /rosout for the corrupt frames"
        drop_one()
    for _ in range(5):  # more of them at once: each counted, the warning throttled
        drop_one()
    elapsed = time.monotonic() - started
    counted = node.dropped_frames - first_dropped
    warnings = [m for m in planner.logs[first_log:] if is_warning(m)]
    assert "camera frames dropped since start" in warnings[0].msg
    assert len(warnings) <= 2 + elapsed / 2.0 and len(warnings) < counted
    assert not planner.progress_for(151) and node._latest_frame.header.stamp.sec == 150
    assert not [line for line in capfd.readouterr().err.splitlines() if line.startswith("Corrupt JPEG data")]
    planner.send_frame(frame(150), 152, compressed=True)
    wait_for(lambda: planner.progress_for(152), "progress for the next good frame")


def test_no_camera_frame_yet_and_no_image(ros):
    node, _, predictor = ros
    fresh = GoalNode(predictor=predictor, node_name="fresh_goal_node", context=node.context)
    planner = Planner(node.context, node_name="fresh_goal_node")
    executor, thread = spin_in_background(fresh)
    executor.add_node(planner.node)
    try:
        response = planner.call(GOOD_INSTRUCTION)
        assert not response.success
        assert "no camera frame received yet on /fresh_goal_node/image" in response.message
        response = planner.call(GOOD_INSTRUCTION, image=rgb_to_image_msg(frame(110), stamp(110)))
        assert response.success, response.message
    finally:
        executor.shutdown()
        thread.join(10)
        planner.node.destroy_node()
        fresh.destroy_node()


def test_goal_without_change_is_not_adopted(ros):
    node, planner, predictor = ros
    kept = ensure_goal(ros, 130).goal_id
    predictor.echo_start = True
    try:
        start = frame(131)
        response = planner.call(GOOD_INSTRUCTION, image=rgb_to_image_msg(start, stamp(131)))
    finally:
        predictor.echo_start = False
    assert not response.success and "cannot be tracked" in response.message and "identical" in response.message
    np.testing.assert_array_equal(image_msg_to_rgb(response.goal_image), start)  # the prediction is not lost
    assert node.current_goal_id == kept
    assert_good_request_succeeds(ros)


@pytest.mark.parametrize("width, height, expected", [
    (1, 1, "bad request image: the image is too small to score: shape (1, 1, 3)"),
    # 4096x1 is downscaled to max_image_side (256) first: 256x1, still too small
    (4096, 1, "bad request image (after downscaling to max_image_side 256): the image is too small to score: "
              "shape (1, 256, 3)"),
])
def test_too_small_request_image_is_refused_before_predicting(ros, width, height, expected):
    """Refused with the scorer's own size rule before the model runs (which would hold every other planner at
    busy: for a whole diffusion run)."""
    node, planner, predictor = ros
    kept = node.current_goal_id
    predictor.entered.clear()
    tiny = np.full((height, width, 3), 90, np.uint8)
    response = planner.call(GOOD_INSTRUCTION, image=rgb_to_image_msg(tiny, stamp(140)))
    assert not response.success and expected in response.message, response.message
    assert "need at least 8x8 pixels" in response.message
    assert not predictor.entered.is_set(), "the model ran on an image too small to score"
    assert node.current_goal_id == kept
    assert_good_request_succeeds(ros)


def test_too_small_camera_frame_is_refused_as_start_before_predicting(ros):
    node, planner, predictor = ros
    planner.send_frame(np.full((4, 4, 3), 90, np.uint8), 141)
    wait_for(lambda: node._latest_frame and node._latest_frame.header.stamp.sec == 141, "the node to take the frame")
    predictor.entered.clear()
    response = planner.call(GOOD_INSTRUCTION)
    assert not response.success
    assert "the latest camera frame cannot be used: the image is too small to score" in response.message
    assert not predictor.entered.is_set()
    assert_good_request_succeeds(ros)
