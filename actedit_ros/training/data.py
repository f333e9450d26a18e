"""Edit-pair datasets in the project's folder format, as torch tensors at a training resolution.

Folder format (shared by ``actedit-make-dataset``, the synthetic world's writer and the trainer)::

    <dir>/index.jsonl   one JSON object per pair:
        {"id": str, "input_image": relative path, "edited_image": relative path, "instruction": str,
         "video": str (source video / episode id), "split": "train" | "test", ...optional extra keys}
        "instruction_variants": [str, ...]   (optional) other wordings of the same instruction; the trainer uses
                                              them with ``actedit-train --instruction-variant-prob``
    <dir>/<images>      PNG or JPEG files named by the index

Optional keys for the learned progress model (``actedit-make-dataset --keep-frames K``, the world's writer
``--frames K``); :func:`load_progress_records` reads them, the editor's loaders (:func:`read_index`,
:class:`EditPairDataset`) ignore them::

        "frames": [relative path, ...]        K >= 2 frames of the segment in time order, the first and last included
        "frame_progress": [0.0, ..., 1.0]     each frame's time fraction of the segment, (t - start) / (end - start)
        "negative_frames": [relative path, ...]  (world writer, optional) frames of a *different* action done from
                                              the same start: progress 0 toward this record's goal

Images are brought to the training size in one of two ways (``image_mode``):

- ``"crop"`` (default, as InstructPix2Pix trains): resize keeping the aspect ratio so the image *covers* the target
  square (shorter side = resolution), then crop the centre. Works for datasets that mix aspect ratios.
- ``"keep-aspect"``: resize the whole image (no crop, no pad) to the size inference works at for it
  (:func:`actedit_ros.editing.pipeline.working_size`: about ``resolution**2`` pixels, aspect kept up to rounding to the
  model's size multiple). Every pair of a dataset must then come out at the same size (one camera).

The dataset itself is deterministic. Random horizontal flips are applied by the trainer (off by default) with
:func:`mirror_instruction`, because flipping an image turns "move the cup left" into "move the cup right".
"""
from __future__ import annotations

import json
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

INDEX_NAME = "index.jsonl"
REQUIRED_KEYS = ("id", "input_image", "edited_image", "instruction")
IMAGE_MODES = ("crop", "keep-aspect")


class DatasetError(ValueError):
    """The dataset folder or one of its rows is unusable; the message names the file and line."""


@dataclass
class EditPair:
    """One row of index.jsonl with absolute image paths."""

    id: str
    input_image: Path
    edited_image: Path
    instruction: str
    video: str
    split: str
    line: int
    instruction_variants: tuple[str, ...] = ()  # other wordings of the instruction (index key, optional)


def read_index(dataset_dir: str | Path, split: str | None = None) -> list[EditPair]:
    """Parse ``<dataset_dir>/index.jsonl``; keep only ``split`` ("train"/"test") when given.

    Raises :class:`DatasetError` naming the line for malformed rows, missing keys or missing image files.
    """
    return [pair for pair, _ in _index_rows(dataset_dir, split)]


