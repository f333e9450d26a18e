"""`actedit-eval-bag` end to end on bags written from the synthetic world, with a tiny random model (2 steps)."""
import csv
import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from actedit_ros.bag import BagWriter, compressed_image_message, image_message
from actedit_ros.bag.eval_bag import main
from actedit_ros.bag.eval_report import CSV_COLUMNS
from actedit_ros.bag.synthetic import DEFAULT_START_NS, encode_rgb, write_frames_bag, write_world_bag
from actedit_ros.editing.tiny import make_tiny_model
from actedit_ros.world import generate_episode

SIZE = (64, 48)
FRAMES = 10


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return str(make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0))


def run_eval(bag, out, model, *extra):
    return main([str(bag), "-o", str(out), "--model", model, "--steps", "2", "--device", "cpu", *extra])


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_png(path):
    image = cv2.imread(str(path))
    assert image is not None, f"{path} is not a readable image"
    return image


def test_eval_from_instruction_topic(tmp_path, tiny_model):
    written = write_world_bag(tmp_path / "bag", seeds=(0, 1), regime="head", size=SIZE, num_frames=FRAMES,
                              storage="sqlite3")
    out = tmp_path / "out"
    assert run_eval(tmp_path / "bag", out, tiny_model) == 0

    rows = read_csv(out / "progress.csv")
    assert tuple(rows[0]) == CSV_COLUMNS
    assert len(rows) == 2 * FRAMES
    for episode in (0, 1):
        ep_rows = [r for r in rows if r["episode"] == str(episode)]
        assert [int(r["frame"]) for r in ep_rows] == list(range(FRAMES))
        t = [float(r["t"]) for r in ep_rows]
        assert t[0] == 0.0 and all(a < b for a, b in zip(t, t[1:]))
        stamps = [int(round(float(r["stamp"]) * 1e9)) for r in ep_rows]
        assert abs(stamps[0] - written[episode].start_ns) < 1000
        for key in ("progress", "raw_progress", "similarity"):
            assert all(0.0 <= float(r[key]) <= 1.0 for r in ep_rows)
        assert {r["reached"] for r in ep_rows} <= {"True", "False"}

    for episode in (0, 1):
        figure = read_png(out / f"episode_{episode:03d}.png")
        assert figure.shape[0] >= 400 and figure.shape[1] >= 600
        assert figure.std() > 10  # not a blank canvas
        assert read_png(out / f"episode_{episode:03d}_goal.png").shape == (SIZE[1], SIZE[0], 3)

    summary = json.loads((out / "summary.json").read_text())
    assert summary["error"] is None and summary["skipped_messages"] == 0
    assert summary["storage"] == "sqlite3" and summary["camera_topic"] == "/camera/image_raw"
    assert [e["instruction"] for e in summary["episodes"]] == [w.instruction for w in written]
    for episode in summary["episodes"]:
        assert episode["status"] == "done" and episode["frames"] == FRAMES
        assert -1.0 <= episode["voc"] <= 1.0
        progress = [float(r["progress"]) for r in rows if r["episode"] == str(episode["episode"])]
        assert episode["final_progress"] == pytest.approx(progress[-1], abs=1e-5)
    markdown = (out / "summary.md").read_text()
    assert "| episode | instruction |" in markdown and "VOC" in markdown
    for w in written:
        assert f"| {w.instruction} |" in markdown
    assert "[episode_001.png](episode_001.png)" in markdown


def test_eval_episode_file_compressed_mcap_with_bad_messages(tmp_path, tiny_model):
    """An episode file over a CompressedImage mcap bag with broken messages: they are skipped and counted."""
    episode = generate_episode(seed=2, regime="fixed", split="test", size=SIZE, num_frames=FRAMES)
    period = 100_000_000
    with BagWriter(tmp_path / "bag", storage="mcap") as writer:
        writer.add_topic("/cam/compressed", "sensor_msgs/msg/CompressedImage")
        writer.add_topic("/odom_text", "std_msgs/msg/String")  # a String topic that is not used
        for i, rgb in enumerate(episode.frames):
            t = DEFAULT_START_NS + i * period
            writer.write("/cam/compressed", t, compressed_image_message(encode_rgb(rgb, "png"), "png", t))
        t = DEFAULT_START_NS + 3 * period + 1
        writer.write("/cam/compressed", t, compressed_image_message(b"\x89PNG broken", "png", t))
        writer.write_raw("/cam/compressed", t + 1, b"\x00\x01\x00\x00not cdr")
    (tmp_path / "episodes.yaml").write_text(
        f"- {{start: 0.15, end: 0.75, instruction: {episode.instruction}}}\n"  # frames 2..7
        f"- {{start: 0.75, instruction: put it back}}\n"  # frames 8, 9
    )
    out = tmp_path / "out"
    assert run_eval(tmp_path / "bag", out, tiny_model, "--episodes", str(tmp_path / "episodes.yaml")) == 0

    rows = read_csv(out / "progress.csv")
    assert [r["episode"] for r in rows] == ["0"] * 6 + ["1"] * 2
    assert float(rows[0]["t"]) == pytest.approx(0.05)  # first frame after the episode start
    summary = json.loads((out / "summary.json").read_text())
    assert summary["skipped_messages"] == 2
    assert [e["skipped_messages"] for e in summary["episodes"]] == [2, 0]
    assert any("compressed" in reason.lower() or "decode" in reason for reason in summary["skipped_reasons"])
    assert any("do not decode" in reason for reason in summary["skipped_reasons"])
    markdown = (out / "summary.md").read_text()
    assert "skipped messages: 2" in markdown and "## Skipped messages" in markdown
    assert (out / "episode_000.png").exists() and (out / "episode_001.png").exists()
    # The start frame of episode 0 is frame 2 of the bag; its goal has the frame's size.
    assert read_png(out / "episode_000_goal.png").shape == (SIZE[1], SIZE[0], 3)


