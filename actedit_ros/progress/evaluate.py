"""``actedit-eval-progress``: how well progress scoring works on held-out synthetic episodes, against the goal the
node itself predicts, and against naive baselines.

For each camera regime ("fixed", "head") and condition ("clean", "perturbed": a hand-like distractor sweeping over
the changed region, oscillating exposure/colour/gradient lighting, sensor noise; the head regime's camera motion is
the world's own), every method (``eval_scoring.METHODS``: the learned scorer, the hand-made pixel scorer, pixel MSE,
SSIM) scores every frame of every held-out episode against the episode's start frame and a goal image:

- VOC (value-order correlation, as in GVL): Spearman correlation of the per-frame progress with the frames' time
  order, computed with the stateless per-frame score.
- reached by end: share of episodes flagged reached once the action is done and the finished scene is held for
  ``--hold-end`` more frames, split by whether the goal shows the right end state (the world's own readout; true
  goals are always right).
- false reached: share of the frames before the action is 80 % done on which the streaming ``reached`` decision
  (EMA + hysteresis, identical settings for every method) is already on.
- reached on other action: share of negatives - the same start with a *different* action's frames, then held - on
  which ``reached`` fires at any frame.
- progress MAE: mean absolute difference between the per-frame progress and the true progress.

The goal (``--goal``) is by default the one the editor predicts from the episode's start frame (``--model``, the
embedded default unless told otherwise, with the node's default sampling settings); ``end-frame`` is the true last
frame, ``start-view`` the true end state rendered from the start camera (a perfect predictor), ``degraded`` a
blurred, noisy end frame.

Writes ``<out>/progress_eval.md`` (the table, the command and the settings), ``progress_eval.json`` (per episode)
and ``progress_curves.png`` (example progress curves with the first frame flagged reached).
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from .eval_scoring import METHODS, EpisodeScores, filter_args, markdown_table, score_episode, summarise
from .metrics import value_order_correlation
from .perturbations import degrade_goal, perturb
from .scorer import ReachedFilter

GOALS = ("predicted", "end-frame", "start-view", "degraded")
CONDITIONS = ("clean", "perturbed")
REGIMES = ("fixed", "head")


def goal_for(episode, goal_kind: str, seed: int, predictor=None, predict_options: dict | None = None) -> np.ndarray:
    """The goal image the evaluation scores against (see the module docstring)."""
    if goal_kind == "predicted":
        return predictor.predict(episode.frames[0], episode.instruction, **(predict_options or {})).image
    if goal_kind == "end-frame":
        return episode.frames[-1]
    if goal_kind == "start-view":
        return episode.render(episode.end_state, episode.cameras[0])
    if goal_kind == "degraded":
        return degrade_goal(episode.frames[-1], seed)
    raise ValueError(f"goal must be one of {GOALS}; got {goal_kind!r}")


def plot_curves(scores: list[EpisodeScores], path: Path, per_group: int = 2) -> None:
    """Example progress curves: true progress and every method's per-frame score, per condition and regime."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(c, r) for c in CONDITIONS for r in REGIMES if any(s.condition == c and s.regime == r for s in scores)]
    fig, axes = plt.subplots(len(groups), per_group, figsize=(5 * per_group, 3.2 * len(groups)), squeeze=False)
    colours = {"learned": "tab:blue", "pixel scorer": "tab:purple", "pixel MSE": "tab:orange", "SSIM": "tab:green"}
    for row, (condition, regime) in enumerate(groups):
        group, actions = [], set()
        for s in scores:  # examples of different actions
            if s.condition == condition and s.regime == regime and s.action not in actions and len(group) < per_group:
                group.append(s)
                actions.add(s.action)
        for col in range(per_group):
            ax = axes[row][col]
            if col >= len(group):
                ax.axis("off")
                continue
            s = group[col]
            t = np.arange(len(s.true_progress))
            ax.plot(t, s.true_progress, "k--", label="true progress")
            for method in s.progress:
                voc = value_order_correlation(s.progress[method])
                ax.plot(t, s.progress[method], color=colours[method], marker=".", label=f"{method} (VOC {voc:.2f})")
                hit = np.nonzero(s.reached[method])[0]
                if hit.size:
                    ax.axvline(hit[0], color=colours[method], alpha=0.35, linewidth=3)
            ax.set_ylim(-0.05, 1.05)
            ax.axhline(0.8, color="grey", linewidth=0.8, linestyle=":")
            goal_note = "" if s.goal_right else ", goal wrong"
            ax.set_title(f"{condition} / {regime}: {s.action} ({s.episode_id}{goal_note})", fontsize=9)
            ax.set_xlabel("frame (shaded line: first frame flagged reached)")
            ax.set_ylabel("progress")
            ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def parse_size(text: str) -> tuple[int, int]:
    """argparse type of a frame size written WIDTHxHEIGHT (at least 32x32)."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like WIDTHxHEIGHT (320x240), got {text!r}") from None
    if width < 32 or height < 32:
        raise argparse.ArgumentTypeError(f"size must be at least 32x32, got {text!r}")
    return width, height


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actedit-eval-progress",
        description="Evaluate progress scoring on held-out synthetic episodes of both camera regimes, clean and "
                    "perturbed: VOC, 'reached' by the end (goal right / wrong), false 'reached' before 80 %% and on "
                    "a different action's frames, for the learned scorer, the pixel scorer, pixel MSE and SSIM. "
                    "The goal is by default the one the editor predicts from each episode's start frame.",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/progress_eval"),
                        help="output folder for progress_eval.md/.json and progress_curves.png (default: %(default)s)")
    parser.add_argument("--episodes", type=_positive_int, default=40,
                        help="held-out episodes per regime (default: %(default)s)")
    parser.add_argument("--first-seed", type=int, default=0, help="seed of the first episode (default: %(default)s)")
    parser.add_argument("--split", choices=("test", "train"), default="test",
                        help="world split to draw episodes from (default: %(default)s, held out from training)")
    parser.add_argument("--size", type=parse_size, default=(320, 240),
                        help="frame size WIDTHxHEIGHT (default: 320x240)")
    parser.add_argument("--frames", type=_positive_int, default=16, help="frames per episode (default: %(default)s)")
    parser.add_argument("--regimes", nargs="+", choices=REGIMES, default=list(REGIMES),
                        help="camera regimes to evaluate (default: both)")
    parser.add_argument("--conditions", nargs="+", choices=CONDITIONS, default=list(CONDITIONS),
                        help="clean episodes and/or episodes with distractor, lighting drift and noise (default: both)")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                        help="progress methods to compare (default: all)")
    parser.add_argument("--goal", choices=GOALS, default="predicted",
                        help="goal image: predicted by --model from the start frame (default), the true end frame, "
                             "the true end state seen from the start camera, or a blurred/noisy end frame")
    parser.add_argument("--model", default="",
                        help="editor model folder for --goal predicted (default: the embedded default)")
    parser.add_argument("--goal-mode", choices=("plain", "composite"), default="composite",
                        help="with --goal predicted: the composite that keeps the start frame outside the predicted "
                             "change (the node's default goal_mode), or the editor's plain output "
                             "(default: %(default)s)")
    parser.add_argument("--editor-steps", type=_positive_int, default=20,
                        help="diffusion steps per predicted goal (default: %(default)s, the node's)")
    parser.add_argument("--editor-seed", type=int, default=0, help="sampler seed of the predicted goals (default: 0)")
    parser.add_argument("--progress-model", default="",
                        help="learned progress model (.safetensors or folder; default: the shipped one)")
    parser.add_argument("--no-negatives", action="store_true",
                        help="skip the different-action negatives (the same start, another action's frames)")
    parser.add_argument("--reached-threshold", type=float, default=0.8,
                        help="smoothed progress at which 'reached' turns on, for every method (default: %(default)s)")
    parser.add_argument("--hysteresis", type=float, default=0.1,
                        help="'reached' turns off below threshold minus this (default: %(default)s)")
    parser.add_argument("--ema-alpha", type=float, default=0.5,
                        help="weight of the newest frame in the smoothed progress (default: %(default)s)")
    parser.add_argument("--confirm-frames", type=_positive_int, default=2,
                        help="consecutive frames above the threshold before 'reached' turns on (default: %(default)s)")
    parser.add_argument("--hold-end", type=_non_negative_int, default=5,
                        help="extra repeats of the last frame before 'reached by end' is read (default: %(default)s)")
    parser.add_argument("--registration", choices=("auto", "features", "ecc", "none"), default="auto",
                        help="registration method of the pixel and learned scorers (default: %(default)s)")
    parser.add_argument("--threads", type=_positive_int, default=1,
                        help="torch threads (default: 1, as on the node's camera thread; more threads make the "
                             "small progress network slower on a busy machine)")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG of example curves")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return _run(args, argv)
    except (ValueError, OSError, RuntimeError) as error:
        print(f"actedit-eval-progress: error: {error}", file=sys.stderr)
        return 1


def _load(args: argparse.Namespace):
    """The editor (for predicted goals) and the learned progress model, as the options ask."""
    import torch

    torch.set_num_threads(args.threads)
    predictor = progress_model = None
    if args.goal == "predicted":
        from actedit_ros.editing import GoalPredictor

        predictor = GoalPredictor.from_pretrained(args.model or None, device="cpu")
    if "learned" in args.methods:
        from .learned import load_progress_model

        progress_model = load_progress_model(args.progress_model or None)
    return predictor, progress_model


def _run(args: argparse.Namespace, argv: list[str] | None) -> int:
    from tqdm import tqdm

    from actedit_ros.world import generate_episode
    from actedit_ros.world.negatives import other_action
    from actedit_ros.world.readout import EndStateReadout

    filter_options = {"reached_threshold": args.reached_threshold, "hysteresis": args.hysteresis,
                      "ema_alpha": args.ema_alpha, "confirm_frames": args.confirm_frames}
    ReachedFilter(**filter_args(filter_options))  # validates the values before any work is done
    scorer_options = {"registration": args.registration}
    methods = tuple(m for m in METHODS if m in args.methods)
    predictor, progress_model = _load(args)
    predict_options = {"steps": args.editor_steps, "seed": args.editor_seed,
                       "composite": args.goal_mode == "composite"}
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    scores: list[EpisodeScores] = []
    seeds = range(args.first_seed, args.first_seed + args.episodes)
    jobs = [(regime, seed) for regime in args.regimes for seed in seeds]
    for regime, seed in tqdm(jobs, desc="episodes", unit="ep"):
        episode = generate_episode(seed=seed, regime=regime, split=args.split, size=args.size, num_frames=args.frames)
        goal = goal_for(episode, args.goal, seed, predictor, predict_options)
        goal_right = args.goal != "predicted" or EndStateReadout(episode).read(goal).correct
        negative = None if args.no_negatives else other_action(episode).frames
        for condition in args.conditions:
            frames, negative_frames = episode.frames, negative
            if condition == "perturbed":
                frames = perturb(episode.frames, seed=seed)
                negative_frames = None if negative is None else perturb(negative, seed=seed + 7919)
            scores.append(score_episode(episode, frames, goal, condition, goal_right, scorer_options,
                                        filter_options, args.hold_end, negative_frames, methods, progress_model))
    rows = summarise(scores, methods)
    table = markdown_table(rows)
    command = ("actedit-eval-progress " + shlex.join(sys.argv[1:] if argv is None else argv)).strip()
    goal_text = {"predicted": f"predicted by {args.model or 'the embedded default'} from each start frame "
                              f"({args.editor_steps} steps, seed {args.editor_seed})",
                 "end-frame": "the TRUE end frame of each episode", "start-view": "the true end state seen from "
                 "the start camera", "degraded": "the end frame blurred and with noise"}[args.goal]
    report = "\n".join([
        "# Progress scoring against the goal: VOC, 'reached' and false 'reached'",
        "",
        f"Command: `{command}`",
        "",
        f"{args.episodes} held-out episodes (split `{args.split}`, seeds {seeds[0]}..{seeds[-1]}) "
        f"per regime, {args.frames} frames at {args.size[0]}x{args.size[1]}; goal image: **{args.goal}**, "
        f"{goal_text}.",
        "VOC: Spearman correlation of each method's per-frame progress with time order (GVL), mean over episodes. "
        f"Reached by end: after the last frame held for {args.hold_end} more frames, for the episodes whose goal "
        "shows the right end state (world readout) and for the others. False reached: share of frames with true "
        "progress < 0.8 already flagged reached by the streaming decision "
        f"(EMA alpha {args.ema_alpha}, threshold {args.reached_threshold}, hysteresis {args.hysteresis}, "
        f"{args.confirm_frames} confirming frames - the same for every method). Reached on other action: the same "
        "start with a different action's frames (then held): share of those on which reached fired at any frame. "
        "Action succeeds: reached fired at some frame (what `reach_visual_goal` ends on with success), over the "
        "episodes whose goal is right; action ends < 80 %: share of all episodes whose first reached came while the "
        "true progress was below 0.8 (the action would have ended early). "
        "Perturbed: a hand-like distractor sweeping over the changed region, oscillating exposure/colour cast/"
        "brightness gradient, sensor noise; the head regime adds the world's own camera motion.",
        "",
        table,
        "",
        "Methods that could not score a goal (e.g. a predicted goal identical to the start; scored 0, never reached): "
        + (", ".join(f"{r['condition']}/{r['regime']} {r['method']} {r['failed']}" for r in rows if r["failed"])
           or "none"),
        "",
        f"Took {time.perf_counter() - started:.0f} s.",
        "",
    ])
    (args.out / "progress_eval.md").write_text(report)
    (args.out / "progress_eval.json").write_text(json.dumps(
        {"command": command, "settings": {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(args).items()
                                          if k != "out"},
         "summary": rows, "episodes": [s.summary() for s in scores]}, indent=1, default=str))
    if not args.no_plot:
        plot_curves(scores, args.out / "progress_curves.png")
    print(table)
    written = "progress_eval.json" + ("" if args.no_plot else ", progress_curves.png")
    print(f"\nwrote {args.out / 'progress_eval.md'}, {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
