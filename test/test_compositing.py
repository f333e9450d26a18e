"""Compositing (editing/compositing.py): outside the predicted change the goal is the start frame itself."""
import numpy as np
import pytest

from actedit_ros.editing import GoalPredictor
from actedit_ros.editing.compositing import change_mask, composite_goal
from actedit_ros.world import generate_episode


def _scene(size=(64, 48), seed=0):
    rng = np.random.default_rng(seed)
    return np.kron(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), np.ones((size[1] // 6, size[0] // 8, 1), np.uint8))


def test_mask_is_empty_for_no_change_and_covers_a_changed_patch_only():
    start = _scene()
    assert float(change_mask(start, start).max()) == 0.0
    goal = start.copy()
    goal[8:24, 8:24] = 255 - goal[8:24, 8:24]
    mask = change_mask(goal, start)
    assert mask[12:20, 12:20].min() > 0.9  # inside the change
    assert mask[:, 48:].max() < 0.01  # far from it: nothing
    small = start.copy()
    small[30, 40] = np.clip(small[30, 40].astype(int) + 10, 0, 255)  # a faint single-pixel difference
    assert float(change_mask(small, start).max()) == 0.0


def test_composite_is_the_start_outside_the_mask_and_the_goal_inside():
    start, goal = _scene(seed=1), _scene(seed=2)
    mask = np.zeros((12, 16), np.float32)
    mask[:, :8] = 1.0
    out = composite_goal(start, goal, mask)
    np.testing.assert_array_equal(out[:, 40:], start[:, 40:])
    np.testing.assert_array_equal(out[:, :24], goal[:, :24])


@pytest.fixture(scope="module")
def predictor():
    return GoalPredictor.from_pretrained(None, device="cpu")


def test_predictor_composite_keeps_the_start_frame_where_nothing_changes(predictor):
    episode = generate_episode(3, "fixed", "test", size=(320, 240), num_frames=2)
    start = episode.frames[0]
    plain = predictor.predict(start, episode.instruction, steps=4, seed=0)
    mixed = predictor.predict(start, episode.instruction, steps=4, seed=0, composite=True)
    assert not plain.composited and mixed.composited
    assert plain.change_fractions == mixed.change_fractions and 0.0 < mixed.change_fractions[0] < 1.0
    same = np.all(mixed.image == start, axis=2)
    assert 0.05 < same.mean() < 1.0  # part of the frame is the start itself ...
    assert not np.all(plain.image == start, axis=2)[same].all()  # ... where the plain goal is not
    inside = ~same  # where the composite takes (some of) the goal it is nearer the goal than the start
    to_plain = np.abs(mixed.image.astype(int) - plain.image.astype(int))[inside].mean()
    to_start = np.abs(mixed.image.astype(int) - start.astype(int))[inside].mean()
    assert to_plain < to_start
    np.testing.assert_array_equal(predictor.predict(start, episode.instruction, steps=4, seed=0).image, plain.image)


def test_actedit_predict_writes_composite_and_plain_goals_at_the_input_size(tmp_path, capsys):
    import cv2

    from actedit_ros.editing.cli import main

    start = generate_episode(5, "fixed", "test", size=(160, 120), num_frames=2).frames[0]
    source = tmp_path / "start.png"
    cv2.imwrite(str(source), cv2.cvtColor(start, cv2.COLOR_RGB2BGR))
    goals = {}
    for mode in ("composite", "plain"):
        out = tmp_path / f"{mode}.png"
        assert main([str(source), "open the drawer", "-o", str(out), "--steps", "2", "--device", "cpu",
                     "--goal-mode", mode]) == 0
        goals[mode] = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
        assert goals[mode].shape == start.shape
    kept = np.all(goals["composite"] == start, axis=2).mean()
    assert kept > np.all(goals["plain"] == start, axis=2).mean()
    assert main([str(tmp_path / "missing.png"), "open the drawer"]) == 2
    assert "cannot read" in capsys.readouterr().err
