"""`actedit-play-bag`: publish a rosbag2 bag's topics live to ROS 2, like `ros2 bag play`, where rosbag2 is absent.

The bag is read with rosbags (sqlite3 or mcap); messages are published as recorded (raw CDR bytes) on their
topics with the bag's timing (log-time differences divided by --rate). Header stamps are kept as recorded by
default; --restamp replaces the header stamp of every message that has one with the current ROS time (useful
when a consumer compares stamps with its clock, e.g. the goal node's frame_age). Publishers use the QoS recorded
in the bag's metadata (reliability, durability, depth) when there is one, else reliable, volatile, depth 10.

The goal node takes instructions through its ``predict_goal`` service, not a topic: with --predict-service, every
std_msgs/String message played on the instruction topic is also sent as a PredictGoal request, without pausing
playback; the request carries the first camera frame played after the instruction (see GoalRequester), and the
answers are logged.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
import threading
import time

from actedit_ros.bag.episodes import NS
from actedit_ros.bag.io import IMAGE_TYPES, BagError, BagMessage, BagReader
from actedit_ros.ros.stop_signals import StopOnSignals

PROG = "actedit-play-bag"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Publish the messages of a rosbag2 bag (sqlite3 or mcap) to ROS 2 with their recorded timing, "
                    "mirroring `ros2 bag play`. Needs rclpy; reading the bag does not need rosbag2.",
    )
    parser.add_argument("bag", help="rosbag2 bag directory (with metadata.yaml) or a single .mcap/.db3 file")
    parser.add_argument("--topics", nargs="+", default=None, metavar="TOPIC",
                        help="topics to publish (default: every topic whose message type is importable)")
    parser.add_argument("--rate", type=float, default=1.0,
                        help="playback speed factor: 2 plays twice as fast, 0.5 half as fast (default: 1)")
    parser.add_argument("--loop", action="store_true", help="start again from --start-offset at the end, until Ctrl-C")
    parser.add_argument("--start-offset", type=float, default=0.0,
                        help="seconds into the bag (from its first message) where playback starts (default: 0)")
    parser.add_argument("--delay", type=float, default=0.0,
                        help="seconds to wait after creating the publishers, before the first message (default: 0)")
    parser.add_argument("--wait-for-subscribers", type=int, default=0, metavar="N",
                        help="before playing, wait until every publisher has at least N subscribers (default: 0, "
                             "do not wait); gives up after --wait-timeout")
    parser.add_argument("--wait-timeout", type=float, default=10.0,
                        help="seconds to wait for subscribers (then it plays anyway), for --predict-service to "
                             "come up (then it fails) and, at the end, for that service's last answers "
                             "(default: 10)")
    parser.add_argument("--remap", nargs="+", default=[], metavar="FROM:=TO",
                        help="publish topic FROM as TO, e.g. /camera/image_raw:=/goal_node/image")
    parser.add_argument("--restamp", action="store_true",
                        help="replace header stamps with the current ROS time (default: keep the recorded stamps)")
    parser.add_argument("--predict-service", default=None, metavar="SERVICE",
                        help="also send each played instruction as an actedit_ros/srv/PredictGoal request to this "
                             "service, e.g. /goal_node/predict_goal (default: only publish the topic)")
    parser.add_argument("--instruction-topic", default=None,
                        help="the std_msgs/String topic whose messages --predict-service sends (default: the bag's "
                             "only String topic)")
    parser.add_argument("--node-name", default="actedit_play_bag", help="ROS node name (default: actedit_play_bag)")
    return parser


def parse_remaps(remaps: list[str]) -> dict[str, str]:
    mapping = {}
    for remap in remaps:
        source, sep, target = remap.partition(":=")
        if not sep or not source or not target:
            raise ValueError(f"--remap {remap!r} is not FROM:=TO")
        mapping[source] = target
    return mapping


def import_message_class(msgtype: str):
    """`pkg/msg/Name` -> the rclpy message class; raises ImportError naming the type."""
    package, _, name = msgtype.rpartition("/")
    try:
        return getattr(importlib.import_module(package.replace("/", ".")), name)
    except (ImportError, AttributeError, ValueError):
        raise ImportError(f"message type {msgtype} is not importable in this ROS environment") from None


def qos_from_bag(profiles: list):
    """rclpy QoSProfile from the first offered QoS profile a bag recorded for a topic (defaults when none)."""
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rosbags.interfaces import QosDurability, QosReliability

    if not profiles:
        return QoSProfile(depth=10, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                          durability=DurabilityPolicy.VOLATILE)
    qos = profiles[0]
    return QoSProfile(
        depth=max(int(qos.depth), 1),
        history=HistoryPolicy.KEEP_LAST,
        reliability=(ReliabilityPolicy.BEST_EFFORT if qos.reliability == QosReliability.BEST_EFFORT
                     else ReliabilityPolicy.RELIABLE),
        durability=(DurabilityPolicy.TRANSIENT_LOCAL if qos.durability == QosDurability.TRANSIENT_LOCAL
                    else DurabilityPolicy.VOLATILE),
    )


class GoalRequester:
    """Turns played instruction messages into PredictGoal requests (asynchronous) and logs the answers.

    A request carries the first frame of `camera_topic` played at or after its instruction (the same start frame
    `actedit-eval-bag` uses), so live and offline goals start from the same image; without a camera topic, or when
    no frame follows, the request has no image and the node uses its latest frame.
    """

    def __init__(self, node, bag: BagReader, service: str, topic: str, camera_topic: str | None):
        from actedit_ros.srv import PredictGoal

        self.node = node
        self.bag = bag
        self.topic = topic
        self.camera_topic = camera_topic
        self.request_type = PredictGoal.Request
        self.client = node.create_client(PredictGoal, service)
        self.service = service
        self.pending: str | None = None
        self.futures = []

    def wait_for_service(self, timeout: float) -> bool:
        return self.client.wait_for_service(timeout_sec=timeout)

    def on_played(self, message: BagMessage) -> None:
        """Called for every published message."""
        self.report()
        if message.topic == self.topic:
            if self.pending is not None:
                self._send(self.pending)
            text = self.bag.deserialize(message).data.strip()
            self.pending = text or None
            if self.pending and self.camera_topic is None:
                self.finish()
        elif message.topic == self.camera_topic and self.pending is not None:
            self._send(self.pending, self._ros_image(message))
            self.pending = None

    def finish(self) -> None:
        """Send an instruction still waiting for its frame (with no image)."""
        if self.pending is not None:
            self._send(self.pending)
            self.pending = None

    def _ros_image(self, message: BagMessage):
        from rclpy.serialization import deserialize_message
        from sensor_msgs.msg import Image

        from actedit_ros.bag.io import IMAGE_TYPE, image_message_to_rgb
        from actedit_ros.image_conversion import rgb_to_image_fields

        if message.msgtype == IMAGE_TYPE:
            return deserialize_message(message.rawdata, Image)
        msg = self.bag.deserialize(message)
        return Image(**rgb_to_image_fields(image_message_to_rgb(msg, message.msgtype)))

    def _send(self, instruction: str, image=None) -> None:
        request = self.request_type(instruction=instruction, seed=-1)
        if image is not None:
            request.image = image
        self.futures.append((instruction, self.client.call_async(request)))
        self.report()

    def report(self) -> None:
        """Log the answers that have arrived (in request order)."""
        log = self.node.get_logger()
        while self.futures and self.futures[0][1].done():
            instruction, future = self.futures.pop(0)
            response = future.result()
            if response is None:
                log.warning(f"{self.service} gave no answer for {instruction!r}")
            elif response.success:
                log.info(f"goal {response.goal_id} for {instruction!r} ({response.prediction_time:.1f} s)")
            else:
                log.warning(f"{self.service} refused {instruction!r}: {response.message}")

    def wait(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the outstanding answers, logging them."""
        deadline = time.monotonic() + timeout
        while self.futures and time.monotonic() < deadline:
            self.report()
            time.sleep(0.05)
        for instruction, _ in self.futures:
            self.node.get_logger().warning(f"no answer from {self.service} for {instruction!r} within {timeout} s")


