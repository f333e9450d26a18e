"""The goal node end to end over real rclpy / Fast DDS: progress latency at 30 Hz, dropped frames, peak memory.

    python bench/bench_node.py            # prints its own table (about a minute)

What runs:
* the goal node in a SEPARATE PROCESS (this file re-run with ``--serve-node``, which calls
  :func:`actedit_ros.ros.goal_node.main` with ROS parameters), on the embedded default model and the node's default
  parameters, so the measuring client never shares a GIL with it;
* in this process, a camera thread publishing world-episode frames (``actedit_ros.world.generate_episode``) at
  30 Hz on ``/goal_node/image``, each stamped with its publish time (the start frame until the first goal exists,
  then the episode forwards and backwards), and a subscriber to ``/goal_node/progress``:
  latency = receive time - frame header stamp.

For each frame size (320x240, then 640x480): predict a goal from the live camera (20 steps) so progress flows;
measure for a few seconds with no prediction running; then set the node's ``steps`` so that a second prediction
lasts a few seconds longer than the window, request it, and measure while it runs (only frames published before
its answer count). Dropped frames = frames published in a window - progress messages received for them.
Peak resident memory is the node process's VmHWM (/proc), GPU memory its torch.cuda.max_memory_allocated.

ROS_DOMAIN_ID is random unless set, discovery stays on this host (ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST).

Camera transport: a 640x480 rgb8 frame (900 KiB) is larger than Fast DDS's default shared-memory segment (512 KiB),
and a best-effort sample that does not fit goes over UDP in ~64 KiB fragments that overflow the default socket
buffer: with default settings almost no 640x480 frame reaches ANY best-effort subscriber on the host (measured:
0 of 147; ros2/rmw_fastrtps#739). The segment that counts is the PUBLISHER's, so it is the camera driver's
deployment setting, not the node's: this bench gives its camera participant a 16 MiB segment through a Fast DDS
profile (FASTDDS_DEFAULT_PROFILES_FILE=config/fastdds_large_frames.xml) and leaves the node on defaults.
``--default-transport`` measures without it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from table import Row, print_table  # noqa: E402

RATE_HZ = 30.0
SIZES = ((320, 240), (640, 480))
IDLE_WINDOW_S = 4.0  # measured with a goal but no prediction running
BUSY_WINDOW_S = 4.0  # measured while a second prediction runs
SETTLE_S = 0.3  # after a request is sent, before the busy window opens (the node has started predicting)
GRACE_S = 1.0  # after a window closes, late progress messages still count as received
FIRST_STEPS = 20
NODE_START_TIMEOUT_S = 90.0
PREDICT_TIMEOUT_S = 60.0
LATENCY_TARGET_MS = 30.0
NODE = "/goal_node"

# Fast DDS profile for the camera's participant (the one the package ships for camera drivers): shared memory with a
# 16 MiB segment that holds several 640x480 frames, UDP kept for discovery and for peers on other hosts.
CAMERA_FASTDDS_PROFILE = Path(__file__).resolve().parents[1] / "config" / "fastdds_large_frames.xml"


# ------------------------------------------------------------------------------------------------ node process
def serve_node(stats_path: str, ros_argv: list[str]) -> int:
    """Child process: run the node's own main(); on exit write its memory high-water marks to ``stats_path``."""
    from actedit_ros.ros import goal_node

    code = goal_node.main(["goal_node", *ros_argv])
    import torch

    stats = {"exit_code": code, "vm_hwm_bytes": read_vm_hwm(os.getpid()), "cuda": torch.cuda.is_available()}
    if torch.cuda.is_available():
        stats["cuda_max_allocated_bytes"] = torch.cuda.max_memory_allocated()
        stats["cuda_device"] = torch.cuda.get_device_name()
    Path(stats_path).write_text(json.dumps(stats))
    return code


