"""Compositing (editing/compositing.py): outside the predicted change the goal is the start frame itself."""
import numpy as np
import pytest
import torch

from actedit_ros.editing import GoalPredictor
from actedit_ros.editing.compositing import change_mask, composite_goal
from actedit_ros.world import generate_episode


def _scene(size=(64, 48), seed=0):
    rng = np.random.default_rng(seed)
    return np.kron(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8), np.ones((size[1] // 6, size[0] // 8, 1), np.uint8))


def test_mask_is_empty_without_effect_and_covers_where_the_effect_peaks():
    size = (64, 48)
    assert float(change_mask(np.zeros((12, 16), np.float32), size).max()) == 0.0
    effect = np.full((12, 16), 0.1, np.float32)  # a faint effect everywhere ...
    effect[2:6, 2:6] = 4.0  # ... and a strong one on a patch (latent pixels 2-5 = working pixels 8-23)
    mask = change_mask(effect, size)
    assert mask.shape == (48, 64) and mask.dtype == np.float32
    assert mask[10:20, 10:20].min() > 0.9  # inside the change
    assert mask[:, 44:].max() < 0.01 and mask[36:, :].max() < 0.01  # far from it: nothing
    assert 0.05 < mask.mean() < 0.4


def test_the_effect_map_is_what_the_instruction_adds(predictor):
    """Sampled with the blank text as the instruction, the text and image-only branches agree: no effect at all.
    With a real instruction the map is positive and not uniform."""
    episode = generate_episode(3, "fixed", "test", size=(64, 48), num_frames=2)
    latents = predictor.image_latents(episode.frames[0], (64, 48))
    blank = predictor.blank_embedding()
    sample = lambda text: predictor._sample(text, blank, latents, 1, 4, 7.5, 1.5,  # noqa: E731
                                            torch.Generator().manual_seed(0), torch.float32)
    _, none = sample(blank)
    assert none.shape == (1, *latents.shape[-2:]) and float(none.abs().max()) == 0.0
    _, effect = sample(predictor.text_embedding(episode.instruction))
    assert float(effect.min()) >= 0.0 and float(effect.max()) > 2 * float(effect.median())


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
    # the plain prediction's change masks give the same composite (what actedit-eval does for both goal modes)
    assert len(plain.change_masks) == 1 and float(plain.change_masks[0].mean()) == plain.change_fractions[0]
    np.testing.assert_array_equal(composite_goal(start, plain.image, plain.change_masks[0]), mixed.image)


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
