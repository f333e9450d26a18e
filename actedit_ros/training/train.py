"""actedit-train: fine-tune an InstructPix2Pix UNet with the EditAction objective (or train a small one from scratch).

Runs the same on a laptop CPU (float32) and on GPUs via HF accelerate::

    actedit-train --pretrained-model /models/instruct-pix2pix --dataset-dir data/epic --output-dir runs/editaction
    accelerate launch --multi_gpu --num_processes 8 -m actedit_ros.training.train --mixed-precision bf16 ...

The output directory ends up holding a diffusers-format model (unet/, vae/, text_encoder/, tokenizer/, scheduler/,
model_index.json - what ``GoalPredictor.from_pretrained`` loads) with ``training_config.json`` (every flag) beside it,
plus ``checkpoints/checkpoint-<step>/`` (safetensors and JSON only: model, optimizer, LR schedule, EMA; see
:mod:`.checkpoints`),
``validation/step-<step>.png`` grids (input | prediction | target) and ``logs/metrics.jsonl`` (one line per step).

Exact resume: every random draw of a step (flips, conditioning dropout, negative instructions, timesteps, noise,
VAE latent samples) comes from a generator seeded by (seed, process, micro-batch number), and the data order is a
permutation seeded by (seed, epoch), so ``--resume-from-checkpoint latest`` continues bit-for-bit where the
checkpoint was taken.

The run goes through named steps (:func:`_train`): set up the model, the data and the optimisation, resume, write
the training config, then the loop of optimizer steps (checkpoints and validation grids on their schedule) and the
export. The flags live in :mod:`.cli`, one micro-step in :mod:`.step`, checkpoints in :mod:`.checkpoints`, the
starting model and export in :mod:`.models`, validation grids in :mod:`.validation`.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .checkpoints import (CHECKPOINTS_DIR, CONFIG_NAME, EMA_DIR, STATE_NAME, ema_applied, find_resume_checkpoint,
                          list_checkpoints, load_ema, restore_checkpoint, save_ema, write_checkpoint)
from .cli import RESUME_NEUTRAL_FLAGS, build_parser, check_args
from .data import DatasetError, EditPairDataset, NegativeInstructionSampler, collate_pairs
from .errors import TrainingError
from .losses import LossWeights, freeze_cross_attention
from .models import (copy_frozen_component, export_model, export_scheduler, load_starting_model,
                     random_unet_from_config)
from .latent_cache import LatentCache, LatentCacheFile, encode_latents
from .prefetch import EncodingPrefetcher
from .step import EpochShuffleSampler, dropout_masks, micro_batch_generator, training_micro_step
from .validation import validate, validation_pairs, validation_sampler, write_validation_grid

# Names other code imports from this module (the console entry), wherever they now live.
__all__ = ["CHECKPOINTS_DIR", "CONFIG_NAME", "EMA_DIR", "RESUME_NEUTRAL_FLAGS", "STATE_NAME", "EpochShuffleSampler",
           "LatentCache", "TrainingError", "build_parser", "check_args", "copy_frozen_component", "dropout_masks",
           "ema_applied", "encode_latents", "export_model", "export_scheduler", "list_checkpoints", "load_ema",
           "load_starting_model", "main", "micro_batch_generator", "random_unet_from_config", "save_ema", "train",
           "training_micro_step", "validation_sampler", "write_validation_grid"]

log = logging.getLogger("actedit_ros.training")


@dataclass
class Run:
    """Everything one training run holds, filled in by the set-up steps of :func:`_train` in order."""

    args: argparse.Namespace
    accelerator: Any
    output_dir: Path
    # setup_model
    components: Any = None
    source_index: dict | None = None
    unet: Any = None  # accelerate's prepared (possibly wrapped) UNet after setup_optimisation
    reference_unet: Any = None
    noise_scheduler: Any = None
    prediction_type: str = ""
    weights: LossWeights | None = None
    resolution: int = 0
    size_multiple: int = 8
    weight_dtype: torch.dtype = torch.float32
    random_init: bool = False
    cross_attention: str = ""
    frozen_cross_attention: list | None = None
    names: list[str] | None = None
    ema: Any = None
    # setup_data
    dataset: EditPairDataset | None = None
    dataloader: Any = None
    negatives: NegativeInstructionSampler | None = None
    # setup_optimisation
    trainable: list | None = None
    optimizer: Any = None
    lr_scheduler: Any = None
    micro_batches_per_epoch: int = 0
    # resume, config, loop
    global_step: int = 0
    last_saved_step: int = -1
    config: dict | None = None
    predictor: Any = None
    validation: tuple | None = None  # (dataset, indices) of the validation grid

    @property
    def main_process(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def vae(self):
        return self.components.vae

    def unwrapped_unet(self):
        return self.accelerator.unwrap_model(self.unet)

    def embed(self, texts: list[str]) -> torch.Tensor:
        """Text embeddings through the inference code's cached encoder (one encoding for train and predict)."""
        return self.predictor.text_embeddings(list(texts)).to(self.weight_dtype)


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
    run = start_run(args)
    setup_model(run)
    setup_data(run)
    setup_optimisation(run)
    resume(run)
    write_training_config(run)
    run.predictor = make_predictor(run)
    run.validation = validation_pairs(args, run.resolution, run.size_multiple, run.dataset)
    training_loop(run)
    finish(run)
    return run.output_dir


