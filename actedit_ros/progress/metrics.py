"""Progress metrics and the naive baselines the scorer is measured against.

- ``value_order_correlation`` (VOC, as in GVL): Spearman rank correlation between predicted progress and the true
  time order of the frames.
- ``PixelMSEProgress`` and ``SSIMProgress``: progress from a distance to the start and a distance to the goal,
  ``d_start / (d_start + d_goal)``, with raw pixel mean squared error or 1 - SSIM as the distance. No
  registration, no lighting normalisation, no weighting: what a first attempt would do.
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from scipy.stats import spearmanr

from .scorer import check_rgb


def value_order_correlation(predicted: Sequence[float], order: Sequence[float] | None = None) -> float:
    """Spearman correlation of ``predicted`` with ``order`` (default: frame index 0, 1, 2, ...).

    A constant prediction carries no order information and scores 0 rather than NaN.
    """
    predicted = np.asarray(predicted, dtype=np.float64)
    if predicted.ndim != 1 or len(predicted) < 2:
        raise ValueError(f"VOC needs a 1-D sequence of at least 2 predictions; got shape {predicted.shape}")
    order = np.arange(len(predicted), dtype=np.float64) if order is None else np.asarray(order, dtype=np.float64)
    if order.shape != predicted.shape:
        raise ValueError(f"predicted {predicted.shape} and order {order.shape} must have the same shape")
    if np.ptp(predicted) == 0.0 or np.ptp(order) == 0.0:
        return 0.0
    return float(spearmanr(predicted, order).statistic)


def false_reached_rate(reached: Sequence[bool], true_progress: Sequence[float], before: float = 1.0) -> float:
    """Fraction of frames whose true progress is below ``before`` that were nevertheless flagged reached.

    Returns NaN when there is no such frame.
    """
    reached = np.asarray(reached, dtype=bool)
    true_progress = np.asarray(true_progress, dtype=np.float64)
    early = true_progress < before
    return float(reached[early].mean()) if early.any() else float("nan")


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Mean structural similarity of two images (grey or RGB, channels averaged), Gaussian window sigma 1.5."""
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def blur(x):
        return cv2.GaussianBlur(x, (11, 11), 1.5)

    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(index.mean())


class _DistanceRatioProgress:
    """Progress = d(frame, start) / (d(frame, start) + d(frame, goal)); frames resized to the start's size."""

    name = "distance"

    def __init__(self, start_rgb: np.ndarray, goal_rgb: np.ndarray) -> None:
        self._start = self._prepare(check_rgb(start_rgb, "start_rgb"))
        self._size = (self._start.shape[1], self._start.shape[0])
        self._goal = self._prepare(self._resize(check_rgb(goal_rgb, "goal_rgb")))

    def _resize(self, rgb: np.ndarray) -> np.ndarray:
        if (rgb.shape[1], rgb.shape[0]) == self._size:
            return rgb
        return cv2.resize(rgb, self._size, interpolation=cv2.INTER_AREA)

    def _prepare(self, rgb: np.ndarray) -> np.ndarray:
        return rgb

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        raise NotImplementedError

    def score(self, frame_rgb: np.ndarray) -> float:
        frame = self._prepare(self._resize(check_rgb(frame_rgb, "frame")))
        to_start = self.distance(frame, self._start)
        to_goal = self.distance(frame, self._goal)
        total = to_start + to_goal
        return 0.5 if total <= 0.0 else float(to_start / total)


class PixelMSEProgress(_DistanceRatioProgress):
    """Naive baseline: raw pixel mean squared error to start and to goal."""

    name = "pixel MSE"

    def _prepare(self, rgb: np.ndarray) -> np.ndarray:
        return rgb.astype(np.float32)

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(cv2.norm(a, b, cv2.NORM_L2SQR)) / a.size


class SSIMProgress(_DistanceRatioProgress):
    """Baseline: 1 - SSIM (grey) to start and to goal."""

    name = "SSIM"

    def _prepare(self, rgb: np.ndarray) -> np.ndarray:
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        return max(0.0, 1.0 - ssim(a, b))
