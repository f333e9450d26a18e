"""Instruction variants in actedit-train (--instruction-variant-prob): read from the index, drawn per pair at the
asked rate from the step's generator, never for pairs without variants, negatives drawn for the wording trained on
(and never the pair's own original), exact resume with the flag on. Tiny random model and a real dataset on CPU."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from actedit_ros.editing import GoalPredictor, load_components
from actedit_ros.editing.tiny import make_tiny_model
from actedit_ros.training import data as tdata
from actedit_ros.training import losses
from actedit_ros.training.step import (EpochShuffleSampler, StepTexts, choose_instruction_variants,
                                       micro_batch_generator, training_micro_step)
from actedit_ros.training.train import build_parser, main, train
from test_training import train_args, unet_weights, write_square_dataset

# Variant wordings that share no word with the world's ("move the red square left"), so a pair's own original
# instruction is a word-disjoint "negative" for its variant unless the trainer leaves it out.
COLOUR_WORDS = {"red": "crimson", "green": "emerald", "blue": "navy"}
MOVE_WORDS = {"left": "leftward", "right": "rightward", "up": "upward", "down": "downward"}
# Verbs and nouns every instruction holds, ignored when negatives must share no word (colour and direction decide).
IGNORED = tdata.DEFAULT_IGNORED_WORDS + ("move", "square", "shift", "block", "nudge", "tile")


def variants_of(instruction: str) -> list[str]:
    _, _, colour, _, move = instruction.split()
    return [f"shift the {COLOUR_WORDS[colour]} block {MOVE_WORDS[move]}", f"nudge {COLOUR_WORDS[colour]} tile "
            f"{MOVE_WORDS[move]}"]


def add_variants(dataset: Path, every: int = 2) -> Path:
    """Give every ``every``-th record (by id) two variant wordings; the others keep none."""
    index = dataset / "index.jsonl"
    rows = [json.loads(line) for line in index.read_text().splitlines()]
    for row in rows:
        if int(row["id"]) % every == 0:
            row["instruction_variants"] = variants_of(row["instruction"])
    index.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return dataset


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0)


@pytest.fixture(scope="module")
def reworded(tmp_path_factory) -> Path:
    return add_variants(write_square_dataset(tmp_path_factory.mktemp("reworded"), pairs=40))


def test_variants_are_read_and_carried_in_the_batch(reworded):
    dataset = tdata.EditPairDataset(reworded, 32, split="train")
    with_variants = [p for p in dataset.pairs if p.instruction_variants]
    assert 0 < len(with_variants) < len(dataset)
    assert all(p.instruction_variants == tuple(variants_of(p.instruction)) for p in with_variants)
    batch = tdata.collate_pairs([dataset[i] for i in range(len(dataset))])
    assert batch["instruction_variants"] == [p.instruction_variants for p in dataset.pairs]


@pytest.mark.parametrize("value, problem", [("move it", "must be a list of strings"), ([1], "must be a list"),
                                            (["fine", "   "], "empty string"), ({"a": 1}, "must be a list")])
def test_malformed_variants_name_the_line(tmp_path, tiny_model, capsys, value, problem):
    dataset = write_square_dataset(tmp_path / "data", pairs=6)
    index = dataset / "index.jsonl"
    rows = [json.loads(line) for line in index.read_text().splitlines()]
    rows[3]["instruction_variants"] = value
    index.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(tdata.DatasetError, match=rf"index.jsonl:4: instruction_variants .*{problem}"):
        tdata.read_index(dataset)
    code = main(["--pretrained-model", str(tiny_model), "--dataset-dir", str(dataset), "--output-dir",
                 str(tmp_path / "out"), "--no-progress", "--instruction-variant-prob", "0.5"])
    err = capsys.readouterr().err
    assert code == 2 and "index.jsonl:4: instruction_variants" in err and "Traceback" not in err


def test_variant_prob_out_of_range_is_refused(tmp_path, tiny_model, reworded, capsys):
    code = main(["--pretrained-model", str(tiny_model), "--dataset-dir", str(reworded), "--output-dir",
                 str(tmp_path / "out"), "--instruction-variant-prob", "1.5"])
    assert code == 2 and "--instruction-variant-prob must be in [0, 1]" in capsys.readouterr().err


def test_variants_are_chosen_at_the_asked_rate_and_uniformly():
    instructions = ["a", "b", "c"] * 4000
    variants = [("a1", "a2"), (), ("c1", "c2", "c3")] * 4000
    chosen, used = choose_instruction_variants(instructions, variants, 0.3, torch.Generator().manual_seed(0))
    assert not any(u for u, v in zip(used, variants) if not v)  # never for pairs without variants
    assert all(c == "b" for c, i in zip(chosen, instructions) if i == "b")
    for original, options in (("a", ("a1", "a2")), ("c", ("c1", "c2", "c3"))):
        picked = [c for c, i in zip(chosen, instructions) if i == original]
        assert abs(sum(c != original for c in picked) / len(picked) - 0.3) < 0.03
        replaced = [c for c in picked if c != original]
        for option in options:  # uniform over the variants
            assert abs(replaced.count(option) / len(replaced) - 1 / len(options)) < 0.06
    assert choose_instruction_variants(instructions, variants, 1.0, torch.Generator().manual_seed(0))[1] == [
        bool(v) for v in variants]


def test_training_step_embeds_variants_at_the_asked_rate_with_disjoint_negatives(tiny_model, reworded):
    """Over real micro-batches of the dataset, what the step embedded (read from its texts_log hook and checked
    against the embedding calls): variants for about half the pairs that have them, none for the others, mirrored
    with the flip, and negatives sharing no word with the wording trained on, never the pair's own original."""
    from accelerate import Accelerator
    from diffusers import DDPMScheduler

    c = load_components(tiny_model, device="cpu", dtype=torch.float32)
    unet = copy.deepcopy(c.unet)
    dataset = tdata.EditPairDataset(reworded, 32, split="train")
    negatives = tdata.NegativeInstructionSampler(dataset.instructions, ignored_words=IGNORED)
    predictor = GoalPredictor(c, cache_size=64)
    embedded = []

    def embed(texts):
        embedded.append(list(texts))
        return torch.cat([predictor.text_embedding(t) for t in texts])

    args = build_parser().parse_args(["--output-dir", "x", "--dataset-dir", "x", "--instruction-variant-prob", "0.5",
                                      "--random-flip", "--drop-text-prob", "0", "--drop-image-prob", "0",
                                      "--drop-both-prob", "0"])
    scheduler = DDPMScheduler.from_config(c.scheduler.config)
    sampler = EpochShuffleSampler(len(dataset), 0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=8, sampler=sampler, collate_fn=tdata.collate_pairs,
                                         drop_last=True)
    log: list[StepTexts] = []
    seen = []  # (batch, texts) per micro-batch
    with torch.no_grad():
        for epoch in range(8):
            sampler.set_epoch(epoch)
            for number, batch in enumerate(loader, start=epoch * len(loader)):
                embedded.clear()
                training_micro_step(batch, micro_batch_generator(0, 0, number), args, unet, None, c.vae, 0.18215,
                                    scheduler, "epsilon", losses.LossWeights(action=1.0), negatives, embed,
                                    torch.float32, Accelerator(), texts_log=log)
                assert embedded == [log[-1].prompts, log[-1].negatives]  # the hook reports what was embedded
                seen.append((batch, log[-1]))
    rates, flips = [], 0
    for batch, texts in seen:
        assert texts.prompts == texts.instructions  # no text dropout here
        for original, options, used, text, negative in zip(batch["instruction"], batch["instruction_variants"],
                                                           texts.variant_used, texts.instructions, texts.negatives):
            flipped = text not in (original, *options)
            flips += flipped
            expected_pool = [tdata.mirror_instruction(t) if flipped else t for t in (original, *options)]
            if not options:
                assert not used and text == expected_pool[0]
                continue
            rates.append(used)
            assert text in (expected_pool[1:] if used else expected_pool[:1])
            words = tdata.instruction_words
            assert not words(negative, set(IGNORED)) & words(text, set(IGNORED))
            assert negative != expected_pool[0]  # never the pair's own (mirrored) original wording
    assert len(rates) > 100 and 0.35 < sum(rates) / len(rates) < 0.65
    assert flips > 0 and negatives.fallbacks == 0


