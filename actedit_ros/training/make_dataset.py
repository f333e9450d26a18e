"""actedit-make-dataset: turn action-segment annotations (or ready image pairs) into a training dataset folder.

Three kinds of input (``--epic-csv``, ``--segments``, ``--pairs``; parsed by :mod:`actedit_ros.training.annotations`),
one output format (``<out>/index.jsonl`` + ``<out>/images/``, see :mod:`actedit_ros.training.data`).

For a segment, the first and last frame (both inclusive ends) are read with OpenCV, resized so the shorter side is
``--size`` pixels (aspect kept), and written as PNG (or JPEG) (:mod:`actedit_ros.training.video_frames`). With
``--keep-frames K`` (K >= 2) every record also carries ``frames`` (K frames evenly spaced in time from the segment's
first to its last frame, both included, written like the pair's images as ``images/<id>_f00.png`` ...) and
``frame_progress`` (each frame's time fraction of the segment, 0.0 ... 1.0), read in one pass over the segment; that
is what the progress model trains on. ``--pairs`` has no video to sample, so ``--keep-frames`` refuses it.

The train/test split is by video: the videos are ordered by a seeded hash and the first ``--test-fraction`` of them
are test, so no video is on both sides and the split is the same on every run. Bad rows (missing video, segment past
the end of the video, unreadable frame, malformed values) are reported with their line number and skipped.
Re-running with the same settings (kept in ``<out>/make_dataset.json``) resumes: pairs already in the index are not
redone. Re-running a dataset built without ``--keep-frames`` with ``--keep-frames K`` fills in the frames of its
pairs; any other change of settings is refused.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .annotations import (BadRow, MakeDatasetError, Segment, epic_segments, find_epic_video, generic_segments,
                          pair_rows, parse_timestamp, read_rows)
from .data import INDEX_NAME
from .video_frames import VideoReader, frame_progress, kept_frame_indices, read_image, resize_short_side, write_frame

__all__ = ["BadRow", "MakeDatasetError", "Report", "Segment", "SETTINGS_NAME", "VideoReader", "epic_segments",
           "find_epic_video", "finalize_index", "generic_segments", "main", "make_dataset", "pair_rows",
           "parse_timestamp", "read_rows", "resize_short_side", "split_videos"]

SETTINGS_NAME = "make_dataset.json"


@dataclass
class Report:
    """What a run did."""

    written: int = 0
    already_done: int = 0
    filled: int = 0  # pairs already present that were given their frames (--keep-frames on an older dataset)
    skipped: list[tuple[int, str]] = field(default_factory=list)

    def summary(self) -> str:
        filled = f", {self.filled} given their frames" if self.filled else ""
        return (f"{self.written} pairs written, {self.already_done} already present{filled}, "
                f"{len(self.skipped)} rows skipped")


def split_videos(videos: list[str], test_fraction: float, seed: int) -> set[str]:
    """The test videos: the first ``round(test_fraction * n)`` videos in seeded-hash order (at least one when
    test_fraction > 0 and there are two or more videos)."""
    unique = sorted(set(videos))
    if test_fraction <= 0 or len(unique) < 2:
        return set()
    ranked = sorted(unique, key=lambda v: hashlib.blake2b(f"{seed}:{v}".encode(), digest_size=8).hexdigest())
    count = min(len(unique) - 1, max(1, round(test_fraction * len(unique))))
    return set(ranked[:count])


# ------------------------------------------------------------------------------------------------------- checks
def _check_arguments(sources: list, epic_csv, pairs, videos_dir, size: int, test_fraction: float, time_unit: str,
                     image_format: str, keep_frames: int) -> Path | None:
    """Refuse unusable arguments, naming the flag; returns the videos folder."""
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
    if keep_frames < 0 or keep_frames == 1:
        raise MakeDatasetError(f"--keep-frames must be 0 (off) or at least 2 (the first and the last frame), "
                               f"got {keep_frames}")
    if keep_frames and pairs is not None:
        raise MakeDatasetError("--keep-frames needs videos (--epic-csv or --segments): a --pairs row has only its "
                               "two images, no frames in between to keep")
    videos_path = Path(videos_dir).expanduser() if videos_dir is not None else None
    if videos_path is not None and not videos_path.is_dir():
        raise MakeDatasetError(f"--videos-dir {videos_path} is not a directory")
    return videos_path


def _check_settings(out: Path, settings: dict, keep_frames: int) -> None:
    """Refuse to resume a dataset built with other settings; --keep-frames may be added to one built without."""
    settings_file = out / SETTINGS_NAME
    if not settings_file.is_file():
        return
    previous = json.loads(settings_file.read_text())
    changed = {k: (previous.get(k), v) for k, v in settings.items() if previous.get(k) != v and k != "keep_frames"}
    if changed:
        detail = ", ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changed.items())
        raise MakeDatasetError(f"{out} was built with other settings ({detail}); use a new --out directory "
                               f"to build with these")
    before = previous.get("keep_frames", 0)
    if before and before != keep_frames:
        raise MakeDatasetError(f"{out} was built with --keep-frames {before}; resume it with --keep-frames {before} "
                               f"or use a new --out directory for --keep-frames {keep_frames}")


def _read_done(index_file: Path) -> dict[str, dict]:
    """The rows already in the index, by id (the last one of an id wins)."""
    done: dict[str, dict] = {}
    if index_file.is_file():
        for line in index_file.read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    row = json.loads(line)
                    done[row["id"]] = row
                except (ValueError, KeyError, TypeError):
                    continue
    return done


def _plan(good: list[Segment], done: dict[str, dict], keep_frames: int, report: Report) -> list[Segment]:
    """The segments still to extract: new pairs, and (with --keep-frames) present pairs that lack their frames."""
    seen_ids: set[str] = set()
    todo = []
    for segment in good:
        pair_id = segment.pair_id
        if pair_id in seen_ids:
            report.skipped.append((segment.line, f"duplicate of an earlier row (same video, segment and "
                                                 f"instruction: {pair_id})"))
            continue
        seen_ids.add(pair_id)
        row = done.get(pair_id)
        if row is None:
            todo.append(segment)
        elif keep_frames and len(row.get("frames") or ()) != keep_frames:
            segment.extra["__fill__"] = True
            todo.append(segment)
        else:
            report.already_done += 1
    # One video open at a time: process rows grouped by video, in frame order.
    todo.sort(key=lambda s: (str(s.video_path or s.video), s.start or 0, s.line))
    return todo


# ------------------------------------------------------------------------------------------------------- extraction
class _Videos:
    """The one open video (rows are processed grouped by video)."""

    def __init__(self, videos_dir: Path | None):
        self.videos_dir = videos_dir
        self.reader: VideoReader | None = None

    def reader_for(self, segment: Segment) -> VideoReader:
        if segment.video_path is None:
            segment.video_path = find_epic_video(self.videos_dir, segment.extra["video_id"],
                                                 segment.extra.get("participant"))
        if not segment.video_path.is_file():
            raise BadRow(f"video {segment.video_path} does not exist")
        if self.reader is None or self.reader.path != segment.video_path:
            self.close()
            self.reader = VideoReader(segment.video_path)
        return self.reader

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()
            self.reader = None


def _extract(segment: Segment, videos: _Videos, out: Path, size: int, image_format: str, keep_frames: int) -> dict:
    """Read, resize and write one segment's images; returns its index row. BadRow if the row is unusable."""
    pair_id = segment.pair_id
    kept: dict = {}
    if segment.input_image is not None:
        first, last = read_image(segment.input_image), read_image(segment.edited_image)
    else:
        reader = videos.reader_for(segment)
        start = reader.frame_index(segment.start, segment.unit, is_end=False)
        end = reader.frame_index(segment.end, segment.unit, is_end=True)
        if end <= start:
            raise BadRow(f"segment ends (frame {end}) before it starts (frame {start})")
        if keep_frames:
            indices = kept_frame_indices(start, end, keep_frames)
            frames = reader.read_span(indices)
            first, last = frames[start], frames[end]
            kept = {"frames": [write_frame(out, f"images/{pair_id}_f{i:02d}.{image_format}", frames[index], size)
                               for i, index in enumerate(indices)],
                    "frame_progress": frame_progress(indices, start, end)}
        else:
            first, last = reader.read(start), reader.read(end)
        segment.extra.update(video_start_frame=start, video_end_frame=end)  # 0-based
    names = (write_frame(out, f"images/{pair_id}_start.{image_format}", first, size),
             write_frame(out, f"images/{pair_id}_end.{image_format}", last, size))
    row = {"id": pair_id, "input_image": names[0], "edited_image": names[1], "instruction": segment.instruction,
           "video": segment.video, "split": "train", "source_line": segment.line}
    row.update({k: v for k, v in segment.extra.items() if v is not None and not k.startswith("__")})
    row.update(kept)
    return row


