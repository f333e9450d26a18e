"""actedit-make-dataset: turn action-segment annotations (or ready image pairs) into a training dataset folder.

Three kinds of input, one output format (``<out>/index.jsonl`` + ``<out>/images/``, see
:mod:`actedit_ros.training.data`):

- ``--epic-csv``: an EPIC-KITCHENS-100 annotation CSV (``video_id``, ``start_frame``, ``stop_frame``, ``narration``,
  ``participant_id``, ...). Videos are looked up under ``--videos-dir`` as ``<participant>/<video_id>.MP4``,
  ``<participant>/videos/<video_id>.MP4`` or ``<video_id>.MP4`` (``.mp4`` too). EPIC frame numbers are 1-based
  (frame 1 is the video's first frame); ``--frame-base`` says otherwise.
- ``--segments``: a generic CSV or JSONL, one segment per row: ``video`` (path, relative to ``--videos-dir`` or to
  the annotation file), ``start`` and ``end`` (in ``--time-unit`` frames or seconds; ``start_frame``/``end_frame``
  or ``start_sec``/``end_sec`` name the unit explicitly) and ``instruction``.
- ``--pairs``: a CSV or JSONL of ready pairs: ``input_image``, ``edited_image``, ``instruction`` and optionally
  ``video`` (the split group; default: the pair itself).

For a segment, the first and last frame (both inclusive ends) are read with OpenCV, resized so the shorter side is
``--size`` pixels (aspect kept), and written as PNG (or JPEG). The train/test split is by video: the videos are
ordered by a seeded hash and the first ``--test-fraction`` of them are test, so no video is on both sides and the
split is the same on every run. Bad rows (missing video, segment past the end of the video, unreadable frame,
malformed values) are reported with their line number and skipped. Re-running with the same settings resumes:
pairs already in the index are not redone.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from .data import INDEX_NAME

SETTINGS_NAME = "make_dataset.json"
VIDEO_SUFFIXES = (".MP4", ".mp4")


class MakeDatasetError(ValueError):
    """The inputs cannot be turned into a dataset at all (not one bad row: those are skipped)."""


class BadRow(Exception):
    """One annotation row cannot be used; the message says why."""


@dataclass
class Segment:
    """One row to turn into a pair: frames of a video, or two ready images."""

    line: int
    instruction: str
    video: str  # the split group (video id)
    video_path: Path | None = None
    start: float | None = None
    end: float | None = None
    unit: str = "frames"  # "frames" (already 0-based) or "seconds"
    input_image: Path | None = None
    edited_image: Path | None = None
    extra: dict = field(default_factory=dict)

    @property
    def pair_id(self) -> str:
        digest = hashlib.blake2b(self.instruction.encode(), digest_size=4).hexdigest()
        stem = re.sub(r"[^A-Za-z0-9_-]+", "-", self.video).strip("-")[:60] or "pair"
        if self.input_image is None:
            return f"{stem}_{self.start:g}-{self.end:g}{'s' if self.unit == 'seconds' else ''}_{digest}"
        path_digest = hashlib.blake2b(f"{self.input_image}|{self.edited_image}".encode(), digest_size=4).hexdigest()
        return f"{stem}_{path_digest}_{digest}"


@dataclass
class Report:
    """What a run did."""

    written: int = 0
    already_done: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.written} pairs written, {self.already_done} already present, {len(self.skipped)} rows skipped")


# ------------------------------------------------------------------------------------------------------- reading rows
def read_rows(path: Path) -> list[tuple[int, dict]]:
    """(line number, row dict) of a CSV (header line 1) or JSONL file; malformed JSON lines become BadRow markers."""
    if not path.is_file():
        raise MakeDatasetError(f"annotation file {path} does not exist")
    rows = []
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
                except ValueError as err:
                    rows.append((number, {"__error__": f"not a JSON object ({err})"}))
                    continue
                rows.append((number, row))
        return rows
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames:
            raise MakeDatasetError(f"{path} is empty (expected a CSV with a header line)")
        line = 1
        for row in reader:
            rows.append((line + 1, row))
            line = reader.line_num
    return rows


def _number(row: dict, key: str) -> float:
    value = row.get(key)
    if value in (None, ""):
        raise BadRow(f"no {key}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise BadRow(f"{key} is not a number: {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise BadRow(f"{key} must be a finite number >= 0, got {value!r}")
    return number


def _instruction(row: dict, *keys: str) -> str:
    for key in keys:
        text = " ".join(str(row.get(key) or "").split())
        if text:
            return text
    raise BadRow(f"no instruction (column {' or '.join(keys)})")


def find_epic_video(videos_dir: Path, video_id: str, participant: str | None) -> Path:
    """The video file of an EPIC-KITCHENS video id under the accepted layouts; BadRow if none exists."""
    participant = participant or video_id.split("_")[0]
    folders = [videos_dir / participant, videos_dir / participant / "videos", videos_dir]
    for folder in folders:
        for suffix in VIDEO_SUFFIXES:
            candidate = folder / f"{video_id}{suffix}"
            if candidate.is_file():
                return candidate
    raise BadRow(f"video {video_id} not found under {videos_dir} (looked for <participant>/{video_id}.MP4, "
                 f"<participant>/videos/{video_id}.MP4 and {video_id}.MP4)")


def parse_timestamp(value: str | None, key: str) -> float:
    """Seconds of an EPIC-KITCHENS timestamp "HH:MM:SS.ss" (or "MM:SS.ss", or plain seconds)."""
    text = str(value or "").strip()
    if not text:
        raise BadRow(f"no {key}")
    try:
        seconds = 0.0
        for part in text.split(":"):
            seconds = seconds * 60 + float(part)
    except ValueError:
        raise BadRow(f"{key} is not a timestamp (HH:MM:SS.ss): {text!r}") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise BadRow(f"{key} must be a time >= 0, got {text!r}")
    return seconds


def epic_segments(csv_path: Path, videos_dir: Path, frame_base: int,
                  use_timestamps: bool = False) -> list[Segment | tuple[int, str]]:
    """Segments of an EPIC-KITCHENS-100 CSV; a row that cannot even be parsed becomes (line, reason).

    ``use_timestamps`` takes start_timestamp/stop_timestamp (seconds, independent of the video's frame rate) instead
    of start_frame/stop_frame.
    """
    out: list[Segment | tuple[int, str]] = []
    for line, row in read_rows(csv_path):
        try:
            if "__error__" in row:
                raise BadRow(row["__error__"])
            video_id = str(row.get("video_id") or "").strip()
            if not video_id:
                raise BadRow("no video_id")
            if use_timestamps:
                start, end, unit = (parse_timestamp(row.get("start_timestamp"), "start_timestamp"),
                                    parse_timestamp(row.get("stop_timestamp"), "stop_timestamp"), "seconds")
            else:
                start, end, unit = (_number(row, "start_frame") - frame_base, _number(row, "stop_frame") - frame_base,
                                    "frames")
            # The video path is resolved when the row is processed, so a missing video is reported as a bad row.
            out.append(Segment(line=line, instruction=_instruction(row, "narration"), video=video_id, start=start,
                               end=end, unit=unit,
                               extra={"video_id": video_id, "narration_id": row.get("narration_id"),
                                      "participant": row.get("participant_id") or video_id.split("_")[0]}))
        except BadRow as err:
            out.append((line, str(err)))
    return out


def generic_segments(path: Path, videos_dir: Path | None, time_unit: str, frame_base: int):
    """Segments of a generic CSV/JSONL (video, start, end, instruction)."""
    base = videos_dir or path.parent
    out: list[Segment | tuple[int, str]] = []
    for line, row in read_rows(path):
        try:
            if "__error__" in row:
                raise BadRow(row["__error__"])
            video = str(row.get("video") or row.get("video_path") or "").strip()
            if not video:
                raise BadRow("no video (column video or video_path)")
            if "start_frame" in row or "end_frame" in row:
                start, end, unit = _number(row, "start_frame"), _number(row, "end_frame"), "frames"
            elif "start_sec" in row or "end_sec" in row:
                start, end, unit = _number(row, "start_sec"), _number(row, "end_sec"), "seconds"
            else:
                start, end, unit = _number(row, "start"), _number(row, "end"), time_unit
            if unit == "frames":
                if start != int(start) or end != int(end):
                    raise BadRow(f"frame numbers must be whole numbers, got {start:g} and {end:g}")
                start, end = start - frame_base, end - frame_base
            video_path = Path(video).expanduser()
            if not video_path.is_absolute():
                video_path = base / video_path
            out.append(Segment(line=line, instruction=_instruction(row, "instruction", "narration"),
                               video=str(row.get("video_id") or Path(video).with_suffix("").as_posix()),
                               video_path=video_path, start=start, end=end, unit=unit))
        except BadRow as err:
            out.append((line, str(err)))
    return out


def pair_rows(path: Path, images_dir: Path | None):
    """Ready pairs of a CSV/JSONL (input_image, edited_image, instruction[, video])."""
    base = images_dir or path.parent
    out: list[Segment | tuple[int, str]] = []
    for line, row in read_rows(path):
        try:
            if "__error__" in row:
                raise BadRow(row["__error__"])
            images = []
            for key in ("input_image", "edited_image"):
                value = str(row.get(key) or "").strip()
                if not value:
                    raise BadRow(f"no {key}")
                image = Path(value).expanduser()
                images.append(image if image.is_absolute() else base / image)
            video = str(row.get("video") or f"{images[0].parent.name}/{images[0].stem}")
            out.append(Segment(line=line, instruction=_instruction(row, "instruction"), video=video,
                               input_image=images[0], edited_image=images[1]))
        except BadRow as err:
            out.append((line, str(err)))
    return out


# ------------------------------------------------------------------------------------------------------- frames
def resize_short_side(image: np.ndarray, size: int) -> np.ndarray:
    """Resize so the shorter side is ``size`` pixels, aspect kept (0 = unchanged)."""
    if not size:
        return image
    height, width = image.shape[:2]
    scale = size / min(height, width)
    if scale == 1:
        return image
    new = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, new, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)


class VideoReader:
    """Reads single frames of one video by index (BGR uint8), keeping the capture open between calls."""

    def __init__(self, path: Path):
        self.path = path
        self.capture = cv2.VideoCapture(str(path))
        if not self.capture.isOpened():
            raise BadRow(f"cannot open video {path}")
        self.frame_count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))
        self.fps = float(self.capture.get(cv2.CAP_PROP_FPS)) or 0.0

    def frame_index(self, value: float, unit: str, is_end: bool) -> int:
        if unit == "frames":
            return int(value)
        if self.fps <= 0:
            raise BadRow(f"video {self.path} reports no frame rate; give the segment in frames")
        index = int(math.floor(value * self.fps + 1e-6))
        if is_end and index == self.frame_count:  # an end time equal to the duration means the last frame
            index -= 1
        return index

    def read(self, index: int) -> np.ndarray:
        if index >= self.frame_count > 0:
            raise BadRow(f"segment past the end of {self.path.name}: frame {index} requested, the video has "
                         f"{self.frame_count} frames (0..{self.frame_count - 1})")
        self.capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, frame = self.capture.read()
        if not ok or frame is None:
            raise BadRow(f"cannot read frame {index} of {self.path.name}")
        return frame

    def close(self) -> None:
        self.capture.release()


def split_videos(videos: list[str], test_fraction: float, seed: int) -> set[str]:
    """The test videos: the first ``round(test_fraction * n)`` videos in seeded-hash order (at least one when
    test_fraction > 0 and there are two or more videos)."""
    unique = sorted(set(videos))
    if test_fraction <= 0 or len(unique) < 2:
        return set()
    ranked = sorted(unique, key=lambda v: hashlib.blake2b(f"{seed}:{v}".encode(), digest_size=8).hexdigest())
    count = min(len(unique) - 1, max(1, round(test_fraction * len(unique))))
    return set(ranked[:count])


# ------------------------------------------------------------------------------------------------------- main work
def make_dataset(out_dir: str | Path, *, epic_csv: str | Path | None = None, segments: str | Path | None = None,
                 pairs: str | Path | None = None, videos_dir: str | Path | None = None, size: int = 256,
                 test_fraction: float = 0.1, seed: int = 0, time_unit: str = "frames", frame_base: int | None = None,
                 image_format: str = "png", epic_timestamps: bool = False, progress: bool = True,
                 warn=None) -> Report:
    """Build (or resume building) a dataset folder; returns what was written and what was skipped."""
    from tqdm.auto import tqdm

    sources = [s for s in (epic_csv, segments, pairs) if s is not None]
    if len(sources) != 1:
        raise MakeDatasetError("give exactly one of --epic-csv, --segments or --pairs")
    if epic_csv is not None and videos_dir is None:
        raise MakeDatasetError("--epic-csv needs --videos-dir")
    if size < 0:
        raise MakeDatasetError(f"--size must be >= 0, got {size}")
    if not 0 <= test_fraction < 1:
        raise MakeDatasetError(f"--test-fraction must be in [0, 1), got {test_fraction}")
    if time_unit not in ("frames", "seconds"):
        raise MakeDatasetError(f"--time-unit must be 'frames' or 'seconds', got {time_unit!r}")
    if image_format not in ("png", "jpg"):
        raise MakeDatasetError(f"--image-format must be 'png' or 'jpg', got {image_format!r}")
    videos_path = Path(videos_dir).expanduser() if videos_dir is not None else None
    if videos_path is not None and not videos_path.is_dir():
        raise MakeDatasetError(f"--videos-dir {videos_path} is not a directory")
    warn = warn or (lambda message: tqdm.write(message, file=sys.stderr))

    if epic_csv is not None:
        base = 1 if frame_base is None else frame_base
        items = epic_segments(Path(epic_csv).expanduser(), videos_path, base, use_timestamps=epic_timestamps)
    elif segments is not None:
        base = 0 if frame_base is None else frame_base
        items = generic_segments(Path(segments).expanduser(), videos_path, time_unit, base)
    else:
        base = 0
        items = pair_rows(Path(pairs).expanduser(), videos_path)

    out = Path(out_dir).expanduser()
    settings = {"size": size, "test_fraction": test_fraction, "seed": seed, "frame_base": base,
                "time_unit": time_unit, "image_format": image_format, "epic_timestamps": epic_timestamps,
                "source": str(Path(epic_csv or segments or pairs).expanduser().resolve())}
    settings_file = out / SETTINGS_NAME
    if settings_file.is_file():
        previous = json.loads(settings_file.read_text())
        changed = {k: (previous.get(k), v) for k, v in settings.items() if previous.get(k) != v}
        if changed:
            detail = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
            raise MakeDatasetError(f"{out} was built with other settings ({detail}); use a new --out directory "
                                   f"to build with these")
    (out / "images").mkdir(parents=True, exist_ok=True)
    settings_file.write_text(json.dumps(settings, indent=2) + "\n")

    report = Report()
    good = [item for item in items if isinstance(item, Segment)]
    for line, reason in (item for item in items if not isinstance(item, Segment)):
        report.skipped.append((line, reason))
    for line, reason in report.skipped:
        warn(f"line {line}: skipped: {reason}")

    index_file = out / INDEX_NAME
    done = set()
    if index_file.is_file():
        for line in index_file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    done.add(json.loads(line)["id"])
                except (ValueError, KeyError):
                    continue
    seen_ids: set[str] = set()
    todo = []
    for segment in good:
        pair_id = segment.pair_id
        if pair_id in seen_ids:
            report.skipped.append((segment.line, f"duplicate of an earlier row (same video, segment and "
                                                 f"instruction: {pair_id})"))
            continue
        seen_ids.add(pair_id)
        if pair_id in done:
            report.already_done += 1
        else:
            todo.append(segment)

    # One video open at a time: process rows grouped by video, in frame order.
    todo.sort(key=lambda s: (str(s.video_path or s.video), s.start or 0, s.line))
    reader: VideoReader | None = None
    reader_key = None
    with open(index_file, "a", encoding="utf-8") as index, \
            tqdm(total=len(todo), desc="actedit-make-dataset", disable=not progress, unit="pair") as bar:
        for segment in todo:
            try:
                if segment.input_image is not None:
                    first, last = _read_image(segment.input_image), _read_image(segment.edited_image)
                else:
                    if segment.video_path is None:
                        segment.video_path = find_epic_video(videos_path, segment.extra["video_id"],
                                                             segment.extra.get("participant"))
                    if not segment.video_path.is_file():
                        raise BadRow(f"video {segment.video_path} does not exist")
                    if reader_key != segment.video_path:
                        if reader is not None:
                            reader.close()
                        reader, reader_key = None, segment.video_path
                        reader = VideoReader(segment.video_path)
                    start = reader.frame_index(segment.start, segment.unit, is_end=False)
                    end = reader.frame_index(segment.end, segment.unit, is_end=True)
                    if end <= start:
                        raise BadRow(f"segment ends (frame {end}) before it starts (frame {start})")
                    first, last = reader.read(start), reader.read(end)
                    segment.extra.update(video_start_frame=start, video_end_frame=end)  # 0-based
                pair_id = segment.pair_id
                names = (f"images/{pair_id}_start.{image_format}", f"images/{pair_id}_end.{image_format}")
                for name, frame in zip(names, (first, last)):
                    if not cv2.imwrite(str(out / name), resize_short_side(frame, size)):
                        raise MakeDatasetError(f"cannot write {out / name}")
                row = {"id": pair_id, "input_image": names[0], "edited_image": names[1],
                       "instruction": segment.instruction, "video": segment.video,
                       "split": "train", "source_line": segment.line}
                row.update({k: v for k, v in segment.extra.items() if v is not None})
                index.write(json.dumps(row) + "\n")
                index.flush()
                report.written += 1
            except BadRow as err:
                report.skipped.append((segment.line, str(err)))
                warn(f"line {segment.line}: skipped: {err}")
            bar.update(1)
    if reader is not None:
        reader.close()
    finalize_index(index_file, test_fraction, seed)
    report.skipped.sort()
    return report


def finalize_index(index_file: Path, test_fraction: float, seed: int) -> None:
    """Rewrite the index in annotation order with the split by video decided over every video it holds.

    Deciding the split once over the final set of videos (not row by row) keeps every video on one side even when a
    resumed run adds videos.
    """
    rows = [json.loads(line) for line in index_file.read_text(encoding="utf-8").splitlines() if line.strip()]
    test_videos = split_videos([row["video"] for row in rows], test_fraction, seed)
    for row in rows:
        row["split"] = "test" if row["video"] in test_videos else "train"
    rows.sort(key=lambda row: (row.get("source_line", 0), row["id"]))
    temporary = index_file.with_suffix(".jsonl.tmp")
    temporary.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    temporary.replace(index_file)


def _read_image(path: Path) -> np.ndarray:
    if not path.is_file():
        raise BadRow(f"image {path} does not exist")
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise BadRow(f"cannot read image {path}")
    return image


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actedit-make-dataset", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Extract the first and last frame of every action segment (or copy ready image pairs) into a "
                    "dataset folder (images/ + index.jsonl) for actedit-train, split into train/test by video. "
                    "Bad rows are reported with their line number and skipped; re-running resumes.")
    source = parser.add_argument_group("input (exactly one)")
    source.add_argument("--epic-csv", help="EPIC-KITCHENS-100 annotation CSV (video_id, start_frame, stop_frame, "
                                           "narration, participant_id, ...)")
    source.add_argument("--segments", help="generic CSV/JSONL of segments: video, start, end, instruction (or "
                                           "start_frame/end_frame, start_sec/end_sec)")
    source.add_argument("--pairs", help="CSV/JSONL of ready pairs: input_image, edited_image, instruction[, video]")
    parser.add_argument("--videos-dir", help="where the videos are (EPIC: <dir>/<participant>/<video_id>.MP4 or "
                                             "<dir>/<video_id>.MP4); for --segments/--pairs the base of relative "
                                             "paths (default: the annotation file's folder)")
    parser.add_argument("--out", required=True, help="dataset folder to write (or resume)")
    parser.add_argument("--size", type=int, default=256,
                        help="shorter side of the written images in pixels, aspect kept (0 = original size)")
    parser.add_argument("--test-fraction", type=float, default=0.1,
                        help="fraction of the videos (not rows) that go to the test split")
    parser.add_argument("--seed", type=int, default=0, help="seed of the video split")
    parser.add_argument("--time-unit", choices=["frames", "seconds"], default="frames",
                        help="unit of the generic start/end columns")
    parser.add_argument("--frame-base", type=int, default=None,
                        help="the number of a video's first frame in the annotations (default: 1 for EPIC-KITCHENS, "
                             "0 for --segments)")
    parser.add_argument("--epic-timestamps", action="store_true",
                        help="EPIC-KITCHENS: locate segments by start_timestamp/stop_timestamp (seconds) instead of "
                             "start_frame/stop_frame, for videos whose frame rate differs from the annotations'")
    parser.add_argument("--image-format", choices=["png", "jpg"], default="png", help="format of the written images")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = make_dataset(args.out, epic_csv=args.epic_csv, segments=args.segments, pairs=args.pairs,
                              videos_dir=args.videos_dir, size=args.size, test_fraction=args.test_fraction,
                              seed=args.seed, time_unit=args.time_unit, frame_base=args.frame_base,
                              image_format=args.image_format, epic_timestamps=args.epic_timestamps,
                              progress=not args.no_progress)
    except MakeDatasetError as err:
        print(f"actedit-make-dataset: error: {err}", file=sys.stderr)
        return 2
    print(f"actedit-make-dataset: {report.summary()} -> {Path(args.out) / INDEX_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
