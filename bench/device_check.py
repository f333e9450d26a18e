"""The full-size path on a GPU in one call: SD-1.5-shaped InstructPix2Pix (architecture-identical random weights).

Run it through ``bash bench/device_check.sh`` (installs the wheels a GPU machine lacks, then runs this). It builds the
model in the cache (``actedit_ros.editing.full_size``), loads it through the project's loader and GoalPredictor, and
prints one markdown table:

- prediction 512x512, 20 steps, fp16 (SDPA attention, channels-last UNet: the loader's CUDA defaults): p50/p95 over
  ``--repeats`` runs after warm-up, peak GPU memory; the same in bf16, with channels-last off, with
  ``torch.compile`` (compile time apart), and with 4 candidates in one batch (the time includes GoalPredictor's
  ranking of the candidates);
- the fp16 non-finite guard, forced (the VAE decode returns NaN unless in float32) and redone in float32;
- one training step, 256x256, batch 8, the full EditAction objective, accelerate bf16 mixed precision.

No per-frame editor row: progress scoring (``actedit_ros.progress``) never runs the editor on live frames.

``--tiny`` runs the same on a CPU with the narrow variant of the model (float32 stands in for fp16, compile uses the
eager backend), which is how the test suite keeps this script working.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from full_size_measure import (Timing, forced_nonfinite_decode, start_image, synchronize,  # noqa: E402
                               time_predictions, training_step)
from table import Row, print_table  # noqa: E402

from actedit_ros.editing import GoalPredictor  # noqa: E402
from actedit_ros.editing.full_size import ensure_model  # noqa: E402

KIND = "SD-1.5 IP2P, architecture-identical random weights"
TARGET, STRETCH = 0.3, 0.15  # seconds, 512 px 20 steps fp16, H100/H200-class


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="the narrow model (CPU-sized; for tests)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument("--model-dir", default=None, help="where the model is built (default: the cache)")
    parser.add_argument("--size", type=int, default=None, help="prediction side in px (default 512; tiny 64)")
    parser.add_argument("--steps", type=int, default=None, help="sampler steps (default 20; tiny 4)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per row (default 7; tiny 2)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed runs before each row (default 2; tiny 1)")
    parser.add_argument("--train-size", type=int, default=None, help="training image side (default 256; tiny 64)")
    parser.add_argument("--train-batch", type=int, default=None, help="training batch (default 8; tiny 2)")
    parser.add_argument("--skip-compile", action="store_true", help="no torch.compile row")
    parser.add_argument("--output", type=Path, default=None, help="also write the table (markdown) here")
    return parser


def resolve_defaults(args: argparse.Namespace) -> argparse.Namespace:
    tiny = args.tiny
    for name, full, small in (("size", 512, 64), ("steps", 20, 4), ("repeats", 7, 2), ("warmup", 2, 1),
                              ("train_size", 256, 64), ("train_batch", 8, 2)):
        if getattr(args, name) is None:
            setattr(args, name, small if tiny else full)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def half_dtype(device: str, name: str) -> str:
    """fp16/bf16 on a GPU; on a CPU fp16 is replaced by float32 (the CPU path), bf16 stays."""
    return "float32" if device == "cpu" and name == "float16" else name


class Session:
    """One loaded predictor at a time (the full-size UNet is 1.7 GB in fp16), rows collected as they come."""

    def __init__(self, args: argparse.Namespace, model: Path):
        self.args, self.model, self.rows = args, model, []
        self.image = start_image(args.size)

    def load(self, dtype: str) -> GoalPredictor:
        gc.collect()
        if self.args.device.startswith("cuda"):
            torch.cuda.empty_cache()
        predictor = GoalPredictor.from_pretrained(str(self.model), device=self.args.device, dtype=dtype)
        predictor.resolution = self.args.size
        return predictor

    def reset_peak(self) -> None:
        if self.args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()

    def memory(self) -> str:
        if not self.args.device.startswith("cuda"):
            return "CPU"
        return f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB"

    def prediction_row(self, label: str, predictor: GoalPredictor, num_candidates: int = 1,
                       target: bool = False) -> Timing:
        a = self.args
        self.reset_peak()
        timing = time_predictions(predictor, self.image, a.steps, a.repeats, num_candidates=num_candidates,
                                  warmup=a.warmup)
        attention = type(next(iter(predictor.components.unet.attn_processors.values()))).__name__
        detail = (f"{a.repeats} runs after {a.warmup} warm-up, {self.memory()}, {predictor.components.dtype}, "
                  f"attention {attention}; float32 redos in timed runs: {timing.fallbacks}")
        meets = (timing.p50 <= TARGET) if target and a.device.startswith("cuda") and not a.tiny else None
        self.rows.append(Row(f"prediction {a.size} px, {a.steps} steps, {label}{', tiny' if a.tiny else ''}",
                             f"p50 {timing.p50:.3f} s, p95 {timing.p95:.3f} s",
                             f"<= {TARGET} s (stretch {STRETCH} s)" if target else "", meets, detail))
        return timing


def layout(predictor: GoalPredictor) -> str:
    """The loader's defaults as loaded: SDPA attention everywhere; channels-last UNet on CUDA."""
    weight = predictor.components.unet.conv_in.weight
    return "channels-last" if weight.is_contiguous(memory_format=torch.channels_last) else "contiguous"


