"""actedit-train: fine-tune an InstructPix2Pix UNet with the EditAction objective (or train a small one from scratch).

Runs the same on a laptop CPU (float32) and on GPUs via HF accelerate::

    actedit-train --pretrained-model /models/instruct-pix2pix --dataset-dir data/epic --output-dir runs/editaction
    accelerate launch --multi_gpu --num_processes 8 -m actedit_ros.training.train --mixed-precision bf16 ...

The output directory ends up holding a diffusers-format model (unet/, vae/, text_encoder/, tokenizer/, scheduler/,
model_index.json - what ``GoalPredictor.from_pretrained`` loads) with ``training_config.json`` (every flag) beside it,
plus ``checkpoints/checkpoint-<step>/`` (accelerate state: model and EMA as safetensors, optimizer, LR scheduler, RNG),
``validation/step-<step>.png`` grids (input | prediction | target) and ``logs/metrics.jsonl`` (one line per step).

Exact resume: every random draw of a step (flips, conditioning dropout, negative instructions, timesteps, noise,
VAE latent samples) comes from a generator seeded by (seed, process, micro-batch number), and the data order is a
permutation seeded by (seed, epoch), so ``--resume-from-checkpoint latest`` continues bit-for-bit where the
checkpoint was taken.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from .data import (DEFAULT_IGNORED_WORDS, IMAGE_MODES, DatasetError, EditPairDataset, NegativeInstructionSampler,
                   collate_pairs, mirror_instruction, to_model_range)
from .losses import (PREDICTION_TYPES, LossWeights, editaction_objective, freeze_cross_attention, min_snr_weights,
                     prediction_target)

log = logging.getLogger("actedit_ros.training")

CHECKPOINTS_DIR = "checkpoints"
CONFIG_NAME = "training_config.json"
EMA_DIR = "unet_ema"
STATE_NAME = "training_state.json"
# Flags that may change between a run and its resumption without changing what is trained.
RESUME_NEUTRAL_FLAGS = {"resume_from_checkpoint", "stop_at_step", "num_threads", "no_progress", "dataloader_workers",
                        "checkpointing_steps", "checkpoints_total_limit", "export_with_checkpoints", "validation_steps",
                        "num_validation_pairs", "validation_inference_steps", "validation_text_guidance",
                        "validation_image_guidance", "text_cache_size", "output_dir", "cache_latents"}


class TrainingError(RuntimeError):
    """A training run cannot start or continue; the message says why."""


# ----------------------------------------------------------------------------------------------------------- flags
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actedit-train", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train an InstructPix2Pix/EditAction goal-image model with the EditAction objective "
                    "(static diffusion loss + action loss + regularizer to the initial UNet). Runs under "
                    "`accelerate launch` for multi-GPU; plain `actedit-train` runs on one device (CPU: float32).")
    model = parser.add_argument_group("model")
    model.add_argument("--pretrained-model", default="default",
                       help="diffusers-format InstructPix2Pix/EditAction directory to start from (8-channel UNet), a "
                            "plain SD-1.5 directory (4-channel UNet: conv_in is widened to 8 channels, the 4 new ones "
                            "zero-initialised), or 'default' for the embedded default model. Its VAE, text encoder, "
                            "tokenizer and noise schedule are always used (frozen).")
    model.add_argument("--unet-config", default=None,
                       help="JSON config of a UNet2DConditionModel to initialise at random (seeded by --seed) instead "
                            "of the pretrained UNet; in_channels must be 2x the VAE's latent channels and "
                            "cross_attention_dim the text encoder's hidden size")
    model.add_argument("--output-dir", required=True,
                       help="where the trained model, training_config.json, checkpoints, validation grids and logs go")
    model.add_argument("--prediction-type", choices=PREDICTION_TYPES, default=None,
                       help="what the UNet predicts: the noise (epsilon), the velocity (v_prediction) or the clean "
                            "latents (sample = x0-prediction, fastest to converge for small models trained from "
                            "scratch). Default: the pretrained model's scheduler setting. Saved in the exported "
                            "scheduler config, so inference follows it")

    data = parser.add_argument_group("data")
    data.add_argument("--dataset-dir", required=True,
                      help="dataset folder with index.jsonl (written by actedit-make-dataset or the world's writer); "
                           "the 'train' split is trained on, the 'test' split gives the validation pairs")
    data.add_argument("--resolution", type=int, default=None,
                      help="training resolution in pixels (square side in 'crop' mode, about sqrt(width*height) in "
                           "'keep-aspect' mode). Default: the model's own resolution")
    data.add_argument("--image-mode", choices=IMAGE_MODES, default="crop",
                      help="'crop': resize keeping aspect so the image covers the square, then centre-crop "
                           "(InstructPix2Pix's training); 'keep-aspect': resize the whole image to the size inference "
                           "works at (all images must share one aspect ratio)")
    data.add_argument("--random-flip", action="store_true",
                      help="flip half of the pairs horizontally (both images) and swap left/right in their "
                           "instructions. Off by default because instructions name directions")
    data.add_argument("--max-train-pairs", type=int, default=None, help="use only the first N training pairs")
    data.add_argument("--cache-latents", action="store_true",
                      help="keep every image's VAE latent distribution (mean, std) in memory after its first use, so "
                           "later epochs skip the VAE encoder (the frozen VAE gives the same values; noise and "
                           "conditioning dropout are still drawn every step). Costs 2 x 2 x latent size floats per "
                           "pair: worth it for small models and datasets, not for SD-1.5 on large ones")
    data.add_argument("--dataloader-workers", type=int, default=0,
                      help="DataLoader worker processes decoding images (0 = in the training process)")

    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--train-batch-size", type=int, default=16, help="pairs per device per micro-batch")
    optim.add_argument("--max-train-steps", type=int, default=1000,
                       help="optimizer steps in total (a resumed run continues up to this number)")
    optim.add_argument("--gradient-accumulation-steps", type=int, default=1,
                       help="micro-batches whose gradients are summed before each optimizer step")
    optim.add_argument("--learning-rate", type=float, default=1e-4,
                       help="AdamW learning rate (InstructPix2Pix fine-tuning uses 5e-5..1e-4; a small UNet from "
                            "scratch with x0-prediction trains well at 1e-3)")
    optim.add_argument("--lr-scheduler", default="constant",
                       choices=["constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts",
                                "polynomial"],
                       help="learning-rate schedule (diffusers.optimization.get_scheduler)")
    optim.add_argument("--lr-warmup-steps", type=int, default=0, help="warm-up optimizer steps of the LR schedule")
    optim.add_argument("--adam-beta1", type=float, default=0.9, help="AdamW beta1")
    optim.add_argument("--adam-beta2", type=float, default=0.999, help="AdamW beta2")
    optim.add_argument("--adam-weight-decay", type=float, default=1e-2, help="AdamW decoupled weight decay")
    optim.add_argument("--adam-epsilon", type=float, default=1e-8, help="AdamW epsilon")
    optim.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping norm (0 = no clipping)")
    optim.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"], default=None,
                       help="autocast precision on GPU (default: accelerate's config, i.e. 'no'); the frozen VAE, "
                            "text encoder and reference UNet are held in that precision. CPU runs use 'no'")
    optim.add_argument("--gradient-checkpointing", action="store_true",
                       help="recompute UNet activations in the backward pass (less memory, ~30%% slower)")
    optim.add_argument("--use-ema", action="store_true",
                       help="keep an exponential moving average of the UNet weights; the exported model and the "
                            "validation images use the EMA weights")
    optim.add_argument("--ema-decay", type=float, default=0.999,
                       help="EMA decay (diffusers EMAModel: ramps up as (1+step)/(10+step) to this value)")
    optim.add_argument("--stop-at-step", type=int, default=None,
                       help="end this invocation after this optimizer step (checkpoint saved, model exported) without "
                            "changing the run's schedule, which --max-train-steps defines; continue later with "
                            "--resume-from-checkpoint latest. For training in slices on a shared machine")
    optim.add_argument("--num-threads", type=int, default=None,
                       help="CPU threads for torch (default: torch's choice). On a busy shared machine 1 can be faster")
    optim.add_argument("--seed", type=int, default=0,
                       help="seeds the data order, every per-step random draw and a random-init UNet")

    loss = parser.add_argument_group("EditAction objective")
    loss.add_argument("--diffusion-loss-weight", type=float, default=1.0,
                      help="weight of the static diffusion loss (0 switches it off)")
    loss.add_argument("--action-loss-weight", type=float, default=0.01,
                      help="weight of the action loss (0 switches it off). With the default temperature 0.01 the "
                           "action loss's gradient on the errors is ~0.5/T = 50x the diffusion loss's, so 0.01 makes "
                           "the two comparable (weight/T ~ 1)")
    loss.add_argument("--action-temperature", type=float, default=0.01,
                      help="temperature of the diffusion classifier p(c+|x) = softmax(-[e+, e-]/T)[0], in units of the "
                           "per-element mean squared error. Smaller is sharper; 1/(latent elements) would be the "
                           "likelihood-exact value and saturates. 0.01 sits at the measured error gaps of a "
                           "partly trained model (median 0.002, 90th percentile 0.017): informative, not saturated")
    loss.add_argument("--regularizer-weight", type=float, default=None,
                      help="weight of the MSE between the UNet's prediction and the frozen initial UNet's (0 switches "
                           "it off). Default: 0.1 when starting from pretrained weights, 0 for a random-init UNet "
                           "(pulling towards random weights only hurts)")
    loss.add_argument("--snr-gamma", type=float, default=None,
                      help="min-SNR-gamma weighting of the diffusion loss (e.g. 5.0); default: unweighted")
    loss.add_argument("--cross-attention", choices=["auto", "frozen", "trainable"], default="auto",
                      help="the UNet's text cross-attention (attn2) layers: 'frozen' as the paper does when "
                           "fine-tuning, 'trainable' to unfreeze; 'auto' = frozen when starting from pretrained "
                           "weights, trainable for a random-init UNet (frozen random layers cannot learn the text)")
    loss.add_argument("--negative-ignore-words", default=",".join(DEFAULT_IGNORED_WORDS),
                      help="comma-separated words ignored when picking a negative instruction that 'shares no token' "
                           "with the true one (empty string = strict: no shared word at all)")

    cfg = parser.add_argument_group("classifier-free guidance (conditioning dropout as InstructPix2Pix)")
    cfg.add_argument("--drop-text-prob", type=float, default=0.05,
                     help="probability that only the instruction is replaced by the empty prompt")
    cfg.add_argument("--drop-image-prob", type=float, default=0.05,
                     help="probability that only the input-image latents are zeroed")
    cfg.add_argument("--drop-both-prob", type=float, default=0.05,
                     help="probability that both are dropped (InstructPix2Pix: 5%% each of text, image, both)")

    ckpt = parser.add_argument_group("checkpoints, validation, logs")
    ckpt.add_argument("--checkpointing-steps", type=int, default=500,
                      help="save a resumable checkpoint every N optimizer steps (and at the end)")
    ckpt.add_argument("--checkpoints-total-limit", type=int, default=3,
                      help="keep at most this many checkpoints (oldest removed first; 0 = keep all)")
    ckpt.add_argument("--resume-from-checkpoint", default=None,
                      help="'latest' or a checkpoint directory to continue from exactly (step, weights, optimizer, "
                           "LR schedule, EMA, data position); 'latest' with no checkpoint starts afresh")
    ckpt.add_argument("--export-with-checkpoints", action="store_true",
                      help="also write the diffusers-format model to --output-dir at every checkpoint (not only at "
                           "the end), so a long run can be evaluated while it trains")
    ckpt.add_argument("--validation-steps", type=int, default=250,
                      help="write a validation grid every N optimizer steps (0 = only at the end)")
    ckpt.add_argument("--num-validation-pairs", type=int, default=4, help="rows of the validation grid")
    ckpt.add_argument("--validation-inference-steps", type=int, default=20, help="sampler steps for validation")
    ckpt.add_argument("--validation-text-guidance", type=float, default=7.5, help="text guidance for validation")
    ckpt.add_argument("--validation-image-guidance", type=float, default=1.5, help="image guidance for validation")
    ckpt.add_argument("--text-cache-size", type=int, default=4096,
                      help="instruction embeddings kept in memory (the text encoder is frozen, so each distinct "
                           "instruction is encoded once)")
    ckpt.add_argument("--no-progress", action="store_true", help="no tqdm progress bar (logs only)")
    return parser


def check_args(args: argparse.Namespace) -> None:
    """Reject inconsistent flags with a message naming them."""
    positive = ["train_batch_size", "max_train_steps", "gradient_accumulation_steps", "num_validation_pairs",
                "validation_inference_steps", "text_cache_size"]
    for name in positive:
        if getattr(args, name) <= 0:
            raise TrainingError(f"--{name.replace('_', '-')} must be > 0, got {getattr(args, name)}")
    if args.learning_rate <= 0:
        raise TrainingError(f"--learning-rate must be > 0, got {args.learning_rate}")
    for name in ("checkpointing_steps", "validation_steps", "checkpoints_total_limit", "lr_warmup_steps",
                 "dataloader_workers", "diffusion_loss_weight", "action_loss_weight", "max_grad_norm"):
        if getattr(args, name) < 0:
            raise TrainingError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.regularizer_weight is not None and args.regularizer_weight < 0:
        raise TrainingError(f"--regularizer-weight must be >= 0, got {args.regularizer_weight}")
    if args.action_temperature <= 0:
        raise TrainingError(f"--action-temperature must be > 0, got {args.action_temperature}")
    probs = (args.drop_text_prob, args.drop_image_prob, args.drop_both_prob)
    if min(probs) < 0 or sum(probs) > 1:
        raise TrainingError(f"--drop-text-prob, --drop-image-prob and --drop-both-prob must be >= 0 and sum to <= 1, "
                            f"got {probs}")
    if args.diffusion_loss_weight == 0 and args.action_loss_weight == 0 and not args.regularizer_weight:
        raise TrainingError("every loss term is switched off (all weights are 0)")
    if args.stop_at_step is not None and args.stop_at_step <= 0:
        raise TrainingError(f"--stop-at-step must be > 0, got {args.stop_at_step}")
    if args.num_threads is not None and args.num_threads <= 0:
        raise TrainingError(f"--num-threads must be > 0, got {args.num_threads}")
    if args.snr_gamma is not None and args.snr_gamma <= 0:
        raise TrainingError(f"--snr-gamma must be > 0, got {args.snr_gamma}")
    if not 0 <= args.ema_decay < 1:
        raise TrainingError(f"--ema-decay must be in [0, 1), got {args.ema_decay}")


# ----------------------------------------------------------------------------------------------------------- model
def load_starting_model(pretrained_model: str):
    """Load the starting model's components (float32, CPU) through the project's loader.

    Returns ``(components, source_index)``: an :class:`~actedit_ros.editing.EditActionComponents` whose scheduler is
    the model's own scheduler class, and the model_index.json dict. A plain SD-1.5 directory (4-channel UNet) gets
    its conv_in widened to 8 channels, the extra 4 zero-initialised.
    """
    from actedit_ros.editing import ModelLoadError, load_components, resolve_model_path
    from actedit_ros.editing.loading import read_model_index

    path = resolve_model_path(None if pretrained_model in (None, "", "default") else pretrained_model)
    try:
        index = read_model_index(path)
        components = load_components(path, device="cpu", dtype=torch.float32, scheduler=None, widen_plain_sd=True)
    except ModelLoadError as err:
        raise TrainingError(f"cannot load --pretrained-model: {err}") from err
    return components, index


def random_unet_from_config(config_path: str, seed: int, vae, text_encoder):
    """A randomly initialised UNet2DConditionModel (seeded) from a JSON config, checked against the VAE/text encoder."""
    from diffusers import UNet2DConditionModel

    path = Path(config_path)
    try:
        config = json.loads(path.read_text())
    except OSError as err:
        raise TrainingError(f"cannot read --unet-config {path}: {err}") from err
    except json.JSONDecodeError as err:
        raise TrainingError(f"--unet-config {path} is not valid JSON: {err}") from err
    latent_channels = vae.config.latent_channels
    text_dim = text_encoder.config.hidden_size
    expected = {"in_channels": 2 * latent_channels, "out_channels": latent_channels, "cross_attention_dim": text_dim}
    wrong = {key: (config.get(key), value) for key, value in expected.items() if config.get(key) != value}
    if wrong:
        detail = ", ".join(f"{key}={got} (needs {need})" for key, (got, need) in wrong.items())
        raise TrainingError(f"--unet-config {path} does not fit the model's VAE/text encoder: {detail}")
    torch.manual_seed(seed)
    try:
        return UNet2DConditionModel.from_config(config)
    except (TypeError, ValueError) as err:
        raise TrainingError(f"--unet-config {path} is not a valid UNet2DConditionModel config: {err}") from err


def export_scheduler(scheduler, prediction_type: str):
    """The starting model's scheduler with the trained ``prediction_type``.

    diffusers' Euler-ancestral sampler cannot step an x0-predicting ("sample") model, so such a model is exported
    with a DDIM scheduler (same noise schedule) instead.
    """
    import diffusers

    scheduler_class = type(scheduler)
    if prediction_type == "sample" and scheduler_class.__name__ == "EulerAncestralDiscreteScheduler":
        scheduler_class = diffusers.DDIMScheduler
    return scheduler_class.from_config(scheduler.config, prediction_type=prediction_type)


def copy_frozen_component(source: Path, target: Path) -> None:
    """Copy a frozen component's folder file by file (bit-identical, whatever precision training held it in),
    leaving out pickle weights."""
    from actedit_ros.editing.loading import PICKLE_SUFFIXES

    if source.resolve() == target.resolve():
        return
    if not source.is_dir():
        raise TrainingError(f"cannot export: the starting model's {source.name}/ folder {source} is gone")
    for file in source.rglob("*"):
        if file.is_file() and not file.name.endswith(PICKLE_SUFFIXES):
            destination = target / file.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, destination)


def validation_sampler(prediction_type: str) -> str:
    """The GoalPredictor sampler used for validation grids: InstructPix2Pix's Euler-ancestral when it supports the
    prediction type, DDIM for x0-prediction."""
    return "ddim" if prediction_type == "sample" else "euler_ancestral"


def export_model(out_dir: Path, unet, components, source_index: dict, prediction_type: str, resolution: int) -> None:
    """Write a diffusers-format InstructPix2Pix directory (safetensors) that the project's loader reads."""
    from actedit_ros.editing.loading import TEXT_ENCODER_PACKAGE_KEY
    from actedit_ros.editing.tiny import write_model_index

    out_dir.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(out_dir / "unet", safe_serialization=True)
    text_package = source_index.get(TEXT_ENCODER_PACKAGE_KEY)
    frozen = ("vae",) if text_package else ("vae", "text_encoder", "tokenizer")
    for name in frozen:
        copy_frozen_component(Path(components.model_path) / name, out_dir / name)
    scheduler = export_scheduler(components.scheduler, prediction_type)
    scheduler.save_pretrained(out_dir / "scheduler")
    write_model_index(out_dir, text_encoder=type(components.text_encoder).__name__,
                      tokenizer=type(components.tokenizer).__name__, scheduler=type(scheduler).__name__,
                      resolution=resolution, text_encoder_package=text_package)
    vae_class = type(components.vae).__name__
    if vae_class != "AutoencoderKL":
        index = json.loads((out_dir / "model_index.json").read_text())
        index["vae"] = ["diffusers", vae_class]
        (out_dir / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")


# ----------------------------------------------------------------------------------------------------------- data
class EpochShuffleSampler(torch.utils.data.Sampler):
    """A permutation of the dataset that depends only on (seed, epoch): the data order of every epoch is reproducible."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())


def micro_batch_generator(seed: int, process_index: int, micro_batch: int) -> torch.Generator:
    """The CPU generator every random draw of one micro-batch comes from (independent of the device and of history)."""
    state = np.random.SeedSequence([seed, process_index, micro_batch]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def dropout_masks(batch: int, generator: torch.Generator, drop_text: float, drop_image: float,
                  drop_both: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean (text_dropped, image_dropped) masks: text only w.p. drop_text, both w.p. drop_both, image only w.p.
    drop_image (one uniform draw per sample, as InstructPix2Pix does)."""
    u = torch.rand(batch, generator=generator)
    text = u < drop_text + drop_both
    image = (u >= drop_text) & (u < drop_text + drop_both + drop_image)
    return text, image


# ----------------------------------------------------------------------------------------------------------- helpers
def list_checkpoints(output_dir: Path) -> list[Path]:
    folder = output_dir / CHECKPOINTS_DIR
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith("checkpoint-")
             and p.name.split("-", 1)[1].isdigit() and (p / STATE_NAME).is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-", 1)[1]))


def save_ema(ema, names: list[str], folder: Path) -> None:
    """EMA shadow weights as safetensors (keyed by UNet parameter name) and its counters as JSON."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    save_file({name: p.detach().cpu().contiguous() for name, p in zip(names, ema.shadow_params)},
              str(folder / "shadow.safetensors"))
    counters = {k: v for k, v in ema.state_dict().items() if k != "shadow_params"}
    (folder / "ema_state.json").write_text(json.dumps(counters, indent=2))


def load_ema(ema, names: list[str], folder: Path) -> None:
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "shadow.safetensors"))
    missing = [name for name in names if name not in tensors]
    if missing:
        raise TrainingError(f"{folder} lacks EMA weights for {len(missing)} parameters (e.g. {missing[0]})")
    state = json.loads((folder / "ema_state.json").read_text())
    device = ema.shadow_params[0].device
    state["shadow_params"] = [tensors[name].to(device) for name in names]
    ema.load_state_dict(state)


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


# ----------------------------------------------------------------------------------------------------------- main
def train(args: argparse.Namespace) -> Path:
    """Run (or resume) training as configured; returns the exported model directory."""
    check_args(args)
    previous_threads = torch.get_num_threads()
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    try:
        return _train(args)
    finally:
        torch.set_num_threads(previous_threads)
        # accelerate keeps its settings in process-wide singletons; forget them so a later run in the same process
        # (a training recipe with several stages, tests) may choose another precision. The process group stays.
        from accelerate.state import AcceleratorState, GradientState

        AcceleratorState._reset_state()
        GradientState._reset_state()


def _train(args: argparse.Namespace) -> Path:
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    from actedit_ros.editing import EditActionComponents, GoalPredictor
    from actedit_ros.editing.loading import make_scheduler

    output_dir = Path(args.output_dir).expanduser().resolve()
    accelerator = Accelerator(mixed_precision=args.mixed_precision,
                              project_config=ProjectConfiguration(project_dir=str(output_dir)))
    main_process = accelerator.is_main_process
    if main_process:
        output_dir.mkdir(parents=True, exist_ok=True)

    # ---- model
    components, source_index = load_starting_model(args.pretrained_model)
    vae, text_encoder = components.vae, components.text_encoder
    if type(vae).__name__ != "AutoencoderKL":
        raise TrainingError(f"training needs an AutoencoderKL (InstructPix2Pix conditions on its latent distribution), "
                            f"the model has a {type(vae).__name__}")
    random_init = args.unet_config is not None
    unet = (random_unet_from_config(args.unet_config, args.seed, vae, text_encoder) if random_init
            else components.unet)
    components.unet = unet
    prediction_type = args.prediction_type or components.scheduler.config.get("prediction_type", "epsilon")
    noise_scheduler = DDPMScheduler.from_config(components.scheduler.config, prediction_type=prediction_type)
    regularizer_weight = args.regularizer_weight if args.regularizer_weight is not None else (0.0 if random_init else 0.1)
    cross_attention = args.cross_attention if args.cross_attention != "auto" else (
        "trainable" if random_init else "frozen")
    weights = LossWeights(diffusion=args.diffusion_loss_weight, action=args.action_loss_weight,
                          regularizer=regularizer_weight, action_temperature=args.action_temperature,
                          min_snr_gamma=args.snr_gamma)
    resolution = args.resolution or components.resolution
    size_multiple = components.vae_scale_factor * 2 ** (len(unet.config.block_out_channels) - 1)

    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    unet.requires_grad_(True)
    frozen_cross_attention = freeze_cross_attention(unet) if cross_attention == "frozen" else []
    reference_unet = None
    if weights.regularizer > 0:
        reference_unet = copy.deepcopy(unet).requires_grad_(False).eval()
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()

    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    for module in (vae, text_encoder, reference_unet):
        if module is not None:
            module.to(accelerator.device, dtype=weight_dtype)
    names = [name for name, _ in unet.named_parameters()]
    ema = None
    if args.use_ema:
        ema = EMAModel(unet.parameters(), decay=args.ema_decay, model_cls=type(unet), model_config=unet.config)

    # ---- data
    try:
        dataset = EditPairDataset(args.dataset_dir, resolution, split="train", image_mode=args.image_mode,
                                  size_multiple=size_multiple, max_pairs=args.max_train_pairs)
    except DatasetError as err:
        raise TrainingError(str(err)) from err
    if len(dataset) < args.train_batch_size * accelerator.num_processes:
        raise TrainingError(f"the training split has {len(dataset)} pairs, fewer than one batch "
                            f"({args.train_batch_size} x {accelerator.num_processes} processes)")
    sampler = EpochShuffleSampler(len(dataset), args.seed)
    dataloader = torch.utils.data.DataLoader(dataset, batch_size=args.train_batch_size, sampler=sampler,
                                             collate_fn=collate_pairs, drop_last=True,
                                             num_workers=args.dataloader_workers)
    negatives = None
    if weights.action > 0:
        ignored = [w.strip() for w in args.negative_ignore_words.split(",") if w.strip()]
        try:
            negatives = NegativeInstructionSampler(dataset.instructions, ignored_words=ignored)
        except DatasetError as err:
            raise TrainingError(str(err)) from err

    # ---- optimisation
    trainable = [p for p in unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                  weight_decay=args.adam_weight_decay, eps=args.adam_epsilon)
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer,
                                 num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=args.max_train_steps * accelerator.num_processes)
    unet, optimizer, dataloader, lr_scheduler = accelerator.prepare(unet, optimizer, dataloader, lr_scheduler)
    if ema is not None:
        ema.to(accelerator.device)
    micro_batches_per_epoch = len(dataloader)

    # ---- resume
    global_step = 0
    resume = None
    if args.resume_from_checkpoint:
        if args.resume_from_checkpoint == "latest":
            found = list_checkpoints(output_dir)
            resume = found[-1] if found else None
            if resume is None and main_process:
                log.warning("--resume-from-checkpoint latest: no checkpoint in %s, starting afresh",
                            output_dir / CHECKPOINTS_DIR)
        else:
            resume = Path(args.resume_from_checkpoint).expanduser().resolve()
            if not (resume / STATE_NAME).is_file():
                raise TrainingError(f"--resume-from-checkpoint {resume} is not a checkpoint written by actedit-train "
                                    f"(no {STATE_NAME})")
    if resume is not None:
        accelerator.load_state(str(resume))
        state = json.loads((resume / STATE_NAME).read_text())
        global_step = int(state["global_step"])
        saved_flags = state.get("flags", {})
        changed = sorted(key for key, value in vars(args).items()
                         if key not in RESUME_NEUTRAL_FLAGS and key in saved_flags and saved_flags[key] != value)
        if changed and main_process:
            log.warning("resuming with flags that differ from the checkpoint's (%s): the run continues, but not "
                        "exactly as the original would have", ", ".join(
                            f"--{k.replace('_', '-')} {saved_flags[k]!r} -> {getattr(args, k)!r}" for k in changed))
        if ema is not None:
            if not (resume / EMA_DIR).is_dir():
                raise TrainingError(f"{resume} has no EMA weights but --use-ema is set")
            load_ema(ema, names, resume / EMA_DIR)
        if main_process:
            log.info("resumed from %s at step %d", resume, global_step)

    # ---- the training config, beside the model
    resolved = {"prediction_type": prediction_type, "regularizer_weight": regularizer_weight,
                "cross_attention": cross_attention, "resolution": resolution, "weight_dtype": str(weight_dtype),
                "num_processes": accelerator.num_processes, "train_pairs": len(dataset),
                "unet_parameters": sum(p.numel() for p in accelerator.unwrap_model(unet).parameters()),
                "trainable_parameters": sum(p.numel() for p in trainable),
                "frozen_cross_attention_parameters": len(frozen_cross_attention),
                "random_init_unet": random_init}
    config = {"flags": vars(args), "resolved": resolved, "command": " ".join(sys.argv)}
    if main_process:
        (output_dir / CONFIG_NAME).write_text(json.dumps(config, indent=2, default=str) + "\n")

    # ---- text embeddings and validation go through the inference code (one encoding for train and predict)
    def make_predictor() -> GoalPredictor:
        scheduler_config = export_scheduler(components.scheduler, prediction_type).config
        view = EditActionComponents(unet=accelerator.unwrap_model(unet), vae=vae, text_encoder=text_encoder,
                                    tokenizer=components.tokenizer,
                                    scheduler=make_scheduler(scheduler_config, validation_sampler(prediction_type)),
                                    model_path=output_dir, resolution=resolution, device=accelerator.device,
                                    dtype=torch.float32)
        return GoalPredictor(view, cache_size=args.text_cache_size)

    predictor = make_predictor()

    def embed(texts: list[str]) -> torch.Tensor:
        return torch.cat([predictor.text_embedding(text) for text in texts]).to(weight_dtype)

    validation_dataset = None
    try:
        validation_dataset = EditPairDataset(args.dataset_dir, resolution, split="test", image_mode=args.image_mode,
                                             size_multiple=size_multiple)
    except DatasetError:
        validation_dataset = dataset
    picks = np.linspace(0, len(validation_dataset) - 1, min(args.num_validation_pairs, len(validation_dataset)))
    validation_indices = sorted({int(round(i)) for i in picks})

    def validate(step: int) -> None:
        unwrapped = accelerator.unwrap_model(unet)
        if ema is not None:
            ema.store(unwrapped.parameters())
            ema.copy_to(unwrapped.parameters())
        unwrapped.eval()
        try:
            rows = []
            for i in validation_indices:
                source, target = validation_dataset.load_pair(i)
                instruction = validation_dataset.pairs[i].instruction
                with accelerator.autocast():
                    predicted = predictor.predict(source, instruction, steps=args.validation_inference_steps,
                                                  text_guidance=args.validation_text_guidance,
                                                  image_guidance=args.validation_image_guidance, seed=0).image
                rows.append((source, predicted, target, instruction))
            write_validation_grid(output_dir / "validation" / f"step-{step:06d}.png", rows, step)
        finally:
            unwrapped.train()
            if ema is not None:
                ema.restore(unwrapped.parameters())

    last_saved_step = global_step if resume is not None else -1

    def save_checkpoint(step: int) -> None:
        nonlocal last_saved_step
        last_saved_step = step
        accelerator.wait_for_everyone()
        if main_process:
            _write_checkpoint(step)
        accelerator.wait_for_everyone()  # no process runs ahead of a checkpoint being written

    def _write_checkpoint(step: int) -> None:
        found = list_checkpoints(output_dir)
        if args.checkpoints_total_limit:
            for old in found[:max(0, len(found) - args.checkpoints_total_limit + 1)]:
                shutil.rmtree(old)
        folder = output_dir / CHECKPOINTS_DIR / f"checkpoint-{step}"
        accelerator.save_state(str(folder), safe_serialization=True)
        if ema is not None:
            save_ema(ema, names, folder / EMA_DIR)
        # Written last: a checkpoint without it is incomplete and ignored by 'latest'.
        (folder / STATE_NAME).write_text(json.dumps({"global_step": step, "micro_batch": step *
                                                     args.gradient_accumulation_steps, "flags": vars(args)},
                                                    indent=2, default=str) + "\n")
        if args.export_with_checkpoints:
            export(step)

    def export(step: int) -> None:
        unwrapped = accelerator.unwrap_model(unet)
        if ema is not None:
            ema.store(unwrapped.parameters())
            ema.copy_to(unwrapped.parameters())
        try:
            export_model(output_dir, unwrapped, components, source_index, prediction_type, resolution)
            (output_dir / CONFIG_NAME).write_text(json.dumps({**config, "exported_step": step}, indent=2,
                                                             default=str) + "\n")
        finally:
            if ema is not None:
                ema.restore(unwrapped.parameters())

    # ---- the loop
    def micro_batches(start: int):
        """Batches from micro-batch number ``start`` on, epoch after epoch (the data position of a resume)."""
        epoch, skip = divmod(start, micro_batches_per_epoch)
        while True:
            dataloader.set_epoch(epoch)
            source = accelerator.skip_first_batches(dataloader, skip) if skip else dataloader
            yield from source
            epoch, skip = epoch + 1, 0

    metrics_file = output_dir / "logs" / "metrics.jsonl"
    if main_process:
        metrics_file.parent.mkdir(parents=True, exist_ok=True)
    accumulation = args.gradient_accumulation_steps
    batches = micro_batches(global_step * accumulation)
    progress = tqdm(total=args.max_train_steps, initial=global_step, desc="actedit-train",
                    disable=args.no_progress or not main_process, dynamic_ncols=True)
    scaling = vae.config.scaling_factor
    latent_cache = LatentCache() if args.cache_latents else None
    last_step = min(args.max_train_steps, args.stop_at_step or args.max_train_steps)
    while global_step < last_step:
        started = time.perf_counter()
        logs: dict[str, float] = {}
        for micro in range(accumulation):
            batch = next(batches)
            number = global_step * accumulation + micro
            generator = micro_batch_generator(args.seed, accelerator.process_index, number)
            terms = training_micro_step(batch, generator, args, unet, reference_unet, vae, scaling, noise_scheduler,
                                        prediction_type, weights, negatives, embed, weight_dtype, accelerator,
                                        latent_cache)
            context = accelerator.no_sync(unet) if micro < accumulation - 1 else contextlib.nullcontext()
            with context:
                accelerator.backward(terms.total / accumulation)
            for key, value in terms.as_log().items():
                logs[key] = logs.get(key, 0.0) + value / accumulation
        if args.max_grad_norm > 0:
            accelerator.clip_grad_norm_(trainable, args.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(accelerator.unwrap_model(unet).parameters())
        global_step += 1
        logs.update(step=global_step, lr=lr_scheduler.get_last_lr()[0], seconds=time.perf_counter() - started)
        if main_process:
            with open(metrics_file, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(logs) + "\n")
        progress.update(1)
        progress.set_postfix(loss=f"{logs['loss']:.4f}", act=f"{logs['action_accuracy']:.2f}",
                             s=f"{logs['seconds']:.2f}")
        if args.checkpointing_steps and global_step % args.checkpointing_steps == 0:
            save_checkpoint(global_step)
        if main_process and args.validation_steps and global_step % args.validation_steps == 0:
            validate(global_step)
    progress.close()

    if last_saved_step != global_step:
        save_checkpoint(global_step)
    accelerator.wait_for_everyone()
    if main_process:
        export(global_step)
        if not args.validation_steps or global_step % args.validation_steps:
            validate(global_step)
        if negatives is not None and negatives.fallbacks:
            log.warning("%d negative instructions shared a word with the true one (no disjoint instruction in the "
                        "training set); consider --negative-ignore-words", negatives.fallbacks)
    accelerator.end_training()
    return output_dir


@torch.no_grad()
def encode_latents(vae, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of the VAE's latent distribution for a batch of pixels in [-1, 1]."""
    distribution = vae.encode(pixels).latent_dist
    return distribution.mean, distribution.std


class LatentCache:
    """The VAE latent distribution of every image seen, by key (which image of which pair, flipped or not).

    Images are encoded one at a time so a cached value does not depend on which batch it first came in (batched
    kernels may round differently), which keeps resumed runs bit-identical to uninterrupted ones.
    """

    def __init__(self):
        self.entries: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def encode(self, vae, pixels: torch.Tensor, keys: list[tuple]) -> tuple[torch.Tensor, torch.Tensor]:
        for row, key in enumerate(keys):
            if key not in self.entries:
                mean, std = encode_latents(vae, pixels[row:row + 1])
                self.entries[key] = (mean[0].cpu(), std[0].cpu())  # host memory, also when training on a GPU
        means, stds = zip(*(self.entries[key] for key in keys))
        return torch.stack(means).to(pixels.device), torch.stack(stds).to(pixels.device)


def training_micro_step(batch: dict, generator: torch.Generator, args, unet, reference_unet, vae, scaling: float,
                        noise_scheduler, prediction_type: str, weights: LossWeights, negatives, embed,
                        weight_dtype: torch.dtype, accelerator, latent_cache: LatentCache | None = None):
    """Forward pass of one micro-batch: every random draw from ``generator``; returns the objective's terms."""
    device = accelerator.device
    source, edited = batch["input_pixels"], batch["edited_pixels"]
    instructions = list(batch["instruction"])
    size = source.shape[0]
    if args.random_flip:
        flip = torch.rand(size, generator=generator) < 0.5
        flip_device = flip.to(device)[:, None, None, None]
        source = torch.where(flip_device, source.flip(-1), source)
        edited = torch.where(flip_device, edited.flip(-1), edited)
        instructions = [mirror_instruction(t) if f else t for t, f in zip(instructions, flip.tolist())]
    pixels = to_model_range(torch.cat([source, edited]).to(device), weight_dtype)
    keys = None
    if latent_cache is not None:
        flipped = flip.tolist() if args.random_flip else [False] * size
        indices = batch["index"].tolist()
        keys = [("input", i, f) for i, f in zip(indices, flipped)] + [("edited", i, f) for i, f in zip(indices, flipped)]
    mean, std = latent_cache.encode(vae, pixels, keys) if latent_cache is not None else encode_latents(vae, pixels)
    # InstructPix2Pix: the condition is the mode (= mean) of the input image's latent distribution, unscaled; the
    # target is a sample of the edited image's latent distribution, scaled.
    image_latents = mean[:size]
    noise_for_latents = torch.randn(mean[size:].shape, generator=generator).to(device, mean.dtype)
    target_latents = ((mean[size:] + std[size:] * noise_for_latents) * scaling).float()
    noise = torch.randn(target_latents.shape, generator=generator).to(device)
    timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (size,), generator=generator).to(device)
    noisy = noise_scheduler.add_noise(target_latents, noise, timesteps)
    target = prediction_target(noise_scheduler, target_latents, noise, timesteps, prediction_type)

    text_dropped, image_dropped = dropout_masks(size, generator, args.drop_text_prob, args.drop_image_prob,
                                                args.drop_both_prob)
    prompts = ["" if dropped else text for text, dropped in zip(instructions, text_dropped.tolist())]
    text_embeddings = embed(prompts)
    image_latents = image_latents.float() * (~image_dropped).to(device)[:, None, None, None]

    negative_embeddings, action_mask = None, None
    if negatives is not None:
        action_mask = ~text_dropped
        chosen = [text for text, keep in zip(instructions, action_mask.tolist()) if keep]
        if chosen:
            negative_embeddings = embed(negatives.sample(chosen, generator))
        action_mask = action_mask.to(device)
    snr = (min_snr_weights(noise_scheduler, timesteps, weights.min_snr_gamma, prediction_type)
           if weights.min_snr_gamma else None)
    with accelerator.autocast():
        return editaction_objective(unet, noisy, image_latents, timesteps, text_embeddings, target, weights,
                                    negative_text_embeddings=negative_embeddings, action_mask=action_mask,
                                    reference_unet=reference_unet, snr_weights=snr)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        out = train(args)
    except (TrainingError, DatasetError) as err:
        print(f"actedit-train: error: {err}", file=sys.stderr)
        return 2
    print(f"actedit-train: model written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