def _index_rows(dataset_dir: str | Path, split: str | None):
    """(EditPair, raw row dict) of every usable row of the index in ``split``; DatasetError as :func:`read_index`."""
    root = Path(dataset_dir).expanduser()
    index_file = root / INDEX_NAME
    if not index_file.is_file():
        raise DatasetError(f"{root} has no {INDEX_NAME} (expected a dataset folder written by actedit-make-dataset "
                           f"or the world's dataset writer)")
    if split not in (None, "train", "test"):
        raise DatasetError(f"split must be 'train', 'test' or None, got {split!r}")
    pairs = []
    with open(index_file, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DatasetError(f"{index_file}:{line_number}: not valid JSON ({err})") from err
            if not isinstance(row, dict):
                raise DatasetError(f"{index_file}:{line_number}: expected a JSON object, got {type(row).__name__}")
            missing = [key for key in REQUIRED_KEYS if key not in row]
            if missing:
                raise DatasetError(f"{index_file}:{line_number}: missing key(s) {', '.join(missing)}")
            row_split = row.get("split", "train")
            if row_split not in ("train", "test"):
                raise DatasetError(f"{index_file}:{line_number}: split must be 'train' or 'test', got {row_split!r}")
            if split is not None and row_split != split:
                continue
            instruction = " ".join(str(row["instruction"]).split())
            if not instruction:
                raise DatasetError(f"{index_file}:{line_number}: empty instruction")
            pair = EditPair(id=str(row["id"]), input_image=root / row["input_image"],
                            edited_image=root / row["edited_image"], instruction=instruction,
                            video=str(row.get("video", "")), split=row_split, line=line_number,
                            instruction_variants=_instruction_variants(row, f"{index_file}:{line_number}"))
            for image in (pair.input_image, pair.edited_image):
                if not image.is_file():
                    raise DatasetError(f"{index_file}:{line_number}: image {image} does not exist")
            pairs.append((pair, row))
    return pairs


def _instruction_variants(row: dict, where: str) -> tuple[str, ...]:
    """A row's optional ``instruction_variants``: a list of non-empty strings (whitespace collapsed as for the
    instruction); DatasetError naming ``where`` otherwise."""
    value = row.get("instruction_variants", [])
    if not isinstance(value, list) or not all(isinstance(text, str) for text in value):
        raise DatasetError(f"{where}: instruction_variants must be a list of strings, got {value!r}"[:300])
    variants = tuple(" ".join(text.split()) for text in value)
    if not all(variants):
        raise DatasetError(f"{where}: instruction_variants holds an empty string: {value!r}"[:300])
    return variants


@dataclass
class ProgressRecord:
    """One segment for the learned progress model: its pair, its kept frames and their progress (absolute paths)."""

    id: str
    instruction: str
    start: Path  # the segment's first frame (the pair's input image)
    end: Path  # its last frame (the pair's edited image: the goal)
    frames: list[Path]
    frame_progress: list[float]
    negative_frames: list[Path]  # another action's frames from the same start (progress 0 here); [] when absent
    video: str
    split: str
    line: int
    world: dict = field(default_factory=dict)  # the synthetic world's ground truth (seed, regime, action), if any


WORLD_KEYS = ("seed", "regime", "action")

_NO_FRAMES_HINT = ("the progress model needs the frames of each segment: build the dataset with actedit-make-dataset "
                   "--keep-frames K (re-running it on this dataset with --keep-frames K fills them in) or with the "
                   "world's writer --frames K")


def _frame_paths(root: Path, row: dict, key: str, where: str) -> list[Path]:
    value = row[key]
    if not isinstance(value, list) or not all(isinstance(name, str) and name for name in value):
        raise DatasetError(f"{where}: {key} must be a list of image paths, got {value!r}"[:300])
    paths = [root / name for name in value]
    for path in paths:
        if not path.is_file():
            raise DatasetError(f"{where}: {key} image {path} does not exist")
    return paths


def _progress_values(row: dict, count: int, where: str) -> list[float]:
    values = row.get("frame_progress")
    if not isinstance(values, list) or len(values) != count:
        raise DatasetError(f"{where}: frame_progress must be a list of {count} numbers (one per frame), "
                           f"got {values!r}"[:300])
    try:
        progress = [float(value) for value in values]
    except (TypeError, ValueError):
        raise DatasetError(f"{where}: frame_progress holds a non-number: {values!r}"[:300]) from None
    if not all(0.0 <= value <= 1.0 for value in progress):  # also refuses NaN
        raise DatasetError(f"{where}: frame_progress values must be in [0, 1], got {values!r}"[:300])
    if any(later < earlier for earlier, later in zip(progress, progress[1:])):
        raise DatasetError(f"{where}: frame_progress must not decrease (frames in time order), got {values!r}"[:300])
    return progress


def load_progress_records(dataset_dir: str | Path, split: str | None = "train") -> list[ProgressRecord]:
    """The records of ``<dataset_dir>/index.jsonl`` (``split`` "train"/"test", or None for all) with their kept
    frames, for training and evaluating the learned progress model.

    Raises :class:`DatasetError` naming the file and line for rows without frames (saying to use ``--keep-frames``),
    malformed frame lists or progress values, missing image files, or when no record is left.
    """
    root = Path(dataset_dir).expanduser()
    index_file = root / INDEX_NAME
    records, lacking = [], []
    for pair, row in _index_rows(root, split):
        where = f"{index_file}:{pair.line}"
        if "frames" not in row:
            lacking.append(pair.line)
            continue
        frames = _frame_paths(root, row, "frames", where)
        if len(frames) < 2:
            raise DatasetError(f"{where}: frames must hold at least 2 images (first and last), got {len(frames)}")
        negatives = _frame_paths(root, row, "negative_frames", where) if "negative_frames" in row else []
        records.append(ProgressRecord(
            id=pair.id, instruction=pair.instruction, start=pair.input_image, end=pair.edited_image, frames=frames,
            frame_progress=_progress_values(row, len(frames), where), negative_frames=negatives, video=pair.video,
            split=pair.split, line=pair.line, world={k: row[k] for k in WORLD_KEYS if k in row}))
    if lacking:
        raise DatasetError(f"{index_file}: {len(lacking)} record(s) have no frames (first at line {lacking[0]}); "
                           + _NO_FRAMES_HINT)
    if not records:
        raise DatasetError(f"{index_file} has no records" + (f" in the {split!r} split" if split else ""))
    return records


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 (H, W, 3); DatasetError if it cannot be decoded."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise DatasetError(f"cannot read image {path} (missing, truncated or not an image)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def resize_cover_center_crop(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize keeping the aspect ratio so the image covers (width, height), then crop the centre."""
    in_height, in_width = image.shape[:2]
    scale = max(width / in_width, height / in_height)
    new_width, new_height = max(width, round(in_width * scale)), max(height, round(in_height * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(image, (new_width, new_height), interpolation=interpolation)
    top, left = (new_height - height) // 2, (new_width - width) // 2
    return np.ascontiguousarray(resized[top:top + height, left:left + width])


def target_size(image_shape: tuple[int, ...], resolution: int, image_mode: str, size_multiple: int) -> tuple[int, int]:
    """(width, height) an image of ``image_shape`` is trained at."""
    if image_mode == "crop":
        return resolution, resolution
    if image_mode == "keep-aspect":
        from actedit_ros.editing.pipeline import working_size

        return working_size(image_shape[1], image_shape[0], resolution, size_multiple)
    raise DatasetError(f"image_mode must be one of {IMAGE_MODES}, got {image_mode!r}")


def prepare_image(image: np.ndarray, resolution: int, image_mode: str = "crop", size_multiple: int = 8) -> np.ndarray:
    """Bring an RGB uint8 image to its training size (see the module docstring for the two modes)."""
    width, height = target_size(image.shape, resolution, image_mode, size_multiple)
    if image_mode == "crop":
        return resize_cover_center_crop(image, width, height)
    if (image.shape[1], image.shape[0]) == (width, height):
        return image
    interpolation = cv2.INTER_AREA if width * height < image.shape[0] * image.shape[1] else cv2.INTER_CUBIC
    return cv2.resize(image, (width, height), interpolation=interpolation)


class EditPairDataset(torch.utils.data.Dataset):
    """Pairs of (input, edited) images with their instruction.

    Items are dicts: ``input_pixels`` and ``edited_pixels`` (uint8 tensors (3, H, W)), ``instruction`` (str),
    ``instruction_variants`` (tuple of str, empty when the record has none), ``id`` (str), ``index`` (int).
    Convert pixels with :func:`to_model_range` on the training device.
    """

    def __init__(self, dataset_dir: str | Path, resolution: int, split: str | None = "train",
                 image_mode: str = "crop", size_multiple: int = 8, max_pairs: int | None = None):
        if image_mode not in IMAGE_MODES:
            raise DatasetError(f"image_mode must be one of {IMAGE_MODES}, got {image_mode!r}")
        if resolution <= 0 or (image_mode == "crop" and resolution % size_multiple):
            raise DatasetError(f"resolution {resolution} must be a positive multiple of {size_multiple} "
                               f"(the model's VAE x UNet downsampling) in 'crop' mode")
        self.dataset_dir = Path(dataset_dir)
        self.pairs = read_index(dataset_dir, split=split)
        if max_pairs is not None:
            self.pairs = self.pairs[:max_pairs]
        if not self.pairs:
            raise DatasetError(f"{self.dataset_dir / INDEX_NAME} has no pairs"
                               + (f" in the {split!r} split" if split else ""))
        self.resolution = resolution
        self.image_mode = image_mode
        self.size_multiple = size_multiple

    def __len__(self) -> int:
        return len(self.pairs)

    @property
    def instructions(self) -> list[str]:
        return [pair.instruction for pair in self.pairs]

    def load_pair(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The (input, edited) RGB uint8 images of pair ``index`` at the training size."""
        pair = self.pairs[index]
        source, edited = read_rgb(pair.input_image), read_rgb(pair.edited_image)
        source = prepare_image(source, self.resolution, self.image_mode, self.size_multiple)
        edited = prepare_image(edited, self.resolution, self.image_mode, self.size_multiple)
        if source.shape != edited.shape:
            raise DatasetError(f"{self.dataset_dir / INDEX_NAME}:{pair.line}: input and edited images come out at "
                               f"different sizes {source.shape[:2]} vs {edited.shape[:2]} (use image_mode='crop')")
        return source, edited

    def __getitem__(self, index: int) -> dict:
        source, edited = self.load_pair(index)
        return {
            "input_pixels": torch.from_numpy(source).permute(2, 0, 1),
            "edited_pixels": torch.from_numpy(edited).permute(2, 0, 1),
            "instruction": self.pairs[index].instruction,
            "instruction_variants": self.pairs[index].instruction_variants,
            "id": self.pairs[index].id,
            "index": index,
        }


def collate_pairs(items: list[dict]) -> dict:
    """Stack a list of dataset items into a batch; DatasetError if the images differ in size."""
    shapes = {tuple(item["input_pixels"].shape) for item in items}
    if len(shapes) > 1:
        raise DatasetError(f"a batch mixes image sizes {sorted(shapes)}; with image_mode='keep-aspect' every image "
                           f"of the dataset must have the same aspect ratio (use image_mode='crop' otherwise)")
    return {
        "input_pixels": torch.stack([item["input_pixels"] for item in items]),
        "edited_pixels": torch.stack([item["edited_pixels"] for item in items]),
        "instruction": [item["instruction"] for item in items],
        "instruction_variants": [tuple(item.get("instruction_variants", ())) for item in items],
        "id": [item["id"] for item in items],
        "index": torch.tensor([item["index"] for item in items]),
    }


def to_model_range(pixels: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 (B, 3, H, W) in [0, 255] -> float in [-1, 1], as the VAE expects."""
    return pixels.to(dtype).div(127.5).sub(1.0)


_LEFT_RIGHT = re.compile(r"\b(left|right|leftward|rightward|leftwards|rightwards)\b", re.IGNORECASE)
_MIRROR_WORD = {"left": "right", "right": "left", "leftward": "rightward", "rightward": "leftward",
                "leftwards": "rightwards", "rightwards": "leftwards"}


def mirror_instruction(instruction: str) -> str:
    """The instruction for a horizontally flipped scene: swaps left/right (keeping the capitalisation)."""

    def swap(match: re.Match) -> str:
        word = match.group(0)
        mirrored = _MIRROR_WORD[word.lower()]
        return mirrored.capitalize() if word[0].isupper() else mirrored

    return _LEFT_RIGHT.sub(swap, instruction)


# Words ignored when deciding whether two instructions "share a token" (see NegativeInstructionSampler): articles
# and glue words that nearly every instruction contains and that say nothing about the action.
DEFAULT_IGNORED_WORDS = ("a", "an", "the", "of", "and", "to", "it", "its", "this", "that", "then", "please")


def instruction_words(instruction: str, ignored: frozenset[str] | set[str] = frozenset()) -> set[str]:
    """Lower-cased word tokens of an instruction, without the ignored ones."""
    return {word for word in re.findall(r"[a-z0-9]+", instruction.lower()) if word not in ignored}


class NegativeInstructionSampler:
    """Draws, for a true instruction c+, a random instruction c- from a pool that shares no word with c+.

    "Token" here is a lower-cased word, minus ``ignored_words`` (articles and glue words by default; pass ``()`` for
    the strict reading). When every pool instruction shares a word with c+, the one with the fewest shared words is
    drawn among the tied ones and :attr:`fallbacks` counts it. c+ need not be in the pool (a reworded or mirrored
    instruction); the candidates of the last ``cache_size`` distinct c+ are kept (least recently used dropped), so
    memory stays bounded however many distinct instructions training sees.
    """

    def __init__(self, pool: list[str], ignored_words=DEFAULT_IGNORED_WORDS, cache_size: int = 4096):
        self.pool = sorted(set(pool))
        if len(self.pool) < 2:
            raise DatasetError("the action loss needs at least two different instructions in the training set")
        self.ignored = frozenset(word.lower() for word in ignored_words)
        self._position = {text: i for i, text in enumerate(self.pool)}
        postings: dict[str, list[int]] = {}
        for row, text in enumerate(self.pool):
            for word in instruction_words(text, self.ignored):
                postings.setdefault(word, []).append(row)
        # word -> pool rows holding it (an inverted index: memory grows with the pool's words, not pool x vocabulary)
        self._postings = {word: np.asarray(rows, dtype=np.int64) for word, rows in postings.items()}
        self._candidates: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self.fallbacks = 0

    def candidates(self, instruction: str) -> tuple[np.ndarray, bool]:
        """Pool indices c- may be drawn from, and whether they share no word with ``instruction``."""
        cached = self._candidates.get(instruction)
        if cached is None:
            shared = np.zeros(len(self.pool), dtype=np.float64)
            for word in instruction_words(instruction, self.ignored):
                if word in self._postings:
                    shared[self._postings[word]] += 1.0
            if instruction in self._position:
                shared[self._position[instruction]] = np.inf
            cached = np.flatnonzero(shared == shared.min())
            if shared.min() > 0:
                cached = -cached - 1  # encoded "fallback" marker: negative indices
            self._candidates[instruction] = cached
            while len(self._candidates) > self._cache_size:
                self._candidates.popitem(last=False)
        else:
            self._candidates.move_to_end(instruction)
        if cached[0] < 0:
            return -cached - 1, False
        return cached, True

    def sample(self, instructions: list[str], generator: torch.Generator,
               also_exclude: list[str] | None = None) -> list[str]:
        """One c- per instruction, drawn with ``generator`` (so the draw is reproducible).

        ``also_exclude[i]`` (optional) is one more text c- must not be for ``instructions[i]``: the pair's original
        instruction when a reworded variant is trained on, which may share no word with its variant but describes
        the same edit. It is left out of the candidates unless it is the only one (counted as a fallback).
        """
        negatives = []
        for i, text in enumerate(instructions):
            candidates, disjoint = self.candidates(text)
            other = self._position.get(also_exclude[i]) if also_exclude is not None else None
            if other is not None and (candidates == other).any():
                if len(candidates) > 1:
                    candidates = candidates[candidates != other]
                else:
                    disjoint = False
            if not disjoint:
                self.fallbacks += 1
            pick = int(torch.randint(len(candidates), (1,), generator=generator))
            negatives.append(self.pool[int(candidates[pick])])
        return negatives
