"""Results of `actedit-eval-bag`: per-episode measurements, the progress CSV, figures and the summary files.

Plain Python (numpy; OpenCV and matplotlib imported where figures are written). `actedit_ros.bag.evaluation` fills
these in; `actedit_ros.bag.eval_bag` is the command line.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from actedit_ros.bag.episodes import NS, BagEpisode

CSV_COLUMNS = ("episode", "frame", "t", "stamp", "progress", "raw_progress", "similarity", "reached", "registered",
               "failure")  # failure: empty on scored frames; the reason on the one row of a failed episode


# ----------------------------------------------------------------------------------------------------------------
# Per-episode results
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class EpisodeResult:
    """What was measured for one episode."""

    episode: BagEpisode
    status: str = "pending"  # pending, scoring, done, failed (detail says why), interrupted
    detail: str = ""
    start_rgb: np.ndarray | None = None
    goal_rgb: np.ndarray | None = None
    final_rgb: np.ndarray | None = None
    first_frame_ns: int | None = None
    prediction_seconds: float | None = None
    rows: list[dict] = field(default_factory=list)
    skipped: Counter = field(default_factory=Counter)
    scorer: object = None
    figure: str | None = None
    goal_label: str = "predicted goal"
    stale: int = 0  # recorded progress messages flagged stale (repeats while no camera frame came)

    @property
    def name(self) -> str:
        return f"episode_{self.episode.index:03d}"

    def series(self, key: str) -> np.ndarray:
        return np.array([row[key] for row in self.rows], dtype=float)

    @property
    def voc(self) -> float:
        return value_order_correlation(self.series("progress"))

    @property
    def voc_raw(self) -> float:
        return value_order_correlation(self.series("raw_progress"))

    @property
    def final_progress(self) -> float:
        return float(self.rows[-1]["progress"]) if self.rows else math.nan

    @property
    def reached_t(self) -> float | None:
        return next((row["t"] for row in self.rows if row["reached"]), None)

    @property
    def unregistered(self) -> int:
        return sum(1 for row in self.rows if not row["registered"])

    def metrics(self) -> dict:
        ep = self.episode
        return {
            "episode": ep.index,
            "instruction": ep.instruction,
            "start_ns": ep.start_ns,
            "end_ns": ep.end_ns,
            "status": self.status,
            "detail": self.detail,
            "frames": len(self.rows),
            "voc": _json_float(self.voc),
            "voc_raw": _json_float(self.voc_raw),
            "final_progress": _json_float(self.final_progress),
            "reached_t": self.reached_t,
            "unregistered_frames": self.unregistered,
            "skipped_messages": sum(self.skipped.values()),
            "stale_messages": self.stale,
            "prediction_seconds": self.prediction_seconds,
            "figure": self.figure,
        }


def value_order_correlation(values: np.ndarray) -> float:
    """VOC as the Progress helper defines it (Spearman vs time order); NaN for fewer than two frames."""
    from actedit_ros.progress import value_order_correlation as voc

    return voc(values) if len(values) >= 2 else math.nan


def _json_float(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def _fmt(value: float | None, digits: int = 3, none: str = "n/a") -> str:
    return none if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


# ----------------------------------------------------------------------------------------------------------------
# Outputs
# ----------------------------------------------------------------------------------------------------------------


def save_rgb_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")


def write_episode_figure(result: EpisodeResult, path: Path, reached_threshold: float) -> None:
    """Progress curve of one episode under thumbnails of its start frame, goal image and final frame."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 6.5), dpi=100, layout="constrained")
    grid = fig.add_gridspec(2, 3, height_ratios=(1, 1.3))
    for column, (title, image) in enumerate((("start frame", result.start_rgb), (result.goal_label, result.goal_rgb),
                                             ("final frame", result.final_rgb))):
        ax = fig.add_subplot(grid[0, column])
        if image is not None:
            ax.imshow(image)
        ax.set_title(title, fontsize=10)
        ax.set_axis_off()
    ax = fig.add_subplot(grid[1, :])
    t = result.series("t")
    ax.plot(t, result.series("progress"), color="tab:blue", lw=2, label="progress")
    ax.plot(t, result.series("raw_progress"), color="tab:blue", lw=1, alpha=0.4, label="raw progress")
    ax.plot(t, result.series("similarity"), color="tab:green", lw=1, ls="--", label="similarity to goal")
    ax.axhline(reached_threshold, color="gray", lw=0.8, ls=":", label="reached threshold")
    unregistered = [row["t"] for row in result.rows if not row["registered"]]
    if unregistered:
        ax.plot(unregistered, [0.0] * len(unregistered), "x", color="tab:red", label="not registered")
    if result.reached_t is not None:
        ax.axvline(result.reached_t, color="tab:orange", lw=1.2, label=f"reached at {result.reached_t:.2f} s")
    ax.set_xlim(0, max(result.episode.duration_s, float(t[-1]) if len(t) else 0.0))
    ax.set_ylim(-0.05, 1.05)
    ax.set_xlabel("time since episode start [s]")
    ax.set_ylabel("progress")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(f"{result.name}: {result.episode.instruction}\nVOC {_fmt(result.voc)}, "
                 f"final progress {_fmt(result.final_progress)}", fontsize=11)
    fig.savefig(path)


