"""Rewordings of the world's instructions: training-only variants (phrasing augmentation) and, with another word
table, the held-out wording set the evaluation reports apart (`world/wording_holdout.py`).

The world trains on its "template" phrasings only, but people word things their own way: a typo, the object named by
colour or kind only, a synonym noun, a new verb, a planner's terse phrasing, extra words. A rewording keeps the
episode's action and objects and changes only the words, drawing from a :class:`WordTable`:

- a verb phrase: the world's own templates or the table's extra patterns ({x}: acted-on object, {y}: reference
  object, {liquid}: what is poured);
- each object reference: colour and noun, noun only, colour only ("the red one"), with the noun from the world's
  nouns or the table's synonyms; a shortened reference is used only when it still names one object in the scene;
- a frame around it (planner style: "task: ...", articles dropped), filler words, and at most one typo.

The training table shares no pattern, synonym or frame with the held-out table or with the world's held-out test
phrasings (test/test_phrasing_augment.py checks it), so evaluating on those stays honest.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .episode import NOUNS, Episode, generate_episode
from .phrasings import PHRASINGS


@dataclass(frozen=True)
class WordTable:
    """The words one set of rewordings draws from."""

    patterns: dict[str, list[str]]  # action -> extra verb-phrase patterns (beside the world's templates)
    synonyms: dict[str, list[str]]  # object kind -> extra nouns
    colour_only: list[str]  # "{colour} one"-style references
    frames: list[str]  # "{}" = the instruction
    prefixes: list[str] = field(default_factory=list)
    suffixes: list[str] = field(default_factory=list)
    use_templates: bool = True  # also draw verb phrases from the world's training templates


TRAINING_WORDS = WordTable(
    patterns={
        "put_in": ["insert the {x} into the {y}", "move the {x} into the {y}", "get the {x} in the {y}",
                   "the {x} goes in the {y}", "toss the {x} into the {y}", "transfer the {x} to the {y}"],
        "put_on": ["move the {x} onto the {y}", "the {x} goes on the {y}", "position the {x} on the {y}",
                   "leave the {x} on the {y}", "transfer the {x} onto the {y}"],
        "move_left": ["move the {x} left", "nudge the {x} to the left", "the {x} goes further left",
                      "shift the {x} leftward", "carry the {x} over to the left", "push the {x} to the left"],
        "move_right": ["move the {x} right", "nudge the {x} to the right", "the {x} goes further right",
                       "shift the {x} rightward", "carry the {x} over to the right", "push the {x} to the right"],
        "push": ["push the {x} further away", "slide the {x} away from me", "nudge the {x} back",
                 "move the {x} toward the back", "send the {x} to the back of the table"],
        "pick_up": ["lift the {x}", "pick the {x} up", "raise the {x}", "take hold of the {x}", "lift up the {x}",
                    "collect the {x}"],
        "open_drawer": ["open up the {x}", "slide the {x} open", "pull open the {x}", "get the {x} open"],
        "close_drawer": ["push the {x} shut", "slide the {x} closed", "close up the {x}", "get the {x} closed",
                         "push in the {x}"],
        "open_door": ["open up the {x}", "pull open the {x}", "get the {x} open", "swing open the {x}"],
        "close_door": ["push the {x} shut", "close up the {x}", "get the {x} closed", "swing shut the {x}"],
        "lid_off": ["lift the lid off the {x}", "take off the lid of the {x}", "take the cover off the {x}",
                    "open the {x}"],
        "lid_on": ["put the cover on the {x}", "place the lid on the {x}", "put the lid back on the {x}",
                   "cover up the {x}", "close the {x}"],
        "stack": ["stack the {x} onto the {y}", "set the {x} on top of the {y}", "put the {x} atop the {y}",
                  "place the {x} on top of the {y}"],
        "flip": ["flip the {x} over", "turn the {x} over", "turn the {x} upside down", "flip the {x} around"],
        "cut": ["cut up the {x}", "slice up the {x}", "cut the {x} in half", "split the {x}"],
        "pour": ["pour some {liquid} into the {y}", "put {liquid} in the {y}", "fill up the {y} with {liquid}",
                 "pour the {liquid} in the {y}", "add {liquid} to the {y}"],
    },
    synonyms={
        "cup": ["glass", "beaker", "coffee cup", "teacup"], "bowl": ["salad bowl", "mixing bowl", "container"],
        "plate": ["platter", "saucer", "dinner plate"], "block": ["brick", "box", "toy block", "wooden block"],
        "apple": [], "pepper": ["capsicum", "sweet pepper"], "pot": ["pan", "cooking pot", "stockpot"],
        "jug": ["carafe", "water jug"], "card": ["tile", "playing card"], "drawer": ["chest drawer"],
        "door": ["cabinet", "cupboard door", "closet door"],
    },
    colour_only=["{colour} one", "{colour} thing", "{colour} object"],
    frames=["{}", "task: {}", "next step: {}", "{}.", "instruction: {}", "now {}"],
    prefixes=["please ", "robot, ", "okay, ", "can you ", "go ahead and ", "next, "],
    suffixes=[" please", " now", " for me", " carefully", " slowly"],
)

_ARTICLES = re.compile(r"\b(the|a|an)\s+")
_KEYBOARD_NEIGHBOURS = {row[i]: row[max(0, i - 1)] + row[i + 1:i + 2]
                        for row in ("qwertyuiop", "asdfghjkl", "zxcvbnm") for i in range(len(row))}


def reword(episode: Episode, words: WordTable, rng: np.random.Generator, typo_prob: float = 0.3,
           terse_prob: float = 0.15) -> str:
    """One rewording of the episode's instruction (same action, same objects)."""
    patterns = list(words.patterns.get(episode.action, []))
    if words.use_templates:
        patterns += PHRASINGS[episode.action]["template"]
    pattern = str(rng.choice(patterns))
    state = episode.start_state
    fields = {"x": refer(state, episode.target, words, rng)}
    if episode.action == "pour":
        fields["liquid"] = state.get(episode.reference).liquid
        fields["y"] = fields["x"]
    elif episode.reference:
        fields["y"] = refer(state, episode.reference, words, rng)
    text = pattern.format(**fields)
    if rng.random() < terse_prob:  # a planner's terse phrasing
        text = _ARTICLES.sub("", text)
    if words.prefixes and rng.random() < 0.25:
        text = str(rng.choice(words.prefixes)) + text
    if words.suffixes and rng.random() < 0.2:
        text += str(rng.choice(words.suffixes))
    text = str(rng.choice(words.frames)).format(text)
    if rng.random() < typo_prob:
        text = add_typo(text, rng)
    return " ".join(text.split())