# ------------------------------------------------------------------------------------------------------- main work
def make_dataset(out_dir: str | Path, *, epic_csv: str | Path | None = None, segments: str | Path | None = None,
                 pairs: str | Path | None = None, videos_dir: str | Path | None = None, size: int = 256,
                 test_fraction: float = 0.1, seed: int = 0, time_unit: str = "frames", frame_base: int | None = None,
                 image_format: str = "png", epic_timestamps: bool = False, keep_frames: int = 0,
                 progress: bool = True, warn=None) -> Report:
    """Build (or resume building) a dataset folder; returns what was written and what was skipped."""
    from tqdm.auto import tqdm

    sources = [s for s in (epic_csv, segments, pairs) if s is not None]
    videos_path = _check_arguments(sources, epic_csv, pairs, videos_dir, size, test_fraction, time_unit,
                                   image_format, keep_frames)
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
    if keep_frames:  # absent when off, so datasets built before the flag existed resume unchanged
        settings["keep_frames"] = keep_frames
    _check_settings(out, settings, keep_frames)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / SETTINGS_NAME).write_text(json.dumps(settings, indent=2) + "\n")

    report = Report()
    report.skipped = [item for item in items if not isinstance(item, Segment)]
    for line, reason in report.skipped:
        warn(f"line {line}: skipped: {reason}")
    index_file = out / INDEX_NAME
    todo = _plan([item for item in items if isinstance(item, Segment)], _read_done(index_file), keep_frames, report)

    videos = _Videos(videos_path)
    with open(index_file, "a", encoding="utf-8") as index, \
            tqdm(total=len(todo), desc="actedit-make-dataset", disable=not progress, unit="pair") as bar:
        for segment in todo:
            try:
                row = _extract(segment, videos, out, size, image_format, keep_frames)
                index.write(json.dumps(row) + "\n")
                index.flush()
                if segment.extra.get("__fill__"):
                    report.filled += 1
                else:
                    report.written += 1
            except BadRow as err:
                report.skipped.append((segment.line, str(err)))
                warn(f"line {segment.line}: skipped: {err}")
            bar.update(1)
    videos.close()
    finalize_index(index_file, test_fraction, seed)
    report.skipped.sort()
    return report


