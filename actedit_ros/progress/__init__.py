"""Progress toward a goal image: a robust scorer (registration, lighting normalisation, direction of change),
its metrics (VOC) and the naive baselines it is evaluated against. No ROS imports."""
from .metrics import PixelMSEProgress, SSIMProgress, false_reached_rate, ssim, value_order_correlation
from .registration import FrameRegistrar, Registration
from .scorer import ProgressResult, ProgressScorer, ReachedFilter, check_rgb

__all__ = [
    "FrameRegistrar",
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