def refer(state, name: str, words: WordTable, rng: np.random.Generator) -> str:
    """A reference to object `name`: colour + noun, noun only, or colour only, shortened only when unambiguous."""
    obj = state.get(name)
    nouns = NOUNS[obj.kind] + words.synonyms.get(obj.kind, [])
    noun = str(rng.choice(nouns))
    unique_kind = not any(o.kind == obj.kind and o.name != name for o in state.objects)
    unique_colour = not any(o.colour == obj.colour and o.name != name for o in state.objects)
    forms = ["full", "full"] + (["noun"] if unique_kind else []) + (
        ["colour"] if unique_colour and obj.kind not in ("drawer", "door") else [])
    form = str(rng.choice(forms))
    if form == "noun":
        return noun
    if form == "colour":
        return str(rng.choice(words.colour_only)).format(colour=obj.colour)
    return f"{obj.colour} {noun}"


def add_typo(text: str, rng: np.random.Generator) -> str:
    """One typo in one word of at least 4 letters: two letters swapped, one dropped, doubled or a keyboard slip."""
    words = text.split(" ")
    candidates = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    if not candidates:
        return text
    i = int(rng.choice(candidates))
    word, pos = words[i], int(rng.integers(1, len(words[i]) - 1))
    kind = str(rng.choice(["swap", "drop", "double", "slip"]))
    if kind == "swap":
        word = word[:pos] + word[pos + 1] + word[pos] + word[pos + 2:]
    elif kind == "drop":
        word = word[:pos] + word[pos + 1:]
    elif kind == "double":
        word = word[:pos] + word[pos] + word[pos:]
    else:
        neighbours = _KEYBOARD_NEIGHBOURS.get(word[pos].lower(), "")
        word = word[:pos] + (str(rng.choice(list(neighbours))) if neighbours else word[pos]) + word[pos + 1:]
    words[i] = word
    return " ".join(words)


def instruction_variants(episode: Episode, count: int, words: WordTable = TRAINING_WORDS,
                         stream: int = 200) -> list[str]:
    """`count` distinct rewordings (fewer if the table cannot make that many), seeded by the episode alone (its own
    stream: the episode itself is unchanged)."""
    rng = np.random.default_rng([episode.seed, 0 if episode.split == "train" else 1, stream])
    variants: list[str] = []
    for _ in range(count * 4):
        text = reword(episode, words, rng)
        if text != episode.instruction and text not in variants:
            variants.append(text)
        if len(variants) == count:
            break
    return variants


def add_instruction_variants(dataset_dir: str | Path, count: int) -> int:
    """Add ``instruction_variants`` (`count` training rewordings) to every train record of a world dataset's
    index.jsonl that lacks them; test records keep their single instruction. Returns how many records changed."""
    from tqdm import tqdm

    index = Path(dataset_dir) / "index.jsonl"
    records = [json.loads(line) for line in index.read_text().splitlines() if line.strip()]
    todo = [r for r in records if r["split"] == "train" and len(r.get("instruction_variants", ())) != count]
    for record in tqdm(todo, desc="instruction variants", unit="pair", disable=not todo):
        episode = generate_episode(seed=record["seed"], regime=record["regime"], split="train", size=(16, 12),
                                   num_frames=2)
        if episode.instruction != record["instruction"]:
            raise ValueError(f"{index}: record {record['id']} does not match world episode seed {record['seed']} "
                             f"(instruction {record['instruction']!r} vs {episode.instruction!r}); rewrite the dataset")
        record["instruction_variants"] = instruction_variants(episode, count)
    if todo:
        tmp = index.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
        tmp.replace(index)
    return len(todo)
