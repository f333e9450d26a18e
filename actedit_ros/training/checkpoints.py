"""Resumable checkpoints without pickle: found, written, pruned and restored.

A checkpoint is ``<output-dir>/checkpoints/checkpoint-<step>/``, every file safetensors or JSON:

- ``model.safetensors``: the trained UNet's ``state_dict`` (the unwrapped module: the names of the diffusers UNet,
  whatever accelerate wraps it in or whether gradient checkpointing is on);
- ``optimizer.safetensors``: AdamW's moments and step counts, its hyper-parameters as JSON in the file's metadata
  (:mod:`.state_io`, shared with the other trainers);
- ``lr_scheduler.json``: the LR schedule's state; ``grad_scaler.json``: the AMP grad scaler's (fp16 only);
- ``unet_ema/`` when EMA is on: the shadow weights as safetensors and the EMA counters as JSON;
- ``training_state.json`` (step, micro-batch, flags), written last: a checkpoint without it is incomplete and ignored
  by ``latest``. The folder is written as ``checkpoint-<step>.partial`` and renamed when complete.

Nothing else is needed for an exact resume: every random draw of a step comes from a generator keyed by (seed,
process, micro-batch number) and the data order from a permutation keyed by (seed, epoch) (:mod:`.step`), both
recomputed from the step, so no RNG or sampler state is stored.

A checkpoint of the older format (accelerate's ``save_state``: ``optimizer.bin``, ``scheduler.bin``,
``random_states_*.pkl``, pickles) is never unpickled. It resumes degraded, with a warning: the UNet weights from its
``model.safetensors`` and the EMA from ``unet_ema/``, the step from ``training_state.json`` and the LR schedule set to
that step; the optimizer's moments start afresh, so the run does not continue exactly as it would have.
"""
from __future__ import annotations

import contextlib
import json
import logging
import shutil
import warnings
from pathlib import Path

from .cli import RESUME_NEUTRAL_FLAGS
from .errors import TrainingError
from .state_io import load_optimizer, read_json_state, save_optimizer, write_json_state

log = logging.getLogger("actedit_ros.training")

CHECKPOINTS_DIR = "checkpoints"
CONFIG_NAME = "training_config.json"
EMA_DIR = "unet_ema"
STATE_NAME = "training_state.json"
MODEL_NAME = "model.safetensors"
OPTIMIZER_NAME = "optimizer.safetensors"
SCHEDULER_NAME = "lr_scheduler.json"
SCALER_NAME = "grad_scaler.json"
PARTIAL_SUFFIX = ".partial"
# What accelerate's save_state wrote beside the weights (the older format): pickles, never read.
PICKLED_SUFFIXES = (".bin", ".pkl", ".pt", ".pth", ".ckpt")


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


def pickled_files(folder: Path) -> list[str]:
    """Names of the files in ``folder`` (recursively) that are pickles by their suffix (accelerate's older state)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.suffix in PICKLED_SUFFIXES)


def unet_state_dict(unet) -> dict:
    """The UNet's weights as plain CPU tensors, keyed as the diffusers UNet names them."""
    return {name: tensor.detach().cpu().contiguous() for name, tensor in unet.state_dict().items()}


