"""actedit-train checkpoints hold safetensors and JSON only, resuming never unpickles, and an older-format checkpoint
(accelerate's save_state, with pickles) resumes degraded: weights and step kept, optimizer moments afresh, a warning.
The shared optimizer/schedule state helpers round-trip. Tiny random models and a real dataset on CPU."""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from actedit_ros.training import state_io
from actedit_ros.training.train import train

from test_training import squares, tiny_model, train_args  # noqa: F401 - squares and tiny_model are fixtures

COMMON = ("--max-train-pairs", "12", "--learning-rate", "1e-2", "--use-ema", "--ema-decay", "0.9",
          "--action-loss-weight", "0.05", "--gradient-accumulation-steps", "2", "--lr-scheduler", "linear",
          "--checkpointing-steps", "2", "--cache-latents", "--random-flip", "--max-train-steps", "4")


def run_args(model: Path, dataset: Path, out: Path, *extra: str):
    return train_args(model, dataset, out, *COMMON, *extra)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]


def refuse_unpickling(monkeypatch) -> None:
    """Any unpickling (pickle.load/loads, an Unpickler, torch.load) raises from here on (a guard, not a mock)."""
    def refuse(*args, **kwargs):
        raise AssertionError("a checkpoint was unpickled")

    class RefusingUnpickler(pickle.Unpickler):
        def __init__(self, *args, **kwargs):
            refuse()

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", RefusingUnpickler)
    monkeypatch.setattr(torch, "load", refuse)


@pytest.fixture
def no_unpickling(monkeypatch):
    refuse_unpickling(monkeypatch)


def file_kind(path: Path) -> str:
    """'safetensors', 'json' or 'text' for a file that is one of these; raises for anything else (a pickle)."""
    if path.suffix == ".safetensors":
        with safe_open(str(path), framework="pt") as handle:
            list(handle.keys())
        return "safetensors"
    raw = path.read_bytes()
    assert not raw.startswith((b"\x80", b"PK\x03\x04")), f"{path} looks like a pickle or a torch zip"
    text = raw.decode("utf-8")
    if path.suffix == ".json":
        json.loads(text)
        return "json"
    return "text"


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model, squares):
    """A straight 4-step run and one stopped after its step-2 checkpoint (gradient checkpointing on in both)."""
    root = tmp_path_factory.mktemp("runs")
    straight, stopped = root / "straight", root / "stopped"
    train(run_args(tiny_model, squares, straight, "--gradient-checkpointing"))
    train(run_args(tiny_model, squares, stopped, "--gradient-checkpointing", "--stop-at-step", "2"))
    return straight, stopped


def test_a_checkpoint_holds_safetensors_and_json_only(runs, tiny_model):
    folder = runs[1] / "checkpoints" / "checkpoint-2"
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    kinds = {str(p.relative_to(folder)): file_kind(p) for p in files}
    assert kinds == {"model.safetensors": "safetensors", "optimizer.safetensors": "safetensors",
                     "lr_scheduler.json": "json", "unet_ema/shadow.safetensors": "safetensors",
                     "unet_ema/ema_state.json": "json", "training_state.json": "json"}
    assert not list(folder.parent.glob("*.partial"))
    # The UNet's own parameter names: neither gradient checkpointing nor accelerate's wrapping shows in them.
    original = load_file(str(tiny_model / "unet" / "diffusion_pytorch_model.safetensors"))
    saved = load_file(str(folder / "model.safetensors"))
    assert saved.keys() == original.keys()
    with safe_open(str(folder / "optimizer.safetensors"), framework="pt") as handle:
        groups = json.loads(handle.metadata()["param_groups"])
        assert groups[0]["lr"] == metrics(runs[1])[1]["lr"] and {"0.exp_avg", "0.exp_avg_sq"} <= set(handle.keys())
    assert json.loads((folder / "lr_scheduler.json").read_text())["last_epoch"] == 2


def test_resume_never_unpickles_and_is_exact(runs, tiny_model, squares, no_unpickling):
    straight, stopped = runs
    resumed = stopped.parent / "resumed"
    shutil.copytree(stopped, resumed)
    train(run_args(tiny_model, squares, resumed, "--gradient-checkpointing", "--resume-from-checkpoint", "latest"))
    assert [m["loss"] for m in metrics(resumed)] == [m["loss"] for m in metrics(straight)]
    assert [m["lr"] for m in metrics(resumed)] == [m["lr"] for m in metrics(straight)]
    for name in ("model.safetensors", "optimizer.safetensors", "unet_ema/shadow.safetensors"):
        x = load_file(str(straight / "checkpoints" / "checkpoint-4" / name))
        y = load_file(str(resumed / "checkpoints" / "checkpoint-4" / name))
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x), name


