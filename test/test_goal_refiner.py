"""The goal refiner: its files, its training stage, what the shipped one does to goals, and the pipeline around it."""
import json

import cv2
import numpy as np
import pytest
import torch

from actedit_ros.editing.goal_refiner import REFINER_DIR, GoalRefiner, load_refiner, refine_goals
from actedit_ros.world import generate_episode
from actedit_ros.world.evaluate import psnr
from actedit_ros.world.goal_refiner_training import train_goal_refiner
from actedit_ros.world.vae_training import fixed_encoder_vae


def test_a_saved_refiner_loads_back_and_a_broken_config_names_its_file(tmp_path):
    torch.manual_seed(0)
    refiner = GoalRefiner(channels=(8, 16, 16))
    for p in refiner.parameters():  # the head starts at zero: give it weights so the round trip means something
        p.data.normal_(0, 0.1)
    refiner.save(tmp_path / REFINER_DIR)
    loaded = load_refiner(tmp_path)
    goal, start = torch.rand(2, 3, 24, 32) * 2 - 1, torch.rand(2, 3, 24, 32) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(refiner.half().float()(goal, start), loaded(goal, start), atol=1e-4)
    assert load_refiner(tmp_path / "elsewhere") is None  # a model without one
    (tmp_path / REFINER_DIR / "config.json").write_text("{}")
    with pytest.raises(ValueError, match="config.json"):
        load_refiner(tmp_path)


def test_a_fresh_refiner_blends_goal_and_start_evenly():
    """The head starts at zero, so training starts from the average of the two inputs, not from noise."""
    goal, start = torch.ones(1, 3, 12, 16), -torch.ones(1, 3, 12, 16)
    with torch.no_grad():
        assert torch.allclose(GoalRefiner()(goal, start), torch.zeros(1, 3, 12, 16))


def test_the_refiner_stage_resumes_exactly_and_reports_held_out_psnr(tmp_path):
    vae = fixed_encoder_vae()
    common = dict(batch_size=2, crop=(16, 12), num_pairs=8, checkpoint_every=1)
    straight = train_goal_refiner(vae, (16, 12), tmp_path / "straight", steps=2, **common)
    assert train_goal_refiner(vae, (16, 12), tmp_path / "resumed", steps=2, stop_at=1, **common) == {"done": False}
    resumed = train_goal_refiner(vae, (16, 12), tmp_path / "resumed", steps=2, **common)
    assert resumed == straight
    assert set(straight["held_out_psnr_db"]) == {"decoded_goal", "refined", "start_frame"}
    assert straight["size"] == [32, 24] and straight["held_out_pairs"] == 2
    a, b = (load_refiner(tmp_path / run) for run in ("straight", "resumed"))
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_editor_goals_are_the_models_own_goals_kept_per_chunk_and_feed_the_refiner(tmp_path):
    from actedit_ros.editing.loading import packaged_default_model_dir
    from actedit_ros.world.goal_refiner_training import editor_goals

    goals, correct = editor_goals(packaged_default_model_dir(), (64, 48), 3, tmp_path / "goals", chunk=2, steps=2)
    assert goals.shape == (3, 48, 64, 3) and goals.dtype == np.uint8 and correct.dtype == bool
    chunks = sorted(p.name for p in (tmp_path / "goals").iterdir())
    assert chunks == ["goals_000000_2.npz", "goals_000002_2.npz"]
    (tmp_path / "goals" / chunks[1]).unlink()  # as if interrupted there: only that chunk is predicted again
    again, _ = editor_goals(packaged_default_model_dir(), (64, 48), 3, tmp_path / "goals", chunk=2, steps=2)
    assert np.array_equal(goals, again)
    editor = (np.repeat(goals, 4, axis=0)[:8], np.ones(8, bool))
    metrics = train_goal_refiner(fixed_encoder_vae(), (64, 48), tmp_path / "refiner", steps=1, batch_size=2,
                                 num_pairs=8, editor=editor)
    assert metrics["held_out_editor_goals"] == 1  # the last tenth of the 6 training pairs' accepted goals
    assert set(metrics["held_out_editor_psnr_db"]) == {"decoded_goal", "refined", "start_frame"}


@pytest.fixture(scope="module")
def predictor():
    from actedit_ros.editing import GoalPredictor

    return GoalPredictor.from_pretrained(None, device="cpu")


def _decoded(predictor, frame):
    """The default model's VAE decode of a frame at its working size: what the editor draws for that scene."""
    from actedit_ros.editing.out_of_domain import decode_latents

    size = (64, 48)
    return decode_latents(predictor.components.vae, predictor.image_latents(frame, size))


def test_the_shipped_refiner_gives_back_the_unchanged_scene_sharper_and_keeps_a_change(predictor):
    assert predictor.refiner is not None
    unchanged, changed = [], []
    for seed in range(6):
        ep = generate_episode(10_000 + seed, ("fixed", "head")[seed % 2], "test", size=(128, 96), num_frames=2)
        start, end = ep.frames[0], ep.frames[-1]
        for goal_frame, out in ((start, unchanged), (end, changed)):
            decoded = _decoded(predictor, goal_frame)
            refined = refine_goals(predictor.refiner, decoded[None], start)[0]
            upscaled = cv2.resize(decoded, (128, 96), interpolation=cv2.INTER_CUBIC)
            out.append((psnr(refined, goal_frame), psnr(upscaled, goal_frame), psnr(refined, start)))
    unchanged, changed = np.array(unchanged), np.array(changed)
    assert (unchanged[:, 0] > unchanged[:, 1] + 3).all()  # the scene itself comes back, several dB nearer
    assert (changed[:, 0] > changed[:, 1]).all()  # a decoded end state is refined toward the end frame ...
    assert (changed[:, 0] > changed[:, 2]).all()  # ... and not pulled back to the start frame


def test_goals_are_refined_at_the_input_size_and_refine_false_gives_the_decoded_goal(predictor):
    frame = generate_episode(3, "fixed", "test", size=(320, 240), num_frames=2).frames[0]
    refined = predictor.predict(frame, "open the drawer", steps=3, seed=1)
    plain = predictor.predict(frame, "open the drawer", steps=3, seed=1, refine=False)
    assert refined.images[0].shape == frame.shape and len(refined.unrefined_images) == 1
    assert any("goal refiner" in note for note in refined.notes)
    assert plain.unrefined_images == [] and not any("goal refiner" in note for note in plain.notes)
    assert np.array_equal(plain.images[0], refined.unrefined_images[0])
    assert not np.array_equal(plain.images[0], refined.images[0])


def test_actedit_eval_compare_refiner_scores_both_goals_from_one_prediction(tmp_path):
    from actedit_ros.world.evaluate import main

    out = tmp_path / "eval"
    assert main(["--episodes", "1", "--steps", "2", "--size", "128", "96", "--goal-mode", "plain", "composite",
                 "--compare-refiner", "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    models = {r["model"] for r in records}
    assert models == {"copy input", "default", "default+composite", "default+unrefined",
                      "default+unrefined+composite"}
    seconds = {r["model"]: r["seconds"] for r in records if r["episode"] == records[0]["episode"]}
    assert seconds["default"] == seconds["default+unrefined"]  # one prediction served both
