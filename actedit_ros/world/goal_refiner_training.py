"""The refiner stage of the default-model recipe: train the goal refiner (``editing/goal_refiner.py``) on world pairs.

Input: the start frame and a decoded goal, both at twice the working size: the model VAE's own reconstruction of
the true end frame with jittered latents (Gaussian noise, and some pulled part of the way back to the start frame's
latents). Optionally (``editor_share``) part of each batch is instead the editor's own goals for training episodes
(:func:`editor_goals`) where the pixel readout finds the true end state in them. Measured (README, "The goal
refiner"): those buy PSNR but the refiner learns to hedge toward the start frame where the editor's change is
uncertain, and 9 points of action accuracy go, so the shipped recipe uses none. Target: the true end frame. The refiner is fully convolutional, so it trains on random crops. The VAE stays frozen and the UNet is not
involved, so this stage can be trained (or retrained) for any finished model. Resumes from
``<out_dir>/checkpoint`` like the VAE stages; ends with ``<out_dir>/goal_refiner`` and ``metrics.json``.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np

from .episode import REGIMES, generate_episode
from .vae_training import _optimise

log = logging.getLogger("actedit_ros.world.refiner_training")

HELD_OUT_PAIRS = 128


def world_pairs(size: tuple[int, int], count: int, split: str, first_seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(start, end) frames, RGB uint8 (count, h, w, 3), of ``count`` episodes of ``split`` rendered at ``size``,
    alternating camera regimes."""
    starts, ends = [], []
    for i in range(count):
        ep = generate_episode(first_seed + i // len(REGIMES), REGIMES[i % len(REGIMES)], split, size=size,
                              num_frames=2)
        starts.append(ep.frames[0])
        ends.append(ep.frames[-1])
    return np.stack(starts), np.stack(ends)


