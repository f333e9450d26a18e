"""Compositing: outside the region the action changes, the goal is the start frame itself, at full sharpness.

The editor works at a small size (64x48 for the embedded default, 512x512 for SD-1.5) and its decoder blurs, so the
plain goal, returned at the camera's size, is a smear even where nothing happens. The change the editor predicts is
where its decoded goal differs from its own decode of the start frame (both pass through the same VAE, so the
decoder's blur cancels and what remains is the predicted change). That difference, blurred, thresholded, grown by a
margin and feathered, is a soft mask; the composite takes the goal inside it and the start frame outside.
The idea follows mask-and-inpaint action-effect prediction (GLIDE-style inpainting), done after sampling here.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

COMPOSITE_MODES = ("plain", "composite")


@dataclass(frozen=True)
class CompositeSettings:
    threshold: float = 24.0  # per-pixel change (0-255, max over channels) counted as "the action changed this"
    smooth: float = 0.02  # Gaussian blur of the difference, as a fraction of the working image's diagonal
    margin: float = 0.03  # the change region grows by this fraction of the working diagonal
    feather: float = 0.03  # soft edge of the mask, as a fraction of the working diagonal


def change_mask(goal: np.ndarray, start_reconstruction: np.ndarray,
                settings: CompositeSettings = CompositeSettings()) -> np.ndarray:
    """Soft mask in [0, 1] (float32, the working size) of where `goal` differs from `start_reconstruction` (both RGB
    uint8 at the working size)."""
    diagonal = float(np.hypot(*goal.shape[:2]))
    diff = np.abs(goal.astype(np.float32) - start_reconstruction.astype(np.float32)).max(axis=2)
    diff = cv2.GaussianBlur(diff, (0, 0), max(0.5, settings.smooth * diagonal))
    mask = (diff > settings.threshold).astype(np.uint8)
    grow = int(round(settings.margin * diagonal))
    if grow > 0 and mask.any():
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    return cv2.GaussianBlur(mask.astype(np.float32), (0, 0), max(0.5, settings.feather * diagonal))


def composite_goal(start: np.ndarray, goal: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The start frame (RGB uint8, full size) with the goal (the same size) pasted in through `mask` (any size,
    resized to the frame)."""
    height, width = start.shape[:2]
    alpha = cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR).clip(0.0, 1.0)[:, :, None]
    blended = alpha * goal.astype(np.float32) + (1.0 - alpha) * start.astype(np.float32)
    return blended.round().clip(0, 255).astype(np.uint8)
