"""Validation grids: a few held-out pairs edited by the model being trained (EMA weights when on), written as a PNG
with one row per pair: input | prediction | target."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .checkpoints import ema_applied
from .data import DatasetError, EditPairDataset


def validation_sampler(prediction_type: str) -> str:
    """The GoalPredictor sampler used for validation grids: InstructPix2Pix's Euler-ancestral when it supports the
    prediction type, DDIM for x0-prediction."""
    return "ddim" if prediction_type == "sample" else "euler_ancestral"


def validation_pairs(args, resolution: int, size_multiple: int, train_dataset: EditPairDataset):
    """(dataset, indices) of the grid's rows: ``--num-validation-pairs`` pairs spread over the 'test' split, or over
    the training pairs when the dataset has no test split."""
    try:
        dataset = EditPairDataset(args.dataset_dir, resolution, split="test", image_mode=args.image_mode,
                                  size_multiple=size_multiple)
    except DatasetError:
        dataset = train_dataset
    picks = np.linspace(0, len(dataset) - 1, min(args.num_validation_pairs, len(dataset)))
    return dataset, sorted({int(round(i)) for i in picks})


def validate(path: Path, step: int, args, predictor, unet, ema, dataset: EditPairDataset, indices: list[int],
             accelerator) -> None:
    """Edit the validation pairs with ``predictor`` (whose UNet is ``unet``, with the EMA weights when on) and write
    the grid to ``path``; the UNet is back in training mode with its own weights afterwards."""
    with ema_applied(ema, unet):
        unet.eval()
        try:
            rows = []
            for i in indices:
                source, target = dataset.load_pair(i)
                instruction = dataset.pairs[i].instruction
                with accelerator.autocast():
                    predicted = predictor.predict(source, instruction, steps=args.validation_inference_steps,
                                                  text_guidance=args.validation_text_guidance,
                                                  image_guidance=args.validation_image_guidance, seed=0).image
                rows.append((source, predicted, target, instruction))
            write_validation_grid(path, rows, step)
        finally:
            unet.train()


def write_validation_grid(path: Path, rows: list[tuple[np.ndarray, np.ndarray, np.ndarray, str]], step: int) -> None:
    """A PNG with one row per pair: input | prediction | target, the instruction above the row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), 3, figsize=(7.5, 2.6 * len(rows)), squeeze=False)
    for r, (source, predicted, target, instruction) in enumerate(rows):
        for c, (image, label) in enumerate(((source, "input"), (predicted, "prediction"), (target, "target"))):
            axes[r][c].imshow(image)
            axes[r][c].set_xticks([])
            axes[r][c].set_yticks([])
            if r == 0:
                axes[r][c].set_title(label, fontsize=10)
        axes[r][0].set_ylabel(instruction[:40], fontsize=8)
    fig.suptitle(f"validation at step {step}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)

