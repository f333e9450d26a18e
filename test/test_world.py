"""The synthetic world: determinism, every action visibly changes the scene, progress, cameras, split, readout, dataset."""
import json

import cv2
import numpy as np
import pytest

from actedit_ros.world import ACTION_TYPES, HELD_OUT_COMBOS, PHRASINGS, generate_episode
from actedit_ros.world.dataset import main as dataset_main
from actedit_ros.world.episode import possible_actions
from actedit_ros.world.readout import NO_CHANGE, EndStateReadout


def _first_seed_per_action(split="train", limit=200):
    seeds = {}
    for seed in range(limit):
        ep = generate_episode(seed, "fixed", split, (32, 32), num_frames=2)
        seeds.setdefault(ep.action, seed)
        if len(seeds) == len(ACTION_TYPES):
            break
    return seeds


@pytest.fixture(scope="module")
def action_seeds():
    return _first_seed_per_action()


def test_at_least_twelve_action_types():
    assert len(ACTION_TYPES) >= 12
    assert set(PHRASINGS) == set(ACTION_TYPES) == set(HELD_OUT_COMBOS)


def test_same_seed_same_episode_other_seed_other_episode():
    a = generate_episode(7, "head", "train", (48, 40), num_frames=5)
    b = generate_episode(7, "head", "train", (48, 40), num_frames=5)
    c = generate_episode(8, "head", "train", (48, 40), num_frames=5)
    assert a.instruction == b.instruction and a.action == b.action
    assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames))
    assert not np.array_equal(a.frames[0], c.frames[0])


def test_frames_have_requested_size_and_dtype():
    ep = generate_episode(3, "fixed", "test", (320, 240), num_frames=4)
    assert len(ep.frames) == 4
    for frame in ep.frames:
        assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8


