"""rosbag2 reading/writing with rosbags (sqlite3 and mcap), episode files, and every bad-bag case."""
import os
import shutil
import struct

import numpy as np
import pytest
from rosbags.image import message_to_cvimage
from rosbags.interfaces import QosDurability

from actedit_ros.bag import BagError, BagFrame, BagReader, BagWriter, EpisodeError, SkippedMessage, image_message, \
    load_episode_file
from actedit_ros.bag.episodes import NS, episodes_from_instructions
from actedit_ros.bag.io import get_bag_typestore
from actedit_ros.bag.write import make_qos
from actedit_ros.bag.synthetic import DEFAULT_START_NS, write_frames_bag, write_world_bag
from actedit_ros.world import generate_episode

SIZE = (64, 48)
FRAMES = 8


def world_frames(seed):
    return generate_episode(seed=seed, regime="fixed", split="test", size=SIZE, num_frames=FRAMES)


def storage_file(bag_dir):
    return next(p for p in bag_dir.iterdir() if p.suffix in (".mcap", ".db3"))


# ---------------------------------------------------------------------------------------------------------------
# Round trips
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("compressed", [None, "png"])
def test_world_bag_round_trip(tmp_path, storage, compressed):
    written = write_world_bag(tmp_path / "bag", seeds=(3, 4), size=SIZE, num_frames=FRAMES, storage=storage,
                              compressed=compressed)
    reference = [world_frames(3), world_frames(4)]
    with BagReader(tmp_path / "bag") as bag:
        assert bag.storage == storage
        assert bag.image_topic() == "/camera/image_raw"
        assert bag.string_topic() == "/instruction"
        assert bag.start_ns == DEFAULT_START_NS
        assert bag.topics["/camera/image_raw"].count == 2 * FRAMES
        frames = list(bag.frames("/camera/image_raw"))
        instructions = [bag.deserialize(m).data for m in bag.messages(["/instruction"])]
    assert instructions == [ep.instruction for ep in reference]
    assert all(isinstance(f, BagFrame) for f in frames)
    expected = reference[0].frames + reference[1].frames
    for frame, rgb in zip(frames, expected, strict=True):
        np.testing.assert_array_equal(frame.rgb, rgb)  # png is lossless
    assert [f.log_ns for f in frames] == [f.stamp_ns for f in frames]
    assert frames[0].log_ns == written[0].start_ns and frames[FRAMES].log_ns == written[1].start_ns
    assert all(a.log_ns < b.log_ns for a, b in zip(frames, frames[1:]))


def test_frames_agree_with_rosbags_image(tmp_path):
    """The decoded frames match rosbags-image's independent conversion of the same messages."""
    rgb = world_frames(5).frames[2]
    with BagWriter(tmp_path / "bag", storage="sqlite3") as writer:
        writer.add_topic("/cam", "sensor_msgs/msg/Image")
        for i, encoding in enumerate(("rgb8", "bgr8", "mono8")):
            writer.write("/cam", DEFAULT_START_NS + i, image_message(rgb, DEFAULT_START_NS + i, encoding=encoding))
    with BagReader(tmp_path / "bag") as bag:
        messages = list(bag.messages(["/cam"]))
        frames = list(bag.frames("/cam"))
    for message, frame in zip(messages, frames, strict=True):
        msg = bag.typestore.deserialize_cdr(message.rawdata, message.msgtype)
        reference = message_to_cvimage(msg, "rgb8")
        if reference.ndim == 2:
            reference = np.repeat(reference[:, :, None], 3, axis=2)
        np.testing.assert_array_equal(frame.rgb, reference)
    np.testing.assert_array_equal(frames[0].rgb, rgb)
    np.testing.assert_array_equal(frames[1].rgb, rgb)


def test_time_window_and_single_storage_file(tmp_path):
    written = write_world_bag(tmp_path / "bag", seeds=(1, 2), size=SIZE, num_frames=FRAMES, storage="mcap")
    with BagReader(tmp_path / "bag") as bag:
        window = list(bag.frames("/camera/image_raw", written[1].start_ns, written[1].last_frame_ns + 1))
    assert len(window) == FRAMES and window[0].log_ns == written[1].start_ns
    # The storage file alone, and a directory whose metadata.yaml is missing (an interrupted recording).
    with BagReader(storage_file(tmp_path / "bag")) as bag:
        assert bag.topics["/camera/image_raw"].count == 2 * FRAMES
    (tmp_path / "bag" / "metadata.yaml").unlink()
    with BagReader(tmp_path / "bag") as bag:
        assert len(list(bag.frames("/camera/image_raw"))) == 2 * FRAMES
        assert "no metadata.yaml" in bag.notes[0]


