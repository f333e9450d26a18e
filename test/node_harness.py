"""Shared harness of the goal-node tests (test_node*.py): real rclpy over Fast DDS, a tiny random model.

The ``ros`` fixture runs one node per test module in a MultiThreadedExecutor on a background thread; a client node
in the same executor plays the planner and the camera. The predictor is the real GoalPredictor, subclassed only to
add a gate, so a test can hold a prediction open and look at what the node does meanwhile. Test modules import the
fixtures (``model_dir``, ``ros``) and helpers from here.
"""
import os
import subprocess
import sys
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


# `python -m MODULE ARGS` with SIGINT handled as in a terminal: a test run started in the background (a script's `&`,
# nohup) passes SIGINT on ignored, and the node rightly keeps an ignored SIGINT ignored, so Ctrl-C tests would hang.
_AS_FROM_A_TERMINAL = ("import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
                       "runpy.run_module(sys.argv.pop(1), run_name='__main__', alter_sys=True)")


def start_module(module: str, *args: str) -> subprocess.Popen:
    """A Python module as its own process (stdout and stderr piped, as text), ready to be sent Ctrl-C."""
    return subprocess.Popen([sys.executable, "-c", _AS_FROM_A_TERMINAL, module, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ))


class GatedPredictor(GoalPredictor):
    """The real predictor, but predict() waits until `gate` is set (set by default)."""

    def __init__(self, components):
        super().__init__(components)
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    echo_start = False  # when True, the "prediction" is the start image itself (a model that predicts no change)
    # When True, the "prediction" is the start image with one block inverted: a clean change that a camera frame
    # equal to the goal image registers against, so the pixel scorer reaches it (test_node_action.py).
    edit_start = False

    def predict(self, *args, **kwargs):
        self.entered.set()
        assert self.gate.wait(60), "test never opened the gate"
        prediction = super().predict(*args, **kwargs)
        if self.echo_start:
            prediction.images = [np.array(args[0] if args else kwargs["image"])]
        elif self.edit_start:
            edited = np.array(args[0] if args else kwargs["image"])
            height, width = edited.shape[:2]
            block = (slice(height // 3, 2 * height // 3), slice(width // 3, 3 * width // 4))
            edited[block] = 255 - edited[block]
            prediction.images = [edited] + prediction.images[1:]
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
        # Random frames and a random model's goals: the pixel scorer's exact 0 at the start frame is what these tests
        # read; the learned scorer (the default) is tested on world episodes in test_node_progress.py.
        Parameter("progress_scorer", value="pixel"),
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


def deliver_frame(node, planner, rgb, sec, what="the node to take the frame"):
    """Publish a frame until the node holds it as its latest (the camera subscription is best effort: a single
    message may be lost, which is the camera QoS working, not the node failing)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        planner.send_frame(rgb, sec)
        try:
            return wait_for(lambda: node._latest_frame and node._latest_frame.header.stamp.sec == sec, what,
                            timeout=min(2.0, max(0.0, deadline - time.monotonic())))
        except AssertionError:
            continue
    raise AssertionError(f"timed out waiting for {what}")


def ensure_goal(ros, sec):
    """Feed a frame with stamp `sec` and ask for a goal from it; return the response."""
    node, planner, _ = ros
    deliver_frame(node, planner, frame(sec), sec)
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
