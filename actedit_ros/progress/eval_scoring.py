"""Scoring one episode with every progress method, and the summary table of ``actedit-eval-progress``.

Every method is driven the same way: a stateless per-frame score (for VOC and calibration) and a streaming run with
smoothing and the ``reached`` hysteresis (identical settings for every method), over the episode's frames, then the
last frame held for a while (the camera keeps streaming the finished scene), then - from a fresh state - over the
frames of a *different* action done from the same start (a negative: ``reached`` must not fire).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .learned import LearnedProgressScorer, ProgressModel
from .metrics import PixelMSEProgress, SSIMProgress, false_reached_rate, value_order_correlation
from .scorer import ProgressScorer, ReachedFilter

METHODS = ("learned", "pixel scorer", "pixel MSE", "SSIM")
EARLY = 0.8  # "false reached" counts frames whose true progress is below this


class _Baseline:
    """A stateless baseline (pixel MSE, SSIM) with the shared reached filter on top."""

    def __init__(self, metric, filter_options: dict):
        self.metric, self.filter = metric, ReachedFilter(**filter_args(filter_options))

    def score(self, frame: np.ndarray) -> float:
        return self.metric.score(frame)

    def update(self, frame: np.ndarray) -> tuple[float, bool]:
        return self.filter.update(self.metric.score(frame))

    def reset(self) -> None:
        self.filter.reset()


class _Scorer:
    """A :class:`ProgressScorer` (pixel or learned) seen through the same two calls as the baselines."""

    def __init__(self, scorer: ProgressScorer):
        self.scorer = scorer

    def score(self, frame: np.ndarray) -> float:
        return self.scorer.score(frame).progress

    def update(self, frame: np.ndarray) -> tuple[float, bool]:
        result = self.scorer.update(frame)
        return result.progress, result.reached

    def reset(self) -> None:
        self.scorer.reset()


def filter_args(filter_options: dict) -> dict:
    return {"threshold": filter_options["reached_threshold"], "hysteresis": filter_options["hysteresis"],
            "ema_alpha": filter_options["ema_alpha"], "confirm_frames": filter_options["confirm_frames"]}


def make_methods(start: np.ndarray, goal: np.ndarray, methods: tuple[str, ...], scorer_options: dict,
                 filter_options: dict, progress_model: ProgressModel | None) -> tuple[dict, dict]:
    """Method name -> scorer, and method name -> why it cannot score this goal (e.g. goal identical to start)."""
    made, failed = {}, {}
    for name in methods:
        try:
            if name == "learned":
                made[name] = _Scorer(LearnedProgressScorer(start, goal, progress_model, **scorer_options,
                                                           **filter_options))
            elif name == "pixel scorer":
                made[name] = _Scorer(ProgressScorer(start, goal, **scorer_options, **filter_options))
            elif name == "pixel MSE":
                made[name] = _Baseline(PixelMSEProgress(start, goal), filter_options)
            elif name == "SSIM":
                made[name] = _Baseline(SSIMProgress(start, goal), filter_options)
            else:
                raise KeyError(name)
        except ValueError as error:
            failed[name] = str(error)
    return made, failed


@dataclass
class EpisodeScores:
    """Per-frame outputs of every method on one episode (and its negative)."""

    episode_id: str
    action: str
    regime: str
    condition: str
    goal_right: bool  # the goal shows the episode's true end state (world readout); always True for true goals
    true_progress: list[float]
    progress: dict[str, list[float]] = field(default_factory=dict)  # stateless per-frame score
    streamed: dict[str, list[float]] = field(default_factory=dict)  # smoothed, as ``update`` reports it
    reached: dict[str, list[bool]] = field(default_factory=dict)
    reached_after_hold: dict[str, bool] = field(default_factory=dict)
    held_reached: dict[str, float] = field(default_factory=dict)  # share of hold frames flagged reached
    negative_reached: dict[str, bool] = field(default_factory=dict)  # reached fired on the other action's frames
    failed: dict[str, str] = field(default_factory=dict)  # method -> why it could not score this goal

    def first_reached_progress(self, method: str) -> float | None:
        """True progress at the first frame the stream flags ``reached`` (the hold frames repeat the last one): where a
        ``reach_visual_goal`` action would end with success. None when it never fires."""
        flags = self.reached[method]
        if any(flags):
            return float(self.true_progress[flags.index(True)])
        return float(self.true_progress[-1]) if self.held_reached[method] > 0 else None

    def summary(self) -> dict:
        out = {"episode": self.episode_id, "action": self.action, "regime": self.regime, "condition": self.condition,
               "goal_right": self.goal_right, "failed": self.failed, "methods": {}}
        for method in self.progress:
            out["methods"][method] = {
                "voc": value_order_correlation(self.progress[method]),
                "false_reached": false_reached_rate(self.reached[method], self.true_progress, before=EARLY),
                "reached_at_end": bool(self.reached_after_hold[method]),
                "first_reached_progress": self.first_reached_progress(method),
                "negative_reached": self.negative_reached.get(method),
                "progress_mae": progress_mae(self.progress[method], self.true_progress),
                "progress": [round(p, 4) for p in self.progress[method]],
            }
        return out


def progress_mae(predicted: list[float], true_progress: list[float]) -> float:
    return float(np.mean(np.abs(np.asarray(predicted) - np.asarray(true_progress))))


def early_reached(scores: EpisodeScores, method: str) -> np.ndarray:
    """``reached`` of the frames whose true progress is below ``EARLY`` (pooled over episodes by ``summarise``; one
    episode's rate is ``false_reached_rate``)."""
    return np.asarray(scores.reached[method])[np.asarray(scores.true_progress) < EARLY]


def score_episode(episode, frames: list[np.ndarray], goal: np.ndarray, condition: str, goal_right: bool,
                  scorer_options: dict, filter_options: dict, hold_end: int = 5,
                  negative_frames: list[np.ndarray] | None = None, methods: tuple[str, ...] = METHODS,
                  progress_model: ProgressModel | None = None) -> EpisodeScores:
    """Runs every method over ``frames`` (frames[0] is the start), ``hold_end`` repeats of the last frame, then
    from a fresh state over ``negative_frames``. A method that cannot score the goal scores 0 and never reaches."""
    result = EpisodeScores(episode.episode_id, episode.action, episode.regime, condition, goal_right,
                           [float(p) for p in episode.progress])
    made, result.failed = make_methods(frames[0], goal, methods, scorer_options, filter_options, progress_model)
    for name in methods:
        if name not in made:
            result.progress[name] = result.streamed[name] = [0.0] * len(frames)
            result.reached[name] = [False] * len(frames)
            result.reached_after_hold[name], result.held_reached[name] = False, 0.0
            result.negative_reached[name] = False
            continue
        method = made[name]
        result.progress[name] = [method.score(frame) for frame in frames]
        streamed = [method.update(frame) for frame in frames]
        held = [method.update(frames[-1]) for _ in range(hold_end)]
        result.streamed[name] = [p for p, _ in streamed]
        result.reached[name] = [r for _, r in streamed]
        result.reached_after_hold[name] = (held or streamed)[-1][1]
        result.held_reached[name] = float(np.mean([r for _, r in held])) if held else float(streamed[-1][1])
        if negative_frames is not None:
            method.reset()
            negative = [method.update(frame) for frame in negative_frames]
            negative += [method.update(negative_frames[-1]) for _ in range(hold_end)]
            result.negative_reached[name] = any(r for _, r in negative)
    return result


def summarise(scores: list[EpisodeScores], methods: tuple[str, ...] = METHODS) -> list[dict]:
    """One row per (condition, regime, method)."""
    rows = []
    for condition in ("clean", "perturbed"):
        for regime in ("fixed", "head"):
            group = [s for s in scores if s.condition == condition and s.regime == regime]
            if not group:
                continue
            right = [s for s in group if s.goal_right]
            wrong = [s for s in group if not s.goal_right]
            for method in methods:
                vocs = np.array([value_order_correlation(s.progress[method]) for s in group])
                early = np.concatenate([early_reached(s, method) for s in group])
                negatives = [s.negative_reached[method] for s in group if method in s.negative_reached]
                first = [s.first_reached_progress(method) for s in group]
                rows.append({
                    "condition": condition, "regime": regime, "method": method, "episodes": len(group),
                    "goal_right": len(right),
                    "voc_mean": float(vocs.mean()), "voc_std": float(vocs.std()), "voc_min": float(vocs.min()),
                    "voc_right": float(np.mean([value_order_correlation(s.progress[method]) for s in right]))
                    if right else float("nan"),
                    "false_reached": float(early.mean()) if early.size else float("nan"),
                    "reached_right": _mean([s.reached_after_hold[method] for s in right]),
                    "reached_wrong": _mean([s.reached_after_hold[method] for s in wrong]),
                    "held_reached_right": _mean([s.held_reached[method] for s in right]),
                    "succeeds_right": _mean([s.first_reached_progress(method) is not None for s in right]),
                    "ends_early": _mean([f is not None and f < EARLY for f in first]),
                    "negative_reached": _mean(negatives),
                    "progress_mae": float(np.mean([progress_mae(s.progress[method], s.true_progress)
                                                   for s in group])),
                    "failed": int(sum(method in s.failed for s in group)),
                    "frames": int(sum(len(s.true_progress) for s in group)),
                })
    return rows


def _mean(values: list) -> float:
    return float(np.mean(values)) if values else float("nan")


def _percent(value: float, digits: int = 0) -> str:
    return "n/a" if value != value else f"{value:.{digits}%}"


def markdown_table(rows: list[dict]) -> str:
    lines = ["| condition | regime | method | VOC mean ± std | VOC (goal right) | reached by end, goal right | "
             "reached by end, goal wrong | false reached < 80 % | reached on other action | action succeeds, goal "
             "right | action ends < 80 % | progress MAE |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    best = {}
    for row in rows:
        key = (row["condition"], row["regime"])
        best[key] = max(best.get(key, -2.0), row["voc_mean"])
    for row in rows:
        voc = f"{row['voc_mean']:.3f} ± {row['voc_std']:.3f}"
        if row["voc_mean"] == best[(row["condition"], row["regime"])]:
            voc = f"**{voc}**"
        right = f"{_percent(row['reached_right'])} of {row['goal_right']}"
        wrong = f"{_percent(row['reached_wrong'])} of {row['episodes'] - row['goal_right']}"
        lines.append(f"| {row['condition']} | {row['regime']} | {row['method']} | {voc} | {row['voc_right']:.3f} | "
                     f"{right} | {wrong} | {_percent(row['false_reached'], 1)} | "
                     f"{_percent(row['negative_reached'])} | {_percent(row['succeeds_right'])} | "
                     f"{_percent(row['ends_early'], 1)} | {row['progress_mae']:.3f} |")
    return "\n".join(lines)
