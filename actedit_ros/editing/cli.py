"""actedit-predict: predict goal images for an instruction from image files, without ROS."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2

from .loading import SCHEDULERS, ModelLoadError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="actedit-predict",
        description="Predict what the scene will look like once an instruction is done (the goal image), "
                    "from a start image, with an InstructPix2Pix/EditAction model loaded from local disk.")
    parser.add_argument("image", type=Path, help="start image (PNG/JPEG; any size - the goal comes back at that size)")
    parser.add_argument("instruction", help='what the robot is about to do, e.g. "put the cup in the bowl"')
    parser.add_argument("-o", "--output", type=Path, default=Path("goal.png"),
                        help="output PNG; with --candidates N > 1, files are named <stem>_<i>.png (default: goal.png)")
    parser.add_argument("--model", default="", help="diffusers-format model directory (default: the embedded model)")
    parser.add_argument("--device", default="auto", help="auto (GPU when available), cpu, or cuda[:N] (default: auto)")
    parser.add_argument("--dtype", default="auto", help="auto (float16 on GPU, float32 on CPU), float16, bfloat16, float32")
    parser.add_argument("--scheduler", default="auto", choices=["auto", *sorted(SCHEDULERS)],
                        help="sampler: auto = the model's own (euler_ancestral for InstructPix2Pix, ddim for the "
                             "x0-prediction default model); ddim is deterministic given the seed (default: auto)")
    parser.add_argument("--steps", type=int, default=20, help="denoising steps (default: 20)")
    parser.add_argument("--text-guidance", type=float, default=7.5, help="text guidance scale (default: 7.5)")
    parser.add_argument("--image-guidance", type=float, default=1.5,
                        help="image guidance scale: higher stays closer to the start image (default: 1.5)")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed; same seed, same image on one device (default: 0)")
    parser.add_argument("--candidates", type=int, default=1,
                        help="number of goal candidates, sampled in one batch and written best first as ranked by "
                             "the editor (OUTPUT_0 is the best)")
    parser.add_argument("--goal-mode", choices=("composite", "plain"), default="composite",
                        help="composite: the start image itself outside the change the editor predicts (sharp "
                             "there, as the node's default goal_mode); plain: the editor's output (default: composite)")
    parser.add_argument("--goal-refiner", choices=("auto", "off"), default="auto",
                        help="auto: the model's goal refiner redraws the decoded goal at twice the working size when "
                             "the model folder ships one (goal_refiner/), as the node's goal_refiner; off: the decoded "
                             "goal (default: auto)")
    parser.add_argument("--spelling", choices=("correct", "as_written"), default="correct",
                        help="on: correct typos in the instruction before the text encoder reads it (printed as a "
                             "note), as the node's spelling parameter; as_written: the text as it is (default: correct)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .pipeline import GoalPredictor

    image = cv2.imread(str(args.image), cv2.IMREAD_COLOR)
    if image is None:
        print(f"actedit-predict: cannot read an image from {args.image}", file=sys.stderr)
        return 2
    try:
        predictor = GoalPredictor.from_pretrained(args.model or None, device=args.device, dtype=args.dtype,
                                                  scheduler=args.scheduler)
        result = predictor.predict(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), args.instruction, steps=args.steps,
                                   text_guidance=args.text_guidance, image_guidance=args.image_guidance,
                                   seed=args.seed, num_candidates=args.candidates,
                                   composite=args.goal_mode == "composite",
                                   refine=args.goal_refiner == "auto", correct_spelling=args.spelling == "correct")
    except (ModelLoadError, ValueError) as err:
        print(f"actedit-predict: {err}", file=sys.stderr)
        return 2
    args.output.parent.mkdir(parents=True, exist_ok=True)
    paths = [args.output] if len(result.images) == 1 else [
        args.output.with_name(f"{args.output.stem}_{i}{args.output.suffix}") for i in range(len(result.images))]
    for path, goal in zip(paths, result.images):
        cv2.imwrite(str(path), cv2.cvtColor(goal, cv2.COLOR_RGB2BGR))
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for note in result.notes:
        print(f"note: {note}")
    if result.scores:
        print("scores (best first): " + ", ".join(f"{path.name} {score:.4g}" for path, score in zip(paths, result.scores)))
    print(f"wrote {', '.join(map(str, paths))} in {result.seconds:.2f} s ({args.steps} steps, seed {args.seed})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
