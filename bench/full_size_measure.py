"""Measurements of the SD-1.5-shaped model (architecture-identical random weights), shared by the CPU benchmark
(``bench_full_size.py``) and the GPU check (``device_check.py``): prediction time, what the caches save, and one
training step of the full EditAction objective through the training code's own micro-step.
"""
from __future__ import annotations

import copy
import resource
import statistics
import time
from dataclasses import dataclass

import numpy as np
import torch

from actedit_ros.editing import EditActionComponents, GoalPredictor

INSTRUCTION = "put the red cup in the bowl"
# Training instructions sharing no content word pairwise, so every sample has a negative for the action loss.
TRAIN_INSTRUCTIONS = ("open the drawer", "close the door", "put lid on pot", "pour water into glass",
                      "cut the onion", "move cup left", "take plate off shelf", "wipe table")


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (VmHWM), MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def start_image(size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


@dataclass
class Timing:
    seconds: list[float]
    fallbacks: int  # predictions that needed the float32 redo (they would make the times meaningless)

    @property
    def p50(self) -> float:
        return statistics.median(self.seconds)

    @property
    def p95(self) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(np.ceil(0.95 * len(ordered))) - 1)]


def time_predictions(predictor: GoalPredictor, image: np.ndarray, steps: int, repeats: int,
                     num_candidates: int = 1, warmup: int = 1) -> Timing:
    """Wall time of ``repeats`` predictions (caches warm: same instruction and frame, a new seed each)."""
    for i in range(warmup):
        predictor.predict(image, INSTRUCTION, steps=steps, seed=1000 + i, num_candidates=num_candidates)
    seconds, fallbacks = [], 0
    for seed in range(repeats):
        synchronize(predictor.device)
        started = time.perf_counter()
        result = predictor.predict(image, INSTRUCTION, steps=steps, seed=seed, num_candidates=num_candidates)
        synchronize(predictor.device)
        seconds.append(time.perf_counter() - started)
        fallbacks += result.fp32_fallback
    return Timing(seconds, fallbacks)


def cache_savings(predictor: GoalPredictor, size: int) -> tuple[float, float]:
    """Seconds the text and start-frame caches save on a repeated request: (text encoder, VAE encoder).

    Each is the cost of a cache miss (a new instruction, a new frame) at the working size; a hit costs a lookup.
    """
    device = predictor.device
    synchronize(device)
    started = time.perf_counter()
    predictor.text_embedding("wipe the table with the blue cloth")
    synchronize(device)
    text = time.perf_counter() - started
    started = time.perf_counter()
    predictor.image_latents(start_image(size, seed=7), (size, size))
    synchronize(device)
    return text, time.perf_counter() - started


def forced_nonfinite_decode(predictor: GoalPredictor, image: np.ndarray, steps: int = 2):
    """A prediction whose VAE decode returns NaN unless it runs in float32: exercises the float32 redo for real.

    Returns the GoalPrediction (``fp32_fallback`` and ``notes`` say what happened).
    """
    def poison(module, inputs, output):
        return output * float("nan") if output.dtype != torch.float32 else None

    handle = predictor.components.vae.decoder.register_forward_hook(poison)
    try:
        return predictor.predict(image, INSTRUCTION, steps=steps, seed=0)
    finally:
        handle.remove()


def training_step(model_dir, size: int, batch: int, mixed_precision: str = "no", gradient_checkpointing: bool = True,
                  steps: int = 2) -> dict:
    """Optimizer steps of actedit-train's full objective (diffusion + action loss + regularizer to the frozen
    initial UNet, cross-attention frozen: the defaults when fine-tuning pretrained weights) at ``size`` px.

    The set-up mirrors ``actedit_ros.training.train._train`` (AdamW, accelerate); the forward is its
    ``training_micro_step`` (so :func:`editaction_objective`). Returns seconds per step and memory figures.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from diffusers import DDPMScheduler

    from actedit_ros.training.data import NegativeInstructionSampler
    from actedit_ros.training.losses import LossWeights, freeze_cross_attention
    from actedit_ros.training.train import build_parser, load_starting_model, training_micro_step

    args = build_parser().parse_args(["--pretrained-model", str(model_dir), "--dataset-dir", "-", "--output-dir", "-",
                                      "--mixed-precision", mixed_precision])
    accelerator = Accelerator(mixed_precision=mixed_precision)
    try:
        components, _ = load_starting_model(str(model_dir))
        unet, vae, text_encoder = components.unet, components.vae, components.text_encoder
        prediction_type = components.scheduler.config.get("prediction_type", "epsilon")
        noise_scheduler = DDPMScheduler.from_config(components.scheduler.config, prediction_type=prediction_type)
        weights = LossWeights(diffusion=args.diffusion_loss_weight, action=args.action_loss_weight, regularizer=0.1,
                              action_temperature=args.action_temperature)
        unet.requires_grad_(True)
        freeze_cross_attention(unet)
        reference = copy.deepcopy(unet).requires_grad_(False).eval()
        if gradient_checkpointing:
            unet.enable_gradient_checkpointing()
        unet.train()
        weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision, torch.float32)
        for module in (vae, text_encoder, reference):
            module.to(accelerator.device, dtype=weight_dtype)
        trainable = [p for p in unet.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                      weight_decay=args.adam_weight_decay, eps=args.adam_epsilon)
        unet, optimizer = accelerator.prepare(unet, optimizer)
        view = EditActionComponents(unet=accelerator.unwrap_model(unet), vae=vae, text_encoder=text_encoder,
                                    tokenizer=components.tokenizer, scheduler=components.scheduler,
                                    model_path=components.model_path, resolution=size, device=accelerator.device,
                                    dtype=torch.float32)
        predictor = GoalPredictor(view)

        def embed(texts: list[str]) -> torch.Tensor:
            return torch.cat([predictor.text_embedding(text) for text in texts]).to(weight_dtype)

        negatives = NegativeInstructionSampler(list(TRAIN_INSTRUCTIONS))
        rng = np.random.default_rng(0)
        pixels = torch.from_numpy(rng.integers(0, 256, (2, batch, 3, size, size), dtype=np.uint8))
        data = {"input_pixels": pixels[0], "edited_pixels": pixels[1], "index": torch.arange(batch),
                "instruction": [TRAIN_INSTRUCTIONS[i % len(TRAIN_INSTRUCTIONS)] for i in range(batch)]}
        if accelerator.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(accelerator.device)
        seconds, losses = [], []
        for step in range(steps):
            synchronize(accelerator.device)
            started = time.perf_counter()
            generator = torch.Generator().manual_seed(step)
            terms = training_micro_step(data, generator, args, unet, reference, vae, vae.config.scaling_factor,
                                        noise_scheduler, prediction_type, weights, negatives, embed, weight_dtype,
                                        accelerator)
            accelerator.backward(terms.total)
            accelerator.clip_grad_norm_(trainable, args.max_grad_norm)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            synchronize(accelerator.device)
            seconds.append(time.perf_counter() - started)
            losses.append(terms.as_log())
        gpu_peak = (torch.cuda.max_memory_allocated(accelerator.device) / 2**30
                    if accelerator.device.type == "cuda" else None)
        return {"seconds": seconds, "losses": losses, "peak_rss_mib": peak_rss_mib(), "gpu_peak_gib": gpu_peak,
                "trainable_parameters": sum(p.numel() for p in trainable), "device": str(accelerator.device),
                "weight_dtype": str(weight_dtype), "gradient_checkpointing": gradient_checkpointing}
    finally:
        AcceleratorState._reset_state()
        GradientState._reset_state()
