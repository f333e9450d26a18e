"""Write rosbag2 bags from synthetic world episodes (for tests, benchmarks and demos without a robot).

Episodes are laid out one after the other: an instruction message at each episode start, then its frames at
`fps`, then a `gap_s` pause. Log time and header stamp of a frame are equal.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from actedit_ros.bag.episodes import NS
from actedit_ros.bag.io import COMPRESSED_IMAGE_TYPE, IMAGE_TYPE, STRING_TYPE
from actedit_ros.bag.write import BagWriter, compressed_image_message, image_message, string_message

DEFAULT_START_NS = 1_700_000_000 * NS


@dataclass(frozen=True)
class WrittenEpisode:
    """Where an episode landed in the bag: log times of its first and last frame, its instruction."""

    instruction: str
    start_ns: int
    last_frame_ns: int
    num_frames: int


def encode_rgb(rgb: np.ndarray, image_format: str = "png") -> bytes:
    """PNG or JPEG bytes of an RGB image (OpenCV)."""
    import cv2

    ok, buffer = cv2.imencode(f".{image_format}", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"OpenCV could not encode a {rgb.shape} image as {image_format}")
    return buffer.tobytes()


def write_frames_bag(path: str | os.PathLike, segments: Sequence[tuple[str, Sequence[np.ndarray]]],
                     storage: str = "mcap", fps: float = 10.0, gap_s: float = 0.5,
                     camera_topic: str = "/camera/image_raw", instruction_topic: str | None = "/instruction",
                     compressed: str | None = None, start_ns: int = DEFAULT_START_NS) -> list[WrittenEpisode]:
    """A bag of (instruction, frames) segments; `compressed` = "png"/"jpeg" writes CompressedImage instead of Image."""
    period_ns = int(round(NS / fps))
    written = []
    with BagWriter(path, storage=storage) as writer:
        writer.add_topic(camera_topic, COMPRESSED_IMAGE_TYPE if compressed else IMAGE_TYPE)
        if instruction_topic:
            writer.add_topic(instruction_topic, STRING_TYPE)
        t_ns = start_ns
        for instruction, frames in segments:
            first_ns = t_ns
            if instruction_topic:
                writer.write(instruction_topic, t_ns, string_message(instruction))
            for rgb in frames:
                if compressed:
                    msg = compressed_image_message(encode_rgb(rgb, compressed), compressed, t_ns)
                else:
                    msg = image_message(rgb, t_ns)
                writer.write(camera_topic, t_ns, msg)
                t_ns += period_ns
            written.append(WrittenEpisode(instruction, first_ns, t_ns - period_ns, len(frames)))
            t_ns += int(round(gap_s * NS))
    return written


def write_world_bag(path: str | os.PathLike, seeds: Sequence[int] = (0, 1), regime: str = "fixed",
                    split: str = "test", size: tuple[int, int] = (64, 48), num_frames: int = 12,
                    **kwargs) -> list[WrittenEpisode]:
    """A bag of synthetic world episodes (actedit_ros.world.generate_episode), one per seed; kwargs as above."""
    from actedit_ros.world import generate_episode

    episodes = [generate_episode(seed=s, regime=regime, split=split, size=size, num_frames=num_frames) for s in seeds]
    return write_frames_bag(path, [(ep.instruction, ep.frames) for ep in episodes], **kwargs)
