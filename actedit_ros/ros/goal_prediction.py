"""The goal node's one prediction path, shared by ``~/predict_goal`` and the ``~/reach_visual_goal`` action.

:meth:`GoalPredictionMixin.predict_and_adopt` checks a request (instruction, start image, seed), runs the prediction
on the node's prediction thread (one at a time; a request that finds one running is refused with ``busy:``), builds
the progress scorer, adopts the goal as the node's current goal (unless it was cleared or replaced meanwhile) and
publishes it latched. It returns a :class:`GoalOutcome` that each interface turns into its own answer, and records
the outcome in the node's /diagnostics stats.

The prediction lock is released when the prediction thread is done with the job, not when the caller stops waiting:
a caller that gives up (an action goal cancelled, preempted or timed out during its prediction) leaves the
prediction to stop at its next model call (the node's cancel hook reads ``_prediction_cancel``), and nothing it
computes is adopted. Mixed into :class:`actedit_ros.ros.goal_node.GoalNode`, whose state it reads.
"""
from __future__ import annotations

import time
import uuid
from concurrent.futures import CancelledError, Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from actedit_ros.editing.pipeline import validate_instruction
from actedit_ros.image_conversion import ImageConversionError, limit_image_side
from actedit_ros.msg import GoalImage
from actedit_ros.progress import check_rgb, make_scorer
from actedit_ros.ros.conversions import image_msg_is_empty, image_msg_to_rgb, rgb_to_image_msg
from actedit_ros.ros.node_state import ActiveGoal
from actedit_ros.ros.prediction_worker import PredictionCancelled

BUSY_PREFIX = "busy:"
SHUTDOWN_POLL = 0.1  # seconds between a waiting caller's looks for begin_shutdown / its own abandon()

# GoalOutcome.kind values
OK, BAD_REQUEST, BUSY, FAILED, DISCARDED, ABANDONED, SHUTDOWN = (
    "ok", "bad_request", "busy", "failed", "discarded", "abandoned", "shutdown")


class _Refusal(Exception):
    """A request the node refuses; ``kind`` says which GoalOutcome kind, the message why."""

    def __init__(self, message: str, kind: str = BAD_REQUEST):
        super().__init__(message)
        self.kind = kind


@dataclass
class GoalOutcome:
    """What became of one goal request. ``kind`` is one of OK, BAD_REQUEST, BUSY, FAILED (an exception in the node,
    or a goal that cannot be tracked), DISCARDED (the goal was cleared or replaced while it was predicted),
    ABANDONED (the caller gave up, see ``abandon``) and SHUTDOWN."""

    kind: str
    message: str
    goal_id: str = ""
    seed: int = 0
    goal_image: Image | None = None
    candidates: list[Image] = field(default_factory=list)
    candidate_scores: list[float] = field(default_factory=list)
    prediction_time: float = 0.0

    @property
    def success(self) -> bool:
        return self.kind == OK