def test_custom_messages_and_qos_are_recorded(tmp_path):
    typestore = get_bag_typestore()
    Progress = typestore.types["actedit_ros/msg/Progress"]
    header = image_message(world_frames(0).frames[0], 5).header
    with BagWriter(tmp_path / "bag", storage="mcap") as writer:
        writer.add_topic("/goal_node/progress", "actedit_ros/msg/Progress", make_qos(transient_local=True, depth=1))
        writer.write("/goal_node/progress", 10, Progress(header=header, goal_id="g1", instruction="open it",
                                                         progress=0.25, raw_progress=0.5, similarity=0.75,
                                                         reached=False, registered=True, stale=False, frame_age=0.0))
    with BagReader(tmp_path / "bag") as bag:
        (message,) = list(bag.messages())
        connection = bag.reader.connections[0]
        msg = bag.deserialize(message)
    assert (msg.goal_id, msg.progress, msg.similarity, msg.registered) == ("g1", 0.25, 0.75, True)
    assert connection.ext.offered_qos_profiles[0].durability == QosDurability.TRANSIENT_LOCAL
    with pytest.raises(BagError, match="unknown to the rosbags typestore"):
        with BagWriter(tmp_path / "bag2") as writer:
            writer.add_topic("/x", "no_such_pkg/msg/Thing")


# ---------------------------------------------------------------------------------------------------------------
# Topic selection
# ---------------------------------------------------------------------------------------------------------------


def test_image_topic_selection(tmp_path):
    frames = world_frames(0).frames[:2]
    with BagWriter(tmp_path / "bag", storage="mcap") as writer:
        writer.add_topic("/left", "sensor_msgs/msg/Image")
        writer.add_topic("/right", "sensor_msgs/msg/Image")
        writer.add_topic("/say", "std_msgs/msg/String")
        for i, rgb in enumerate(frames):
            writer.write("/left", DEFAULT_START_NS + i, image_message(rgb, DEFAULT_START_NS + i))
            writer.write("/right", DEFAULT_START_NS + i, image_message(rgb, DEFAULT_START_NS + i))
    with BagReader(tmp_path / "bag") as bag:
        with pytest.raises(BagError, match=r"2 image topics \(/left, /right\); choose one"):
            bag.image_topic()
        assert bag.image_topic("/right") == "/right"
        with pytest.raises(BagError, match=r"'/nope' is not in bag .*/left \(sensor_msgs/msg/Image, 2 messages\)"):
            bag.image_topic("/nope")
        with pytest.raises(BagError, match="has type std_msgs/msg/String, not sensor_msgs/msg/Image"):
            bag.image_topic("/say")


def test_no_image_topic_lists_the_topics(tmp_path):
    with BagWriter(tmp_path / "bag", storage="sqlite3") as writer:
        writer.add_topic("/chatter", "std_msgs/msg/String")
        writer.add_topic("/odom", "nav_msgs/msg/Odometry")
    with BagReader(tmp_path / "bag") as bag:
        with pytest.raises(BagError, match=r"has no image topic.*/chatter \(std_msgs/msg/String, 0 messages\), "
                                           r"/odom \(nav_msgs/msg/Odometry"):
            bag.image_topic()


# ---------------------------------------------------------------------------------------------------------------
# Episodes
# ---------------------------------------------------------------------------------------------------------------

BAG_START = DEFAULT_START_NS
BAG_END = DEFAULT_START_NS + 10 * NS


