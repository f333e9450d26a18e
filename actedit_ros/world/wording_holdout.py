"""The held-out wording set: rewordings that training never sees, reported apart by `actedit-eval --wording heldout`.

Same machinery as the training variants (`phrasing_augment.reword`), another word table: its own verbs, synonym
nouns (among them the three the issue names: basin, tray, tumbler, kept out of training for that reason),
colour-only forms, planner-style frames and fillers, and no world template (every held-out instruction uses one of
the patterns below). Typos are drawn the same way but on the held-out seed stream.
"""
from __future__ import annotations

from .phrasing_augment import WordTable

HELD_OUT_WORDS = WordTable(
    patterns={
        "put_in": ["plop the {x} into the {y}", "lower the {x} into the {y}", "the {x} belongs in the {y}"],
        "put_on": ["perch the {x} on the {y}", "lower the {x} onto the {y}", "the {x} belongs on the {y}"],
        "move_left": ["reposition the {x} to the left", "budge the {x} leftward", "relocate the {x} to the left"],
        "move_right": ["reposition the {x} to the right", "budge the {x} rightward",
                       "relocate the {x} to the right"],
        "push": ["press the {x} away", "edge the {x} further back", "move the {x} away from you"],
        "pick_up": ["elevate the {x}", "scoop up the {x}", "lift the {x} off the table"],
        "open_drawer": ["crack open the {x}", "extend the {x}", "make the {x} open"],
        "close_drawer": ["retract the {x}", "tuck in the {x}", "make the {x} closed"],
        "open_door": ["crack open the {x}", "prop the {x} open", "make the {x} open"],
        "close_door": ["bang the {x} shut", "pull the {x} to", "make the {x} closed"],
        "lid_off": ["uncap the {x}", "lift off the lid of the {x}", "expose the inside of the {x}"],
        "lid_on": ["put a top on the {x}", "top the {x} with its lid", "shut the {x} with the lid"],
        "stack": ["balance the {x} on the {y}", "tower the {x} on the {y}", "sit the {x} atop the {y}"],
        "flip": ["turn the {x} face down", "upend the {x}", "turn the {x} the other way up"],
        "cut": ["carve the {x}", "mince the {x}", "cut apart the {x}"],
        "pour": ["tip the {liquid} into the {y}", "splash {liquid} into the {y}", "top up the {y} with {liquid}"],
    },
    synonyms={
        "cup": ["tumbler", "drinking glass"], "bowl": ["basin", "serving bowl"], "plate": ["tray", "side plate"],
        "block": ["cuboid", "building block"], "apple": [], "pepper": ["bell-pepper"],
        "pot": ["saucepot", "cooking pan"], "jug": ["ewer"], "card": ["postcard", "flashcard"],
        "drawer": ["sliding drawer"], "door": ["kitchen cupboard"],
    },
    colour_only=["{colour} item", "{colour} piece"],
    frames=["action: {}", "goal = {}", "subtask - {}", "I need you to {}", "{}, then stop"],
    prefixes=["hey robot ", "alright, ", "could you kindly "],
    suffixes=[" right away", " thanks", " gently"],
    use_templates=False,
)