def test_every_action_changes_the_frame_and_progress_is_monotone(action_seeds):
    assert set(action_seeds) == set(ACTION_TYPES), "some action types never drawn"
    for action, seed in action_seeds.items():
        ep = generate_episode(seed, "fixed", "train", (64, 64), num_frames=8)
        assert ep.action == action
        change = np.abs(ep.frames[0].astype(int) - ep.frames[-1].astype(int)).max(axis=2)
        assert (change > 40).sum() >= 12, f"{action}: the end frame barely differs from the start"
        assert ep.progress[0] == 0.0 and ep.progress[-1] == 1.0
        assert np.all(np.diff(ep.progress) >= 0), f"{action}: progress decreases"
        assert 0 < ep.progress[len(ep.progress) // 2] < 1
        assert ep.states[0] != ep.states[-1]


def test_fixed_camera_keeps_the_view_head_camera_moves_it():
    fixed = generate_episode(11, "fixed", "train", (64, 64), num_frames=6)
    head = generate_episode(11, "head", "train", (64, 64), num_frames=6)
    assert fixed.instruction == head.instruction  # same scene and action, only the camera differs
    assert np.allclose(fixed.cameras, [0, 0, 0, 1])
    drift = np.abs(head.cameras[-1] - head.cameras[0])
    assert drift[0] > 0.02 or drift[1] > 0.01 or drift[2] > 1.0
    # the wall band (untouched by any action) stays put with a fixed camera and moves with the head camera
    wall_fixed = np.abs(fixed.frames[0][:10].astype(int) - fixed.frames[-1][:10].astype(int)).mean()
    wall_head = np.abs(head.frames[0][:10].astype(int) - head.frames[-1][:10].astype(int)).mean()
    assert wall_head > wall_fixed + 2


def test_split_holds_out_combos_and_phrasings():
    train_combos, test_phrasings, test_held = set(), set(), 0
    for seed in range(120):
        tr = generate_episode(seed, "fixed", "train", (16, 16), num_frames=2)
        assert tr.phrasing == "template"
        assert HELD_OUT_COMBOS[tr.action] != tr.target_colour, "held-out combination in the training split"
        train_combos.add((tr.action, tr.target_colour))
        te = generate_episode(seed, "fixed", "test", (16, 16), num_frames=2)
        test_phrasings.add(te.phrasing)
        test_held += te.held_out_combo
        if te.held_out_combo:
            assert te.target_colour == HELD_OUT_COMBOS[te.action]
    assert test_phrasings == {"template", "paraphrase", "unseen_verb"}
    assert 20 < test_held < 100
    assert not train_combos & {(a, c) for a, c in HELD_OUT_COMBOS.items()}
    # held-out phrasings never produce a training instruction, and the unseen verbs never occur in training
    for action, kinds in PHRASINGS.items():
        template_words = {w for p in kinds["template"] for w in p.split()}
        for pattern in kinds["unseen_verb"]:
            assert pattern.split()[0] not in template_words


def test_train_and_test_episodes_differ():
    train = {generate_episode(s, "fixed", "train", (16, 16), 2).frames[0].tobytes() for s in range(20)}
    test = {generate_episode(s, "fixed", "test", (16, 16), 2).frames[0].tobytes() for s in range(20)}
    assert not train & test


def test_readout_picks_the_true_end_state_and_no_change_for_the_start(action_seeds):
    for action, seed in action_seeds.items():
        for regime in ("fixed", "head"):
            ep = generate_episode(seed, regime, "train", (64, 64), num_frames=3)
            readout = EndStateReadout(ep)
            assert len(readout.labels) >= 3  # the true end, no change, and alternatives
            result = readout.read(ep.frames[-1])
            assert result.correct, f"{action}/{regime}: read {result.label}"
            assert readout.read(ep.frames[0]).label == NO_CHANGE
            # a different image size is resized to the episode's
            big = cv2.resize(ep.frames[-1], (128, 128), interpolation=cv2.INTER_CUBIC)
            assert readout.read(big).correct


def test_readout_tells_the_distractor_apart():
    """With a same-kind distractor, the same action done to the distractor is a different, wrong end state."""
    for seed in range(200):
        ep = generate_episode(seed, "fixed", "train", (64, 64), num_frames=2)
        if any(name == "distractor0" and a == ep.action for a, name, _ in possible_actions(ep.start_state)):
            break
    else:
        pytest.fail("no episode with an actionable distractor in 200 seeds")
    readout = EndStateReadout(ep)
    wrong = [lab for lab in readout.labels if lab.startswith(f"{ep.action}:distractor0")][0]
    from actedit_ros.world.episode import end_state_of
    _, target, ref = wrong.split(":") + [""] * (3 - len(wrong.split(":")))
    wrong_image = ep.render(end_state_of(ep.start_state, ep.action, "distractor0", ref))
    result = readout.read(wrong_image)
    assert result.label == wrong and not result.correct


def test_readout_reads_the_right_action_with_another_draw_of_its_randomness_as_right():
    """Where a picked-up thing is held is random (x in 0.5 +- 0.12): a goal that holds the right thing elsewhere in
    that range shows the right action (one readout per episode's own draw read 20 of 90 such renders wrong)."""
    from actedit_ros.world.episode import end_state_of
    episodes = [ep for ep in (generate_episode(s, r, "test", (128, 96), num_frames=2) for s in range(150, 230)
                              for r in ("fixed", "head")) if ep.action == "pick_up"][:6]
    assert len(episodes) == 6
    for ep in episodes:
        readout = EndStateReadout(ep)
        start = ep.start_state.copy()
        start.hand_visible = 0.0
        for draw in range(1000, 1005):
            state = end_state_of(start, ep.action, ep.target, ep.reference, seed=draw)
            result = readout.read(ep.render(state, ep.cameras[-1]))
            assert result.correct, f"{ep.episode_id} draw {draw}: read {result.label}"


def test_readout_rejects_non_rgb():
    ep = generate_episode(0, "fixed", "train", (32, 32), num_frames=2)
    with pytest.raises(ValueError, match="RGB"):
        EndStateReadout(ep).read(np.zeros((32, 32), np.uint8))


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="regime"):
        generate_episode(0, "shaky", "train")
    with pytest.raises(ValueError, match="split"):
        generate_episode(0, "fixed", "val")
    with pytest.raises(ValueError, match="num_frames"):
        generate_episode(0, "fixed", "train", num_frames=1)


