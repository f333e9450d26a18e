"""Progress scorer: anchors (start -> 0, goal -> 1), ordering on world episodes, registration, lighting,
distractors, hysteresis, bad input, metrics, and the actedit-eval-progress CLI end to end."""
import json

import cv2
import numpy as np
import pytest

from actedit_ros.progress import (
    FrameRegistrar,
    PixelMSEProgress,
    ProgressScorer,
    ReachedFilter,
    SSIMProgress,
    false_reached_rate,
    ssim,
    value_order_correlation,
)
from actedit_ros.progress.evaluate import main as eval_main
from actedit_ros.progress.perturbations import add_distractor, add_lighting_drift, perturb
from actedit_ros.world import generate_episode

SIZE = (160, 120)


@pytest.fixture(scope="module")
def fixed_episode():
    return generate_episode(seed=2, regime="fixed", split="test", size=SIZE, num_frames=12)


@pytest.fixture(scope="module")
def head_episode():
    return generate_episode(seed=5, regime="head", split="test", size=SIZE, num_frames=12)


def _scene(seed: int = 0, size=(160, 120)) -> np.ndarray:
    """A textured synthetic image (shapes on a gradient) that features can lock on to."""
    rng = np.random.default_rng(seed)
    w, h = size
    image = np.zeros((h, w, 3), np.uint8)
    image[:] = np.linspace(60, 180, w, dtype=np.uint8)[None, :, None]
    for _ in range(25):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        if rng.random() < 0.5:
            cv2.rectangle(image, (x, y), (x + int(rng.integers(6, 30)), y + int(rng.integers(6, 30))), colour, -1)
        else:
            cv2.circle(image, (x, y), int(rng.integers(4, 14)), colour, -1)
    return image


def _with_block(image: np.ndarray, colour=(230, 30, 30), box=(60, 40, 100, 80)) -> np.ndarray:
    out = image.copy()
    x0, y0, x1, y1 = box
    cv2.rectangle(out, (x0, y0), (x1, y1), colour, -1)
    return out


# ------------------------------------------------------------------------------------------------------- anchors
@pytest.mark.parametrize("regime", ["fixed", "head"])
def test_start_scores_zero_and_goal_scores_one(regime, fixed_episode, head_episode):
    ep = fixed_episode if regime == "fixed" else head_episode
    scorer = ProgressScorer(ep.frames[0], ep.frames[-1])
    start, goal = scorer.score(ep.frames[0]), scorer.score(ep.frames[-1])
    assert start.registered and goal.registered
    assert start.progress < 0.02 and start.similarity < 0.05
    assert goal.progress > 0.98 and goal.similarity > 0.9
    assert not start.reached and goal.reached


def test_identical_start_and_goal_is_rejected():
    image = _scene()
    with pytest.raises(ValueError, match="identical"):
        ProgressScorer(image, image.copy())


def test_frames_of_another_size_are_resized():
    start = _scene()
    goal = _with_block(start)
    scorer = ProgressScorer(start, goal)
    big_goal = cv2.resize(goal, (320, 240), interpolation=cv2.INTER_LINEAR)
    assert scorer.score(big_goal).progress > 0.9
    assert scorer.score(cv2.resize(start, (320, 240), interpolation=cv2.INTER_LINEAR)).progress < 0.1


# ------------------------------------------------------------------------------------------------------ ordering
@pytest.mark.parametrize("regime", ["fixed", "head"])
def test_progress_is_ordered_on_a_world_episode(regime, fixed_episode, head_episode):
    ep = fixed_episode if regime == "fixed" else head_episode
    scorer = ProgressScorer(ep.frames[0], ep.frames[-1])
    results = [scorer.score(frame) for frame in ep.frames]
    assert all(r.registered for r in results)
    progress = [r.progress for r in results]
    assert value_order_correlation(progress) > 0.9
    # calibrated, not just ordered: close to the true progress on average
    assert np.mean(np.abs(np.array(progress) - ep.progress)) < 0.2


def test_progress_is_ordered_under_perturbations(head_episode):
    frames = perturb(head_episode.frames, seed=5)
    scorer = ProgressScorer(frames[0], head_episode.frames[-1])
    assert value_order_correlation([scorer.score(f).progress for f in frames]) > 0.9


