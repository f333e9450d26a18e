"""The starting model (pretrained or a random-init UNet) and the diffusers-format export of the trained one."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from .errors import TrainingError


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


def _swap_in(written: Path, target: Path) -> None:
    """Replace folder `target` by the freshly written `written` without rewriting files in place: a process that
    has the old weights memory-mapped (a node or an evaluation loading the model while training exports every
    checkpoint) keeps reading the old files instead of dying of SIGBUS on a truncated one."""
    old = target.with_name(target.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    written.rename(target)
    if old.exists():
        shutil.rmtree(old)


def export_model(out_dir: Path, unet, components, source_index: dict, prediction_type: str, resolution: int) -> None:
    """Write a diffusers-format InstructPix2Pix directory (safetensors) that the project's loader reads."""
    from actedit_ros.editing.loading import TEXT_ENCODER_PACKAGE_KEY
    from actedit_ros.editing.tiny import write_model_index

    out_dir.mkdir(parents=True, exist_ok=True)
    unet.save_pretrained(out_dir / "unet.tmp", safe_serialization=True)
    _swap_in(out_dir / "unet.tmp", out_dir / "unet")
    text_package = source_index.get(TEXT_ENCODER_PACKAGE_KEY)
    frozen = ("vae",) if text_package else ("vae", "text_encoder", "tokenizer")
    for name in frozen:
        if Path(components.model_path).resolve() / name != (out_dir / name).resolve():
            copy_frozen_component(Path(components.model_path) / name, out_dir / f"{name}.tmp")
            _swap_in(out_dir / f"{name}.tmp", out_dir / name)
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