def reason_kind(reason: str) -> str:
    """A skip reason with its numbers replaced by N: reasons that differ only in byte counts or sizes group."""
    return re.sub(r"\d+(?:\.\d+)?", "N", reason)


@dataclass
class SkipTally:
    """Skipped messages counted by kind ('topic: reason' with the reason's numbers replaced), first one kept."""

    counts: Counter = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)

    def add(self, topic: str, reason: str) -> None:
        kind = f"{topic}: {reason_kind(reason)}"
        self.counts[kind] += 1
        self.examples.setdefault(kind, reason)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass
class RunInfo:
    """Everything the summary reports besides the episodes."""

    bag: str
    storage: str = ""
    camera_topic: str = ""
    episode_source: str = ""
    model: str = ""
    settings: str = ""
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    complete: bool = False  # the whole bag was read (an error then means nothing could be scored)
    skipped: SkipTally = field(default_factory=lambda: SkipTally())
    frames_read: int = 0
    bag_start_ns: int = 0
    seconds: float = 0.0


def write_summary(output: Path, info: RunInfo, results: list[EpisodeResult]) -> None:
    """summary.md (for people) and summary.json (for programs)."""
    skipped_total = info.skipped.total
    scored = [r for r in results if r.rows]
    vocs = [r.voc for r in scored if math.isfinite(r.voc)]
    lines = [
        f"# Bag evaluation: {Path(info.bag).name}",
        "",
        f"- bag: `{info.bag}` ({info.storage or 'unknown storage'})",
        f"- camera topic: `{info.camera_topic or 'n/a'}`",
        f"- episodes from: {info.episode_source or 'n/a'}",
        f"- model: {info.model or 'n/a'}; {info.settings}",
        f"- camera frames read: {info.frames_read}; skipped messages: {skipped_total}",
        f"- episodes scored: {len(scored)} of {len(results)}; mean VOC: {_fmt(float(np.mean(vocs)) if vocs else None)}",
        f"- wall time: {info.seconds:.1f} s",
        "",
    ]
    failed = [r for r in results if r.status == "failed"]
    if info.error and info.complete:
        lines += [f"**The evaluation failed: {info.error}**", ""]
    elif info.error:
        lines += [f"**The run stopped early: {info.error}** Results below cover what was read before that.", ""]
    elif failed:
        lines += [f"**{len(failed)} of {len(results)} episodes failed** (reasons in the status column).", ""]
    lines += [
        "| episode | instruction | start [s] | length [s] | frames | VOC | VOC raw | final progress | reached at [s] "
        "| unregistered | skipped msgs | status | figure |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    bag_start = info.bag_start_ns
    for r in results:
        m = r.metrics()
        figure = f"[{Path(r.figure).name}]({Path(r.figure).name})" if r.figure else ""
        status = r.status + (f": {r.detail}" if r.detail else "") + (f" ({r.stale} stale repeats)" if r.stale else "")
        lines.append(
            f"| {r.episode.index} | {r.episode.instruction.replace('|', '/')} | "
            f"{(r.episode.start_ns - bag_start) / NS:.2f} | {r.episode.duration_s:.2f} | {m['frames']} | "
            f"{_fmt(r.voc)} | {_fmt(r.voc_raw)} | {_fmt(r.final_progress)} | {_fmt(r.reached_t, 2, 'not reached')} | "
            f"{m['unregistered_frames']} | {m['skipped_messages']} | {status.replace('|', '/')} | {figure} |"
        )
    if info.skipped.total:
        lines += ["", "## Skipped messages", "", "Grouped by kind (numbers such as byte counts replaced by N), with "
                  "the first message of each kind.", "", "| count | kind | first |", "|---|---|---|"]
        lines += [f"| {count} | {kind.replace('|', '/')} | {info.skipped.examples[kind].replace('|', '/')} |"
                  for kind, count in info.skipped.counts.most_common()]
    if info.notes:
        lines += ["", "## Notes", ""] + [f"- {note}" for note in info.notes]
    lines += ["", "VOC: Spearman correlation between progress and time order within the episode (1 = progress "
                  "rises monotonically). Start times are seconds of log time from the bag's first message.", ""]
    (output / "summary.md").write_text("\n".join(lines))
    summary = {
        "bag": info.bag,
        "storage": info.storage,
        "camera_topic": info.camera_topic,
        "episode_source": info.episode_source,
        "model": info.model,
        "settings": info.settings,
        "error": info.error,
        "frames_read": info.frames_read,
        "skipped_messages": skipped_total,
        "skipped_reasons": dict(info.skipped.counts),
        "skipped_examples": dict(info.skipped.examples),
        "episodes_failed": len(failed),
        "notes": info.notes,
        "seconds": round(info.seconds, 3),
        "episodes": [r.metrics() for r in results],
    }
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