# -------------------------------------------------------------------------------------------------- registration
def test_camera_motion_is_registered():
    start = _scene(1, (200, 150))
    goal = _with_block(start)
    # the goal seen by a camera that moved: rotated 4 degrees, zoomed 5 %, shifted
    matrix = cv2.getRotationMatrix2D((100, 75), 4.0, 1.05)
    matrix[:, 2] += (6, -4)
    moved = cv2.warpAffine(goal, matrix, (200, 150), borderMode=cv2.BORDER_REFLECT)
    registered = ProgressScorer(start, goal).score(moved)
    assert registered.registered and registered.inliers >= 15
    assert registered.progress > 0.85
    unregistered = ProgressScorer(start, goal, registration="none").score(moved)
    assert unregistered.progress < registered.progress - 0.1


@pytest.mark.parametrize("kind", ["noise", "other scene"])
def test_registration_failure_is_flagged_and_progress_held(kind):
    start = _scene(1)
    goal = _with_block(start)
    scorer = ProgressScorer(start, goal)
    if kind == "noise":
        bad = np.random.default_rng(0).integers(0, 256, start.shape, dtype=np.uint8)
    else:
        bad = cv2.flip(_scene(7), -1)
    assert scorer.score(bad).registered is False
    assert scorer.score(bad).status  # says why
    halfway = cv2.addWeighted(start, 0.5, goal, 0.5, 0)
    before = scorer.update(halfway)
    failed = scorer.update(bad)
    assert before.registered and not failed.registered
    assert failed.progress == pytest.approx(before.progress)
    assert failed.reached == before.reached


def test_textureless_scene_falls_back_to_ecc():
    rng = np.random.default_rng(0)
    smooth = cv2.resize(cv2.GaussianBlur(rng.integers(0, 256, (15, 20), dtype=np.uint8), (0, 0), 1.0), (200, 150),
                        interpolation=cv2.INTER_CUBIC)
    matrix = cv2.getRotationMatrix2D((100, 75), 3.0, 1.03)
    matrix[:, 2] += (5, -3)
    moved = cv2.warpAffine(smooth, matrix, (200, 150), borderMode=cv2.BORDER_REFLECT)
    for method, expect_ok in (("features", False), ("auto", True), ("ecc", True)):
        registrar = FrameRegistrar(method=method)
        registrar.add_reference(smooth)
        result = registrar.register(moved)
        assert result.ok is expect_ok, (method, result.reason)
        if expect_ok:
            assert result.method == "ecc"
            # maps the moved frame back: the centre lands where it came from
            truth = np.linalg.inv(np.vstack([matrix, [0, 0, 1]]))
            centre = np.array([[[100.0, 75.0]]], np.float32)
            error = cv2.perspectiveTransform(centre, result.homography) - cv2.perspectiveTransform(centre, truth)
            assert np.abs(error).max() < 1.5
    noise = rng.integers(0, 256, smooth.shape, dtype=np.uint8)
    assert not registrar.register(noise).ok


def test_blank_start_view_falls_back_to_a_fixed_camera():
    start = np.full((120, 160, 3), 128, np.uint8)
    goal = _with_block(start)
    scorer = ProgressScorer(start, goal)
    assert scorer.registrar is None and "fixed camera" in scorer.registration_note
    assert scorer.score(goal).progress > 0.95 and scorer.score(start).progress < 0.05


