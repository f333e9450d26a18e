"""`actedit-eval-bag`: replay a rosbag2 bag offline, predict a goal image per episode and score progress toward it.

For every episode (from an episode file or an instruction topic) the first camera frame at or after its start is
the start frame; the goal predicted from it (GoalPredictor) and every later frame up to the episode end are scored
with the progress scorer (learned by default). Needs no ROS install: the bag is read with rosbags.

Outputs in --output:
  progress.csv          one row per scored frame (written as it goes, so an interrupted run keeps its rows), and
                        one row with the reason in its `failure` column for each episode that could not be scored
  episode_NNN.png       progress curve with the start frame, goal image and final frame as thumbnails
  episode_NNN_goal.png  the predicted goal image
  summary.md            per-episode VOC, final progress, reached time, skipped messages (also on errors)
  summary.json          the same numbers for programs

An episode that cannot be scored (start and goal practically identical, fewer than two scoreable frames, frames
too small to register) is marked failed and the others go on. Exit status: 0 every episode was scored; 1 an error,
or no frame of any episode could be scored; 3 the run went through but some episodes failed (summary says why).

With --oracle-goal no model runs either: each episode's last frame is its goal, which measures the scorer alone.
With --recorded-progress no model runs: the bag holds what the goal node published live (recorded with
actedit-record-bag, e.g. while actedit-play-bag fed it), and the same outputs are made from those messages.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from actedit_ros.bag.episodes import TIME_BASES, EpisodeError
from actedit_ros.bag.evaluation import BagEvaluation, EvaluationError
from actedit_ros.bag.io import BagError

PROG = "actedit-eval-bag"
EXIT_EPISODES_FAILED = 3  # the run went through, but some episodes could not be scored (the others were)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Evaluate goal prediction and progress scoring on a recorded rosbag2 bag (sqlite3 or mcap), "
                    "without ROS. Writes a per-frame CSV, one figure per episode and a summary.",
        epilog="An episode that cannot be scored is marked failed (its reason in progress.csv and the summary) and "
               "the others are scored. Exit status: 0 every episode was scored; 1 an error, or no frame of any "
               f"episode could be scored; {EXIT_EPISODES_FAILED} some episodes failed.",
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
    parser.add_argument("--progress-scorer", choices=("learned", "pixel"), default="learned",
                        help="how frames are scored: learned (default, reads progress toward predicted goals) or "
                             "pixel (the hand-made pixel scorer)")
    parser.add_argument("--progress-model", default="",
                        help="learned progress model (.safetensors or its folder; default: the shipped one)")
    parser.add_argument("--debug", action="store_true",
                        help="show the Python traceback of unexpected errors instead of a one-line message")
    return parser


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
    except (BagError, EpisodeError, EvaluationError) as exc:
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
    results, info = evaluation.results, evaluation.info
    print(f"{PROG}: {len(results)} episodes, {info.frames_read} frames, {info.skipped.total} skipped messages; "
          f"summary: {summary}")
    if evaluation.failed:
        print(f"{PROG}: {len(evaluation.failed)} of {len(results)} episodes failed: {evaluation.failure_summary()}",
              file=sys.stderr)
        return EXIT_EPISODES_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
