"""actedit-eval pools training seeds named ARM@SEED per arm, with episode-clustered standard errors."""
import json

import numpy as np
import pytest

from actedit_ros.world.evaluate import main as eval_main
from actedit_ros.world.seed_pooling import arm_of, pooled_arms


def _records(model: str, correct: dict[str, list[bool]]) -> list[dict]:
    """Two wordings per episode: the world's (template) and the held-out one."""
    return [{"episode": episode, "model": model, "correct": c, "phrasing": kind, "psnr": 20.0, "ssim": 0.8,
             "regime": "fixed", "action": "open_door", "held_out_combo": False}
            for episode, values in correct.items() for c, kind in zip(values, ("template", "heldout"))]


def test_arm_of_reads_the_seed_and_keeps_the_goal_mode():
    assert arm_of("no_action_loss@1+composite") == ("no_action_loss+composite", "1")
    assert arm_of("editaction@0") == ("editaction", "0")
    assert arm_of("v3+composite") is None
    assert arm_of("copy input") is None


def test_pooling_clusters_by_episode_and_pairs_the_difference():
    full = _records("full@0", {"a": [True, True], "b": [True, False], "c": [False, False]}) + \
        _records("full@1", {"a": [True, False], "b": [True, True], "c": [False, False]})
    ablated = _records("ablated@0", {"a": [False, False], "b": [True, False], "c": [False, False]}) + \
        _records("ablated@1", {"a": [True, False], "b": [False, False], "c": [False, False]})
    rows = {row["arm"]: row for row in pooled_arms(full + ablated)}
    assert list(rows) == ["full", "ablated"]
    full_means = np.array([0.75, 0.75, 0.0])  # per episode: both seeds, both wordings
    assert rows["full"]["accuracy"] == pytest.approx(full_means.mean())
    assert rows["full"]["se"] == pytest.approx(full_means.std(ddof=1) / np.sqrt(3))
    assert rows["full"]["per_seed"] == {"0": pytest.approx(0.5), "1": pytest.approx(0.5)}
    assert rows["full"]["by_phrasing"] == {"template": pytest.approx(4 / 6), "heldout": pytest.approx(2 / 6)}
    differences = np.array([0.25, 0.25, 0.0]) - full_means
    assert rows["ablated"]["difference"] == pytest.approx(differences.mean())
    assert rows["ablated"]["difference_se"] == pytest.approx(differences.std(ddof=1) / np.sqrt(3))
    assert rows["ablated"]["reference"] == "full"
    assert "difference" not in rows["full"]


def test_each_goal_mode_is_compared_with_its_own_first_arm():
    correct = {"a": [True, False], "b": [True, True]}
    records = [r for model in ("full@0", "full@0+composite", "ablated@0", "ablated@0+composite")
               for r in _records(model, correct)]
    references = {row["arm"]: row.get("reference") for row in pooled_arms(records)}
    assert references == {"full": None, "full+composite": None, "ablated": "full",
                          "ablated+composite": "full+composite"}


def test_merge_writes_the_pooled_table(tmp_path):
    runs = []
    for i, model in enumerate(["full@0", "full@1", "ablated@0"]):
        path = tmp_path / f"run{i}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in _records(model, {"a": [True, False], "b": [True, True]})))
        runs.append(str(path))
    assert eval_main(["--merge", *runs, "--out", str(tmp_path / "merged")]) == 0
    table = (tmp_path / "merged" / "table.md").read_text()
    assert "Training seeds pooled per arm" in table
    assert "| full | 2 | 8 | 75.0% ± 25.0 | 0: 75.0%, 1: 75.0% | - |" in table
    assert "| ablated | 1 | 4 | 75.0% ± 25.0 | 0: 75.0% | +0.0 ± 0.0 (full) | 100% | 50% |" in table