class GoalPredictionMixin:
    """The prediction path of :class:`~actedit_ros.ros.goal_node.GoalNode` (see the module docstring)."""

    def predict_and_adopt(self, instruction: str, image: Image, seed: int, num_candidates: int, *,
                          reached_threshold: float = 0.0, owner: str = "",
                          abandon: Callable[[], str | None] | None = None) -> GoalOutcome:
        """Predict, adopt and publish the goal of one request. ``owner`` names the caller (an action goal's id; ""
        for the service). With ``abandon``, the caller is polled while it waits: once it returns a reason the
        prediction is given up (kind ABANDONED) and stopped. A caller with an ``owner`` waits for a prediction
        another owner gave up to stop instead of being told busy (an action goal that preempted another)."""
        try:
            return self._predict_and_adopt(instruction, image, seed, num_candidates, reached_threshold, owner,
                                           abandon or (lambda: None))
        except _Refusal as refusal:
            return self._refused(refusal.kind, str(refusal))
        except Exception as err:  # noqa: BLE001 - the node keeps serving whatever goes wrong in one request
            self.get_logger().error(f"predict_goal failed: {type(err).__name__}: {err}")
            message = f"prediction failed ({type(err).__name__}): {err}"
            self.stats.record_error(message, internal=True)
            return GoalOutcome(FAILED, message)

    def _refused(self, kind: str, message: str, **fields) -> GoalOutcome:
        if kind != ABANDONED:  # the caller's own choice is no error of the node's
            self.stats.record_error(message)
            self.get_logger().warning(f"predict_goal refused: {message[:300]}")
        return GoalOutcome(kind, message, **fields)

    def _busy_message(self) -> str:
        running = self._running
        what = (f"the goal for {running[0]!r} (started {time.monotonic() - running[1]:.1f} s ago)"
                if running else "another goal")
        return f"{BUSY_PREFIX} still predicting {what}; this request was not queued, call again when it finishes"

    def _check_request(self, instruction: str, image: Image, seed: int, notes: list[str]):
        """(instruction, start_rgb, start_header, seed) of a request, or _Refusal naming the problem."""
        try:
            clean = validate_instruction(instruction)
        except ValueError as err:
            raise _Refusal(f"bad instruction: {err}") from err
        if clean != instruction.strip():
            notes.append("control characters and repeated whitespace in the instruction were replaced")
        if self._stopping is not None:
            raise _Refusal(f"cancelled: the node is shutting down ({self._stopping})", SHUTDOWN)
        start_rgb, start_header = self._start_image(image, notes)
        if seed < -1:
            raise _Refusal(f"bad seed {seed}: use -1 (the node's seed parameter) or >= 0")
        return clean, start_rgb, start_header, (self.param("seed") if seed == -1 else int(seed))

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

    def _acquire_prediction(self, owner: str, abandon: Callable[[], str | None]) -> None:
        """Take the prediction lock, or raise _Refusal (busy, shutting down, abandoned). A caller with an owner
        waits while the running prediction belongs to another owner, which has given it up (preempted) or is about
        to; a prediction for the service is never waited for."""
        if self._predict_lock.acquire(blocking=False):
            return
        if not owner:
            raise _Refusal(self._busy_message(), BUSY)
        while not self._predict_lock.acquire(timeout=SHUTDOWN_POLL):
            running = self._running
            if running is not None and not running[2]:  # the service's prediction
                raise _Refusal(self._busy_message(), BUSY)
            if self._stopping is not None:
                raise _Refusal(f"cancelled: the node is shutting down ({self._stopping})", SHUTDOWN)
            if (reason := abandon()) is not None:
                raise _Refusal(reason, ABANDONED)

    def _prediction_done(self, _future: Future) -> None:
        """Runs when the prediction thread is done with a job (or it was cancelled before it started)."""
        self._running = None
        self._prediction_cancel = None
        self._predict_lock.release()

    def _run_prediction(self, start_rgb, instruction: str, seed: int, num_candidates: int, owner: str,
                        abandon: Callable[[], str | None]):
        """Submit the prediction to the prediction thread and wait for it; _Refusal when the node begins shutting
        down (``cancelled: ...``) or the caller abandons it."""
        self._running = (instruction, time.monotonic(), owner)
        try:
            future = self._prediction_thread.submit(
                self.predictor.predict, start_rgb, instruction, steps=self.param("steps"),
                text_guidance=self.param("text_guidance"), image_guidance=self.param("image_guidance"), seed=seed,
                num_candidates=num_candidates, composite=self.param("goal_mode") == "composite",
                refine=self.param("goal_refiner") == "auto",
                correct_spelling=self.param("spelling") == "correct")
        except BaseException:
            self._prediction_done(None)
            raise
        future.add_done_callback(self._prediction_done)
        while True:
            try:
                return future.result(timeout=SHUTDOWN_POLL)
            except FutureTimeout:
                if self._stopping is None and (reason := abandon()) is None:
                    continue
                if self._stopping is None:
                    self._prediction_cancel = reason  # the cancel hook stops it at its next model call
                    future.cancel()
                    raise _Refusal(reason, ABANDONED) from None
            except (PredictionCancelled, CancelledError):
                pass
            break
        future.cancel()
        raise _Refusal(f"cancelled: the node is shutting down ({self._stopping}); the prediction for "
                       f"{instruction!r} was stopped", SHUTDOWN)

    def _predict_and_adopt(self, instruction, image, seed, num_candidates, reached_threshold, owner, abandon):
        notes: list[str] = []
        instruction, start_rgb, start_header, seed = self._check_request(instruction, image, seed, notes)
        num_candidates = max(1, int(num_candidates))
        self._acquire_prediction(owner, abandon)
        with self._state_lock:
            generation = self._generation
        try:
            prediction = self._run_prediction(start_rgb, instruction, seed, num_candidates, owner, abandon)
        except ValueError as err:
            raise _Refusal(f"bad request: {err}") from err
        goal_rgb = prediction.images[0]
        try:
            scorer = make_scorer(self.param("progress_scorer"), start_rgb, goal_rgb, self.progress_model,
                                 reached_threshold=reached_threshold or self.param("reached_threshold"))
        except ValueError as err:  # e.g. the model predicted no change at all
            return self._refused(FAILED, f"the predicted goal cannot be tracked, so it was not adopted (the image "
                                         f"is in goal_image): {err}", seed=seed,
                                 goal_image=rgb_to_image_msg(goal_rgb, start_header),
                                 prediction_time=float(prediction.seconds))
        with self._state_lock:
            if generation != self._generation:
                return self._refused(DISCARDED, f"the prediction for {instruction!r} was discarded: the goal was "
                                                f"cleared or replaced while it ran")
            if (reason := abandon()) is not None:
                return self._refused(ABANDONED, reason)
            self._goal_count += 1
            goal_id = f"goal-{self._goal_count}-{uuid.uuid4().hex[:8]}"
            self._goal = ActiveGoal(goal_id=goal_id, instruction=instruction, start_rgb=start_rgb,
                                    goal_rgb=goal_rgb, scorer=scorer)
            self._generation += 1
        return self._publish_adopted(goal_id, instruction, seed, start_rgb, start_header, prediction, notes,
                                     num_candidates)

    def _publish_adopted(self, goal_id, instruction, seed, start_rgb, start_header, prediction, notes,
                         num_candidates) -> GoalOutcome:
        self._goal_changed()
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=start_header.frame_id)
        goal_image = rgb_to_image_msg(prediction.images[0], header)
        goal_msg = GoalImage(header=header, goal_id=goal_id, instruction=instruction, seed=seed,
                             prediction_time=float(prediction.seconds),
                             start_image=rgb_to_image_msg(start_rgb, start_header), goal_image=goal_image)
        with self._latch_lock:
            if self.current_goal_id == goal_id:  # not cleared or replaced since it was adopted
                self.goal_pub.publish(goal_msg)
                self.goal_image_pub.publish(goal_image)
        outcome = GoalOutcome(OK, "", goal_id=goal_id, seed=seed, goal_image=goal_image,
                              prediction_time=float(prediction.seconds))
        if num_candidates > 1:
            outcome.candidates = [rgb_to_image_msg(image, header) for image in prediction.images]
            outcome.candidate_scores = [float(score) for score in prediction.scores]
        notes += prediction.warnings + prediction.notes  # warnings (goal unreliable: out of domain) first
        self.stats.record_prediction(prediction.seconds, goal_id, prediction.warnings)
        for warning in prediction.warnings:
            self.get_logger().warning(f"goal {goal_id}: {warning}")
        if self.placeholder_model:
            notes.append("the model is a RANDOMLY INITIALISED placeholder (no trained default ships yet)")
        outcome.message = (f"goal {goal_id} for {instruction!r}: {prediction.steps} steps, seed {seed}, "
                           f"{prediction.seconds:.2f} s" + "".join(f"; {note}" for note in notes))
        self.get_logger().info(outcome.message)
        return outcome

    def clear_goal(self, only: str | None = None) -> tuple[str, tuple | None]:
        """Clear the current goal (only when its id is ``only``, if given) and latch "no goal" on both topics.
        Returns (the cleared goal's id or "", the running prediction or None)."""
        with self._latch_lock:
            with self._state_lock:
                if only is not None and (self._goal is None or self._goal.goal_id != only):
                    return "", self._running
                cleared = self._goal.goal_id if self._goal else ""
                self._goal = None
                self._generation += 1
                running = self._running
            # Both latched topics get an explicit "no goal", so a late subscriber never sees the cleared one: a
            # GoalImage with an empty goal_id and empty images, and an empty Image (width = height = 0, no encoding).
            header = Header(stamp=self.get_clock().now().to_msg())
            self.goal_pub.publish(GoalImage(header=header))
            self.goal_image_pub.publish(Image(header=header))
        self._goal_changed()
        return cleared, running
