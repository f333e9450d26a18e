"""`actedit-record-bag`: record ROS 2 topics (the goal node's goal and progress, a camera, ...) into a rosbag2 bag.

Written with rosbags (mcap by default, or sqlite3), so it works where rosbag2 is absent; `actedit-eval-bag`, the
bag reader in `actedit_ros.bag` and `ros2 bag` read the result. Messages are stored as received (raw CDR) with
their receive time as log time. Message definitions come from the rosbags typestore (ROS 2 Kilted types plus
actedit_ros/msg/GoalImage and Progress, parsed from msg/).

Each topic is subscribed once it is discovered (its type comes from the graph unless given as TOPIC:TYPE), with
a QoS matching its publishers: reliable when all publishers are reliable, transient-local (latched, like the
node's ~/goal) when all publishers are. Recording stops after --duration seconds, after --max-messages, or on
Ctrl-C / SIGTERM; the bag is always closed properly (metadata.yaml written) so it can be read afterwards.
A topic that cannot be recorded (its type is not importable or unknown to the typestore) is reported and the
others are still recorded; the exit status is then 1.
"""
from __future__ import annotations

import argparse
import sys
import threading
import time

from actedit_ros.bag.io import SUPPORTED_STORAGE, BagError
from actedit_ros.bag.write import BagWriter, make_qos

PROG = "actedit-record-bag"
DEFAULT_TOPICS = ("/goal_node/goal", "/goal_node/progress")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Record ROS 2 topics into a new rosbag2 bag with rosbags (no rosbag2 needed), e.g. the goal "
                    "node's goal and progress outputs plus the camera, for later `actedit-eval-bag` or plotting.",
    )
    parser.add_argument("-o", "--output", required=True, help="bag directory to create (must not exist)")
    parser.add_argument("--topics", nargs="+", default=list(DEFAULT_TOPICS), metavar="TOPIC[:TYPE]",
                        help="topics to record; append :pkg/msg/Type to subscribe before the topic is discovered "
                             f"(default: {' '.join(DEFAULT_TOPICS)})")
    parser.add_argument("--storage", choices=SUPPORTED_STORAGE, default="mcap",
                        help="storage format of the bag (default: mcap)")
    parser.add_argument("--duration", type=float, default=None,
                        help="stop after this many seconds (default: record until Ctrl-C)")
    parser.add_argument("--max-messages", type=int, default=None,
                        help="stop after this many messages in total (default: no limit)")
    parser.add_argument("--node-name", default="actedit_record_bag", help="ROS node name (default: actedit_record_bag)")
    return parser


def parse_topic_specs(specs: list[str]) -> dict[str, str | None]:
    """'topic' or 'topic:pkg/msg/Type' -> {topic: type or None}."""
    topics: dict[str, str | None] = {}
    for spec in specs:
        topic, _, msgtype = spec.partition(":")
        if not topic.startswith("/"):
            raise ValueError(f"topic {topic!r} must be a fully qualified name starting with '/'")
        if msgtype and msgtype.count("/") != 2:
            raise ValueError(f"type {msgtype!r} of {topic} must look like pkg/msg/Name")
        topics[topic] = msgtype or None
    return topics


class BagRecorder:
    """Subscribes to topics as they appear and writes every message into a BagWriter."""

    def __init__(self, node, writer: BagWriter, topics: dict[str, str | None], max_messages: int | None,
                 stop: threading.Event):
        self.node = node
        self.writer = writer
        self.wanted = dict(topics)
        self.max_messages = max_messages
        self.stop = stop
        self.subscriptions = {}
        self.unrecordable: dict[str, str] = {}  # topic -> why it cannot be recorded
        self.total = 0
        self.lock = threading.Lock()

    def _subscribe(self, topic: str, msgtype: str) -> None:
        from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

        from actedit_ros.ros.play_bag import import_message_class

        msg_class = import_message_class(msgtype)
        publishers = self.node.get_publishers_info_by_topic(topic)
        reliable = all(p.qos_profile.reliability == ReliabilityPolicy.RELIABLE for p in publishers)
        latched = bool(publishers) and all(
            p.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for p in publishers)
        qos = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                         reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                         durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
        self.writer.add_topic(topic, msgtype, make_qos(reliable, latched, depth=1 if latched else 10))
        self.subscriptions[topic] = self.node.create_subscription(
            msg_class, topic, lambda data, topic=topic: self._on_message(topic, data), qos, raw=True)
        self.node.get_logger().info(f"recording {topic} ({msgtype}, {'reliable' if reliable else 'best effort'}"
                                    f"{', transient local' if latched else ''})")

    def _on_message(self, topic: str, data: bytes) -> None:
        with self.lock:
            if self.stop.is_set():
                return
            self.writer.write_raw(topic, time.time_ns(), data)
            self.total += 1
            if self.max_messages is not None and self.total >= self.max_messages:
                self.stop.set()

    def discover(self) -> None:
        """Subscribe to every wanted topic whose type is known (given, or published in the graph)."""
        graph = dict(self.node.get_topic_names_and_types())
        for topic, msgtype in self.wanted.items():
            if topic in self.subscriptions or topic in self.unrecordable:
                continue
            if msgtype is None and topic in graph:
                types = graph[topic]
                if len(types) != 1:
                    self.unrecordable[topic] = f"it has several types {types}; give one as {topic}:TYPE"
                    self.node.get_logger().error(f"not recording {topic}: {self.unrecordable[topic]}")
                    continue
                msgtype = types[0]
            if msgtype is not None:
                try:
                    self._subscribe(topic, msgtype)
                except (BagError, ImportError) as exc:
                    self.unrecordable[topic] = str(exc)
                    self.node.get_logger().error(f"not recording {topic}: {exc}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        topics = parse_topic_specs(args.topics)
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    from actedit_ros.ros.play_bag import rclpy_available
    from actedit_ros.ros.stop_signals import StopOnSignals

    if not rclpy_available(PROG):
        return 1
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    stop = threading.Event()
    recorder = None
    try:
        writer = BagWriter(args.output, storage=args.storage)
        rclpy.init(args=None, signal_handler_options=SignalHandlerOptions.NO)
        node = rclpy.create_node(args.node_name)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        try:
            with writer, StopOnSignals(stop.set):
                recorder = BagRecorder(node, writer, topics, args.max_messages, stop)
                print(f"{PROG}: recording {', '.join(topics)} into {args.output} ({args.storage})", file=sys.stderr)
                deadline = None if args.duration is None else time.monotonic() + args.duration
                next_discovery = 0.0
                while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
                    if time.monotonic() >= next_discovery and \
                            len(recorder.subscriptions) + len(recorder.unrecordable) < len(topics):
                        recorder.discover()
                        next_discovery = time.monotonic() + 0.2
                    executor.spin_once(timeout_sec=0.05)
                stop.set()
        finally:
            executor.shutdown()
            node.destroy_node()
            rclpy.try_shutdown()
    except BagError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a CLI reports, it does not dump tracebacks
        print(f"{PROG}: error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{t}: {n}" for t, n in writer.counts.items()) or "nothing"
    failed = recorder.unrecordable if recorder else {}
    never = [t for t in topics if recorder is None or (t not in recorder.subscriptions and t not in failed)]
    print(f"{PROG}: wrote {args.output} ({counts})"
          + (f"; never discovered: {', '.join(never)}" if never else "")
          + "".join(f"; not recorded {t}: {why}" for t, why in failed.items()), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
