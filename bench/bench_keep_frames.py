"""How ``actedit-make-dataset --keep-frames`` reads a segment's frames, against the two plain ways (not part of
`make bench`).

    python bench/bench_keep_frames.py        # a few seconds; writes a 900-frame 640x480 mp4v video to a temp folder

Rows: ``VideoReader.read_span`` (one forward pass: grab up to near frames, seek to far ones, ``SEEK_GAP``), grabbing
every frame of the segment from one seek, and one seek per kept frame; best of 3, K frames of the whole video.
OpenCV's writer here has no H.264 encoder, so the video is mp4v (a keyframe every 12 frames); on videos with longer
keyframe intervals seeking costs more and grabbing less.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from actedit_ros.training.video_frames import SEEK_GAP, VideoReader, kept_frame_indices

FRAMES, WIDTH, HEIGHT, FPS = 900, 640, 480, 30.0


def write_video(path: Path) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    texture = np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), np.uint8)
    for i in range(FRAMES):
        writer.write(np.roll(texture, 3 * i, axis=1))
    writer.release()


def grab_all(reader: VideoReader, indices: list[int]) -> dict:
    wanted, frames = set(indices), {}
    reader.capture.set(cv2.CAP_PROP_POS_FRAMES, indices[0])
    for index in range(indices[0], indices[-1] + 1):
        reader.capture.grab()
        if index in wanted:
            frames[index] = reader.capture.retrieve()[1]
    return frames


def best_of(function, path: Path, indices: list[int], runs: int = 3) -> tuple[float, dict]:
    times = []
    for _ in range(runs):
        reader = VideoReader(path)
        start = time.perf_counter()
        frames = function(reader, indices)
        times.append(time.perf_counter() - start)
        reader.close()
    return min(times), frames


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "segment.mp4"
        write_video(path)
        print(f"{FRAMES}-frame {WIDTH}x{HEIGHT} mp4v segment, SEEK_GAP {SEEK_GAP}")
        print("| K | read_span (s) | grab every frame (s) | seek per frame (s) | same frames |")
        print("|---|---|---|---|---|")
        for count in (4, 8, 16, 32):
            indices = kept_frame_indices(0, FRAMES - 1, count)
            span, a = best_of(lambda r, i: r.read_span(i), path, indices)
            grab, b = best_of(grab_all, path, indices)
            seek, c = best_of(lambda r, i: {index: r.read(index) for index in i}, path, indices)
            same = all(np.array_equal(a[i], b[i]) and np.array_equal(a[i], c[i]) for i in indices)
            print(f"| {count} | {span:.2f} | {grab:.2f} | {seek:.2f} | {same} |")


if __name__ == "__main__":
    main()
