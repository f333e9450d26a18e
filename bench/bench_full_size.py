"""The full-size model on this CPU: SD-1.5 InstructPix2Pix, **architecture-identical random weights**.

Speed and memory do not depend on weight values, so these are what the public SD-1.5 InstructPix2Pix checkpoint (or
an EditAction fine-tune of it) costs on a CPU without a GPU. The model is built once in the cache
(``actedit_ros.editing.full_size``, about 4.3 GB; ``ACTEDIT_CACHE`` moves it) and loaded through the project's
loader and GoalPredictor. Every measurement runs in its own process (peak RSS is per process), smallest first:

    python bench/bench_full_size.py            # all CPU rows: prediction 256/512 px x 10/20 steps float32, caches,
                                               # one training step (256 px, batch 1, gradient checkpointing)
    python bench/bench_full_size.py --tiny     # the same with the narrow variant (a quick check of this script)

A prediction expected to exceed ``--max-prediction-seconds`` (900) is not run (the smallest step count always
runs); its time is extrapolated per step from the 1-step and 10-step runs and labelled so. The GPU figures come from ``bench/device_check.sh``.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from table import Row, print_table  # noqa: E402

KIND = "SD-1.5 IP2P, architecture-identical random weights"
DEVICE_COMMAND = "bash bench/device_check.sh --prepare-wheels (here), then bash bench/device_check.sh (GPU machine)"
# The training step keeps UNet weights, gradients, AdamW's two moments and the frozen reference UNet in float32.
TRAIN_MEMORY_UNETS = 5


# ------------------------------------------------------------------------------------------------ worker processes
def predict_worker(size: int, steps: list[int], tiny: bool, max_seconds: float) -> dict:
    import torch

    from actedit_ros.editing import GoalPredictor
    from actedit_ros.editing.full_size import ensure_model
    from full_size_measure import INSTRUCTION, cache_savings, peak_rss_mib, start_image

    model = ensure_model(tiny=tiny)
    started = time.perf_counter()
    predictor = GoalPredictor.from_pretrained(str(model), device="cpu", dtype="float32")
    loaded = time.perf_counter() - started
    predictor.resolution = size
    image = start_image(size)

    def once(n: int) -> float:
        result = predictor.predict(image, INSTRUCTION, steps=n, seed=n)
        return result.seconds

    cold = once(1)  # caches empty: includes the text and VAE encoders
    one = once(1)
    times, extrapolated = {}, {}
    per_step = one  # an upper bound until two step counts are measured
    for n in sorted(steps):
        last = max(times, default=1)
        estimate = times.get(last, one) + (n - last) * per_step
        if times and estimate > max_seconds:  # the smallest step count always runs
            extrapolated[n] = estimate
            continue
        times[n] = once(n)
        per_step = (times[n] - one) / (n - 1) if n > 1 else per_step
    text, vae = cache_savings(predictor, size)
    return {"size": size, "load_seconds": loaded, "cold_1_step": cold, "warm_1_step": one, "seconds": times,
            "extrapolated": extrapolated, "per_step": per_step, "cache_text": text, "cache_vae": vae,
            "peak_rss_mib": peak_rss_mib(), "threads": torch.get_num_threads()}


def train_worker(size: int, batch: int, tiny: bool, steps: int) -> dict:
    import torch

    from actedit_ros.editing.full_size import ensure_model
    from full_size_measure import training_step

    result = training_step(ensure_model(tiny=tiny), size, batch, mixed_precision="no", gradient_checkpointing=True,
                           steps=steps)
    return {**result, "threads": torch.get_num_threads()}


# ------------------------------------------------------------------------------------------------ orchestration
def load_average() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


KEEP_RESULTS = os.environ.get("ACTEDIT_BENCH_KEEP")  # a folder: each job's raw JSON is also written there


def run_job(argv: list[str], timeout: float) -> tuple[dict | None, str]:
    """Run one worker in its own process; returns (its JSON result or None, load averages before -> after + note)."""
    before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-full-size-") as tmp:
        out = Path(tmp) / "result.json"
        print(f"[bench_full_size] {' '.join(argv)} (load {before}) ...", file=sys.stderr, flush=True)
        try:
            done = subprocess.run([sys.executable, __file__, *argv, "--json", str(out)], timeout=timeout,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            note = "" if done.returncode == 0 else f"; exit {done.returncode}: {done.stderr.strip()[-300:]}"
        except subprocess.TimeoutExpired:
            note = f"; timed out after {timeout:.0f} s"
        result = json.loads(out.read_text()) if out.is_file() else None
    load = f"load average (1/5/15 min) {before} before, {load_average()} after{note}"
    if KEEP_RESULTS:
        Path(KEEP_RESULTS).mkdir(parents=True, exist_ok=True)
        record = {"argv": argv, "result": result, "load": load, "finished": time.strftime("%Y-%m-%d %H:%M:%S")}
        (Path(KEEP_RESULTS) / ("_".join(argv[:3]) + ".json")).write_text(json.dumps(record, indent=2) + "\n")
    return result, load


def prediction_rows(result: dict | None, size: int, steps: list[int], load: str, tiny: bool) -> list[Row]:
    label = f"{KIND}{' (tiny variant)' if tiny else ''}, CPU float32, {size} px"
    if result is None:
        return [Row(f"goal prediction, {label}", "not run", "", None, load)]
    rows = []
    for n in steps:
        if str(n) in result["seconds"]:
            value, how = f"{result['seconds'][str(n)]:.1f} s", "1 run after 1-step warm-ups"
        else:
            value = f"~{result['extrapolated'][str(n)]:.0f} s (extrapolated)"
            how = (f"NOT measured: extrapolated from the measured runs at {result['per_step']:.1f} s per step "
                   f"(1 step {result['warm_1_step']:.1f} s)")
        rows.append(Row(f"goal prediction, {label}, {n} steps", value, "", None,
                        f"{how}; {result['threads']} torch threads; {load}"))
    rows.append(Row(f"peak resident memory, goal prediction, {label}", f"{result['peak_rss_mib'] / 1024:.1f} GiB",
                    "", None, f"VmHWM of the process (model loaded in {result['load_seconds']:.0f} s, float32)"))
    saved = result["cache_text"] + result["cache_vae"]
    rows.append(Row(f"caches, {label}: time saved per repeated request", f"{saved:.2f} s", "", None,
                    f"text encoder {result['cache_text']:.3f} s + VAE encoder {result['cache_vae']:.2f} s skipped "
                    f"when the instruction and start frame repeat (cold 1-step prediction "
                    f"{result['cold_1_step']:.1f} s vs warm {result['warm_1_step']:.1f} s)"))
    return rows


def training_rows(result: dict | None, size: int, load: str, tiny: bool) -> list[Row]:
    label = (f"training step, {KIND}{' (tiny variant)' if tiny else ''}, CPU float32, {size} px, batch 1, "
             f"full EditAction objective, gradient checkpointing")
    if result is None:
        return [Row(label, "not run", "", None, load)]
    seconds = result["seconds"]
    return [Row(label, f"{seconds[-1]:.1f} s", "", None,
                f"step {len(seconds)} of {len(seconds)} (first {seconds[0]:.1f} s); peak RSS "
                f"{result['peak_rss_mib'] / 1024:.1f} GiB; {result['trainable_parameters'] / 1e6:.1f} M trainable "
                f"(cross-attention frozen), AdamW, regularizer's reference UNet; {result['threads']} torch threads; "
                f"{load}")]


def free_memory_for_training(tiny: bool) -> str | None:
    """None when there is room for the training step, else why not (it would push others out of memory)."""
    import psutil

    from actedit_ros.editing.full_size import SD15_PARAMETERS

    needed = (TRAIN_MEMORY_UNETS * SD15_PARAMETERS["unet"] * 4 + 2 * 2**30) / 2**30
    available = psutil.virtual_memory().available / 2**30
    if not tiny and available < needed:
        return f"not run: needs about {needed:.0f} GiB, {available:.1f} GiB available"
    return None


def gpu_row() -> Row:
    import torch

    figure = f"goal prediction, {KIND}, 512 px, 20 steps, fp16 GPU (and bf16, compile, training)"
    if not torch.cuda.is_available():
        return Row(figure, "not run (no GPU here)", "<= 0.3 s", None, f"command: {DEVICE_COMMAND}")
    return Row(figure, "see bench/device_check.sh", "<= 0.3 s", None,
               f"CUDA is available: run {DEVICE_COMMAND.split(', then ')[-1]} for the GPU table")


def rows(tiny: bool = False, max_prediction_seconds: float = 900, timeout: float = 3600) -> list[Row]:
    result_rows = []
    steps = [10, 20]
    for size in (64, 128) if tiny else (256, 512):
        result, load = run_job(["predict", "--size", str(size), "--steps", *map(str, steps),
                                "--max-seconds", str(max_prediction_seconds)] + ["--tiny"] * tiny, timeout)
        result_rows += prediction_rows(result, size, steps, load, tiny)
    size = 64 if tiny else 256
    refusal = free_memory_for_training(tiny)
    if refusal:
        result_rows += [Row(f"training step, {KIND}, CPU float32, {size} px, batch 1", "not run", "", None, refusal)]
    else:
        result, load = run_job(["train", "--size", str(size), "--batch", "1"] + ["--tiny"] * tiny, timeout)
        result_rows += training_rows(result, size, load, tiny)
    return result_rows + [gpu_row()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("job", nargs="?", choices=["predict", "train"], help="(internal) run one measurement")
    parser.add_argument("--tiny", action="store_true", help="the narrow variant of the model")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--train-steps", type=int, default=2, help="optimizer steps of the training job")
    parser.add_argument("--max-seconds", "--max-prediction-seconds", dest="max_seconds", type=float, default=900,
                        help="longest prediction to run; longer ones are extrapolated")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per measurement process")
    parser.add_argument("--json", type=Path, help="(internal) where a job writes its result")
    args = parser.parse_args(argv)
    if args.job == "predict":
        result = predict_worker(args.size, args.steps, args.tiny, args.max_seconds)
    elif args.job == "train":
        result = train_worker(args.size, args.batch, args.tiny, args.train_steps)
    else:
        print_table(rows(args.tiny, args.max_seconds, args.timeout), "full-size model (CPU)")
        return 0
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
