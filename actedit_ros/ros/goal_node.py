"""The goal-image node: a thin ROS 2 shell over :class:`GoalPredictor` and :class:`ProgressScorer`.

Interfaces (all names private to the node, so ``ros2 run actedit_ros goal_node`` gives ``/goal_node/...``):

* ``~/predict_goal`` (actedit_ros/srv/PredictGoal): a planner asks for the visual goal of an instruction, from the
  request's image or, when that is empty, from the latest camera frame.
* ``~/clear_goal`` (std_srvs/Trigger): forget the current goal (progress stops; a running prediction is discarded).
* ``~/progress`` (actedit_ros/msg/Progress): one message per live camera frame once a goal exists, stamped with the
  frame's header; when no frame arrived for ``stale_timeout`` seconds, the last values are repeated with
  ``stale = true`` (once per ``stale_timeout``) instead of silently freezing.
* ``~/goal`` (actedit_ros/msg/GoalImage) and ``~/goal_image`` (sensor_msgs/Image, for rviz/rqt): the current goal,
  latched (reliable + transient-local, depth 1) so late subscribers get it. A cleared goal is announced on
  ``~/goal`` with an empty ``goal_id`` (and empty images) and on ``~/goal_image`` with an empty image (width and
  height 0, no encoding), so neither topic keeps the cleared picture.
* Camera: ``image_topic`` (sensor_msgs/Image, default ``~/image``, also remappable) and, when set,
  ``compressed_image_topic`` (sensor_msgs/CompressedImage); depth 1, reliability from ``qos_reliability``.
  Frames larger than ``max_image_side`` are downscaled (area interpolation) before use. With ``reliable``, a
  best-effort publisher on a camera topic (it can never be heard) is named in a warning.
* ``/diagnostics`` (diagnostic_msgs/DiagnosticArray, 1 Hz): model, camera and scoring rates, frame age, the last
  prediction and error, for rqt_robot_monitor (:mod:`actedit_ros.ros.diagnostics`).
* ``~/reach_visual_goal`` (actedit_ros/action/ReachVisualGoal): predict a goal and track it until reached, with
  feedback per scored frame (:mod:`actedit_ros.ros.goal_action`); same prediction path and goal as the service
  (:mod:`actedit_ros.ros.goal_prediction`).

:class:`GoalNodeCore` holds all of this; :class:`GoalNode` runs it as a plain node, and
:class:`~actedit_ros.ros.goal_lifecycle_node.GoalLifecycleNode` as a managed one (``goal_lifecycle_node``).

Concurrency: camera callbacks and the stale timer share one mutually exclusive callback group; the services run in
a reentrant group, so under a MultiThreadedExecutor (what :func:`main` uses) a prediction never stalls the camera or
progress publishing. One prediction runs at a time: a ``predict_goal`` call that arrives while another is being
computed is answered at once with ``success = false`` and a message starting with ``"busy:"`` (it is not queued;
call again). The prediction itself runs on one dedicated thread at a lower CPU priority (nice +10 on Linux), so
whenever it and a camera callback both want a core, the callback wins. Bad requests are answered with
``success = false`` and a message naming the problem; the current goal is kept whenever a request fails.
:meth:`GoalNode.begin_shutdown` (Ctrl-C, via :mod:`actedit_ros.ros.node_main`) answers a waiting caller with a message
starting ``"cancelled:"`` and stops the running prediction at its next model call.
"""
from __future__ import annotations

import os
import sys
import threading
import time

import cv2
import torch
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup, ReentrantCallbackGroup
from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from actedit_ros.editing import GoalPredictor, default_model_is_placeholder
from actedit_ros.image_conversion import ImageConversionError, limit_image_side
from actedit_ros.msg import GoalImage, Progress
from actedit_ros.progress import load_progress_model
from actedit_ros.ros.camera_check import CameraPublisherCheck
from actedit_ros.ros.conversions import (
    compressed_msg_to_rgb,
    image_msg_to_rgb,
    rgb_to_image_msg,
    stamp_to_seconds,
)
from actedit_ros.ros.diagnostics import NodeDiagnostics, NodeStats
from actedit_ros.ros.node_state import ActiveGoal, CameraFrame
from actedit_ros.ros.parameters import NODE_PARAMETERS, PARAMETERS_BY_NAME, NodeParameter  # noqa: F401 - re-exported
from actedit_ros.ros.goal_action import GoalActionServer
from actedit_ros.ros.goal_prediction import BUSY_PREFIX, GoalPredictionMixin  # noqa: F401 - BUSY_PREFIX re-exported
from actedit_ros.ros.prediction_worker import PredictionWorker
from actedit_ros.srv import PredictGoal

