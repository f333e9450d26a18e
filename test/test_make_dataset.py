"""actedit-make-dataset on short videos written here with OpenCV: EPIC-KITCHENS and generic annotations, ready pairs,
bad rows reported by line, the split by video, resuming, and the frames --keep-frames keeps for the progress model
(read back with load_progress_records)."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from actedit_ros.training.data import DatasetError, EditPairDataset, load_progress_records, read_index
from actedit_ros.training.make_dataset import MakeDatasetError, main, make_dataset, split_videos
from actedit_ros.training.video_frames import SEEK_GAP

FRAMES, WIDTH, HEIGHT, FPS = 20, 64, 48, 10.0


def write_video(path: Path, frames: int = FRAMES, step: int = 10, first: int = 0) -> Path:
    """Frame i is a uniform grey of level first + step * i, so a read frame tells its index (frame_level)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (WIDTH, HEIGHT))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((HEIGHT, WIDTH, 3), first + step * i, np.uint8))
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


def index_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]


@pytest.fixture()
def clips(tmp_path):
    write_video(tmp_path / "clips" / "a.mp4")
    write_video(tmp_path / "clips" / "b.mp4")
    annotations = tmp_path / "segments.jsonl"
    rows = [{"video": "clips/a.mp4", "start_frame": 2, "end_frame": 14, "instruction": "push the box"},
            {"video": "clips/b.mp4", "start_sec": 0.5, "end_sec": 2.0, "instruction": "lift the lid"},  # frames 5..19
            {"video": "clips/a.mp4", "start_frame": 16, "end_frame": 18, "instruction": "tap it"}]  # 3 frames < K
    annotations.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return annotations


def test_keep_frames_evenly_spaced_in_time_with_their_progress(tmp_path, clips):
    out = tmp_path / "out"
    report = make_dataset(out, segments=clips, size=24, image_format="jpg", keep_frames=5, test_fraction=0,
                          progress=False, warn=lambda m: None)
    assert (report.written, report.filled, report.skipped) == (3, 0, [])
    expected = {"push the box": [2, 5, 8, 11, 14], "lift the lid": [5, 9, 12, 16, 19], "tap it": [16, 17, 17, 18, 18]}
    rows = {row["instruction"]: row for row in index_rows(out)}
    records = {record.instruction: record for record in load_progress_records(out, split=None)}
    for instruction, indices in expected.items():
        row, record = rows[instruction], records[instruction]
        assert row["frames"] == [f"images/{row['id']}_f{i:02d}.jpg" for i in range(5)]
        first, last = indices[0], indices[-1]
        assert row["frame_progress"] == pytest.approx([(i - first) / (last - first) for i in indices], abs=1e-6)
        assert record.frame_progress == row["frame_progress"] and record.negative_frames == []
        assert [frame_level(path) for path in record.frames] == indices, instruction  # time order, right frames
        assert (frame_level(record.start), frame_level(record.end)) == (first, last)
        assert {cv2.imread(str(path)).shape for path in [record.start, *record.frames]} == {(24, 32, 3)}
    # The editor's loaders ignore the new keys.
    assert {pair.instruction for pair in read_index(out)} == set(expected)
    assert EditPairDataset(out, 16, split=None)[0]["input_pixels"].shape == (3, 16, 16)


def test_keep_frames_far_apart_are_seeked_to_exactly(tmp_path):
    video = write_video(tmp_path / "long.mp4", frames=110, step=2, first=20)
    capture, levels = cv2.VideoCapture(str(video)), []  # every frame's mean, decoded in order
    while (frame := capture.read()[1]) is not None:
        levels.append(frame.mean())
    capture.release()
    assert len(levels) == 110 and np.diff(levels).min() > 0.5  # each frame tells its index

    def index_of(path: Path) -> int:
        return int(np.argmin(np.abs(np.array(levels) - cv2.imread(str(path)).mean())))

    annotations = tmp_path / "segments.csv"
    write_csv(annotations, ["video", "start", "end", "instruction"], [["long.mp4", 0, 109, "wipe the table"]])
    for count, gap in ((4, 36), (7, 18)):  # past SEEK_GAP (seeks) and within it (grabs)
        assert (gap > SEEK_GAP) == (count == 4)
        out = tmp_path / f"k{count}"
        make_dataset(out, segments=annotations, size=0, keep_frames=count, progress=False, warn=lambda m: None)
        record, = load_progress_records(out)
        expected = [math.floor(i * 109 / (count - 1) + 0.5) for i in range(count)]  # halves round up
        assert [index_of(path) for path in record.frames] == expected
        assert record.frame_progress == pytest.approx([i / 109 for i in expected], abs=1e-6)


