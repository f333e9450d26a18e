"""The goal node over real rclpy / Fast DDS, with a tiny random model.

One node runs for the whole module in a MultiThreadedExecutor on a background thread; a client node in the same
executor plays the planner and the camera. The predictor is the real GoalPredictor, subclassed only to add a gate,
so a test can hold a prediction open and look at what the node does meanwhile.
"""
import threading
import time

import numpy as np
import pytest
import rclpy
import torch
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rcl_interfaces.msg import Log
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from std_srvs.srv import Trigger
from builtin_interfaces.msg import Time

from actedit_ros.editing import GoalPredictor, ModelLoadError
from actedit_ros.editing.tiny import make_tiny_model
from actedit_ros.msg import GoalImage, Progress
from actedit_ros.ros import goal_node as goal_node_module
from actedit_ros.ros.conversions import image_msg_to_rgb, rgb_to_compressed_msg, rgb_to_image_msg
from actedit_ros.ros.goal_node import BUSY_PREFIX, NODE_PARAMETERS, GoalNode, spin_in_background
from actedit_ros.srv import PredictGoal

torch.set_num_threads(1)  # 2 shared cores: more torch threads only spin against each other
WAIT = 20.0  # generous upper bound for anything to arrive; never a pass/fail timing
GOOD_INSTRUCTION = "put the cup in the bowl"
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class GatedPredictor(GoalPredictor):
    """The real predictor, but predict() waits until `gate` is set (set by default)."""

    def __init__(self, components):
        super().__init__(components)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    echo_start = False  # when True, the "prediction" is the start image itself (a model that predicts no change)

    def predict(self, *args, **kwargs):
        self.entered.set()
        assert self.gate.wait(60), "test never opened the gate"
        prediction = super().predict(*args, **kwargs)
        if self.echo_start:
            prediction.images = [np.array(args[0] if args else kwargs["image"])]
        return prediction


