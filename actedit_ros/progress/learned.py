"""The learned progress scorer: progress toward a goal image that may be an imperfect *prediction* of the end state.

A pixel-wise comparison needs a goal that matches the finished scene pixel for pixel. A goal predicted by an image
editor does not: it is blurred, colour-shifted, draws the moved object roughly. So progress is read by a small
convolutional network that looks at the start view, the live frame and the goal together (all registered into the
start view and lighting-normalised by :class:`ProgressScorer`'s own steps 1-2) and was trained, on action segments,
with the goals an editor actually predicts, with true end frames and degraded ones, and with clips of *other*
actions from the same start as negatives (progress 0). It therefore knows what a true completion looks like against
such a goal, instead of assuming that 1.0 means pixel identity (the calibration a planner needs for ``reached``).

A monotone map fitted by the trainer on held-out records (``info["calibration"]``) then puts the output above which
only a small share of not-yet-done frames lie at 0.8, the default reached threshold; it leaves the order of frames
alone.

Inputs of the network, at ``INPUT_SIZE`` (64x48), each scaled to [-1, 1]: start, frame, goal, frame - start,
goal - frame, and the validity mask of the registered frame (16 channels); plus the pixel scorer's own progress of
the frame as one extra number, so a sharp goal is scored at least as well as the pixel scorer does.

Weights: one safetensors file with the network's settings in its metadata, loaded by :func:`load_progress_model`
(the one loader; no pickle). The shipped default (``actedit_ros/models/progress``) was trained by
``actedit-train-progress`` on the synthetic world with the embedded default editor's goals.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from safetensors.torch import load_file, save_file

from .scorer import ProgressScorer

INPUT_SIZE = (64, 48)  # (width, height) the network sees
INPUT_CHANNELS = 16
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "progress"
WEIGHTS_NAME = "progress_model.safetensors"


class ProgressNet(torch.nn.Module):
    """Four strided convolutions, global mean+max pooling, and a small head that also sees the pixel progress."""

    def __init__(self, width: int = 32):
        super().__init__()
        w = int(width)
        self.width = w
        self.features = torch.nn.Sequential(
            torch.nn.Conv2d(INPUT_CHANNELS, w, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(w, 2 * w, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(2 * w, 2 * w, 3, stride=2, padding=1), torch.nn.ReLU(),
            torch.nn.Conv2d(2 * w, 2 * w, 3, stride=1, padding=1), torch.nn.ReLU(),
        )
        self.head = torch.nn.Sequential(torch.nn.Linear(4 * w + 1, 2 * w), torch.nn.ReLU(), torch.nn.Linear(2 * w, 1))

    def forward(self, images: torch.Tensor, pixel_progress: torch.Tensor) -> torch.Tensor:
        """Logits of progress, shape (batch,), for inputs (batch, 16, 48, 64) and pixel progress (batch,)."""
        features = self.features(images)
        pooled = torch.cat([features.mean(dim=(2, 3)), features.amax(dim=(2, 3)), pixel_progress[:, None]], dim=1)
        return self.head(pooled)[:, 0]


def to_input_size(small: np.ndarray) -> np.ndarray:
    """An aligned work-size image (float32 RGB 0-255) or mask, area-resized to ``INPUT_SIZE``."""
    return cv2.resize(small, INPUT_SIZE, interpolation=cv2.INTER_AREA)


def network_input(start: np.ndarray, frame: np.ndarray, goal: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The network input from images already at ``INPUT_SIZE`` (float 0-255 RGB, shape (..., 48, 64, 3)) and the
    frame's validity mask (..., 48, 64): float32 of shape (..., 16, 48, 64). Leading batch dimensions broadcast."""
    scale = np.float32(1.0 / 127.5)
    start, frame, goal = (np.asarray(x, np.float32) for x in (start, frame, goal))
    channels = [start * scale - 1.0, frame * scale - 1.0, goal * scale - 1.0,
                (frame - start) * scale, (goal - frame) * scale]
    mask = np.asarray(valid, np.float32)[..., None] * 2.0 - 1.0
    shape = np.broadcast_shapes(*(c.shape for c in channels), mask.shape[:-1] + (3,))
    stacked = np.concatenate([np.broadcast_to(c, shape) for c in channels]
                             + [np.broadcast_to(mask, shape[:-1] + (1,))], axis=-1)
    return np.ascontiguousarray(np.moveaxis(stacked, -1, -3), dtype=np.float32)


def reference_inputs(scorer: ProgressScorer) -> tuple[np.ndarray, np.ndarray]:
    """The start view and the (registered) goal of a scorer at ``INPUT_SIZE``."""
    return to_input_size(scorer.start_small), to_input_size(scorer.goal_small[0])


def frame_inputs(scorer: ProgressScorer, frame_rgb: np.ndarray):
    """What the network needs of one live frame, from a pixel scorer's registration and lighting steps:
    (frame at ``INPUT_SIZE``, validity mask, pixel progress, pixel similarity, registration); the first three are
    None when the frame cannot be scored (registration failed, change region out of view)."""
    small, valid, registration = scorer.align(frame_rgb)
    if small is None:
        return None, None, None, 0.0, registration
    pixel, similarity, registration = scorer._pixel_progress(small, valid, registration)
    if pixel is None:
        return None, None, None, 0.0, registration
    normalised, _ = scorer._normalise_lighting(small, valid)
    mask = scorer.goal_small[1] if valid is None else valid
    return to_input_size(normalised), to_input_size(mask.astype(np.float32)) > 0.5, pixel, similarity, registration