NODE_NAME = "goal_node"
PREDICTION_STOP_WAIT = 30.0  # seconds destroy_node waits, after begin_shutdown, for a cancelled prediction to end


class GoalNodeCore(GoalPredictionMixin):
    """What the plain :class:`GoalNode` and the managed
    :class:`~actedit_ros.ros.goal_lifecycle_node.GoalLifecycleNode` share, in steps each calls when it needs them:
    parameters and state, the model, the prediction thread, the interfaces, and their teardown. Mixed into an rclpy
    ``Node`` (or ``LifecycleNode``)."""

    def _declare_node_parameters(self) -> None:
        for parameter in NODE_PARAMETERS:
            self.declare_parameter(parameter.name, parameter.default, parameter.descriptor())
        self._check_choices()
        self.add_on_set_parameters_callback(self._refuse_bad_choices)

    def _init_state(self) -> None:
        self._state_lock = threading.Lock()  # guards _latest_frame and _goal
        self._predict_lock = threading.Lock()  # held while a prediction runs
        # Held while the goal is cleared and "no goal" published, and while a new goal is published if it is still
        # current: the latched topics always end on the node's actual goal, whatever order clear and predict run in.
        self._latch_lock = threading.Lock()
        self._latest_frame: CameraFrame | None = None
        self._goal: ActiveGoal | None = None
        self._generation = 0  # bumped by every goal change; a prediction started under an older one is discarded
        # (instruction, start time, owner: an action goal's id or "" for the service) of the prediction in flight
        self._running: tuple[str, float, str] | None = None
        self._prediction_cancel: str | None = None  # set when its caller gave the running prediction up
        self._goal_count = 0
        self._stopping: str | None = None  # why the node is shutting down (begin_shutdown); None while serving
        self.dropped_frames = 0  # camera frames that could not be decoded (corrupt JPEG, bad encoding, ...)
        self.stats = NodeStats()  # counters read by /diagnostics (actedit_ros.ros.diagnostics)
        self.predictor: GoalPredictor | None = None
        self.progress_model = None
        self.goal_action: GoalActionServer | None = None
        self._prediction_thread: PredictionWorker | None = None
        self._cancel_hooks: list = []

    def _load_model(self, predictor: GoalPredictor | None) -> None:
        """The editing model (``predictor``, or loaded from ``model_path``) and the progress model."""
        torch.set_num_threads(self.param("torch_threads") or max(1, (os.cpu_count() or 2) - 1))
        model_path = self.param("model_path")
        # True when this node loads the random stand-in because no trained default model ships yet.
        self.placeholder_model = predictor is None and model_path == "" and default_model_is_placeholder()
        if predictor is None:
            predictor = GoalPredictor.from_pretrained(model_path or None, device=self.param("device"),
                                                      dtype=self.param("dtype") or None,
                                                      scheduler=self.param("scheduler"))
        if self.param("resolution") > 0:
            predictor.resolution = self.param("resolution")
        if self.placeholder_model:
            self.get_logger().warning(
                "no trained default model ships with this package: using a RANDOMLY INITIALISED placeholder model "
                "(goal images will look like noise). Set model_path to a trained model.")
        self.get_logger().info(f"model {predictor.components.model_path} on {predictor.device} "
                               f"(working resolution {predictor.resolution})")
        # Loaded even while progress_scorer is "pixel", so switching it at run time needs no load.
        self.progress_model = load_progress_model(self.param("progress_model_path") or None)
        self.predictor = predictor

    def _start_prediction_thread(self) -> None:
        # One prediction at a time, on its own low-priority thread (on Linux, threads it starts inherit the priority).
        self._prediction_thread = PredictionWorker(f"{self.get_name()}-prediction")
        # Once the node begins shutting down, a running prediction stops at its next UNet/VAE call (begin_shutdown).
        components = self.predictor.components
        self._cancel_hooks = self._prediction_thread.cancel_on_forward(
            [m for m in (components.unet, getattr(components.vae, "encoder", None),
                         getattr(components.vae, "decoder", None)) if isinstance(m, torch.nn.Module)],
            lambda: self._stopping or self._prediction_cancel)

    def _stop_prediction_thread(self) -> None:
        """End the prediction thread (after begin_shutdown: wait up to PREDICTION_STOP_WAIT s for a cancelled
        prediction to stop) and remove the cancel hooks from the model."""
        if self._prediction_thread is not None:
            if not self._prediction_thread.shutdown(PREDICTION_STOP_WAIT if self._stopping else 0.0):
                if self._stopping:
                    self.get_logger().warning(f"the cancelled prediction did not end within {PREDICTION_STOP_WAIT} s")
            self._prediction_thread = None
        for hook in self._cancel_hooks:
            hook.remove()
        self._cancel_hooks = []

    def _create_interfaces(self) -> None:
        """Publishers, camera subscriptions, timers and services (after the model and state exist)."""
        self._camera_group = MutuallyExclusiveCallbackGroup()
        self._service_group = ReentrantCallbackGroup()
        latched = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.goal_pub = self.create_publisher(GoalImage, "~/goal", latched)
        self.goal_image_pub = self.create_publisher(Image, "~/goal_image", latched)
        self.progress_pub = self.create_publisher(Progress, "~/progress", 10)

        reliability = (ReliabilityPolicy.RELIABLE if self.param("qos_reliability") == "reliable"
                       else ReliabilityPolicy.BEST_EFFORT)
        camera_qos = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=reliability,
                                durability=DurabilityPolicy.VOLATILE)
        # No middleware event handlers on the camera subscriptions, not even rclpy's default "incompatible QoS"
        # warning. With rmw_fastrtps such a handler waits on the reader's status condition, which a frame that is not
        # yet taken keeps triggered; while the frame's callback is queued for a worker, the MultiThreadedExecutor
        # then wakes at once on every wait without finding work, a busy loop that holds the GIL and starves the very
        # callback it waits for (measured at 640x480: thousands of empty waits per second, most frames dropped for
        # the rest of the run; bench/NOTES.md, ros2/rmw_fastrtps#833). The warning is replaced by
        # CameraPublisherCheck below.
        no_events = SubscriptionEventCallbacks(use_default_callbacks=False)
        self.image_sub = self.create_subscription(Image, self.param("image_topic"), self._on_image, camera_qos,
                                                  callback_group=self._camera_group, event_callbacks=no_events)
        self.compressed_sub = None
        if self.param("compressed_image_topic"):
            self.compressed_sub = self.create_subscription(
                CompressedImage, self.param("compressed_image_topic"), self._on_compressed_image, camera_qos,
                callback_group=self._camera_group, event_callbacks=no_events)
        self.stale_timer = self.create_timer(0.05, self._check_stale, callback_group=self._camera_group)
        self.publisher_check = None
        if reliability == ReliabilityPolicy.RELIABLE:  # a best-effort subscription matches every publisher
            self.publisher_check = CameraPublisherCheck(self, [self.image_sub, self.compressed_sub],
                                                        self._service_group)

        self.predict_srv = self.create_service(PredictGoal, "~/predict_goal", self._on_predict_goal,
                                               callback_group=self._service_group)
        self.clear_srv = self.create_service(Trigger, "~/clear_goal", self._on_clear_goal,
                                             callback_group=self._service_group)
        topics = [self.image_sub.topic_name] + ([self.compressed_sub.topic_name] if self.compressed_sub else [])
        self.get_logger().info(f"ready: camera {', '.join(topics)} ({self.param('qos_reliability')}), "
                               f"service {self.resolve_service_name(self.predict_srv.srv_name)}")
        self.diagnostics = NodeDiagnostics(self)  # /diagnostics, 1 Hz, own callback group
        self.goal_action = GoalActionServer(self, self._service_group)  # ~/reach_visual_goal

    def _destroy_interfaces(self) -> None:
        """Undo _create_interfaces (the managed node's deactivate): every publisher, subscription, timer, service
        and the action server; the camera state and the goal go with them."""
        if self.goal_action is not None:
            self.goal_action.destroy()
            self.goal_action = None
        timers = [self.stale_timer, self.diagnostics.timer] + ([self.publisher_check.timer] if self.publisher_check
                                                                else [])
        for timer in timers:
            self.destroy_timer(timer)
        self.publisher_check = None
        for subscription in (self.image_sub, self.compressed_sub):
            if subscription is not None:
                self.destroy_subscription(subscription)
        for service in (self.predict_srv, self.clear_srv):
            self.destroy_service(service)
        for publisher in (self.goal_pub, self.goal_image_pub, self.progress_pub, self.diagnostics.publisher):
            self.destroy_publisher(publisher)
        with self._state_lock:
            self._goal, self._latest_frame = None, None
            self._generation += 1

    # ------------------------------------------------------------------------------------------------ helpers
    def param(self, name: str):
        """A parameter's value; for a choice parameter that takes booleans (goal_refiner, spelling), the choice
        it stands for."""
        value = self.get_parameter(name).value
        return PARAMETERS_BY_NAME[name].choice(value) if name in PARAMETERS_BY_NAME else value

    def _check_choices(self) -> None:
        for parameter in NODE_PARAMETERS:
            if parameter.choices and self.param(parameter.name) not in parameter.choices:
                raise ValueError(f"parameter {parameter.name}={self.param(parameter.name)!r} is not one of "
                                 f"{', '.join(parameter.choices)}")

    def _refuse_bad_choices(self, parameters) -> SetParametersResult:
        """Run-time ``ros2 param set`` of a parameter with fixed choices (e.g. progress_scorer) to another value."""
        for parameter in parameters:
            declared = PARAMETERS_BY_NAME.get(parameter.name)
            if declared and declared.choices and declared.choice(parameter.value) not in declared.choices:
                return SetParametersResult(successful=False, reason=f"{parameter.name} must be one of "
                                                                    f"{', '.join(declared.choices)}")
        return SetParametersResult(successful=True)

    @property
    def current_goal_id(self) -> str:
        with self._state_lock:
            return self._goal.goal_id if self._goal else ""

    @property
    def predicting(self) -> bool:
        return self._predict_lock.locked()

    def _frame_age(self, header: Header) -> float:
        stamp = stamp_to_seconds(header.stamp)
        if stamp == 0.0:
            return float("nan")
        return self.get_clock().now().nanoseconds * 1e-9 - stamp

    # ------------------------------------------------------------------------------------------------ camera
    def _on_image(self, msg: Image) -> None:
        self._on_frame(msg.header, lambda: image_msg_to_rgb(msg), f"{msg.encoding} image")

    def _on_compressed_image(self, msg: CompressedImage) -> None:
        self._on_frame(msg.header, lambda: compressed_msg_to_rgb(msg), f"compressed ({msg.format}) image")

    def _on_frame(self, header: Header, convert, what: str) -> None:
        try:
            rgb = limit_image_side(convert(), self.param("max_image_side"))
        except ImageConversionError as err:  # corrupt or unsupported: dropped, counted, warned about (throttled)
            self.dropped_frames += 1
            self.get_logger().warning(f"dropped a camera frame ({what}): {err} ({self.dropped_frames} camera frames "
                                      f"dropped since start)", throttle_duration_sec=2.0)
            return
        frame = CameraFrame(rgb=rgb, header=header, received=time.monotonic())
        self.stats.frames_received += 1
        with self._state_lock:
            self._latest_frame = frame
            goal = self._goal
            if goal is not None:
                self._publish_progress(goal, frame)

    def _publish_progress(self, goal: ActiveGoal, frame: CameraFrame) -> None:
        rgb = frame.rgb
        if rgb.shape != goal.goal_rgb.shape:  # camera resolution changed, or the goal came with its own image
            rgb = cv2.resize(rgb, goal.goal_rgb.shape[1::-1], interpolation=cv2.INTER_AREA)
        result = goal.scorer.update(rgb)
        msg = Progress(header=frame.header, goal_id=goal.goal_id, instruction=goal.instruction,
                       progress=float(result.progress), raw_progress=float(result.raw_progress),
                       similarity=float(result.similarity), reached=bool(result.reached),
                       registered=bool(result.registered), stale=False, frame_age=self._frame_age(frame.header))
        goal.last_progress = msg
        self.stats.frames_scored += 1
        self.progress_pub.publish(msg)
        if self.goal_action is not None:
            self.goal_action.on_progress(msg)

    def _check_stale(self) -> None:
        timeout = self.param("stale_timeout")
        now = time.monotonic()
        with self._state_lock:
            goal, frame = self._goal, self._latest_frame
            if goal is None:
                return
            last_seen = frame.received if frame else 0.0
            if now - last_seen < timeout or now - goal.last_stale_publish < timeout:
                return
            goal.last_stale_publish = now
            if goal.last_progress is not None:
                msg = Progress(header=goal.last_progress.header, goal_id=goal.goal_id, instruction=goal.instruction,
                               progress=goal.last_progress.progress, raw_progress=goal.last_progress.raw_progress,
                               similarity=goal.last_progress.similarity, reached=goal.last_progress.reached,
                               registered=goal.last_progress.registered)
            else:  # a goal from a request image and no camera frame since
                msg = Progress(header=frame.header if frame else Header(), goal_id=goal.goal_id,
                               instruction=goal.instruction, registered=False)
            msg.stale = True
            msg.frame_age = self._frame_age(msg.header)
        self.progress_pub.publish(msg)
        if self.goal_action is not None:
            self.goal_action.on_progress(msg)

    # ------------------------------------------------------------------------------------------------ services
    def _on_clear_goal(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        cleared, running = self.clear_goal()
        response.success = True
        response.message = f"cleared goal {cleared}" if cleared else "there was no goal to clear"
        if running:
            response.message += f"; the running prediction for {running[0]!r} will be discarded"
        return response

    def _on_predict_goal(self, request: PredictGoal.Request, response: PredictGoal.Response) -> PredictGoal.Response:
        outcome = self.predict_and_adopt(request.instruction, request.image, request.seed, request.num_candidates)
        response.success = outcome.success
        response.message = outcome.message
        response.goal_id = outcome.goal_id
        if outcome.goal_image is not None:
            response.goal_image = outcome.goal_image
        response.candidates = outcome.candidates
        response.candidate_scores = outcome.candidate_scores
        response.prediction_time = outcome.prediction_time
        return response

    def begin_shutdown(self, reason: str) -> None:
        """Stop serving: a caller waiting for a prediction is answered at once (``cancelled: ...``), the prediction
        stops at its next model call, an action goal ends (reason SHUTDOWN), and new requests are refused. Called
        by the process before it stops."""
        self._stopping = reason
        self._goal_changed()

    def _goal_changed(self) -> None:
        """The goal was adopted, cleared or replaced, or the node is stopping: wake the action goal's wait."""
        action = getattr(self, "goal_action", None)
        if action is not None:
            action.notify()


class GoalNode(GoalNodeCore, Node):
    """Serves visual goals and publishes progress toward them. See the module docstring for the interfaces."""

    def __init__(self, predictor: GoalPredictor | None = None, node_name: str = NODE_NAME, **node_kwargs):
        super().__init__(node_name, **node_kwargs)
        self._init_state()
        self._declare_node_parameters()
        self._load_model(predictor)
        self._start_prediction_thread()
        self._create_interfaces()

    def destroy_node(self) -> None:
        if hasattr(self, "_cancel_hooks"):  # absent when __init__ failed early
            self._stop_prediction_thread()
        if getattr(self, "goal_action", None) is not None:
            self.goal_action.destroy()
            self.goal_action = None
        super().destroy_node()


def spin_in_background(node: Node, num_threads: int = 4) -> tuple[MultiThreadedExecutor, threading.Thread]:
    """Spin ``node`` with a MultiThreadedExecutor in a daemon thread (demo and tests). Shut down the executor to stop."""
    executor = MultiThreadedExecutor(num_threads=num_threads, context=node.context)
    executor.add_node(node)
    thread = threading.Thread(target=executor.spin, name=f"{node.get_name()}-executor", daemon=True)
    thread.start()
    return executor, thread


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``lib/actedit_ros/goal_node``; the process logic is in :mod:`actedit_ros.ros.node_main`."""
    from actedit_ros.ros.node_main import main as node_main  # noqa: PLC0415 - node_main imports this module

    return node_main(argv)


if __name__ == "__main__":
    sys.exit(main())
