"""actedit-eval: how well goal-image models predict the end of held-out world episodes.

For every held-out test episode of both camera regimes the model predicts the goal from the start frame and the
instruction. Reported per action type, per regime, per phrasing kind (template / paraphrase / unseen verb) and
overall:

- PSNR and SSIM of the predicted goal against the true end frame, next to the copy-the-input baseline (the start
  frame taken as the goal);
- action accuracy: the pixel readout (`world/readout.py`, no model involved) decides which end state the prediction
  shows among the true one, the same action on distractors, every other possible action and "nothing changed".

    actedit-eval                                   # the embedded default model
    actedit-eval --model editaction=work_dirs/default_model/editaction --model ip2p=work_dirs/default_model/ip2p
    actedit-eval --best-of 1 4 8                   # best-of-N: the top candidate as ranked by the editor itself
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from .best_of_n import RANK_NEGATIVES, best_of_n_table, model_label, rank_negatives
from .episode import ACTION_TYPES, PHRASING_KINDS, REGIMES, generate_episode
from .readout import EndStateReadout
from .seed_pooling import pooled_arms_table

COPY = "copy input"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def sharpness(rgb: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image: about 2 for the v2 default's goals, hundreds for camera frames."""
    return float(cv2.Laplacian(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var())


def _ssim(a: np.ndarray, b: np.ndarray) -> float:
    from actedit_ros.progress.metrics import ssim

    return ssim(a, b)


WORDINGS = ("world", "heldout")


def episode_instructions(ep, wordings: tuple[str, ...]) -> list[tuple[str, str]]:
    """(phrasing label, instruction) per wording: the episode's own (its phrasing kind), and/or one rewording from
    the held-out wording set (`world/wording_holdout.py`), labelled "heldout"."""
    from .phrasing_augment import instruction_variants
    from .wording_holdout import HELD_OUT_WORDS

    out = []
    for wording in wordings:
        if wording == "world":
            out.append((ep.phrasing, ep.instruction))
        else:
            out.append(("heldout", instruction_variants(ep, 1, HELD_OUT_WORDS, stream=300)[0]))
    return out


def evaluate_models(models: dict[str, str | None], episodes: int, size: tuple[int, int], steps: int,
                    text_guidance: float, image_guidance: float, seed: int, device: str,
                    sheet_path: Path | None = None, scheduler: str = "auto",
                    best_of: tuple[int, ...] = (1,), negatives: str = "empty",
                    wordings: tuple[str, ...] = ("world",), goal_modes: tuple[str, ...] = ("plain",),
                    first_episode: int = 0, compare_refiner: bool = False,
                    correct_spelling: bool = True) -> list[dict]:
    """One record per (episode, wording, model, N in ``best_of``) with the metrics; the copy baseline is the model
    named COPY (once per episode).

    For N > 1 the model samples N candidates and the record is about the one it ranks first; the record's
    ``any_correct`` says whether any candidate showed the true end state (what a perfect ranking would reach).
    ``negatives`` picks the ranking's negative instructions (:func:`.best_of_n.rank_negatives`); ``wordings``:
    the episode's own instruction ("world") and/or a held-out rewording ("heldout", phrasing "heldout");
    ``goal_modes``: the plain goal and/or the composite (start frame outside the predicted change), the latter
    recorded as "<model>+composite"; the episodes are test seeds ``first_episode`` .. ``first_episode + episodes - 1``
    of each regime; ``compare_refiner``: for a model that ships a goal refiner, also score the goals it would give
    without one (recorded as "<model>+unrefined", in every goal mode); ``correct_spelling``: as the node's
    ``spelling: correct`` (typos corrected before the text encoder).
    """
    from actedit_ros.editing import GoalPredictor
    from actedit_ros.editing.compositing import composite_goal

    predictors = {name: GoalPredictor.from_pretrained(path, device=device, scheduler=sampler_for(path, scheduler))
                  for name, path in models.items()}
    records, sheet_rows = [], []
    plan = [(s, regime) for s in range(first_episode, first_episode + episodes) for regime in REGIMES]
    for ep_seed, regime in tqdm(plan, desc="actedit-eval", unit="ep"):
        ep = generate_episode(ep_seed, regime, "test", size=size, num_frames=2)
        start, end = ep.frames[0], ep.frames[-1]
        readout = EndStateReadout(ep)
        for wording, (phrasing, instruction) in zip(wordings, episode_instructions(ep, wordings)):
            common = {"episode": ep.episode_id, "regime": regime, "action": ep.action, "phrasing": phrasing,
                      "held_out_combo": ep.held_out_combo, "instruction": instruction}
            outputs = {COPY: (start, 0.0, {})} if wording == wordings[0] else {}
            for name, predictor in predictors.items():
                for n in best_of:  # one prediction serves every goal mode (the composite pastes its plain images)
                    pred = predictor.predict(start, instruction, steps=steps, text_guidance=text_guidance,
                                             image_guidance=image_guidance, seed=seed, num_candidates=n,
                                             negative_instructions=rank_negatives(ep, negatives),
                                             correct_spelling=correct_spelling)
                    variants = [("", pred.images)]
                    if compare_refiner and pred.unrefined_images:
                        variants.append(("+unrefined", pred.unrefined_images))
                    for (suffix, goals), mode in ((v, m) for v in variants for m in goal_modes):
                        images = goals if mode == "plain" else \
                            [composite_goal(start, im, mask) for im, mask in zip(goals, pred.change_masks)]
                        extra = {"change_fraction": pred.change_fractions[0]}
                        if len(best_of) > 1:
                            extra.update(best_of=n, any_correct=any(readout.read(im).correct for im in images))
                        label = model_label(name, n, best_of) + suffix + ("+composite" if mode == "composite" else "")
                        outputs[label] = (images[0], pred.seconds, extra)
            for name, (image, seconds, extra) in outputs.items():
                read = readout.read(image)
                records.append({**common, "model": name, "psnr": psnr(image, end), "ssim": _ssim(image, end),
                                "sharpness": sharpness(image),
                                "correct": bool(read.correct), "read_as": read.label, "seconds": seconds,
                                "candidates": len(read.distances), **extra})
            labels = [n for n in outputs if n != COPY]
            if sheet_path is not None and len(sheet_rows) < 16:
                sheet_rows.append((instruction, [start] + [outputs[n][0] for n in labels] + [end]))
    if sheet_path is not None and sheet_rows:
        _write_sheet(sheet_path, sheet_rows, ["start"] + labels + ["true end"])
    return records


def sampler_for(model_path: str | None, scheduler: str = "auto") -> str:
    """'auto': InstructPix2Pix's Euler-ancestral, or DDIM for x0-prediction models (Euler-ancestral cannot step them)."""
    if scheduler != "auto":
        return scheduler
    from actedit_ros.editing import resolve_model_path

    config = resolve_model_path(model_path) / "scheduler" / "scheduler_config.json"
    prediction = json.loads(config.read_text()).get("prediction_type") if config.is_file() else None
    return "ddim" if prediction == "sample" else "euler_ancestral"


def _write_sheet(path: Path, rows, columns: list[str]) -> None:
    """A PNG: one row per episode (start | each model's goal | true end) under its instruction."""
    scale = max(1, 128 // rows[0][1][0].shape[0])
    blocks = []
    header = np.full((18, 1, 3), 255, np.uint8)
    for instruction, images in rows:
        big = [cv2.resize(im, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST) for im in images]
        line = np.concatenate([np.pad(b, ((0, 0), (0, 4), (0, 0)), constant_values=255) for b in big], 1)
        label = np.full((18, line.shape[1], 3), 255, np.uint8)
        cv2.putText(label, instruction, (2, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        blocks += [label, line]
        header = np.full((18, line.shape[1], 3), 255, np.uint8)
    width = blocks[1].shape[1] // len(columns)
    for i, name in enumerate(columns):
        cv2.putText(header, name, (i * width + 2, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 120), 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate([header] + blocks, 0), cv2.COLOR_RGB2BGR))


def _summary(records: list[dict]) -> dict:
    return {"n": len(records), "psnr": float(np.mean([r["psnr"] for r in records])),
            "sharpness": float(np.mean([r.get("sharpness", np.nan) for r in records])),
            "ssim": float(np.mean([r["ssim"] for r in records])),
            "accuracy": float(np.mean([r["correct"] for r in records]))}


def markdown_tables(records: list[dict], command: str) -> str:
    """Markdown: a summary table per model, then per-group tables (action, regime, phrasing) for every model."""
    models = list(dict.fromkeys(r["model"] for r in records))
    by = defaultdict(list)
    for r in records:
        by[r["model"]].append(r)
    lines = [f"Command: `{command}`", ""]
    lines += ["| model | episodes | PSNR (dB) | SSIM | sharpness | action acc. | acc. template | acc. paraphrase | "
              "acc. unseen verb | acc. held-out wording | acc. fixed cam | acc. head cam | acc. held-out combos |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in models:
        rs = by[m]
        s = _summary(rs)

        def acc(pred):
            sel = [r["correct"] for r in rs if pred(r)]
            return f"{100 * np.mean(sel):.0f}% ({len(sel)})" if sel else "-"

        lines.append(f"| {m} | {s['n']} | {s['psnr']:.2f} | {s['ssim']:.3f} | {s['sharpness']:.0f} | "
                     f"{100 * s['accuracy']:.1f}% | "
                     f"{acc(lambda r: r['phrasing'] == 'template')} | {acc(lambda r: r['phrasing'] == 'paraphrase')} | "
                     f"{acc(lambda r: r['phrasing'] == 'unseen_verb')} | {acc(lambda r: r['phrasing'] == 'heldout')} | "
                     f"{acc(lambda r: r['regime'] == 'fixed')} | "
                     f"{acc(lambda r: r['regime'] == 'head')} | {acc(lambda r: r['held_out_combo'])} |")
    counts = [r["candidates"] for r in records if "candidates" in r and r["model"] == models[0]]
    if counts:
        lines += ["", f"Action accuracy counts a prediction correct when the pixel readout picks the true end state "
                      f"among {np.mean(counts):.1f} candidate end states on average (the true one, the same action on "
                      f"other objects, every other possible action, no change); a uniform guess would score "
                      f"{100 * np.mean([1 / c for c in counts]):.0f}%. 'unreadable' (far from every candidate) "
                      f"counts as wrong."]
    lines += ["", "Per action type (PSNR dB / SSIM / action accuracy; copy-input baseline first):", ""]
    head = "| action | n | " + " | ".join(models) + " |"
    lines += [head, "|---|---|" + "---|" * len(models)]
    groups = [("action", a) for a in ACTION_TYPES] + [("regime", g) for g in REGIMES] + \
        [("phrasing", p) for p in PHRASING_KINDS + ("heldout",)]
    for key, value in groups:
        cells = []
        n = 0
        for m in models:
            rs = [r for r in by[m] if r[key] == value]
            n = len(rs)
            if rs:
                s = _summary(rs)
                cells.append(f"{s['psnr']:.1f} / {s['ssim']:.2f} / {100 * s['accuracy']:.0f}%")
            else:
                cells.append("-")
        label = value if key == "action" else f"*{key}: {value}*"
        lines.append(f"| {label} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actedit-eval", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Evaluate goal-image models on held-out synthetic world episodes (both camera regimes): "
                    "PSNR/SSIM against the true end frame vs the copy-the-input baseline, and action accuracy by a "
                    "model-free pixel readout of the end state; a markdown table is printed and written.")
    parser.add_argument("--model", action="append", default=None, metavar="[NAME=]PATH",
                        help="model directory to evaluate (repeat to compare several; 'default' or no flag = the "
                             "embedded default model). Name training seeds of one arm ARM@SEED (e.g. "
                             "no_action_loss@1=DIR) and a table pools them per arm, with standard errors")
    parser.add_argument("--episodes", type=int, default=100,
                        help="held-out test episodes per camera regime (seeds FIRST..FIRST+N-1 of the test split)")
    parser.add_argument("--first-episode", type=int, default=0, metavar="FIRST",
                        help="first test seed (to add episodes to an earlier run, or split one run into parallel "
                             "parts, then --merge them; 150-209 tuned the composite mask)")
    parser.add_argument("--size", type=int, nargs=2, default=(64, 64), metavar=("WIDTH", "HEIGHT"),
                        help="episode image size (the default model works at 64x48; its goals are returned, and "
                             "composited, at this size)")
    parser.add_argument("--steps", type=int, default=20, help="sampler steps per prediction")
    parser.add_argument("--text-guidance", type=float, default=7.5, help="text guidance scale")
    parser.add_argument("--image-guidance", type=float, default=1.5, help="image guidance scale")
    parser.add_argument("--scheduler", default="auto", choices=["auto", "euler_ancestral", "ddim", "euler", "dpm_solver"],
                        help="sampler; auto = euler_ancestral, or ddim for x0-prediction models")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--device", default="cpu", help="'cpu', 'cuda' or 'auto'")
    parser.add_argument("--rank-negatives", choices=RANK_NEGATIVES, default="empty",
                        help="negative instructions of the best-of-N ranking: the empty instruction, or it plus the "
                             "template instructions of up to 4 other actions the scene allows (a planner's options)")
    parser.add_argument("--best-of", type=int, nargs="+", default=[1], metavar="N",
                        help="candidates per prediction; with several values (e.g. 1 4 8) every model predicts once "
                             "per N and is scored on the candidate it ranks first (the editor as a classifier), "
                             "and a best-of-N table with the time per prediction is added")
    parser.add_argument("--wording", choices=WORDINGS + ("both",), default="world",
                        help="instructions: each episode's own (world: templates, paraphrases, unseen verbs), a "
                             "rewording from the held-out wording set that training never sees (heldout: new verbs, "
                             "synonyms, colour/kind-only references, planner frames, typos), or both (the copy "
                             "baseline is counted once)")
    parser.add_argument("--goal-mode", nargs="+", choices=("plain", "composite"), default=["plain"],
                        help="goal images to score: the editor's plain output and/or the composite (the start frame "
                             "outside the change the editor predicts, as the node's goal_mode: composite gives)")
    parser.add_argument("--compare-refiner", action="store_true",
                        help="for a model that ships a goal refiner (goal_refiner/ in its folder), also score the goals "
                             "without it, as <model>+unrefined (same predictions)")
    parser.add_argument("--spelling", choices=("correct", "as_written"), default="correct",
                        help="correct typos in each instruction before the text encoder reads it, as the node does "
                             "by default (its spelling parameter); as_written: the text as it is")
    parser.add_argument("--out", type=Path, default=Path("runs/eval"),
                        help="folder for table.md, records.jsonl and examples.png")
    parser.add_argument("--merge", type=Path, nargs="+", default=None, metavar="RECORDS",
                        help="evaluate nothing: combine the records.jsonl of earlier runs (e.g. one per model or "
                             "episode range, run in parallel) into one table in --out (the copy baseline once per "
                             "episode)")
    return parser


def merge_records(paths: list[Path]) -> list[dict]:
    """Records of several runs (other models, or other episodes: --first-episode); the copy baseline once per
    episode, from the first run that has it."""
    records, copied = [], set()
    for path in paths:
        path = path / "records.jsonl" if path.is_dir() else path
        if not path.is_file():
            raise ValueError(f"--merge: no records file at {path}")
        run = [json.loads(line) for line in path.read_text().splitlines()]
        baseline = {r["episode"] for r in run if r["model"] == COPY}
        records += [r for r in run if r["model"] != COPY or r["episode"] not in copied]
        copied |= baseline
    return records


def _parse_models(values: list[str] | None) -> dict[str, str | None]:
    models: dict[str, str | None] = {}
    for value in values or ["default"]:
        name, _, path = value.rpartition("=") if "=" in value else ("", "", value)
        path_or_default = None if path == "default" else path
        name = name or ("default" if path_or_default is None else Path(path).name)
        if name == COPY or name in models:
            raise ValueError(f"model name {name!r} is used twice or reserved; give NAME=PATH")
        models[name] = path_or_default
    return models


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from actedit_ros.editing import ModelLoadError

    if args.merge:
        try:
            records = merge_records(args.merge)
        except (ValueError, KeyError, json.JSONDecodeError) as err:
            print(f"actedit-eval: error: {err}", file=sys.stderr)
            return 2
        return _write_outputs(records, args, argv)
    try:
        if args.episodes < 1 or args.first_episode < 0:
            raise ValueError(f"--episodes must be >= 1 and --first-episode >= 0, got {args.episodes} and "
                             f"{args.first_episode}")
        models = _parse_models(args.model)
        best_of = tuple(dict.fromkeys(args.best_of))
        if any(not 1 <= n <= 16 for n in best_of):
            raise ValueError(f"--best-of values must be between 1 and 16, got {args.best_of}")
        started = time.time()
        records = evaluate_models(models, args.episodes, tuple(args.size), args.steps, args.text_guidance,
                                  args.image_guidance, args.seed, args.device, args.out / "examples.png",
                                  args.scheduler, best_of, args.rank_negatives,
                                  WORDINGS if args.wording == "both" else (args.wording,),
                                  tuple(dict.fromkeys(args.goal_mode)), args.first_episode,
                                  args.compare_refiner, args.spelling == "correct")
    except (ValueError, ModelLoadError) as err:
        print(f"actedit-eval: error: {err}", file=sys.stderr)
        return 2
    code = _write_outputs(records, args, argv)
    print(f"({time.time() - started:.0f} s)")
    return code


def _write_outputs(records: list[dict], args, argv) -> int:
    command = "actedit-eval " + " ".join(str(a) for a in (argv if argv is not None else sys.argv[1:]))
    table = markdown_tables(records, command.strip()) + best_of_n_table(records) + pooled_arms_table(records)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "table.md").write_text(table)
    with open(args.out / "records.jsonl", "w", encoding="utf-8") as handle:
        for r in records:
            handle.write(json.dumps(r) + "\n")
    print(table)
    print(f"written to {args.out}/table.md and records.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
