"""`python -m actedit_ros.demo` (what `make demo` runs), end to end in a subprocess, kept short."""
import csv
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2

from actedit_ros.editing import default_model_is_placeholder

ROOT = Path(__file__).resolve().parents[1]


def run_demo(*args, timeout=300):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "actedit_ros.demo", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_demo_writes_the_run_folder_and_reaches_its_own_goal(tmp_path):
    result = run_demo("--frames", "16", "--rate", "20", "--out", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    run_dir = Path(re.search(r"run folder: (.+)", out).group(1).strip())
    assert run_dir.parent == tmp_path.resolve()
    for name in ("start.png", "goal.png", "last.png"):
        image = cv2.imread(str(run_dir / name))
        assert image is not None and image.shape == (240, 320, 3), name
    plot = cv2.imread(str(run_dir / "progress.png"))
    assert plot is not None and plot.shape[0] > 200 and plot.shape[1] > 300
    rows = list(csv.DictReader(open(run_dir / "progress.csv")))
    live = [r for r in rows if r["stale"] == "False"]
    assert live and any(r["stale"] == "True" for r in rows)  # the camera stops at the end: flagged stale
    assert all(0.0 <= float(r["progress"]) <= 1.0 for r in rows)
    assert "planner: OK" in out and "progress" in out
    # the goal the node predicted (embedded default editor) is reached once the replayed action is done
    assert "scorer: learned progress scorer" in out and "reached: True" in out, out
    assert live[-1]["reached"] == "True"  # and never before 80% of the action was done:
    assert not any(r["reached"] == "True" for r in live if float(r["true_progress"]) < 0.8)
    # until a trained default model ships, the demo says plainly that the goal comes from a random model
    assert ("RANDOMLY INITIALISED" in out) == default_model_is_placeholder()


def test_demo_rejects_bad_arguments():
    result = run_demo("--frames", "1")
    assert result.returncode == 2
    assert "--frames must be at least 2" in result.stderr and "Traceback" not in result.stderr
    result = run_demo("--help")
    assert result.returncode == 0 and "--episode-seed" in result.stdout
