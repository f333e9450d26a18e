"""`make demo`: the goal node end to end, in one process over real ROS 2 (rclpy, Fast DDS).

What runs:
1. the goal node (:class:`actedit_ros.ros.goal_node.GoalNode`) on the embedded default model (or ``--model-path``);
2. a camera replaying an egocentric episode of the synthetic world (``actedit_ros.world``) on ``/goal_node/image``:
   the start frame while the planner waits for its goal, then the action frame by frame, then it stops;
3. a planner-like client that sends the episode's instruction as a ``/goal_node/reach_visual_goal`` action goal
   and prints its feedback (one line per scored frame) until the goal is reached, then the node's
   ``/goal_node/progress`` for the goal it kept, until the camera has stopped (those lines flagged stale).

It writes ``start.png``, ``goal.png``, ``last.png``, ``progress.png`` (progress over time) and ``progress.csv`` to
``<out>/<timestamp>/`` and prints that path.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

DEFAULT_INSTRUCTION_ACTION = "put_in"  # "put the cup in the bowl"-like episodes


@dataclass
class ProgressRow:
    seconds: float  # since the goal was requested
    frame: int  # index of the episode frame the message scored (-1 if unknown)
    true_progress: float
    progress: float
    raw_progress: float
    similarity: float
    reached: bool
    registered: bool
    stale: bool


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m actedit_ros.demo",
        description="Run the goal node on a replayed synthetic episode: a planner asks for the goal of the "
                    "episode's instruction, progress is printed as frames arrive, and the start frame, goal image, "
                    "last frame and a progress plot are written to a run folder.")
    parser.add_argument("--model-path", default="",
                        help="model directory to load instead of the embedded default model")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--episode-seed", type=int, default=None,
                        help="seed of the world episode to replay (default: the first 'put ... in ...' episode)")
    parser.add_argument("--regime", choices=("head", "fixed"), default="head",
                        help="camera regime of the episode: head (moving egocentric camera) or fixed")
    parser.add_argument("--instruction", default=None,
                        help="instruction the planner sends (default: the episode's own instruction)")
    parser.add_argument("--frames", type=int, default=40, help="frames in the replayed episode (at least 2)")
    parser.add_argument("--rate", type=float, default=15.0, help="camera frame rate in Hz")
    parser.add_argument("--hold", type=float, default=2.0,
                        help="seconds the camera keeps streaming the finished scene before it stops, as a real "
                             "camera would (the camera is best effort and shares this process with the node, so "
                             "frames are lost while the node is busy; the smoothed progress needs a few of the end)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps of the goal prediction")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed of the goal prediction")
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="CPU threads for torch (0: all cores but one, which stays free for the camera)")
    parser.add_argument("--progress-scorer", choices=("learned", "pixel"), default="learned",
                        help="how the node scores progress: learned (default; reads progress toward predicted goals) "
                             "or pixel (the hand-made pixel scorer)")
    parser.add_argument("--out", default="runs", help="folder under which the run folder <timestamp>/ is created")
    parser.add_argument("--quiet", action="store_true", help="print only the summary, not every progress message")
    args = parser.parse_args(argv)
    if args.frames < 2:
        parser.error(f"--frames must be at least 2, got {args.frames}")
    if not 0.5 <= args.rate <= 120:
        parser.error(f"--rate must be between 0.5 and 120 Hz, got {args.rate}")
    if args.hold < 0:
        parser.error(f"--hold must be 0 or more seconds, got {args.hold}")
    if args.steps < 1:
        parser.error(f"--steps must be at least 1, got {args.steps}")
    return args


def pick_episode(args):
    """The episode to replay: --episode-seed, or the first seed whose action is 'put X in Y'."""
    from actedit_ros.world import generate_episode

    size = (320, 240)
    if args.episode_seed is not None:
        return generate_episode(seed=args.episode_seed, regime=args.regime, split="test", size=size,
                                num_frames=args.frames)
    for seed in range(200):
        probe = generate_episode(seed=seed, regime=args.regime, split="test", size=(16, 16), num_frames=2)
        if probe.action == DEFAULT_INSTRUCTION_ACTION:
            episode = generate_episode(seed=seed, regime=args.regime, split="test", size=size,
                                       num_frames=args.frames)
            if episode.action == DEFAULT_INSTRUCTION_ACTION:
                return episode
    return generate_episode(seed=0, regime=args.regime, split="test", size=size, num_frames=args.frames)


def save_png(path: Path, rgb: np.ndarray) -> None:
    import cv2

    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[:, :, ::-1])):
        raise OSError(f"could not write {path}")


def plot_progress(path: Path, rows: list[ProgressRow], instruction: str, goal_at: float, threshold: float,
                  placeholder: bool, oracle: list[float] | None = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    live = [r for r in rows if not r.stale]
    stale = [r for r in rows if r.stale]
    ax.plot([r.seconds for r in live], [r.progress for r in live], "-o", ms=3, label="progress (smoothed)")
    ax.plot([r.seconds for r in live], [r.raw_progress for r in live], ":", label="raw progress")
    ax.plot([r.seconds for r in live], [r.true_progress for r in live], "--", color="gray",
            label="true progress of the replayed frame")
    if oracle is not None:
        ax.plot([r.seconds for r in live], oracle, "-.", color="black", lw=0.8,
                label="progress toward the true last frame (oracle goal, reference)")
    if stale:
        ax.plot([r.seconds for r in stale], [r.progress for r in stale], "x", color="red", label="stale (camera stopped)")
    ax.axhline(threshold, color="green", lw=0.8, label=f"reached threshold {threshold:g}")
    ax.axvline(goal_at, color="purple", lw=0.8, label="goal predicted")
    reached = [r for r in live if r.reached]
    if reached:
        ax.axvline(reached[0].seconds, color="green", lw=0.8, ls="--",
                   label=f"reached ({reached[0].seconds:.1f} s, true progress {reached[0].true_progress:.2f})")
        ax.plot([reached[0].seconds], [reached[0].progress], "*", ms=12, color="green")
    ax.set_xlabel("seconds since the planner asked for the goal")
    ax.set_ylabel("progress toward the goal image")
    ax.set_ylim(-0.05, 1.05)
    title = f"goal node progress: {instruction!r}"
    if placeholder:
        title += "\n(RANDOM placeholder model: the goal image is noise, progress is not meaningful)"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def oracle_progress(episode, rows: list[ProgressRow], start_rgb: np.ndarray, threshold: float,
                    scorer_kind: str) -> list[float] | None:
    """What the same scorer reports for the same frames when the goal is the episode's true last frame."""
    from actedit_ros.progress import make_scorer

    try:
        scorer = make_scorer(scorer_kind, start_rgb, episode.frames[-1], reached_threshold=threshold)
    except ValueError:
        return None
    return [scorer.update(episode.frames[max(r.frame, 0)]).progress for r in rows if not r.stale]


