"""Goal prediction on a tiny randomly initialised InstructPix2Pix model: real diffusers components, CPU, seconds."""
import json
import shutil

import numpy as np
import pytest
import torch

from actedit_ros.editing import GoalPredictor, ModelLoadError, load_components, resolve_model_path
from actedit_ros.editing.tiny import make_tiny_model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="module")
def predictor(tiny_dir):
    return GoalPredictor.from_pretrained(str(tiny_dir), device="cpu")


def frame(height=48, width=64, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_same_seed_same_image_other_seed_other_image(predictor):
    image = frame()
    a = predictor.predict(image, "put the cup in the bowl", steps=3, seed=7)
    b = predictor.predict(image, "put the cup in the bowl", steps=3, seed=7)
    c = predictor.predict(image, "put the cup in the bowl", steps=3, seed=8)
    assert np.array_equal(a.image, b.image)
    assert not np.array_equal(a.image, c.image)
    assert a.seed == 7 and a.steps == 3 and a.seconds > 0 and not a.fp32_fallback


@pytest.mark.parametrize("height,width", [(37, 53), (480, 641), (5, 3), (31, 200)])
def test_goal_has_the_input_size_for_odd_sizes(predictor, height, width):
    result = predictor.predict(frame(height, width), "open the drawer", steps=2, seed=0)
    assert result.image.shape == (height, width, 3) and result.image.dtype == np.uint8


def test_candidates_are_batched_and_differ(predictor):
    result = predictor.predict(frame(), "flip the pancake", steps=2, seed=1, num_candidates=3)
    assert len(result.images) == 3
    assert not np.array_equal(result.images[0], result.images[1])
    # Candidate 0 of a batch is reproducible by the same seed.
    again = predictor.predict(frame(), "flip the pancake", steps=2, seed=1, num_candidates=3)
    assert all(np.array_equal(x, y) for x, y in zip(result.images, again.images))


def test_text_and_start_latents_are_computed_once(tiny_dir):
    predictor = GoalPredictor.from_pretrained(str(tiny_dir), device="cpu")
    calls = {"text": 0, "vae_encode": 0}
    predictor.components.text_encoder.register_forward_hook(lambda *a: calls.__setitem__("text", calls["text"] + 1))
    predictor.components.vae.encoder.register_forward_hook(
        lambda *a: calls.__setitem__("vae_encode", calls["vae_encode"] + 1))
    image = frame()
    for seed in range(3):
        predictor.predict(image, "put the lid on the pot", steps=2, seed=seed)
    assert calls == {"text": 2, "vae_encode": 1}  # the instruction + the blank prompt; the start frame once
    predictor.predict(frame(seed=1), "put the lid on the pot", steps=2)
    assert calls == {"text": 2, "vae_encode": 2}


@pytest.mark.parametrize("instruction,reason", [
    ("", "empty"), ("  \n\t ", "empty"), ("\x00\x01\x1b", "empty"), ("x" * 10_000, "characters long"),
])
def test_bad_instructions_are_refused_with_the_reason(predictor, instruction, reason):
    with pytest.raises(ValueError, match=reason):
        predictor.predict(frame(), instruction, steps=1)


def test_control_characters_inside_an_instruction_are_removed(predictor):
    a = predictor.predict(frame(), "open\x00 the\x1b drawer", steps=2, seed=0)
    b = predictor.predict(frame(), "open the drawer", steps=2, seed=0)
    assert np.array_equal(a.image, b.image)


@pytest.mark.parametrize("image,reason", [
    (np.zeros((0, 10, 3), np.uint8), "empty"),
    (np.zeros((10, 10), np.uint8), "shape"),
    (np.zeros((10, 10, 3), np.float32), "uint8"),
    ("not an image", "numpy array"),
])
def test_bad_images_are_refused_with_the_reason(predictor, image, reason):
    with pytest.raises(ValueError, match=reason):
        predictor.predict(image, "open the drawer", steps=1)


def test_ddim_is_deterministic_and_selectable(tiny_dir):
    predictor = GoalPredictor.from_pretrained(str(tiny_dir), device="cpu", scheduler="ddim")
    assert type(predictor.components.scheduler).__name__ == "DDIMScheduler"
    a = predictor.predict(frame(), "stack the blocks", steps=3, seed=0)
    b = predictor.predict(frame(), "stack the blocks", steps=3, seed=0)
    assert np.array_equal(a.image, b.image)


def test_non_finite_decode_is_redone_in_float32(tiny_dir):
    predictor = GoalPredictor.from_pretrained(str(tiny_dir), device="cpu", dtype="bfloat16")
    # Inject the fp16 failure: the low-precision decoder overflows, the float32 one does not.
    predictor.components.vae.decoder.register_forward_hook(
        lambda module, inputs, output: output * float("inf") if output.dtype != torch.float32 else output)
    result = predictor.predict(frame(), "pour the water", steps=2)
    assert result.fp32_fallback and any("float32" in note for note in result.notes)
    assert result.image.dtype == np.uint8
    assert predictor.components.vae.dtype == torch.bfloat16  # restored after the redo


def test_missing_directory_names_the_path(tmp_path):
    with pytest.raises(ModelLoadError, match=str(tmp_path / "nope")):
        load_components(tmp_path / "nope", device="cpu")


def test_directory_without_model_index_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="model_index.json"):
        load_components(tmp_path, device="cpu")