def test_resume_is_exact_with_variants_on(tmp_path, tiny_model, reworded):
    common = ("--max-train-pairs", "12", "--learning-rate", "1e-2", "--use-ema", "--ema-decay", "0.9",
              "--action-loss-weight", "0.05", "--gradient-accumulation-steps", "2", "--checkpointing-steps", "2",
              "--random-flip", "--cache-latents", "--instruction-variant-prob", "0.5", "--max-train-steps", "4")
    straight = tmp_path / "straight"
    train(train_args(tiny_model, reworded, straight, *common))
    stopped = tmp_path / "stopped"
    train(train_args(tiny_model, reworded, stopped, "--stop-at-step", "2", *common))
    train(train_args(tiny_model, reworded, stopped, "--resume-from-checkpoint", "latest", *common))
    a, b = unet_weights(straight), unet_weights(stopped)
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines = lambda run: [json.loads(l) for l in (run / "logs" / "metrics.jsonl").read_text().splitlines()]  # noqa
    assert [m["loss"] for m in lines(stopped)] == [m["loss"] for m in lines(straight)]
    assert any(m["variant_fraction"] > 0 for m in lines(straight))  # the flag did reword some pairs
    config = json.loads((straight / "training_config.json").read_text())
    assert config["flags"]["instruction_variant_prob"] == 0.5
    # And the variants change what is trained: the same run without them ends elsewhere.
    plain = tmp_path / "plain"
    train(train_args(tiny_model, reworded, plain, *common, "--instruction-variant-prob", "0"))
    c = unet_weights(plain)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert "variant_fraction" not in lines(plain)[0]


