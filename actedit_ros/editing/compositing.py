"""Compositing: outside the region the action changes, the goal is the start frame itself, at full sharpness.

The editor works at a small size (64x48 for the embedded default, 512x512 for SD-1.5) and its decoder blurs, so the
plain goal, returned at the camera's size, is a smear even where nothing happens. Where the action happens is read off
the sampler itself: at every step InstructPix2Pix guidance already computes the model's output with the instruction and
without it (image only), and their difference is what the instruction adds there. Summed over the steps (per latent
pixel, the norm over channels) it is the instruction's effect map; where it reaches a fraction of its peak, grown by a
margin and feathered, is the soft change mask. The composite takes the goal inside it and the start frame outside.
The idea follows DiffEdit (masks from the difference of noise estimates under two texts) and mask-and-inpaint
action-effect prediction; here it is free, after sampling. Measured against the earlier mask (where the decoded goal
differs from the decoded start frame) in the README's "Compositing" table.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass(frozen=True)
class CompositeSettings:
    threshold: float = 0.2  # share of the effect map's peak counted as "the action changes this" (measured: README)
    margin: float = 0.03  # the change region grows by this fraction of the working diagonal
    feather: float = 0.03  # soft edge of the mask, as a fraction of the working diagonal


def change_mask(effect: np.ndarray, size: tuple[int, int], settings: CompositeSettings = CompositeSettings()
                ) -> np.ndarray:
    """Soft mask in [0, 1] (float32, at the working ``size`` = (width, height)) of where the instruction's effect
    map (latent size, >= 0) reaches ``settings.threshold`` of its peak; empty when the map is zero."""
    peak = float(effect.max())
    if not np.isfinite(peak) or peak <= 0:
        return np.zeros(size[::-1], np.float32)
    relative = cv2.resize((effect / peak).astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
    region = (relative >= settings.threshold).astype(np.uint8)
    diagonal = float(np.hypot(*size))
    grow = int(round(settings.margin * diagonal))
    if grow > 0 and region.any():
        region = cv2.dilate(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1)))
    return cv2.GaussianBlur(region.astype(np.float32), (0, 0), max(0.5, settings.feather * diagonal))


def composite_goal(start: np.ndarray, goal: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The start frame (RGB uint8, full size) with the goal (the same size) pasted in through `mask` (any size,
    resized to the frame)."""
    height, width = start.shape[:2]
    alpha = cv2.resize(mask, (width, height), interpolation=cv2.INTER_LINEAR).clip(0.0, 1.0)[:, :, None]
    blended = alpha * goal.astype(np.float32) + (1.0 - alpha) * start.astype(np.float32)
    return blended.round().clip(0, 255).astype(np.uint8)