def editor_goals(model_dir: Path, working: tuple[int, int], count: int, out_dir: Path, chunk: int = 200,
                 steps: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """The model's own decoded goals (RGB uint8 at its ``working`` size) for the first ``count`` episodes of
    :func:`world_pairs` at the refiner's size (each with its own instruction, seed = its index, refiner off), and
    whether the pixel readout finds the true end state in each (judged at the refiner's size). Written in chunks
    to ``out_dir`` and reused, so an interrupted run goes on where it stopped."""
    from tqdm import tqdm

    from actedit_ros.editing import GoalPredictor
    from actedit_ros.editing.goal_refiner import refine_size

    from .readout import EndStateReadout

    size = refine_size(working, 2)
    predictor = None
    goals, correct = [], []
    out_dir.mkdir(parents=True, exist_ok=True)
    for first in tqdm(range(0, count, chunk), desc="editor goals", unit="chunk"):
        path = out_dir / f"goals_{first:06d}_{chunk}.npz"
        if not path.exists():
            predictor = predictor or GoalPredictor.from_pretrained(str(model_dir), device="cpu")
            part_goals, part_correct = [], []
            for i in range(first, min(first + chunk, count)):
                ep = generate_episode(i // len(REGIMES), REGIMES[i % len(REGIMES)], "train", size=size, num_frames=2)
                start = cv2.resize(ep.frames[0], working, interpolation=cv2.INTER_AREA)
                goal = predictor.predict(start, ep.instruction, steps=steps, seed=i, refine=False).images[0]
                part_goals.append(goal)
                read = EndStateReadout(ep).read(cv2.resize(goal, size, interpolation=cv2.INTER_CUBIC))
                part_correct.append(read.correct)
            tmp = path.with_name(path.stem + ".tmp.npz")
            np.savez(tmp, goals=np.stack(part_goals), correct=np.array(part_correct))
            tmp.rename(path)
        with np.load(path) as part:
            goals.append(part["goals"])
            correct.append(part["correct"])
    return np.concatenate(goals), np.concatenate(correct)


class RefinerData:
    """What the refiner trains on: world pairs at its size, their latents under the frozen VAE, and (optionally)
    the editor's own goals for the first of them, used where the readout found the true end state in them."""

    def __init__(self, vae, working: tuple[int, int], size: tuple[int, int], num_pairs: int, held_out: int,
                 latent_noise: float, editor: tuple[np.ndarray, np.ndarray] | None = None,
                 pull: tuple[float, float] = (0.3, 0.4)):
        import torch

        from actedit_ros.editing.goal_refiner import to_unit

        self.vae, self.size, self.latent_noise, self.pull = vae, size, latent_noise, pull
        starts, ends = world_pairs(size, num_pairs, "train")
        with torch.no_grad():
            small = lambda frames: to_unit(np.stack([cv2.resize(f, working, interpolation=cv2.INTER_AREA)  # noqa
                                                     for f in frames]))
            encode = lambda frames: torch.cat([vae.encode(small(frames[i:i + 256])).latent_dist.mode()  # noqa
                                               for i in range(0, len(frames), 256)])
            self.start_z, self.end_z = encode(starts), encode(ends)
        self.start_x, self.end_x = to_unit(starts), to_unit(ends)
        self.train_count = num_pairs - held_out
        self.held = torch.arange(self.train_count, num_pairs)
        self.editor_x, self.editor_train, self.editor_held = None, None, None
        if editor is not None:
            goals, correct = editor
            self.editor_x = to_unit(np.stack([cv2.resize(g, size, interpolation=cv2.INTER_CUBIC) for g in goals]))
            accepted = np.flatnonzero(correct[:min(len(goals), self.train_count)])
            split = int(len(accepted) * 0.9)  # the last tenth of the accepted editor goals is held out
            self.editor_train, self.editor_held = torch.from_numpy(accepted[:split]), torch.from_numpy(accepted[split:])

    def soft_goal(self, idx, generator):
        """The VAE's decode of jittered end latents (noise, and in a share ``pull[0]`` of the draws pulled back
        toward the start frame's by up to ``pull[1]`` of the way), upsampled to the refiner's size as the pipeline
        does."""
        import torch

        n = len(idx)
        share, most = self.pull
        pull = torch.rand((n, 1, 1, 1), generator=generator) * (torch.rand((n, 1, 1, 1), generator=generator) < share)
        z = self.end_z[idx] + most * pull * (self.start_z[idx] - self.end_z[idx])
        z = z + self.latent_noise * torch.rand((n, 1, 1, 1), generator=generator) * torch.randn(z.shape,
                                                                                                generator=generator)
        with torch.no_grad():
            decoded = self.vae.decode(z).sample.clamp(-1, 1)
        return torch.nn.functional.interpolate(decoded, size=self.size[::-1], mode="bicubic", align_corners=False)

    def batch(self, batch_size: int, generator, editor_share: float):
        """(input goal, start, end) of a batch: ``editor_share`` of it from accepted editor goals (when there are
        any), the rest from jittered VAE reconstructions."""
        import torch

        n_editor = int(round(batch_size * editor_share)) if self.editor_train is not None else 0
        idx = torch.randint(0, self.train_count, (batch_size - n_editor,), generator=generator)
        goal = self.soft_goal(idx, generator)
        if n_editor:
            pick = self.editor_train[torch.randint(0, len(self.editor_train), (n_editor,), generator=generator)]
            idx, goal = torch.cat([idx, pick]), torch.cat([goal, self.editor_x[pick]])
        return goal, self.start_x[idx], self.end_x[idx]


def train_goal_refiner(vae, working: tuple[int, int], out_dir: Path, steps: int, batch_size: int = 16,
                       crop: tuple[int, int] = (96, 72), lr: float = 1e-3, seed: int = 0, checkpoint_every: int = 250,
                       num_pairs: int = 8000, latent_noise: float = 0.15, stop_at: int | None = None,
                       editor: tuple[np.ndarray, np.ndarray] | None = None, editor_share: float = 0.5,
                       pull: tuple[float, float] = (0.3, 0.4)) -> dict:
    """Train a goal refiner for a model with this VAE (an AutoencoderKL, kept frozen) and ``working`` size (width,
    height) on ``num_pairs`` world pairs (a quarter of them, at most 128, held out), and on the editor's own goals
    when ``editor`` gives them (:func:`editor_goals`; ``editor_share`` of each batch); ``pull``: (share of draws,
    largest fraction) of end latents pulled back toward the start's. Returns its metrics."""
    import torch

    from actedit_ros.editing.goal_refiner import GoalRefiner, refine_size

    done_file = out_dir / "metrics.json"
    if done_file.exists():
        return json.loads(done_file.read_text())
    vae = vae.float().eval().requires_grad_(False)
    with torch.random.fork_rng():  # a seeded start, whatever ran before
        torch.manual_seed(seed)
        refiner = GoalRefiner()
    size = refine_size(working, refiner.scale)
    crop = (min(crop[0], size[0]), min(crop[1], size[1]))
    data = RefinerData(vae, working, size, num_pairs, min(HELD_OUT_PAIRS, max(1, num_pairs // 4)), latent_noise,
                       editor, pull)

    def batch_loss(generator):
        goal, start, end = data.batch(batch_size, generator, editor_share)
        top = int(torch.randint(0, (size[1] - crop[1]) // 4 + 1, (1,), generator=generator)) * 4
        left = int(torch.randint(0, (size[0] - crop[0]) // 4 + 1, (1,), generator=generator)) * 4
        window = (slice(None), slice(None), slice(top, top + crop[1]), slice(left, left + crop[0]))
        out = refiner(goal[window], start[window])
        return (out - end[window]).abs().mean() + (out - end[window]).pow(2).mean()

    if not _optimise(refiner, list(refiner.parameters()), batch_loss, steps, lr, seed, out_dir, "goal refiner",
                     checkpoint_every, stop_at):
        return {"done": False}
    refiner.eval()
    refiner.save(out_dir / "goal_refiner")
    metrics = {"steps": steps, "size": list(size), "held_out_pairs": len(data.held),
               "held_out_psnr_db": _held_out_psnr(refiner, data, data.held, data.soft_goal(
                   data.held, torch.Generator().manual_seed(seed)))}
    if data.editor_held is not None and len(data.editor_held):
        metrics["held_out_editor_goals"] = len(data.editor_held)
        metrics["held_out_editor_psnr_db"] = _held_out_psnr(refiner, data, data.editor_held,
                                                            data.editor_x[data.editor_held])
    done_file.write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _held_out_psnr(refiner, data: RefinerData, idx, goal) -> dict:
    """PSNR (dB) to the true end frames of the input goals, of their refinements and of the start frames."""
    import torch

    with torch.no_grad():
        refined = refiner(goal, data.start_x[idx]).clamp(-1, 1)
    psnr = lambda x: float(10 * np.log10(1.0 / float(((x - data.end_x[idx]) / 2).pow(2).mean())))  # noqa: E731
    return {"decoded_goal": psnr(goal), "refined": psnr(refined), "start_frame": psnr(data.start_x[idx])}