def test_yaml_episodes_relative_and_open_ended(tmp_path):
    path = tmp_path / "episodes.yaml"
    path.write_text("episodes:\n"
                    "  - {start: 4.0, instruction: put the cup in the bowl}\n"
                    "  - {start: 0.5, end: 3.0, instruction: open the drawer}\n")
    first, second = load_episode_file(path, BAG_START, BAG_END)
    assert (first.index, first.instruction) == (0, "open the drawer")
    assert (first.start_ns, first.end_ns) == (BAG_START + NS // 2, BAG_START + 3 * NS)
    assert (second.start_ns, second.end_ns) == (BAG_START + 4 * NS, BAG_END)


def test_csv_episodes_absolute_times(tmp_path):
    path = tmp_path / "episodes.csv"
    t0 = BAG_START / NS
    path.write_text(f"start,end,instruction\n{t0 + 1},{t0 + 2},wipe the table\n{t0 + 2},,close the lid\n")
    first, second = load_episode_file(path, BAG_START, BAG_END)
    assert (first.start_ns, first.end_ns) == (BAG_START + NS, BAG_START + 2 * NS)
    assert (second.instruction, second.start_ns, second.end_ns) == ("close the lid", BAG_START + 2 * NS, BAG_END)
    # Forcing relative times makes these huge numbers lie far outside the bag.
    with pytest.raises(EpisodeError, match="lies outside the bag, which spans 0.000 .. 10.000 s"):
        load_episode_file(path, BAG_START, BAG_END, time_base="relative")


@pytest.mark.parametrize("text, suffix, message", [
    ("- {start: 1, end: 1, instruction: x}\n", ".yaml", "end .* is not after start"),
    ("- {start: 1, end: 2, instruction: ''}\n", ".yaml", "instruction is empty"),
    ("- {end: 2, instruction: x}\n", ".yaml", "start is missing"),
    ("- {start: soon, instruction: x}\n", ".yaml", "'soon', not a number of seconds"),
    ("- {start: 30, instruction: x}\n", ".yaml", "lies outside the bag"),
    ("foo: [1, 2\n", ".yaml", "not valid YAML"),
    ("just a string\n", ".yaml", "must hold a list"),
    ("begin,instruction\n1,x\n", ".csv", r"lacks the column\(s\) \['start'\]"),
    ("episodes: []\n", ".yaml", "holds no episodes"),
])
def test_bad_episode_files(tmp_path, text, suffix, message):
    path = tmp_path / f"episodes{suffix}"
    path.write_text(text)
    with pytest.raises(EpisodeError, match=message):
        load_episode_file(path, BAG_START, BAG_END)


def test_episodes_from_instruction_messages():
    episodes = episodes_from_instructions([(BAG_START + 5 * NS, "b"), (BAG_START, "a"), (BAG_START + 7 * NS, " "),
                                           (BAG_START + 8 * NS, "c")], BAG_END)
    assert [(e.instruction, e.start_ns - BAG_START, e.end_ns - BAG_START) for e in episodes] == [
        ("a", 0, 5 * NS), ("b", 5 * NS, 7 * NS), ("c", 8 * NS, 10 * NS)]
    with pytest.raises(EpisodeError, match="no non-empty instruction"):
        episodes_from_instructions([(BAG_START, "")], BAG_END)


# ---------------------------------------------------------------------------------------------------------------
# Bad bags
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def good_bags(tmp_path):
    bags = {}
    for storage in ("mcap", "sqlite3"):
        write_world_bag(tmp_path / f"good_{storage}", seeds=(0,), size=SIZE, num_frames=FRAMES, storage=storage)
        bags[storage] = tmp_path / f"good_{storage}"
    return bags


def _edit_metadata(bag_dir, old, new):
    meta = bag_dir / "metadata.yaml"
    text = meta.read_text()
    assert old in text
    meta.write_text(text.replace(old, new))


def test_not_a_bag(tmp_path):
    with pytest.raises(BagError, match="bag not found"):
        BagReader(tmp_path / "missing")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "notes.txt").write_text("hello")
    with pytest.raises(BagError, match=r"not a rosbag2 bag directory: it has no metadata.yaml \(it holds: notes.txt"):
        BagReader(tmp_path / "folder")
    with pytest.raises(BagError, match="expected a bag directory"):
        BagReader(tmp_path / "folder" / "notes.txt")
    (tmp_path / "fake.mcap").write_bytes(b"not an mcap file at all")
    with pytest.raises(BagError, match="is not a valid MCAP file"):
        BagReader(tmp_path / "fake.mcap").open()
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "metadata.yaml").write_text("some: thing\n")
    with pytest.raises(BagError, match="has no 'rosbag2_bagfile_information'"):
        BagReader(tmp_path / "meta")


