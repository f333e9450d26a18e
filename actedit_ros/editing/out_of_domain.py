"""Say when a start frame is unlike what a model was trained on (its autoencoder cannot reproduce it).

A model directory may ship ``out_of_domain.json`` next to ``model_index.json``::

    {"metric": "vae_reconstruction_psnr_db", "min_psnr_db": 21.6, ...measurement notes...}

Then every start frame is resized to the model's working size, encoded and decoded by the model's own VAE (the
encoding is the one the prediction uses anyway), and a reconstruction PSNR below ``min_psnr_db`` marks the frame as
out of domain: the goal is still predicted and returned, with a warning that it is unreliable. Without that file
(every real checkpoint, unless its directory ships one) the check is off. The embedded default model ships one,
written by ``python -m actedit_ros.editing.domain_calibration --write`` from world frames against real photos.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .loading import ModelLoadError

THRESHOLD_FILE = "out_of_domain.json"
METRIC = "vae_reconstruction_psnr_db"


@dataclass
class DomainCheck:
    """The result of checking one frame: its reconstruction PSNR and whether it is below the model's threshold."""

    psnr_db: float
    min_psnr_db: float
    threshold_file: Path

    @property
    def out_of_domain(self) -> bool:
        return self.psnr_db < self.min_psnr_db

    def warning(self) -> str:
        return (f"OUT OF DOMAIN: the start frame is unlike this model's training data (its autoencoder reconstructs "
                f"it at {self.psnr_db:.1f} dB, below the {self.min_psnr_db:.1f} dB of {self.threshold_file}), so this "
                f"goal is unreliable; for real scenes load a real InstructPix2Pix/EditAction checkpoint "
                f"(diffusers format, e.g. the instruct-pix2pix weights: the node's model_path parameter, "
                f"actedit-predict --model)")


def load_threshold(model_dir: str | Path) -> tuple[float, Path] | None:
    """(min_psnr_db, file) from the model directory's out_of_domain.json, or None when it ships none."""
    path = Path(model_dir) / THRESHOLD_FILE
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
        if config.get("metric", METRIC) != METRIC:
            raise ValueError(f"metric {config.get('metric')!r} is not {METRIC!r}")
        return float(config["min_psnr_db"]), path
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ModelLoadError(f"{path} is not a valid out-of-domain threshold file ({err}); it needs "
                         f'{{"metric": "{METRIC}", "min_psnr_db": <float>}}, or delete it to turn the check off') \
            from err


@torch.no_grad()
def decode_latents(vae, latents: torch.Tensor) -> np.ndarray:
    """The VAE's decode of unscaled ``latents`` (1, 4, h, w) as an RGB uint8 image: what the model makes of a frame."""
    decoded = vae.decode(latents.to(vae.dtype), return_dict=False)[0].float().nan_to_num(0.0)
    return ((decoded.clamp(-1, 1) + 1) * 127.5).round()[0].permute(1, 2, 0).cpu().numpy().astype(np.uint8)


def reconstruction_psnr(reconstruction: np.ndarray, resized: np.ndarray) -> float:
    """PSNR (dB) of the VAE's reconstruction of a frame against the frame (both RGB uint8 at the working size)."""
    mse = float(np.mean((reconstruction.astype(np.float64) - resized.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else float(10 * np.log10(255.0**2 / mse))