class BagPlayer:
    """Publishes a bag's messages on a node with the bag's timing."""

    def __init__(self, node, bag: BagReader, topics: list[str], remaps: dict[str, str], rate: float,
                 restamp: bool, stop: threading.Event, requester: GoalRequester | None = None):
        self.node = node
        self.requester = requester
        self.bag = bag
        self.topics = topics
        self.rate = rate
        self.restamp = restamp
        self.stop = stop
        self.published = 0
        self.publishers = {}
        for topic in topics:
            msg_class = import_message_class(bag.topics[topic].msgtype)
            self.publishers[topic] = node.create_publisher(msg_class, remaps.get(topic, topic),
                                                           qos_from_bag(bag.offered_qos(topic)))

    def wait_for_subscribers(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.stop.is_set():
            if all(p.get_subscription_count() >= count for p in self.publishers.values()):
                return True
            if time.monotonic() > deadline:
                return False
            self.stop.wait(0.05)
        return False

    def _payload(self, message: BagMessage) -> bytes:
        if not self.restamp:
            return message.rawdata
        msg = self.bag.deserialize(message)
        if not hasattr(msg, "header"):
            return message.rawdata
        now_ns = self.node.get_clock().now().nanoseconds
        stamp = dataclasses.replace(msg.header.stamp, sec=now_ns // NS, nanosec=now_ns % NS)
        msg = dataclasses.replace(msg, header=dataclasses.replace(msg.header, stamp=stamp))
        return bytes(self.bag.typestore.serialize_cdr(msg, message.msgtype))

    def play_once(self, start_ns: int, progress_bar=None) -> None:
        """One pass from start_ns to the bag end; returns early when `stop` is set."""
        wall_start = time.monotonic()
        first_ns = None
        for message in self.bag.messages(self.topics, start_ns=start_ns):
            if first_ns is None:
                first_ns = message.log_ns
            due = wall_start + (message.log_ns - first_ns) / NS / self.rate
            if self.stop.wait(max(0.0, due - time.monotonic())):
                return
            try:
                payload = self._payload(message)
            except BagError as exc:
                self.node.get_logger().warning(f"not published ({message.topic} at {message.log_ns}): {exc}")
                continue
            self.publishers[message.topic].publish(payload)
            self.published += 1
            if self.requester is not None:
                try:
                    self.requester.on_played(message)
                except (BagError, ValueError) as exc:
                    self.node.get_logger().warning(f"goal request not sent: {exc}")
            if progress_bar is not None:
                progress_bar.update(1)

    def flush(self, timeout: float = 2.0) -> None:
        """Give reliable subscribers time to receive the last messages before the publishers go away."""
        for publisher in self.publishers.values():
            try:
                publisher.wait_for_all_acked(rclpy_duration(timeout))
            except Exception:  # noqa: BLE001 - best effort; volatile/best-effort publishers may not support it
                pass


def rclpy_available(prog: str) -> bool:
    """True when rclpy imports; otherwise the tool says how to get it (play-bag and record-bag need ROS)."""
    try:
        import rclpy  # noqa: F401
    except ImportError as exc:
        print(f"{prog}: error: rclpy is not available ({exc}); source scripts/env.sh or a ROS 2 setup first",
              file=sys.stderr)
        return False
    return True


def rclpy_duration(seconds: float):
    from rclpy.duration import Duration

    return Duration(nanoseconds=int(seconds * NS))


def select_topics(bag: BagReader, requested: list[str] | None) -> tuple[list[str], list[str]]:
    """(topics to publish, notes about topics left out)."""
    notes = []
    if requested:
        missing = [t for t in requested if t not in bag.topics]
        if missing:
            raise BagError(f"topics {missing} are not in bag {bag.path}; its topics: {bag.describe_topics()}")
        candidates = list(requested)
    else:
        candidates = sorted(bag.topics)
    topics = []
    for topic in candidates:
        try:
            import_message_class(bag.topics[topic].msgtype)
        except ImportError as exc:
            if requested:
                raise BagError(f"cannot publish {topic}: {exc}") from None
            notes.append(f"skipping {topic}: {exc}")
            continue
        topics.append(topic)
    if not topics:
        raise BagError(f"nothing to publish from bag {bag.path}; its topics: {bag.describe_topics()}")
    return topics, notes


def plan_playback(bag: BagReader, args: argparse.Namespace) -> tuple[list[str], int, int, str | None]:
    """(topics to publish, their message count, log time to start at, instruction topic for --predict-service).

    Prints the bag's notes; raises BagError when there is nothing to play or the flags do not fit the bag.
    """
    topics, notes = select_topics(bag, args.topics)
    for note in bag.notes + notes:
        print(f"{PROG}: {note}", file=sys.stderr)
    total = sum(bag.topics[t].count for t in topics)
    if total == 0:
        raise BagError(f"bag {bag.path} holds no messages on the topics to publish; its topics: "
                       f"{bag.describe_topics()}")
    start_ns = bag.start_ns + int(args.start_offset * NS)
    if args.start_offset < 0 or start_ns >= bag.end_ns:
        raise BagError(f"--start-offset {args.start_offset} s is outside the bag, which lasts "
                       f"{(bag.end_ns - bag.start_ns) / NS:.3f} s")
    instruction_topic = None
    if args.predict_service:
        instruction_topic = bag.string_topic(args.instruction_topic)
        if instruction_topic is None or instruction_topic not in topics:
            raise BagError(f"--predict-service needs a played std_msgs/String instruction topic; give "
                           f"--instruction-topic (the bag's topics: {bag.describe_topics()})")
    return topics, total, start_ns, instruction_topic


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.rate <= 0:
        print(f"{PROG}: error: --rate must be positive, got {args.rate}", file=sys.stderr)
        return 2
    try:
        remaps = parse_remaps(args.remap)
    except ValueError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    if not rclpy_available(PROG):
        return 1
    import rclpy
    from rclpy.signals import SignalHandlerOptions

    stop = threading.Event()
    player = None
    try:
        with BagReader(args.bag) as bag:
            topics, total, start_ns, instruction_topic = plan_playback(bag, args)
            rclpy.init(args=None, signal_handler_options=SignalHandlerOptions.NO)
            node = rclpy.create_node(args.node_name)
            executor, spin_thread = None, None
            try:
                with StopOnSignals(stop.set):
                    requester = None
                    if instruction_topic:
                        from rclpy.executors import SingleThreadedExecutor

                        image_topics = [t for t in topics if bag.topics[t].msgtype in IMAGE_TYPES]
                        requester = GoalRequester(node, bag, args.predict_service, instruction_topic,
                                                  image_topics[0] if len(image_topics) == 1 else None)
                        executor = SingleThreadedExecutor()
                        executor.add_node(node)
                        spin_thread = threading.Thread(target=executor.spin, daemon=True)
                        spin_thread.start()
                        if not requester.wait_for_service(args.wait_timeout):
                            raise BagError(f"service {args.predict_service} is not available after "
                                           f"{args.wait_timeout} s (is the goal node running?)")
                    player = BagPlayer(node, bag, topics, remaps, args.rate, args.restamp, stop, requester)
                    if args.wait_for_subscribers > 0 and not player.wait_for_subscribers(args.wait_for_subscribers,
                                                                                         args.wait_timeout):
                        print(f"{PROG}: not every topic had {args.wait_for_subscribers} subscriber(s) after "
                              f"{args.wait_timeout} s; playing anyway", file=sys.stderr)
                    stop.wait(max(0.0, args.delay))
                    from tqdm import tqdm

                    print(f"{PROG}: publishing {', '.join(remaps.get(t, t) for t in topics)} at rate {args.rate}"
                          f"{' (loop)' if args.loop else ''}", file=sys.stderr)
                    bar = tqdm(total=None if args.loop else total, unit="msg", desc="playing", dynamic_ncols=True)
                    with bar:
                        while not stop.is_set():
                            player.play_once(start_ns, bar)
                            if not args.loop:
                                break
                    player.flush()
                    if requester is not None:
                        requester.finish()
                        requester.wait(args.wait_timeout)
            finally:
                if executor is not None:
                    executor.shutdown()
                    # A spin thread still inside rcl when the interpreter exits aborts the process
                    # ("terminate called without an active exception"): wait for it to leave.
                    spin_thread.join(timeout=5.0)
                node.destroy_node()
                rclpy.try_shutdown()
    except BagError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # noqa: BLE001 - a CLI reports, it does not dump tracebacks
        print(f"{PROG}: error: unexpected {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    published = player.published if player else 0
    print(f"{PROG}: published {published} messages{' (stopped)' if stop.is_set() else ''}", file=sys.stderr)
    if published == 0 and not stop.is_set():
        print(f"{PROG}: error: no message of bag {args.bag} was published", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
