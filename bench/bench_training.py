"""actedit-train step time on CPU for the small default model (issue 3/6: about 1 s per step at batch 32).

Run it on an otherwise idle machine: on a busy one, torch threads wait on each other and times double.

    python bench/bench_training.py                  # prints its own table (about two minutes on an idle machine)
    python bench/bench_training.py --steps 20 --threads 2

What runs: ``actedit-train`` in this process, on a random-init UNet with the embedded default's architecture
(``actedit_ros.world.train_default.UNET_CONFIG``, 64x48 images -> 12x16 latents, the packaged all-MiniLM-L6-v2 text
encoder, x0-prediction), batch 32, float32, ``--cache-latents``, on a synthetic dataset written to a temporary
folder. Three objectives: the static diffusion loss only; plus the action loss (a second UNet forward for the
negative instructions); plus the regularizer (a no-grad forward of the frozen reference UNet). The figure is the
median wall time of an optimizer step after the first epoch (latents cached, instructions encoded).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from table import Row, print_table  # noqa: E402

# name: (flags, target seconds). The brief's ~1 s is for the plain objective; the action loss runs the UNet forward
# and backward a second time (negatives), the regularizer adds one forward without gradients (~1/3 of a step).
OBJECTIVES = {
    "diffusion loss only": (["--action-loss-weight", "0", "--regularizer-weight", "0"], 1.0),
    "+ action loss": (["--action-loss-weight", "0.01", "--regularizer-weight", "0"], 2.0),
    "+ action loss + regularizer": (["--action-loss-weight", "0.01", "--regularizer-weight", "0.1"], 2.4),
}


def write_model(folder: Path) -> Path:
    """A starting model directory with the default model's VAE/UNet architecture (random weights)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    from actedit_ros.editing.tiny import write_model_index
    from actedit_ros.world.train_default import RESOLUTION, SCHEDULER_CONFIG, TEXT_ENCODER_PACKAGE, UNET_CONFIG
    from actedit_ros.world.vae_training import FIXED_VAE_CONFIG as VAE_CONFIG

    torch.manual_seed(0)
    AutoencoderKL(**VAE_CONFIG).save_pretrained(folder / "vae", safe_serialization=True)
    UNet2DConditionModel(**UNET_CONFIG).save_pretrained(folder / "unet", safe_serialization=True)
    (folder / "unet_config.json").write_text(json.dumps(UNET_CONFIG))
    DDIMScheduler(**SCHEDULER_CONFIG).save_pretrained(folder / "scheduler")
    write_model_index(folder, scheduler="DDIMScheduler", resolution=RESOLUTION,
                      text_encoder_package=TEXT_ENCODER_PACKAGE)
    return folder


def write_dataset(folder: Path, pairs: int) -> Path:
    """Coloured squares moved by the instruction, 64x48."""
    rng = np.random.default_rng(0)
    colours = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (220, 220, 30)}
    moves = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
    (folder / "images").mkdir(parents=True)
    rows = []
    for i in range(pairs):
        colour, move = rng.choice(list(colours)), rng.choice(list(moves))
        before = np.full((48, 64, 3), 128, np.uint8)
        after = before.copy()
        x, y = int(rng.integers(12, 40)), int(rng.integers(12, 24))
        dx, dy = (8 * v for v in moves[move])
        cv2.rectangle(before, (x, y), (x + 8, y + 8), colours[colour], -1)
        cv2.rectangle(after, (x + dx, y + dy), (x + 8 + dx, y + 8 + dy), colours[colour], -1)
        for tag, image in (("a", before), ("b", after)):
            cv2.imwrite(str(folder / f"images/{i}{tag}.png"), image[..., ::-1])
        rows.append({"id": str(i), "input_image": f"images/{i}a.png", "edited_image": f"images/{i}b.png",
                     "instruction": f"move the {colour} square {move}", "video": str(i), "split": "train"})
    (folder / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def step_seconds(model: Path, dataset: Path, out: Path, flags: list[str], steps: int, batch: int,
                 threads: int) -> list[float]:
    from actedit_ros.training.train import build_parser, train

    args = build_parser().parse_args([
        "--pretrained-model", str(model), "--unet-config", str(model / "unet_config.json"),
        "--dataset-dir", str(dataset), "--output-dir", str(out), "--image-mode", "keep-aspect",
        "--prediction-type", "sample", "--train-batch-size", str(batch), "--max-train-steps", str(steps),
        "--checkpointing-steps", "0", "--validation-steps", "0", "--num-validation-pairs", "1",
        "--validation-inference-steps", "1", "--cache-latents", "--num-threads", str(threads), "--no-progress",
        *flags])
    train(args)
    metrics = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    return [m["seconds"] for m in metrics]


def rows(steps: int = 12, batch: int = 32, threads: int = 1) -> list[Row]:
    result = []
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        root = Path(tmp)
        model = write_model(root / "model")
        pairs = 2 * batch  # two batches per epoch: every step after the first two runs on cached latents
        dataset = write_dataset(root / "data", pairs)
        for name, (flags, target) in OBJECTIVES.items():
            seconds = step_seconds(model, dataset, root / name.replace(" ", "_"), flags, steps, batch, threads)
            warm = seconds[2:]
            median = statistics.median(warm)
            result.append(Row(f"train step, {name} (batch {batch}, {threads} thread{'s' * (threads > 1)})",
                              f"{median:.2f} s", f"<= {target:.1f} s", median <= target,
                              f"min {min(warm):.2f} s over {len(warm)} steps; first epoch {max(seconds[:2]):.2f} s"))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per objective (the first two are "
                                                               "not counted)")
    parser.add_argument("--batch", type=int, default=32, help="pairs per step")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    print_table(rows(args.steps, args.batch, args.threads), "actedit-train step time (CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
