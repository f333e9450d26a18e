"""How well a model already tells instructions apart: the denoising-error gaps behind the action loss's temperature.

    python -m actedit_ros.training.diagnostics MODEL_DIR DATASET_DIR [--pairs 128] [--image-mode keep-aspect]

For held-out pairs (the dataset's test split, else train) it draws one timestep and noise per pair, computes the
denoising error with the true instruction (e+) and with a negative instruction that shares no word with it (e-, as
the action loss draws them), and reports the gap e- - e+, the diffusion classifier's accuracy (e+ < e-), and the
action loss at several temperatures. A temperature near the typical gap keeps the classifier informative without
saturating it; see :mod:`actedit_ros.training.losses` for the default's measurement.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

import numpy as np
import torch

from .data import IMAGE_MODES, DatasetError, EditPairDataset, NegativeInstructionSampler, collate_pairs, to_model_range
from .losses import action_loss, per_sample_error, prediction_target

TEMPERATURES = (0.001, 0.003, 0.01, 0.03, 0.1)


@dataclass
class GapReport:
    timesteps: np.ndarray  # (n,)
    error_true: np.ndarray  # e+ per pair
    error_negative: np.ndarray  # e- per pair
    loss_by_temperature: dict[float, float]

    @property
    def gap(self) -> np.ndarray:
        return self.error_negative - self.error_true

    @property
    def accuracy(self) -> float:
        return float((self.error_true < self.error_negative).mean())

    def lines(self) -> list[str]:
        q10, q50, q90 = np.quantile(self.gap, [0.1, 0.5, 0.9])
        out = [f"pairs {len(self.gap)}  mean e+ {self.error_true.mean():.5f}  classifier accuracy {self.accuracy:.2f}",
               f"gap e- - e+: 10% {q10:.5f}  median {q50:.5f}  90% {q90:.5f}"]
        for low, high in ((0, 300), (300, 700), (700, 1000)):
            chosen = (self.timesteps >= low) & (self.timesteps < high)
            if chosen.any():
                out.append(f"  t in [{low}, {high}): accuracy {(self.gap[chosen] > 0).mean():.2f}  "
                           f"median gap {np.median(self.gap[chosen]):.5f}")
        out += [f"temperature {t:g}: action loss {loss:.3f} (log 2 = 0.693 is a coin flip)"
                for t, loss in self.loss_by_temperature.items()]
        return out


@torch.no_grad()
def error_gaps(model_dir: str, dataset_dir: str, pairs: int = 128, image_mode: str = "keep-aspect",
               seed: int = 0) -> GapReport:
    """Measure e+ and e- of the model in ``model_dir`` on up to ``pairs`` pairs of ``dataset_dir`` (CPU, float32)."""
    from diffusers import DDPMScheduler

    from actedit_ros.editing import GoalPredictor, load_components

    components = load_components(model_dir, device="cpu", dtype=torch.float32, scheduler=None)
    prediction_type = components.scheduler.config.get("prediction_type", "epsilon")
    noise_scheduler = DDPMScheduler.from_config(components.scheduler.config)
    try:
        held_out = EditPairDataset(dataset_dir, components.resolution, split="test", image_mode=image_mode,
                                   size_multiple=components.size_multiple, max_pairs=pairs)
    except DatasetError:
        held_out = EditPairDataset(dataset_dir, components.resolution, split="train", image_mode=image_mode,
                                   size_multiple=components.size_multiple, max_pairs=pairs)
    pool = EditPairDataset(dataset_dir, components.resolution, split="train", image_mode=image_mode,
                           size_multiple=components.size_multiple).instructions
    negatives = NegativeInstructionSampler(pool)
    predictor = GoalPredictor(components, cache_size=len(set(pool)) + 2)
    embed = lambda texts: predictor.text_embeddings(list(texts))  # noqa: E731
    generator = torch.Generator().manual_seed(seed)
    batch = collate_pairs([held_out[i] for i in range(len(held_out))])
    count = len(held_out)
    distribution = components.vae.encode(
        to_model_range(torch.cat([batch["input_pixels"], batch["edited_pixels"]]))).latent_dist
    image_latents = distribution.mean[:count]
    sample_noise = torch.randn(distribution.mean[count:].shape, generator=generator)
    clean = (distribution.mean[count:] + distribution.std[count:] * sample_noise) * components.vae.config.scaling_factor
    noise = torch.randn(clean.shape, generator=generator)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (count,), generator=generator)
    noisy = noise_scheduler.add_noise(clean, noise, timesteps)
    target = prediction_target(noise_scheduler, clean, noise, timesteps, prediction_type)

    def errors(texts: list[str]) -> torch.Tensor:
        out = components.unet(torch.cat([noisy, image_latents], 1), timesteps, encoder_hidden_states=embed(texts))
        return per_sample_error(out.sample, target)

    error_true = errors(batch["instruction"])
    error_negative = errors(negatives.sample(batch["instruction"], generator))
    losses = {t: float(action_loss(error_true, error_negative, t)) for t in TEMPERATURES}
    return GapReport(timesteps.numpy(), error_true.numpy(), error_negative.numpy(), losses)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", help="diffusers-format model directory")
    parser.add_argument("dataset_dir", help="dataset folder with index.jsonl")
    parser.add_argument("--pairs", type=int, default=128, help="held-out pairs to measure")
    parser.add_argument("--image-mode", choices=IMAGE_MODES, default="keep-aspect", help="as actedit-train's")
    parser.add_argument("--seed", type=int, default=0, help="seed of the timesteps, noise and negatives")
    args = parser.parse_args(argv)
    try:
        report = error_gaps(args.model_dir, args.dataset_dir, args.pairs, args.image_mode, args.seed)
    except (DatasetError, RuntimeError) as err:
        print(f"diagnostics: error: {err}", file=sys.stderr)
        return 2
    print("\n".join(report.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
