"""Read the end state shown in an image from its pixels, independently of any model ("action accuracy").

Given an episode and an image (a predicted goal, or a real frame), every end state the scene could be in after one
action - the true one, the same action on a distractor, every other possible action, and "nothing changed" - is
rendered with the episode's start and end camera poses. The image shows the candidate it is closest to, measured only
where the candidates differ from one another (so the static background does not drown out a small moved object).
Where an action's outcome is random (where a picked-up thing is held, how far a thing is moved, which side a lid goes
to), each candidate is rendered for `draws` draws of that randomness (the true one with the episode's own draw too)
and its distance is the nearest draw's: a goal that shows the right action with another draw reads right.
An image that is far from every candidate (mean absolute error over those pixels above `max_distance`, e.g. noise)
reads as "unreadable" rather than as whichever candidate happens to be nearest.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .episode import Episode, end_state_of, possible_actions
from .scene import render_view

NO_CHANGE = "no_change"
UNREADABLE = "unreadable"


@dataclass
class Readout:
    """label: the candidate the image shows ("action:target[:reference]", "no_change" or "unreadable");
    correct: whether that is the episode's true end state; distances: label -> distance (lower is closer)."""

    label: str
    correct: bool
    distances: dict[str, float]


def _label(action: str, target: str, reference: str) -> str:
    return f"{action}:{target}" + (f":{reference}" if reference else "")


class EndStateReadout:
    """Candidate end states of one episode, rendered once; call `read(image)` for any number of images."""

    def __init__(self, episode: Episode, size: tuple[int, int] | None = None, blur_sigma: float = 1.0,
                 max_distance: float = 40.0, draws: int = 8):
        self.episode = episode
        self.max_distance = max_distance
        self.size = tuple(size or episode.size)
        self.true_label = _label(episode.action, episode.target, episode.reference)
        start = episode.start_state.copy()
        start.hand_visible = 0.0
        variants = {NO_CHANGE: [start], self.true_label: [episode.end_state]}  # label -> its distinct end states
        for action, target, reference in possible_actions(start):
            for seed in range(max(1, draws)):
                state = end_state_of(start, action, target, reference, seed=seed)
                known = variants.setdefault(_label(action, target, reference), [])
                if state is not None and all(state.describe() != k.describe() for k in known):
                    known.append(state)
        cams = [episode.cameras[0], episode.cameras[-1]]
        if np.allclose(cams[0], cams[1]):
            cams = cams[:1]
        self.blur_sigma = blur_sigma
        self.labels = [lab for lab, states in variants.items() if states]
        states = [st for lab in self.labels for st in variants[lab]]
        # owner[v]: the index in self.labels of render v's candidate
        self.owner = np.array([k for k, lab in enumerate(self.labels) for _ in variants[lab]])
        # renders[c][v]: end state v seen by camera c (float32, blurred)
        self.renders = np.stack([np.stack([self._prep(render_view(st, self.size, cam)) for st in states]) for cam in cams])
        # where the candidates differ from "nothing changed", per camera (dilated a little)
        diff = np.abs(self.renders - self.renders[:, :1]).max(axis=-1).max(axis=1)  # (cams, H, W)
        kernel = np.ones((3, 3), np.uint8)
        self.masks = np.stack([cv2.dilate((d > 12).astype(np.uint8), kernel) > 0 for d in diff])

    def _prep(self, rgb: np.ndarray) -> np.ndarray:
        img = rgb.astype(np.float32)
        return cv2.GaussianBlur(img, (0, 0), self.blur_sigma) if self.blur_sigma > 0 else img

    def read(self, image: np.ndarray) -> Readout:
        """Which candidate end state `image` (RGB uint8, any size) shows."""
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"image must be RGB (H, W, 3), got shape {image.shape}")
        if image.shape[:2] != (self.size[1], self.size[0]):
            image = cv2.resize(image, self.size, interpolation=cv2.INTER_AREA)
        img = self._prep(image)
        best = None
        for c in range(len(self.renders)):
            mask = self.masks[c]
            if not mask.any():
                mask = np.ones_like(mask)
            err = np.abs(self.renders[c][:, mask] - img[mask]).mean(axis=(1, 2))  # (renders,)
            best = err if best is None else np.minimum(best, err)
        nearest = np.full(len(self.labels), np.inf)
        np.minimum.at(nearest, self.owner, best)  # each candidate's nearest draw
        best = nearest
        k = int(np.argmin(best))
        distances = {lab: float(d) for lab, d in zip(self.labels, best)}
        label = self.labels[k] if best[k] <= self.max_distance else UNREADABLE
        return Readout(label=label, correct=label == self.true_label, distances=distances)


def read_end_state(image: np.ndarray, episode: Episode) -> Readout:
    """One-off readout (build an `EndStateReadout` to read several images of the same episode)."""
    return EndStateReadout(episode).read(image)