def run_predictions(session: Session) -> None:
    a = session.args
    fp16 = half_dtype(a.device, "float16")
    predictor = session.load(fp16)
    session.prediction_row(f"{fp16} ({layout(predictor)})", predictor, target=True)
    session.prediction_row(f"{fp16}, 4 candidates in one batch, then ranked by the editor", predictor,
                           num_candidates=4)
    predictor.components.unet.to(memory_format=torch.contiguous_format)
    session.prediction_row(f"{fp16}, contiguous (channels-last off)", predictor)
    predictor.components.unet.to(memory_format=torch.channels_last)
    guard = forced_nonfinite_decode(predictor if fp16 != "float32" else session.load("bfloat16"), session.image)
    session.rows.append(Row("fp16 non-finite guard, decode forced to NaN unless float32",
                            "redone in float32" if guard.fp32_fallback else "NOT redone", "float32 redo",
                            guard.fp32_fallback,
                            "; ".join(guard.notes) or "no note"))
    if not a.skip_compile:
        compile_row(session, predictor)
    del predictor
    bf16 = session.load("bfloat16")
    session.prediction_row(f"bfloat16 ({layout(bf16)})", bf16)


def compile_row(session: Session, predictor: GoalPredictor) -> None:
    a = session.args
    backend = "eager" if a.device == "cpu" else "inductor"
    unet = predictor.components.unet
    predictor.components.unet = torch.compile(unet, backend=backend)
    try:
        synchronize(predictor.device)
        started = time.perf_counter()
        predictor.predict(session.image, "warm the compiled graph", steps=a.steps, seed=99)
        synchronize(predictor.device)
        first = time.perf_counter() - started
        timing = session.prediction_row(f"{predictor.components.dtype}, torch.compile ({backend})", predictor)
        session.rows[-1].detail += f"; compile: first prediction {first:.1f} s, {first - timing.p50:.1f} s over p50"
    except Exception as err:  # a compiler failure is a finding, not a crash: the other rows still count
        session.rows.append(Row(f"prediction, torch.compile ({backend})", "failed", "", None,
                                f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"))
    finally:
        predictor.components.unet = unet


def run_training(session: Session) -> None:
    a = session.args
    gc.collect()
    precision = "bf16" if a.device.startswith("cuda") else "no"
    result = training_step(session.model, a.train_size, a.train_batch, mixed_precision=precision,
                           gradient_checkpointing=False, steps=2)
    memory = (f"peak GPU memory {result['gpu_peak_gib']:.1f} GiB" if result["gpu_peak_gib"] is not None
              else f"peak RSS {result['peak_rss_mib']:.0f} MiB")
    session.rows.append(Row(f"training step, {a.train_size} px, batch {a.train_batch}, full EditAction objective, "
                            f"accelerate {precision}{', tiny' if a.tiny else ''}", f"{result['seconds'][-1]:.3f} s",
                            "", None, f"second step (first {result['seconds'][0]:.2f} s), {memory}, "
                            f"{result['trainable_parameters'] / 1e6:.1f} M trainable, loss "
                            f"{result['losses'][-1]['loss']:.4f}"))


def main(argv: list[str] | None = None) -> int:
    args = resolve_defaults(build_parser().parse_args(argv))
    started = time.perf_counter()
    model = ensure_model(args.model_dir, tiny=args.tiny)
    built = time.perf_counter() - started
    session = Session(args, model)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    session.rows.append(Row("model", KIND + (" (tiny variant)" if args.tiny else ""), "", None,
                            f"{model}, ready in {built:.0f} s; device {device}; torch {torch.__version__}"))
    run_predictions(session)
    run_training(session)
    text = print_table(session.rows, f"device check ({time.perf_counter() - started:.0f} s)")
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
