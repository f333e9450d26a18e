"""Training seeds pooled per arm, for actedit-eval: an ablation whose arms were each trained with several seeds.

A model named ``ARM@SEED`` (``--model no_action_loss@1=DIR``) is one training seed of the arm ``ARM``.
:func:`pooled_arms_table` pools every arm's seeds (per goal mode) and gives its action accuracy with one standard
error, and its difference to the first arm (of the same goal mode) with that difference's standard error. Both errors are clustered by
episode: the predictions of one episode (every seed, both wordings) are averaged first and the episodes are the
independent samples, so neither the seeds' shared episodes nor an episode's two wordings count as independent.
"""
from __future__ import annotations

from collections import defaultdict

import numpy as np

SEED_MARK = "@"
PHRASING_ORDER = ("template", "paraphrase", "unseen_verb", "heldout")  # the table's column order


def arm_of(model: str) -> tuple[str, str] | None:
    """``"no_action_loss@1+composite"`` -> ``("no_action_loss+composite", "1")``; None for a model without a seed."""
    name, plus, mode = model.partition("+")
    arm, mark, seed = name.rpartition(SEED_MARK)
    if not mark or not arm or not seed:
        return None
    return arm + plus + mode, seed


def _episode_means(records: list[dict]) -> dict[str, float]:
    per_episode = defaultdict(list)
    for r in records:
        per_episode[r["episode"]].append(float(r["correct"]))
    return {episode: float(np.mean(values)) for episode, values in per_episode.items()}


def _mean_and_se(values: list[float]) -> tuple[float, float]:
    values = np.asarray(values, dtype=float)
    se = float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan")
    return float(values.mean()), se


def pooled_arms(records: list[dict]) -> list[dict]:
    """One row per arm, in the order the arms first appear: seeds, predictions, accuracy and its clustered SE,
    each seed's accuracy, the accuracy per wording kind, and the paired difference to the first arm of the same goal
    mode (``reference``)."""
    by_arm: dict[str, list[dict]] = defaultdict(list)
    seeds: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        parsed = arm_of(r["model"])
        if parsed is not None:
            by_arm[parsed[0]].append(r)
            seeds[parsed[0]][parsed[1]].append(bool(r["correct"]))
    rows, references = [], {}
    for arm, rs in by_arm.items():
        means = _episode_means(rs)
        accuracy, se = _mean_and_se(list(means.values()))
        row = {"arm": arm, "predictions": len(rs), "episodes": len(means), "accuracy": accuracy, "se": se,
               "per_seed": {seed: float(np.mean(c)) for seed, c in sorted(seeds[arm].items())},
               "by_phrasing": {kind: float(np.mean([r["correct"] for r in rs if r["phrasing"] == kind]))
                               for kind in dict.fromkeys(r["phrasing"] for r in rs)}}
        mode = arm.partition("+")[2]
        if mode not in references:
            references[mode] = (arm, means)
        else:
            row["reference"], reference = references[mode]
            shared = sorted(set(means) & set(reference))
            if shared:
                row["difference"], row["difference_se"] = _mean_and_se([means[e] - reference[e] for e in shared])
        rows.append(row)
    return rows


def pooled_arms_table(records: list[dict]) -> str:
    """Markdown table of :func:`pooled_arms` (empty when no model is named ARM@SEED)."""
    rows = pooled_arms(records)
    if not rows:
        return ""
    seen = {kind for row in rows for kind in row["by_phrasing"]}
    kinds = [k for k in PHRASING_ORDER if k in seen] + sorted(seen - set(PHRASING_ORDER))
    lines = ["", f"Training seeds pooled per arm (models named ARM{SEED_MARK}SEED; standard errors clustered by "
                 f"episode; the difference is paired, per episode, against the first arm of the same goal mode):", "",
             "| arm | seeds | predictions | action acc. | per seed | vs first arm | "
             + " | ".join(f"acc. {kind}" for kind in kinds) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(kinds)]
    for row in rows:
        per_seed = ", ".join(f"{seed}: {100 * acc:.1f}%" for seed, acc in row["per_seed"].items())
        difference = (f"{100 * row['difference']:+.1f} ± {100 * row['difference_se']:.1f} ({row['reference']})"
                      if "difference" in row else "-")
        by_kind = " | ".join(f"{100 * row['by_phrasing'][k]:.0f}%" if k in row["by_phrasing"] else "-"
                             for k in kinds)
        lines.append(f"| {row['arm']} | {len(row['per_seed'])} | {row['predictions']} | "
                     f"{100 * row['accuracy']:.1f}% ± {100 * row['se']:.1f} | {per_seed} | {difference} | "
                     f"{by_kind} |")
    return "\n".join(lines) + "\n"