def test_dataset_writer_writes_index_split_by_episode(tmp_path):
    assert dataset_main(["--out", str(tmp_path), "--train", "6", "--test", "4", "--size", "40", "32"]) == 0
    records = [json.loads(line) for line in (tmp_path / "index.jsonl").read_text().splitlines()]
    assert len(records) == 10
    assert sum(r["split"] == "train" for r in records) == 6
    videos = {s: {r["video"] for r in records if r["split"] == s} for s in ("train", "test")}
    assert not videos["train"] & videos["test"]
    for r in records:
        assert {"id", "input_image", "edited_image", "instruction", "video", "split"} <= set(r)
        img = cv2.imread(str(tmp_path / r["edited_image"]))
        assert img.shape == (32, 40, 3)
    # re-running keeps the existing pairs
    mtime = (tmp_path / records[0]["input_image"]).stat().st_mtime_ns
    assert dataset_main(["--out", str(tmp_path), "--train", "6", "--test", "4", "--size", "40", "32"]) == 0
    assert (tmp_path / records[0]["input_image"]).stat().st_mtime_ns == mtime


def test_dataset_cli_reports_bad_input(tmp_path, capsys):
    assert dataset_main(["--out", str(tmp_path), "--train", "-1", "--test", "0"]) == 2
    assert "error" in capsys.readouterr().err


def test_readout_calls_noise_unreadable():
    ep = generate_episode(5, "fixed", "test", (64, 64), num_frames=2)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    result = EndStateReadout(ep).read(noise)
    assert result.label == "unreadable" and not result.correct


def test_other_action_starts_from_the_same_view_and_does_something_else():
    from actedit_ros.world.negatives import other_action

    for seed, regime in ((0, "fixed"), (3, "head")):
        ep = generate_episode(seed, regime, "test", (80, 60), num_frames=6)
        other = other_action(ep)
        assert len(other.frames) == len(ep.frames)
        assert (other.action, other.target) != (ep.action, ep.target)
        assert np.array_equal(other.frames[0], ep.frames[0])  # same start, same camera
        assert np.abs(other.frames[-1].astype(int) - ep.frames[-1]).max() > 40  # a different end
        again = other_action(ep)
        assert all(np.array_equal(a, b) for a, b in zip(other.frames, again.frames))  # deterministic


def test_dataset_writer_keeps_frames_and_negatives_for_the_progress_model(tmp_path):
    from actedit_ros.training.data import load_progress_records

    args = ["--out", str(tmp_path), "--train", "3", "--test", "1", "--size", "40", "32", "--frames", "5",
            "--negatives"]
    assert dataset_main(args) == 0
    records = load_progress_records(tmp_path, "train")
    assert len(records) == 3
    for record in records:
        assert len(record.frames) == len(record.negative_frames) == 5
        assert record.frame_progress[0] == 0.0 and record.frame_progress[-1] == 1.0
        assert record.frame_progress == sorted(record.frame_progress)
        assert {"seed", "regime", "action"} <= set(record.world)
        assert np.array_equal(cv2.imread(str(record.frames[0])), cv2.imread(str(record.start)))
        assert np.array_equal(cv2.imread(str(record.frames[-1])), cv2.imread(str(record.end)))
    mtime = records[0].negative_frames[2].stat().st_mtime_ns
    assert dataset_main(args) == 0  # resumes: nothing rewritten
    assert records[0].negative_frames[2].stat().st_mtime_ns == mtime
    assert dataset_main(["--out", str(tmp_path / "x"), "--train", "1", "--test", "0", "--negatives"]) == 2
