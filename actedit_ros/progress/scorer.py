"""Progress of a live camera frame from the start view toward a goal image.

How a frame is scored (on a small copy of it, ``work_width`` pixels wide):

1. Registration: the frame is registered to the start view (or, failing that, to the goal view) with ORB features
   and a RANSAC similarity transform (ECC as a fallback), then warped into start coordinates. A frame that cannot
   be registered gets ``registered=False`` and the last good progress is held.
2. Lighting: each colour channel is divided by its gain, the median ratio frame/start over the *static* pixels
   (where start and goal agree): exposure and colour-cast changes go, the action's own change is not absorbed, and
   a hand covering less than half of the static pixels does not move the median.
3. Direction of change: only pixels where start and goal differ count, weighted by how much they differ. Each
   says how far along the start->goal segment it is, ``|frame - start| / (|frame - start| + |frame - goal|)`` (both
   distances less a noise floor): 0 at the start colour, 1 at the goal colour, exactly the projection onto the
   segment for colours on it, and 0.5 - "undecided", never beyond the ends - for a colour that belongs to neither
   (a hand, a passer-by, glare). Progress is the weighted mean over several blur scales, so that a moving object
   gives a gradual rather than a stepwise signal.
4. Streaming: ``update`` smooths progress with an exponential moving average and decides ``reached`` with
   hysteresis so the decision does not flicker around the threshold.

The choices above were measured with ``actedit-eval-progress`` (see README); a least-squares projection of the
colour change onto the start->goal difference (with robust reweighting) and quantile-matched lighting were
tried first and ordered frames worse under distractors and lighting drift.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .registration import FrameRegistrar, Registration


@dataclass(frozen=True)
class ProgressResult:
    """Score of one frame.

    Attributes:
        progress: smoothed progress in [0, 1] (equals ``raw_progress`` for the stateless ``score``).
        raw_progress: this frame's progress in [0, 1] before smoothing.
        similarity: similarity to the goal in [0, 1] over the region the action changes: 1 - (distance to
            goal / distance from start to goal); 0 at the start view, 1 at the goal.
        reached: whether the goal counts as reached (threshold with hysteresis in ``update``).
        registered: False when the frame could not be registered to the start/goal view; progress is then held.
        inliers: RANSAC inliers of the registration (0 when registration is off or failed early).
        status: empty when all went well, otherwise why the frame was not scored.
    """

    progress: float
    raw_progress: float
    similarity: float
    reached: bool
    registered: bool
    inliers: int = 0
    status: str = ""


def check_rgb(image: object, name: str = "frame") -> np.ndarray:
    """Returns ``image`` if it is an RGB uint8 array of shape (H, W, 3) with H, W >= 8, else raises ValueError."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"{name} must be a numpy array of shape (H, W, 3), dtype uint8 (RGB); "
                         f"got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"{name} must have dtype uint8 (RGB values 0..255); got dtype {image.dtype}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"{name} must have shape (H, W, 3) (RGB); got shape {image.shape}")
    if image.shape[0] < 8 or image.shape[1] < 8:
        raise ValueError(f"{name} is too small to score: shape {image.shape}, need at least 8x8 pixels")
    return image


class ReachedFilter:
    """Exponential moving average of progress plus a hysteresis latch for ``reached``.

    ``reached`` turns on once the smoothed progress has been >= ``threshold`` for ``confirm_frames`` consecutive
    frames and turns off only when it drops below ``threshold - hysteresis``.

    Args:
        threshold: smoothed progress at which the goal counts as reached.
        hysteresis: how far below ``threshold`` progress must fall before ``reached`` is cleared.
        ema_alpha: weight of the newest value in the moving average (1 = no smoothing).
        confirm_frames: consecutive frames above ``threshold`` needed to set ``reached``.
    """

    def __init__(self, threshold: float = 0.8, hysteresis: float = 0.1, ema_alpha: float = 0.5,
                 confirm_frames: int = 2):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"reached_threshold must be in (0, 1]; got {threshold}")
        if not 0.0 <= hysteresis < threshold:
            raise ValueError(f"hysteresis must be in [0, reached_threshold); got {hysteresis}")
        if not 0.0 < ema_alpha <= 1.0:
            raise ValueError(f"ema_alpha must be in (0, 1]; got {ema_alpha}")
        if confirm_frames < 1:
            raise ValueError(f"confirm_frames must be >= 1; got {confirm_frames}")
        self.threshold = threshold
        self.hysteresis = hysteresis
        self.ema_alpha = ema_alpha
        self.confirm_frames = confirm_frames
        self.reset()

    def reset(self) -> None:
        self.value: float | None = None
        self.reached = False
        self._above = 0

    def update(self, raw: float) -> tuple[float, bool]:
        """Feeds one raw progress value; returns (smoothed progress, reached)."""
        self.value = raw if self.value is None else self.ema_alpha * raw + (1.0 - self.ema_alpha) * self.value
        if self.reached:
            self.reached = self.value >= self.threshold - self.hysteresis
            self._above = self.confirm_frames if self.reached else 0
        else:
            self._above = self._above + 1 if self.value >= self.threshold else 0
            self.reached = self._above >= self.confirm_frames
        return self.value, self.reached


