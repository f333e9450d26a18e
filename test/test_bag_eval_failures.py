"""`actedit-eval-bag` on episodes it cannot score: each fails alone, with its reason, and the exit status says so."""
import csv
import json

import numpy as np
import pytest

from actedit_ros.bag import BagError, BagReader, BagWriter, image_message, string_message
from actedit_ros.bag.eval_bag import EXIT_EPISODES_FAILED, main
from actedit_ros.bag.synthetic import DEFAULT_START_NS, write_frames_bag
from actedit_ros.editing.tiny import make_tiny_model
from actedit_ros.world import generate_episode

SIZE = (64, 48)
FRAMES = 6


def good_episode(seed=1):
    episode = generate_episode(seed=seed, regime="fixed", split="test", size=SIZE, num_frames=FRAMES)
    return episode.instruction, episode.frames


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_unscoreable_episodes_fail_alone_oracle(tmp_path, capsys):
    instruction, frames = good_episode()
    tiny = [np.full((4, 4, 3), 100, np.uint8)] * 3
    write_frames_bag(tmp_path / "bag", [(instruction, frames), ("hold still", [frames[0]] * 4),
                                        ("one frame", [frames[2]]), ("tiny frames", tiny)], storage="mcap")
    out = tmp_path / "out"
    assert main([str(tmp_path / "bag"), "-o", str(out), "--oracle-goal"]) == EXIT_EPISODES_FAILED
    err = capsys.readouterr().err
    assert "3 of 4 episodes failed: episode 1 ('hold still'): " in err and "episode 3 ('tiny frames')" in err

    summary = json.loads((out / "summary.json").read_text())
    assert summary["error"] is None and summary["episodes_failed"] == 3
    statuses = [(e["status"], e["frames"]) for e in summary["episodes"]]
    assert statuses == [("done", FRAMES), ("failed", 0), ("failed", 0), ("failed", 0)]
    details = [e["detail"] for e in summary["episodes"]]
    assert "practically identical" in details[1] and "practically identical" in details[2]
    assert "too small" in details[3]

    rows = read_csv(out / "progress.csv")
    assert [r["episode"] for r in rows if not r["failure"]] == ["0"] * FRAMES
    failures = {r["episode"]: r["failure"] for r in rows if r["failure"]}
    assert failures == {"1": details[1], "2": details[2], "3": details[3]}
    markdown = (out / "summary.md").read_text()
    assert "**3 of 4 episodes failed**" in markdown and f"| failed: {details[3]} |" in markdown


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return str(make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0))


def test_unscoreable_episodes_fail_alone_predicted(tmp_path, tiny_model, capsys):
    instruction, frames = good_episode(seed=4)
    tiny = [np.full((4, 4, 3), 100, np.uint8)] * 3
    write_frames_bag(tmp_path / "bag", [(instruction, frames), ("one frame", [frames[3]]), ("tiny frames", tiny)],
                     storage="sqlite3")
    out = tmp_path / "out"
    code = main([str(tmp_path / "bag"), "-o", str(out), "--model", tiny_model, "--steps", "2", "--device", "cpu"])
    assert code == EXIT_EPISODES_FAILED
    summary = json.loads((out / "summary.json").read_text())
    episodes = summary["episodes"]
    assert [(e["status"], e["frames"]) for e in episodes] == [("done", FRAMES), ("failed", 1), ("failed", 0)]
    assert "only 1 frame(s) scored" in episodes[1]["detail"]
    assert "too small" in episodes[2]["detail"]
    assert "episode 2 ('tiny frames')" in capsys.readouterr().err


def test_no_scoreable_frame_is_a_failure(tmp_path, capsys):
    _, frames = good_episode()
    write_frames_bag(tmp_path / "bag", [("hold still", [frames[0]] * 4), ("one frame", [frames[1]])],
                     storage="mcap")
    out = tmp_path / "out"
    assert main([str(tmp_path / "bag"), "-o", str(out), "--oracle-goal"]) == 1
    err = capsys.readouterr().err
    assert "error: no frame of any episode could be scored (episode 0 ('hold still'): " in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["error"].startswith("no frame of any episode could be scored")
    assert "**The evaluation failed: no frame of any episode" in (out / "summary.md").read_text()


def test_skip_reasons_are_grouped_by_kind(tmp_path):
    _, frames = good_episode()
    with BagWriter(tmp_path / "bag", storage="mcap") as writer:
        writer.add_topic("/camera/image_raw", "sensor_msgs/msg/Image")
        writer.add_topic("/instruction", "std_msgs/msg/String")
        writer.write("/instruction", DEFAULT_START_NS, string_message("open the drawer"))
        for i, rgb in enumerate(frames):
            t = DEFAULT_START_NS + i * 100_000_000
            writer.write("/camera/image_raw", t, image_message(rgb, t))
            broken = image_message(rgb, t + 1)
            broken.data = broken.data[: -(i + 1) * 7]  # a different byte count each time
            writer.write("/camera/image_raw", t + 1, broken)
    out = tmp_path / "out"
    assert main([str(tmp_path / "bag"), "-o", str(out), "--oracle-goal"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_messages"] == FRAMES
    (kind,) = summary["skipped_reasons"]
    assert summary["skipped_reasons"][kind] == FRAMES and kind.startswith("/camera/image_raw: ")
    assert summary["skipped_examples"][kind] != kind  # the first message itself, with its numbers
    markdown = (out / "summary.md").read_text()
    assert markdown.count("| /camera/image_raw: ") == 1


def test_errors_name_the_flag_and_list_many_topics_one_per_line(tmp_path, capsys):
    rgb = np.zeros((8, 8, 3), np.uint8)
    with BagWriter(tmp_path / "bag", storage="mcap") as writer:
        for name in ("/left", "/right"):
            writer.add_topic(name, "sensor_msgs/msg/Image")
            writer.write(name, DEFAULT_START_NS, image_message(rgb, DEFAULT_START_NS))
        for number in range(30):
            writer.add_topic(f"/sensor_{number:02d}/text", "std_msgs/msg/String")
    with BagReader(tmp_path / "bag") as bag:
        topics = bag.describe_topics()
        with pytest.raises(BagError, match="(?s)30 std_msgs/msg/String topics \\(\n  /sensor_00/text\n  "
                                           "/sensor_01/text\n.*\n  /sensor_29/text\\); choose one with "
                                           "--instruction-topic"):
            bag.string_topic()
    lines = topics.splitlines()
    assert len(lines) == 1 + 32 and lines[0] == "" and all(line.startswith("  /") for line in lines[1:])
    assert max(len(line) for line in lines) < 100
    assert main([str(tmp_path / "bag"), "-o", str(tmp_path / "out"), "--oracle-goal"]) == 1
    assert "2 image topics (/left, /right); choose one with --camera-topic" in capsys.readouterr().err
    assert main([str(tmp_path / "bag"), "-o", str(tmp_path / "out"), "--oracle-goal", "--camera-topic", "/nope"]) == 1
    err = capsys.readouterr().err
    assert "'/nope' is not in bag" in err and "\n  /sensor_29/text (std_msgs/msg/String, 0 messages)" in err
