"""Goal-prediction time: the embedded default on CPU by steps, and a real SD-1.5 checkpoint fp16 on GPU.

    python bench/bench_prediction.py                      # CPU rows (embedded default, 10/20/50 steps)
    ACTEDIT_SD15_MODEL=/path/to/instruct-pix2pix python bench/bench_prediction.py --gpu-only
        # GPU row: a diffusers-format InstructPix2Pix directory (e.g. timbrooks/instruct-pix2pix downloaded
        # beforehand), fp16, 512x512, 20 steps, target <= 0.6 s. Runs only where CUDA and the directory exist.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from table import Row, print_table  # noqa: E402

from actedit_ros.editing import GoalPredictor, default_model_is_placeholder  # noqa: E402

INSTRUCTION = "put the red cup in the bowl"


def time_prediction(predictor: GoalPredictor, image: np.ndarray, steps: int, repeats: int) -> list[float]:
    predictor.predict(image, INSTRUCTION, steps=steps, seed=0)  # warm-up: caches text and start latents
    times = []
    for seed in range(repeats):
        if predictor.device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        predictor.predict(image, INSTRUCTION, steps=steps, seed=seed + 1)
        if predictor.device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return times


def cpu_rows(repeats: int = 3) -> list[Row]:
    predictor = GoalPredictor.from_pretrained(None, device="cpu")
    image = np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)
    kind = "placeholder random tiny model" if default_model_is_placeholder() else "embedded default"
    rows = []
    for steps in (10, 20, 50):
        times = time_prediction(predictor, image, steps, repeats)
        median = statistics.median(times)
        target = "<= 1.5 s" if steps == 20 else ""
        meets = (median <= 1.5) if steps == 20 else None
        rows.append(Row(f"goal prediction, {kind}, CPU, {steps} steps", f"{median:.3f} s", target, meets,
                        f"median of {repeats}, 320x240 in, {predictor.resolution} px working, torch threads "
                        f"{torch.get_num_threads()}"))
    return rows


def gpu_rows(repeats: int = 5) -> list[Row]:
    figure = "goal prediction, SD-1.5 InstructPix2Pix, 512 px, 20 steps, fp16 GPU"
    model = os.environ.get("ACTEDIT_SD15_MODEL", "")
    if not torch.cuda.is_available():
        return [Row(figure, "not run", "<= 0.6 s", None, "no CUDA device on this machine")]
    if not model or not Path(model, "model_index.json").is_file():
        return [Row(figure, "not run", "<= 0.6 s", None, "set ACTEDIT_SD15_MODEL to a local diffusers directory")]
    predictor = GoalPredictor.from_pretrained(model, device="cuda", dtype="float16")
    image = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    times = time_prediction(predictor, image, 20, repeats)
    median = statistics.median(times)
    memory = torch.cuda.max_memory_allocated() / 2**30
    return [Row(figure, f"{median:.3f} s", "<= 0.6 s", median <= 0.6,
                f"median of {repeats}, {torch.cuda.get_device_name()}, peak GPU memory {memory:.1f} GiB")]


def rows(gpu_only: bool = False) -> list[Row]:
    return (gpu_rows() if gpu_only else cpu_rows() + gpu_rows())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gpu-only", action="store_true", help="only the SD-1.5 GPU row")
    print_table(rows(parser.parse_args().gpu_only), "goal prediction")