def start_run(args: argparse.Namespace) -> Run:
    """The accelerator and the output directory."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    output_dir = Path(args.output_dir).expanduser().resolve()
    accelerator = Accelerator(mixed_precision=args.mixed_precision,
                              project_config=ProjectConfiguration(project_dir=str(output_dir)))
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    return Run(args=args, accelerator=accelerator, output_dir=output_dir)


# ----------------------------------------------------------------------------------------------------------- set-up
def setup_model(run: Run) -> None:
    """Starting model, trained UNet (pretrained or random-init), loss weights, frozen parts, precision, EMA."""
    from diffusers import DDPMScheduler

    args = run.args
    components, run.source_index = load_starting_model(args.pretrained_model)
    vae, text_encoder = components.vae, components.text_encoder
    if type(vae).__name__ != "AutoencoderKL":
        raise TrainingError(f"training needs an AutoencoderKL (InstructPix2Pix conditions on its latent distribution), "
                            f"the model has a {type(vae).__name__}")
    run.random_init = random_init = args.unet_config is not None
    unet = (random_unet_from_config(args.unet_config, args.seed, vae, text_encoder) if random_init
            else components.unet)
    components.unet = unet
    run.components = components
    run.prediction_type = args.prediction_type or components.scheduler.config.get("prediction_type", "epsilon")
    run.noise_scheduler = DDPMScheduler.from_config(components.scheduler.config, prediction_type=run.prediction_type)
    regularizer_weight = (args.regularizer_weight if args.regularizer_weight is not None
                          else 0.0 if random_init else 0.1)
    run.cross_attention = args.cross_attention if args.cross_attention != "auto" else (
        "trainable" if random_init else "frozen")
    run.weights = LossWeights(diffusion=args.diffusion_loss_weight, action=args.action_loss_weight,
                              regularizer=regularizer_weight, action_temperature=args.action_temperature,
                              min_snr_gamma=args.snr_gamma, change=args.change_loss_weight)
    run.resolution = args.resolution or components.resolution
    run.size_multiple = components.vae_scale_factor * 2 ** (len(unet.config.block_out_channels) - 1)

    vae.requires_grad_(False)
    text_encoder.requires_grad_(False)
    unet.requires_grad_(True)
    run.frozen_cross_attention = freeze_cross_attention(unet) if run.cross_attention == "frozen" else []
    if run.weights.regularizer > 0:
        run.reference_unet = copy.deepcopy(unet).requires_grad_(False).eval()
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()

    accelerator = run.accelerator
    run.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
    for module in (vae, text_encoder, run.reference_unet):
        if module is not None:
            module.to(accelerator.device, dtype=run.weight_dtype)
    run.names = [name for name, _ in unet.named_parameters()]
    run.unet = unet
    if args.use_ema:
        from diffusers.training_utils import EMAModel

        run.ema = EMAModel(unet.parameters(), decay=args.ema_decay, model_cls=type(unet), model_config=unet.config)


def setup_data(run: Run) -> None:
    """The training split, its reproducible data order and the negative-instruction pool of the action loss."""
    args = run.args
    try:
        dataset = EditPairDataset(args.dataset_dir, run.resolution, split="train", image_mode=args.image_mode,
                                  size_multiple=run.size_multiple, max_pairs=args.max_train_pairs)
    except DatasetError as err:
        raise TrainingError(str(err)) from err
    processes = run.accelerator.num_processes
    if len(dataset) < args.train_batch_size * processes:
        raise TrainingError(f"the training split has {len(dataset)} pairs, fewer than one batch "
                            f"({args.train_batch_size} x {processes} processes)")
    sampler = EpochShuffleSampler(len(dataset), args.seed)
    run.dataloader = torch.utils.data.DataLoader(dataset, batch_size=args.train_batch_size, sampler=sampler,
                                                 collate_fn=collate_pairs, drop_last=True,
                                                 num_workers=args.dataloader_workers)
    run.dataset = dataset
    if args.instruction_variant_prob > 0 and run.main_process:
        with_variants = sum(1 for pair in dataset.pairs if pair.instruction_variants)
        if with_variants:
            log.info("--instruction-variant-prob %g: %d of %d training pairs have instruction_variants",
                     args.instruction_variant_prob, with_variants, len(dataset))
        else:
            log.warning("--instruction-variant-prob %g, but no training record of %s has instruction_variants: every "
                        "pair keeps its instruction", args.instruction_variant_prob, args.dataset_dir)
    if run.weights.action > 0:
        ignored = [w.strip() for w in args.negative_ignore_words.split(",") if w.strip()]
        try:
            run.negatives = NegativeInstructionSampler(dataset.instructions, ignored_words=ignored)
        except DatasetError as err:
            raise TrainingError(str(err)) from err


def setup_optimisation(run: Run) -> None:
    """AdamW over the trainable parameters, the LR schedule, and accelerate's preparation of both and the data."""
    from diffusers.optimization import get_scheduler

    args, accelerator = run.args, run.accelerator
    run.trainable = [p for p in run.unet.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(run.trainable, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                  weight_decay=args.adam_weight_decay, eps=args.adam_epsilon)
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer,
                                 num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=args.max_train_steps * accelerator.num_processes)
    run.unet, run.optimizer, run.dataloader, run.lr_scheduler = accelerator.prepare(run.unet, optimizer,
                                                                                    run.dataloader, lr_scheduler)
    if run.ema is not None:
        run.ema.to(accelerator.device)
    run.micro_batches_per_epoch = len(run.dataloader)