def wait_for(condition, what, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def frame(seed, size=(160, 120)):
    """A blocky test scene, different per seed."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, size=(6, 8, 3), dtype=np.uint8)
    return np.kron(small, np.ones((size[1] // 6, size[0] // 8, 1), np.uint8))


def stamp(sec):
    return Header(stamp=Time(sec=int(sec), nanosec=0), frame_id="head_camera")


class Planner:
    """Client side: planner (service calls), camera (publishers) and listener (subscriptions)."""

    def __init__(self, context, node_name="goal_node"):
        self.node = rclpy.create_node("test_planner", context=context)
        self.predict = self.node.create_client(PredictGoal, f"/{node_name}/predict_goal")
        self.clear = self.node.create_client(Trigger, f"/{node_name}/clear_goal")
        camera_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.camera = self.node.create_publisher(Image, f"/{node_name}/image", camera_qos)
        self.compressed = self.node.create_publisher(CompressedImage, f"/{node_name}/image/compressed", camera_qos)
        self.progress: list[Progress] = []
        self.goals: list[GoalImage] = []
        self.logs: list[Log] = []
        self.node.create_subscription(Progress, f"/{node_name}/progress", self.progress.append, 100)
        self.node.create_subscription(GoalImage, f"/{node_name}/goal", self.goals.append, LATCHED)
        self.node.create_subscription(Log, "/rosout", self.logs.append,
                                      QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))

    def call_async(self, instruction=GOOD_INSTRUCTION, image=None, seed=-1, num_candidates=1):
        assert self.predict.wait_for_service(WAIT)
        request = PredictGoal.Request(instruction=instruction, seed=seed, num_candidates=num_candidates)
        if image is not None:
            request.image = image
        return self.predict.call_async(request)

    def call(self, *args, **kwargs) -> PredictGoal.Response:
        future = self.call_async(*args, **kwargs)
        wait_for(future.done, "the predict_goal response")
        return future.result()

    def send_frame(self, rgb, sec, compressed=False):
        """Publish a frame and wait until the node has taken it (it becomes the node's latest frame)."""
        msg = rgb_to_compressed_msg(rgb, stamp(sec), "png") if compressed else rgb_to_image_msg(rgb, stamp(sec))
        (self.compressed if compressed else self.camera).publish(msg)

    def progress_for(self, sec, stale=False):
        return [p for p in self.progress if p.header.stamp.sec == sec and p.stale == stale]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny_model"), seed=0)


@pytest.fixture(scope="module")
def ros(model_dir):
    context = rclpy.Context()
    rclpy.init(context=context)
    predictor = GatedPredictor.from_pretrained(str(model_dir), device="cpu")
    node = GoalNode(predictor=predictor, context=context, parameter_overrides=[
        Parameter("steps", value=2),
        Parameter("compressed_image_topic", value="~/image/compressed"),
        Parameter("stale_timeout", value=0.5),
        Parameter("max_image_side", value=256),
    ])
    planner = Planner(context)
    executor, thread = spin_in_background(node, num_threads=4)
    executor.add_node(planner.node)
    wait_for(lambda: planner.camera.get_subscription_count() and planner.compressed.get_subscription_count(),
             "the node's camera subscriptions")
    yield node, planner, predictor
    predictor.gate.set()
    executor.shutdown()
    thread.join(10)
    planner.node.destroy_node()
    node.destroy_node()
    rclpy.shutdown(context=context)


def ensure_goal(ros, sec):
    """Feed a frame with stamp `sec` and ask for a goal from it; return the response."""
    node, planner, _ = ros
    planner.send_frame(frame(sec), sec)
    wait_for(lambda: node._latest_frame and node._latest_frame.header.stamp.sec == sec, "the node to take the frame")
    response = planner.call(GOOD_INSTRUCTION)
    assert response.success, response.message
    return response


def assert_good_request_succeeds(ros):
    node, planner, _ = ros
    before = node.current_goal_id
    response = planner.call(GOOD_INSTRUCTION, image=rgb_to_image_msg(frame(999), stamp(999)))
    assert response.success, response.message
    assert response.goal_id and response.goal_id != before and node.current_goal_id == response.goal_id
    wait_for(lambda: planner.goals and planner.goals[-1].goal_id == response.goal_id, "the latched goal")


# ------------------------------------------------------------------------------------------------- behaviour
def test_round_trip_from_camera_frame(ros):
    node, planner, _ = ros
    start = frame(1)
    planner.send_frame(start, 1)
    wait_for(lambda: node._latest_frame and node._latest_frame.header.stamp.sec == 1, "the frame")
    response = planner.call(GOOD_INSTRUCTION, seed=3)
    assert response.success, response.message
    assert response.goal_id.startswith("goal-") and GOOD_INSTRUCTION in response.message
    assert (response.goal_image.width, response.goal_image.height) == (160, 120)
    assert response.goal_image.encoding == "rgb8" and response.prediction_time > 0
    assert len(response.candidates) == 0

    goal = wait_for(lambda: [g for g in planner.goals if g.goal_id == response.goal_id], "the goal message")[-1]
    assert goal.instruction == GOOD_INSTRUCTION and goal.seed == 3
    assert goal.header.frame_id == "head_camera"
    np.testing.assert_array_equal(image_msg_to_rgb(goal.start_image), start)
    np.testing.assert_array_equal(image_msg_to_rgb(goal.goal_image), image_msg_to_rgb(response.goal_image))
    # same seed, same frame: same goal
    again = planner.call(GOOD_INSTRUCTION, seed=3)
    np.testing.assert_array_equal(image_msg_to_rgb(again.goal_image), image_msg_to_rgb(response.goal_image))


def test_candidates_and_request_image(ros):
    _, planner, _ = ros
    response = planner.call("open the drawer", image=rgb_to_image_msg(frame(7, (64, 48)), stamp(7)), seed=1,
                            num_candidates=3)
    assert response.success, response.message
    assert len(response.candidates) == 3
    images = [image_msg_to_rgb(c) for c in response.candidates]
    assert all(image.shape == (48, 64, 3) for image in images)
    np.testing.assert_array_equal(images[0], image_msg_to_rgb(response.goal_image))
    assert not np.array_equal(images[0], images[1])


def test_late_subscriber_gets_latched_goal(ros):
    node, planner, _ = ros
    response = ensure_goal(ros, 2)
    late = rclpy.create_node("late_listener", context=node.context)
    goals, images = [], []
    late.create_subscription(GoalImage, "/goal_node/goal", goals.append, LATCHED)
    late.create_subscription(Image, "/goal_node/goal_image", images.append, LATCHED)
    executor = rclpy.executors.SingleThreadedExecutor(context=node.context)
    executor.add_node(late)
    try:
        deadline = time.monotonic() + WAIT
        while (not goals or not images) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        assert goals and images, "late subscriber got no latched goal"
        assert len(goals) == 1 and goals[0].goal_id == response.goal_id  # depth 1: only the current goal
        np.testing.assert_array_equal(image_msg_to_rgb(images[0]), image_msg_to_rgb(response.goal_image))
    finally:
        executor.shutdown()
        late.destroy_node()


def test_progress_is_stamped_with_each_frame(ros):
    node, planner, _ = ros
    response = ensure_goal(ros, 10)
    for sec in range(11, 16):
        planner.send_frame(frame(10 if sec < 13 else 10_000 + sec), sec)
        wait_for(lambda: planner.progress_for(sec), f"progress for the frame stamped {sec}")
    received = [p for sec in range(11, 16) for p in planner.progress_for(sec)]
    assert [p.header.stamp.sec for p in received] == list(range(11, 16))
    for p in received:
        assert p.goal_id == response.goal_id and p.instruction == GOOD_INSTRUCTION
        assert p.header.frame_id == "head_camera" and not p.stale
        assert 0.0 <= p.progress <= 1.0 and 0.0 <= p.raw_progress <= 1.0 and 0.0 <= p.similarity <= 1.0
    # A frame equal to the start frame shows no progress.
    assert received[0].raw_progress == pytest.approx(0.0, abs=0.05)


def test_compressed_camera_frames_are_scored(ros):
    node, planner, _ = ros
    ensure_goal(ros, 20)
    planner.send_frame(frame(20), 21, compressed=True)
    progress = wait_for(lambda: planner.progress_for(21), "progress for a compressed frame")
    assert progress[0].goal_id == node.current_goal_id


def test_camera_keeps_flowing_during_a_prediction(ros):
    node, planner, predictor = ros
    goal = ensure_goal(ros, 30)
    predictor.gate.clear()
    predictor.entered.clear()
    try:
        future = planner.call_async("open the drawer")
        assert predictor.entered.wait(WAIT)
        for sec in range(31, 36):
            planner.send_frame(frame(30), sec)
            wait_for(lambda: planner.progress_for(sec), f"progress for frame {sec} during the prediction")
        assert not future.done() and node.predicting
        assert all(p.goal_id == goal.goal_id for sec in range(31, 36) for p in planner.progress_for(sec))
    finally:
        predictor.gate.set()
    wait_for(future.done, "the held prediction")
    assert future.result().success, future.result().message
    assert node.current_goal_id == future.result().goal_id


def test_two_planners_at_once_second_is_told_busy(ros):
    node, planner, predictor = ros
    predictor.gate.clear()
    predictor.entered.clear()
    try:
        first = planner.call_async("open the drawer", image=rgb_to_image_msg(frame(40), stamp(40)))
        assert predictor.entered.wait(WAIT)
        second = planner.call("close the drawer", image=rgb_to_image_msg(frame(41), stamp(41)))
        assert not second.success and second.message.startswith(BUSY_PREFIX)
        assert "open the drawer" in second.message and second.goal_id == ""
    finally:
        predictor.gate.set()
    wait_for(first.done, "the first planner's response")
    assert first.result().success
    assert_good_request_succeeds(ros)


def test_camera_stops_progress_flagged_stale(ros):
    node, planner, _ = ros
    goal = ensure_goal(ros, 50)
    planner.send_frame(frame(50), 51)
    wait_for(lambda: planner.progress_for(51), "live progress")
    stale = wait_for(lambda: planner.progress_for(51, stale=True), "a stale progress message")[0]
    assert stale.goal_id == goal.goal_id and stale.frame_age > 0
    assert stale.progress == planner.progress_for(51)[0].progress  # the last value, repeated, not invented
    planner.send_frame(frame(50), 52)
    assert not wait_for(lambda: planner.progress_for(52), "progress after the camera resumed")[0].stale


def test_clear_goal(ros):
    node, planner, _ = ros
    ensure_goal(ros, 60)
    assert planner.clear.wait_for_service(WAIT)
    future = planner.clear.call_async(Trigger.Request())
    wait_for(future.done, "clear_goal")
    assert future.result().success and "cleared goal" in future.result().message
    assert node.current_goal_id == ""
    wait_for(lambda: planner.goals and planner.goals[-1].goal_id == "", "the cleared-goal announcement")
    future = planner.clear.call_async(Trigger.Request())
    wait_for(future.done, "clear_goal")
    assert future.result().message == "there was no goal to clear"
    assert_good_request_succeeds(ros)


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


# ------------------------------------------------------------------------------------------------- startup
def test_parameters_are_declared_with_descriptions(ros):
    node, _, _ = ros
    names = [p.name for p in NODE_PARAMETERS]
    for descriptor in node.describe_parameters(names):
        assert len(descriptor.description) > 20, descriptor.name
    assert node.get_parameter("steps").value == 2
    result = node.set_parameters([Parameter("model_path", value="/elsewhere")])[0]
    assert not result.successful  # read-only after startup
    result = node.set_parameters([Parameter("steps", value=0)])[0]
    assert not result.successful  # out of range


@pytest.mark.parametrize("layout, expected", [
    ("missing", "does not exist"),
    ("empty", "model_index.json"),
    ("pickle", ".bin"),
])
def test_broken_model_fails_fast_naming_the_path(ros, tmp_path, model_dir, layout, expected):
    node, _, _ = ros
    path = tmp_path / "model"
    if layout == "empty":
        path.mkdir()
    elif layout == "pickle":
        import shutil

        shutil.copytree(model_dir, path)
        for weights in (path / "unet").glob("*.safetensors"):
            weights.rename(weights.with_name("diffusion_pytorch_model.bin"))
    with pytest.raises(ModelLoadError, match=expected) as error:
        GoalNode(node_name="broken_goal_node", context=node.context,
                 parameter_overrides=[Parameter("model_path", value=str(path)), Parameter("device", value="cpu")])
    assert str(path) in str(error.value)


def test_main_reports_startup_errors_without_a_traceback(tmp_path, capsys):
    missing = tmp_path / "no_such_model"
    code = goal_node_module.main(["goal_node", "--ros-args", "-p", f"model_path:={missing}", "-p", "device:=cpu"])
    assert code == 1
    err = capsys.readouterr().err
    assert "cannot start" in err and str(missing) in err and "Traceback" not in err


def test_bad_parameter_value_fails_fast(ros):
    node, _, predictor = ros
    with pytest.raises(ValueError, match="qos_reliability='sometimes'"):
        GoalNode(predictor=predictor, node_name="bad_qos_node", context=node.context,
                 parameter_overrides=[Parameter("qos_reliability", value="sometimes")])


def test_camera_subscriptions_register_no_middleware_event_handlers(ros):
    """An event handler on a camera subscription makes the MultiThreadedExecutor busy-wait whenever a frame is
    waiting to be taken (rmw_fastrtps's status condition stays triggered), which starved the node of frames at
    640x480 (bench/NOTES.md, session 3). The incompatible-QoS warning it would give is covered by the next test."""
    node, _, _ = ros
    assert node.image_sub.event_handlers == [] and node.compressed_sub.event_handlers == []


def test_reliable_node_names_a_best_effort_camera_publisher(ros):
    node, planner, predictor = ros
    reliable = GoalNode(predictor=predictor, node_name="reliable_node", context=node.context,
                        parameter_overrides=[Parameter("qos_reliability", value="reliable")])
    executor, thread = spin_in_background(reliable, num_threads=2)
    publisher = planner.node.create_publisher(Image, "/reliable_node/image",
                                              QoSProfile(depth=1, reliability=ReliabilityPolicy.BEST_EFFORT))
    try:
        warning = wait_for(lambda: [m for m in planner.logs if m.name == "reliable_node" and "best effort" in m.msg],
                           "the reliable node's warning on /rosout")[0]
        assert "/test_planner" in warning.msg and "/reliable_node/image" in warning.msg
        assert "qos_reliability" in warning.msg
    finally:
        planner.node.destroy_publisher(publisher)
        executor.shutdown()
        thread.join(10)
        reliable.destroy_node()


def test_decoded_frames_equal_what_was_sent(ros):
    """The node's camera path (Image message -> RGB) loses nothing for rgb8 frames."""
    node, planner, _ = ros
    sent = frame(120)
    planner.send_frame(sent, 120)
    wait_for(lambda: node._latest_frame and node._latest_frame.header.stamp.sec == 120, "the frame")
    np.testing.assert_array_equal(node._latest_frame.rgb, sent)
