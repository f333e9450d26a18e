"""Training-only instruction variants (world/phrasing_augment.py) and the held-out wording set
(world/wording_holdout.py): what they say, that they stay apart, and how actedit-eval reports the held-out set."""
import json
import re

import numpy as np
import pytest

from actedit_ros.world import generate_episode
from actedit_ros.world.dataset import write_dataset
from actedit_ros.world.episode import NOUNS
from actedit_ros.world.phrasing_augment import (TRAINING_WORDS, add_instruction_variants, add_typo,
                                                instruction_variants, refer)
from actedit_ros.world.phrasings import PHRASINGS
from actedit_ros.world.wording_holdout import HELD_OUT_WORDS

SMALL = (16, 12)


def _patterns(table) -> set[str]:
    return {p for patterns in table.patterns.values() for p in patterns}


def _words(texts) -> set[str]:
    return {w for t in texts for w in re.findall(r"[a-z]+", t.lower())}


def test_training_words_share_nothing_with_the_held_out_sets():
    world_held_out = {p for kinds in PHRASINGS.values() for k in ("paraphrase", "unseen_verb") for p in kinds[k]}
    assert not _patterns(TRAINING_WORDS) & (world_held_out | _patterns(HELD_OUT_WORDS))
    # the world's unseen verbs stay unseen: none of them is a word of a training pattern
    unseen_verbs = {kinds["unseen_verb"][i].split()[0] for kinds in PHRASINGS.values() for i in range(2)}
    assert not unseen_verbs & _words(_patterns(TRAINING_WORDS))
    train_nouns = {n for ns in TRAINING_WORDS.synonyms.values() for n in ns}
    held_nouns = {n for ns in HELD_OUT_WORDS.synonyms.values() for n in ns}
    world_nouns = {n for ns in NOUNS.values() for n in ns}
    assert not train_nouns & held_nouns and not held_nouns & world_nouns
    assert {"basin", "tray", "tumbler"} <= held_nouns and not {"basin", "tray", "tumbler"} & _words(train_nouns)
    for part in ("colour_only", "frames", "prefixes", "suffixes"):
        assert not set(getattr(TRAINING_WORDS, part)) & set(getattr(HELD_OUT_WORDS, part)), part
    assert not HELD_OUT_WORDS.use_templates  # every held-out instruction uses a held-out pattern


def test_every_action_has_patterns_in_both_tables_with_the_right_fields():
    for table in (TRAINING_WORDS, HELD_OUT_WORDS):
        assert set(table.patterns) == set(PHRASINGS)
        for action, patterns in table.patterns.items():
            template_fields = set(re.findall(r"{(\w+)}", PHRASINGS[action]["template"][0]))
            for pattern in patterns:
                assert set(re.findall(r"{(\w+)}", pattern)) == template_fields, (action, pattern)


def test_variants_are_distinct_rewordings_and_reproducible():
    for seed in range(30):
        episode = generate_episode(seed, "fixed", "train", SMALL, 2)
        variants = instruction_variants(episode, 6)
        assert len(variants) == 6 and len(set(variants)) == 6
        assert episode.instruction not in variants
        assert all(v and v == " ".join(v.split()) for v in variants)
        # seeded by the episode alone: the same at any size and in either camera regime
        assert variants == instruction_variants(generate_episode(seed, "head", "train", (64, 48), 2), 6)


def test_short_references_only_when_they_name_one_object():
    rng = np.random.default_rng(0)
    checked = {"noun": 0, "colour": 0}
    for seed in range(60):
        episode = generate_episode(seed, "fixed", "train", SMALL, 2)
        state = episode.start_state
        obj = state.get(episode.target)
        same_kind = any(o.kind == obj.kind and o.name != obj.name for o in state.objects)
        same_colour = any(o.colour == obj.colour and o.name != obj.name for o in state.objects)
        for _ in range(20):
            text = refer(state, episode.target, TRAINING_WORDS, rng)
            if not text.startswith(obj.colour):
                assert not same_kind, (seed, text)
                checked["noun"] += 1
            elif text.split()[-1] in {form.split()[-1] for form in TRAINING_WORDS.colour_only}:
                assert not same_colour, (seed, text)
                checked["colour"] += 1
    assert checked["noun"] > 20 and checked["colour"] > 20  # both shortened forms do occur


def test_a_typo_changes_one_word_by_one_edit():
    rng = np.random.default_rng(1)
    text = "put the red bell pepper in the green bowl"
    for _ in range(50):
        typo = add_typo(text, rng)
        before, after = text.split(" "), typo.split(" ")
        assert len(before) == len(after)
        changed = [(a, b) for a, b in zip(before, after) if a != b]
        assert len(changed) <= 1
        if changed:
            a, b = changed[0]
            assert abs(len(a) - len(b)) <= 1 and len(a) >= 4
    assert add_typo("put it in", rng) == "put it in"  # no word long enough


def test_dataset_gets_variants_on_train_records_only_and_rerun_is_a_no_op(tmp_path):
    out = write_dataset(tmp_path / "ds", 6, 3, SMALL, progress=False)
    assert add_instruction_variants(out, 4) == 6
    records = [json.loads(line) for line in (out / "index.jsonl").read_text().splitlines()]
    for record in records:
        if record["split"] == "train":
            assert len(record["instruction_variants"]) == 4
        else:
            assert "instruction_variants" not in record
    assert add_instruction_variants(out, 4) == 0
    records[0]["instruction"] = "something else"
    (out / "index.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with pytest.raises(ValueError, match="does not match world episode"):
        add_instruction_variants(out, 5)


def test_actedit_eval_reports_the_held_out_wording_apart(tmp_path):
    from actedit_ros.editing.tiny import make_tiny_model
    from actedit_ros.world.evaluate import main

    model = make_tiny_model(tmp_path / "tiny", resolution=32)
    out = tmp_path / "eval"
    assert main(["--model", f"tiny={model}", "--episodes", "1", "--steps", "1", "--size", "32", "24",
                 "--wording", "both", "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    tiny = [r for r in records if r["model"] == "tiny"]
    assert len(tiny) == 4 and sum(r["phrasing"] == "heldout" for r in tiny) == 2
    assert sum(r["model"] == "copy input" for r in records) == 2  # once per episode
    held = [r["instruction"] for r in tiny if r["phrasing"] == "heldout"]
    own = [r["instruction"] for r in tiny if r["phrasing"] != "heldout"]
    assert not set(held) & set(own)
    assert "acc. held-out wording" in (out / "table.md").read_text()