def read_cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, in seconds (/proc/<pid>/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def read_vm_hwm(pid: int) -> int:
    """Peak resident set size (VmHWM) of a process, in bytes, from /proc/<pid>/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


class NodeProcess:
    """The goal node in a child process, stopped with SIGINT (then SIGTERM, SIGKILL) on exit."""

    def __init__(self, ros_argv: list[str], fastdds_profile: Path | None = None):
        env = {k: v for k, v in os.environ.items() if k != "FASTDDS_DEFAULT_PROFILES_FILE"}
        if fastdds_profile is not None:  # what `ros2 launch ... fastdds_profile:=` does; otherwise Fast DDS defaults
            env["FASTDDS_DEFAULT_PROFILES_FILE"] = str(fastdds_profile)
        self.workdir = tempfile.TemporaryDirectory(prefix="bench_node_")
        self.stats_path = Path(self.workdir.name, "stats.json")
        self.log_path = Path(self.workdir.name, "node.log")
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve-node", str(self.stats_path), "--", *ros_argv],
            stdout=self._log, stderr=subprocess.STDOUT, env=env)

    @property
    def pid(self) -> int:
        return self.process.pid

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise RuntimeError(f"the node process exited with code {self.process.returncode}: {self.log_tail()}")

    def log_tail(self, chars: int = 1500) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:].strip()

    def stop(self) -> dict:
        """Stop the node; its exit stats (empty dict when it could not write them)."""
        for sig, wait in ((signal.SIGINT, 15.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if self.process.poll() is not None:
                break
            self.process.send_signal(sig)
            try:
                self.process.wait(wait)
            except subprocess.TimeoutExpired:
                continue
        self._log.close()
        stats = json.loads(self.stats_path.read_text()) if self.stats_path.is_file() else {}
        self.workdir.cleanup()
        return stats


# ------------------------------------------------------------------------------------------------ client side
@dataclass
class Sent:
    stamp_ns: int
    published: float  # time.time() just before publish


@dataclass
class Window:
    name: str
    start: float
    end: float
    note: str = ""
    latencies_ms: list[float] = field(default_factory=list)
    in_node_ms: list[float] = field(default_factory=list)  # stamp -> progress published (the message's frame_age)
    published: int = 0
    load: float = math.nan  # 1-minute load average when the window closed
    node_cpu: float = math.nan  # CPU seconds the node process used per second of the window (1.0 = one full core)

    @property
    def received(self) -> int:
        return len(self.latencies_ms)

    @property
    def dropped(self) -> int:
        return self.published - self.received

    def percentile(self, q: float, values: list[float] | None = None) -> float:
        values = self.latencies_ms if values is None else values
        return float(np.percentile(values, q)) if values else math.nan


class Camera(threading.Thread):
    """Publishes the current frame list at a fixed rate on an absolute schedule; stamps each with its publish time."""

    def __init__(self, publisher, rate_hz: float = RATE_HZ):
        super().__init__(name="bench-camera", daemon=True)
        self.publisher, self.period = publisher, 1.0 / rate_hz
        self.messages: list = []
        self.sent: list[Sent] = []
        self.lock = threading.Lock()
        self.stopped = threading.Event()

    def play(self, messages: list) -> None:
        with self.lock:
            self.messages = messages

    def run(self) -> None:
        from builtin_interfaces.msg import Time

        next_at, index = time.monotonic(), 0
        while not self.stopped.is_set():
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            elif delay < -self.period:  # fell behind (machine busy): skip the missed slots, don't burst
                next_at = time.monotonic()
            next_at += self.period
            with self.lock:
                messages = self.messages
            if not messages:
                continue
            msg = messages[index % len(messages)]
            index += 1
            now_ns = time.time_ns()
            msg.header.stamp = Time(sec=now_ns // 10**9, nanosec=now_ns % 10**9)
            self.sent.append(Sent(now_ns, now_ns * 1e-9))
            self.publisher.publish(msg)


class Client:
    """Camera, progress listener, planner (predict_goal) and parameter client, spun in a background thread."""

    def __init__(self, camera_profile: Path | None):
        import rclpy
        from rcl_interfaces.srv import SetParameters
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
        from sensor_msgs.msg import Image

        from actedit_ros.msg import Progress
        from actedit_ros.srv import PredictGoal

        self.rclpy = rclpy
        self.context = rclpy.Context()
        previous = os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE")
        if camera_profile is not None:
            # Fast DDS reads it once per process, when the process's first participant is created (rmw_fastrtps
            # creates it with the context's first node). A process that already made one keeps its transports.
            os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(camera_profile)
        try:
            rclpy.init(context=self.context)
            self.node = rclpy.create_node("bench_node_client", context=self.context)
        finally:
            if camera_profile is not None:
                os.environ.pop("FASTDDS_DEFAULT_PROFILES_FILE")
                if previous is not None:
                    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = previous
        self.received: dict[int, tuple[float, float]] = {}  # frame stamp (ns) -> (receive time.time(), frame_age)
        self.node.create_subscription(Progress, f"{NODE}/progress", self._on_progress,
                                      QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE))
        self.predict_client = self.node.create_client(PredictGoal, f"{NODE}/predict_goal")
        self.parameter_client = self.node.create_client(SetParameters, f"{NODE}/set_parameters")
        self.camera = Camera(self.node.create_publisher(Image, f"{NODE}/image", qos_profile_sensor_data))
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.spinner = threading.Thread(target=self.executor.spin, name="bench-client-executor", daemon=True)
        self.spinner.start()
        self.camera.start()

    def _on_progress(self, msg) -> None:
        now = time.time()
        if not msg.stale:
            self.received.setdefault(msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec, (now, msg.frame_age))

    def wait_for_node(self, node_process: NodeProcess, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            node_process.check_alive()
            if self.predict_client.wait_for_service(0.5) and self.parameter_client.wait_for_service(0.5):
                return
        raise TimeoutError(f"the node's services did not appear within {timeout:.0f} s: {node_process.log_tail()}")

    def wait(self, future, what: str, timeout: float, node_process: NodeProcess):
        deadline = time.monotonic() + timeout
        while not future.done():
            node_process.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"no answer to {what} within {timeout:.0f} s")
            time.sleep(0.01)
        return future.result()

    def set_steps(self, steps: int, node_process: NodeProcess) -> None:
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        request = SetParameters.Request(parameters=[Parameter("steps", value=int(steps)).to_parameter_msg()])
        result = self.wait(self.parameter_client.call_async(request), "set_parameters", 10.0, node_process)
        if not result.results[0].successful:
            raise RuntimeError(f"the node refused steps={steps}: {result.results[0].reason}")

    def predict_async(self, instruction: str):
        from actedit_ros.srv import PredictGoal

        return self.predict_client.call_async(PredictGoal.Request(instruction=instruction, seed=-1))

    def measure(self, window: Window) -> Window:
        """Fill a closed window from what was published in it and what came back for those frames."""
        stamps = [s for s in list(self.camera.sent) if window.start <= s.published < window.end]
        window.published = len(stamps)
        received = [(s, self.received[s.stamp_ns]) for s in stamps if s.stamp_ns in self.received]
        window.latencies_ms = [(at - s.published) * 1e3 for s, (at, _) in received]
        window.in_node_ms = [age * 1e3 for _, (_, age) in received]
        return window

    def close(self) -> None:
        self.camera.stopped.set()
        self.camera.join(2.0)
        self.executor.shutdown(timeout_sec=2.0)
        self.node.destroy_node()
        self.rclpy.try_shutdown(context=self.context)
        self.spinner.join(2.0)


def frame_messages(size: tuple[int, int]) -> tuple[list, list, str]:
    """(start-frame messages, episode forwards and backwards, instruction) at ``size`` = (width, height)."""
    from actedit_ros.ros.conversions import rgb_to_image_msg
    from actedit_ros.world import generate_episode
    from std_msgs.msg import Header

    episode = generate_episode(seed=0, regime="head", split="test", size=size, num_frames=16)
    frames = episode.frames + episode.frames[-2:0:-1]
    return ([rgb_to_image_msg(episode.frames[0], Header(frame_id="bench_camera"))],
            [rgb_to_image_msg(rgb, Header(frame_id="bench_camera")) for rgb in frames], episode.instruction)


def measure_size(client: Client, node_process: NodeProcess, size: tuple[int, int]) -> tuple[Window, Window, dict]:
    """The idle and the busy window at one frame size, and facts about the predictions."""
    start, played, instruction = frame_messages(size)
    client.camera.play(start)
    time.sleep(0.5)  # the node's latest frame now has this size
    client.set_steps(FIRST_STEPS, node_process)
    first = client.wait(client.predict_async(instruction), "the first predict_goal", PREDICT_TIMEOUT_S, node_process)
    if not first.success:
        raise RuntimeError(f"the first prediction failed: {first.message}")
    client.camera.play(played)

    idle = Window("idle", time.time() + GRACE_S / 2, time.time() + GRACE_S / 2 + IDLE_WINDOW_S)
    time.sleep(idle.start - time.time())
    cpu_start = read_cpu_seconds(node_process.pid)
    time.sleep(idle.end - time.time())
    idle.load = os.getloadavg()[0]
    idle.node_cpu = (read_cpu_seconds(node_process.pid) - cpu_start) / IDLE_WINDOW_S

    per_step = first.prediction_time / FIRST_STEPS
    steps = int(min(1000, max(FIRST_STEPS, math.ceil((BUSY_WINDOW_S + SETTLE_S + 2.0) / per_step))))
    client.set_steps(steps, node_process)
    requested = time.time()
    future = client.predict_async(instruction)
    deadline = requested + SETTLE_S + BUSY_WINDOW_S
    time.sleep(SETTLE_S)
    cpu_start, cpu_started_at = read_cpu_seconds(node_process.pid), time.time()
    while not future.done() and time.time() < deadline:
        node_process.check_alive()
        time.sleep(0.01)
    answered = time.time() if future.done() else None
    busy_cpu = (read_cpu_seconds(node_process.pid) - cpu_start) / max(1e-3, time.time() - cpu_started_at)
    second = client.wait(future, "the second predict_goal", PREDICT_TIMEOUT_S, node_process)
    if answered is None:
        answered = time.time()
    busy = Window("predicting", requested + SETTLE_S, min(deadline, answered - 0.05), load=os.getloadavg()[0],
                  node_cpu=busy_cpu)
    time.sleep(GRACE_S)
    facts = {"first_s": first.prediction_time, "second_steps": steps, "second_s": second.prediction_time,
             "second_ok": second.success, "second_message": second.message}
    return client.measure(idle), client.measure(busy), facts


Result = tuple[tuple[int, int], Window, Window, dict]  # (frame size, idle window, busy window, prediction facts)


def run_benchmark(camera_profile: bool = True, node_profile: bool = False) -> tuple[list[Result], dict, int, float]:
    """Everything this module measures: per size (idle, busy, facts), node exit stats, its VmHWM, its startup time."""
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(1, 100)))
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    started = time.monotonic()
    node_process = NodeProcess(["--ros-args", "--log-level", "warn"],  # default parameters: embedded default model
                               CAMERA_FASTDDS_PROFILE if node_profile else None)
    client = None
    results, stats, vm_hwm = [], {}, 0
    try:
        client = Client(CAMERA_FASTDDS_PROFILE if camera_profile else None)
        client.wait_for_node(node_process, NODE_START_TIMEOUT_S)
        startup_s = time.monotonic() - started
        for size in SIZES:
            print(f"[bench_node] {size[0]}x{size[1]} ...", file=sys.stderr, flush=True)
            results.append((size, *measure_size(client, node_process, size)))
        vm_hwm = read_vm_hwm(node_process.pid)
    finally:
        if client is not None:
            client.close()
        stats = node_process.stop()
    return results, stats, vm_hwm, startup_s


# ------------------------------------------------------------------------------------------------ rows
def latency_row(size: tuple[int, int], window: Window, facts: dict, with_target: bool) -> Row:
    what = "while a goal prediction runs" if with_target else "no prediction running (comparison)"
    figure = f"node end to end, {size[0]}x{size[1]} @ {RATE_HZ:.0f} Hz, progress latency, {what}"
    target = f"p95 <= {LATENCY_TARGET_MS:.0f} ms" if with_target else ""
    seconds = window.end - window.start
    if not window.latencies_ms:
        return Row(figure, "no progress received", target, False if with_target else None,
                   f"{window.published} frames published in {seconds:.1f} s")
    p50, p95 = window.percentile(50), window.percentile(95)
    in_node = window.in_node_ms
    detail = (f"{window.received} of {window.published} frames in {seconds:.1f} s, "
              f"max {max(window.latencies_ms):.1f} ms; "
              f"in the node (stamp to progress published, frame_age) p50 {window.percentile(50, in_node):.1f} ms, "
              f"p95 {window.percentile(95, in_node):.1f} ms; load average {window.load:.1f} on {os.cpu_count()} cores; "
              f"node process CPU {window.node_cpu:.2f} cores")
    if with_target:
        detail += (f"; prediction {facts['second_steps']} steps, {facts['second_s']:.1f} s"
                   + ("" if facts["second_ok"] else f" (answer: {facts['second_message'][:80]})"))
    return Row(figure, f"p50 {p50:.1f} ms, p95 {p95:.1f} ms", target,
               (p95 <= LATENCY_TARGET_MS) if with_target else None, detail)


def rows(camera_profile: bool = True, node_profile: bool = False) -> list[Row]:
    from actedit_ros.editing import default_model_is_placeholder

    results, stats, vm_hwm, startup_s = run_benchmark(camera_profile, node_profile)
    model = "placeholder random tiny model" if default_model_is_placeholder() else "embedded default model"
    out: list[Row] = []
    for size, idle, busy, facts in results:
        out.append(latency_row(size, busy, facts, with_target=True))
        out.append(latency_row(size, idle, facts, with_target=False))
        out.append(Row(f"node end to end, {size[0]}x{size[1]} @ {RATE_HZ:.0f} Hz, dropped frames",
                       f"{busy.dropped} of {busy.published} while predicting, {idle.dropped} of {idle.published} idle",
                       "", None, "published by the camera minus progress messages received for them; camera "
                       + ("Fast DDS SHM segment 16 MiB" if camera_profile else "Fast DDS default transports")))
    out.append(Row(f"node peak resident memory, {model}", f"{vm_hwm / 2**20:.0f} MiB", "", None,
                   f"VmHWM of the node process after both sizes; node ready {startup_s:.0f} s after start"))
    gpu_figure = "node peak GPU memory, default model"
    if stats.get("cuda"):
        out.append(Row(gpu_figure, f"{stats['cuda_max_allocated_bytes'] / 2**20:.0f} MiB", "", None,
                       f"torch.cuda.max_memory_allocated, {stats.get('cuda_device', '')}"))
    elif stats:
        out.append(Row(gpu_figure, "not run", "", None, "no CUDA device on this machine"))
    else:
        out.append(Row(gpu_figure, "not run", "", None, "the node process wrote no exit stats"))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--serve-node", metavar="STATS_JSON",
                        help="internal: run the goal node in this process (ROS arguments after --) and write its "
                             "memory high-water marks to STATS_JSON when it stops")
    parser.add_argument("--node-profile", action="store_true",
                        help="give the node the same profile (config/fastdds_large_frames.xml) as the camera")
    parser.add_argument("--default-transport", action="store_true",
                        help="camera on Fast DDS default transports (512 KiB shared-memory segment: 640x480 frames "
                             "are mostly lost) instead of the bench's 16 MiB-segment profile")
    parser.add_argument("ros_args", nargs=argparse.REMAINDER, help="internal: with --serve-node, -- then ROS arguments")
    args = parser.parse_args()
    if args.serve_node:
        sys.exit(serve_node(args.serve_node, args.ros_args[1:] if args.ros_args[:1] == ["--"] else args.ros_args))
    print_table(rows(camera_profile=not args.default_transport, node_profile=args.node_profile), "goal node end to end")
