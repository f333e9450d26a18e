"""Progress toward a goal image: the learned scorer (trained to read progress toward predicted, imperfect goals), the
hand-made pixel scorer it builds on (registration, lighting normalisation, direction of change), their metrics (VOC)
and the naive baselines they are evaluated against. No ROS imports."""
from .learned import (
    SCORERS,
    LearnedProgressScorer,
    ProgressModel,
    default_progress_model,
    load_progress_model,
    make_scorer,
)
from .metrics import PixelMSEProgress, SSIMProgress, false_reached_rate, ssim, value_order_correlation
from .registration import FrameRegistrar, Registration
from .scorer import ProgressResult, ProgressScorer, ReachedFilter, check_rgb

__all__ = [
    "SCORERS",
    "FrameRegistrar",
    "LearnedProgressScorer",
    "ProgressModel",
    "default_progress_model",
    "load_progress_model",
    "make_scorer",
    "PixelMSEProgress",
    "ProgressResult",
    "ProgressScorer",
    "ReachedFilter",
    "Registration",
    "SSIMProgress",
    "check_rgb",
    "false_reached_rate",
    "ssim",
    "value_order_correlation",
]
