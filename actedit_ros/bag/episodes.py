"""Episodes of a bag: time segments with the instruction the robot was carrying out.

They come from a YAML or CSV file, or from an instruction topic (std_msgs/String) in the bag.

File format. YAML: a list of mappings, or a mapping with an ``episodes:`` list::

    episodes:
      - {start: 0.0, end: 4.5, instruction: "open the drawer"}
      - {start: 5.0, instruction: "put the cup in the bowl"}   # no end: until the next start or the bag end

CSV: a header row with the columns ``start``, ``end`` (may be empty) and ``instruction``.

Times are seconds (floats). ``relative`` times count from the bag's first message; ``absolute`` times are Unix
times in seconds of the messages' log time. ``auto`` (the default) treats a time >= 1e9 (i.e. after 2001-09-09) as
absolute and anything smaller as relative.
"""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import yaml

NS = 1_000_000_000
ABSOLUTE_THRESHOLD_S = 1e9
TIME_BASES = ("auto", "relative", "absolute")


class EpisodeError(ValueError):
    """An episode file or instruction topic that cannot be turned into episodes."""


@dataclass(frozen=True)
class BagEpisode:
    """One segment of a bag to evaluate: log times [start_ns, end_ns) and what the robot was asked to do."""

    index: int
    instruction: str
    start_ns: int
    end_ns: int

    @property
    def duration_s(self) -> float:
        return (self.end_ns - self.start_ns) / NS


def _to_seconds(value, what: str) -> float | None:
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise EpisodeError(f"{what} is {value!r}, not a number of seconds") from None
    if not math.isfinite(seconds):
        raise EpisodeError(f"{what} is {value!r}, not a finite number of seconds")
    return seconds


def _to_ns(seconds: float, time_base: str, bag_start_ns: int) -> int:
    absolute = time_base == "absolute" or (time_base == "auto" and seconds >= ABSOLUTE_THRESHOLD_S)
    return int(round(seconds * NS)) if absolute else bag_start_ns + int(round(seconds * NS))


def _read_rows(path: Path) -> list[dict]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise EpisodeError(f"cannot read episode file {path}: {exc}") from None
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(text.splitlines())
        fields = [f.strip() for f in reader.fieldnames or []]
        missing = {"start", "instruction"} - set(fields)
        if missing:
            raise EpisodeError(f"episode file {path} lacks the column(s) {sorted(missing)}; "
                               f"it needs a header row with start, end, instruction (found {fields})")
        return [{(k or "").strip(): v for k, v in row.items()} for row in reader]
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise EpisodeError(f"episode file {path} is not valid YAML: {exc}") from None
    if isinstance(data, dict):
        data = data.get("episodes")
    if not isinstance(data, list) or not all(isinstance(row, dict) for row in data):
        raise EpisodeError(f"episode file {path} must hold a list of {{start, end, instruction}} mappings "
                           f"(or a mapping with an 'episodes' list)")
    return data


def episodes_from_rows(rows: Iterable[dict], bag_start_ns: int, bag_end_ns: int, time_base: str = "auto",
                       source: str = "episode file") -> list[BagEpisode]:
    """Episodes from mappings with start, optional end and instruction (seconds, see the module docstring)."""
    if time_base not in TIME_BASES:
        raise EpisodeError(f"time base {time_base!r} is not one of {TIME_BASES}")
    parsed = []
    for number, row in enumerate(rows, start=1):
        where = f"{source}, episode {number}"
        instruction = str(row.get("instruction") or "").strip()
        if not instruction:
            raise EpisodeError(f"{where}: the instruction is empty")
        start_s = _to_seconds(row.get("start"), f"{where}: start")
        if start_s is None:
            raise EpisodeError(f"{where}: start is missing")
        end_s = _to_seconds(row.get("end"), f"{where}: end")
        start_ns = _to_ns(start_s, time_base, bag_start_ns)
        end_ns = None if end_s is None else _to_ns(end_s, time_base, bag_start_ns)
        if end_ns is not None and end_ns <= start_ns:
            raise EpisodeError(f"{where}: end ({end_s} s) is not after start ({start_s} s)")
        if start_ns >= bag_end_ns or (end_ns is not None and end_ns <= bag_start_ns):
            span = f"{start_s} s .. {'end' if end_s is None else f'{end_s} s'}"
            raise EpisodeError(
                f"{where}: {span} lies outside the bag, which spans {0.0:.3f} .. "
                f"{(bag_end_ns - bag_start_ns) / NS:.3f} s relative "
                f"(absolute {bag_start_ns / NS:.3f} .. {bag_end_ns / NS:.3f} s)"
            )
        parsed.append((start_ns, end_ns, instruction))
    if not parsed:
        raise EpisodeError(f"{source} holds no episodes")
    parsed.sort(key=lambda item: item[0])
    episodes = []
    for index, (start_ns, end_ns, instruction) in enumerate(parsed):
        if end_ns is None:
            end_ns = parsed[index + 1][0] if index + 1 < len(parsed) else bag_end_ns
        episodes.append(BagEpisode(index, instruction, start_ns, end_ns))
    return episodes


def load_episode_file(path: str | os.PathLike, bag_start_ns: int, bag_end_ns: int,
                      time_base: str = "auto") -> list[BagEpisode]:
    """Episodes from a YAML (.yaml/.yml) or CSV (.csv) file."""
    path = Path(path)
    if not path.is_file():
        raise EpisodeError(f"episode file not found: {path}")
    return episodes_from_rows(_read_rows(path), bag_start_ns, bag_end_ns, time_base, source=str(path))


def episodes_from_instructions(instructions: Iterable[tuple[int, str]], bag_end_ns: int,
                               topic: str = "instruction topic") -> list[BagEpisode]:
    """Episodes from (log_ns, text) instruction messages: each starts one that lasts until the next or the bag end.

    Empty instructions end the running episode without starting a new one (like clearing the goal).
    """
    ordered = sorted(instructions, key=lambda item: item[0])
    episodes = []
    for number, (start_ns, text) in enumerate(ordered):
        end_ns = ordered[number + 1][0] if number + 1 < len(ordered) else bag_end_ns
        if text.strip() and end_ns > start_ns:
            episodes.append(BagEpisode(len(episodes), text.strip(), start_ns, end_ns))
    if not episodes:
        raise EpisodeError(f"{topic} holds no non-empty instruction messages")
    return episodes
