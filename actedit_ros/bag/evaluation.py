"""The evaluation behind `actedit-eval-bag`: one pass over a bag's camera topic, episode by episode.

Each episode starts at its first decodable camera frame: a goal is predicted from it (or, with --oracle-goal, the
episode's last frame is the goal) and every later frame up to the episode end is scored with the progress scorer (``--progress-scorer``). An
episode that cannot be scored is marked failed with its reason; the others go on.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import time
from pathlib import Path

import numpy as np

from actedit_ros.bag.episodes import NS, BagEpisode, episodes_from_instructions, load_episode_file
from actedit_ros.bag.eval_report import CSV_COLUMNS, EpisodeResult, RunInfo, save_rgb_png, write_episode_figure, \
    write_summary
from actedit_ros.bag.io import GOAL_TYPE, IMAGE_TYPE, IMAGE_TYPES, PROGRESS_TYPE, STRING_TYPE, BagError, BagFrame, \
    BagReader, SkippedMessage, image_message_to_rgb, stamp_to_ns

MIN_FRAMES = 2  # an episode needs this many scored frames for a progress curve and its VOC


class EvaluationError(Exception):
    """The run went through the bag but has nothing to show: no frame of any episode could be scored."""


class BagEvaluation:
    """One pass over the camera topic: start each episode at its first frame, score frames until its end."""

    def __init__(self, args: argparse.Namespace, output: Path):
        self.args = args
        self.output = output
        self.info = RunInfo(bag=str(args.bag))
        self.results: list[EpisodeResult] = []
        self.predictor = None
        self.progress_model = None  # loaded by run() when --progress-scorer is learned
        self.oracle_goals: dict[int, np.ndarray] = {}
        self._csv_file = None
        self._csv = None

    @property
    def failed(self) -> list[EpisodeResult]:
        return [r for r in self.results if r.status == "failed"]

    def failure_summary(self) -> str:
        """One line naming every failed episode and its reason: episode 1 ('hold still'): reason; ..."""
        return "; ".join(f"episode {r.episode.index} ({r.episode.instruction!r}): {r.detail}" for r in self.failed) \
            or "no episode"

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
                self.info.skipped.add(topic, str(exc))
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
        """Goal and scorer from the episode's first frame; an episode they cannot be made for is marked failed."""
        from actedit_ros.progress import make_scorer

        args = self.args
        result.first_frame_ns = frame.log_ns
        result.start_rgb = frame.rgb
        try:
            if args.oracle_goal:
                result.goal_rgb = self.oracle_goals[result.episode.index]
                result.goal_label = "goal: the episode's last frame"
            else:
                prediction = self.predictor.predict(frame.rgb, result.episode.instruction, steps=args.steps,
                                                    text_guidance=args.text_guidance,
                                                    image_guidance=args.image_guidance, seed=args.seed)
                result.goal_rgb = prediction.images[0]
                result.prediction_seconds = float(prediction.seconds)
            result.scorer = make_scorer(args.progress_scorer, result.start_rgb, result.goal_rgb,
                                        self.progress_model, reached_threshold=args.reached_threshold)
        except ValueError as exc:  # the predictor's and scorer's way of refusing an image
            what = "no goal" if result.goal_rgb is None else "not scoreable"
            self.fail(result, f"{what}: {exc}")
            return
        save_rgb_png(self.output / f"{result.name}_goal.png", result.goal_rgb)
        result.status = "scoring"

    def fail(self, result: EpisodeResult, reason: str) -> None:
        """Mark an episode failed with its reason, in the results and (as a row of its own) in progress.csv."""
        result.status, result.detail, result.scorer = "failed", reason, None
        self._csv.writerow({"episode": result.episode.index, "failure": reason})
        self._csv_file.flush()

    def score(self, result: EpisodeResult, frame: BagFrame) -> None:
        try:
            r = result.scorer.update(frame.rgb)
        except ValueError as exc:
            result.skipped[f"frame not scored: {exc}"] += 1
            self.info.skipped.add(self.info.camera_topic, f"frame not scored: {exc}")
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
        if result.status == "pending":
            self.fail(result, "no decodable camera frame inside the episode")
        elif result.status == "scoring" and len(result.rows) < MIN_FRAMES:
            self.fail(result, f"only {len(result.rows)} frame(s) scored; progress over time needs at least "
                              f"{MIN_FRAMES}")
        elif result.status == "scoring":
            result.status = "done"
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
                              f"image guidance {args.image_guidance}, reached threshold {args.reached_threshold}, "
                              f"{args.progress_scorer} progress scorer")
        first = min(ep.start_ns for ep in episodes)
        last = max(ep.end_ns for ep in episodes)
        if args.oracle_goal:
            self.find_oracle_goals(bag, camera_topic, first, last)
            self.info.model = "none: --oracle-goal (each episode's last frame is its goal)"
            self.info.settings = f"reached threshold {args.reached_threshold}, {args.progress_scorer} progress scorer"
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
                    self.info.skipped.add(item.topic, item.reason)
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

        goals = self.read_recorded_goals(bag, goal_topic)
        self._open_csv()
        by_goal: dict[str, EpisodeResult] = {}
        with tqdm(total=bag.topics[progress_topic].count, unit="msg", desc="reading progress",
                  dynamic_ncols=True) as progress_bar:
            for message in bag.messages([progress_topic]):
                progress_bar.update(1)
                try:
                    msg = bag.deserialize(message)
                except BagError as exc:
                    self.info.skipped.add(progress_topic, str(exc))
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
            self.attach_camera_frames(bag, camera_topic)
        for result in self.results:
            self.finish_episode(result)

    def read_recorded_goals(self, bag: BagReader, goal_topic: str | None) -> dict[str, tuple]:
        """goal_id -> (log_ns, instruction, start_rgb, goal_rgb) from a recorded GoalImage topic."""
        goals: dict[str, tuple] = {}
        for message in bag.messages([goal_topic]) if goal_topic else ():
            try:
                msg = bag.deserialize(message)
                if msg.goal_id:
                    goals[msg.goal_id] = (message.log_ns, msg.instruction,
                                          image_message_to_rgb(msg.start_image, IMAGE_TYPE),
                                          image_message_to_rgb(msg.goal_image, IMAGE_TYPE))
            except (BagError, ValueError) as exc:
                self.info.skipped.add(goal_topic, str(exc))
        return goals

    def attach_camera_frames(self, bag: BagReader, camera_topic: str) -> None:
        """Final (and, without a recorded goal, start) thumbnails of recorded episodes from the camera topic."""
        for item in bag.frames(camera_topic):
            if isinstance(item, SkippedMessage):
                self.info.skipped.add(item.topic, item.reason)
                continue
            self.info.frames_read += 1
            for result in self.results:
                if result.episode.start_ns <= item.log_ns < result.episode.end_ns:
                    result.final_rgb = item.rgb
                    if result.start_rgb is None:
                        result.start_rgb = item.rgb

    def run(self) -> None:
        args = self.args
        t0 = time.monotonic()
        if args.recorded_progress is None and args.progress_scorer == "learned":
            from actedit_ros.progress import load_progress_model

            self.progress_model = load_progress_model(args.progress_model or None)
        try:
            with BagReader(args.bag) as bag:
                self.info.storage = bag.storage
                self.info.bag_start_ns = bag.start_ns
                self.info.notes += bag.notes
                if args.recorded_progress is not None:
                    self.evaluate_recorded(bag)
                else:
                    self.evaluate_predicted(bag)
            self.info.complete = True
            if not any(result.rows for result in self.results):
                raise EvaluationError(f"no frame of any episode could be scored ({self.failure_summary()})")
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