# ------------------------------------------------------------------------------------------- lighting, distractors
def test_lighting_change_alone_barely_moves_progress(fixed_episode):
    ep = fixed_episode
    scorer = ProgressScorer(ep.frames[0], ep.frames[-1])
    for index in (0, len(ep.frames) // 2, len(ep.frames) - 1):
        frame = ep.frames[index]
        for gain in ((0.7, 0.7, 0.7), (1.25, 1.2, 1.1), (0.9, 1.0, 1.15)):
            relit = np.clip(frame.astype(np.float32) * np.array(gain, np.float32), 0, 255).astype(np.uint8)
            assert abs(scorer.score(relit).progress - scorer.score(frame).progress) < 0.08, (index, gain)
    # the naive baseline is thrown off by the same change at the start frame
    dark = (ep.frames[0].astype(np.float32) * 0.7).astype(np.uint8)
    assert PixelMSEProgress(ep.frames[0], ep.frames[-1]).score(dark) > 0.2


def test_distractor_outside_the_changed_region_is_ignored():
    start = _scene(3)
    goal = _with_block(start, box=(100, 20, 140, 60))
    scorer = ProgressScorer(start, goal)
    hand = start.copy()
    cv2.ellipse(hand, (40, 90), (22, 16), 0, 0, 360, (224, 172, 138), -1)
    cv2.line(hand, (40, 90), (0, 119), (60, 90, 150), 20)
    assert scorer.score(hand).progress < 0.05
    assert PixelMSEProgress(start, goal).score(hand) > 0.15


def test_distractor_over_the_changed_region_pulls_towards_undecided_not_to_the_goal():
    start = _scene(3)
    goal = _with_block(start, box=(100, 20, 140, 60))
    scorer = ProgressScorer(start, goal)
    frames = add_distractor([start, start, start], np.random.default_rng(0), through=(120, 40))
    assert scorer.score(frames[1]).progress < 0.6


def test_perturbations_leave_the_start_frame_alone_and_are_deterministic(fixed_episode):
    a = perturb(fixed_episode.frames, seed=3)
    b = perturb(fixed_episode.frames, seed=3)
    assert np.array_equal(a[0], fixed_episode.frames[0])
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    lit = add_lighting_drift(fixed_episode.frames, np.random.default_rng(0))
    assert not np.array_equal(lit[5], fixed_episode.frames[5])


# ---------------------------------------------------------------------------------------------- hysteresis, EMA
def test_reached_does_not_flicker_around_the_threshold():
    latch = ReachedFilter(threshold=0.8, hysteresis=0.1, ema_alpha=1.0, confirm_frames=1)
    decisions = [latch.update(v)[1] for v in [0.5, 0.78, 0.82, 0.78, 0.82, 0.77, 0.83, 0.75, 0.81]]
    assert decisions == [False, False] + [True] * 7
    assert latch.update(0.65)[1] is False  # clearly below threshold - hysteresis: off again


def test_scorer_reached_is_stable_on_a_stream_oscillating_around_the_threshold():
    start = _scene(4)
    goal = _with_block(start, box=(40, 30, 120, 90))
    scorer = ProgressScorer(start, goal, reached_threshold=0.8, hysteresis=0.1)
    blends = [0.2, 0.5, 0.74, 0.86, 0.76, 0.86, 0.74, 0.84, 0.75, 0.86, 0.74]
    frames = [cv2.addWeighted(start, 1 - a, goal, a, 0) for a in blends]
    raw = [scorer.score(f).progress for f in frames]
    assert sum((a >= 0.8) != (b >= 0.8) for a, b in zip(raw, raw[1:])) >= 4  # the raw signal does cross
    reached = [scorer.update(f).reached for f in frames]
    switches = sum(a != b for a, b in zip(reached, reached[1:]))
    assert switches <= 1


def test_confirm_frames_and_smoothing():
    latch = ReachedFilter(threshold=0.8, hysteresis=0.1, ema_alpha=0.5, confirm_frames=2)
    assert latch.update(1.0) == (1.0, False)  # first value initialises the average, one frame is not enough
    value, reached = latch.update(0.6)
    assert value == pytest.approx(0.8) and reached
    latch.reset()
    assert latch.value is None and not latch.reached


# ----------------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((0, 0, 3), np.uint8), "too small"),
        (np.zeros((120, 160, 3), np.float32), "dtype uint8"),
        (np.zeros((120, 160), np.uint8), r"shape \(H, W, 3\)"),
        (np.zeros((120, 160, 4), np.uint8), r"shape \(H, W, 3\)"),
        ([[1, 2, 3]], "numpy array"),
        (None, "numpy array"),
    ],
)
def test_bad_frames_raise_clear_errors(bad, message):
    start = _scene()
    scorer = ProgressScorer(start, _with_block(start))
    with pytest.raises(ValueError, match=message):
        scorer.update(bad)
    with pytest.raises(ValueError, match="start_rgb"):
        ProgressScorer(bad, start)
    with pytest.raises(ValueError, match="goal_rgb"):
        ProgressScorer(start, bad)


@pytest.mark.parametrize("option", [{"reached_threshold": 1.5}, {"hysteresis": -0.1}, {"ema_alpha": 0.0},
                                    {"confirm_frames": 0}, {"registration": "magic"}, {"num_scales": 0},
                                    {"noise_floor": -1}])
def test_bad_options_raise_clear_errors(option):
    start = _scene()
    with pytest.raises(ValueError, match=next(iter(option))):
        ProgressScorer(start, _with_block(start), **option)