def resume(run: Run) -> None:
    """Continue from ``--resume-from-checkpoint`` when it names one (weights, optimizer, schedule, EMA, step)."""
    folder = find_resume_checkpoint(run.args.resume_from_checkpoint, run.output_dir, run.main_process)
    if folder is not None:
        run.global_step = restore_checkpoint(folder, run.args, run.accelerator, run.unet, run.optimizer,
                                             run.lr_scheduler, run.ema, run.names)
        run.last_saved_step = run.global_step


def write_training_config(run: Run) -> None:
    """``training_config.json`` beside the model: every flag, the values resolved from them, the command line."""
    unet = run.unwrapped_unet()
    resolved = {"prediction_type": run.prediction_type, "regularizer_weight": run.weights.regularizer,
                "cross_attention": run.cross_attention, "resolution": run.resolution,
                "weight_dtype": str(run.weight_dtype), "num_processes": run.accelerator.num_processes,
                "train_pairs": len(run.dataset), "unet_parameters": sum(p.numel() for p in unet.parameters()),
                "trainable_parameters": sum(p.numel() for p in run.trainable),
                "frozen_cross_attention_parameters": len(run.frozen_cross_attention),
                "random_init_unet": run.random_init}
    run.config = {"flags": vars(run.args), "resolved": resolved, "command": " ".join(sys.argv)}
    if run.main_process:
        (run.output_dir / CONFIG_NAME).write_text(json.dumps(run.config, indent=2, default=str) + "\n")


