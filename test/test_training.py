"""EditAction training: dataset reading, each loss term, frozen parameters, exact resume, conditioning dropout,
and an end-to-end run whose output the inference code loads. Tiny random models on CPU."""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from actedit_ros.editing import GoalPredictor, load_components
from actedit_ros.editing.tiny import make_tiny_model
from actedit_ros.training import data as tdata
from actedit_ros.training import losses
from actedit_ros.training.train import (LatentCache, TrainingError, build_parser, dropout_masks, encode_latents, main,
                                        micro_batch_generator, random_unet_from_config, train)
from actedit_ros.editing.loading import widen_conv_in

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
MOVES = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


def write_square_dataset(root: Path, pairs: int, size: int = 32, seed: int = 0) -> Path:
    """A dataset folder of coloured squares moved one square-width by the instruction."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(pairs):
        colour, move = rng.choice(list(COLOURS)), rng.choice(list(MOVES))
        before = np.full((size, size, 3), 128, np.uint8)
        after = before.copy()
        side = size // 4
        x, y = (int(v) for v in rng.integers(side, size - 2 * side, 2))
        dx, dy = MOVES[move]
        cv2.rectangle(before, (x, y), (x + side, y + side), COLOURS[colour], -1)
        cv2.rectangle(after, (x + dx * side, y + dy * side), (x + side + dx * side, y + side + dy * side),
                      COLOURS[colour], -1)
        cv2.imwrite(str(root / f"images/{i}_a.png"), before[..., ::-1])
        cv2.imwrite(str(root / f"images/{i}_b.png"), after[..., ::-1])
        rows.append({"id": str(i), "input_image": f"images/{i}_a.png", "edited_image": f"images/{i}_b.png",
                     "instruction": f"move the {colour} square {move}", "video": f"v{i % 5}",
                     "split": "test" if i % 5 == 0 else "train"})
    (root / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="module")
def squares(tmp_path_factory) -> Path:
    return write_square_dataset(tmp_path_factory.mktemp("squares"), pairs=20)


def train_args(model: Path, dataset: Path, out: Path, *extra: str):
    return build_parser().parse_args([
        "--pretrained-model", str(model), "--dataset-dir", str(dataset), "--output-dir", str(out),
        "--train-batch-size", "4", "--validation-steps", "0", "--num-validation-pairs", "1",
        "--validation-inference-steps", "2", "--num-threads", "1", "--no-progress", *extra])


# --------------------------------------------------------------------------------------------------------- data
def test_read_index_reports_bad_rows_by_line(tmp_path, squares):
    pairs = tdata.read_index(squares)
    assert len(pairs) == 20 and {p.split for p in pairs} == {"train", "test"}
    assert len(tdata.read_index(squares, split="test")) == 4
    lines = (squares / "index.jsonl").read_text().splitlines()
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "images").symlink_to(squares / "images")
    cases = {
        "not valid JSON": lines[:2] + ["{oops"],
        "missing key\\(s\\) instruction": lines[:1] + [json.dumps({"id": "x", "input_image": "a", "edited_image": "b"})],
        "does not exist": lines[:3] + [json.dumps({**json.loads(lines[0]), "input_image": "images/nope.png"})],
    }
    for message, content in cases.items():
        (bad / "index.jsonl").write_text("\n".join(content) + "\n")
        with pytest.raises(tdata.DatasetError, match=message) as err:
            tdata.read_index(bad)
        assert f"index.jsonl:{len(content)}" in str(err.value)
    with pytest.raises(tdata.DatasetError, match="no index.jsonl"):
        tdata.read_index(tmp_path)


def test_prepare_image_crop_keeps_centre_and_keep_aspect_matches_inference():
    image = np.zeros((20, 40, 3), np.uint8)
    image[:, 10:30] = 255  # the centre square of a 2:1 image
    cropped = tdata.prepare_image(image, 16, "crop")
    assert cropped.shape == (16, 16, 3) and cropped.min() == 255  # only the white centre survives
    from actedit_ros.editing.pipeline import working_size

    kept = tdata.prepare_image(image, 32, "keep-aspect", size_multiple=8)
    assert kept.shape[1::-1] == working_size(40, 20, 32, 8) and kept.shape[1] > kept.shape[0]


def test_dataset_items_and_mirrored_instructions(squares):
    dataset = tdata.EditPairDataset(squares, 32, split="train")
    item = dataset[0]
    assert item["input_pixels"].shape == (3, 32, 32) and item["input_pixels"].dtype == torch.uint8
    pixels = tdata.to_model_range(item["input_pixels"][None])
    assert pixels.min() >= -1 and pixels.max() <= 1
    # keep-aspect: the resolution is a pixel budget (like inference), not necessarily a multiple of the model's.
    kept = tdata.EditPairDataset(squares, 33, split="train", image_mode="keep-aspect", size_multiple=8)
    assert kept[0]["edited_pixels"].shape == (3, 32, 32)
    with pytest.raises(tdata.DatasetError, match="multiple of 8"):
        tdata.EditPairDataset(squares, 33, split="train", image_mode="crop", size_multiple=8)
    assert tdata.mirror_instruction("Move the cup Left, then right") == "Move the cup Right, then left"
    assert tdata.mirror_instruction("open the drawer") == "open the drawer"


def test_negative_instructions_share_no_word():
    pool = ["move the red square left", "move the blue square up", "open the drawer", "pick up the red cup",
            "close the door"]
    sampler = tdata.NegativeInstructionSampler(pool)
    generator = torch.Generator().manual_seed(0)
    for _ in range(50):
        for text, negative in zip(pool, sampler.sample(pool, generator)):
            assert not (tdata.instruction_words(text, sampler.ignored) & tdata.instruction_words(negative, sampler.ignored))
    assert sampler.fallbacks == 0
    # Strict reading: "the" counts, so nothing is disjoint; the least-overlapping instruction is drawn instead.
    strict = tdata.NegativeInstructionSampler(pool, ignored_words=())
    negative = strict.sample(["move the red square left"], generator)[0]
    assert negative in ("open the drawer", "close the door") and strict.fallbacks == 1


# --------------------------------------------------------------------------------------------------------- losses
def test_prediction_targets_and_min_snr_weights():
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                              beta_end=0.012)
    x0, noise = torch.randn(3, 4, 8, 8), torch.randn(3, 4, 8, 8)
    t = torch.tensor([10, 500, 990])
    assert torch.equal(losses.prediction_target(scheduler, x0, noise, t, "epsilon"), noise)
    assert torch.equal(losses.prediction_target(scheduler, x0, noise, t, "sample"), x0)
    alpha_bar = scheduler.alphas_cumprod[t][:, None, None, None]
    v = alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * x0
    assert torch.allclose(losses.prediction_target(scheduler, x0, noise, t, "v_prediction"), v, atol=1e-6)
    snr = alpha_bar.flatten() / (1 - alpha_bar.flatten())
    gamma = 5.0
    assert torch.allclose(losses.min_snr_weights(scheduler, t, gamma, "sample"), snr.clamp(max=gamma))
    assert torch.allclose(losses.min_snr_weights(scheduler, t, gamma, "epsilon"), snr.clamp(max=gamma) / snr)
    # In epsilon space, the weighted loss equals the x0 loss weighted by min(SNR, gamma): check one sample.
    eps_pred = noise + 0.1 * torch.randn_like(noise)
    noisy = scheduler.add_noise(x0, noise, t)
    x0_pred = (noisy - (1 - alpha_bar).sqrt() * eps_pred) / alpha_bar.sqrt()
    eps_loss = losses.per_sample_error(eps_pred, noise) * losses.min_snr_weights(scheduler, t, gamma, "epsilon")
    x0_loss = losses.per_sample_error(x0_pred, x0) * snr.clamp(max=gamma)
    assert torch.allclose(eps_loss, x0_loss, rtol=1e-3)
    assert losses.diffusion_loss(noise, noise) == 0
    with pytest.raises(ValueError, match="prediction_type"):
        losses.prediction_target(scheduler, x0, noise, t, "x0")


def test_change_weights_put_the_loss_where_the_edit_changes_the_image():
    before = torch.zeros(2, 4, 6, 8)
    after = before.clone()
    after[0, 1, 2, 3] = 0.5  # pair 0: one latent pixel changes; pair 1: nothing changes
    weights = losses.change_weights(before, after, weight=4.0)
    assert weights.shape == (2, 1, 6, 8)
    assert torch.allclose(weights.mean(dim=(1, 2, 3)), torch.ones(2))  # each pair's loss keeps its scale
    changed = weights[0, 0] > weights[0, 0].min()
    assert changed.sum() == 9 and changed[1:4, 2:5].all()  # the changed pixel, dilated by one
    assert torch.allclose(weights[0, 0][changed] / weights[0, 0][~changed].min(), torch.tensor(5.0))
    assert torch.allclose(weights[1], torch.ones(1, 6, 8))
    # an error only inside the change costs more with the weights, one outside costs less
    target = torch.zeros(2, 4, 6, 8)
    inside, outside = target.clone(), target.clone()
    inside[0, :, 2, 3], outside[0, :, 5, 7] = 1.0, 1.0
    plain_inside, plain_outside = losses.diffusion_loss(inside, target), losses.diffusion_loss(outside, target)
    assert plain_inside == plain_outside
    assert losses.diffusion_loss(inside, target, pixel_weights=weights) > plain_inside
    assert losses.diffusion_loss(outside, target, pixel_weights=weights) < plain_outside


def test_action_loss_is_bayes_over_denoising_errors():
    e_true = torch.tensor([0.10, 0.30, 0.20], requires_grad=True)
    e_negative = torch.tensor([0.30, 0.10, 0.20], requires_grad=True)
    temperature = 0.1
    loss = losses.action_loss(e_true, e_negative, temperature)
    p_true = losses.action_probabilities(e_true, e_negative, temperature)
    expected = -torch.log(torch.softmax(-torch.stack([e_true, e_negative], 1) / temperature, 1)[:, 0]).mean()
    assert torch.allclose(loss, expected)
    # The classifier prefers the instruction with the lower denoising error.
    assert p_true[0] > 0.5 > p_true[1] and torch.isclose(p_true[2], torch.tensor(0.5))
    assert losses.action_loss(e_true[:1], e_negative[:1], temperature) < math.log(2) \
        < losses.action_loss(e_true[1:2], e_negative[1:2], temperature)
    loss.backward()
    assert (e_true.grad > 0).all() and (e_negative.grad < 0).all()  # descending lowers e+ and raises e-
    with pytest.raises(ValueError, match="temperature"):
        losses.action_loss(e_true, e_negative, 0.0)


@pytest.fixture(scope="module")
def tiny_components(tiny_model):
    return load_components(tiny_model, device="cpu", dtype=torch.float32, scheduler=None)


def objective_inputs(components, batch: int = 3, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    unet = components.unet
    shape = (batch, unet.config.out_channels, unet.config.sample_size, unet.config.sample_size)
    noisy, image, target = (torch.randn(shape, generator=generator) for _ in range(3))
    timesteps = torch.randint(0, 1000, (batch,), generator=generator)
    texts = ["move the red square left", "open the drawer", "pick up the cup"]
    negatives = ["close the door", "move the blue square up", "flip the pancake"]
    predictor = GoalPredictor(components)
    embed = lambda items: torch.cat([predictor.text_embedding(t) for t in items])  # noqa: E731
    return noisy, image, timesteps, embed(texts[:batch]), embed(negatives[:batch]), target


def test_objective_action_term_uses_same_noise_and_timestep(tiny_components):
    unet = copy.deepcopy(tiny_components.unet)
    noisy, image, t, text, negative, target = objective_inputs(tiny_components)
    weights = losses.LossWeights(diffusion=1.0, action=1.0, action_temperature=0.05)
    mask = torch.tensor([True, False, True])
    terms = losses.editaction_objective(unet, noisy, image, t, text, target, weights,
                                        negative_text_embeddings=negative[mask], action_mask=mask)
    with torch.no_grad():
        run = lambda states: unet(torch.cat([noisy, image], 1), t, encoder_hidden_states=states).sample  # noqa: E731
        e_true = losses.per_sample_error(run(text), target)[mask]
        e_negative = losses.per_sample_error(run(negative), target)[mask]
    assert torch.allclose(terms.diffusion, losses.per_sample_error(run(text), target).mean(), rtol=1e-4)
    assert torch.allclose(terms.action, losses.action_loss(e_true, e_negative, 0.05), rtol=1e-4)
    assert torch.isclose(terms.action_accuracy, (e_true < e_negative).float().mean())
    # The same instruction as its own "negative" gives a coin flip: loss log 2.
    same = losses.editaction_objective(unet, noisy, image, t, text, target, weights,
                                       negative_text_embeddings=text[mask], action_mask=mask)
    assert torch.isclose(same.action, torch.tensor(math.log(2)), atol=1e-4)
    off = losses.editaction_objective(unet, noisy, image, t, text, target, losses.LossWeights(action=0.0),
                                      negative_text_embeddings=negative[mask], action_mask=mask)
    assert off.action == 0 and torch.isclose(off.total, off.diffusion)


def test_regularizer_is_zero_at_init_and_grows_after_an_update(tiny_components):
    unet = copy.deepcopy(tiny_components.unet).requires_grad_(True).train()
    reference = copy.deepcopy(unet).requires_grad_(False).eval()
    noisy, image, t, text, _, target = objective_inputs(tiny_components)
    weights = losses.LossWeights(diffusion=1.0, regularizer=1.0)
    terms = losses.editaction_objective(unet, noisy, image, t, text, target, weights, reference_unet=reference)
    assert terms.regularizer == 0
    optimizer = torch.optim.AdamW(unet.parameters(), lr=1e-3)
    terms.total.backward()
    optimizer.step()
    after = losses.editaction_objective(unet, noisy, image, t, text, target, weights, reference_unet=reference)
    assert after.regularizer > 1e-8


def test_freeze_cross_attention_names_attn2_only(tiny_components):
    unet = copy.deepcopy(tiny_components.unet).requires_grad_(True)
    frozen = losses.freeze_cross_attention(unet)
    assert frozen and all(".attn2." in name for name in frozen)
    for name, parameter in unet.named_parameters():
        assert parameter.requires_grad == (".attn2." not in name), name


def test_widen_conv_in_keeps_the_plain_unet_output():
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)
    plain = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                 block_out_channels=(16, 32), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
                                 attention_head_dim=4, norm_num_groups=8).eval()
    noisy, states = torch.randn(2, 4, 8, 8), torch.randn(2, 5, 16)
    with torch.no_grad():
        before = plain(noisy, 10, encoder_hidden_states=states).sample
        wide = widen_conv_in(copy.deepcopy(plain), 8)
        after = wide(torch.cat([noisy, torch.randn(2, 4, 8, 8)], 1), 10, encoder_hidden_states=states).sample
    assert wide.config.in_channels == 8 and wide.conv_in.weight.shape[1] == 8
    assert torch.equal(wide.conv_in.weight[:, 4:], torch.zeros_like(wide.conv_in.weight[:, 4:]))
    assert torch.allclose(before, after, atol=1e-5)


def test_random_unet_config_is_checked(tmp_path, tiny_model, tiny_components):
    config = json.loads((tiny_model / "unet" / "config.json").read_text())
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(config))
    bad.write_text(json.dumps({**config, "in_channels": 4, "cross_attention_dim": 7}))
    a = random_unet_from_config(good, 3, tiny_components.vae, tiny_components.text_encoder)
    b = random_unet_from_config(good, 3, tiny_components.vae, tiny_components.text_encoder)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))  # seeded
    with pytest.raises(TrainingError, match=r"in_channels=4 \(needs 8\).*cross_attention_dim=7"):
        random_unet_from_config(bad, 3, tiny_components.vae, tiny_components.text_encoder)


def test_latent_cache_matches_the_vae_and_encodes_each_image_once(tiny_components):
    vae = tiny_components.vae
    pixels = torch.rand(3, 3, 32, 32) * 2 - 1
    cache = LatentCache()
    mean, std = cache.encode(vae, pixels, [("input", 0, False), ("input", 1, False), ("input", 2, False)])
    reference_mean, reference_std = encode_latents(vae, pixels)
    assert torch.allclose(mean, reference_mean, atol=1e-5) and torch.allclose(std, reference_std, atol=1e-5)
    # A cached key is not encoded again: other pixels under the same key give the cached value.
    again, _ = cache.encode(vae, torch.zeros_like(pixels), [("input", 2, False), ("input", 0, False), ("x", 9, True)])
    assert torch.equal(again[0], mean[2]) and torch.equal(again[1], mean[0]) and len(cache.entries) == 4


# --------------------------------------------------------------------------------------------------------- dropout
def test_conditioning_dropout_rates_as_configured():
    generator = torch.Generator().manual_seed(0)
    n = 40_000
    text, image = dropout_masks(n, generator, drop_text=0.1, drop_image=0.2, drop_both=0.05)
    rates = {"text only": (text & ~image).float().mean(), "image only": (image & ~text).float().mean(),
             "both": (text & image).float().mean(), "none": (~text & ~image).float().mean()}
    expected = {"text only": 0.1, "image only": 0.2, "both": 0.05, "none": 0.65}
    for key, p in expected.items():
        assert abs(rates[key] - p) < 4 * math.sqrt(p * (1 - p) / n), (key, float(rates[key]))
    none_text, none_image = dropout_masks(1000, generator, 0.0, 0.0, 0.0)
    assert not none_text.any() and not none_image.any()


def test_training_step_applies_the_dropout_masks(tiny_components, squares):
    from accelerate import Accelerator
    from diffusers import DDPMScheduler

    from actedit_ros.training.train import training_micro_step

    c = tiny_components
    unet = copy.deepcopy(c.unet)
    dataset = tdata.EditPairDataset(squares, 32, split="train")
    batch = tdata.collate_pairs([dataset[i] for i in range(6)])
    negatives = tdata.NegativeInstructionSampler(dataset.instructions)
    predictor = GoalPredictor(c)
    embedded = []

    def embed(texts):
        embedded.append(list(texts))
        return torch.cat([predictor.text_embedding(t) for t in texts])

    scheduler = DDPMScheduler.from_config(c.scheduler.config)
    weights = losses.LossWeights(action=1.0)

    def step(text, image, both):
        args = build_parser().parse_args(["--output-dir", "x", "--dataset-dir", "x", "--drop-text-prob", str(text),
                                          "--drop-image-prob", str(image), "--drop-both-prob", str(both)])
        embedded.clear()
        return training_micro_step(batch, micro_batch_generator(0, 0, 0), args, unet, None, c.vae, 0.18215,
                                   scheduler, "epsilon", weights, negatives, embed, torch.float32, Accelerator())

    kept = step(0, 0, 0)
    assert kept.action > 0 and embedded[0] == batch["instruction"] and len(embedded) == 2  # true + negatives
    no_text = step(1, 0, 0)
    assert no_text.action == 0 and embedded == [[""] * 6]  # every prompt blank, no negatives drawn
    no_image, both = step(0, 1, 0), step(0, 0, 1)
    assert not torch.equal(no_image.prediction, kept.prediction)  # the image condition was zeroed
    # Both dropped: blank prompts like text-only, and the image condition zeroed on top (same noise: same generator).
    assert both.action == 0 and not torch.allclose(both.prediction, no_text.prediction)


def test_micro_batch_generator_depends_only_on_its_key():
    a = torch.rand(4, generator=micro_batch_generator(0, 0, 7))
    assert torch.equal(a, torch.rand(4, generator=micro_batch_generator(0, 0, 7)))
    assert not torch.equal(a, torch.rand(4, generator=micro_batch_generator(0, 0, 8)))
    assert not torch.equal(a, torch.rand(4, generator=micro_batch_generator(0, 1, 7)))


# --------------------------------------------------------------------------------------------------------- end to end
def unet_weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


def test_two_steps_freeze_what_must_stay_frozen_and_write_a_loadable_model(tmp_path, tiny_model, squares):
    out = tmp_path / "run"
    train(train_args(tiny_model, squares, out, "--max-train-steps", "2", "--learning-rate", "1e-2",
                     "--action-loss-weight", "0.05", "--prediction-type", "sample", "--drop-text-prob", "0.2",
                     "--use-ema", "--ema-decay", "0.5"))
    before, after = unet_weights(tiny_model), unet_weights(out)
    attn2 = [name for name in before if ".attn2." in name]
    assert attn2 and all(torch.equal(before[name], after[name]) for name in attn2)
    assert any(not torch.equal(before[name], after[name]) for name in before if ".attn2." not in name)
    for component, file in (("vae", "diffusion_pytorch_model.safetensors"), ("text_encoder", "model.safetensors")):
        original, trained = load_file(str(tiny_model / component / file)), load_file(str(out / component / file))
        assert original.keys() == trained.keys() and all(torch.equal(original[k], trained[k]) for k in original)

    config = json.loads((out / "training_config.json").read_text())
    assert config["flags"]["max_train_steps"] == 2 and config["resolved"]["cross_attention"] == "frozen"
    assert config["resolved"]["regularizer_weight"] == 0.1 and config["exported_step"] == 2
    assert json.loads((out / "scheduler" / "scheduler_config.json").read_text())["prediction_type"] == "sample"
    metrics = [json.loads(line) for line in (out / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2] and all(m["action"] > 0 and m["regularizer"] >= 0 for m in metrics)
    assert (out / "validation" / "step-000002.png").is_file()

    # x0-prediction is exported with DDIM (diffusers' Euler-ancestral cannot step a "sample" model).
    assert json.loads((out / "model_index.json").read_text())["scheduler"] == ["diffusers", "DDIMScheduler"]
    predictor = GoalPredictor.from_pretrained(str(out), device="cpu", scheduler="ddim")
    image = np.full((27, 41, 3), 100, np.uint8)
    prediction = predictor.predict(image, "move the red square left", steps=2, seed=1)
    assert prediction.images[0].shape == image.shape


def test_mixed_precision_run_exports_the_frozen_components_untouched(tmp_path, tiny_model, squares):
    out = tmp_path / "bf16"
    train(train_args(tiny_model, squares, out, "--max-train-steps", "1", "--mixed-precision", "bf16",
                     "--gradient-checkpointing", "--prediction-type", "v_prediction", "--snr-gamma", "5",
                     "--action-loss-weight", "0.05", "--change-loss-weight", "4"))
    for component in ("vae", "text_encoder", "tokenizer"):
        for file in (tiny_model / component).iterdir():
            assert (out / component / file.name).read_bytes() == file.read_bytes(), file
    assert next(iter(unet_weights(out).values())).dtype == torch.float32  # the trained UNet stays float32
    config = json.loads((out / "training_config.json").read_text())
    assert config["resolved"]["weight_dtype"] == "torch.bfloat16"


def test_resume_continues_exactly(tmp_path, tiny_model, squares):
    common = ("--max-train-pairs", "12", "--learning-rate", "1e-2", "--use-ema", "--ema-decay", "0.9",
              "--action-loss-weight", "0.05", "--regularizer-weight", "0.5", "--gradient-accumulation-steps", "2",
              "--lr-scheduler", "linear", "--checkpointing-steps", "2", "--drop-text-prob", "0.3", "--cache-latents",
              "--random-flip")
    # 12 pairs / batch 4 = 3 micro-batches per epoch, 2 per step: the resume at step 2 starts mid-epoch and the run
    # goes on across the next epoch boundary.
    straight = tmp_path / "straight"
    train(train_args(tiny_model, squares, straight, "--max-train-steps", "4", *common))
    stopped = tmp_path / "stopped"
    train(train_args(tiny_model, squares, stopped, "--max-train-steps", "4", "--stop-at-step", "2", *common))
    assert (stopped / "checkpoints" / "checkpoint-2").is_dir() and not (stopped / "checkpoints" / "checkpoint-4").exists()
    train(train_args(tiny_model, squares, stopped, "--max-train-steps", "4", "--resume-from-checkpoint", "latest",
                     *common))
    a, b = unet_weights(straight), unet_weights(stopped)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # The final checkpoint's raw (non-EMA) weights and EMA shadow weights agree too.
    for name in ("model.safetensors", "unet_ema/shadow.safetensors"):
        x = load_file(str(straight / "checkpoints" / "checkpoint-4" / name))
        y = load_file(str(stopped / "checkpoints" / "checkpoint-4" / name))
        assert all(torch.equal(x[k], y[k]) for k in x), name
    lines = lambda run: [json.loads(l) for l in (run / "logs" / "metrics.jsonl").read_text().splitlines()]  # noqa
    resumed = [m for m in lines(stopped)]
    assert [m["step"] for m in resumed] == [1, 2, 3, 4]
    assert [m["loss"] for m in resumed] == [m["loss"] for m in lines(straight)]


def test_resuming_with_other_flags_warns(tmp_path, tiny_model, squares, caplog):
    out = tmp_path / "run"
    train(train_args(tiny_model, squares, out, "--max-train-steps", "2", "--stop-at-step", "1"))
    with caplog.at_level("WARNING", logger="actedit_ros.training"):
        train(train_args(tiny_model, squares, out, "--max-train-steps", "2", "--resume-from-checkpoint", "latest",
                         "--learning-rate", "0.5", "--num-threads", "1"))
    warnings = [r.getMessage() for r in caplog.records if "differ from the checkpoint" in r.getMessage()]
    assert len(warnings) == 1 and "--learning-rate 0.0001 -> 0.5" in warnings[0] and "threads" not in warnings[0]


def test_starting_from_plain_sd_widens_conv_in(tmp_path, squares):
    from diffusers import UNet2DConditionModel

    from actedit_ros.training.train import load_starting_model

    model = make_tiny_model(tmp_path / "plain", seed=1)
    config = json.loads((model / "unet" / "config.json").read_text())
    plain = UNet2DConditionModel.from_config({**config, "in_channels": 4})
    plain.save_pretrained(model / "unet", safe_serialization=True)
    components, _ = load_starting_model(str(model))
    weight = components.unet.conv_in.weight
    assert components.unet.config.in_channels == 8 and weight.shape[1] == 8
    assert torch.equal(weight[:, :4], plain.conv_in.weight) and not weight[:, 4:].any()
    out = tmp_path / "from-plain"
    train(train_args(model, squares, out, "--max-train-steps", "1", "--action-loss-weight", "0"))
    assert json.loads((out / "unet" / "config.json").read_text())["in_channels"] == 8
    assert GoalPredictor.from_pretrained(str(out), device="cpu").components.unet.config.in_channels == 8


def test_error_gap_diagnostics(tiny_model, squares):
    from actedit_ros.training.diagnostics import error_gaps

    report = error_gaps(str(tiny_model), str(squares), pairs=4, image_mode="crop")
    assert report.gap.shape == (4,) and 0 <= report.accuracy <= 1 and (report.error_true > 0).all()
    expected = float(losses.action_loss(torch.from_numpy(report.error_true), torch.from_numpy(report.error_negative),
                                        0.01))
    assert math.isclose(report.loss_by_temperature[0.01], expected, rel_tol=1e-5)
    assert any("median" in line for line in report.lines())


def test_cli_reports_bad_input_without_traceback(tmp_path, tiny_model, capsys):
    code = main(["--pretrained-model", str(tiny_model), "--dataset-dir", str(tmp_path), "--output-dir",
                 str(tmp_path / "out"), "--no-progress"])
    assert code == 2 and "no index.jsonl" in capsys.readouterr().err
    code = main(["--pretrained-model", str(tmp_path / "missing"), "--dataset-dir", str(tmp_path), "--output-dir",
                 str(tmp_path / "out")])
    assert code == 2 and "cannot load --pretrained-model" in capsys.readouterr().err
    code = main(["--pretrained-model", str(tiny_model), "--dataset-dir", str(tmp_path), "--output-dir",
                 str(tmp_path / "out"), "--drop-text-prob", "0.7", "--drop-image-prob", "0.7"])
    assert code == 2 and "sum to <= 1" in capsys.readouterr().err
    code = main(["--pretrained-model", str(tiny_model), "--dataset-dir", str(tmp_path), "--output-dir",
                 str(tmp_path / "out"), "--change-loss-weight", "-1"])
    assert code == 2 and "--change-loss-weight must be >= 0" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--action-loss-weight", "--regularizer-weight", "--cross-attention", "--resume-from-checkpoint",
                 "--drop-both-prob", "--prediction-type", "--unet-config", "--use-ema"):
        assert flag in text