@dataclass
class ProgressModel:
    """A trained :class:`ProgressNet` and where it came from. ``predict`` is batched and runs without gradients."""

    net: ProgressNet
    info: dict
    path: str = ""

    @torch.no_grad()
    def predict(self, inputs: np.ndarray, pixel_progress: np.ndarray) -> np.ndarray:
        """Progress in [0, 1] for a batch of network inputs (N, 16, 48, 64) and pixel progress values (N,)."""
        images = torch.from_numpy(np.ascontiguousarray(inputs, dtype=np.float32))
        pixel = torch.as_tensor(np.asarray(pixel_progress, np.float32).reshape(-1))
        return self.calibrate(torch.sigmoid(self.net(images, pixel)).numpy())

    def calibrate(self, raw: np.ndarray) -> np.ndarray:
        """The trainer's monotone map of the network's output (``info["calibration"]`` knots; identity without):
        it places the output that separates done from not-yet-done frames at the default reached threshold."""
        knots = self.info.get("calibration")
        if not knots:
            return raw
        xs, ys = zip(*knots)
        return np.interp(raw, xs, ys).astype(np.float32)

    def save(self, path: str | Path, **info) -> Path:
        """Writes the weights as safetensors with the settings (and ``info``) as JSON in the file's metadata."""
        path = Path(path)
        if path.suffix != ".safetensors":
            path = path / WEIGHTS_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        metadata = {"actedit_progress": json.dumps({**self.info, **info, "width": self.net.width,
                                                    "input_size": list(INPUT_SIZE)})}
        save_file({k: v.detach().contiguous() for k, v in self.net.state_dict().items()}, str(path), metadata)
        return path


def load_progress_model(path: str | Path | None = None) -> ProgressModel:
    """Loads a progress model: a ``.safetensors`` file or a folder holding ``progress_model.safetensors``; None or ""
    loads the shipped default. Raises ValueError naming the file when it is missing or not a progress model."""
    source = Path(path) if path else DEFAULT_MODEL_DIR
    file = source / WEIGHTS_NAME if source.is_dir() else source
    if not file.is_file():
        raise ValueError(f"progress model not found: {file} (give a .safetensors file written by "
                         "actedit-train-progress, or a folder holding progress_model.safetensors)")
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if "actedit_progress" not in metadata:
        raise ValueError(f"{file} is not a progress model written by actedit-train-progress (no settings in its "
                         "metadata)")
    info = json.loads(metadata["actedit_progress"])
    if tuple(info.get("input_size", INPUT_SIZE)) != INPUT_SIZE:
        raise ValueError(f"{file} was trained for input size {info['input_size']}, this version reads {INPUT_SIZE}")
    net = ProgressNet(width=int(info.get("width", 32)))
    try:
        net.load_state_dict(load_file(str(file)))
    except RuntimeError as error:
        raise ValueError(f"{file}: weights do not fit the progress network ({error})") from None
    net.eval()
    return ProgressModel(net=net, info=info, path=str(file))


class LearnedProgressScorer(ProgressScorer):
    """:class:`ProgressScorer` whose progress comes from a trained :class:`ProgressModel` (same interface).

    Registration, lighting normalisation, the "practically identical" check, smoothing and the ``reached``
    hysteresis are the pixel scorer's; ``similarity`` stays the pixel scorer's similarity over the change region.

    Args:
        start_rgb, goal_rgb: as for :class:`ProgressScorer`.
        model: a loaded progress model (None: the shipped default, loaded once per process).
        **options: every other :class:`ProgressScorer` option.
    """

    def __init__(self, start_rgb: np.ndarray, goal_rgb: np.ndarray, model: ProgressModel | None = None, **options):
        super().__init__(start_rgb, goal_rgb, **options)
        self.model = model or default_progress_model()
        self._start_input, self._goal_input = reference_inputs(self)

    def _measure(self, frame_rgb: np.ndarray):
        frame, valid, pixel, similarity, registration = frame_inputs(self, frame_rgb)
        if frame is None:
            return None, 0.0, registration
        inputs = network_input(self._start_input, frame, self._goal_input, valid)
        return float(self.model.predict(inputs[None], np.array([pixel]))[0]), similarity, registration


_DEFAULT: ProgressModel | None = None


def default_progress_model() -> ProgressModel:
    """The shipped progress model, loaded on first use."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = load_progress_model(None)
    return _DEFAULT


SCORERS = ("learned", "pixel")


def make_scorer(kind: str, start_rgb: np.ndarray, goal_rgb: np.ndarray, model: ProgressModel | None = None,
                **options) -> ProgressScorer:
    """The progress scorer ``kind`` ("learned": :class:`LearnedProgressScorer`, the default everywhere; "pixel": the
    hand-made :class:`ProgressScorer`) for a start and a goal image; ``options`` as for :class:`ProgressScorer`."""
    if kind == "learned":
        return LearnedProgressScorer(start_rgb, goal_rgb, model, **options)
    if kind == "pixel":
        return ProgressScorer(start_rgb, goal_rgb, **options)
    raise ValueError(f"progress scorer must be one of {SCORERS}; got {kind!r}")
