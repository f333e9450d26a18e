"""`actedit-eval-bag`: replay a rosbag2 bag offline, predict a goal image per episode and score progress toward it.

For every episode (from an episode file or an instruction topic) the first camera frame at or after its start is
the start frame; the goal predicted from it (GoalPredictor) and every later frame up to the episode end are scored
with ProgressScorer. Needs no ROS install: the bag is read with rosbags.

Outputs in --output:
  progress.csv          one row per scored frame (written as it goes, so an interrupted run keeps its rows)
  episode_NNN.png       progress curve with the start frame, goal image and final frame as thumbnails
  episode_NNN_goal.png  the predicted goal image
  summary.md            per-episode VOC, final progress, reached time, skipped messages (also on errors)
  summary.json          the same numbers for programs

With --oracle-goal no model runs either: each episode's last frame is its goal, which measures the scorer alone.
With --recorded-progress no model runs: the bag holds what the goal node published live (recorded with
actedit-record-bag, e.g. while actedit-play-bag fed it), and the same outputs are made from those messages.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from actedit_ros.bag.episodes import NS, TIME_BASES, BagEpisode, EpisodeError, episodes_from_instructions, \
    load_episode_file
from actedit_ros.bag.io import GOAL_TYPE, IMAGE_TYPE, IMAGE_TYPES, PROGRESS_TYPE, STRING_TYPE, BagError, BagFrame, \
    BagReader, SkippedMessage, image_message_to_rgb, stamp_to_ns

PROG = "actedit-eval-bag"
CSV_COLUMNS = ("episode", "frame", "t", "stamp", "progress", "raw_progress", "similarity", "reached", "registered")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Evaluate goal prediction and progress scoring on a recorded rosbag2 bag (sqlite3 or mcap), "
                    "without ROS. Writes a per-frame CSV, one figure per episode and a summary.",
    )
    parser.add_argument("bag", help="rosbag2 bag directory (with metadata.yaml) or a single .mcap/.db3 file")
    parser.add_argument("-o", "--output", required=True,
                        help="output folder (created); progress.csv, episode_NNN.png, summary.md/json go here")
    parser.add_argument("--camera-topic", default=None,
                        help="sensor_msgs/Image or CompressedImage topic to score (default: the bag's only image "
                             "topic)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--episodes", default=None,
                        help="YAML or CSV file of episodes: start, end (optional) and instruction per segment, in "
                             "seconds (see --times)")
    source.add_argument("--instruction-topic", default=None,
                        help="std_msgs/String topic in the bag; each message starts an episode that lasts until the "
                             "next one or the bag end (default when no --episodes: the bag's only String topic)")
    source.add_argument("--recorded-progress", nargs="?", const="", default=None, metavar="TOPIC",
                        help="evaluate the progress the goal node published live, recorded in the bag with "
                             "actedit-record-bag (actedit_ros/msg/Progress; TOPIC defaults to the bag's only one): "
                             "one episode per goal_id, no model runs")
    parser.add_argument("--goal-topic", default=None,
                        help="with --recorded-progress: the actedit_ros/msg/GoalImage topic for the start/goal "
                             "thumbnails (default: the bag's only one, if any)")
    parser.add_argument("--times", choices=TIME_BASES, default="auto",
                        help="how --episodes times are read: relative = seconds from the bag's first message, "
                             "absolute = Unix seconds of the log time, auto = absolute when >= 1e9 (default: auto)")
    parser.add_argument("--model", default=None,
                        help="diffusers model folder for the goal predictor (default: the embedded default model)")
    parser.add_argument("--oracle-goal", action="store_true",
                        help="use each episode's last camera frame as its goal instead of predicting one (no model "
                             "runs): measures the progress scorer alone, an upper bound for predicted goals")
    parser.add_argument("--steps", type=int, default=20, help="diffusion sampling steps per goal (default: 20)")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed for every goal (default: 0)")
    parser.add_argument("--device", default="auto", help="torch device for the predictor: auto, cpu, cuda, ... "
                                                         "(default: auto)")
    parser.add_argument("--text-guidance", type=float, default=7.5, help="text guidance scale (default: 7.5)")
    parser.add_argument("--image-guidance", type=float, default=1.5, help="image guidance scale (default: 1.5)")
    parser.add_argument("--reached-threshold", type=float, default=0.8,
                        help="progress above which the goal counts as reached (default: 0.8)")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of unexpected errors instead of a one-line message")
    return parser


# ----------------------------------------------------------------------------------------------------------------
# Per-episode results
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class EpisodeResult:
    """What was measured for one episode."""

    episode: BagEpisode
    status: str = "pending"  # pending, scoring, done, no frames, prediction failed
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
    skipped: Counter = field(default_factory=Counter)
    frames_read: int = 0
    bag_start_ns: int = 0
    seconds: float = 0.0


def write_summary(output: Path, info: RunInfo, results: list[EpisodeResult]) -> None:
    """summary.md (for people) and summary.json (for programs)."""
    skipped_total = sum(info.skipped.values())
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
    if info.error:
        lines += [f"**The run stopped early: {info.error}** Results below cover what was read before that.", ""]
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
    if info.skipped:
        lines += ["", "## Skipped messages", "", "| count | reason |", "|---|---|"]
        lines += [f"| {count} | {reason.replace('|', '/')} |" for reason, count in info.skipped.most_common()]
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
        "skipped_reasons": dict(info.skipped),
        "notes": info.notes,
        "seconds": round(info.seconds, 3),
        "episodes": [r.metrics() for r in results],
    }
    (output / "summary.json").write_text(json.dumps(summary, indent=2))


# ----------------------------------------------------------------------------------------------------------------
# The evaluation
# ----------------------------------------------------------------------------------------------------------------


class BagEvaluation:
    """One pass over the camera topic: start each episode at its first frame, score frames until its end."""

    def __init__(self, args: argparse.Namespace, output: Path):
        self.args = args
        self.output = output
        self.info = RunInfo(bag=str(args.bag))
        self.results: list[EpisodeResult] = []
        self.predictor = None
        self.oracle_goals: dict[int, np.ndarray] = {}
        self._csv_file = None
        self._csv = None

    # -- set-up ---------------------------------------------------------------------------------------------------
    def load_episodes(self, bag: BagReader) -> list[BagEpisode]:
        args = self.args
        if args.episodes:
            self.info.episode_source = f"file {args.episodes} (times: {args.times})"
            return load_episode_file(args.episodes, bag.start_ns, bag.end_ns, args.times)
        topic = bag.string_topic(args.instruction_topic)
        if topic is None:
            found = bag.topics_of_type([STRING_TYPE])
            raise BagError(
                "no episodes: give --episodes FILE or --instruction-topic TOPIC "
                + (f"(the bag has several {STRING_TYPE} topics: {', '.join(found)})" if found
                   else f"(the bag has no {STRING_TYPE} topic; its topics: {bag.describe_topics()})")
            )
        self.info.episode_source = f"instruction topic {topic}"
        instructions = []
        for message in bag.messages([topic]):
            try:
                instructions.append((message.log_ns, bag.deserialize(message).data))
            except BagError as exc:
                self.info.skipped[f"{topic}: {exc}"] += 1
        return episodes_from_instructions(instructions, bag.end_ns, topic=f"instruction topic {topic}")

    def load_predictor(self) -> None:
        from actedit_ros.editing import GoalPredictor, default_model_is_placeholder

        self.predictor = GoalPredictor.from_pretrained(model_path=self.args.model, device=self.args.device)
        self.info.model = self.args.model or "embedded default"
        if not self.args.model and default_model_is_placeholder():
            self.info.model += " (a randomly initialised placeholder: no trained default model ships yet)"
            self.info.notes.append("goals came from the random placeholder model, so these numbers say nothing "
                                   "about goal prediction; pass --model with a trained model")

    # -- per-frame work -------------------------------------------------------------------------------------------
    def find_oracle_goals(self, bag: BagReader, camera_topic: str, first: int, last: int) -> None:
        """The last decodable frame of each episode (a pre-pass over the camera topic)."""
        self.oracle_goals = {}
        for item in bag.frames(camera_topic, first, last):
            if isinstance(item, BagFrame):
                for result in self.results:
                    if result.episode.start_ns <= item.log_ns < result.episode.end_ns:
                        self.oracle_goals[result.episode.index] = item.rgb

    def start_episode(self, result: EpisodeResult, frame: BagFrame) -> None:
        from actedit_ros.progress import ProgressScorer

        args = self.args
        result.first_frame_ns = frame.log_ns
        result.start_rgb = frame.rgb
        if args.oracle_goal:
            result.goal_rgb = self.oracle_goals[result.episode.index]
            result.goal_label = "goal: the episode's last frame"
        else:
            try:
                prediction = self.predictor.predict(frame.rgb, result.episode.instruction, steps=args.steps,
                                                    text_guidance=args.text_guidance,
                                                    image_guidance=args.image_guidance, seed=args.seed)
            except ValueError as exc:
                result.status, result.detail = "prediction failed", str(exc)
                return
            result.goal_rgb = prediction.images[0]
            result.prediction_seconds = float(prediction.seconds)
        save_rgb_png(self.output / f"{result.name}_goal.png", result.goal_rgb)
        result.scorer = ProgressScorer(result.start_rgb, result.goal_rgb, reached_threshold=args.reached_threshold)
        result.status = "scoring"

    def score(self, result: EpisodeResult, frame: BagFrame) -> None:
        try:
            r = result.scorer.update(frame.rgb)
        except ValueError as exc:
            result.skipped[f"frame not scored: {exc}"] += 1
            self.info.skipped[f"frame not scored: {exc}"] += 1
            return
        row = {
            "episode": result.episode.index,
            "frame": len(result.rows),
            "t": round((frame.log_ns - result.episode.start_ns) / NS, 6),
            "stamp": f"{frame.stamp_ns // NS}.{frame.stamp_ns % NS:09d}",
            "progress": float(r.progress),
            "raw_progress": float(r.raw_progress),
            "similarity": float(r.similarity),
            "reached": bool(r.reached),
            "registered": bool(r.registered),
        }
        self._write_row(result, row)
        result.final_rgb = frame.rgb

    def finish_episode(self, result: EpisodeResult) -> None:
        if result.status == "scoring":
            result.status = "done"
        elif result.status == "pending":
            result.status, result.detail = "no frames", "no decodable camera frame inside the episode"
        result.scorer = None
        if result.start_rgb is not None:
            path = self.output / f"{result.name}.png"
            write_episode_figure(result, path, self.args.reached_threshold)
            result.figure = str(path)

    # -- the run --------------------------------------------------------------------------------------------------
    def _open_csv(self) -> None:
        self._csv_file = open(self.output / "progress.csv", "w", newline="")
        self._csv = csv.DictWriter(self._csv_file, fieldnames=CSV_COLUMNS)
        self._csv.writeheader()

    def _write_row(self, result: EpisodeResult, row: dict) -> None:
        result.rows.append(row)
        self._csv.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
        self._csv_file.flush()

    def evaluate_predicted(self, bag: BagReader) -> None:
        """Predict a goal at each episode start and score the camera frames (the default mode)."""
        from tqdm import tqdm

        args = self.args
        camera_topic = bag.image_topic(args.camera_topic)
        self.info.camera_topic = camera_topic
        episodes = self.load_episodes(bag)
        self.results = [EpisodeResult(ep) for ep in episodes]
        self.info.settings = (f"steps {args.steps}, seed {args.seed}, text guidance {args.text_guidance}, "
                              f"image guidance {args.image_guidance}, reached threshold {args.reached_threshold}")
        first = min(ep.start_ns for ep in episodes)
        last = max(ep.end_ns for ep in episodes)
        if args.oracle_goal:
            self.find_oracle_goals(bag, camera_topic, first, last)
            self.info.model = "none: --oracle-goal (each episode's last frame is its goal)"
            self.info.settings = f"reached threshold {args.reached_threshold}"
        else:
            self.load_predictor()
        self._open_csv()
        open_results = list(self.results)
        progress_bar = tqdm(total=bag.topics[camera_topic].count, unit="msg", desc="scoring frames",
                            dynamic_ncols=True)
        with progress_bar:
            for item in bag.frames(camera_topic, first, last):
                progress_bar.update(1)
                active = [r for r in open_results if r.episode.start_ns <= item.log_ns < r.episode.end_ns]
                if isinstance(item, SkippedMessage):
                    self.info.skipped[f"{item.topic}: {item.reason}"] += 1
                    for result in active:
                        result.skipped[item.reason] += 1
                    continue
                self.info.frames_read += 1
                for result in [r for r in open_results if r.episode.end_ns <= item.log_ns]:
                    self.finish_episode(result)
                    open_results.remove(result)
                for result in active:
                    if result.status == "pending":
                        self.start_episode(result, item)
                    if result.status == "scoring":
                        self.score(result, item)
        for result in open_results:
            self.finish_episode(result)

    def evaluate_recorded(self, bag: BagReader) -> None:
        """Evaluate the progress the goal node published live (recorded with actedit-record-bag); no model runs.

        One episode per goal_id; its start/goal thumbnails come from the GoalImage topic when the bag has one,
        its final frame from the camera topic when there is one. Stale repeats are counted, not scored.
        """
        from tqdm import tqdm

        args = self.args
        progress_topic = bag.single_topic(PROGRESS_TYPE, args.recorded_progress or None, "--recorded-progress")
        goal_topic = bag.single_topic(GOAL_TYPE, args.goal_topic, "--goal-topic", required=False)
        camera_topics = bag.topics_of_type(IMAGE_TYPES)
        camera_topic = bag.image_topic(args.camera_topic) if args.camera_topic or len(camera_topics) == 1 else None
        self.info.camera_topic = camera_topic or ""
        self.info.episode_source = f"goals recorded on {progress_topic}" + (f" and {goal_topic}" if goal_topic else "")
        self.info.model = "the goal node, live (recorded)"
        self.info.settings = f"reached as recorded by the node (figure threshold line: {args.reached_threshold})"

        goals: dict[str, tuple] = {}  # goal_id -> (log_ns, instruction, start_rgb, goal_rgb)
        for message in bag.messages([goal_topic]) if goal_topic else ():
            try:
                msg = bag.deserialize(message)
                if msg.goal_id:
                    goals[msg.goal_id] = (message.log_ns, msg.instruction,
                                          image_message_to_rgb(msg.start_image, IMAGE_TYPE),
                                          image_message_to_rgb(msg.goal_image, IMAGE_TYPE))
            except (BagError, ValueError) as exc:
                self.info.skipped[f"{goal_topic}: {exc}"] += 1

        self._open_csv()
        by_goal: dict[str, EpisodeResult] = {}
        with tqdm(total=bag.topics[progress_topic].count, unit="msg", desc="reading progress",
                  dynamic_ncols=True) as progress_bar:
            for message in bag.messages([progress_topic]):
                progress_bar.update(1)
                try:
                    msg = bag.deserialize(message)
                except BagError as exc:
                    self.info.skipped[f"{progress_topic}: {exc}"] += 1
                    continue
                if not msg.goal_id:
                    continue
                result = by_goal.get(msg.goal_id)
                if result is None:
                    goal = goals.get(msg.goal_id)
                    start_ns = min(goal[0], message.log_ns) if goal else message.log_ns
                    episode = BagEpisode(len(by_goal), msg.instruction or msg.goal_id, start_ns, start_ns + 1)
                    result = by_goal[msg.goal_id] = EpisodeResult(episode, status="scoring", detail=msg.goal_id)
                    if goal:
                        result.start_rgb, result.goal_rgb = goal[2], goal[3]
                        result.goal_label = "goal published by the node"
                    self.results.append(result)
                if msg.stale:
                    result.stale += 1
                    continue
                result.episode = dataclasses.replace(result.episode, end_ns=message.log_ns + 1)
                stamp_ns = stamp_to_ns(msg.header.stamp)
                self._write_row(result, {
                    "episode": result.episode.index,
                    "frame": len(result.rows),
                    "t": round((message.log_ns - result.episode.start_ns) / NS, 6),
                    "stamp": f"{stamp_ns // NS}.{stamp_ns % NS:09d}",
                    "progress": float(msg.progress),
                    "raw_progress": float(msg.raw_progress),
                    "similarity": float(msg.similarity),
                    "reached": bool(msg.reached),
                    "registered": bool(msg.registered),
                })
        if not self.results:
            raise BagError(f"topic {progress_topic} holds no progress messages with a goal_id")
        if camera_topic:
            for item in bag.frames(camera_topic):
                if isinstance(item, SkippedMessage):
                    self.info.skipped[f"{item.topic}: {item.reason}"] += 1
                    continue
                self.info.frames_read += 1
                for result in self.results:
                    if result.episode.start_ns <= item.log_ns < result.episode.end_ns:
                        result.final_rgb = item.rgb
                        if result.start_rgb is None:
                            result.start_rgb = item.rgb
        for result in self.results:
            result.status = "done"
            self.finish_episode(result)

    def run(self) -> None:
        args = self.args
        t0 = time.monotonic()
        try:
            with BagReader(args.bag) as bag:
                self.info.storage = bag.storage
                self.info.bag_start_ns = bag.start_ns
                self.info.notes += bag.notes
                if args.recorded_progress is not None:
                    self.evaluate_recorded(bag)
                else:
                    self.evaluate_predicted(bag)
        except BaseException as exc:
            self.info.error = (str(exc) or type(exc).__name__) if not isinstance(exc, KeyboardInterrupt) \
                else "interrupted (Ctrl-C)"
            for result in self.results:
                if result.status in ("pending", "scoring") and result.rows:
                    result.status = "interrupted"
                    try:
                        self.finish_episode(result)
                    except Exception:  # noqa: BLE001 - the summary below matters more than one figure
                        pass
            raise
        finally:
            if self._csv_file is not None:
                self._csv_file.close()
            self.info.seconds = time.monotonic() - t0
            write_summary(self.output, self.info, self.results)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    if not 0.0 < args.reached_threshold <= 1.0:
        parser.error(f"--reached-threshold must be in (0, 1], got {args.reached_threshold}")
    output = Path(args.output)
    try:
        output.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"{PROG}: error: cannot create output folder {output}: {exc}", file=sys.stderr)
        return 1
    evaluation = BagEvaluation(args, output)
    try:
        evaluation.run()
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted; partial results in {output}", file=sys.stderr)
        return 130
    except (BagError, EpisodeError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a CLI reports, it does not dump tracebacks (see --debug)
        if args.debug:
            raise
        expected: tuple = (ValueError, OSError)
        try:
            from actedit_ros.editing import ModelLoadError

            expected += (ModelLoadError,)
        except ImportError:
            pass
        kind = "" if isinstance(exc, expected) else f"unexpected {type(exc).__name__}: "
        print(f"{PROG}: error: {kind}{exc} (partial results in {output}; --debug shows the traceback)",
              file=sys.stderr)
        return 1
    summary = output / "summary.md"
    print(f"{PROG}: {len(evaluation.results)} episodes, {evaluation.info.frames_read} frames, "
          f"{sum(evaluation.info.skipped.values())} skipped messages; summary: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
