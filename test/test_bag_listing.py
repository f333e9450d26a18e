"""Bags whose metadata.yaml does not say exactly what their storage file holds (rosbag2's own recordings).

rosbags 0.11.9 matches metadata.yaml's topics to the storage file's by QoS profile too, and yields nothing where
they differ; every reader here must still read every stored message and say where the listing differs.
"""
import json
import sqlite3
import struct

import pytest

from actedit_ros.bag import BagError, BagReader, BagWriter, episodes_from_instructions, image_message, make_qos, \
    string_message
from actedit_ros.bag.eval_bag import main as eval_main
from actedit_ros.bag.io import get_bag_typestore
from actedit_ros.bag.synthetic import DEFAULT_START_NS
from actedit_ros.world import generate_episode

SIZE = (64, 48)
FRAMES = 6
PERIOD_NS = 100_000_000
BAG_END_NS = DEFAULT_START_NS + 10 * PERIOD_NS

# One QoS profile as rosbag2 C++ (metadata version 4, Foxy/Galactic) serialises it: a YAML string inside the YAML.
QOS_V4 = ("- history: 3\n  depth: {depth}\n  reliability: 1\n  durability: 2\n  deadline:\n    sec: 0\n    nsec: 0\n"
          "  lifespan:\n    sec: 0\n    nsec: 0\n  liveliness: 1\n  liveliness_lease_duration:\n    sec: 0\n"
          "    nsec: 0\n  avoid_ros_namespace_conventions: false")


def episode_frames():
    return generate_episode(seed=3, regime="fixed", split="test", size=SIZE, num_frames=FRAMES)


def write_qos_bag(path, storage):
    """Camera and instruction topics recorded with QoS profiles (depth 10), like rosbag2 records them."""
    episode = episode_frames()
    with BagWriter(path, storage=storage) as writer:
        writer.add_topic("/camera/image_raw", "sensor_msgs/msg/Image", make_qos(reliable=False, depth=10))
        writer.add_topic("/instruction", "std_msgs/msg/String", make_qos(depth=10))
        writer.write("/instruction", DEFAULT_START_NS, string_message(episode.instruction))
        for i, rgb in enumerate(episode.frames):
            t = DEFAULT_START_NS + i * PERIOD_NS
            writer.write("/camera/image_raw", t, image_message(rgb, t))
    return episode


def write_rosbag2_v4_sqlite(path, episode, db_depth=10, meta_depth=0):
    """A bag in the shape rosbag2 C++ wrote with metadata version 4: a schema-less sqlite3 file (topics table with
    offered_qos_profiles) and metadata.yaml whose QoS strings differ from the database's (depth 0 vs 10)."""
    typestore = get_bag_typestore()
    path.mkdir()
    db = sqlite3.connect(path / f"{path.name}_0.db3")
    db.executescript(
        "CREATE TABLE topics(id INTEGER PRIMARY KEY, name TEXT NOT NULL, type TEXT NOT NULL, "
        "serialization_format TEXT NOT NULL, offered_qos_profiles TEXT NOT NULL);"
        "CREATE TABLE messages(id INTEGER PRIMARY KEY, topic_id INTEGER NOT NULL, timestamp INTEGER NOT NULL, "
        "data BLOB NOT NULL);"
        "CREATE INDEX timestamp_idx ON messages (timestamp ASC);"
    )
    topics = [("/instruction", "std_msgs/msg/String"), ("/camera/image_raw", "sensor_msgs/msg/Image")]
    for number, (name, msgtype) in enumerate(topics, start=1):
        db.execute("INSERT INTO topics VALUES (?, ?, ?, 'cdr', ?)", (number, name, msgtype,
                                                                    QOS_V4.format(depth=db_depth)))
    rows = [(1, DEFAULT_START_NS, typestore.serialize_cdr(string_message(episode.instruction), topics[0][1]))]
    for i, rgb in enumerate(episode.frames):
        t = DEFAULT_START_NS + i * PERIOD_NS
        rows.append((2, t, typestore.serialize_cdr(image_message(rgb, t), topics[1][1])))
    db.executemany("INSERT INTO messages(topic_id, timestamp, data) VALUES (?, ?, ?)",
                   [(topic, t, bytes(data)) for topic, t, data in rows])
    db.commit()
    db.close()
    listing = "".join(
        f"    - topic_metadata:\n        name: {name}\n        type: {msgtype}\n        serialization_format: cdr\n"
        f"        offered_qos_profiles: {json.dumps(QOS_V4.format(depth=meta_depth))}\n"
        f"      message_count: {1 if number == 0 else FRAMES}\n"
        for number, (name, msgtype) in enumerate(topics)
    )
    (path / "metadata.yaml").write_text(
        "rosbag2_bagfile_information:\n  version: 4\n  storage_identifier: sqlite3\n"
        f"  relative_file_paths:\n    - {path.name}_0.db3\n"
        f"  duration:\n    nanoseconds: {(FRAMES - 1) * PERIOD_NS}\n"
        f"  starting_time:\n    nanoseconds_since_epoch: {DEFAULT_START_NS}\n"
        f"  message_count: {FRAMES + 1}\n  topics_with_message_count:\n{listing}"
        "  compression_format: \"\"\n  compression_mode: \"\"\n"
    )


