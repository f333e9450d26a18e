"""actedit-make-dataset on short videos written here with OpenCV: EPIC-KITCHENS and generic annotations, ready pairs,
bad rows reported by line, the split by video, and resuming."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from actedit_ros.training.data import EditPairDataset, read_index
from actedit_ros.training.make_dataset import MakeDatasetError, main, make_dataset, split_videos

FRAMES, WIDTH, HEIGHT, FPS = 20, 64, 48, 10.0


def write_video(path: Path, frames: int = FRAMES) -> Path:
    """Frame i is a uniform grey of level 10 * i, so a read frame tells its index."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((HEIGHT, WIDTH, 3), 10 * i, np.uint8))
    writer.release()
    return path


def frame_level(path: Path) -> int:
    """The index of the frame an extracted image came from."""
    return int(round(cv2.imread(str(path)).mean() / 10))


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def epic(tmp_path_factory):
    root = tmp_path_factory.mktemp("epic")
    videos = root / "videos"
    write_video(videos / "P01" / "P01_01.MP4")  # <participant>/<video_id>.MP4
    write_video(videos / "P02_03.MP4")  # <video_id>.MP4
    (videos / "P03").mkdir()
    (videos / "P03" / "P03_04.MP4").write_bytes(b"this is not a video")
    header = ["narration_id", "participant_id", "video_id", "narration_timestamp", "start_timestamp",
              "stop_timestamp", "start_frame", "stop_frame", "narration", "verb", "verb_class", "noun", "noun_class"]
    rows = [
        ["P01_01_0", "P01", "P01_01", "", "", "", 1, 6, "open drawer", "open", 3, "drawer", 8],  # line 2
        ["P01_01_1", "P01", "P01_01", "", "", "", 8, 20, "close drawer", "close", 4, "drawer", 8],  # line 3
        ["P02_03_0", "P02", "P02_03", "", "", "", 3, 15, "take cup", "take", 0, "cup", 13],  # line 4
        ["P02_09_0", "P02", "P02_09", "", "", "", 1, 5, "wash pan", "wash", 2, "pan", 9],  # line 5: missing video
        ["P01_01_2", "P01", "P01_01", "", "", "", 10, 25, "put cup", "put", 1, "cup", 13],  # line 6: past the end
        ["P01_01_3", "P01", "P01_01", "", "", "", "x", 5, "cut onion", "cut", 7, "onion", 20],  # line 7: bad number
        ["P03_04_0", "P03", "P03_04", "", "", "", 1, 5, "pour water", "pour", 9, "water", 27],  # line 8: corrupt
        ["P02_03_1", "P02", "P02_03", "", "", "", 12, 12, "stir pot", "stir", 5, "pot", 30],  # line 9: no length
    ]
    return write_csv(root / "EPIC_100_train.csv", header, rows), videos


def test_epic_csv_first_and_last_frames_bad_rows_and_resume(tmp_path, epic):
    csv_path, videos = epic
    out = tmp_path / "dataset"
    messages = []
    report = make_dataset(out, epic_csv=csv_path, videos_dir=videos, size=24, test_fraction=0.5, progress=False,
                          warn=messages.append)
    assert report.written == 3 and report.already_done == 0
    skipped = dict(report.skipped)
    assert sorted(skipped) == [5, 6, 7, 8, 9]
    assert "P02_09 not found" in skipped[5]
    assert "past the end" in skipped[6] and "20 frames" in skipped[6]
    assert "start_frame is not a number" in skipped[7]
    assert "cannot open video" in skipped[8] or "cannot read frame" in skipped[8]
    assert "before it starts" in skipped[9]
    assert all(any(message.startswith(f"line {line}:") for message in messages) for line in skipped)

    pairs = read_index(out)
    by_instruction = {p.instruction: p for p in pairs}
    # EPIC frames are 1-based: start_frame 1 is the video's frame 0, stop_frame 20 its last frame (19).
    expected = {"open drawer": (0, 5), "close drawer": (7, 19), "take cup": (2, 14)}
    for instruction, (first, last) in expected.items():
        pair = by_instruction[instruction]
        assert (frame_level(pair.input_image), frame_level(pair.edited_image)) == (first, last), instruction
        assert cv2.imread(str(pair.input_image)).shape[:2] == (24, 32)  # shorter side 24, aspect kept
    splits = {}
    for pair in pairs:
        splits.setdefault(pair.video, set()).add(pair.split)
    assert all(len(s) == 1 for s in splits.values()) and {next(iter(s)) for s in splits.values()} == {"train", "test"}

    # Re-running does nothing new; after an interrupted run (index cut short) only the missing pair is redone.
    index_before = (out / "index.jsonl").read_text()
    again = make_dataset(out, epic_csv=csv_path, videos_dir=videos, size=24, test_fraction=0.5, progress=False,
                         warn=messages.append)
    assert (again.written, again.already_done, len(again.skipped)) == (0, 3, 5)
    assert (out / "index.jsonl").read_text() == index_before
    (out / "index.jsonl").write_text("".join(index_before.splitlines(keepends=True)[:2]))
    resumed = make_dataset(out, epic_csv=csv_path, videos_dir=videos, size=24, test_fraction=0.5, progress=False,
                           warn=messages.append)
    assert (resumed.written, resumed.already_done) == (1, 2)
    assert (out / "index.jsonl").read_text() == index_before

    with pytest.raises(MakeDatasetError, match="other settings.*size: 24 -> 32"):
        make_dataset(out, epic_csv=csv_path, videos_dir=videos, size=32, test_fraction=0.5, progress=False)


