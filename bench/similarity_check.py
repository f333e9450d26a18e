"""What ``Progress.similarity`` reads against the embedded default's goals and against the true end frame.

    python bench/similarity_check.py [--episodes 12]     # about 30 s on the 2-core VM (not part of `make bench`)

For held-out synthetic episodes (320x240, 16 frames, alternating head and fixed camera) it predicts the goal with
the embedded default model (20 steps, seed 0), scores every frame with :class:`ProgressScorer` against that goal and
against the episode's true last frame, and prints the last frame's similarity (median), the median over episodes
of each episode's highest similarity, and the share of frames whose similarity is above 0. README ("Interfaces")
quotes its output.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch

from actedit_ros.editing import GoalPredictor
from actedit_ros.progress import ProgressScorer
from actedit_ros.world import generate_episode


def similarities(scorer: ProgressScorer, frames) -> list[float]:
    return [scorer.update(frame).similarity for frame in frames]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=12, help="held-out episodes (seeds 0..N-1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    predictor = GoalPredictor.from_pretrained(None, device="cpu")
    rows: dict[str, list[list[float]]] = {"predicted goal": [], "true end frame": []}
    for seed in range(args.episodes):
        episode = generate_episode(seed=seed, regime="fixed" if seed % 2 else "head", split="test",
                                   size=(320, 240), num_frames=16)
        predicted = predictor.predict(episode.frames[0], episode.instruction, steps=20, seed=0).images[0]
        for name, goal in (("predicted goal", predicted), ("true end frame", episode.frames[-1])):
            try:
                rows[name].append(similarities(ProgressScorer(episode.frames[0], goal), episode.frames))
            except ValueError as err:  # e.g. a goal practically identical to the start
                print(f"episode {seed}, {name}: not scoreable ({err})")
    for name, sims in rows.items():
        print(f"{name}: {len(sims)} episodes; last-frame similarity median {np.median([s[-1] for s in sims]):.3f}; "
              f"highest per episode, median {np.median([max(s) for s in sims]):.3f}; frames above 0: "
              f"{100 * np.mean([np.mean(np.array(s) > 0) for s in sims]):.0f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
