"""`actedit-play-bag` and `actedit-record-bag` against real rclpy endpoints in this test process.

The tools run as subprocesses (the real console entry points); ROS_DOMAIN_ID is isolated by conftest.py.
"""
import contextlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosbags.interfaces import QosDurability
from sensor_msgs.msg import Image
from std_msgs.msg import String

from actedit_ros.bag import BagReader, BagWriter, make_qos, string_message
from actedit_ros.bag.episodes import NS
from actedit_ros.bag.io import image_message_to_rgb
from actedit_ros.bag.synthetic import DEFAULT_START_NS, write_world_bag
from actedit_ros.image_conversion import image_to_rgb, rgb_to_image_fields
from actedit_ros.msg import GoalImage, Progress
from actedit_ros.ros.play_bag import main as play_main
from actedit_ros.world import generate_episode

SIZE = (64, 48)
FRAMES = 8
RELIABLE = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


@pytest.fixture(scope="module")
def ros():
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("test_play_record", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    yield node, executor
    executor.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=context)


def start_tool(module, *args, sigint=signal.SIG_DFL):
    """`python -m module args`; SIGINT as in a terminal (a background test runner passes it on ignored) unless
    ``sigint=signal.SIG_IGN``."""
    return subprocess.Popen([sys.executable, "-m", module, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=dict(os.environ), preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))


@contextlib.contextmanager
def received_images(node, topic):
    """The list of Image messages that arrive on ``topic`` while the block runs (reliable subscription)."""
    images = []
    sub = node.create_subscription(Image, topic, images.append, RELIABLE)
    try:
        yield images
    finally:
        node.destroy_subscription(sub)


