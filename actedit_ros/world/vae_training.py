"""The autoencoder stage of the default-model recipe (``world/train_default.py``), in two variants:

- ``learned`` (v3): an SD-style AutoencoderKL (8x downsampling, 4 latent channels, small KL term) trained end to
  end on world frames at 128x96 (16x12 latents), on random crops: the network is fully convolutional, so crops
  train the same weights at a fraction of the cost. Frozen after this stage, so the UNet stages cache its latents.
- ``fixed`` (v2, the model shipped before v3): a hand-set block-average encoder (64x48 -> 16x12) and a decoder
  trained on its latents (:func:`fixed_encoder_vae`, :func:`train_decoder`).

Both stages resume exactly from ``<out_dir>/checkpoint`` (weights and Adam state as safetensors, every random draw
seeded by the step) and end with ``metrics.json`` (held-out reconstruction PSNR) and ``reconstruction.png``.
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from actedit_ros.training.state_io import load_optimizer, save_optimizer

log = logging.getLogger("actedit_ros.world.vae_training")

FIXED_VAE_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32, 64),
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                        layers_per_block=1, norm_num_groups=8, sample_size=64, mid_block_add_attention=False)
LEARNED_VAE_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32, 64, 128),
                          down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                          layers_per_block=1, norm_num_groups=8, sample_size=128, mid_block_add_attention=False)
HELD_OUT_FRAMES = 256


def load_frames(dataset_dir: Path, limit: int, split: str = "train") -> np.ndarray:
    """Up to `limit` frames (start and end images) of one split as uint8 (N, H, W, 3) RGB."""
    import cv2

    paths = []
    for line in (dataset_dir / "index.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["split"] == split:
            paths += [record["input_image"], record["edited_image"]]
        if len(paths) >= limit:
            break
    if not paths:
        raise ValueError(f"{dataset_dir / 'index.jsonl'} holds no {split!r} pairs")
    return np.stack([cv2.cvtColor(cv2.imread(str(dataset_dir / p)), cv2.COLOR_BGR2RGB) for p in paths[:limit]])


def _to_unit(frames_uint8):
    """uint8 NCHW tensor -> float in [-1, 1]."""
    return frames_uint8.float() / 127.5 - 1


# ------------------------------------------------------------------------------------------------- learned (v3)
def train_autoencoder(dataset_dir: Path, out_dir: Path, steps: int, batch_size: int = 16,
                      crop: tuple[int, int] = (64, 48), lr: float = 1e-3, kl_weight: float = 1e-6, seed: int = 0,
                      checkpoint_every: int = 100, num_frames: int = 8000, stop_at: int | None = None) -> dict:
    """Train a learned AutoencoderKL (LEARNED_VAE_CONFIG) on `crop`-sized random crops of the dataset's training
    frames (L1 + MSE + kl_weight * KL); held-out PSNR on whole test-split frames. Returns its metrics, or {} when
    `stop_at` ended the run early (checkpointed; call again without it to go on)."""
    import torch
    from diffusers import AutoencoderKL

    done_file = out_dir / "metrics.json"
    if done_file.exists():
        return json.loads(done_file.read_text())
    torch.manual_seed(seed)
    vae = AutoencoderKL(**LEARNED_VAE_CONFIG)
    frames = torch.from_numpy(load_frames(dataset_dir, num_frames)).permute(0, 3, 1, 2).contiguous()
    height, width = frames.shape[2:]
    if crop[0] > width or crop[1] > height or crop[0] % 8 or crop[1] % 8:
        raise ValueError(f"crop {crop[0]}x{crop[1]} must be multiples of 8 within the {width}x{height} frames")

    def batch_loss(generator):
        idx = torch.randint(0, len(frames), (batch_size,), generator=generator)
        left = int(torch.randint(0, (width - crop[0]) // 8 + 1, (1,), generator=generator)) * 8
        top = int(torch.randint(0, (height - crop[1]) // 8 + 1, (1,), generator=generator)) * 8
        x = _to_unit(frames[idx, :, top:top + crop[1], left:left + crop[0]])
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=generator)).sample
        return (recon - x).abs().mean() + (recon - x).pow(2).mean() + kl_weight * posterior.kl().mean()

    if not _optimise(vae, list(vae.parameters()), batch_loss, steps, lr, seed, out_dir, "autoencoder",
                     checkpoint_every, stop_at):
        return {}
    vae.eval()
    with torch.no_grad():
        latents = torch.cat([vae.encode(_to_unit(frames[i:i + 256])).latent_dist.mode()
                             for i in range(0, min(len(frames), 2048), 256)])
    vae.register_to_config(scaling_factor=1.0 / float(latents.std()))
    held = torch.from_numpy(load_frames(dataset_dir, HELD_OUT_FRAMES, split="test")).permute(0, 3, 1, 2)
    return _finish(vae, _to_unit(held), lambda x: vae.decode(vae.encode(x).latent_dist.mode()).sample, out_dir,
                   {"kind": "learned", "autoencoder_steps": steps, "crop": list(crop), "image_size": [width, height]})


def refine_decoder(dataset_dir: Path, vae_dir: Path, out_dir: Path, steps: int, batch_size: int = 16,
                   crop: tuple[int, int] = (64, 48), lr: float = 3e-4, seed: int = 0, checkpoint_every: int = 100,
                   num_frames: int = 8000, stop_at: int | None = None) -> dict:
    """Go on training only the decoder of a learned autoencoder (the diffusers folder `vae_dir`) on its own cached
    latents: the encoder, and so every latent the UNet stages train on, stays exactly as it is, which is why this may
    run while the UNet trains. Crops are cut in latent space (8x smaller) and pixel space alike. Metrics as
    :func:`train_autoencoder` (held-out test frames, encoded and decoded); {} when `stop_at` ended it early."""
    import torch
    from diffusers import AutoencoderKL

    done_file = out_dir / "metrics.json"
    if done_file.exists():
        return json.loads(done_file.read_text())
    vae = AutoencoderKL.from_pretrained(vae_dir, local_files_only=True, use_safetensors=True)
    frames = torch.from_numpy(load_frames(dataset_dir, num_frames)).permute(0, 3, 1, 2).contiguous()
    height, width = frames.shape[2:]
    with torch.no_grad():
        latents = torch.cat([vae.encode(_to_unit(frames[i:i + 64])).latent_dist.mode()
                             for i in range(0, len(frames), 64)])

    def batch_loss(generator):
        idx = torch.randint(0, len(frames), (batch_size,), generator=generator)
        left = int(torch.randint(0, (width - crop[0]) // 8 + 1, (1,), generator=generator))
        top = int(torch.randint(0, (height - crop[1]) // 8 + 1, (1,), generator=generator))
        z = latents[idx, :, top:top + crop[1] // 8, left:left + crop[0] // 8]
        x = _to_unit(frames[idx, :, 8 * top:8 * top + crop[1], 8 * left:8 * left + crop[0]])
        recon = vae.decode(z).sample
        return (recon - x).abs().mean() + (recon - x).pow(2).mean()

    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    if not _optimise(vae, params, batch_loss, steps, lr, seed, out_dir, "decoder refinement", checkpoint_every,
                     stop_at):
        return {}
    vae.eval()
    source = json.loads((vae_dir.parent / "metrics.json").read_text()) if (vae_dir.parent / "metrics.json").exists() \
        else {}
    held = torch.from_numpy(load_frames(dataset_dir, HELD_OUT_FRAMES, split="test")).permute(0, 3, 1, 2)
    return _finish(vae, _to_unit(held), lambda x: vae.decode(vae.encode(x).latent_dist.mode()).sample, out_dir,
                   {"kind": "learned", "autoencoder_steps": source.get("autoencoder_steps"),
                    "autoencoder_psnr_db": source.get("reconstruction_psnr_db"), "decoder_refine_steps": steps,
                    "crop": list(crop), "image_size": [width, height]})


# --------------------------------------------------------------------------------------------------- fixed (v2)
FIXED_ENCODER_K = 100.0  # constant channels that make GroupNorm's statistics image-independent (see below)
FIXED_ENCODER_SHIFT = 20.0  # moves values into SiLU's linear range


def fixed_encoder_vae(seed: int = 0):
    """An AutoencoderKL whose encoder is set by hand to a fixed linear map: latent = (R, G, B, D) averaged over each
    4x4 pixel block, D = left-minus-right luminance (sub-block edge position); posterior std ~ 5e-5.

    Why: training a VAE from scratch on a busy 2-core CPU took far too long to even keep colours, while this encoder
    is exact from the start, so the diffusion UNet can train at once; only the decoder (latents -> pixels) is learned
    (:func:`train_decoder`). How, inside the stock architecture: every ResNet block adds zero (conv2 = 0), the
    downsampling convs average 2x2 blocks, and the final GroupNorm sees each value paired with its negative plus a
    +-K constant pair, so its per-image mean is 0 and its std K/2 up to 1e-4: it scales by a constant, and the
    +SHIFT bias keeps SiLU linear (conv_out subtracts it again).
    """
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    vae = AutoencoderKL(**FIXED_VAE_CONFIG)
    enc, k, shift = vae.encoder, FIXED_ENCODER_K, FIXED_ENCODER_SHIFT
    with torch.no_grad():
        for module in enc.modules():
            if hasattr(module, "conv2") and hasattr(module, "norm1"):  # ResnetBlock2D: output = shortcut(x)
                module.conv2.weight.zero_()
                module.conv2.bias.zero_()
        for conv in [enc.conv_in, enc.conv_out, vae.quant_conv, enc.down_blocks[0].downsamplers[0].conv,
                     enc.down_blocks[1].downsamplers[0].conv, enc.down_blocks[1].resnets[0].conv_shortcut,
                     enc.down_blocks[2].resnets[0].conv_shortcut]:
            conv.weight.zero_()
            conv.bias.zero_()
        for c in range(3):  # conv_in: RGB into channels 0-2, constants +K, -K into channels 6, 7
            enc.conv_in.weight[c, c, 1, 1] = 1.0
        enc.conv_in.bias[6], enc.conv_in.bias[7] = k, -k
        carried = (0, 1, 2, 6, 7)
        for level in (0, 1):  # 2x2 averages (taps [0:2, 0:2] of the padded stride-2 conv)
            conv = enc.down_blocks[level].downsamplers[0].conv
            for c in carried:
                conv.weight[c, c, 0:2, 0:2] = 0.25
        for c in carried:
            enc.down_blocks[1].resnets[0].conv_shortcut.weight[c, c, 0, 0] = 1.0
        conv = enc.down_blocks[1].downsamplers[0].conv  # channel 3: left minus right luminance of the block
        for c in range(3):
            conv.weight[3, c, 0:2, 0] = 1.0 / 6
            conv.weight[3, c, 0:2, 1] = -1.0 / 6
        layout = {0: (0, 1.0), 1: (0, -1.0), 2: (1, 1.0), 3: (1, -1.0), 4: (2, 1.0), 5: (2, -1.0), 6: (6, 1.0),
                  7: (7, 1.0), 8: (3, 1.0), 9: (3, -1.0), 10: (6, 1.0), 11: (7, 1.0)}
        shortcut = enc.down_blocks[2].resnets[0].conv_shortcut
        for out, (src, sign) in layout.items():
            shortcut.weight[out, src, 0, 0] = sign
        norm = enc.conv_norm_out
        norm.weight.zero_()
        norm.bias.zero_()
        for c in (0, 2, 4, 8):
            norm.weight[c], norm.bias[c] = k / 2, shift
        for latent, c in enumerate((0, 2, 4, 8)):
            enc.conv_out.weight[latent, c, 1, 1] = 1.0
        enc.conv_out.bias[:] = -shift  # means: back from the shift; log-variances: -20 (std 4.5e-5)
        for c in range(8):
            vae.quant_conv.weight[c, c, 0, 0] = 1.0
    return vae


def write_encoder_vae(out_dir: Path, dataset_dir: Path, seed: int = 0) -> Path:
    """The fixed-encoder VAE (random decoder) with scaling_factor = 1 / std of world latents, saved to out_dir/vae."""
    import torch

    target = out_dir / "encoder_vae"
    if (target / "config.json").exists():
        return target
    vae = fixed_encoder_vae(seed)
    frames = _to_unit(torch.from_numpy(load_frames(dataset_dir, 512)).permute(0, 3, 1, 2))
    with torch.no_grad():
        std = float(vae.encode(frames).latent_dist.mode().std())
    vae.register_to_config(scaling_factor=1.0 / std)
    vae.save_pretrained(target, safe_serialization=True)
    return target


def train_decoder(dataset_dir: Path, out_dir: Path, steps: int, batch_size: int = 16, lr: float = 1e-3,
                  seed: int = 0, checkpoint_every: int = 100, num_frames: int = 6000) -> dict:
    """Train the decoder of the fixed-encoder VAE on world frames (L1 + MSE). Returns its metrics."""
    import torch
    from diffusers import AutoencoderKL

    done_file = out_dir / "metrics.json"
    if done_file.exists():
        return json.loads(done_file.read_text())
    common = {"local_files_only": True, "use_safetensors": True}
    vae = AutoencoderKL.from_pretrained(write_encoder_vae(out_dir, dataset_dir, seed), **common)
    frames = torch.from_numpy(load_frames(dataset_dir, num_frames)).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():  # the encoder is fixed: encode every frame once
        latents = torch.cat([vae.encode(_to_unit(frames[i:i + 256])).latent_dist.mode()
                             for i in range(0, len(frames), 256)])
    held = min(HELD_OUT_FRAMES, len(frames) // 4)  # the last frames, never trained on (256 of the default 6,000)
    held_x = _to_unit(frames[-held:])
    frames, latents = frames[:-held], latents[:-held]

    def batch_loss(generator):
        idx = torch.randint(0, len(frames), (batch_size,), generator=generator)
        x, z = _to_unit(frames[idx]), latents[idx]
        recon = vae.decode(z).sample
        return (recon - x).abs().mean() + (recon - x).pow(2).mean()

    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    _optimise(vae, params, batch_loss, steps, lr, seed, out_dir, "vae decoder", checkpoint_every)
    vae.eval()
    reconstruct = lambda x: vae.decode(vae.encode(x).latent_dist.mode()).sample  # noqa: E731 (a chunk of held_x)
    return _finish(vae, held_x, reconstruct, out_dir, {"kind": "fixed", "decoder_steps": steps})


# ------------------------------------------------------------------------------------------------------- shared
def _optimise(vae, params: list, batch_loss: Callable, steps: int, lr: float, seed: int, out_dir: Path, desc: str,
              checkpoint_every: int, stop_at: int | None = None) -> bool:
    """AdamW on `params` for `steps` steps of `batch_loss(generator)` (cosine LR decay to 10 %, gradient clipping),
    resuming from and checkpointing to out_dir/checkpoint. Stops early at `stop_at` (checkpointed there); returns
    whether all `steps` are done."""
    import torch
    from tqdm import tqdm

    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    ckpt = out_dir / "checkpoint"
    step = 0
    if (ckpt / "state.json").exists():
        from safetensors.torch import load_file

        vae.load_state_dict(load_file(str(ckpt / "vae.safetensors")))
        load_optimizer(optimizer, ckpt / "optimizer.safetensors")
        step = json.loads((ckpt / "state.json").read_text())["step"]
        log.info("%s: resuming at step %d", desc, step)
    vae.train()
    bar = tqdm(total=steps, initial=step, desc=desc, dynamic_ncols=True)
    end = min(steps, stop_at) if stop_at else steps
    while step < end:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step)  # per-step draws: exact resume
        for group in optimizer.param_groups:
            group["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / steps)))
        loss = batch_loss(generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % checkpoint_every == 0 or step == end:
            _save_checkpoint(vae, optimizer, step, out_dir)
    bar.close()
    return step >= steps


def _finish(vae, held_x, reconstruct: Callable, out_dir: Path, notes: dict) -> dict:
    """Held-out PSNR, the diffusers folder out_dir/vae, reconstruction.png and metrics.json."""
    import torch

    with torch.no_grad():
        recon = torch.cat([reconstruct(held_x[i:i + 64]) for i in range(0, len(held_x), 64)]).clamp(-1, 1)
    mse = float(((recon - held_x) / 2).pow(2).mean())
    vae.save_pretrained(out_dir / "vae", safe_serialization=True)
    metrics = {**notes, "reconstruction_psnr_db": float(10 * np.log10(1.0 / mse)),
               "scaling_factor": vae.config.scaling_factor, "held_out_frames": int(held_x.shape[0])}
    save_reconstruction_sheet(held_x[:8], recon[:8], out_dir / "reconstruction.png")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _save_checkpoint(vae, optimizer, step: int, out_dir: Path) -> None:
    from safetensors.torch import save_file

    ckpt, tmp = out_dir / "checkpoint", out_dir / "checkpoint.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    save_file(vae.state_dict(), str(tmp / "vae.safetensors"))
    save_optimizer(optimizer, tmp / "optimizer.safetensors")
    (tmp / "state.json").write_text(json.dumps({"step": step}))
    if ckpt.exists():
        shutil.rmtree(ckpt)
    tmp.rename(ckpt)


def save_reconstruction_sheet(original, recon, path: Path) -> None:
    """Originals (top row) over reconstructions (bottom row), as a PNG."""
    import cv2

    to_img = lambda t: ((t.permute(0, 2, 3, 1).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)  # noqa: E731
    sheet = np.concatenate([np.concatenate(list(to_img(original)), 1), np.concatenate(list(to_img(recon)), 1)], 0)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