def make_predictor(run: Run):
    """A GoalPredictor over the UNet being trained: text embeddings and validation go through the inference code."""
    from actedit_ros.editing import EditActionComponents, GoalPredictor
    from actedit_ros.editing.loading import make_scheduler

    components = run.components
    scheduler_config = export_scheduler(components.scheduler, run.prediction_type).config
    view = EditActionComponents(unet=run.unwrapped_unet(), vae=components.vae, text_encoder=components.text_encoder,
                                tokenizer=components.tokenizer,
                                scheduler=make_scheduler(scheduler_config, validation_sampler(run.prediction_type)),
                                model_path=run.output_dir, resolution=run.resolution, device=run.accelerator.device,
                                dtype=torch.float32)
    return GoalPredictor(view, cache_size=run.args.text_cache_size)


# ----------------------------------------------------------------------------------------------------------- loop
def micro_batches(run: Run, start: int):
    """Batches from micro-batch number ``start`` on, epoch after epoch (the data position of a resume)."""
    epoch, skip = divmod(start, run.micro_batches_per_epoch)
    while True:
        run.dataloader.set_epoch(epoch)
        source = run.accelerator.skip_first_batches(run.dataloader, skip) if skip else run.dataloader
        yield from source
        epoch, skip = epoch + 1, 0


def training_loop(run: Run) -> None:
    """Optimizer steps up to --max-train-steps (or --stop-at-step), with checkpoints and validation on schedule."""
    from tqdm.auto import tqdm

    args = run.args
    metrics_file = run.output_dir / "logs" / "metrics.jsonl"
    if run.main_process:
        metrics_file.parent.mkdir(parents=True, exist_ok=True)
    start = run.global_step * args.gradient_accumulation_steps
    batches = micro_batches(run, start)
    progress = tqdm(total=args.max_train_steps, initial=run.global_step, desc="actedit-train",
                    disable=args.no_progress or not run.main_process, dynamic_ncols=True)
    latent_cache = LatentCache() if args.cache_latents else None
    last_step = min(args.max_train_steps, args.stop_at_step or args.max_train_steps)
    keeper = LatentCacheFile.open(run, latent_cache)
    if args.prefetch_encoders and run.global_step < last_step:
        batches = EncodingPrefetcher(batches, start, run, latent_cache)
    try:
        _train_steps(run, batches, latent_cache, last_step, metrics_file, progress, keeper)
    finally:
        if isinstance(batches, EncodingPrefetcher):
            batches.close()
        progress.close()
        if keeper is not None:
            keeper.save(latent_cache, force=True)


def _train_steps(run: Run, batches, latent_cache, last_step: int, metrics_file: Path, progress,
                 keeper: LatentCacheFile | None) -> None:
    args = run.args
    while run.global_step < last_step:
        logs = optimizer_step(run, batches, latent_cache)
        if run.main_process:
            with open(metrics_file, "a", encoding="utf-8") as handle:
                handle.write(json.dumps(logs) + "\n")
        progress.update(1)
        progress.set_postfix(loss=f"{logs['loss']:.4f}", act=f"{logs['action_accuracy']:.2f}",
                             s=f"{logs['seconds']:.2f}")
        if args.checkpointing_steps and run.global_step % args.checkpointing_steps == 0:
            save_checkpoint(run, run.global_step)
            if keeper is not None:
                keeper.save(latent_cache)
        if run.main_process and args.validation_steps and run.global_step % args.validation_steps == 0:
            write_validation(run, run.global_step)


