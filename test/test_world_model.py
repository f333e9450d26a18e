"""The default-model recipe's pieces: the fixed VAE encoder, the exported layout loading through the project's
loader, and actedit-eval's table."""
import json

import numpy as np
import pytest
import torch

from actedit_ros.world import generate_episode
from actedit_ros.world.default_export import TEXT_ENCODER_PACKAGE, export_default
from actedit_ros.world.train_default import IMAGE_SIZE, write_init_model
from actedit_ros.world.vae_training import fixed_encoder_vae


def test_fixed_encoder_gives_block_averages_and_a_near_deterministic_posterior():
    vae = fixed_encoder_vae()
    frames = np.stack([generate_episode(s, "fixed", "train", IMAGE_SIZE, 2).frames[0] for s in range(4)])
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    with torch.no_grad():
        posterior = vae.encode(x).latent_dist
    expected = torch.nn.functional.avg_pool2d(x, 4)
    assert posterior.mean.shape == (4, 4, IMAGE_SIZE[1] // 4, IMAGE_SIZE[0] // 4)
    assert torch.allclose(posterior.mean[:, :3], expected, atol=1e-3)
    assert float(posterior.std.max()) < 1e-3
    # channel 3 sees where an edge lies inside a block: a left-bright block and a right-bright block differ in sign
    left = torch.full((1, 3, 8, 8), -1.0)
    left[..., :2] = 1.0
    right = torch.full((1, 3, 8, 8), -1.0)
    right[..., 2:4] = 1.0
    with torch.no_grad():
        d_left = vae.encode(left).latent_dist.mean[0, 3, 0, 0]
        d_right = vae.encode(right).latent_dist.mean[0, 3, 0, 0]
    assert d_left > 0.3 and d_right < -0.3


@pytest.fixture(scope="module")
def exported_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("default_model")
    vae = fixed_encoder_vae()
    vae.save_pretrained(root / "vae_src", safe_serialization=True)
    init = write_init_model(root / "vae_src", root / "init")
    return export_default(init, out_dir=root / "export", notes={"test": True})


def test_exported_model_layout_is_small_fp16_and_names_the_text_encoder_package(exported_model):
    index = json.loads((exported_model / "model_index.json").read_text())
    assert index["_actedit_text_encoder_package"] == TEXT_ENCODER_PACKAGE
    assert not (exported_model / "text_encoder").exists()
    scheduler = json.loads((exported_model / "scheduler" / "scheduler_config.json").read_text())
    assert scheduler["prediction_type"] == "sample" and scheduler["clip_sample"] is False
    assert (exported_model / "README.md").read_text().startswith("# Embedded default model")
    from safetensors import safe_open

    for part in ("unet", "vae"):
        path = exported_model / part / "diffusion_pytorch_model.safetensors"
        with safe_open(str(path), framework="pt") as handle:
            assert handle.get_tensor(next(iter(handle.keys()))).dtype == torch.float16
    size = sum(p.stat().st_size for p in exported_model.rglob("*") if p.is_file())
    assert size < 30e6


def test_exported_model_loads_through_the_project_loader_and_predicts_at_the_input_size(exported_model):
    from actedit_ros.editing import GoalPredictor

    predictor = GoalPredictor.from_pretrained(str(exported_model), device="cpu", scheduler="ddim")
    frame = generate_episode(0, "fixed", "test", (320, 240), 2).frames[0]
    pred = predictor.predict(frame, "open the drawer", steps=2, seed=0)
    assert pred.images[0].shape == (240, 320, 3)
    sampler_config = predictor.components.scheduler.config
    assert sampler_config["prediction_type"] == "sample"


def test_actedit_eval_writes_a_table_with_the_copy_baseline(tmp_path):
    from actedit_ros.editing.tiny import make_tiny_model
    from actedit_ros.world.evaluate import main

    model = make_tiny_model(tmp_path / "tiny", resolution=32)
    out = tmp_path / "eval"
    assert main(["--model", f"tiny={model}", "--episodes", "1", "--steps", "1", "--size", "32", "24",
                 "--out", str(out)]) == 0
    table = (out / "table.md").read_text()
    assert "| copy input | 2 |" in table and "| tiny | 2 |" in table
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    copy = [r for r in records if r["model"] == "copy input"]
    assert all(not r["correct"] for r in copy)  # copying the input never shows the action done
    assert (out / "examples.png").exists()


def test_actedit_eval_rejects_bad_input(tmp_path, capsys):
    from actedit_ros.world.evaluate import main

    assert main(["--model", str(tmp_path / "missing"), "--episodes", "1", "--out", str(tmp_path)]) == 2
    assert "error" in capsys.readouterr().err
    assert main(["--episodes", "0", "--out", str(tmp_path)]) == 2


def test_actedit_eval_merges_runs_keeping_one_copy_baseline(tmp_path):
    from actedit_ros.world.evaluate import main

    rows = {"regime": "fixed", "action": "push", "phrasing": "template", "held_out_combo": False,
            "instruction": "push the cup", "psnr": 20.0, "ssim": 0.5, "read_as": "no_change", "seconds": 0.0}
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        lines = [{**rows, "episode": "e0", "model": m, "correct": m != "copy input"} for m in ("copy input", name)]
        (tmp_path / name / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    out = tmp_path / "merged"
    assert main(["--merge", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out)]) == 0
    table = (out / "table.md").read_text()
    assert table.count("| copy input | 1 |") == 1 and "| a | 1 |" in table and "| b | 1 |" in table
    assert main(["--merge", str(tmp_path / "missing"), "--out", str(out)]) == 2
    # a run over later episodes (--first-episode) brings its own copy baseline
    (tmp_path / "a_more").mkdir()
    lines = [{**rows, "episode": "e1", "model": m, "correct": False} for m in ("copy input", "a")]
    (tmp_path / "a_more" / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert main(["--merge", str(tmp_path / "a"), str(tmp_path / "b"), str(tmp_path / "a_more"), "--out", str(out)]) == 0
    table = (out / "table.md").read_text()
    assert "| copy input | 2 |" in table and "| a | 2 |" in table and "| b | 1 |" in table


def test_actedit_eval_first_episode_picks_later_test_seeds(tmp_path):
    from actedit_ros.editing.tiny import make_tiny_model
    from actedit_ros.world.evaluate import main

    model = make_tiny_model(tmp_path / "tiny", resolution=32)
    out = tmp_path / "eval"
    assert main(["--model", f"tiny={model}", "--episodes", "1", "--first-episode", "3", "--steps", "1",
                 "--size", "32", "24", "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert {r["episode"] for r in records} == {"test-fixed-000003", "test-head-000003"}
    assert main(["--first-episode", "-1", "--out", str(out)]) == 2


def test_train_default_stage4_step_counts_parse_as_increasing_phases(capsys):
    from actedit_ros.world.train_default import build_parser

    parser = build_parser()
    from actedit_ros.world.train_default import RECIPES

    assert parser.parse_args([]).ip2p_steps is None  # the recipe's own
    assert RECIPES["v2"].ip2p_steps == (1600, 8000)  # what the shipped model went through
    assert parser.parse_args(["--ip2p-steps", "500"]).ip2p_steps == [500]
    for bad in ("8000,1600", "0", "1600,x", "1600,1600"):
        with pytest.raises(SystemExit):
            parser.parse_args(["--ip2p-steps", bad])
        assert "--ip2p-steps" in capsys.readouterr().err


def test_learned_autoencoder_resumes_exactly_and_reports_held_out_psnr(tmp_path):
    from safetensors.torch import load_file

    from actedit_ros.world.dataset import write_dataset
    from actedit_ros.world.vae_training import train_autoencoder

    data = write_dataset(tmp_path / "ds", 6, 2, (64, 48), progress=False)
    straight = train_autoencoder(data, tmp_path / "straight", steps=4, batch_size=2, crop=(32, 24), checkpoint_every=2)
    (tmp_path / "resumed").mkdir()
    assert train_autoencoder(data, tmp_path / "resumed", steps=4, batch_size=2, crop=(32, 24), checkpoint_every=3,
                             stop_at=1) == {}  # interrupted after step 1 (checkpointed there), then resumed
    resumed = train_autoencoder(data, tmp_path / "resumed", steps=4, batch_size=2, crop=(32, 24), checkpoint_every=2)
    a = load_file(str(tmp_path / "straight" / "checkpoint" / "vae.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "checkpoint" / "vae.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert straight["kind"] == "learned" and straight["held_out_frames"] == 4  # the test split's start/end frames
    assert 0 < straight["reconstruction_psnr_db"] == resumed["reconstruction_psnr_db"]
    assert (tmp_path / "straight" / "vae" / "config.json").exists()
    with pytest.raises(ValueError, match="multiples of 8"):
        train_autoencoder(data, tmp_path / "bad", steps=1, crop=(30, 24))


def test_decoder_refinement_keeps_the_encoder_and_so_every_cached_latent(tmp_path):
    from diffusers import AutoencoderKL

    from actedit_ros.world.dataset import write_dataset
    from actedit_ros.world.vae_training import refine_decoder, train_autoencoder

    data = write_dataset(tmp_path / "ds", 6, 2, (64, 48), progress=False)
    train_autoencoder(data, tmp_path / "vae", steps=2, batch_size=2, crop=(32, 24))
    metrics = refine_decoder(data, tmp_path / "vae" / "vae", tmp_path / "refined", steps=3, batch_size=2,
                             crop=(32, 24), lr=1e-2)
    before = AutoencoderKL.from_pretrained(tmp_path / "vae" / "vae", local_files_only=True)
    after = AutoencoderKL.from_pretrained(tmp_path / "refined" / "vae", local_files_only=True)
    old, new = before.state_dict(), after.state_dict()
    encoder = [k for k in old if k.startswith(("encoder.", "quant_conv."))]
    decoder = [k for k in old if k.startswith("decoder.")]
    assert encoder and all(torch.equal(old[k], new[k]) for k in encoder)
    assert any(not torch.equal(old[k], new[k]) for k in decoder)
    assert after.config.scaling_factor == before.config.scaling_factor
    assert metrics["decoder_refine_steps"] == 3 and metrics["reconstruction_psnr_db"] > 0


def test_v3_export_takes_the_better_reconstructing_vae(tmp_path):
    from actedit_ros.world.train_default import RECIPES, _trained_vae

    for folder, psnr in (("vae", 28.7), ("vae_decoder", 28.1)):
        (tmp_path / folder / "vae").mkdir(parents=True)
        (tmp_path / folder / "metrics.json").write_text(json.dumps({"reconstruction_psnr_db": psnr}))
    assert _trained_vae(tmp_path, RECIPES["v3"]) == tmp_path / "vae" / "vae"  # the refinement did worse
    (tmp_path / "vae_decoder" / "metrics.json").write_text(json.dumps({"reconstruction_psnr_db": 30.2}))
    assert _trained_vae(tmp_path, RECIPES["v3"]) == tmp_path / "vae_decoder" / "vae"


def test_train_default_will_not_export_an_ablation_arm_into_the_package(tmp_path, capsys):
    from actedit_ros.world.train_default import main

    for arm in (["--ablation", "no_action_loss"], ["--finetune-seed", "1"]):
        assert main(["--recipe", "v3", "--work-dir", str(tmp_path), *arm, "--export-from", "editaction"]) == 2
        assert "give --export-to" in capsys.readouterr().err
    # with --export-to it goes on (and says there is nothing to export yet)
    assert main(["--recipe", "v3", "--work-dir", str(tmp_path), "--ablation", "no_action_loss",
                 "--export-from", "editaction", "--export-to", str(tmp_path / "out")]) == 2
    assert "no exported model in" in capsys.readouterr().err


def test_the_shipped_recipe_runs_every_stage_at_toy_size_and_resumes_without_retraining(tmp_path):
    """v2.2 at toy size (8 episodes, 2 steps per stage): dataset with rewordings, fixed-encoder VAE and its decoder
    in a second process, InstructPix2Pix, EditAction without rewordings, then stage 6 on from it with them, stage 6b
    on from that with mirrored pairs as well, then the goal refiner. A re-run of the same command skips every
    finished stage."""
    from safetensors.torch import load_file

    from actedit_ros.world.train_default import SHIPPED_RECIPE, main

    work = tmp_path / "work"
    argv = ["--recipe", SHIPPED_RECIPE, "--work-dir", str(work), "--train-episodes", "6", "--test-episodes", "2",
            "--decoder-steps", "2", "--ip2p-steps", "2", "--editaction-steps", "2", "--rewording-steps", "2",
            "--mirrored-steps", "2", "--goal-refiner-steps", "2", "--batch-size", "2", "--no-export"]
    assert main(argv) == 0
    config = {stage: json.loads((work / stage / "training_config.json").read_text())
              for stage in ("ip2p", "editaction", "rewording", "mirrored")}
    assert config["editaction"]["flags"]["instruction_variant_prob"] == 0  # stages 1-5 stay v2's
    assert config["rewording"]["flags"]["instruction_variant_prob"] == 0.5
    assert config["rewording"]["flags"]["pretrained_model"] == str(work / "editaction")
    assert config["rewording"]["resolved"]["cross_attention"] == "frozen"
    assert config["rewording"]["exported_step"] == 2
    mirrored = config["mirrored"]["flags"]
    assert mirrored["random_flip"] and not config["rewording"]["flags"]["random_flip"]
    assert mirrored["pretrained_model"] == str(work / "rewording") and mirrored["seed"] == 1
    assert mirrored["instruction_variant_prob"] == 0.5
    assert mirrored["latent_cache_file"] != config["rewording"]["flags"]["latent_cache_file"]  # mirrored latents too
    records = [json.loads(line) for line in (work / "dataset" / "index.jsonl").read_text().splitlines()]
    assert len(records) == 8  # the decoder's process built nothing bigger
    assert all(len(r["instruction_variants"]) == 8 for r in records if r["split"] == "train")
    assert json.loads((work / "vae" / "metrics.json").read_text())["decoder_steps"] == 2
    refiner = json.loads((work / "goal_refiner" / "metrics.json").read_text())
    assert refiner["steps"] == 2 and refiner["size"] == [128, 96]
    assert "held_out_editor_goals" not in refiner  # the shipped recipe trains on VAE reconstructions only

    weights = work / "mirrored" / "unet" / "diffusion_pytorch_model.safetensors"
    logged = {stage: (work / stage / "logs" / "metrics.jsonl").read_text() for stage in config}
    before = load_file(str(weights))
    assert main(argv) == 0
    assert {stage: (work / stage / "logs" / "metrics.jsonl").read_text() for stage in config} == logged  # no new step
    after = load_file(str(weights))
    assert all(torch.equal(before[k], after[k]) for k in before)

    out = tmp_path / "exported"
    assert main(["--recipe", SHIPPED_RECIPE, "--work-dir", str(work), "--export-from", "mirrored",
                 "--export-to", str(out)]) == 0
    notes = (out / "README.md").read_text()
    assert '"rewording_exported_step": 2' in notes and '"mirrored_exported_step": 2' in notes
    assert (out / "goal_refiner" / "model.safetensors").is_file()