class DemoPlanner:
    """The planner's side: sends the ``reach_visual_goal`` action goal and turns its feedback into rows (printed as
    they arrive); once the goal is reached it keeps reading ``~/progress``, where the node goes on scoring the goal
    it kept, until the camera has stopped and progress is flagged stale."""

    def __init__(self, client_node, episode, quiet: bool):
        from rclpy.action import ActionClient
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        from actedit_ros.action import ReachVisualGoal
        from actedit_ros.msg import GoalImage, Progress

        self.episode, self.quiet = episode, quiet
        self.action = ActionClient(client_node, ReachVisualGoal, "/goal_node/reach_visual_goal")
        self.stamp_to_frame: dict[tuple[int, int], int] = {}
        self.rows: list[ProgressRow] = []
        self.requested_at = 0.0
        self.goal_ready = threading.Event()  # the first tracking feedback arrived: the camera starts the action
        self.goal_id, self.goal_image, self.goal_at = "", None, 0.0
        self.action_done = False  # once reached (the action's end), rows come from ~/progress
        self._scored: set[tuple[int, int]] = set()
        client_node.create_subscription(Progress, "/goal_node/progress", self._on_progress, 100)
        self.goals: list[GoalImage] = []
        client_node.create_subscription(GoalImage, "/goal_node/goal", self.goals.append, QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))

    def _row(self, stamp, progress, raw_progress, similarity, reached, registered, stale) -> None:
        if not stale:  # a frame both the feedback and ~/progress reported (as the action ended) counts once
            if (stamp.sec, stamp.nanosec) in self._scored:
                return
            self._scored.add((stamp.sec, stamp.nanosec))
        index = self.stamp_to_frame.get((stamp.sec, stamp.nanosec), -1)
        row = ProgressRow(seconds=time.monotonic() - self.requested_at, frame=index,
                          true_progress=float(self.episode.progress[index]) if index >= 0 else float("nan"),
                          progress=progress, raw_progress=raw_progress, similarity=similarity, reached=reached,
                          registered=registered, stale=stale)
        self.rows.append(row)
        if not self.quiet:
            flag = " STALE (camera stopped)" if stale else ""
            print(f"  t={row.seconds:5.2f}s frame {index:3d}/{len(self.episode.frames) - 1} progress {progress:.2f} "
                  f"(raw {raw_progress:.2f}, true {row.true_progress:.2f}) "
                  f"{'REACHED' if reached else 'not reached'}{flag}", flush=True)

    def _on_feedback(self, message) -> None:
        feedback = message.feedback
        if feedback.phase != "tracking":
            return
        if not self.goal_ready.is_set():
            self.goal_id, self.goal_image = feedback.goal_id, feedback.goal_image
            self.goal_at = time.monotonic() - self.requested_at
            print(f"planner: OK: goal {feedback.goal_id} predicted ({self.goal_at:.2f} s after the request); "
                  f"tracking it", flush=True)
            self.goal_ready.set()
        elif not self.action_done:
            self._row(feedback.frame_stamp, feedback.progress, feedback.raw_progress, feedback.similarity,
                      feedback.reached, feedback.registered, feedback.stale)
            self.action_done = feedback.reached and not feedback.stale  # the action succeeds on this frame

    def _on_progress(self, msg) -> None:
        if self.action_done and msg.goal_id == self.goal_id:
            self._row(msg.header.stamp, msg.progress, msg.raw_progress, msg.similarity, msg.reached,
                      msg.registered, msg.stale)

    def send(self, instruction: str):
        """Send the goal (from the latest camera frame) and return the result future once it is being tracked;
        goals sent before the camera's first frame reached the node are refused, and sent again."""
        from actedit_ros.action import ReachVisualGoal

        if not self.action.wait_for_server(timeout_sec=30):
            raise RuntimeError("the goal node's reach_visual_goal action did not come up")
        for _attempt in range(100):
            self.requested_at = time.monotonic()
            sent = self.action.send_goal_async(ReachVisualGoal.Goal(instruction=instruction, seed=-1),
                                               feedback_callback=self._on_feedback)
            _wait(sent.done)
            if not sent.result().accepted:
                raise RuntimeError("the goal node refused the reach_visual_goal goal")
            result = sent.result().get_result_async()
            result.add_done_callback(lambda _future: setattr(self, "action_done", True))
            _wait(lambda: result.done() or self.goal_ready.is_set())
            if self.goal_ready.is_set():
                return sent.result(), result
            if "no camera frame" not in result.result().result.message:
                break
            time.sleep(0.1)
        raise RuntimeError(f"the goal node could not predict a goal: {result.result().result.message}")


