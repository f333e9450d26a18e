"""Best-of-N for actedit-eval: the model samples N candidate goals, ranks them itself, and is judged on its first.

``actedit-eval --best-of 1 4 8`` makes one record per (episode, model, N), named by :func:`model_label`; the records
of N > 1 also say whether any candidate was right (``any_correct``), the ceiling a perfect ranking would reach.
:func:`best_of_n_table` summarises them: action accuracy of the top candidate, that ceiling, and the time per
prediction (sampling all N candidates, decoding and ranking them).
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

RANK_NEGATIVES = ("empty", "world")


def rank_negatives(episode, kind: str, count: int = 4) -> tuple[str, ...]:
    """Negative instructions for ranking: the empty one, plus (``world``) the template instructions of up to
    ``count`` other actions the episode's scene allows, as a planner that knows its alternatives could pass."""
    if kind == "empty":
        return ("",)
    if kind != "world":
        raise ValueError(f"--rank-negatives must be one of {RANK_NEGATIVES}, got {kind!r}")
    from .episode import make_instruction, possible_actions

    start = episode.start_state.copy()
    own = (episode.action, episode.target, episode.reference)
    others = [a for a in possible_actions(start) if a != own][:count]
    rng = np.random.default_rng(0)
    return ("",) + tuple(dict.fromkeys(make_instruction(rng, start, *a, "template") for a in others))


def model_label(name: str, n: int, best_of: tuple[int, ...]) -> str:
    """Record name of ``name`` at N = ``n``: the plain name when only one N is evaluated."""
    return name if len(best_of) == 1 else f"{name} best of {n}"


def best_of_n_table(records: list[dict]) -> str:
    """Markdown table of the best-of-N records (empty when there are none)."""
    rows = defaultdict(list)
    for r in records:
        if "best_of" in r:
            rows[(r["model"].rsplit(" best of ", 1)[0], r["best_of"])].append(r)
    if not rows:
        return ""
    lines = ["", "Best of N (the top candidate as ranked by the editor itself; 'any candidate' is the share of "
                 "episodes where at least one of the N candidates shows the true end state):", "",
             "| model | N | episodes | action acc. (top candidate) | any candidate right | s / prediction (mean) | "
             "s / prediction (p95) |", "|---|---|---|---|---|---|---|"]
    for (model, n), rs in sorted(rows.items()):
        accuracy = np.mean([r["correct"] for r in rs])
        ceiling = np.mean([r["any_correct"] for r in rs])
        seconds = np.array([r["seconds"] for r in rs])
        stderr = np.sqrt(accuracy * (1 - accuracy) / len(rs))
        lines.append(f"| {model} | {n} | {len(rs)} | {100 * accuracy:.1f}% ± {100 * stderr:.1f} | "
                     f"{100 * ceiling:.1f}% | {seconds.mean():.2f} | {np.percentile(seconds, 95):.2f} |")
    return "\n".join(lines) + "\n"
