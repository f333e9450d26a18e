"""Measure a model's out-of-domain detector on world frames against real photos, and write its threshold.

    python -m actedit_ros.editing.domain_calibration                # the embedded default: print the separation
    python -m actedit_ros.editing.domain_calibration --write        # ... and write models/default/out_of_domain.json
    python -m actedit_ros.editing.domain_calibration --model DIR    # any model directory (its own world frames
                                                                    # are only meaningful for world-trained models)

World frames: start, middle and end frames of held-out test episodes of both camera regimes, rendered at 64x48 and
320x240 (what a camera of the world gives the node). Photos: the real photographs scikit-image ships
(``skimage.data``, no download) plus the ones matplotlib and scikit-learn ship when installed. The threshold is
``--margin`` dB below the lowest world frame, so world frames are not flagged; the photos above it are reported.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from .out_of_domain import METRIC, THRESHOLD_FILE

# Photographs shipped inside the scikit-image wheel (skimage.data loaders that need no download).
SKIMAGE_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "retina", "immunohistochemistry",
                  "camera", "moon", "coins", "grass", "gravel", "brick", "page", "cell", "clock", "microaneurysms")


def as_rgb(image: np.ndarray) -> np.ndarray:
    """Any skimage/cv2 photo as contiguous RGB uint8 (grey is repeated, alpha dropped)."""
    image = np.asarray(image)
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return np.ascontiguousarray(image[..., :3].astype(np.uint8))


def real_photos() -> dict[str, np.ndarray]:
    """name -> RGB photo, from skimage.data and the sample images of other installed packages."""
    import skimage.data

    photos = {name: as_rgb(getattr(skimage.data, name)()) for name in SKIMAGE_PHOTOS}
    photos["stereo_motorcycle"] = as_rgb(skimage.data.stereo_motorcycle()[0])
    for module, relative in (("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
                             ("sklearn", "datasets/images/china.jpg"), ("sklearn", "datasets/images/flower.jpg")):
        try:
            path = Path(__import__(module).__file__).parent / relative
        except ImportError:
            continue
        if path.is_file():
            photos[path.stem] = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    return photos


def world_frames(episodes: int) -> list[np.ndarray]:
    from actedit_ros.world.episode import REGIMES, generate_episode

    frames = []
    for seed in range(episodes):
        for regime in REGIMES:
            for size in ((64, 48), (320, 240)):
                frames += generate_episode(seed, regime, "test", size=size, num_frames=3).frames
    return frames


def measure(predictor, episodes: int) -> dict:
    """Reconstruction PSNR of world frames and of photos (a threshold-free check is forced on)."""
    saved = predictor.domain_threshold
    predictor.domain_threshold = (0.0, Path("<calibration>"))
    try:
        world = [predictor.check_domain(f).psnr_db for f in world_frames(episodes)]
        photos = {name: predictor.check_domain(image).psnr_db for name, image in real_photos().items()}
    finally:
        predictor.domain_threshold = saved
    return {"world": world, "photos": photos}


def summary(measured: dict, margin: float) -> dict:
    world = np.array(measured["world"])
    photos = measured["photos"]
    threshold = float(world.min()) - margin
    missed = sorted(name for name, value in photos.items() if value >= threshold)
    return {"metric": METRIC, "min_psnr_db": round(threshold, 2),
            "rule": f"{margin} dB below the lowest world frame measured",
            "world_frames": {"n": int(world.size), "min": round(float(world.min()), 2),
                             "p1": round(float(np.percentile(world, 1)), 2),
                             "median": round(float(np.median(world)), 2), "max": round(float(world.max()), 2)},
            "photos": {"n": len(photos), "min": round(min(photos.values()), 2), "max": round(max(photos.values()), 2),
                       "each": {k: round(v, 2) for k, v in sorted(photos.items(), key=lambda kv: -kv[1])}},
            "photos_flagged": len(photos) - len(missed), "photos_missed": missed,
            "margin_db": round(float(world.min()) - max(photos.values()), 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model directory (default: the embedded default model)")
    parser.add_argument("--episodes", type=int, default=100, help="held-out world episodes per camera regime")
    parser.add_argument("--margin", type=float, default=1.0, help="dB below the lowest world frame for the threshold")
    parser.add_argument("--write", action="store_true", help=f"write {THRESHOLD_FILE} into the model directory")
    args = parser.parse_args(argv)
    from . import GoalPredictor

    predictor = GoalPredictor.from_pretrained(args.model, device="cpu")
    result = summary(measure(predictor, args.episodes), args.margin)
    text = json.dumps(result, indent=2)
    print(text)
    if args.write:
        path = predictor.components.model_path / THRESHOLD_FILE
        path.write_text(text + "\n")
        print(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