def _wait(condition, timeout: float = 600.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)


def _camera_loop(args, episode, client_node, camera, planner: DemoPlanner, stop, camera_done) -> None:
    """Stream the start frame until the goal exists, then the action, hold its last frame, then go silent."""
    from std_msgs.msg import Header

    from actedit_ros.ros.conversions import rgb_to_image_msg

    period = 1.0 / args.rate
    index = 0
    last = len(episode.frames) - 1
    finished_at = None  # when the last frame of the action was first published
    next_tick = time.monotonic()
    while not stop.is_set():
        if planner.goal_ready.is_set():
            index += 1
            if finished_at is not None and time.monotonic() - finished_at >= args.hold:
                break
        header = Header(stamp=client_node.get_clock().now().to_msg(), frame_id="head_camera")
        planner.stamp_to_frame[(header.stamp.sec, header.stamp.nanosec)] = min(index, last)
        camera.publish(rgb_to_image_msg(episode.frames[min(index, last)], header))
        if index >= last and finished_at is None:
            finished_at = time.monotonic()
        next_tick += period
        delay = next_tick - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:  # late (the node shares this process): skip the missed ticks, as a camera would, not a burst of frames
            next_tick = time.monotonic()
    camera_done.set()


def _start_node(args, context, threshold: float):
    from rclpy.parameter import Parameter

    from actedit_ros.ros.goal_node import GoalNode

    return GoalNode(context=context, parameter_overrides=[
        Parameter("model_path", value=args.model_path),
        Parameter("device", value=args.device),
        Parameter("steps", value=args.steps),
        Parameter("seed", value=args.seed),
        Parameter("torch_threads", value=args.torch_threads),
        Parameter("reached_threshold", value=threshold),
        Parameter("progress_scorer", value=args.progress_scorer),
        Parameter("stale_timeout", value=0.5),
    ])