def optimizer_step(run: Run, batches, latent_cache: LatentCache | None) -> dict[str, float]:
    """One optimizer step over --gradient-accumulation-steps micro-batches; returns the step's log line."""
    args, accelerator = run.args, run.accelerator
    started = time.perf_counter()
    logs: dict[str, float] = {}
    accumulation = args.gradient_accumulation_steps
    scaling = run.vae.config.scaling_factor
    texts_log = [] if args.instruction_variant_prob > 0 else None
    for micro in range(accumulation):
        batch = next(batches)
        generator = micro_batch_generator(args.seed, accelerator.process_index,
                                          run.global_step * accumulation + micro)
        terms = training_micro_step(batch, generator, args, run.unet, run.reference_unet, run.vae, scaling,
                                    run.noise_scheduler, run.prediction_type, run.weights, run.negatives, run.embed,
                                    run.weight_dtype, accelerator, latent_cache, texts_log)
        context = accelerator.no_sync(run.unet) if micro < accumulation - 1 else contextlib.nullcontext()
        with context:
            accelerator.backward(terms.total / accumulation)
        for key, value in terms.as_log().items():
            logs[key] = logs.get(key, 0.0) + value / accumulation
    if args.max_grad_norm > 0:
        accelerator.clip_grad_norm_(run.trainable, args.max_grad_norm)
    run.optimizer.step()
    run.lr_scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    if run.ema is not None:
        run.ema.step(run.unwrapped_unet().parameters())
    run.global_step += 1
    if texts_log:  # the share of pairs trained on a reworded instruction this step
        used = [u for texts in texts_log for u in texts.variant_used]
        logs["variant_fraction"] = sum(used) / len(used)
    logs.update(step=run.global_step, lr=run.lr_scheduler.get_last_lr()[0], seconds=time.perf_counter() - started)
    return logs


# ----------------------------------------------------------------------------------------------------------- outputs
def save_checkpoint(run: Run, step: int) -> None:
    """A resumable checkpoint (and the exported model with --export-with-checkpoints); every process waits for it."""
    run.last_saved_step = step
    run.accelerator.wait_for_everyone()
    if run.main_process:
        write_checkpoint(run.output_dir, step, run.args, run.accelerator, run.unet, run.optimizer, run.lr_scheduler,
                         run.ema, run.names)
        if run.args.export_with_checkpoints:
            export(run, step)
    run.accelerator.wait_for_everyone()  # no process runs ahead of a checkpoint being written


def export(run: Run, step: int) -> None:
    """The diffusers-format model (EMA weights when on) and training_config.json with the exported step."""
    with ema_applied(run.ema, run.unwrapped_unet()) as unet:
        export_model(run.output_dir, unet, run.components, run.source_index, run.prediction_type, run.resolution)
        (run.output_dir / CONFIG_NAME).write_text(json.dumps({**run.config, "exported_step": step}, indent=2,
                                                             default=str) + "\n")


def write_validation(run: Run, step: int) -> None:
    dataset, indices = run.validation
    validate(run.output_dir / "validation" / f"step-{step:06d}.png", step, run.args, run.predictor,
             run.unwrapped_unet(), run.ema, dataset, indices, run.accelerator)


def finish(run: Run) -> None:
    """The last checkpoint, the export, the last validation grid, and a word on negative-instruction fallbacks."""
    args = run.args
    if run.last_saved_step != run.global_step:
        save_checkpoint(run, run.global_step)
    run.accelerator.wait_for_everyone()
    if run.main_process:
        export(run, run.global_step)
        if not args.validation_steps or run.global_step % args.validation_steps:
            write_validation(run, run.global_step)
        if run.negatives is not None and run.negatives.fallbacks:
            log.warning("%d negative instructions shared a word with the true one (no disjoint instruction in the "
                        "training set); consider --negative-ignore-words", run.negatives.fallbacks)
    run.accelerator.end_training()


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
