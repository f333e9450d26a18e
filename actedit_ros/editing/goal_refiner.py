"""The goal refiner: a small start-conditioned network that redraws a decoded goal at twice the working size.

The embedded default decodes its goal from a 16x12 latent, so even the unchanged scene comes out as a smear. The
refiner sees that decoded goal next to the start frame (both at twice the working size) and, per pixel, gates
between the start frame itself (where the goal shows the same scene) and the goal with a learned correction (where
it shows a change): the unchanged scene comes back sharp, and what the action changed is redrawn from the world's
shapes instead of upscaled. It is trained by ``world/goal_refiner_training.py`` on world pairs, with the VAE's own
reconstruction of the true end frame (latents jittered, so it stands in for the editor's softer output) as input
and the true end frame as target, and it ships as an optional ``goal_refiner/`` folder of a model directory
(``config.json`` and ``model.safetensors``); models without one (SD-1.5 checkpoints) return the decoded goal.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

REFINER_DIR = "goal_refiner"
DEFAULT_CHANNELS = (24, 48, 96)


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.SiLU(), nn.Conv2d(cout, cout, 3, 1, 1), nn.SiLU())


class GoalRefiner(nn.Module):
    """U-shaped convolutional network: (goal, start) in [-1, 1], (B, 3, H, W) with H and W multiples of 4 ->
    the refined goal, ``gate * start + (1 - gate) * (goal + correction)``."""

    def __init__(self, channels: tuple[int, int, int] = DEFAULT_CHANNELS, scale: int = 2):
        super().__init__()
        c0, c1, c2 = (int(c) for c in channels)
        self.channels, self.scale = (c0, c1, c2), int(scale)
        self.enc0 = _block(9, c0)  # goal, start and their difference
        self.enc1 = _block(c0, c1, stride=2)
        self.enc2 = nn.Sequential(_block(c1, c2, stride=2), _block(c2, c2))
        self.up1 = _block(c2 + c1, c1)
        self.up0 = _block(c1 + c0, c0)
        self.head = nn.Conv2d(c0, 4, 3, 1, 1)  # gate logit and a 3-channel correction
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, goal: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
        e0 = self.enc0(torch.cat([goal, start, goal - start], 1))
        e1 = self.enc1(e0)
        e2 = self.enc2(e1)
        d1 = self.up1(torch.cat([nn.functional.interpolate(e2, size=e1.shape[-2:], mode="nearest"), e1], 1))
        d0 = self.up0(torch.cat([nn.functional.interpolate(d1, size=e0.shape[-2:], mode="nearest"), e0], 1))
        head = self.head(d0)
        gate = torch.sigmoid(head[:, :1])
        return gate * start + (1 - gate) * (goal + head[:, 1:])

    # --------------------------------------------------------------------------------------------- files
    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().to(torch.float16).contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / "model.safetensors"))
        config = {"channels": list(self.channels), "scale": self.scale}
        (directory / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def load(cls, directory: Path) -> "GoalRefiner":
        from safetensors.torch import load_file

        config_path = directory / "config.json"
        try:
            config = json.loads(config_path.read_text())
            refiner = cls(tuple(config["channels"]), int(config["scale"]))
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{config_path}: not a goal-refiner config ({err})") from err
        state = {k: v.float() for k, v in load_file(str(directory / "model.safetensors")).items()}
        refiner.load_state_dict(state)
        return refiner.eval()


def load_refiner(model_path: Path | None) -> GoalRefiner | None:
    """The model directory's goal refiner, or None when it ships none."""
    if model_path is None or not (Path(model_path) / REFINER_DIR / "model.safetensors").is_file():
        return None
    return GoalRefiner.load(Path(model_path) / REFINER_DIR)


def refine_size(size: tuple[int, int], scale: int) -> tuple[int, int]:
    """(width, height) the refiner works at for a working ``size``."""
    return size[0] * scale, size[1] * scale


def to_unit(images: np.ndarray) -> torch.Tensor:
    """RGB uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_uint8(tensor: torch.Tensor) -> np.ndarray:
    return ((tensor.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def refine_goals(refiner: GoalRefiner, goals: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Refined goals (RGB uint8 (N, 2h, 2w, 3)) of decoded goals ``goals`` (RGB uint8 (N, h, w, 3), working size)
    from the start frame ``start`` (RGB uint8, any size)."""
    height, width = goals.shape[1:3]
    size = refine_size((width, height), refiner.scale)
    start_small = cv2.resize(start, size, interpolation=cv2.INTER_AREA)
    goals_up = np.stack([cv2.resize(g, size, interpolation=cv2.INTER_CUBIC) for g in goals])
    device = next(refiner.parameters()).device
    start_t = to_unit(start_small[None]).to(device).expand(len(goals), -1, -1, -1)
    return to_uint8(refiner(to_unit(goals_up).to(device), start_t))
