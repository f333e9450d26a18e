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
import uuid
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout

import cv2
import numpy as np
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
from actedit_ros.editing.pipeline import validate_instruction
from actedit_ros.image_conversion import ImageConversionError, limit_image_side
from actedit_ros.msg import GoalImage, Progress
from actedit_ros.progress import check_rgb, load_progress_model, make_scorer
from actedit_ros.ros.camera_check import CameraPublisherCheck
from actedit_ros.ros.conversions import (
    compressed_msg_to_rgb,
    image_msg_is_empty,
    image_msg_to_rgb,
    rgb_to_image_msg,
    stamp_to_seconds,
)
from actedit_ros.ros.diagnostics import NodeDiagnostics, NodeStats
from actedit_ros.ros.node_state import ActiveGoal, CameraFrame
from actedit_ros.ros.parameters import NODE_PARAMETERS, NodeParameter  # noqa: F401 - NodeParameter re-exported
from actedit_ros.ros.prediction_worker import PredictionCancelled, PredictionWorker
from actedit_ros.srv import PredictGoal

NODE_NAME = "goal_node"
BUSY_PREFIX = "busy:"
SHUTDOWN_POLL = 0.1  # seconds between a waiting predict_goal call's looks for begin_shutdown
PREDICTION_STOP_WAIT = 30.0  # seconds destroy_node waits, after begin_shutdown, for a cancelled prediction to end


class _Refusal(Exception):
    """A request the node refuses before predicting; the message says why (it becomes the response's message)."""


