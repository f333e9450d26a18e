"""``/diagnostics`` of the goal node: one ``DiagnosticStatus`` about once a second, what ``rqt_robot_monitor`` shows.

The node keeps a few counters in a :class:`NodeStats` (frames received and scored, the last prediction, the last
error); :func:`build_status` turns them and the node's state into a level, a short message and key/values (plain
Python, no ROS), and :class:`NodeDiagnostics` publishes them as a ``diagnostic_msgs/DiagnosticArray`` on a timer in
its own callback group, so it never waits on the camera callbacks.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup

OK, WARN, ERROR = (int.from_bytes(level, "little") for level in
                   (DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR))
PERIOD = 1.0  # seconds between /diagnostics messages
RATE_WINDOW = 5.0  # seconds over which the camera and scoring rates are measured
STATUS_NAME = "goal_node: visual goal"


@dataclass
class LastPrediction:
    seconds: float  # how long it took
    finished: float  # time.time() when it ended
    goal_id: str
    warnings: list[str]


@dataclass
class NodeStats:
    """Counters the node updates as it works (plain ints/assignments: safe without a lock for a 1 Hz reader)."""

    frames_received: int = 0  # decoded camera frames
    frames_scored: int = 0  # frames scored for progress (a goal was active)
    last_prediction: LastPrediction | None = None
    last_error: str = ""  # the last refused or failed predict_goal, "" while none
    internal_error: bool = False  # the last failure was the node's own (an exception), not a bad request
    samples: deque = field(default_factory=deque)  # (monotonic, frames_received, frames_scored), RATE_WINDOW long

    def record_prediction(self, seconds: float, goal_id: str, warnings: list[str]) -> None:
        self.last_prediction = LastPrediction(float(seconds), time.time(), goal_id, list(warnings))
        self.internal_error = False

    def record_error(self, message: str, internal: bool = False) -> None:
        self.last_error = message
        self.internal_error = internal

    def rates(self, now: float) -> tuple[float, float]:
        """Camera and scoring rates (Hz) over the last RATE_WINDOW seconds; NaN until two samples exist."""
        self.samples.append((now, self.frames_received, self.frames_scored))
        while len(self.samples) > 2 and now - self.samples[1][0] >= RATE_WINDOW:
            self.samples.popleft()
        (t0, received0, scored0), (t1, received1, scored1) = self.samples[0], self.samples[-1]
        if t1 - t0 <= 0:
            return math.nan, math.nan
        return (received1 - received0) / (t1 - t0), (scored1 - scored0) / (t1 - t0)


def _number(value: float, digits: int = 2) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def build_status(*, stats: NodeStats, now: float, frame_received: float | None, goal, stale_timeout: float,
                 dropped_frames: int, model: dict[str, str], placeholder_model: bool) -> tuple[int, str, list]:
    """(level, message, [(key, value), ...]) for the node's state. ``now`` and ``frame_received`` are
    time.monotonic() values; ``goal`` is the node's ActiveGoal or None; ``model`` the model keys (path, device...)."""
    camera_hz, scoring_hz = stats.rates(now)
    frame_age = math.nan if frame_received is None else now - frame_received
    level, problems = OK, []
    if placeholder_model:
        level, problems = WARN, ["placeholder model (random weights): set model_path"]
    if goal is not None and not (frame_age <= stale_timeout):
        level = WARN
        problems.append("no camera frame yet" if frame_received is None
                        else f"camera stale: last frame {frame_age:.1f} s ago (stale_timeout {stale_timeout:g} s)")
    last = stats.last_prediction
    goal_warnings = last.warnings if last and goal is not None and last.goal_id == goal.goal_id else []
    if goal_warnings:
        level = WARN
        problems.append("goal may be unreliable (out of domain)")
    if stats.internal_error:
        level = ERROR
        problems.append(f"last prediction failed: {stats.last_error[:120]}")
    reached = bool(goal is not None and goal.last_progress is not None and goal.last_progress.reached)
    if problems:
        message = "; ".join(problems)
    elif goal is None:
        message = "ready, no goal"
    else:
        message = "goal reached" if reached else "tracking goal"
    values = list(model.items()) + [
        ("camera rate (Hz)", _number(camera_hz)),
        ("frame age (s)", _number(frame_age)),
        ("scoring rate (Hz)", _number(scoring_hz)),
        ("dropped frames", str(dropped_frames)),
        ("last prediction time (s)", _number(last.seconds) if last else "n/a"),
        ("last prediction at", time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(last.finished)) if last
         else "n/a"),
        ("goal id", goal.goal_id if goal else ""),
        ("instruction", goal.instruction if goal else ""),
        ("reached", str(reached).lower()),
        ("out-of-domain warnings", " | ".join(goal_warnings)),
        ("last error", stats.last_error),
    ]
    return level, message, values


def model_values(node) -> dict[str, str]:
    """The model keys of a GoalNode: editor path, device, dtype, progress scorer and progress model path."""
    components = node.predictor.components
    dtype = getattr(components.unet, "dtype", None)
    return {
        "model path": str(components.model_path) + (" (placeholder)" if node.placeholder_model else ""),
        "device": str(node.predictor.device),
        "dtype": str(dtype).removeprefix("torch.") if dtype is not None else "n/a",
        "progress scorer": str(node.param("progress_scorer")),
        "progress model path": str(node.progress_model.path),
    }


class NodeDiagnostics:
    """Publishes the node's status on ``/diagnostics`` every PERIOD seconds (own callback group)."""

    def __init__(self, node):
        self.node = node
        self.hardware_id = node.get_fully_qualified_name()
        self.publisher = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.timer = node.create_timer(PERIOD, self.publish, callback_group=MutuallyExclusiveCallbackGroup())

    def publish(self) -> None:
        node = self.node
        with node._state_lock:
            goal, frame = node._goal, node._latest_frame
        level, message, values = build_status(
            stats=node.stats, now=time.monotonic(), frame_received=frame.received if frame else None, goal=goal,
            stale_timeout=node.param("stale_timeout"), dropped_frames=node.dropped_frames,
            model=model_values(node), placeholder_model=node.placeholder_model)
        status = DiagnosticStatus(level=bytes([level]), name=STATUS_NAME, message=message,
                                  hardware_id=self.hardware_id,
                                  values=[KeyValue(key=key, value=value) for key, value in values])
        array = DiagnosticArray(status=[status])
        array.header.stamp = node.get_clock().now().to_msg()
        self.publisher.publish(array)
