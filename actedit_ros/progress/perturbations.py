"""Perturbations that break naive progress measures, added to synthetic episodes for evaluation.

- ``add_distractor``: a hand-like blob (a skin or clothing coloured "hand" on an "arm") that sweeps through the
  frame, passing over the region the action changes, as a person reaching past the robot would.
- ``add_lighting_drift``: exposure and colour-cast changes that go up and down over the episode (not a ramp, which
  a distance-to-start measure would mistake for progress), with a moving brightness gradient.
- ``add_sensor_noise``: Gaussian pixel noise.

All are deterministic given their ``numpy.random.Generator`` and leave frame 0 (the start reference) unchanged.
"""
from __future__ import annotations

import cv2
import numpy as np

_DISTRACTOR_RGB = ((224, 172, 138), (160, 110, 80), (90, 60, 45), (60, 90, 150), (150, 40, 40), (40, 40, 45))


def change_centre(start: np.ndarray, end: np.ndarray) -> tuple[float, float]:
    """(x, y) pixel centroid of where ``start`` and ``end`` differ most (the image centre if they do not)."""
    difference = np.abs(start.astype(np.int16) - end.astype(np.int16)).sum(axis=2).astype(np.float32)
    difference = cv2.GaussianBlur(difference, (0, 0), max(1.0, start.shape[1] / 80))
    if difference.max() <= 0:
        return start.shape[1] / 2.0, start.shape[0] / 2.0
    weights = difference >= 0.5 * difference.max()
    ys, xs = np.nonzero(weights)
    return float(xs.mean()), float(ys.mean())


def add_distractor(frames: list[np.ndarray], rng: np.random.Generator,
                   through: tuple[float, float]) -> list[np.ndarray]:
    """A hand-like blob that enters from a random side, passes over ``through`` (x, y) and leaves again.

    It is visible on a random stretch of the frames between the first and the last (both stay clean).
    """
    n = len(frames)
    if n < 3:
        return [f.copy() for f in frames]
    h, w = frames[0].shape[:2]
    hand_rgb = _DISTRACTOR_RGB[int(rng.integers(0, 3))]
    arm_rgb = _DISTRACTOR_RGB[int(rng.integers(0, len(_DISTRACTOR_RGB)))]
    radius = rng.uniform(0.07, 0.11) * w
    angle = rng.uniform(0, 2 * np.pi)
    towards_shoulder = np.array([np.cos(angle), np.sin(angle)])
    sweep = np.array([-towards_shoulder[1], towards_shoulder[0]]) * rng.choice([-1.0, 1.0])
    centre = np.asarray(through, dtype=np.float64) + rng.normal(0, 0.03 * w, 2)
    shoulder = centre + towards_shoulder * 0.9 * np.hypot(w, h)  # outside the frame
    half_sweep = rng.uniform(0.3, 0.5) * w
    first = int(rng.integers(1, max(2, n // 3)))
    last = int(rng.integers(min(n - 2, first + n // 3), n - 1))
    out = [f.copy() for f in frames]
    for i in range(first, last + 1):
        u = (i - first) / max(1, last - first)  # 0..1 across the visit: the hand sweeps past the centre
        hand = centre + sweep * half_sweep * (2 * u - 1)
        canvas = out[i]
        cv2.line(canvas, _pt(shoulder), _pt(hand), arm_rgb, max(2, int(1.3 * radius)), cv2.LINE_AA)
        cv2.ellipse(canvas, _pt(hand), (int(radius), int(0.8 * radius)), float(np.degrees(angle)), 0, 360,
                    hand_rgb, -1, cv2.LINE_AA)
    return out


def add_lighting_drift(frames: list[np.ndarray], rng: np.random.Generator, strength: float = 1.0) -> list[np.ndarray]:
    """Exposure, colour cast and a brightness gradient that oscillate over the episode (frame 0 untouched)."""
    n = len(frames)
    h, w = frames[0].shape[:2]
    amplitude = strength * rng.uniform(0.2, 0.35)
    cycles = rng.uniform(0.7, 1.5)
    phase_sign = rng.choice([-1.0, 1.0])
    cast = strength * rng.uniform(-0.08, 0.08, 3)
    gradient_angle = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = ((xx / w - 0.5) * np.cos(gradient_angle) + (yy / h - 0.5) * np.sin(gradient_angle))[..., None]
    out = [frames[0].copy()]
    for i in range(1, n):
        t = i / max(1, n - 1)
        wave = np.sin(2 * np.pi * cycles * t)
        gain = 1.0 + phase_sign * amplitude * wave
        colour = 1.0 + cast * np.sin(np.pi * t)
        spatial = 1.0 + strength * 0.25 * np.sin(np.pi * t) * ramp
        frame = frames[i].astype(np.float32) * (gain * colour)[None, None, :] * spatial
        out.append(np.clip(frame, 0, 255).astype(np.uint8))
    return out


def add_sensor_noise(frames: list[np.ndarray], rng: np.random.Generator, sigma: float = 2.0) -> list[np.ndarray]:
    """Gaussian pixel noise of standard deviation ``sigma`` (frame 0 untouched)."""
    out = [frames[0].copy()]
    for frame in frames[1:]:
        noisy = frame.astype(np.float32) + rng.normal(0.0, sigma, frame.shape).astype(np.float32)
        out.append(np.clip(noisy, 0, 255).astype(np.uint8))
    return out


def perturb(frames: list[np.ndarray], seed: int, distractor: bool = True, lighting: bool = True,
            noise_sigma: float = 2.0) -> list[np.ndarray]:
    """The evaluation's standard perturbations, in the order a camera would see them: scene, light, sensor."""
    rng = np.random.default_rng(seed)
    out = [f.copy() for f in frames]
    if distractor:
        out = add_distractor(out, rng, change_centre(frames[0], frames[-1]))
    if lighting:
        out = add_lighting_drift(out, rng)
    if noise_sigma > 0:
        out = add_sensor_noise(out, rng, noise_sigma)
    return out


def degrade_goal(goal: np.ndarray, seed: int) -> np.ndarray:
    """A blurred, noisy, slightly recoloured goal, standing in for an imperfect predicted one."""
    rng = np.random.default_rng(seed)
    sigma = max(0.8, goal.shape[1] / 200)
    blurred = cv2.GaussianBlur(goal.astype(np.float32), (0, 0), sigma)
    blurred = blurred * (1.0 + rng.uniform(-0.05, 0.05, 3))[None, None, :]
    blurred += rng.normal(0.0, 6.0, goal.shape).astype(np.float32)
    return np.clip(blurred, 0, 255).astype(np.uint8)


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(p[0])), int(round(p[1]))