def test_epic_timestamps_instead_of_frames(tmp_path):
    write_video(tmp_path / "videos" / "P05" / "P05_01.MP4")
    header = ["participant_id", "video_id", "start_timestamp", "stop_timestamp", "start_frame", "stop_frame",
              "narration"]
    rows = [["P05", "P05_01", "00:00:00.30", "00:00:01.50", 999, 999, "open fridge"],
            ["P05", "P05_01", "00:00:00.30", "00:00:02.00", 999, 999, "close fridge"],  # the very end: last frame
            ["P05", "P05_01", "00:00:0x", "00:00:01.00", 1, 2, "wipe counter"]]
    csv_path = write_csv(tmp_path / "epic.csv", header, rows)
    report = make_dataset(tmp_path / "out", epic_csv=csv_path, videos_dir=tmp_path / "videos", size=0,
                          epic_timestamps=True, progress=False, warn=lambda m: None)
    assert report.written == 2 and report.skipped == [(4, "start_timestamp is not a timestamp (HH:MM:SS.ss): "
                                                          "'00:00:0x'")]
    pairs = {p.instruction: p for p in read_index(tmp_path / "out")}
    assert (frame_level(pairs["open fridge"].input_image), frame_level(pairs["open fridge"].edited_image)) == (3, 15)
    assert frame_level(pairs["close fridge"].edited_image) == FRAMES - 1


def test_generic_segments_in_seconds_and_frames(tmp_path):
    write_video(tmp_path / "clips" / "a.mp4")
    write_video(tmp_path / "clips" / "b.mp4")
    annotations = tmp_path / "segments.jsonl"
    rows = [
        {"video": "clips/a.mp4", "start": 0.5, "end": 2.0, "instruction": "push the box"},  # 2.0 s = the end
        {"video": "clips/b.mp4", "start_frame": 2, "end_frame": 9, "instruction": "lift the lid"},
        {"video": "clips/missing.mp4", "start": 0, "end": 1, "instruction": "open it"},
    ]
    annotations.write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    report = make_dataset(tmp_path / "out", segments=annotations, time_unit="seconds", size=0, progress=False,
                          warn=lambda m: None)
    assert report.written == 2 and [line for line, _ in report.skipped] == [3, 4]
    pairs = {p.instruction: p for p in read_index(tmp_path / "out")}
    assert (frame_level(pairs["push the box"].input_image), frame_level(pairs["push the box"].edited_image)) == (5, 19)
    assert (frame_level(pairs["lift the lid"].input_image), frame_level(pairs["lift the lid"].edited_image)) == (2, 9)
    assert cv2.imread(str(pairs["lift the lid"].input_image)).shape[:2] == (HEIGHT, WIDTH)  # size 0 = original
    # The trainer reads what the builder writes.
    dataset = EditPairDataset(tmp_path / "out", 16, split=None)
    assert dataset[0]["input_pixels"].shape == (3, 16, 16)


def test_ready_pairs_split_by_video_deterministically(tmp_path):
    images = tmp_path / "pairs"
    images.mkdir()
    rows = []
    for i in range(20):
        for tag in ("a", "b"):
            cv2.imwrite(str(images / f"{i}{tag}.png"), np.full((30, 40, 3), 5 * i, np.uint8))
        rows.append([f"pairs/{i}a.png", f"pairs/{i}b.png", f"do thing {i}", f"video{i // 2}"])
    rows.append(["pairs/none.png", "pairs/0b.png", "broken", "video0"])
    listing = write_csv(tmp_path / "pairs.csv", ["input_image", "edited_image", "instruction", "video"], rows)
    report = make_dataset(tmp_path / "out", pairs=listing, size=20, test_fraction=0.3, seed=3, progress=False,
                          warn=lambda m: None)
    assert report.written == 20 and report.skipped[0][0] == 22 and "does not exist" in report.skipped[0][1]
    pairs = read_index(tmp_path / "out")
    test_videos = {p.video for p in pairs if p.split == "test"}
    assert test_videos == split_videos([f"video{i}" for i in range(10)], 0.3, 3) and len(test_videos) == 3
    assert not test_videos & {p.video for p in pairs if p.split == "train"}
    assert split_videos([f"video{i}" for i in range(10)], 0.3, 4) != test_videos  # the seed matters


def test_cli_summary_and_errors(tmp_path, epic, capsys):
    csv_path, videos = epic
    code = main(["--epic-csv", str(csv_path), "--videos-dir", str(videos), "--out", str(tmp_path / "o"),
                 "--size", "16", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0 and "3 pairs written, 0 already present, 5 rows skipped" in captured.out
    assert "line 5: skipped" in captured.err
    assert main(["--epic-csv", str(tmp_path / "nope.csv"), "--videos-dir", str(videos), "--out",
                 str(tmp_path / "o2")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["--epic-csv", str(csv_path), "--out", str(tmp_path / "o3")]) == 2
    assert "needs --videos-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and "--test-fraction" in capsys.readouterr().out
