"""actedit-train's command line: the flags (:func:`build_parser`) and their checks (:func:`check_args`)."""
from __future__ import annotations

import argparse

from .data import DEFAULT_IGNORED_WORDS, IMAGE_MODES
from .errors import TrainingError
from .losses import PREDICTION_TYPES

# Flags that may change between a run and its resumption without changing what is trained.
RESUME_NEUTRAL_FLAGS = {"resume_from_checkpoint", "stop_at_step", "num_threads", "no_progress", "dataloader_workers",
                        "checkpointing_steps", "checkpoints_total_limit", "export_with_checkpoints", "validation_steps",
                        "num_validation_pairs", "validation_inference_steps", "validation_text_guidance",
                        "validation_image_guidance", "text_cache_size", "output_dir", "cache_latents",
                        "prefetch_encoders", "latent_cache_file"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actedit-train", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Train an InstructPix2Pix/EditAction goal-image model with the EditAction objective "
                    "(static diffusion loss + action loss + regularizer to the initial UNet). Runs under "
                    "`accelerate launch` for multi-GPU; plain `actedit-train` runs on one device (CPU: float32).")
    for add_flags in (_model_flags, _data_flags, _optimisation_flags, _objective_flags, _dropout_flags,
                      _output_flags):
        add_flags(parser)
    return parser


def _model_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of the starting model, the UNet and the output directory."""
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


def _data_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of the dataset and how its images are read."""
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
    data.add_argument("--instruction-variant-prob", type=float, default=0.0,
                      help="phrasing augmentation: for each pair of a micro-batch, with this probability its "
                           "instruction is replaced by one of its index record's instruction_variants (other "
                           "wordings, chosen uniformly); pairs without variants keep theirs. Drawn before the random "
                           "flip mirrors left/right; negatives of the action loss still come from the original "
                           "instructions and share no word with the one trained on. 0 = off")
    data.add_argument("--latent-cache-file", default=None, metavar="PATH",
                      help="with --cache-latents: keep the cache in this safetensors file too, loaded at the start "
                           "and written as it grows and at the end, so a resumed run, the next stage or another seed "
                           "on the same dataset and VAE skips the encoder from its first step. The file records what "
                           "its latents depend on (encoder weights, dataset index, image size and mode) and is "
                           "ignored, then replaced, when any of it changed")
    data.add_argument("--prefetch-encoders", action="store_true",
                      help="encode the next micro-batch's instructions (and, with --cache-latents, its images) on a "
                           "second thread while this one trains: on a CPU with --num-threads 1 the frozen encoders "
                           "then use a second core (measured on the v3 world recipe: 1.72 -> 0.99 s per step). "
                           "Same draws, the same resume; embeddings may differ from a run without it in the last bits")
    data.add_argument("--cache-latents", action="store_true",
                      help="keep every image's VAE latent distribution (mean, std) in memory after its first use, so "
                           "later epochs skip the VAE encoder (the frozen VAE gives the same values; noise and "
                           "conditioning dropout are still drawn every step). Costs 2 x 2 x latent size floats per "
                           "pair: worth it for small models and datasets, not for SD-1.5 on large ones")
    data.add_argument("--dataloader-workers", type=int, default=0,
                      help="DataLoader worker processes decoding images (0 = in the training process)")


def _optimisation_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of the optimizer, its schedule, precision, EMA and the run length."""
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


def _objective_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of the EditAction objective: loss weights, action temperature, negatives."""
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
    loss.add_argument("--change-loss-weight", type=float, default=0.0,
                      help="extra weight of the diffusion loss where the edit changes the image (latent pixels where "
                           "input and edited latents differ, dilated by one): 1 + W there, 1 elsewhere, normalised "
                           "per pair so the loss keeps its scale; 0 = unweighted")
    loss.add_argument("--cross-attention", choices=["auto", "frozen", "trainable"], default="auto",
                      help="the UNet's text cross-attention (attn2) layers: 'frozen' as the paper does when "
                           "fine-tuning, 'trainable' to unfreeze; 'auto' = frozen when starting from pretrained "
                           "weights, trainable for a random-init UNet (frozen random layers cannot learn the text)")
    loss.add_argument("--negative-ignore-words", default=",".join(DEFAULT_IGNORED_WORDS),
                      help="comma-separated words ignored when picking a negative instruction that 'shares no token' "
                           "with the true one (empty string = strict: no shared word at all)")


def _dropout_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of conditioning dropout for classifier-free guidance."""
    cfg = parser.add_argument_group("classifier-free guidance (conditioning dropout as InstructPix2Pix)")
    cfg.add_argument("--drop-text-prob", type=float, default=0.05,
                     help="probability that only the instruction is replaced by the empty prompt")
    cfg.add_argument("--drop-image-prob", type=float, default=0.05,
                     help="probability that only the input-image latents are zeroed")
    cfg.add_argument("--drop-both-prob", type=float, default=0.05,
                     help="probability that both are dropped (InstructPix2Pix: 5%% each of text, image, both)")


def _output_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of checkpoints, validation grids and logs."""
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
    if args.change_loss_weight < 0:
        raise TrainingError(f"--change-loss-weight must be >= 0, got {args.change_loss_weight}")
    if getattr(args, "latent_cache_file", None) and not args.cache_latents:
        raise TrainingError("--latent-cache-file keeps the latent cache on disk: it needs --cache-latents")
    if not 0 <= args.instruction_variant_prob <= 1:
        raise TrainingError(f"--instruction-variant-prob must be in [0, 1], got {args.instruction_variant_prob}")
    if not 0 <= args.ema_decay < 1:
        raise TrainingError(f"--ema-decay must be in [0, 1), got {args.ema_decay}")
