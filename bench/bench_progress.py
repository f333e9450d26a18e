"""Progress scoring speed at 640x480 on one core, against the naive baselines (issue 5, rows 3 and 6).

    python bench/bench_progress.py                 # prints its own table (about half a minute)
    python bench/bench_progress.py --size 1280x720 --frames 200

What runs: ``ProgressScorer.update`` (the node's per-frame call: registration to the start/goal view, lighting
normalisation, scoring, smoothing) on frames of a head-camera world episode with the evaluation's perturbations
(distractor, lighting drift, noise), cycled; then the same scorer with registration off (a fixed camera), and the
raw pixel-MSE and SSIM baselines on the same frames. OpenCV and torch run with one thread, and the process is
pinned to one CPU core while it measures. frames/s = frames / wall time after a warm-up; the ratio rows say how
many times slower the robust scorer is than each baseline.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from table import Row, print_table  # noqa: E402

from actedit_ros.progress import LearnedProgressScorer, PixelMSEProgress, ProgressScorer, SSIMProgress  # noqa: E402
from actedit_ros.progress.evaluate import parse_size  # noqa: E402
from actedit_ros.progress.perturbations import perturb  # noqa: E402
from actedit_ros.world import generate_episode  # noqa: E402

TARGETS_FPS = {"learned": 30.0, "pixel scorer": 60.0}  # the node's default scorer (issue 12) / the pixel one (issue 4)


@contextlib.contextmanager
def one_core():
    """OpenCV and torch on one thread, the process pinned to one CPU; everything restored afterwards."""
    cv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    torch_threads = None
    if "torch" in sys.modules:  # only if already loaded: importing torch for this would cost seconds
        torch = sys.modules["torch"]
        torch_threads = torch.get_num_threads()
        torch.set_num_threads(1)
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    if affinity:
        os.sched_setaffinity(0, {max(affinity)})
    try:
        yield
    finally:
        cv2.setNumThreads(cv_threads)
        if torch_threads is not None:
            sys.modules["torch"].set_num_threads(torch_threads)
        if affinity:
            os.sched_setaffinity(0, affinity)


def _time(step, frames: list[np.ndarray], count: int, warmup: int = 10) -> tuple[float, float, float, float]:
    """(frames/s, p50 ms, p95 ms, frames per CPU-second) of ``step(frame)`` over ``count`` cycled frames.

    Frames per CPU-second (process CPU time) is what the code costs; it matches frames/s on an idle machine and
    stays meaningful on a shared one, where wall time also counts waiting for the core.
    """
    for i in range(warmup):
        step(frames[i % len(frames)])
    times = []
    started = time.perf_counter()
    cpu_started = time.process_time()
    for i in range(count):
        t0 = time.perf_counter()
        step(frames[i % len(frames)])
        times.append(time.perf_counter() - t0)
    total = time.perf_counter() - started
    cpu = max(time.process_time() - cpu_started, 1e-9)
    times.sort()
    return count / total, 1000 * statistics.median(times), 1000 * times[int(0.95 * (len(times) - 1))], count / cpu


def scoring_inputs(size: tuple[int, int] = (640, 480), seed: int = 3) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """(perturbed live frames, start, goal) of the held-out head-camera episode every scoring bench uses."""
    episode = generate_episode(seed=seed, regime="head", split="test", size=size, num_frames=16)
    frames = perturb(episode.frames, seed=seed)
    return frames, frames[0], episode.frames[-1]


def measure(size: tuple[int, int] = (640, 480), count: int = 300, seed: int = 3) -> dict[str, tuple]:
    """frames/s and per-frame latency of the scorer (with and without registration) and of the baselines."""
    frames, start, goal = scoring_inputs(size, seed)
    results = {}
    import torch  # noqa: F401  (loaded now so one_core() gives the learned scorer's network one thread)

    with one_core():
        results["learned"] = _time(LearnedProgressScorer(start, goal).update, frames, count)
        results["pixel scorer"] = _time(ProgressScorer(start, goal).update, frames, count)
        fixed = ProgressScorer(start, goal, registration="none")
        results["pixel scorer, no registration"] = _time(fixed.update, frames, count)
        results["pixel MSE"] = _time(PixelMSEProgress(start, goal).score, frames, count)
        results["SSIM"] = _time(SSIMProgress(start, goal).score, frames, max(20, count // 5))
    return results


def rows(size: tuple[int, int] = (640, 480), count: int = 300) -> list[Row]:
    results = measure(size, count)
    label = f"{size[0]}x{size[1]}, 1 core"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    out = []
    for name, (fps, p50, p95, cpu_fps) in results.items():
        target = TARGETS_FPS.get(name)
        out.append(Row(
            f"progress scoring ({name}), {label}", f"{fps:.0f} frames/s",
            f">= {target:.0f} frames/s" if target else "",
            fps >= target if target else None,
            f"p50 {p50:.2f} ms, p95 {p95:.2f} ms per frame; {cpu_fps:.0f} frames per CPU-second; "
            f"load average {load:.1f}",
        ))
    ours = results["learned"][3]
    for baseline in ("pixel scorer", "pixel MSE", "SSIM"):
        out.append(Row(f"progress: {baseline} / learned scorer speed, {label}", f"{results[baseline][3] / ours:.1f}x",
                       "", None, "cost of robustness: how many times faster the naive baseline is (frames per "
                                 "CPU-second, so other load on the machine does not skew it)"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=(640, 480),
                        help="frame size WIDTHxHEIGHT (default 640x480)")
    parser.add_argument("--frames", type=int, default=300, help="frames timed per method (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.frames < 10:
        parser.error("--frames must be at least 10")
    print_table(rows(args.size, args.frames), "progress scoring speed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