# -------------------------------------------------------------------------------------------------------- metrics
def test_value_order_correlation():
    assert value_order_correlation([0.0, 0.1, 0.5, 0.9]) == pytest.approx(1.0)
    assert value_order_correlation([0.9, 0.5, 0.1, 0.0]) == pytest.approx(-1.0)
    assert value_order_correlation([0.3, 0.3, 0.3]) == 0.0
    assert value_order_correlation([0.0, 0.2, 0.1, 0.3], order=[0, 2, 1, 3]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 2"):
        value_order_correlation([0.5])
    with pytest.raises(ValueError, match="same shape"):
        value_order_correlation([0.1, 0.2], order=[0, 1, 2])


def test_false_reached_rate_counts_only_frames_before_completion():
    assert false_reached_rate([False, True, True, True], [0.0, 0.5, 1.0, 1.0]) == pytest.approx(0.5)
    assert np.isnan(false_reached_rate([True], [1.0]))


def test_first_reached_is_where_the_action_would_end():
    from actedit_ros.progress.eval_scoring import EpisodeScores, summarise

    def episode(reached, held):  # one learned-scorer run: reached per frame, share of the hold frames reached
        scores = EpisodeScores("e", "open_drawer", "fixed", "clean", True, [0.0, 0.5, 0.9, 1.0])
        scores.progress["learned"] = [0.0, 0.5, 0.9, 1.0]
        scores.reached["learned"], scores.held_reached["learned"] = reached, held
        scores.reached_after_hold["learned"] = held > 0
        return scores

    early = episode([False, True, False, False], 0.0)  # fired at true progress 0.5, then cleared
    late = episode([False, False, False, True], 1.0)
    held_only = episode([False, False, False, False], 0.4)
    never = episode([False, False, False, False], 0.0)
    assert [e.first_reached_progress("learned") for e in (early, late, held_only, never)] == [0.5, 1.0, 1.0, None]
    row = summarise([early, late, held_only, never], ("learned",))[0]
    assert row["succeeds_right"] == pytest.approx(0.75)  # early counts as a success of the action ...
    assert row["reached_right"] == pytest.approx(0.5)  # ... but not as reached by the end
    assert row["ends_early"] == pytest.approx(0.25)


def test_baselines_anchor_at_start_and_goal():
    start = _scene()
    goal = _with_block(start)
    assert ssim(start, start) == pytest.approx(1.0)
    for baseline in (PixelMSEProgress(start, goal), SSIMProgress(start, goal)):
        assert baseline.score(start) == pytest.approx(0.0, abs=1e-6)
        assert baseline.score(goal) == pytest.approx(1.0, abs=1e-6)


# ----------------------------------------------------------------------------------------------------------- CLI
def test_eval_progress_cli_end_to_end(tmp_path, capsys):
    out = tmp_path / "eval"
    code = eval_main(["--episodes", "1", "--size", "96x72", "--frames", "6", "--out", str(out), "--goal", "end-frame"])
    assert code == 0
    report = (out / "progress_eval.md").read_text()
    assert "end-frame" in report and "| perturbed | head | learned |" in report and "actedit-eval-progress" in report
    data = json.loads((out / "progress_eval.json").read_text())
    assert len(data["episodes"]) == 1 * 2 * 2  # episodes x regimes x conditions
    rows = {(r["condition"], r["regime"], r["method"]): r for r in data["summary"]}
    assert len(rows) == 2 * 2 * 4
    assert all(-1.0 <= r["voc_mean"] <= 1.0 for r in rows.values())
    assert all(r["goal_right"] == r["episodes"] for r in rows.values())  # a true goal is always right
    assert all(0.0 <= r["negative_reached"] <= 1.0 for r in rows.values())
    assert all(r["succeeds_right"] >= r["reached_right"] for r in rows.values())  # reached at the end fired before
    assert all(0.0 <= r["ends_early"] <= 1.0 for r in rows.values())
    image = cv2.imread(str(out / "progress_curves.png"))
    assert image is not None and image.shape[0] > 100
    assert "| clean | fixed | pixel scorer |" in capsys.readouterr().out


def test_eval_progress_cli_predicted_goals(tmp_path):
    out = tmp_path / "eval"
    code = eval_main(["--episodes", "1", "--size", "96x72", "--frames", "6", "--out", str(out), "--regimes", "fixed",
                      "--conditions", "clean", "--editor-steps", "2", "--methods", "learned", "SSIM", "--no-plot"])
    assert code == 0
    data = json.loads((out / "progress_eval.json").read_text())
    assert data["settings"]["goal"] == "predicted"
    assert [r["method"] for r in data["summary"]] == ["learned", "SSIM"]
    assert "predicted by the embedded default" in (out / "progress_eval.md").read_text()


def test_eval_progress_cli_rejects_bad_arguments(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        eval_main(["--size", "big", "--out", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "320x240" in capsys.readouterr().err
    code = eval_main(["--episodes", "1", "--reached-threshold", "2", "--out", str(tmp_path / "x")])
    assert code == 1
    assert "reached_threshold" in capsys.readouterr().err
