"""``~/reach_visual_goal`` (actedit_ros/action/ReachVisualGoal): a planner's goal, from instruction to "reached".

An accepted goal is predicted through the node's one prediction path
(:meth:`~actedit_ros.ros.goal_prediction.GoalPredictionMixin.predict_and_adopt`: the same checks, busy rule,
prediction thread and /diagnostics stats as ``~/predict_goal``), adopted as the node's current goal (so ``~/goal``,
``~/goal_image``, ``~/progress`` and the service show it), then tracked: every frame the node scores for it becomes a
feedback message, and the goal succeeds once ``reached`` turns on. It is aborted, with ``reason`` and ``message``
saying why, when its ``timeout`` passes, the camera is silent for ``max_stale`` seconds while tracking, a newer goal
replaces it (an action goal under ``action_new_goal: preempt``, or an adopted ``predict_goal`` call), ``clear_goal``
clears it, the request is bad, the prediction fails, or the node shuts down; a cancel ends it as cancelled at any
point, during the prediction too (the prediction then stops at its next model call and is never adopted). Whenever
an action goal ends without being reached, the node's goal is cleared if it is still this action's (``~/goal`` and
``~/goal_image`` then hold "no goal", as after ``clear_goal``); a reached goal stays the node's current goal.

The execute callback blocks its executor thread (reentrant group) and waits on a condition that camera callbacks,
goal changes, cancels and the node's shutdown notify: no polling loop beyond a 1 s safety timeout.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field

from rclpy.action import ActionServer, CancelResponse, GoalResponse

from actedit_ros.action import ReachVisualGoal
from actedit_ros.msg import Progress
from actedit_ros.ros import goal_prediction as gp

Result = ReachVisualGoal.Result
Feedback = ReachVisualGoal.Feedback
# Outcome kinds of the prediction path -> the result's reason
_REASONS = {gp.BAD_REQUEST: Result.BAD_REQUEST, gp.BUSY: Result.BUSY, gp.FAILED: Result.PREDICTION_FAILED,
            gp.SHUTDOWN: Result.SHUTDOWN}
SAFETY_WAKE = 1.0  # seconds: the longest the tracking loop sleeps without a notification
STATUS_REPUBLISH = 1.0  # seconds between republished goal status arrays while a goal runs (see GoalActionServer)
PREEMPTED_WAIT = 10.0  # seconds a new goal waits for the goals it preempted to end (they end at once)
CANCEL_STATE_WAIT = 2.0  # seconds _finish waits for rclpy to put a cancelled goal in its CANCELING state
RESULT_SEND_WAIT = 2.0  # seconds wait_results_sent waits, at most, for an ended goal's result to go out


class _ResultSendingServer(ActionServer):
    """rclpy's ActionServer, telling when it has sent a goal's result.

    rclpy sends a result from a task the executor runs some time after the execute callback returned; an owner that
    destroys the server before that (a lifecycle deactivate) leaves its client without one. ``on_sent(uuid)`` is
    called once the response went out (or failed to), so the owner can wait for it.
    """

    def __init__(self, *args, on_sent, **kwargs):
        self._on_sent = on_sent
        super().__init__(*args, **kwargs)

    def _send_result_response(self, request_header, future) -> None:  # rclpy's own hook (no public one)
        try:
            super()._send_result_response(request_header, future)
        finally:
            sent = [uuid for uuid, result in self._result_futures.items() if result is future]
            for uuid in sent:
                self._on_sent(uuid)


@dataclass
class _Tracked:
    """One accepted action goal, while its execute callback runs."""

    key: str  # the action goal's uuid, hex
    handle: object  # rclpy ServerGoalHandle
    accepted: float  # time.monotonic()
    timeout: float  # 0: none
    node_goal_id: str = ""  # the node goal it adopted
    end: tuple[int, str] | None = None  # set by another goal that preempts this one
    cancel_requested: bool = False  # set by the cancel callback (the handle's own state follows just after)
    pending: list[Progress] = field(default_factory=list)  # progress messages not yet sent as feedback


class GoalActionServer:
    """The action server of a :class:`~actedit_ros.ros.goal_node.GoalNode` (see the module docstring)."""

    def __init__(self, node, callback_group):
        self.node = node
        self._cond = threading.Condition()
        self._changes = 0  # bumped by notify(): a goal change, a cancel, shutdown
        self._active: dict[str, _Tracked] = {}  # more than one only while a preempted goal winds down
        self._unsent: dict[str, float] = {}  # ended goals whose result rclpy has not sent yet -> when they ended
        self._server = _ResultSendingServer(node, ReachVisualGoal, "~/reach_visual_goal", self._execute,
                                            callback_group=callback_group, goal_callback=self._on_goal,
                                            handle_accepted_callback=self._on_accepted,
                                            cancel_callback=self._on_cancel, on_sent=self._on_result_sent)
        # A client drops a status array that arrives before its goal response (ros2/rclcpp#2782, ros2/rcl#1337),
        # and rclpy publishes one only when a goal changes state, so such a client kept STATUS_UNKNOWN for the whole
        # goal, and `ros2 action send_goal`'s Ctrl-C (which cancels only ACCEPTED/EXECUTING goals) left the goal
        # running. Republishing the status while a goal runs lets every client catch up within a second.
        self._status_timer = node.create_timer(STATUS_REPUBLISH, self._republish_status,
                                               callback_group=callback_group)

    def destroy(self) -> None:
        self.node.destroy_timer(self._status_timer)
        self._server.destroy()

    def _republish_status(self) -> None:
        with self._cond:
            running = bool(self._active)
        if running:
            self._server._handle.publish_status()  # rclpy's own call (ActionServer has no public one)

    @property
    def busy(self) -> bool:
        """True while a goal's execute callback runs."""
        with self._cond:
            return bool(self._active)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no goal is executing (after begin_shutdown ended them); True when none is."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._active, timeout)

    def wait_results_sent(self, timeout: float = RESULT_SEND_WAIT) -> bool:
        """Wait until the results of the goals that ended in the last ``timeout`` seconds went out to their clients
        (before the server is destroyed); True when they all did. A client that never asks for its result is
        waited for ``timeout`` at most."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._results_pending(timeout), timeout)

    def results_pending(self, within: float = RESULT_SEND_WAIT) -> bool:
        """True while a goal that ended in the last ``within`` seconds has its result still to be sent."""
        with self._cond:
            return self._results_pending(within)

    def _results_pending(self, within: float) -> bool:
        recent = time.monotonic() - within
        return any(ended > recent for ended in self._unsent.values())

    def _on_result_sent(self, uuid: bytes) -> None:
        with self._cond:
            self._unsent.pop(bytes(uuid).hex(), None)
            self._cond.notify_all()

    def notify(self) -> None:
        with self._cond:
            self._changes += 1
            self._cond.notify_all()

    def on_progress(self, msg: Progress) -> None:
        """Called by the node for every progress message it publishes (camera callbacks, stale timer)."""
        with self._cond:
            for tracked in self._active.values():
                if tracked.node_goal_id and tracked.node_goal_id == msg.goal_id:
                    tracked.pending.append(msg)
                    self._cond.notify_all()

    # ------------------------------------------------------------------------------------------ goal handling
    def _on_goal(self, request) -> GoalResponse:
        if self.node.param("action_new_goal") == "reject":
            with self._cond:
                busy = [t.key for t in self._active.values() if t.end is None]
            if busy:
                self.node.get_logger().warning(f"reach_visual_goal: refused the goal for {request.instruction!r}: "
                                               f"another goal is active (action_new_goal: reject)")
                return GoalResponse.REJECT
        return GoalResponse.ACCEPT

    def _on_accepted(self, handle) -> None:
        key = bytes(handle.goal_id.uuid).hex()
        goal = handle.request
        with self._cond:
            for other in self._active.values():
                if other.end is None:
                    other.end = (Result.PREEMPTED, f"replaced by a newer goal (a reach_visual_goal goal for "
                                                   f"{goal.instruction!r})")
            timeout = float(goal.timeout) if math.isfinite(goal.timeout) and goal.timeout > 0 else 0.0
            self._active[key] = _Tracked(key=key, handle=handle, accepted=time.monotonic(), timeout=timeout)
            self._changes += 1
            self._cond.notify_all()
        handle.execute()

    def _on_cancel(self, handle) -> CancelResponse:
        """rclpy calls this with the goal handle of each goal a cancel request names."""
        with self._cond:
            tracked = self._active.get(bytes(handle.goal_id.uuid).hex())
            if tracked is not None:
                tracked.cancel_requested = True
            self._changes += 1
            self._cond.notify_all()
        return CancelResponse.ACCEPT

    def _ending(self, tracked: _Tracked) -> tuple[int, str] | None:
        """(reason, message) when the goal must end now for a reason other than its progress; None otherwise."""
        if self.node._stopping is not None:
            return Result.SHUTDOWN, f"cancelled: the node is shutting down ({self.node._stopping})"
        if tracked.end is not None:
            return tracked.end
        if tracked.cancel_requested or tracked.handle.is_cancel_requested:
            return Result.CANCELLED, "cancelled by the client"
        if tracked.timeout and time.monotonic() - tracked.accepted >= tracked.timeout:
            return Result.TIMEOUT, f"timeout: the goal was not reached within its timeout of {tracked.timeout:g} s"
        return None

    # ------------------------------------------------------------------------------------------ execution
    def _execute(self, handle):
        tracked = self._active[bytes(handle.goal_id.uuid).hex()]
        try:
            return self._run(tracked)
        except Exception as err:  # noqa: BLE001 - the node keeps serving whatever goes wrong in one goal
            self.node.get_logger().error(f"reach_visual_goal failed: {type(err).__name__}: {err}")
            return self._finish(tracked, Result.PREDICTION_FAILED, f"failed ({type(err).__name__}): {err}")
        finally:
            with self._cond:
                self._active.pop(tracked.key, None)
                now = time.monotonic()  # forget results nobody asked for
                self._unsent = {key: ended for key, ended in self._unsent.items() if ended > now - RESULT_SEND_WAIT}
                self._unsent[tracked.key] = now
                self._cond.notify_all()

    def _run(self, tracked: _Tracked):
        goal = tracked.handle.request
        threshold = float(goal.reached_threshold)
        if not 0.0 <= threshold <= 1.0:  # also NaN
            return self._finish(tracked, Result.BAD_REQUEST, f"bad reached_threshold {threshold:g}: use a value in "
                                                             f"(0, 1], or 0 for the node's reached_threshold")
        if not goal.timeout >= 0.0 or not goal.max_stale == goal.max_stale:
            return self._finish(tracked, Result.BAD_REQUEST, f"bad timeout {goal.timeout:g} or max_stale "
                                                             f"{goal.max_stale:g}: use seconds >= 0 (0: no timeout, "
                                                             f"the node's action_max_stale)")
        tracked.handle.publish_feedback(Feedback(phase="predicting", elapsed=self._elapsed(tracked)))
        with self._cond:  # the goals this one preempted clear their node goal as they end: let them, before this
            # prediction starts, or their clearing would discard it as "replaced while it ran"
            self._cond.wait_for(lambda: not any(t.end is not None and t.key != tracked.key
                                                for t in self._active.values()), timeout=PREEMPTED_WAIT)

        def abandon():
            ending = self._ending(tracked)
            return ending[1] if ending else None

        outcome = self.node.predict_and_adopt(goal.instruction, goal.image, goal.seed, goal.num_candidates,
                                              reached_threshold=threshold, owner=tracked.key, abandon=abandon)
        if not outcome.success:
            if outcome.kind == gp.ABANDONED:
                reason, message = self._ending(tracked) or (Result.CANCELLED, outcome.message)
            elif outcome.kind == gp.DISCARDED:
                reason = Result.PREEMPTED if self.node.current_goal_id else Result.CLEARED
                message = outcome.message
            else:
                reason, message = _REASONS.get(outcome.kind, Result.PREDICTION_FAILED), outcome.message
            return self._finish(tracked, reason, message, goal_image=outcome.goal_image)
        with self._cond:
            tracked.node_goal_id = outcome.goal_id
        tracked.handle.publish_feedback(Feedback(phase="tracking", goal_id=outcome.goal_id,
                                                 goal_image=outcome.goal_image, elapsed=self._elapsed(tracked)))
        max_stale = float(goal.max_stale) if goal.max_stale != 0 else self.node.param("action_max_stale")
        return self._track(tracked, outcome, max_stale if max_stale > 0 else math.inf)

    def _track(self, tracked: _Tracked, outcome, max_stale: float):
        """Feedback per scored frame until reached, or until the goal must end (see _ending), its node goal was
        replaced or cleared, or the camera was silent for max_stale seconds."""
        since, last, seen = time.monotonic(), None, -1
        while True:
            with self._cond:
                if not tracked.pending and seen == self._changes:
                    self._cond.wait(self._wait_time(tracked, since, max_stale))
                pending, tracked.pending, seen = tracked.pending, [], self._changes
            for msg in pending:
                last = msg
                tracked.handle.publish_feedback(Feedback(
                    phase="tracking", goal_id=msg.goal_id, progress=msg.progress, raw_progress=msg.raw_progress,
                    similarity=msg.similarity, reached=msg.reached, registered=msg.registered, stale=msg.stale, frame_stamp=msg.header.stamp,
                    elapsed=self._elapsed(tracked)))
                if msg.reached and not msg.stale:
                    return self._finish(tracked, Result.REACHED, f"reached goal {msg.goal_id} (progress "
                                                                 f"{msg.progress:.2f})", outcome, last)
            ending = self._ending(tracked)
            current = self.node.current_goal_id
            if ending is None and current != tracked.node_goal_id:
                ending = ((Result.PREEMPTED, f"replaced by a newer goal ({current}, from predict_goal)") if current
                          else (Result.CLEARED, "the goal was cleared (clear_goal)"))
            if ending is None and time.monotonic() - self._last_frame(since) >= max_stale:
                ending = (Result.CAMERA_STALE, f"camera stale too long: no camera frame for {max_stale:g} s "
                                               f"(max_stale / action_max_stale)")
            if ending is not None:
                return self._finish(tracked, *ending, outcome, last)

    def _last_frame(self, since: float) -> float:
        frame = self.node._latest_frame
        return max(since, frame.received if frame is not None else 0.0)

    def _wait_time(self, tracked: _Tracked, since: float, max_stale: float) -> float:
        now = time.monotonic()
        wait = min(SAFETY_WAKE, self._last_frame(since) + max_stale - now)
        if tracked.timeout:
            wait = min(wait, tracked.accepted + tracked.timeout - now)
        return max(0.0, wait)

    @staticmethod
    def _cancel_state_reached(handle) -> bool:
        """rclpy moves the goal to CANCELING just after the cancel callback returned; wait (briefly) for that."""
        deadline = time.monotonic() + CANCEL_STATE_WAIT
        while not handle.is_cancel_requested and time.monotonic() < deadline:
            time.sleep(0.005)
        return handle.is_cancel_requested

    def _elapsed(self, tracked: _Tracked) -> float:
        return time.monotonic() - tracked.accepted

    def _finish(self, tracked: _Tracked, reason: int, message: str, outcome=None, last: Progress | None = None,
                goal_image=None):
        """End the goal: its terminal state, the node goal cleared when it ends unreached, and the result."""
        handle = tracked.handle
        if reason != Result.REACHED and reason != Result.SHUTDOWN and tracked.node_goal_id:
            self.node.clear_goal(only=tracked.node_goal_id)
        result = Result(reached=reason == Result.REACHED, reason=reason, message=message,
                        progress=float(last.progress) if last is not None else 0.0,
                        elapsed=self._elapsed(tracked), goal_id=tracked.node_goal_id)
        image = outcome.goal_image if outcome is not None else goal_image
        if image is not None:
            result.goal_image = image
        if not handle.is_active:  # already ended (a failure after its terminal state)
            return result
        if reason == Result.REACHED:
            handle.succeed()
        elif reason == Result.CANCELLED and self._cancel_state_reached(handle):
            handle.canceled()
        else:
            handle.abort()
        text = f"reach_visual_goal {tracked.key[:8]} for {handle.request.instruction!r}: {message}"
        if reason in (Result.REACHED, Result.CANCELLED):
            self.node.get_logger().info(text)
        else:
            self.node.get_logger().warning(text)
        return result