class ProgressScorer:
    """Scores live frames for progress from ``start_rgb`` toward ``goal_rgb``.

    Args:
        start_rgb: the frame the action starts from, RGB uint8 (H, W, 3).
        goal_rgb: the goal image (predicted or true end frame), RGB uint8; resized to the start's size if needed.
        reached_threshold: smoothed progress at which ``reached`` turns on.
        hysteresis: margin below the threshold at which ``reached`` turns off again.
        ema_alpha: weight of the newest frame in the smoothed progress (1 = no smoothing).
        confirm_frames: consecutive frames above the threshold before ``reached`` turns on.
        registration: how frames are registered to the start/goal view (needed when the camera moves): "auto"
            (ORB features, then ECC), "features", "ecc", or "none" (fixed camera).
        work_width: width in pixels at which frames are compared (height follows the start's aspect ratio; never
            more than the start image's width).
        feature_width: width in pixels of the grey image used for registration (same cap).
        num_scales: blur scales (pyramid levels) at which the change is measured.
        noise_floor: colour distance (0-255 RGB scale) treated as noise: taken off every distance, and pixels
            where start and goal differ by less do not count.
        registrar: a configured ``FrameRegistrar``, used instead of one made from ``registration``.

    After construction, ``goal_registration`` says how the goal was registered to the start view (None without
    registration) and ``registration_note`` is non-empty when registration had to be switched off.

    Raises:
        ValueError: an image is not RGB uint8, an option is out of range, or start and goal do not differ.
    """

    def __init__(
        self,
        start_rgb: np.ndarray,
        goal_rgb: np.ndarray,
        reached_threshold: float = 0.8,
        hysteresis: float = 0.1,
        ema_alpha: float = 0.5,
        confirm_frames: int = 2,
        registration: str = "auto",
        work_width: int = 160,
        feature_width: int = 320,
        num_scales: int = 4,
        noise_floor: float = 16.0,
        registrar: FrameRegistrar | None = None,
    ) -> None:
        start = check_rgb(start_rgb, "start_rgb")
        goal = check_rgb(goal_rgb, "goal_rgb")
        if work_width < 16 or feature_width < 16:
            raise ValueError(f"work_width and feature_width must be >= 16; got {work_width}, {feature_width}")
        if registration not in ("none",) + FrameRegistrar.METHODS:
            raise ValueError(f"registration must be one of {('none',) + FrameRegistrar.METHODS}; got {registration!r}")
        if not 1 <= num_scales <= 6:
            raise ValueError(f"num_scales must be between 1 and 6; got {num_scales}")
        if noise_floor < 0:
            raise ValueError(f"noise_floor must be >= 0; got {noise_floor}")
        self.filter = ReachedFilter(reached_threshold, hysteresis, ema_alpha, confirm_frames)
        height, width = start.shape[:2]
        work_width, feature_width = min(work_width, width), min(feature_width, width)
        self.work_size = (work_width, max(8, round(work_width * height / width)))
        self.feature_size = (feature_width, max(8, round(feature_width * height / width)))
        # Homographies are estimated at feature resolution and applied at work resolution.
        scale = np.diag([work_width / feature_width, self.work_size[1] / self.feature_size[1], 1.0])
        self._feature_to_work = (scale, np.linalg.inv(scale))
        self.num_scales = num_scales
        self.noise_floor = float(noise_floor)

        self._start, start_grey = self._downscale(start)
        goal_small, goal_grey = self._downscale(goal)
        self.registrar: FrameRegistrar | None = None
        self.goal_registration: Registration | None = None
        self.registration_note = ""
        goal_valid = np.ones(self._start.shape[:2], np.float32)
        if registrar is not None or registration != "none":
            self.registrar = registrar or FrameRegistrar(method=registration)
            self.registrar.clear()
            self.registrar.add_reference(start_grey)
            if not self.registrar.register(start_grey).ok:
                # Not even the start view registers to itself (a blank wall, a uniform table): nothing to anchor
                # a homography on, so assume the camera holds still rather than reject every frame.
                self.registrar = None
                self.registration_note = "start view has too little structure to register; assuming a fixed camera"
        if self.registrar is not None:
            self.goal_registration = self.registrar.register(goal_grey)
            if self.goal_registration.ok:
                goal_small, goal_valid = self._warp(goal_small, self.goal_registration.homography)
                # Late frames look more like the goal than the start: let them register to the goal view as well.
                self.registrar.add_reference(goal_grey, self.goal_registration.homography)
            # else: a goal that cannot be registered (e.g. a predicted goal with little texture) is taken to share
            # the start's viewpoint, as an image editor's output does.
        self._prepare(goal_small, goal_valid)
        self._last: ProgressResult | None = None

    def _prepare(self, goal: np.ndarray, goal_valid: np.ndarray) -> None:
        """Change region, static pixels and per-scale references for a goal already in start coordinates."""
        self._goal_small = goal
        self._goal_valid = goal_valid
        floor2 = self.noise_floor**2
        difference2 = ((goal - self._start) ** 2).sum(axis=2) * (goal_valid > 0.5)
        if float(difference2.max()) <= max(floor2, 64.0):
            raise ValueError(
                "start and goal images are practically identical (largest colour difference "
                f"{np.sqrt(difference2.max()):.1f}/255); there is no change to measure progress along"
            )
        # Static pixels (start and goal agree, away from the change) are where lighting is measured.
        change = cv2.dilate((difference2 > max(floor2, 400.0)).astype(np.uint8), np.ones((5, 5), np.uint8))
        static = (change == 0) & (goal_valid > 0.5)
        if static.sum() < 0.1 * static.size:
            static = goal_valid > 0.5
        static &= (self._start.min(axis=2) > 20) & (self._start.max(axis=2) < 250)  # room to measure a ratio
        static_index = np.flatnonzero(static)
        self._static_index = static_index[:: max(1, len(static_index) // 4000)]  # a few thousand are plenty
        self._static_start = self._start.reshape(-1, 3)[self._static_index]

        # Per scale: indices of the pixels where start and goal differ, their start/goal colours and weights.
        self._levels = []
        for level, (start, goal_level) in enumerate(zip(self._pyramid(self._start), self._pyramid(goal))):
            start = start.reshape(-1, 3)
            goal_level = goal_level.reshape(-1, 3)
            excess = ((goal_level - start) ** 2).sum(axis=1) - floor2
            index = np.flatnonzero(excess > 0)
            # Every scale gets an equal say (4**level makes up for the fewer pixels of coarser levels).
            weight = np.sqrt(excess[index]) * 4.0**level
            self._levels.append((index, start[index], goal_level[index], weight.astype(np.float32)))

    # ----------------------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Forgets the smoothing state and the reached latch (for a new attempt at the same goal)."""
        self.filter.reset()
        self._last = None

    def score(self, frame_rgb: np.ndarray) -> ProgressResult:
        """Stateless score of one frame: ``progress == raw_progress`` and ``reached = progress >= threshold``."""
        raw, similarity, registration = self._measure(frame_rgb)
        if raw is None:
            return ProgressResult(0.0, 0.0, 0.0, False, False, registration.inliers, registration.reason)
        return ProgressResult(raw, raw, similarity, raw >= self.filter.threshold, True, registration.inliers)

    def update(self, frame_rgb: np.ndarray) -> ProgressResult:
        """Scores a frame of the live stream: smoothed progress, hysteresis on ``reached``.

        A frame that cannot be registered returns ``registered=False`` with the previous progress and ``reached``
        unchanged (0 before any frame was scored).
        """
        raw, similarity, registration = self._measure(frame_rgb)
        if raw is None:
            last = self._last or ProgressResult(0.0, 0.0, 0.0, False, False)
            return ProgressResult(last.progress, last.raw_progress, last.similarity, last.reached, False,
                                  registration.inliers, registration.reason)
        progress, reached = self.filter.update(raw)
        self._last = ProgressResult(progress, raw, similarity, reached, True, registration.inliers)
        return self._last

    # ----------------------------------------------------------------------------------------------------------
    def _downscale(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Float32 RGB at work size and uint8 grey at feature size (resized once, then shrunk further)."""
        feature_rgb = cv2.resize(rgb, self.feature_size, interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(feature_rgb, cv2.COLOR_RGB2GRAY)
        small = cv2.resize(feature_rgb, self.work_size, interpolation=cv2.INTER_AREA).astype(np.float32)
        return small, grey

    def _warp(self, small: np.ndarray, homography: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Warps a work-size image by a feature-resolution homography; returns it and its validity mask."""
        scale, inverse = self._feature_to_work
        work_homography = scale @ homography @ inverse
        warped = cv2.warpPerspective(small, work_homography, self.work_size, flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REPLICATE)
        valid = cv2.warpPerspective(np.ones(small.shape[:2], np.float32), work_homography, self.work_size,
                                    flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        # Stay a couple of pixels clear of the border, where interpolation mixes in replicated edge pixels.
        valid = cv2.erode(valid, np.ones((5, 5), np.uint8))
        return warped, valid

    def _pyramid(self, image: np.ndarray) -> list[np.ndarray]:
        levels = [image]
        for _ in range(self.num_scales - 1):
            levels.append(cv2.pyrDown(levels[-1]))
        return levels

    def _normalise_lighting(self, frame: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
        """Divides each channel by its gain: the median ratio frame/start over the (visible) static pixels.

        Also returns the per-channel ceiling the normalised frame cannot exceed when the gain is above 1 (the
        camera clipped at 255), so references can be clipped the same way; None when nothing can have clipped.
        """
        live = frame.reshape(-1, 3)[self._static_index]
        usable = live.max(axis=1) < 250  # saturated pixels say nothing about the gain
        if valid is not None:
            usable &= valid.reshape(-1)[self._static_index] > 0.5
        if usable.sum() < 50:
            return frame, None
        gain = np.clip(np.median(live[usable] / self._static_start[usable], axis=0), 0.1, 10.0)
        # Brighter exposure clips at 255: after dividing by the gain, no frame value can exceed 255 / gain.
        ceiling = 255.0 / gain if (gain > 1.0).any() else None
        return frame / gain, ceiling

    def align(self, frame_rgb: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None, Registration]:
        """The frame at work size in start coordinates, float32 RGB (None when it cannot be registered), its
        validity mask (None without registration: every pixel is valid) and how it was registered."""
        frame = check_rgb(frame_rgb, "frame")
        small, grey = self._downscale(frame)
        if self.registrar is None:
            return small, None, Registration(True, None, 0, 0)
        registration = self.registrar.register(grey)
        if not registration.ok:
            return None, None, registration
        small, valid = self._warp(small, registration.homography)
        return small, valid * self._goal_valid, registration

    @property
    def start_small(self) -> np.ndarray:
        """The start view at work size (float32 RGB)."""
        return self._start

    @property
    def goal_small(self) -> np.ndarray:
        """The goal at work size in start coordinates (float32 RGB) and its validity mask."""
        return self._goal_small, self._goal_valid

    def _measure(self, frame_rgb: np.ndarray) -> tuple[float | None, float, Registration]:
        small, valid, registration = self.align(frame_rgb)
        if small is None:
            return None, 0.0, registration
        return self._pixel_progress(small, valid, registration)

    def _pixel_progress(self, small: np.ndarray, valid: np.ndarray | None,
                        registration: Registration) -> tuple[float | None, float, Registration]:
        """Progress and similarity of an aligned frame along the pixel-wise start->goal change (steps 2 and 3)."""
        small, ceiling = self._normalise_lighting(small, valid)
        frames = self._pyramid(small)
        valids = self._pyramid(valid) if valid is not None else [None] * self.num_scales
        floor2 = self.noise_floor**2
        total_weight = total = to_goal = change = 0.0
        for (index, start, goal, weight), frame_level, valid_level in zip(self._levels, frames, valids):
            live = frame_level.reshape(-1, 3)[index]
            if ceiling is not None:  # compare with start and goal as this exposure would have recorded them
                start, goal = np.minimum(start, ceiling), np.minimum(goal, ceiling)
            if valid_level is not None:
                weight = weight * (valid_level.reshape(-1)[index] > 0.99)
            from_start2 = ((live - start) ** 2).sum(axis=1)
            from_goal2 = ((live - goal) ** 2).sum(axis=1)
            from_start = np.sqrt(np.maximum(from_start2 - floor2, 0.0))
            from_goal = np.sqrt(np.maximum(from_goal2 - floor2, 0.0))
            both = from_start + from_goal
            along = np.where(both > 0, from_start / np.maximum(both, 1e-6), 0.5)
            total_weight += float(weight.sum())
            total += float((weight * along).sum())
            to_goal += float((weight * from_goal2).sum())
            change += float((weight * ((goal - start) ** 2).sum(axis=1)).sum())
        if total_weight <= 1e-6:
            return None, 0.0, Registration(False, None, registration.inliers, registration.matches,
                                           "the region the action changes is out of view", registration.method)
        progress = float(np.clip(total / total_weight, 0.0, 1.0))
        # Similarity to the goal over the change region: 1 - (distance to goal / distance start-goal).
        similarity = float(np.clip(1.0 - np.sqrt(to_goal / max(change, 1e-6)), 0.0, 1.0))
        return progress, similarity, registration
