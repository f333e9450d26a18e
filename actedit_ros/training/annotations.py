"""Input parsing of ``actedit-make-dataset``: the three annotation kinds turned into :class:`Segment` rows.

- ``--epic-csv``: an EPIC-KITCHENS-100 annotation CSV (``video_id``, ``start_frame``, ``stop_frame``, ``narration``,
  ``participant_id``, ...). Videos are looked up under ``--videos-dir`` as ``<participant>/<video_id>.MP4``,
  ``<participant>/videos/<video_id>.MP4`` or ``<video_id>.MP4`` (``.mp4`` too). EPIC frame numbers are 1-based
  (frame 1 is the video's first frame); ``--frame-base`` says otherwise.
- ``--segments``: a generic CSV or JSONL, one segment per row: ``video`` (path, relative to ``--videos-dir`` or to
  the annotation file), ``start`` and ``end`` (in ``--time-unit`` frames or seconds; ``start_frame``/``end_frame``
  or ``start_sec``/``end_sec`` name the unit explicitly) and ``instruction``.
- ``--pairs``: a CSV or JSONL of ready pairs: ``input_image``, ``edited_image``, ``instruction`` and optionally
  ``video`` (the split group; default: the pair itself).

A row that cannot be parsed becomes ``(line number, reason)`` instead of a Segment; the caller reports and skips it.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

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
