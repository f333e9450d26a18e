"""Write world episodes as an edit-pair dataset folder (the format `actedit-train` reads).

Each episode gives one pair: its start frame (input), its last frame (edited) and its instruction. The folder holds
`index.jsonl` (one JSON object per pair: id, input_image, edited_image, instruction, video, split, plus the world's
ground truth: action, regime, phrasing, seed, target_kind, target_colour, held_out_combo) and `images/*.png`.
Train and test pairs come from different episode seed streams, so no episode is on both sides.

With ``--frames K`` every record also carries ``frames`` (K frames of the episode, start and end included) and
``frame_progress`` (the world's true progress of each), the keys ``actedit-make-dataset --keep-frames`` writes for
videos; ``--negatives`` adds ``negative_frames``: K frames of a *different* action done from the same start
(progress 0 toward this record's goal). Both are what ``actedit-train-progress`` learns from.

    python -m actedit_ros.world.dataset --out data/world64 --train 20000 --test 500 --size 64 64
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
from tqdm import tqdm

from .episode import REGIMES, SPLITS, Episode, generate_episode
from .negatives import other_action


def episode_record(ep: Episode, input_image: str, edited_image: str) -> dict:
    """The index.jsonl line of one episode's (start, end) pair."""
    return {
        "id": ep.episode_id, "input_image": input_image, "edited_image": edited_image,
        "instruction": ep.instruction, "video": ep.episode_id, "split": ep.split,
        "action": ep.action, "regime": ep.regime, "phrasing": ep.phrasing, "seed": ep.seed,
        "target_kind": ep.target_kind, "target_colour": ep.target_colour, "held_out_combo": ep.held_out_combo,
    }


def episode_plan(num_train: int, num_test: int, regimes: tuple[str, ...] = REGIMES, first_seed: int = 0):
    """(split, seed, regime) of every episode in a dataset: seeds count up per split, regimes alternate."""
    for split, count in (("train", num_train), ("test", num_test)):
        for i in range(count):
            yield split, first_seed + i, regimes[i % len(regimes)]


def _write_png(out: Path, name: str, rgb) -> str:
    cv2.imwrite(str(out / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return name


def _is_done(out: Path, record: dict | None, num_frames: int, negatives: bool) -> bool:
    if not record:
        return False
    names = [record["input_image"], record["edited_image"]]
    if num_frames:
        if len(record.get("frames", ())) != num_frames or (negatives and "negative_frames" not in record):
            return False
        names += record["frames"] + record.get("negative_frames", [])
    return all((out / name).exists() for name in names)


def write_dataset(out_dir: str | Path, num_train: int, num_test: int, size: tuple[int, int] = (64, 64),
                  regimes: tuple[str, ...] = REGIMES, first_seed: int = 0, progress: bool = True,
                  num_frames: int = 0, negatives: bool = False) -> Path:
    """Write the dataset; re-running with the same arguments skips pairs whose images already exist.

    ``num_frames`` >= 2 keeps that many frames per episode (``frames``/``frame_progress``); ``negatives`` (needs
    ``num_frames``) adds ``negative_frames`` of another action from the same start.
    """
    if num_frames and num_frames < 2:
        raise ValueError(f"--frames must be 0 (off) or at least 2 (start and end); got {num_frames}")
    if negatives and not num_frames:
        raise ValueError("--negatives needs --frames K (the negative clip has as many frames as the episode's)")
    for regime in regimes:
        if regime not in REGIMES:
            raise ValueError(f"unknown regime {regime!r}; expected some of {REGIMES}")
    if num_train < 0 or num_test < 0:
        raise ValueError("the numbers of train and test episodes must be >= 0")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    index_path = out / "index.jsonl"
    done: dict[str, dict] = {}
    if index_path.exists():
        for line in index_path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                done[record["id"]] = record
    plan = list(episode_plan(num_train, num_test, regimes, first_seed))
    records = []
    for split, seed, regime in tqdm(plan, desc=f"world episodes -> {out}", disable=not progress, unit="ep"):
        episode_id = f"{split}-{regime}-{seed:06d}"
        record = done.get(episode_id)
        if _is_done(out, record, num_frames, negatives):
            records.append(record)
            continue
        ep = generate_episode(seed=seed, regime=regime, split=split, size=size, num_frames=max(2, num_frames))
        start = _write_png(out, f"images/{episode_id}_start.png", ep.frames[0])
        end = _write_png(out, f"images/{episode_id}_end.png", ep.frames[-1])
        record = episode_record(ep, start, end)
        if num_frames:
            record["frames"] = [_write_png(out, f"images/{episode_id}_f{i:02d}.png", frame)
                                for i, frame in enumerate(ep.frames)]
            record["frame_progress"] = [round(float(p), 6) for p in ep.progress]
        if negatives:
            other = other_action(ep)
            record["negative_frames"] = [_write_png(out, f"images/{episode_id}_n{i:02d}.png", frame)
                                         for i, frame in enumerate(other.frames)]
            record["negative_action"] = other.action
        records.append(record)
    tmp = index_path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.replace(index_path)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m actedit_ros.world.dataset",
        description="Write synthetic world episodes as an edit-pair dataset folder (index.jsonl + PNGs) for actedit-train.")
    parser.add_argument("--out", required=True, help="dataset folder to write (created; existing pairs are kept)")
    parser.add_argument("--train", type=int, default=20000, help="number of training episodes (one pair each)")
    parser.add_argument("--test", type=int, default=500, help="number of held-out test episodes (one pair each)")
    parser.add_argument("--size", type=int, nargs=2, default=(64, 64), metavar=("WIDTH", "HEIGHT"),
                        help="image size in pixels")
    parser.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=REGIMES,
                        help="camera regimes, alternated over episodes (fixed: still camera; head: moving, jittering)")
    parser.add_argument("--first-seed", type=int, default=0, help="seed of the first episode of each split")
    parser.add_argument("--frames", type=int, default=0, metavar="K",
                        help="also keep K frames of each episode with their true progress (for actedit-train-progress;"
                             " default 0: start and end only)")
    parser.add_argument("--negatives", action="store_true",
                        help="with --frames: also keep K frames of a different action from the same start")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        out = write_dataset(args.out, args.train, args.test, tuple(args.size), tuple(args.regimes), args.first_seed,
                            num_frames=args.frames, negatives=args.negatives)
    except (ValueError, OSError) as err:
        print(f"{parser.prog}: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {args.train} train + {args.test} test pairs to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["write_dataset", "episode_record", "episode_plan", "SPLITS"]