def test_unknown_and_empty_storage_identifier(good_bags):
    _edit_metadata(good_bags["mcap"], "storage_identifier: mcap", "storage_identifier: zarr")
    with pytest.raises(BagError, match="names storage plugin 'zarr', which is not supported; .* mcap, sqlite3"):
        BagReader(good_bags["mcap"])
    _edit_metadata(good_bags["sqlite3"], "storage_identifier: sqlite3", "storage_identifier: ''")
    with pytest.raises(BagError, match=r"empty storage_identifier.*suggests 'sqlite3'"):
        BagReader(good_bags["sqlite3"])


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
@pytest.mark.parametrize("fraction", [0.0, 0.6])
def test_truncated_storage_file(good_bags, storage, fraction):
    path = storage_file(good_bags[storage])
    os.truncate(path, int(path.stat().st_size * fraction))
    with pytest.raises(BagError, match="is truncated") as error:
        BagReader(good_bags[storage]).open()
    if storage == "mcap" and fraction:  # what it holds can be recovered: the message says how
        assert f"mcap recover {path} -o {path.with_suffix('.recovered.mcap')}" in str(error.value)


def test_messages_that_do_not_match_their_header_are_skipped(tmp_path):
    good = image_message(world_frames(0).frames[0], DEFAULT_START_NS)
    short = image_message(world_frames(0).frames[1], DEFAULT_START_NS + 1)
    short.data = short.data[:-7]  # data length != height * step
    wrong_step = image_message(world_frames(0).frames[2], DEFAULT_START_NS + 2)
    wrong_step.step = 10
    with BagWriter(tmp_path / "bag", storage="sqlite3") as writer:
        writer.add_topic("/cam", "sensor_msgs/msg/Image")
        writer.write("/cam", DEFAULT_START_NS, good)
        writer.write("/cam", DEFAULT_START_NS + 1, short)
        writer.write("/cam", DEFAULT_START_NS + 2, wrong_step)
        writer.write_raw("/cam", DEFAULT_START_NS + 3, b"\x00\x01\x00\x00garbage")
        writer.write("/cam", DEFAULT_START_NS + 4, good)
    with BagReader(tmp_path / "bag") as bag:
        items = list(bag.frames("/cam"))
    assert [isinstance(i, SkippedMessage) for i in items] == [False, True, True, True, False]
    assert all(i.log_ns == DEFAULT_START_NS + n for n, i in enumerate(items))
    assert "image data has 9209 bytes but height * step = 48 * 192 = 9216" in items[1].reason
    assert "step 10 is shorter than one row" in items[2].reason
    assert "do not decode" in items[3].reason


def corrupt_sqlite_after(bag_dir, frame_rgb):
    """Break the sqlite3 overflow-page chain inside the message that holds `frame_rgb` (a corrupt file)."""
    path = storage_file(bag_dir)
    raw = bytearray(path.read_bytes())
    page_size = struct.unpack(">H", raw[16:18])[0]
    marker = frame_rgb.tobytes()[3000:3064]  # on the first overflow page of this message (not its last)
    offset = raw.find(marker)
    assert offset > 0 and raw.count(marker) == 1
    page = offset // page_size
    raw[page * page_size:page * page_size + 4] = b"\xff\xff\xff\xff"  # next-overflow-page pointer
    path.write_bytes(bytes(raw))


def test_corrupt_file_mid_bag_keeps_earlier_messages(tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(10)]
    write_frames_bag(tmp_path / "bag", [("x", frames)], storage="sqlite3", instruction_topic=None)
    corrupt_sqlite_after(tmp_path / "bag", frames[6])
    seen = []
    with BagReader(tmp_path / "bag") as bag:
        with pytest.raises(BagError, match="is corrupt: reading stopped after 6 messages"):
            for item in bag.frames("/camera/image_raw"):
                seen.append(item)
    assert len(seen) == 6
    np.testing.assert_array_equal(seen[5].rgb, frames[5])


def test_writer_refuses_existing_path(tmp_path):
    (tmp_path / "bag").mkdir()
    with pytest.raises(BagError, match="exists already"):
        BagWriter(tmp_path / "bag")
    with pytest.raises(BagError, match="storage 'rosbag1' is not supported"):
        BagWriter(tmp_path / "other", storage="rosbag1")
    shutil.rmtree(tmp_path / "bag")