@pytest.mark.parametrize("pickle_name", ["diffusion_pytorch_model.bin", "model.ckpt", "weights.pt"])
def test_pickle_checkpoints_are_refused(tiny_dir, tmp_path, pickle_name):
    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    for weights in (model / "unet").glob("*.safetensors"):
        weights.unlink()
    (model / "unet" / pickle_name).write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(ModelLoadError, match="pickle"):
        load_components(model, device="cpu")


def test_four_channel_unet_is_refused_with_advice(tiny_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    config = json.loads((model / "unet" / "config.json").read_text())
    config["in_channels"] = 4
    (model / "unet" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="8"):
        load_components(model, device="cpu", scheduler=None)


def test_unknown_component_class_is_refused(tiny_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(tiny_dir, model)
    index = json.loads((model / "model_index.json").read_text())
    index["text_encoder"] = ["os", "system"]
    (model / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(ModelLoadError, match="unsupported text_encoder"):
        load_components(model, device="cpu")


def test_default_model_loads_through_the_same_path(monkeypatch, tmp_path):
    monkeypatch.setenv("ACTEDIT_CACHE", str(tmp_path))
    path = resolve_model_path(None)
    assert (path / "model_index.json").is_file()
    predictor = GoalPredictor.from_pretrained(None, device="cpu")
    assert predictor.components.model_path == path.resolve()
    result = predictor.predict(frame(60, 80), "put the cup in the bowl", steps=2)
    assert result.image.shape == (60, 80, 3)


def test_sd15_layout_with_clip_text_encoder_loads_and_predicts(tmp_path):
    """The public SD-1.5 InstructPix2Pix checkpoint uses CLIPTextModel + CLIPTokenizer; same code path."""
    model = make_tiny_model(tmp_path / "clip_model", text_encoder="clip")
    index = json.loads((model / "model_index.json").read_text())
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    predictor = GoalPredictor.from_pretrained(str(model), device="cpu")
    a = predictor.predict(frame(), "put the lid on the pot", steps=2, seed=4)
    b = predictor.predict(frame(), "put the lid on the pot", steps=2, seed=4)
    assert a.image.shape == (48, 64, 3) and np.array_equal(a.image, b.image)


def test_x0_model_samples_with_its_own_scheduler_and_refuses_euler_ancestral(tmp_path):
    from diffusers import DDIMScheduler

    model = make_tiny_model(tmp_path / "x0", prediction_type="sample")
    config = DDIMScheduler.from_pretrained(model / "scheduler").config
    DDIMScheduler.from_config(config).save_pretrained(model / "scheduler")
    index = json.loads((model / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", "DDIMScheduler"]
    (model / "model_index.json").write_text(json.dumps(index))
    predictor = GoalPredictor.from_pretrained(str(model), device="cpu")  # scheduler="auto": the model's own
    assert type(predictor.components.scheduler).__name__ == "DDIMScheduler"
    assert predictor.predict(frame(), "open the drawer", steps=2).image.shape == (48, 64, 3)
    with pytest.raises(ModelLoadError, match="euler_ancestral"):
        GoalPredictor.from_pretrained(str(model), device="cpu", scheduler="euler_ancestral")


def test_text_embeddings_batch_the_misses_and_equal_the_one_by_one_encoding():
    import torch

    from actedit_ros.editing import GoalPredictor

    torch.set_num_threads(1)
    predictor = GoalPredictor.from_pretrained(None, device="cpu", dtype="float32")
    texts = ["put the cup in the bowl", "open the drawer", "put the cup in the bowl", "flip the card"]
    one_by_one = torch.cat([GoalPredictor(predictor.components).text_embedding(t) for t in texts])
    predictor.text_embedding("open the drawer")  # one of them cached already
    batched = predictor.text_embeddings(texts)
    assert batched.shape[0] == 4 and torch.equal(batched, one_by_one)
    small = GoalPredictor(predictor.components, cache_size=1)  # more misses than the cache holds
    assert torch.equal(small.text_embeddings(texts), one_by_one)
