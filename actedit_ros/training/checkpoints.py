"""Resumable checkpoints: accelerate state plus the EMA weights as safetensors, found, written, pruned and restored.

A checkpoint is ``<output-dir>/checkpoints/checkpoint-<step>/``: accelerate's state (model, optimizer, LR schedule,
RNG; safetensors), ``unet_ema/`` when EMA is on, and ``training_state.json`` (step, micro-batch, flags), written
last: a checkpoint without it is incomplete and ignored by ``latest``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path

from .cli import RESUME_NEUTRAL_FLAGS
from .errors import TrainingError

log = logging.getLogger("actedit_ros.training")

CHECKPOINTS_DIR = "checkpoints"
CONFIG_NAME = "training_config.json"
EMA_DIR = "unet_ema"
STATE_NAME = "training_state.json"


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


@contextlib.contextmanager
def ema_applied(ema, module):
    """``module`` holds the EMA weights inside the block (no-op without EMA); its own weights come back after."""
    if ema is None:
        yield module
        return
    ema.store(module.parameters())
    ema.copy_to(module.parameters())
    try:
        yield module
    finally:
        ema.restore(module.parameters())


def find_resume_checkpoint(resume_from: str | None, output_dir: Path, main_process: bool = True) -> Path | None:
    """The checkpoint ``--resume-from-checkpoint`` names ('latest' or a folder), or None to start afresh."""
    if not resume_from:
        return None
    if resume_from == "latest":
        found = list_checkpoints(output_dir)
        if not found and main_process:
            log.warning("--resume-from-checkpoint latest: no checkpoint in %s, starting afresh",
                        output_dir / CHECKPOINTS_DIR)
        return found[-1] if found else None
    folder = Path(resume_from).expanduser().resolve()
    if not (folder / STATE_NAME).is_file():
        raise TrainingError(f"--resume-from-checkpoint {folder} is not a checkpoint written by actedit-train "
                            f"(no {STATE_NAME})")
    return folder


def restore_checkpoint(folder: Path, args, accelerator, ema, names: list[str]) -> int:
    """Load the state saved in ``folder`` (weights, optimizer, LR schedule, RNG, EMA); returns its global step.

    Flags that change what is trained and differ from the checkpoint's are named in a warning.
    """
    accelerator.load_state(str(folder))
    state = json.loads((folder / STATE_NAME).read_text())
    global_step = int(state["global_step"])
    saved_flags = state.get("flags", {})
    changed = sorted(key for key, value in vars(args).items()
                     if key not in RESUME_NEUTRAL_FLAGS and key in saved_flags and saved_flags[key] != value)
    if changed and accelerator.is_main_process:
        log.warning("resuming with flags that differ from the checkpoint's (%s): the run continues, but not "
                    "exactly as the original would have", ", ".join(
                        f"--{k.replace('_', '-')} {saved_flags[k]!r} -> {getattr(args, k)!r}" for k in changed))
    if ema is not None:
        if not (folder / EMA_DIR).is_dir():
            raise TrainingError(f"{folder} has no EMA weights but --use-ema is set")
        load_ema(ema, names, folder / EMA_DIR)
    if accelerator.is_main_process:
        log.info("resumed from %s at step %d", folder, global_step)
    return global_step


def write_checkpoint(output_dir: Path, step: int, args, accelerator, ema, names: list[str]) -> Path:
    """Save a checkpoint of ``step`` (main process only), first removing the oldest beyond the total limit."""
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
    return folder