def finalize_index(index_file: Path, test_fraction: float, seed: int) -> None:
    """Rewrite the index in annotation order, one row per id (the last written wins: a pair re-extracted to fill in
    its frames replaces its older row), with the split by video decided over every video it holds.

    Deciding the split once over the final set of videos (not row by row) keeps every video on one side even when a
    resumed run adds videos.
    """
    by_id: dict[str, dict] = {}
    for line in index_file.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            by_id[row["id"]] = row
    rows = list(by_id.values())
    test_videos = split_videos([row["video"] for row in rows], test_fraction, seed)
    for row in rows:
        row["split"] = "test" if row["video"] in test_videos else "train"
    rows.sort(key=lambda row: (row.get("source_line", 0), row["id"]))
    temporary = index_file.with_suffix(".jsonl.tmp")
    temporary.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    temporary.replace(index_file)
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
    parser.add_argument("--keep-frames", type=int, default=0, metavar="K",
                        help="also keep K >= 2 frames of every segment, evenly spaced in time from its first to its "
                             "last frame, with each frame's time fraction (index keys frames, frame_progress: what "
                             "the progress model trains on); not with --pairs. Adding it to a dataset built without "
                             "it fills in the frames of its pairs. 0 = off")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = make_dataset(args.out, epic_csv=args.epic_csv, segments=args.segments, pairs=args.pairs,
                              videos_dir=args.videos_dir, size=args.size, test_fraction=args.test_fraction,
                              seed=args.seed, time_unit=args.time_unit, frame_base=args.frame_base,
                              image_format=args.image_format, epic_timestamps=args.epic_timestamps,
                              keep_frames=args.keep_frames, progress=not args.no_progress)
    except MakeDatasetError as err:
        print(f"actedit-make-dataset: error: {err}", file=sys.stderr)
        return 2
    print(f"actedit-make-dataset: {report.summary()} -> {Path(args.out) / INDEX_NAME}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
