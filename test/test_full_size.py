"""The full-size (SD-1.5 InstructPix2Pix) path without downloads: shipped configs and the prepared device check.

The full-size model itself is never built here (gigabytes): its configs are checked on torch's meta device, and
the device script runs end to end with the narrow variant of the same layout.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from actedit_ros.editing import GoalPredictor, load_components
from actedit_ros.editing.full_size import (SD15_PARAMETERS, ensure_model, instantiate, load_configs,
                                           write_clip_tokenizer)

ROOT = Path(__file__).resolve().parent.parent


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_shipped_configs_have_sd15_ip2p_parameter_counts_on_the_meta_device():
    configs = load_configs()
    with torch.device("meta"):
        modules = {name: instantiate(configs, name) for name in ("unet", "vae", "text_encoder")}
    counts = {name: parameter_count(module) for name, module in modules.items()}
    assert all(p.device.type == "meta" for module in modules.values() for p in module.parameters())
    # SD-1.5's UNet has 859,520,964 parameters; InstructPix2Pix's conv_in takes 4 more channels (4 x 320 x 3 x 3).
    assert counts["unet"] == 859_520_964 + 4 * 320 * 3 * 3
    assert 83.6e6 < counts["vae"] < 83.7e6 and 122.9e6 < counts["text_encoder"] < 123.1e6
    assert counts == SD15_PARAMETERS
    unet = modules["unet"].config
    assert (unet.in_channels, unet.cross_attention_dim) == (8, 768)
    assert list(unet.block_out_channels) == [320, 640, 1280, 1280]
    assert modules["text_encoder"].config.hidden_size == 768 and modules["text_encoder"].config.num_hidden_layers == 12


def test_generated_tokenizer_has_clip_size_and_special_ids(tmp_path):
    from transformers import CLIPTokenizer

    write_clip_tokenizer(tmp_path, 49408, 49406, 49407)
    tokenizer = CLIPTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert len(tokenizer) == 49408
    ids = tokenizer("open the drawer", padding="max_length", max_length=77)["input_ids"]
    assert len(ids) == 77 and ids[0] == 49406 and ids[-1] == 49407
    assert max(ids[1:ids.index(49407)]) < 200  # characters, not fillers


def test_tiny_variant_builds_once_and_loads_through_the_project_loader(tmp_path):
    out = ensure_model(tmp_path / "arch", tiny=True)
    stamp = (out / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns
    assert ensure_model(tmp_path / "arch", tiny=True) == out  # cached: not rebuilt
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").stat().st_mtime_ns == stamp
    assert not list(out.rglob("*.bin"))
    components = load_components(out, device="cpu")
    assert type(components.text_encoder).__name__ == "CLIPTextModel"
    assert components.text_encoder.config.vocab_size == 49408 and components.unet.config.in_channels == 8
    predictor = GoalPredictor(components)
    predictor.resolution = 64
    image = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    result = predictor.predict(image, "open the drawer", steps=2)
    assert result.image.shape == image.shape and not result.fp32_fallback


def test_interrupted_build_is_redone(tmp_path):
    out = ensure_model(tmp_path / "arch", tiny=True)
    marker = out / ".actedit_complete.json"
    marker.write_text(json.dumps({"configs": "other"}))
    (out / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"truncated")
    ensure_model(out, tiny=True)
    load_components(out, device="cpu")  # would fail on the truncated file


def test_device_check_script_runs_tiny_on_cpu(tmp_path):
    """The GPU script, end to end on a CPU with the narrow model: the table has every row and the guard fires.

    The torch.compile row is skipped here (tracing alone takes ~10 s on this machine); on a GPU a compiler failure
    becomes a "failed" row rather than a crash.
    """
    env = {**os.environ, "PYTHON": sys.executable, "ACTEDIT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "table.md"
    run = subprocess.run(["bash", "bench/device_check.sh", "--tiny", "--steps", "2", "--repeats", "1",
                          "--train-batch", "1", "--skip-compile", "--output", str(out)],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    table = out.read_text()
    for row in ("prediction 64 px, 2 steps", "4 candidates in one batch", "channels-last off",
                "bfloat16", "| fp16 non-finite guard, decode forced to NaN unless float32 | redone in float32 |",
                "training step, 64 px, batch 1, full EditAction objective"):
        assert row in table, row
    assert "failed" not in table and "NOT redone" not in table


def test_device_check_script_names_the_prepare_step_when_wheels_are_missing(tmp_path):
    """A Python that lacks the packages, without bench/wheels/: a clear error naming the preparation command."""
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\nexit 1\n")
    fake.chmod(0o755)
    copy = tmp_path / "repo"
    (copy / "bench").mkdir(parents=True)
    (copy / "bench" / "device_check.sh").write_text((ROOT / "bench" / "device_check.sh").read_text())
    run = subprocess.run(["bash", "bench/device_check.sh"], cwd=copy, env={**os.environ, "PYTHON": str(fake)},
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2
    assert "bench/wheels/ does not exist" in run.stderr and "--prepare-wheels" in run.stderr


def test_bench_full_size_labels_what_it_extrapolated_instead_of_running(tmp_path, monkeypatch):
    monkeypatch.setenv("ACTEDIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import bench_full_size

    measured = json.loads(json.dumps(bench_full_size.predict_worker(64, [2, 3], tiny=True, max_seconds=1e6)))
    assert set(measured["seconds"]) == {"2", "3"} and not measured["extrapolated"]
    assert measured["peak_rss_mib"] > 100 and measured["cache_vae"] > 0
    skipped = json.loads(json.dumps(bench_full_size.predict_worker(64, [2, 3], tiny=True, max_seconds=0)))
    assert set(skipped["seconds"]) == {"2"} and set(skipped["extrapolated"]) == {"3"}  # the smallest always runs
    rows = bench_full_size.prediction_rows(skipped, 64, [2, 3], "load", tiny=True)
    assert "extrapolated" not in rows[0].value
    assert "(extrapolated)" in rows[1].value and "NOT measured" in rows[1].detail
    rows = bench_full_size.prediction_rows(measured, 64, [2, 3], "load", tiny=True)
    assert all("extrapolated" not in row.value and "architecture-identical" in row.figure for row in rows)