def test_eval_corrupt_bag_keeps_what_it_wrote(tmp_path, tiny_model):
    from test_bag_io import corrupt_sqlite_after

    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, (SIZE[1], SIZE[0], 3), dtype=np.uint8) for _ in range(FRAMES)]
    write_frames_bag(tmp_path / "bag", [("stack the blocks", frames)], storage="sqlite3")
    corrupt_sqlite_after(tmp_path / "bag", frames[6])
    out = tmp_path / "out"
    assert run_eval(tmp_path / "bag", out, tiny_model) == 1
    rows = read_csv(out / "progress.csv")
    assert len(rows) == 6
    summary = json.loads((out / "summary.json").read_text())
    assert "reading stopped after" in summary["error"]
    assert summary["episodes"][0]["frames"] == 6 and summary["episodes"][0]["status"] == "interrupted"
    assert "The run stopped early" in (out / "summary.md").read_text()
    assert (out / "episode_000.png").exists()


@pytest.fixture
def bad_bags(tmp_path):
    """name -> (bag path, expected phrase in the error)."""
    bags = {}
    (tmp_path / "not_a_bag").mkdir()
    (tmp_path / "not_a_bag" / "readme.txt").write_text("hi")
    bags["not a bag"] = (tmp_path / "not_a_bag", "it has no metadata.yaml")
    for name, storage, old, new, phrase in [
        ("unknown storage", "mcap", "storage_identifier: mcap", "storage_identifier: rosbag_v9",
         "names storage plugin 'rosbag_v9', which is not supported"),
        ("empty storage id", "sqlite3", "storage_identifier: sqlite3", "storage_identifier: ''",
         "empty storage_identifier"),
    ]:
        path = tmp_path / name.replace(" ", "_")
        write_world_bag(path, seeds=(0,), size=SIZE, num_frames=3, storage=storage)
        meta = path / "metadata.yaml"
        meta.write_text(meta.read_text().replace(old, new))
        bags[name] = (path, phrase)
    for storage in ("mcap", "sqlite3"):
        path = tmp_path / f"truncated_{storage}"
        write_world_bag(path, seeds=(0,), size=SIZE, num_frames=3, storage=storage)
        data = next(p for p in path.iterdir() if p.suffix in (".mcap", ".db3"))
        os.truncate(data, data.stat().st_size // 2)
        bags[f"truncated {storage}"] = (path, "is truncated")
    with BagWriter(tmp_path / "no_image", storage="mcap") as writer:
        writer.add_topic("/instruction", "std_msgs/msg/String")
        writer.add_topic("/scan", "sensor_msgs/msg/LaserScan")
    bags["no image topic"] = (tmp_path / "no_image",
                              "has no image topic (sensor_msgs/msg/Image or sensor_msgs/msg/CompressedImage); "
                              "its topics: /instruction (std_msgs/msg/String, 0 messages), /scan")
    with BagWriter(tmp_path / "no_episodes", storage="mcap") as writer:
        writer.add_topic("/cam", "sensor_msgs/msg/Image")
        writer.write("/cam", DEFAULT_START_NS, image_message(np.zeros((8, 8, 3), np.uint8), DEFAULT_START_NS))
    bags["no episodes"] = (tmp_path / "no_episodes", "no episodes: give --episodes FILE or --instruction-topic")
    return bags


@pytest.mark.parametrize("case", ["not a bag", "unknown storage", "empty storage id", "truncated mcap",
                                  "truncated sqlite3", "no image topic", "no episodes"])
def test_bad_bag_gives_a_clear_error(tmp_path, bad_bags, case, capsys):
    path, phrase = bad_bags[case]
    out = tmp_path / "out"
    assert main([str(path), "-o", str(out), "--model", str(tmp_path / "never_loaded")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("actedit-eval-bag: error: ") and phrase in err
    assert "Traceback" not in err
    summary = json.loads((out / "summary.json").read_text())  # the summary is written even then
    assert phrase in summary["error"]


def test_cli_subprocess_reports_without_traceback(tmp_path, bad_bags):
    path, phrase = bad_bags["truncated mcap"]
    result = subprocess.run([sys.executable, "-m", "actedit_ros.bag.eval_bag", str(path), "-o", str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert phrase in result.stderr and "Traceback" not in result.stderr
    help_text = subprocess.run([sys.executable, "-m", "actedit_ros.bag.eval_bag", "--help"], capture_output=True,
                               text=True, timeout=120).stdout
    for flag in ("--camera-topic", "--episodes", "--instruction-topic", "--times", "--model", "--steps", "--seed",
                 "--device", "--reached-threshold"):
        assert flag in help_text


def test_eval_recorded_progress_of_the_node(tmp_path):
    """--recorded-progress: a bag like actedit-record-bag makes of the node's outputs; no model runs."""
    from actedit_ros.bag import get_bag_typestore
    from actedit_ros.bag.write import header_message

    typestore = get_bag_typestore()
    Progress, GoalImage = typestore.types["actedit_ros/msg/Progress"], typestore.types["actedit_ros/msg/GoalImage"]
    episode = generate_episode(seed=4, regime="fixed", split="test", size=SIZE, num_frames=6)
    period = 100_000_000
    values = [0.0, 0.1, 0.3, 0.2, 0.85, 0.9]
    with BagWriter(tmp_path / "bag", storage="mcap") as writer:
        writer.add_topic("/goal_node/goal", "actedit_ros/msg/GoalImage")
        writer.add_topic("/goal_node/progress", "actedit_ros/msg/Progress")
        writer.add_topic("/camera/image_raw", "sensor_msgs/msg/Image")
        t0 = DEFAULT_START_NS
        writer.write("/goal_node/goal", t0, GoalImage(
            header=header_message(t0), goal_id="g-7", instruction=episode.instruction, seed=0, prediction_time=0.5,
            start_image=image_message(episode.frames[0], t0), goal_image=image_message(episode.frames[-1], t0)))
        for i, (rgb, value) in enumerate(zip(episode.frames, values)):
            t = t0 + (i + 1) * period
            writer.write("/camera/image_raw", t, image_message(rgb, t))
            writer.write("/goal_node/progress", t + 1, Progress(
                header=header_message(t), goal_id="g-7", instruction=episode.instruction, progress=value,
                raw_progress=value, similarity=value, reached=value > 0.8, registered=i != 3, stale=False,
                frame_age=0.01))
        t = t0 + 8 * period
        writer.write("/goal_node/progress", t, Progress(
            header=header_message(t), goal_id="g-7", instruction=episode.instruction, progress=0.9, raw_progress=0.9,
            similarity=0.9, reached=True, registered=True, stale=True, frame_age=0.3))
    out = tmp_path / "out"
    assert main([str(tmp_path / "bag"), "-o", str(out), "--recorded-progress"]) == 0
    rows = read_csv(out / "progress.csv")
    assert [float(r["progress"]) for r in rows] == pytest.approx(values)
    assert [r["registered"] for r in rows] == ["True", "True", "True", "False", "True", "True"]
    summary = json.loads((out / "summary.json").read_text())
    (result,) = summary["episodes"]
    assert result["instruction"] == episode.instruction and result["frames"] == 6
    assert result["stale_messages"] == 1 and result["unregistered_frames"] == 1
    assert result["voc"] == pytest.approx(0.942857, abs=1e-5)  # Spearman of values vs order
    assert result["reached_t"] == pytest.approx(0.5, abs=1e-6)  # 5th progress message, 0.5 s after the goal
    assert result["final_progress"] == pytest.approx(0.9)
    assert read_png(out / "episode_000.png").std() > 10
    assert "g-7 (1 stale repeats)" in (out / "summary.md").read_text()


def test_eval_oracle_goal_needs_no_model(tmp_path):
    """--oracle-goal: the episode's last frame is the goal, so the last frame scores raw progress near 1 (exactly 1
    with the pixel scorer)."""
    written = write_world_bag(tmp_path / "bag", seeds=(6,), regime="fixed", size=SIZE, num_frames=FRAMES,
                              storage="sqlite3")
    out = tmp_path / "out"
    assert main([str(tmp_path / "bag"), "-o", str(out), "--oracle-goal", "--model", str(tmp_path / "not_there")]) == 0
    rows = read_csv(out / "progress.csv")
    assert len(rows) == FRAMES
    assert float(rows[-1]["raw_progress"]) > 0.9
    assert float(rows[0]["raw_progress"]) < 0.1
    assert main([str(tmp_path / "bag"), "-o", str(out / "pixel"), "--oracle-goal", "--progress-scorer", "pixel"]) == 0
    rows = read_csv(out / "pixel" / "progress.csv")
    assert float(rows[-1]["raw_progress"]) == pytest.approx(1.0, abs=1e-3)
    assert float(rows[0]["raw_progress"]) == pytest.approx(0.0, abs=1e-3)
    last = generate_episode(seed=6, regime="fixed", split="test", size=SIZE, num_frames=FRAMES).frames[-1]
    np.testing.assert_array_equal(cv2.cvtColor(read_png(out / "episode_000_goal.png"), cv2.COLOR_BGR2RGB), last)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["model"].startswith("none: --oracle-goal")
    assert summary["episodes"][0]["instruction"] == written[0].instruction
