"""The SD-1.5 InstructPix2Pix architecture with random weights, for measuring the full-size path without downloads.

Speed and memory do not depend on the weights' values, so an **architecture-identical** model built from the
configs shipped in ``configs/sd15_ip2p/`` (8-channel UNet2DConditionModel with SD-1.5's block widths and
cross-attention 768, SD-1.5's AutoencoderKL, a CLIP ViT-L/14-sized text encoder, InstructPix2Pix's Euler-ancestral
scheduler) costs what the public ``timbrooks/instruct-pix2pix`` checkpoint costs. Its goal images are noise.

:func:`ensure_model` builds it once, lazily, into a cache folder (``<cache>/sd15-arch``, about 4.3 GB of float32
safetensors; never in the repository, never in CI) as a diffusers directory, which then loads through the same
loader and :class:`~actedit_ros.editing.GoalPredictor` as a downloaded checkpoint. ``tiny=True`` builds the same
layout with narrow layers (a few MB), so tests and ``bench/device_check.sh --tiny`` run the same code on a CPU.

The tokenizer is written here, not downloaded: a CLIP BPE tokenizer with SD-1.5's vocabulary size (49408) and
special-token ids, whose vocabulary is the printable ASCII characters plus never-produced filler entries. Prompts
are padded to 77 tokens either way, so the text encoder's cost is the real one.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from .model_store import cache_dir
from .tiny import write_model_index

CONFIG_DIR = Path(__file__).resolve().parent / "configs" / "sd15_ip2p"
CONFIG_FILES = {
    "unet": "unet/config.json",
    "vae": "vae/config.json",
    "text_encoder": "text_encoder/config.json",
    "scheduler": "scheduler/scheduler_config.json",
}
# Parameter counts of SD-1.5 InstructPix2Pix: the SD-1.5 UNet's 859,520,964 plus 4 more input channels of conv_in
# (4 x 320 x 3 x 3 = 11,520), SD-1.5's VAE, and CLIP ViT-L/14's text tower.
SD15_PARAMETERS = {"unet": 859_532_484, "vae": 83_653_863, "text_encoder": 123_060_480}
# The tiny variant: the same block types, levels and downsampling (so the same sizes work), narrow layers.
TINY_OVERRIDES = {
    "unet": {"block_out_channels": [32, 32, 64, 64], "layers_per_block": 1, "cross_attention_dim": 32,
             "sample_size": 8},
    "vae": {"block_out_channels": [32, 32, 32, 32], "layers_per_block": 1, "sample_size": 64},
    "text_encoder": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                     "projection_dim": 32},
}
COMPLETE_MARKER = ".actedit_complete.json"
MAX_PROMPT_TOKENS = 77


def load_configs(tiny: bool = False) -> dict[str, dict]:
    """The shipped component configs (with the tiny overrides when ``tiny``), as plain dicts."""
    configs = {}
    for name, relative in CONFIG_FILES.items():
        path = CONFIG_DIR / relative
        try:
            configs[name] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise RuntimeError(f"the shipped config {path} cannot be read ({err}); reinstall actedit_ros") from err
        if tiny:
            configs[name].update(TINY_OVERRIDES.get(name, {}))
    return configs


def instantiate(configs: dict[str, dict], name: str) -> torch.nn.Module:
    """The UNet, VAE or text encoder of ``configs``, randomly initialised on torch's current default device.

    Under ``with torch.device("meta"):`` nothing is allocated: that is how the structural test counts parameters.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    if name == "unet":
        return UNet2DConditionModel.from_config(configs["unet"])
    if name == "vae":
        return AutoencoderKL.from_config(configs["vae"])
    if name == "text_encoder":
        return CLIPTextModel(CLIPTextConfig(**_without_meta(configs["text_encoder"])))
    raise ValueError(f"no component {name!r}: use unet, vae or text_encoder")


def _without_meta(config: dict) -> dict:
    return {k: v for k, v in config.items() if not k.startswith("_") and k not in ("architectures", "model_type")}


def write_clip_tokenizer(folder: Path, vocab_size: int, bos_token_id: int, eos_token_id: int) -> None:
    """A CLIP BPE tokenizer of ``vocab_size`` entries with the given special-token ids (no merges, no download)."""
    from transformers import CLIPTokenizer

    specials = {bos_token_id: "<|startoftext|>", eos_token_id: "<|endoftext|>"}
    characters = [chr(code) for code in range(33, 127)]  # CLIP's byte-to-unicode map is the identity here
    tokens = iter([c for char in characters for c in (char, char + "</w>")])
    vocab = {}
    for token_id in range(vocab_size):
        token = specials.get(token_id) or next(tokens, None) or f"<|filler_{token_id}|>"
        vocab[token] = token_id
    if len(vocab) != vocab_size or set(specials.values()) - set(vocab):
        raise ValueError(f"cannot lay out a {vocab_size}-entry vocabulary with special ids {sorted(specials)}")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"),
                              model_max_length=MAX_PROMPT_TOKENS)
    tokenizer.save_pretrained(folder)


def default_model_dir(tiny: bool = False) -> Path:
    """Where :func:`ensure_model` builds the model unless told otherwise (``ACTEDIT_CACHE`` moves the cache)."""
    return cache_dir() / ("sd15-arch-tiny" if tiny else "sd15-arch")


def _fingerprint(configs: dict[str, dict], seed: int) -> dict:
    return {"configs": configs, "seed": seed, "kind": "architecture-identical random weights"}


def ensure_model(out_dir: str | os.PathLike | None = None, tiny: bool = False, seed: int = 0) -> Path:
    """The model directory, built first if it is missing, incomplete or from other configs; returns its path.

    The build writes to ``<out_dir>.partial`` and renames it when every file is written, so an interrupted build is
    redone rather than loaded. One component at a time is in memory (the UNet, 3.4 GB in float32, at most).
    """
    out = Path(out_dir).expanduser() if out_dir else default_model_dir(tiny)
    configs = load_configs(tiny)
    fingerprint = _fingerprint(configs, seed)
    marker = out / COMPLETE_MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == fingerprint:
                return out
        except json.JSONDecodeError:
            pass
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    _build(partial, configs, seed)
    (partial / COMPLETE_MARKER).write_text(json.dumps(fingerprint, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial.rename(out)
    return out


def _build(out: Path, configs: dict[str, dict], seed: int) -> None:
    from diffusers import EulerAncestralDiscreteScheduler

    out.mkdir(parents=True)
    torch.manual_seed(seed)
    for name in ("unet", "vae", "text_encoder"):
        module = instantiate(configs, name)
        module.save_pretrained(out / name, safe_serialization=True)
        del module
    text = configs["text_encoder"]
    write_clip_tokenizer(out / "tokenizer", text["vocab_size"], text["bos_token_id"], text["eos_token_id"])
    scheduler_config = configs["scheduler"]
    EulerAncestralDiscreteScheduler.from_config(scheduler_config).save_pretrained(out / "scheduler")
    write_model_index(out, text_encoder="CLIPTextModel", tokenizer="CLIPTokenizer",
                      scheduler=scheduler_config["_class_name"])