def _plan(args, episode, instruction, client, planner: DemoPlanner, camera):
    """The planner's run: the goal, the replayed action, the result, the camera stopping. Returns the result."""
    stop, camera_done = threading.Event(), threading.Event()
    camera_thread = threading.Thread(target=_camera_loop, name="demo-camera", daemon=True,
                                     args=(args, episode, client, camera, planner, stop, camera_done))
    try:
        _wait(lambda: camera.get_subscription_count() > 0, 30)
        camera_thread.start()
        print(f"planner: sending the reach_visual_goal goal {instruction!r} (from the latest camera frame) ...",
              flush=True)
        handle, result = planner.send(instruction)
        print("camera: replaying the action ...", flush=True)
        _wait(lambda: result.done() or camera_done.is_set())
        _wait(result.done, 5.0)  # the camera stopped: the goal is reached or ends
        if not result.done():
            cancel = handle.cancel_goal_async()
            _wait(lambda: cancel.done() and result.done(), 10.0)
        outcome = result.result().result if result.done() else None
        print(f"planner: action result: {'reached' if outcome and outcome.reached else 'not reached'}: "
              f"{outcome.message if outcome else 'no result'}", flush=True)
        camera_thread.join()
        # Let the node notice the camera stopped (progress flagged stale).
        _wait(lambda: any(r.stale for r in planner.rows), 5.0)
        return outcome
    finally:
        stop.set()


def run(args) -> Path:
    # Import the heavy parts here so --help is instant.
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from actedit_ros.editing import default_model_is_placeholder
    from actedit_ros.ros.conversions import image_msg_to_rgb
    from actedit_ros.ros.goal_node import spin_in_background

    started = time.monotonic()
    placeholder = args.model_path == "" and default_model_is_placeholder()
    if placeholder:
        print("NOTE: no trained default model ships with this package yet. The goal image comes from a RANDOMLY "
              "INITIALISED tiny InstructPix2Pix model (same loading path as a real one), so it looks like noise and "
              "progress toward it is not meaningful.", flush=True)
    episode = pick_episode(args)
    instruction = args.instruction or episode.instruction
    print(f"episode: {episode.action} ({args.regime} camera), {len(episode.frames)} frames of "
          f"{episode.frames[0].shape[1]}x{episode.frames[0].shape[0]}, instruction {episode.instruction!r}",
          flush=True)

    run_dir = Path(args.out) / datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    run_dir.mkdir(parents=True, exist_ok=False)

    context = rclpy.Context()
    rclpy.init(context=context)
    threshold = 0.8
    node = _start_node(args, context, threshold)
    client = rclpy.create_node("demo_planner", context=context)
    executor, spin_thread = spin_in_background(node, num_threads=4)
    executor.add_node(client)
    planner = DemoPlanner(client, episode, args.quiet)
    camera = client.create_publisher(Image, "/goal_node/image", QoSProfile(depth=1,
                                                                          reliability=ReliabilityPolicy.BEST_EFFORT))
    try:
        _plan(args, episode, instruction, client, planner, camera)
    finally:
        progress_model_path = node.progress_model.path
        executor.shutdown()
        spin_thread.join(10)
        planner.action.destroy()
        client.destroy_node()
        node.destroy_node()
        rclpy.try_shutdown(context=context)

    latched = [g for g in planner.goals if g.goal_id == planner.goal_id]
    start_rgb = image_msg_to_rgb(latched[-1].start_image) if latched else episode.frames[0]
    prediction_time = latched[-1].prediction_time if latched else planner.goal_at
    rows = planner.rows
    save_png(run_dir / "start.png", start_rgb)
    save_png(run_dir / "goal.png", image_msg_to_rgb(planner.goal_image))
    save_png(run_dir / "last.png", episode.frames[-1])
    oracle = oracle_progress(episode, rows, start_rgb, threshold, args.progress_scorer)
    plot_progress(run_dir / "progress.png", rows, instruction, planner.goal_at, threshold, placeholder, oracle)
    with open(run_dir / "progress.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(list(ProgressRow.__dataclass_fields__))
        for row in rows:
            writer.writerow([getattr(row, name) for name in ProgressRow.__dataclass_fields__])
    live = [r for r in rows if not r.stale]
    # The same scorer with the true last frame as the goal: what the predicted goal's blur and errors cost.
    oracle_note = f"; {oracle[-1]:.2f} against the true last frame as goal" if oracle else ""
    scorer_note = (f"learned progress scorer ({progress_model_path})" if args.progress_scorer == "learned"
                   else "pixel progress scorer")
    print(f"scorer: {scorer_note}", flush=True)
    print(f"summary: {len(live)} live progress messages, {len(rows) - len(live)} stale; final progress "
          f"{live[-1].progress:.2f} (true {live[-1].true_progress:.2f}{oracle_note}); "
          f"reached: {any(r.reached for r in live)}; goal in "
          f"{prediction_time:.2f} s; total {time.monotonic() - started:.1f} s" if live else
          "summary: no live progress messages arrived", flush=True)
    print(f"run folder: {run_dir.resolve()}", flush=True)
    return run_dir


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        run(args)
    except (RuntimeError, ValueError, OSError) as err:
        print(f"demo failed: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