def load_unet_weights(unet, path: Path) -> None:
    """``model.safetensors`` into ``unet`` (the unwrapped module); a DDP/compile prefix an older checkpoint may carry
    (accelerate saved the wrapped model) is dropped."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise TrainingError(f"--resume-from-checkpoint {path.parent} has no {path.name} (the UNet weights); pickled "
                            f"weights are never read")
    tensors = load_file(str(path))
    for prefix in ("module.", "_orig_mod."):
        if tensors and all(key.startswith(prefix) for key in tensors):
            tensors = {key[len(prefix):]: value for key, value in tensors.items()}
    try:
        unet.load_state_dict(tensors, strict=True)
    except RuntimeError as err:
        raise TrainingError(f"{path} does not fit the UNet being trained (check --pretrained-model and "
                            f"--unet-config against the checkpoint's training_state.json): {err}") from err


def _warn_changed_flags(state: dict, args, main_process: bool) -> None:
    saved_flags = state.get("flags", {})
    changed = sorted(key for key, value in vars(args).items()
                     if key not in RESUME_NEUTRAL_FLAGS and key in saved_flags and saved_flags[key] != value)
    if changed and main_process:
        log.warning("resuming with flags that differ from the checkpoint's (%s): the run continues, but not "
                    "exactly as the original would have", ", ".join(
                        f"--{k.replace('_', '-')} {saved_flags[k]!r} -> {getattr(args, k)!r}" for k in changed))


def _schedule_steps(accelerator, global_step: int) -> int:
    """How many times the LR schedule has stepped after ``global_step`` optimizer steps: accelerate's prepared
    scheduler steps once per process per optimizer step (unless batches are split)."""
    return global_step * (1 if accelerator.split_batches else accelerator.num_processes)


def fast_forward_schedule(lr_scheduler, steps: int) -> None:
    """Sets a closed-form LR schedule (diffusers' schedules are all LambdaLR) and its optimizer's learning rates to
    where ``steps`` calls of ``step()`` leave them."""
    inner = getattr(lr_scheduler, "scheduler", lr_scheduler)  # accelerate's wrapper holds the torch scheduler
    inner.last_epoch = steps - 1
    with warnings.catch_warnings():  # "lr_scheduler.step() before optimizer.step()": intended here
        warnings.simplefilter("ignore", UserWarning)
        inner.step()


def _restore_exact(folder: Path, accelerator, optimizer, lr_scheduler) -> None:
    try:
        load_optimizer(optimizer, folder / OPTIMIZER_NAME)
    except ValueError as err:
        raise TrainingError(f"--resume-from-checkpoint {folder}: {err}") from err
    lr_scheduler.load_state_dict(read_json_state(folder / SCHEDULER_NAME))
    scaler = getattr(accelerator, "scaler", None)
    if scaler is not None:
        if (folder / SCALER_NAME).is_file():
            scaler.load_state_dict(read_json_state(folder / SCALER_NAME))
        elif accelerator.is_main_process:
            log.warning("%s has no %s (written without fp16): the grad scaler starts afresh", folder, SCALER_NAME)


def restore_checkpoint(folder: Path, args, accelerator, unet, optimizer, lr_scheduler, ema, names: list[str]) -> int:
    """Load the state saved in ``folder`` (UNet weights, optimizer, LR schedule, grad scaler, EMA); returns its
    global step. Reads safetensors and JSON only. An older-format checkpoint (accelerate's pickles) resumes
    degraded, with a warning (module docstring).

    Flags that change what is trained and differ from the checkpoint's are named in a warning.
    """
    state = json.loads((folder / STATE_NAME).read_text())
    global_step = int(state["global_step"])
    _warn_changed_flags(state, args, accelerator.is_main_process)
    if ema is not None and not (folder / EMA_DIR).is_dir():
        raise TrainingError(f"{folder} has no EMA weights but --use-ema is set")
    load_unet_weights(accelerator.unwrap_model(unet), folder / MODEL_NAME)
    exact = (folder / OPTIMIZER_NAME).is_file() and (folder / SCHEDULER_NAME).is_file()
    if exact:
        _restore_exact(folder, accelerator, optimizer, lr_scheduler)
    else:
        fast_forward_schedule(lr_scheduler, _schedule_steps(accelerator, global_step))
        if accelerator.is_main_process:
            old = pickled_files(folder)
            log.warning("%s is an older-format checkpoint (%s; not read, pickles are never unpickled): resuming "
                        "DEGRADED, not exactly: UNet weights%s from %s, step %d from %s, the LR schedule set to step "
                        "%d (lr %.3g), the optimizer's moments start afresh", folder,
                        ", ".join(old) if old else f"no {OPTIMIZER_NAME}", " and EMA" if ema is not None else "",
                        MODEL_NAME, global_step, STATE_NAME, global_step, lr_scheduler.get_last_lr()[0])
    if ema is not None:
        load_ema(ema, names, folder / EMA_DIR)
    if accelerator.is_main_process:
        log.info("resumed from %s at step %d%s", folder, global_step, "" if exact else " (degraded)")
    return global_step


def write_checkpoint(output_dir: Path, step: int, args, accelerator, unet, optimizer, lr_scheduler, ema,
                     names: list[str]) -> Path:
    """Save a checkpoint of ``step`` (main process only), first removing the oldest beyond the total limit."""
    from safetensors.torch import save_file

    found = list_checkpoints(output_dir)
    if args.checkpoints_total_limit:
        for old in found[:max(0, len(found) - args.checkpoints_total_limit + 1)]:
            shutil.rmtree(old)
    folder = output_dir / CHECKPOINTS_DIR / f"checkpoint-{step}"
    partial = folder.with_name(folder.name + PARTIAL_SUFFIX)
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    save_file(unet_state_dict(accelerator.unwrap_model(unet)), str(partial / MODEL_NAME), metadata={"format": "pt"})
    save_optimizer(optimizer, partial / OPTIMIZER_NAME)
    write_json_state(lr_scheduler.state_dict(), partial / SCHEDULER_NAME)
    if getattr(accelerator, "scaler", None) is not None:
        write_json_state(accelerator.scaler.state_dict(), partial / SCALER_NAME)
    if ema is not None:
        save_ema(ema, names, partial / EMA_DIR)
    # Written last: a checkpoint without it is incomplete and ignored by 'latest'.
    (partial / STATE_NAME).write_text(json.dumps({"global_step": step, "micro_batch": step *
                                                  args.gradient_accumulation_steps, "flags": vars(args)},
                                                 indent=2, default=str) + "\n")
    if folder.exists():  # a checkpoint of the same step from an earlier run in this output directory
        shutil.rmtree(folder)
    partial.rename(folder)
    return folder