def write_old_format_checkpoint(source: Path, folder: Path, tiny_model: Path) -> None:
    """What the older actedit-train wrote: accelerate's save_state (weights as safetensors, the optimizer, schedule,
    sampler and RNG state pickled) of a UNet holding ``source``'s weights, with its EMA and training_state.json."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from diffusers import UNet2DConditionModel
    from diffusers.optimization import get_scheduler

    from actedit_ros.training.step import EpochShuffleSampler

    unet = UNet2DConditionModel.from_pretrained(str(tiny_model / "unet"))
    unet.load_state_dict(load_file(str(source / "model.safetensors")))
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-2)
    for p in unet.parameters():
        p.grad = torch.ones_like(p)
    optimizer.step()  # moments in optimizer.bin, as a real run has
    try:
        accelerator = Accelerator()
        loader = torch.utils.data.DataLoader(list(range(8)), batch_size=2, sampler=EpochShuffleSampler(8, 0))
        prepared = accelerator.prepare(unet, optimizer, loader, get_scheduler("linear", optimizer, num_warmup_steps=0,
                                                                      num_training_steps=4))
        prepared[0].load_state_dict(load_file(str(source / "model.safetensors")))  # the weights before the step
        accelerator.save_state(str(folder), safe_serialization=True)
    finally:
        AcceleratorState._reset_state()
        GradientState._reset_state()
    shutil.copytree(source / "unet_ema", folder / "unet_ema")
    shutil.copy(source / "training_state.json", folder / "training_state.json")


def test_an_older_format_checkpoint_resumes_degraded_without_unpickling(runs, tiny_model, squares, caplog,
                                                                        monkeypatch):
    straight, stopped = runs
    old = stopped.parent / "old"
    shutil.copytree(stopped / "logs", old / "logs")
    folder = old / "checkpoints" / "checkpoint-2"
    write_old_format_checkpoint(stopped / "checkpoints" / "checkpoint-2", folder, tiny_model)
    assert (folder / "optimizer.bin").is_file() and list(folder.glob("random_states_*.pkl"))

    refuse_unpickling(monkeypatch)
    with caplog.at_level("WARNING", logger="actedit_ros.training"):
        train(run_args(tiny_model, squares, old, "--gradient-checkpointing", "--resume-from-checkpoint", "latest"))
    warnings = [r.getMessage() for r in caplog.records if "DEGRADED" in r.getMessage()]
    assert len(warnings) == 1 and "optimizer.bin" in warnings[0] and "afresh" in warnings[0], warnings
    done, expected = metrics(old), metrics(straight)
    assert [m["step"] for m in done] == [1, 2, 3, 4]
    # Step 3's loss is computed before its update: the same as the straight run's when the weights, the data
    # position and the step's draws were restored. Its learning rate is the schedule's at step 3.
    assert done[2]["loss"] == expected[2]["loss"] and done[2]["lr"] == expected[2]["lr"]
    assert done[3]["lr"] == expected[3]["lr"]
    # Fresh moments: step 3's update differs from the exact run's, so step 4's loss does too.
    assert done[3]["loss"] != expected[3]["loss"]
    written = old / "checkpoints" / "checkpoint-4"
    assert not [p for p in written.rglob("*") if p.suffix in (".bin", ".pkl", ".pt")]


def test_state_helpers_round_trip_without_pickle(tmp_path):
    from diffusers.optimization import get_scheduler

    def make():
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.8, 0.9))
        return model, optimizer, get_scheduler("cosine", optimizer, num_warmup_steps=2, num_training_steps=9)

    model, optimizer, schedule = make()
    for _ in range(3):
        model(torch.ones(1, 3)).sum().backward()
        optimizer.step()
        schedule.step()
    state_io.save_optimizer(optimizer, tmp_path / "optimizer.safetensors")
    state_io.write_json_state(schedule.state_dict(), tmp_path / "schedule.json")
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    state_io.write_json_state(scaler.state_dict(), tmp_path / "scaler.json")

    _, fresh, fresh_schedule = make()
    state_io.load_optimizer(fresh, tmp_path / "optimizer.safetensors")
    fresh_schedule.load_state_dict(state_io.read_json_state(tmp_path / "schedule.json"))
    a, b = optimizer.state_dict(), fresh.state_dict()
    assert a["param_groups"][0]["lr"] == b["param_groups"][0]["lr"] and list(b["param_groups"][0]["betas"]) == [0.8, 0.9]
    assert all(torch.equal(a["state"][i][k], b["state"][i][k]) for i in a["state"] for k in a["state"][i])
    assert fresh_schedule.get_last_lr() == schedule.get_last_lr() and fresh_schedule.last_epoch == 3
    restored = torch.amp.GradScaler("cpu")
    restored.load_state_dict(state_io.read_json_state(tmp_path / "scaler.json"))
    assert restored.get_scale() == 1024.0

    other = torch.optim.AdamW(torch.nn.Linear(4, 4).parameters())
    with pytest.raises(ValueError, match="optimizer.safetensors does not fit"):
        state_io.load_optimizer(other, tmp_path / "optimizer.safetensors")
    with pytest.raises(TypeError, match="bad.json"):
        state_io.write_json_state({"lambda": lambda x: x}, tmp_path / "bad.json")