class GoalNode(Node):
    """Serves visual goals and publishes progress toward them. See the module docstring for the interfaces."""

    def __init__(self, predictor: GoalPredictor | None = None, node_name: str = NODE_NAME, **node_kwargs):
        super().__init__(node_name, **node_kwargs)
        for parameter in NODE_PARAMETERS:
            self.declare_parameter(parameter.name, parameter.default, parameter.descriptor())
        self._check_choices()
        self.add_on_set_parameters_callback(self._refuse_bad_choices)

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
        self.predictor = predictor
        if self.placeholder_model:
            self.get_logger().warning(
                "no trained default model ships with this package: using a RANDOMLY INITIALISED placeholder model "
                "(goal images will look like noise). Set model_path to a trained model.")
        self.get_logger().info(f"model {predictor.components.model_path} on {predictor.device} "
                               f"(working resolution {predictor.resolution})")
        # Loaded even while progress_scorer is "pixel", so switching it at run time needs no load.
        self.progress_model = load_progress_model(self.param("progress_model_path") or None)

        self._state_lock = threading.Lock()  # guards _latest_frame and _goal
        self._predict_lock = threading.Lock()  # held while a prediction runs
        # Held while the goal is cleared and "no goal" published, and while a new goal is published if it is still
        # current: the latched topics always end on the node's actual goal, whatever order clear and predict run in.
        self._latch_lock = threading.Lock()
        self._latest_frame: CameraFrame | None = None
        self._goal: ActiveGoal | None = None
        self._generation = 0  # bumped by every goal change; a prediction started under an older one is discarded
        self._running: tuple[str, float] | None = None  # (instruction, start time) of the prediction in flight
        self._goal_count = 0
        self._stopping: str | None = None  # why the node is shutting down (begin_shutdown); None while serving
        self.dropped_frames = 0  # camera frames that could not be decoded (corrupt JPEG, bad encoding, ...)
        self.stats = NodeStats()  # counters read by /diagnostics (actedit_ros.ros.diagnostics)
        # One prediction at a time, on its own low-priority thread (on Linux, threads it starts inherit the priority).
        self._prediction_thread = PredictionWorker(f"{node_name}-prediction")
        # Once the node begins shutting down, a running prediction stops at its next UNet/VAE call (begin_shutdown).
        components = predictor.components
        self._cancel_hooks = self._prediction_thread.cancel_on_forward(
            [m for m in (components.unet, getattr(components.vae, "encoder", None),
                         getattr(components.vae, "decoder", None)) if isinstance(m, torch.nn.Module)],
            lambda: self._stopping)

        self._create_interfaces()

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

    def destroy_node(self) -> None:
        prediction_thread = getattr(self, "_prediction_thread", None)  # absent when __init__ failed early
        if prediction_thread is not None:
            if not prediction_thread.shutdown(PREDICTION_STOP_WAIT if self._stopping else 0.0):
                if self._stopping:
                    self.get_logger().warning(f"the cancelled prediction did not end within {PREDICTION_STOP_WAIT} s")
            for hook in getattr(self, "_cancel_hooks", ()):
                hook.remove()
        super().destroy_node()

    # ------------------------------------------------------------------------------------------------ helpers
    def param(self, name: str):
        return self.get_parameter(name).value

    def _check_choices(self) -> None:
        for parameter in NODE_PARAMETERS:
            if parameter.choices and self.param(parameter.name) not in parameter.choices:
                raise ValueError(f"parameter {parameter.name}={self.param(parameter.name)!r} is not one of "
                                 f"{', '.join(parameter.choices)}")

    def _refuse_bad_choices(self, parameters) -> SetParametersResult:
        """Run-time ``ros2 param set`` of a parameter with fixed choices (e.g. progress_scorer) to another value."""
        choices = {p.name: p.choices for p in NODE_PARAMETERS if p.choices}
        for parameter in parameters:
            if parameter.name in choices and parameter.value not in choices[parameter.name]:
                return SetParametersResult(successful=False, reason=f"{parameter.name} must be one of "
                                                                    f"{', '.join(choices[parameter.name])}")
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

    # ------------------------------------------------------------------------------------------------ services
    def _on_clear_goal(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        with self._latch_lock:
            with self._state_lock:
                cleared = self._goal.goal_id if self._goal else ""
                self._goal = None
                self._generation += 1
                running = self._running
            # Both latched topics get an explicit "no goal", so a late subscriber never sees the cleared one: a
            # GoalImage with an empty goal_id and empty images, and an empty Image (width = height = 0, no encoding).
            header = Header(stamp=self.get_clock().now().to_msg())
            self.goal_pub.publish(GoalImage(header=header))
            self.goal_image_pub.publish(Image(header=header))
        response.success = True
        response.message = f"cleared goal {cleared}" if cleared else "there was no goal to clear"
        if running:
            response.message += f"; the running prediction for {running[0]!r} will be discarded"
        return response

    def _on_predict_goal(self, request: PredictGoal.Request, response: PredictGoal.Response) -> PredictGoal.Response:
        try:
            return self._predict_goal(request, response)
        except Exception as err:  # noqa: BLE001 - the node keeps serving whatever goes wrong in one request
            self.get_logger().error(f"predict_goal failed: {type(err).__name__}: {err}")
            response.success = False
            response.message = f"prediction failed ({type(err).__name__}): {err}"
            self.stats.record_error(response.message, internal=True)
            response.goal_id = ""
            return response

    def _fail(self, response: PredictGoal.Response, message: str) -> PredictGoal.Response:
        response.success = False
        response.message = message
        self.stats.record_error(message)
        self.get_logger().warning(f"predict_goal refused: {message[:300]}")
        return response

    def begin_shutdown(self, reason: str) -> None:
        """Stop serving: a caller waiting for a prediction is answered at once (``cancelled: ...``), the prediction
        stops at its next model call, and new requests are refused. Called by the process before it stops."""
        self._stopping = reason

    def _busy_message(self) -> str:
        running = self._running
        what = (f"the goal for {running[0]!r} (started {time.monotonic() - running[1]:.1f} s ago)"
                if running else "another goal")
        return f"{BUSY_PREFIX} still predicting {what}; this request was not queued, call again when it finishes"

    def _predict_on_worker(self, start_rgb: np.ndarray, instruction: str, seed: int, num_candidates: int):
        """Run the prediction on the prediction thread and wait for it (see _await_prediction)."""
        return self._await_prediction(self._prediction_thread.submit(
            self.predictor.predict, start_rgb, instruction, steps=self.param("steps"),
            text_guidance=self.param("text_guidance"), image_guidance=self.param("image_guidance"), seed=seed,
            num_candidates=num_candidates), instruction)

    def _await_prediction(self, future: Future, instruction: str):
        """The prediction's result; raises _Refusal as soon as the node begins shutting down."""
        while True:
            try:
                return future.result(timeout=SHUTDOWN_POLL)
            except FutureTimeout:
                if self._stopping is None:
                    continue
            except PredictionCancelled:
                pass
            break
        future.cancel()
        raise _Refusal(f"cancelled: the node is shutting down ({self._stopping}); the prediction for {instruction!r} "
                       f"was stopped")

    def _start_image(self, image: Image, notes: list[str]) -> tuple[np.ndarray, Header]:
        """The start image of a request: its own image (checked, downscaled to ``max_image_side``) or, when that is
        empty, the latest camera frame. Raises _Refusal naming the problem, before any prediction runs, also for an
        image too small to score (the scorer's own size rule, :func:`check_rgb`, so the message is the same)."""
        if image_msg_is_empty(image):
            with self._state_lock:
                frame = self._latest_frame
            if frame is None:
                raise _Refusal(f"no image in the request and no camera frame received yet on "
                               f"{self.image_sub.topic_name}"
                               + (f" or {self.compressed_sub.topic_name}" if self.compressed_sub else ""))
            start_rgb, start_header, what = frame.rgb, frame.header, "the latest camera frame cannot be used"
        elif image.encoding == "":
            raise _Refusal(f"bad request image: it has no encoding but a size or data ({image.width}x{image.height}, "
                           f"{len(image.data)} bytes); set its encoding, or leave the whole image empty to use the "
                           f"latest camera frame")
        else:
            try:
                start_rgb = image_msg_to_rgb(image)
            except ImageConversionError as err:
                raise _Refusal(f"bad request image: {err}") from err
            start_header, what = image.header, "bad request image"
            limited = limit_image_side(start_rgb, self.param("max_image_side"))
            if limited.shape != start_rgb.shape:
                notes.append(f"request image downscaled from {start_rgb.shape[1]}x{start_rgb.shape[0]} to "
                             f"{limited.shape[1]}x{limited.shape[0]} (max_image_side)")
                what += f" (after downscaling to max_image_side {self.param('max_image_side')})"
            start_rgb = limited
        try:
            check_rgb(start_rgb, "the image")
        except ValueError as err:
            raise _Refusal(f"{what}: {err}; nothing was predicted") from err
        return start_rgb, start_header

    def _predict_goal(self, request: PredictGoal.Request, response: PredictGoal.Response) -> PredictGoal.Response:
        try:
            instruction = validate_instruction(request.instruction)
        except ValueError as err:
            return self._fail(response, f"bad instruction: {err}")
        notes = []
        if instruction != request.instruction.strip():
            notes.append("control characters and repeated whitespace in the instruction were replaced")

        if self._stopping is not None:
            return self._fail(response, f"cancelled: the node is shutting down ({self._stopping})")
        try:
            start_rgb, start_header = self._start_image(request.image, notes)
        except _Refusal as refusal:
            return self._fail(response, str(refusal))

        if request.seed < -1:
            return self._fail(response, f"bad seed {request.seed}: use -1 (the node's seed parameter) or >= 0")
        seed = self.param("seed") if request.seed == -1 else int(request.seed)
        num_candidates = max(1, int(request.num_candidates))

        if not self._predict_lock.acquire(blocking=False):
            return self._fail(response, self._busy_message())
        try:
            with self._state_lock:
                generation = self._generation
            self._running = (instruction, time.monotonic())
            try:
                prediction = self._predict_on_worker(start_rgb, instruction, seed, num_candidates)
            except _Refusal as refusal:
                return self._fail(response, str(refusal))
            except ValueError as err:
                return self._fail(response, f"bad request: {err}")
            goal_rgb = prediction.images[0]
            try:
                scorer = make_scorer(self.param("progress_scorer"), start_rgb, goal_rgb, self.progress_model,
                                     reached_threshold=self.param("reached_threshold"))
            except ValueError as err:  # e.g. the model predicted no change at all
                response.goal_image = rgb_to_image_msg(goal_rgb, start_header)
                response.prediction_time = float(prediction.seconds)
                return self._fail(response, f"the predicted goal cannot be tracked, so it was not adopted (the "
                                            f"image is in goal_image): {err}")
            with self._state_lock:
                if generation != self._generation:
                    return self._fail(response, f"the prediction for {instruction!r} was discarded: the goal was "
                                                f"cleared or replaced while it ran")
                self._goal_count += 1
                goal_id = f"goal-{self._goal_count}-{uuid.uuid4().hex[:8]}"
                self._goal = ActiveGoal(goal_id=goal_id, instruction=instruction, start_rgb=start_rgb,
                                        goal_rgb=goal_rgb, scorer=scorer)
                self._generation += 1
        finally:
            self._running = None
            self._predict_lock.release()

        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=start_header.frame_id)
        goal_image = rgb_to_image_msg(goal_rgb, header)
        goal_msg = GoalImage(header=header, goal_id=goal_id, instruction=instruction, seed=seed,
                             prediction_time=float(prediction.seconds),
                             start_image=rgb_to_image_msg(start_rgb, start_header), goal_image=goal_image)
        with self._latch_lock:
            if self.current_goal_id == goal_id:  # not cleared or replaced since it was adopted
                self.goal_pub.publish(goal_msg)
                self.goal_image_pub.publish(goal_image)

        response.success = True
        response.goal_id = goal_id
        response.goal_image = goal_image
        if num_candidates > 1:
            response.candidates = [rgb_to_image_msg(image, header) for image in prediction.images]
            response.candidate_scores = [float(score) for score in prediction.scores]
        response.prediction_time = float(prediction.seconds)
        notes += prediction.warnings + prediction.notes  # warnings (goal unreliable: out of domain) first
        self.stats.record_prediction(prediction.seconds, goal_id, prediction.warnings)
        for warning in prediction.warnings:
            self.get_logger().warning(f"goal {goal_id}: {warning}")
        if self.placeholder_model:
            notes.append("the model is a RANDOMLY INITIALISED placeholder (no trained default ships yet)")
        response.message = (f"goal {goal_id} for {instruction!r}: {prediction.steps} steps, seed {seed}, "
                            f"{prediction.seconds:.2f} s" + "".join(f"; {note}" for note in notes))
        self.get_logger().info(response.message)
        return response


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
