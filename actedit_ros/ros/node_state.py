"""The goal node's state records, read by the node and by /diagnostics: the latest camera frame, the active goal."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from std_msgs.msg import Header

from actedit_ros.msg import Progress
from actedit_ros.progress import ProgressScorer


@dataclass
class CameraFrame:
    rgb: np.ndarray
    header: Header
    received: float  # time.monotonic() at arrival


@dataclass
class ActiveGoal:
    goal_id: str
    instruction: str
    start_rgb: np.ndarray
    goal_rgb: np.ndarray
    scorer: ProgressScorer
    last_progress: Progress | None = None
    last_stale_publish: float = field(default=0.0)