def test_keep_frames_fills_in_an_older_dataset_and_resumes(tmp_path, epic):
    csv_path, videos = epic
    out = tmp_path / "dataset"
    settings = dict(epic_csv=csv_path, videos_dir=videos, size=24, test_fraction=0.5, progress=False,
                    warn=lambda m: None)
    make_dataset(out, **settings)
    plain = index_rows(out)
    assert not any("frames" in row for row in plain)
    with pytest.raises(DatasetError, match="no frames.*--keep-frames K"):
        load_progress_records(out, split=None)

    filled = make_dataset(out, keep_frames=3, **settings)
    assert (filled.written, filled.already_done, filled.filled) == (0, 0, 3)
    assert "3 given their frames" in filled.summary()
    rows = index_rows(out)
    assert [row["id"] for row in rows] == [row["id"] for row in plain]  # one row per pair, in annotation order
    assert [{k: v for k, v in row.items() if k not in ("frames", "frame_progress")} for row in rows] == plain
    levels = {r.instruction: [frame_level(p) for p in r.frames] for r in load_progress_records(out, split=None)}
    assert levels == {"open drawer": [0, 3, 5], "close drawer": [7, 13, 19], "take cup": [2, 8, 14]}
    assert json.loads((out / "make_dataset.json").read_text())["keep_frames"] == 3

    full = (out / "index.jsonl").read_text()
    again = make_dataset(out, keep_frames=3, **settings)
    assert (again.written, again.already_done, again.filled) == (0, 3, 0)
    assert (out / "index.jsonl").read_text() == full
    # Interrupted while filling in: the old rows plus the new row of the first pair; the rest is filled in once.
    (out / "index.jsonl").write_text("".join(json.dumps(row) + "\n" for row in plain) + full.splitlines()[0] + "\n")
    resumed = make_dataset(out, keep_frames=3, **settings)
    assert (resumed.written, resumed.already_done, resumed.filled) == (0, 1, 2)
    assert (out / "index.jsonl").read_text() == full
    # Interrupted while building: only the missing pair is redone.
    (out / "index.jsonl").write_text("".join(full.splitlines(keepends=True)[:2]))
    resumed = make_dataset(out, keep_frames=3, **settings)
    assert (resumed.written, resumed.already_done) == (1, 2) and (out / "index.jsonl").read_text() == full

    for other in (4, 0):
        with pytest.raises(MakeDatasetError, match="built with --keep-frames 3"):
            make_dataset(out, keep_frames=other, **settings)


def test_keep_frames_refusals_name_the_flag(tmp_path, clips, capsys):
    listing = write_csv(tmp_path / "pairs.csv", ["input_image", "edited_image", "instruction"], [["a.png", "b.png", "x"]])
    with pytest.raises(MakeDatasetError, match="--keep-frames needs videos"):
        make_dataset(tmp_path / "p", pairs=listing, keep_frames=4, progress=False)
    for bad in (1, -2):
        with pytest.raises(MakeDatasetError, match="--keep-frames must be 0 .off. or at least 2"):
            make_dataset(tmp_path / "s", segments=clips, keep_frames=bad, progress=False)
    assert main(["--pairs", str(listing), "--out", str(tmp_path / "p2"), "--keep-frames", "3"]) == 2
    assert "--keep-frames needs videos" in capsys.readouterr().err
    assert main(["--segments", str(clips), "--out", str(tmp_path / "c"), "--keep-frames", "2", "--no-progress"]) == 0
    assert all(row["frame_progress"] == [0.0, 1.0] for row in index_rows(tmp_path / "c"))


def test_load_progress_records_negatives_and_bad_rows(tmp_path, clips):
    out = tmp_path / "out"
    make_dataset(out, segments=clips, size=0, keep_frames=3, test_fraction=0, progress=False, warn=lambda m: None)
    rows = index_rows(out)

    def rewrite(changed: dict) -> None:
        (out / "index.jsonl").write_text("".join(json.dumps({**row, **changed} if i == 1 else row) + "\n"
                                                 for i, row in enumerate(rows)))

    rewrite({"negative_frames": rows[0]["frames"]})  # the world's writer adds this key
    record = load_progress_records(out, split="train")[1]
    assert record.negative_frames == [out / name for name in rows[0]["frames"]]
    assert record.start == out / rows[1]["input_image"] and record.end == out / rows[1]["edited_image"]
    with pytest.raises(DatasetError, match="no records in the 'test' split"):
        load_progress_records(out, split="test")
    bad_rows = [({"frame_progress": [0.0, 0.6, 0.4]}, "index.jsonl:2: frame_progress must not decrease"),
                ({"frame_progress": [0.0, 1.0]}, "list of 3 numbers"),
                ({"frame_progress": [0.0, 0.5, 1.5]}, r"in \[0, 1\]"),
                ({"frames": rows[1]["frames"][:1], "frame_progress": [0.0]}, "at least 2 images"),
                ({"negative_frames": ["images/gone.png"]}, "negative_frames image .*gone.png does not exist"),
                ({"frames": "images/x.png"}, "frames must be a list of image paths")]
    for changed, message in bad_rows:
        rewrite(changed)
        with pytest.raises(DatasetError, match=message):
            load_progress_records(out, split=None)