def spin_until(executor, condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        executor.spin_once(timeout_sec=0.05)
    return condition()


def finish(process, timeout=60):
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return process.returncode, out + err


@pytest.fixture(scope="module")
def world_bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("play") / "bag"
    written = write_world_bag(path, seeds=(0,), size=SIZE, num_frames=FRAMES, storage="mcap", fps=20.0)
    frames = generate_episode(seed=0, regime="fixed", split="test", size=SIZE, num_frames=FRAMES).frames
    return path, written[0], frames


def test_play_bag_publishes_the_recorded_messages(ros, world_bag):
    node, executor = ros
    path, written, frames = world_bag
    images, texts = [], []
    subs = [node.create_subscription(Image, "/camera/image_raw", images.append, RELIABLE),
            node.create_subscription(String, "/instruction", lambda m: texts.append(m.data), RELIABLE)]
    try:
        process = start_tool("actedit_ros.ros.play_bag", str(path), "--rate", "4", "--wait-for-subscribers", "1",
                             "--topics", "/camera/image_raw", "/instruction")
        spin_until(executor, lambda: len(images) >= FRAMES or process.poll() is not None)
        spin_until(executor, lambda: len(images) >= FRAMES, timeout=5)
        code, log = finish(process)
    finally:
        for sub in subs:
            node.destroy_subscription(sub)
    assert code == 0, log
    assert f"published {FRAMES + 1} messages" in log
    assert texts == [written.instruction]
    assert len(images) == FRAMES
    stamps = [msg.header.stamp.sec * NS + msg.header.stamp.nanosec for msg in images]
    assert stamps == [DEFAULT_START_NS + i * NS // 20 for i in range(FRAMES)]  # recorded stamps kept
    for msg, rgb in zip(images, frames):
        np.testing.assert_array_equal(
            image_to_rgb(msg.encoding, msg.height, msg.width, msg.step, msg.is_bigendian, msg.data), rgb)


def test_play_bag_reads_a_bag_whose_metadata_qos_differs_from_its_storage(ros, tmp_path):
    """rosbags alone yields nothing here ('published 0 messages', exit 0); every stored message must go out."""
    node, executor = ros
    with BagWriter(tmp_path / "bag", storage="sqlite3") as writer:
        writer.add_topic("/chatter", "std_msgs/msg/String", make_qos(depth=10))
        for i in range(5):
            writer.write("/chatter", DEFAULT_START_NS + i * NS // 20, string_message(f"hello {i}"))
    meta = tmp_path / "bag" / "metadata.yaml"
    meta.write_text(meta.read_text().replace("depth: 10", "depth: 3"))
    texts = []
    sub = node.create_subscription(String, "/chatter", lambda m: texts.append(m.data), RELIABLE)
    try:
        process = start_tool("actedit_ros.ros.play_bag", str(tmp_path / "bag"), "--wait-for-subscribers", "1")
        spin_until(executor, lambda: len(texts) >= 5 or process.poll() is not None)
        spin_until(executor, lambda: len(texts) >= 5, timeout=5)
        code, log = finish(process)
    finally:
        node.destroy_subscription(sub)
    assert code == 0, log
    assert "published 5 messages" in log and "other QoS profiles than its storage for /chatter" in log
    assert texts == [f"hello {i}" for i in range(5)]


def test_play_bag_fails_on_a_bag_without_messages(tmp_path, capsys):
    with BagWriter(tmp_path / "bag", storage="mcap") as writer:
        writer.add_topic("/chatter", "std_msgs/msg/String")
    assert play_main([str(tmp_path / "bag")]) == 1
    assert "holds no messages on the topics to publish" in capsys.readouterr().err


def test_play_bag_offset_remap_and_restamp(ros, world_bag):
    node, executor = ros
    path, _, frames = world_bag
    with received_images(node, "/robot/camera") as images:
        # Frames are 50 ms apart: an offset of 0.22 s skips the instruction and the first 5 frames.
        process = start_tool("actedit_ros.ros.play_bag", str(path), "--start-offset", "0.22", "--restamp",
                             "--remap", "/camera/image_raw:=/robot/camera", "--wait-for-subscribers", "1",
                             "--topics", "/camera/image_raw")
        spin_until(executor, lambda: len(images) >= FRAMES - 5 or process.poll() is not None)
        spin_until(executor, lambda: len(images) >= FRAMES - 5, timeout=5)
        code, log = finish(process)
    assert code == 0, log
    assert len(images) == FRAMES - 5
    first = images[0]
    np.testing.assert_array_equal(
        image_to_rgb(first.encoding, first.height, first.width, first.step, first.is_bigendian, first.data), frames[5])
    stamps = [msg.header.stamp.sec * NS + msg.header.stamp.nanosec for msg in images]
    now = time.time_ns()
    assert all(abs(now - s) < 600 * NS for s in stamps)  # re-stamped with the current time, not 2023's
    assert stamps == sorted(stamps)


def test_play_bag_bad_input(tmp_path, capsys):
    assert play_main([str(tmp_path / "missing")]) == 1
    assert "actedit-play-bag: error: bag not found" in capsys.readouterr().err
    path = tmp_path / "bag"
    write_world_bag(path, seeds=(0,), size=SIZE, num_frames=2, storage="sqlite3")
    assert play_main([str(path), "--topics", "/nope"]) == 1
    err = capsys.readouterr().err
    assert "['/nope'] are not in bag" in err and "/camera/image_raw (sensor_msgs/msg/Image, 2 messages)" in err
    assert play_main([str(path), "--start-offset", "99"]) == 1
    assert "--start-offset 99.0 s is outside the bag" in capsys.readouterr().err


def test_record_bag_writes_a_bag_the_reader_reads(ros, tmp_path):
    node, executor = ros
    frames = generate_episode(seed=1, regime="head", split="test", size=SIZE, num_frames=3).frames
    goal_pub = node.create_publisher(GoalImage, "/goal_node/goal", LATCHED)
    progress_pub = node.create_publisher(Progress, "/goal_node/progress", 10)
    camera_pub = node.create_publisher(Image, "/rec/camera", 10)
    goal = GoalImage(goal_id="g-42", instruction="open the drawer", seed=7, prediction_time=1.5,
                     start_image=Image(**rgb_to_image_fields(frames[0])),
                     goal_image=Image(**rgb_to_image_fields(frames[-1])))
    goal.header.stamp.sec = 123
    goal_pub.publish(goal)  # before the recorder exists: it must still get it (latched)
    output = tmp_path / "recorded"
    try:
        process = start_tool("actedit_ros.ros.record_bag", "-o", str(output), "--topics", "/goal_node/goal",
                             "/goal_node/progress", "/rec/camera:sensor_msgs/msg/Image", "--max-messages", "7",
                             "--duration", "90")
        assert spin_until(executor, lambda: progress_pub.get_subscription_count() > 0
                          and camera_pub.get_subscription_count() > 0 or process.poll() is not None)
        time.sleep(0.5)  # let the recorder's side of discovery settle too
        for i in range(3):
            progress_pub.publish(Progress(goal_id="g-42", instruction="open the drawer", progress=0.25 * (i + 1),
                                          raw_progress=0.3, similarity=0.5, reached=i == 2, registered=True))
            image = Image(**rgb_to_image_fields(frames[i]))
            image.header.stamp.sec = 1000 + i
            camera_pub.publish(image)
            executor.spin_once(timeout_sec=0.02)
        code, log = finish(process, timeout=90)
    finally:
        for publisher in (goal_pub, progress_pub, camera_pub):
            node.destroy_publisher(publisher)
    assert code == 0, log
    assert "wrote" in log

    with BagReader(output) as bag:
        assert bag.storage == "mcap"
        topics = bag.topics
        assert {name: (t.msgtype, t.count) for name, t in topics.items()} == {
            "/goal_node/goal": ("actedit_ros/msg/GoalImage", 1),
            "/goal_node/progress": ("actedit_ros/msg/Progress", 3),
            "/rec/camera": ("sensor_msgs/msg/Image", 3),
        }
        goal_qos = next(c for c in bag.reader.connections if c.topic == "/goal_node/goal").ext.offered_qos_profiles
        assert goal_qos[0].durability == QosDurability.TRANSIENT_LOCAL
        (goal_message,) = list(bag.messages(["/goal_node/goal"]))
        recorded_goal = bag.deserialize(goal_message)
        progress = [bag.deserialize(m) for m in bag.messages(["/goal_node/progress"])]
        camera = list(bag.frames("/rec/camera"))
    assert (recorded_goal.goal_id, recorded_goal.seed, recorded_goal.header.stamp.sec) == ("g-42", 7, 123)
    np.testing.assert_array_equal(image_message_to_rgb(recorded_goal.goal_image, "sensor_msgs/msg/Image"), frames[-1])
    assert [p.progress for p in progress] == [0.25, 0.5, 0.75] and [p.reached for p in progress] == [False, False, True]
    assert [f.stamp_ns for f in camera] == [1000 * NS, 1001 * NS, 1002 * NS]
    for frame, rgb in zip(camera, frames):
        np.testing.assert_array_equal(frame.rgb, rgb)


def test_record_bag_refuses_existing_output(tmp_path):
    (tmp_path / "exists").mkdir()
    result = subprocess.run([sys.executable, "-m", "actedit_ros.ros.record_bag", "-o", str(tmp_path / "exists"),
                             "--duration", "1"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert "actedit-record-bag: error: cannot create bag" in result.stderr and "exists already" in result.stderr
    assert "Traceback" not in result.stderr


def test_play_bag_loops_until_interrupted(ros, world_bag):
    node, executor = ros
    path, _, _ = world_bag
    with received_images(node, "/camera/image_raw") as images:
        process = start_tool("actedit_ros.ros.play_bag", str(path), "--loop", "--rate", "4",
                             "--wait-for-subscribers", "1", "--topics", "/camera/image_raw")
        spin_until(executor, lambda: len(images) >= 2 * FRAMES + 1 or process.poll() is not None)
        process.send_signal(signal.SIGINT)
        code, log = finish(process)
    assert code == 0, log
    assert len(images) >= 2 * FRAMES + 1
    stamps = [msg.header.stamp.sec * NS + msg.header.stamp.nanosec for msg in images[:2 * FRAMES]]
    assert stamps[FRAMES:] == stamps[:FRAMES]  # the second pass replays the same messages
    assert "(stopped)" in log


def test_play_bag_started_with_sigint_ignored_keeps_ignoring_it_and_stops_on_sigterm(ros, world_bag):
    """As nohup and a shell's `&` expect (and as the node does): an ignored Ctrl-C stays ignored."""
    node, executor = ros
    path, _, _ = world_bag
    with received_images(node, "/camera/image_raw") as images:
        process = start_tool("actedit_ros.ros.play_bag", str(path), "--loop", "--rate", "4",
                             "--wait-for-subscribers", "1", "--topics", "/camera/image_raw", sigint=signal.SIG_IGN)
        spin_until(executor, lambda: len(images) >= 2 or process.poll() is not None)
        process.send_signal(signal.SIGINT)
        seen = len(images)
        spin_until(executor, lambda: len(images) >= seen + FRAMES or process.poll() is not None)
        still_running = process.poll() is None
        process.send_signal(signal.SIGTERM)
        code, log = finish(process)
    assert still_running and len(images) >= seen + FRAMES, log
    assert code == 0 and "(stopped)" in log, log


def test_play_bag_sends_instructions_to_the_predict_service(ros, world_bag):
    """With --predict-service each played instruction becomes a PredictGoal request with the frame that follows it."""
    from actedit_ros.srv import PredictGoal

    node, executor = ros
    path, written, frames = world_bag
    requests, images = [], []

    def answer(request, response):
        image = request.image
        requests.append((request.instruction, image.encoding, request.seed))
        rgb = image_to_rgb(image.encoding, image.height, image.width, image.step, image.is_bigendian, image.data)
        images.append(rgb)
        response.success, response.goal_id, response.message = True, "g-1", "ok"
        return response

    service = node.create_service(PredictGoal, "/test_goal_node/predict_goal", answer)
    try:
        process = start_tool("actedit_ros.ros.play_bag", str(path), "--rate", "4",
                             "--predict-service", "/test_goal_node/predict_goal")
        spin_until(executor, lambda: process.poll() is not None)
        code, log = finish(process)
    finally:
        node.destroy_service(service)
    assert code == 0, log
    assert requests == [(written.instruction, "rgb8", -1)]
    np.testing.assert_array_equal(images[0], frames[0])  # the request carries the episode's first frame
    assert f"goal g-1 for {written.instruction!r}" in log


def test_record_bag_reports_a_topic_it_cannot_record(tmp_path):
    output = tmp_path / "bag"
    result = subprocess.run([sys.executable, "-m", "actedit_ros.ros.record_bag", "-o", str(output), "--storage",
                             "sqlite3", "--topics", "/weird:no_such_pkg/msg/Thing", "/quiet:std_msgs/msg/String",
                             "--duration", "1"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stderr
    assert "not recorded /weird: message type no_such_pkg/msg/Thing is not importable" in result.stderr
    assert "Traceback" not in result.stderr
    with BagReader(output) as bag:  # closed properly, with the topic that could be recorded
        assert bag.storage == "sqlite3"
        assert {name: t.count for name, t in bag.topics.items()} == {"/quiet": 0}