def edit_metadata(bag, old, new):
    meta = bag / "metadata.yaml"
    text = meta.read_text()
    assert old in text
    meta.write_text(text.replace(old, new))


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_edited_metadata_qos_still_reads_every_message(tmp_path, storage):
    episode = write_qos_bag(tmp_path / "bag", storage)
    edit_metadata(tmp_path / "bag", "depth: 10", "depth: 7")
    with BagReader(tmp_path / "bag") as bag:
        assert {t.name: t.count for t in bag.topics.values()} == {"/camera/image_raw": FRAMES, "/instruction": 1}
        messages = list(bag.messages())
        frames = [item for item in bag.frames("/camera/image_raw")]
        instructions = [(m.log_ns, bag.deserialize(m).data) for m in bag.messages(["/instruction"])]
        assert bag.offered_qos("/instruction")[0].depth == 7  # metadata.yaml's profile, for playback
        assert any("other QoS profiles than its storage for /camera/image_raw, /instruction" in n for n in bag.notes)
    assert len(messages) == FRAMES + 1
    assert [f.log_ns for f in frames] == [DEFAULT_START_NS + i * PERIOD_NS for i in range(FRAMES)]
    assert [e.instruction for e in episodes_from_instructions(instructions, BAG_END_NS)] == [
        episode.instruction]


def test_rosbag2_v4_sqlite_bag_reads_completely(tmp_path):
    episode = episode_frames()
    write_rosbag2_v4_sqlite(tmp_path / "talker", episode)
    with BagReader(tmp_path / "talker") as bag:
        assert bag.storage == "sqlite3"
        assert (bag.start_ns, bag.end_ns) == (DEFAULT_START_NS, DEFAULT_START_NS + (FRAMES - 1) * PERIOD_NS + 1)
        (text,) = [bag.deserialize(m).data for m in bag.messages(["/instruction"])]
        frames = list(bag.frames("/camera/image_raw"))
        assert bag.offered_qos("/camera/image_raw")[0].depth == 0
    assert text == episode.instruction
    assert len(frames) == FRAMES
    for frame, rgb in zip(frames, episode.frames):
        assert (frame.rgb == rgb).all()


def test_eval_bag_scores_a_rosbag2_v4_bag(tmp_path):
    """End to end: the bag that read as empty ('no decodable camera frame') is scored frame by frame."""
    write_rosbag2_v4_sqlite(tmp_path / "talker", episode_frames())
    out = tmp_path / "out"
    assert eval_main([str(tmp_path / "talker"), "-o", str(out), "--oracle-goal"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["frames_read"] == FRAMES
    assert [(e["status"], e["frames"]) for e in summary["episodes"]] == [("done", FRAMES)]
    assert any("other QoS profiles than its storage" in note for note in summary["notes"])


def test_listed_counts_that_differ_from_the_storage_are_noted(tmp_path):
    write_qos_bag(tmp_path / "bag", "sqlite3")
    edit_metadata(tmp_path / "bag", f"message_count: {FRAMES}\n", f"message_count: {FRAMES + 4}\n")
    with BagReader(tmp_path / "bag") as bag:
        assert bag.topics["/camera/image_raw"].count == FRAMES
        assert len(list(bag.messages(["/camera/image_raw"]))) == FRAMES
        assert any(f"lists {FRAMES + 4} messages on /camera/image_raw, its storage holds {FRAMES}" in note
                   for note in bag.notes)


def overstate_mcap_statistics(mcap_file, extra):
    """Raise the message counts an MCAP file's Statistics record claims by `extra` (its summary CRC zeroed)."""
    data = bytearray(mcap_file.read_bytes())
    footer = len(data) - 8 - 29  # footer record: opcode, length, summary start, summary offset start, CRC
    (summary_start,) = struct.unpack_from("<Q", data, footer + 9)
    struct.pack_into("<I", data, footer + 25, 0)
    position = summary_start
    while data[position] != 0x0B:  # walk the summary section's records to the Statistics record
        (length,) = struct.unpack_from("<Q", data, position + 1)
        position += 9 + length
    body = position + 9
    (count,) = struct.unpack_from("<Q", data, body)
    struct.pack_into("<Q", data, body, count + extra)
    first_channel = body + 42 + 4  # after the fixed fields and the map's byte length: (u16 id, u64 count) pairs
    (channel_count,) = struct.unpack_from("<Q", data, first_channel + 2)
    struct.pack_into("<Q", data, first_channel + 2, channel_count + extra)
    mcap_file.write_bytes(bytes(data))


def test_a_whole_read_that_yields_less_than_the_storage_claims_fails_loudly(tmp_path, capsys):
    write_qos_bag(tmp_path / "bag", "mcap")
    overstate_mcap_statistics(next((tmp_path / "bag").glob("*.mcap")), extra=3)
    with BagReader(tmp_path / "bag") as bag:
        claimed = {t.name: t.count for t in bag.topics.values()}
        assert sum(claimed.values()) == FRAMES + 1 + 3
        window = list(bag.messages(stop_ns=DEFAULT_START_NS + 2 * PERIOD_NS))  # a window is not checked
        assert len(window) == 1 + 2
        with pytest.raises(BagError, match=r"reading yielded fewer messages than its storage holds \(/\w+.*: "
                                           r"\d+ of \d+\)"):
            list(bag.messages())
    assert eval_main([str(tmp_path / "bag"), "-o", str(tmp_path / "out"), "--oracle-goal"]) == 1
    assert "reading yielded fewer messages than its storage holds" in capsys.readouterr().err