def test_prefetching_encoders_trains_the_same_and_resumes_exactly(tmp_path, tiny_model, reworded, monkeypatch):
    common = ("--max-train-pairs", "12", "--learning-rate", "1e-2", "--action-loss-weight", "0.05",
              "--gradient-accumulation-steps", "2", "--checkpointing-steps", "2", "--random-flip", "--cache-latents",
              "--instruction-variant-prob", "0.5", "--max-train-steps", "4")
    encoded_on = []  # which thread encoded each batch of texts (a spy around the real encoder)
    real_encode = GoalPredictor.encode_texts

    def spy(self, texts):
        import threading
        encoded_on.append(threading.current_thread().name)
        return real_encode(self, texts)

    monkeypatch.setattr(GoalPredictor, "encode_texts", spy)
    plain = tmp_path / "plain"
    train(train_args(tiny_model, reworded, plain, *common))
    assert not any(name.startswith("actedit-prefetch") for name in encoded_on)
    encoded_on.clear()
    prefetched = tmp_path / "prefetched"
    train(train_args(tiny_model, reworded, prefetched, *common, "--prefetch-encoders"))
    assert sum(name.startswith("actedit-prefetch") for name in encoded_on) >= 8  # every micro-batch, ahead
    lines = lambda run: [json.loads(l) for l in (run / "logs" / "metrics.jsonl").read_text().splitlines()]  # noqa
    assert [m["loss"] for m in lines(prefetched)] == pytest.approx([m["loss"] for m in lines(plain)], rel=1e-4)
    a, b = unet_weights(plain), unet_weights(prefetched)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    # Resumed with the prefetch on, the run is the uninterrupted one bit for bit.
    stopped = tmp_path / "stopped"
    train(train_args(tiny_model, reworded, stopped, "--stop-at-step", "2", "--prefetch-encoders", *common))
    train(train_args(tiny_model, reworded, stopped, "--resume-from-checkpoint", "latest", "--prefetch-encoders",
                     *common))
    c = unet_weights(stopped)
    assert all(torch.equal(b[k], c[k]) for k in b)
    assert [m["loss"] for m in lines(stopped)] == [m["loss"] for m in lines(prefetched)]


def test_latent_cache_file_carries_the_cache_to_the_next_run(tmp_path, tiny_model, reworded, monkeypatch):
    from actedit_ros.training import latent_cache

    cache_file = tmp_path / "latents.safetensors"
    common = ("--max-train-pairs", "12", "--learning-rate", "1e-2", "--cache-latents", "--latent-cache-file",
              str(cache_file), "--instruction-variant-prob", "0.5", "--max-train-steps", "4")
    encoded = []
    real = latent_cache.encode_latents
    monkeypatch.setattr(latent_cache, "encode_latents", lambda vae, pixels: encoded.append(len(pixels)) or real(vae, pixels))
    lines = lambda run: [json.loads(l) for l in (run / "logs" / "metrics.jsonl").read_text().splitlines()]  # noqa
    first = tmp_path / "first"
    train(train_args(tiny_model, reworded, first, *common))
    assert sum(encoded) == 24  # 12 pairs, two images each, each encoded once
    assert cache_file.is_file()
    encoded.clear()
    second = tmp_path / "second"  # another run on the same dataset and VAE: nothing left to encode
    train(train_args(tiny_model, reworded, second, *common))
    assert sum(encoded) == 0
    assert [m["loss"] for m in lines(second)] == [m["loss"] for m in lines(first)]
    encoded.clear()
    other = tmp_path / "other"  # fewer pairs: indices mean other images, so the file is not used (and replaced)
    train(train_args(tiny_model, reworded, other, *common, "--max-train-pairs", "8"))
    assert sum(encoded) == 16
    encoded.clear()
    train(train_args(tiny_model, reworded, tmp_path / "again", *common, "--max-train-pairs", "8"))
    assert sum(encoded) == 0


def test_latent_cache_file_needs_the_cache(tmp_path, tiny_model, reworded, capsys):
    assert main(["--pretrained-model", str(tiny_model), "--dataset-dir", str(reworded), "--output-dir",
                 str(tmp_path / "out"), "--latent-cache-file", str(tmp_path / "l.safetensors")]) != 0
    assert "--cache-latents" in capsys.readouterr().err
