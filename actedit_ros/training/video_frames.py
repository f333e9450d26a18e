"""Frame extraction and writing of ``actedit-make-dataset``: reading frames of a video with OpenCV, choosing the
frames a segment keeps, and writing them at the dataset's size and format.

A segment's frames are read in one forward pass with one capture (``VideoReader.read_span``): near frames are
grabbed up to, decoding only the frames kept; far ones are seeked to. Without ``--keep-frames`` only the first and the last
frame are read, each with its own seek (``VideoReader.read``), as before.
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from .annotations import BadRow, MakeDatasetError

# A kept frame more than this many frames past the current position is seeked to rather than grabbed up to (seeking
# decodes from the keyframe before it, grabbing decodes every frame in between): bench/bench_keep_frames.py.
SEEK_GAP = 32


def resize_short_side(image: np.ndarray, size: int) -> np.ndarray:
    """Resize so the shorter side is ``size`` pixels, aspect kept (0 = unchanged)."""
    if not size:
        return image
    height, width = image.shape[:2]
    scale = size / min(height, width)
    if scale == 1:
        return image
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, new, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


def write_frame(out: Path, name: str, frame: np.ndarray, size: int) -> str:
    """Write ``frame`` (BGR) as ``out/name`` with its shorter side ``size`` (0 = as is); returns ``name``."""
    if not cv2.imwrite(str(out / name), resize_short_side(frame, size)):
        raise MakeDatasetError(f"cannot write {out / name}")
    return name


def read_image(path: Path) -> np.ndarray:
    """A ready image (BGR uint8); BadRow if it is missing or cannot be decoded."""
    if not path.is_file():
        raise BadRow(f"image {path} does not exist")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise BadRow(f"cannot read image {path}")
    return image


def kept_frame_indices(start: int, end: int, count: int) -> list[int]:
    """``count`` frame indices evenly spaced in time from ``start`` to ``end``, both included, in time order.

    Each is the frame nearest its evenly spaced time (halves round up); a segment with fewer than ``count`` frames
    repeats some, so a record always has ``count`` frames and its progress values never decrease.
    """
    if count < 2 or end <= start:
        raise ValueError(f"need count >= 2 and end > start, got count={count}, start={start}, end={end}")
    return [start + math.floor(i * (end - start) / (count - 1) + 0.5) for i in range(count)]


def frame_progress(indices: list[int], start: int, end: int) -> list[float]:
    """Each frame's time fraction of the segment, ``(t - start) / (end - start)``, rounded to 6 decimals."""
    return [round((index - start) / (end - start), 6) for index in indices]


class VideoReader:
    """Reads frames of one video by index (BGR uint8), keeping the capture open between calls."""

    def __init__(self, path: Path):
        self.path = path
        self.capture = cv2.VideoCapture(str(path))
        if not self.capture.isOpened():
            raise BadRow(f"cannot open video {path}")
        self.frame_count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS)) or 0.0

    def frame_index(self, value: float, unit: str, is_end: bool) -> int:
        if unit == "frames":
            return int(value)
        if self.fps <= 0:
            raise BadRow(f"video {self.path} reports no frame rate; give the segment in frames")
        index = int(math.floor(value * self.fps + 1e-6))
        if is_end and index == self.frame_count:  # an end time equal to the duration means the last frame
            index -= 1
        return index

    def _check_in_video(self, index: int) -> None:
        if index >= self.frame_count > 0:
            raise BadRow(f"segment past the end of {self.path.name}: frame {index} requested, the video has "
                         f"{self.frame_count} frames (0..{self.frame_count - 1})")

    def read(self, index: int) -> np.ndarray:
        """One frame, by seeking to it."""
        self._check_in_video(index)
        self.capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = self.capture.read()
        if not ok or frame is None:
            raise BadRow(f"cannot read frame {index} of {self.path.name}")
        return frame

    def read_span(self, indices: list[int]) -> dict[int, np.ndarray]:
        """The frames ``indices`` (in time order, repeats allowed) in one forward pass over the segment: a seek to
        the first, then each next one grabbed up to (decoding only the wanted frames) or, when it lies more than
        :data:`SEEK_GAP` frames ahead, seeked to."""
        self._check_in_video(indices[-1])
        frames: dict[int, np.ndarray] = {}
        position = None  # the index of the frame the next grab returns
        for index in indices:
            if index in frames:
                continue
            if position is None or index - position > SEEK_GAP:
                self.capture.set(cv2.CAP_PROP_POS_FRAMES, index)
                position = index
            while position < index:
                if not self.capture.grab():
                    raise BadRow(f"cannot read frame {position} of {self.path.name}")
                position += 1
            ok, frame = self.capture.read()
            position += 1
            if not ok or frame is None:
                raise BadRow(f"cannot read frame {index} of {self.path.name}")
            frames[index] = frame
        return frames

    def close(self) -> None:
        self.capture.release()
