"""Levers on the CPU figures, each measured against the default it would replace (not part of `make bench`).

    python bench/bench_levers.py            # about a minute on the 2-core VM; prints one table

Prediction (embedded default, 320x240 in, 20 steps, median of 5):
* caches: the predictor keeps the text embedding of recent instructions and the latents of recent start frames, so
  asking again (a new seed, as a planner retrying does) skips both encoders. The row times the encoders on new
  inputs: what a cache hit saves.
* torch intra-op threads: 1 vs 2 (the node's default, ``torch_threads: 0``, is cores - 1).
Progress scoring (640x480, the bench_progress episode and perturbations):
* registration resolution (``feature_width``, default 320 px): 160 and 640 px against it, on one core;
* OpenCV threads: the default scorer on one pinned core with one OpenCV thread (the make-bench row) against the
  process unpinned with OpenCV's own thread count.
GPU levers (channels-last, SDPA, torch.compile) need a CUDA device; without one their row says "not run".
Fewer steps with another scheduler is a quality question: ``actedit-eval --scheduler ... --steps ...`` measures it
(bench/NOTES.md, Session 3).
"""
from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_prediction import INSTRUCTION, time_prediction  # noqa: E402
from bench_progress import _time, one_core, scoring_inputs  # noqa: E402
from table import Row, print_table  # noqa: E402

from actedit_ros.editing import GoalPredictor  # noqa: E402
from actedit_ros.editing.pipeline import working_size  # noqa: E402
from actedit_ros.progress import ProgressScorer  # noqa: E402

STEPS = 20
REPEATS = 5


def encoder_times(predictor: GoalPredictor, repeats: int = 20) -> tuple[float, float]:
    """Median seconds of the text encoder and of the VAE encoder on inputs never seen before: what the caches save
    per prediction that reuses an instruction and a start frame."""
    components = predictor.components
    size = working_size(320, 240, components.resolution, components.size_multiple)
    rng = np.random.default_rng(1)
    text, image = [], []
    for i in range(repeats):
        started = time.perf_counter()
        predictor.text_embedding(f"{INSTRUCTION} number {i}")
        text.append(time.perf_counter() - started)
        frame = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
        started = time.perf_counter()
        predictor.image_latents(frame, size)
        image.append(time.perf_counter() - started)
    return statistics.median(text), statistics.median(image)


def prediction_rows() -> list[Row]:
    predictor = GoalPredictor.from_pretrained(None, device="cpu")
    image = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    default_threads = torch.get_num_threads()
    rows = []
    text_s, image_s = encoder_times(predictor)
    rows.append(Row("prediction: what the caches save per call (text encoder / VAE encoder)",
                    f"{1000 * text_s:.1f} / {1000 * image_s:.1f} ms", "", None,
                    f"median of 20 new instructions / new 320x240 frames; torch threads {default_threads}"))
    for threads in (1, 2):
        torch.set_num_threads(threads)
        median = statistics.median(time_prediction(predictor, image, STEPS, REPEATS))
        rows.append(Row(f"prediction, {STEPS} steps, torch threads {threads}", f"{median:.3f} s", "", None,
                        "caches warm"))
    torch.set_num_threads(default_threads)
    return rows


def scoring_rows(size: tuple[int, int] = (640, 480), count: int = 300) -> list[Row]:
    frames, start, goal = scoring_inputs(size)
    default_width = inspect.signature(ProgressScorer).parameters["feature_width"].default
    label = f"{size[0]}x{size[1]}"
    rows = []

    def row(figure: str, result: tuple, detail: str) -> Row:
        fps, p50, p95, cpu_fps = result
        return Row(figure, f"{fps:.0f} frames/s", "", None,
                   f"p50 {p50:.2f} ms, p95 {p95:.2f} ms; {cpu_fps:.0f} frames per CPU-second; {detail}")

    with one_core():
        for feature_width in (default_width // 2, default_width, default_width * 2):
            scorer = ProgressScorer(start, goal, feature_width=feature_width)
            default = " (default)" if feature_width == default_width else ""
            rows.append(row(f"progress scoring, {label}, registration at {feature_width} px{default}",
                            _time(scorer.update, frames, count), "one core, OpenCV 1 thread"))
    scorer = ProgressScorer(start, goal)
    rows.append(row(f"progress scoring, {label}, OpenCV {cv2.getNumThreads()} threads, unpinned",
                    _time(scorer.update, frames, count), f"compare with the {default_width} px row (one core, 1 thread)"))
    return rows


def gpu_rows() -> list[Row]:
    figure = "GPU levers: channels-last, SDPA, torch.compile"
    if not torch.cuda.is_available():
        return [Row(figure, "not run", "", None, "no CUDA device on this machine")]
    return [Row(figure, "not measured", "", None, "a CUDA device is present, but this bench has no GPU lever rows "
                                                  "yet; see bench_prediction.py --gpu-only")]


def rows() -> list[Row]:
    return prediction_rows() + scoring_rows() + gpu_rows()


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    print_table(rows(), "levers")
