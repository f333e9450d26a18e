"""Instruction phrasings of the world's actions, per kind (template / paraphrase / unseen_verb)."""

# Instruction phrasings. {x}: the acted-on object, {y}: the reference object, {liquid}: what is poured.
# "template" phrasings are the only ones in training; "paraphrase" and "unseen_verb" ones only appear in test.
PHRASINGS: dict[str, dict[str, list[str]]] = {
    "put_in": {
        "template": ["put the {x} in the {y}", "place the {x} into the {y}", "drop the {x} in the {y}"],
        "paraphrase": ["the {x} should go in the {y}", "can you get the {x} into the {y}"],
        "unseen_verb": ["deposit the {x} in the {y}", "stash the {x} inside the {y}"],
    },
    "put_on": {
        "template": ["put the {x} on the {y}", "place the {x} onto the {y}", "set the {x} on the {y}"],
        "paraphrase": ["I want the {x} sitting on the {y}", "get the {x} onto the {y}"],
        "unseen_verb": ["rest the {x} on the {y}", "lay the {x} on the {y}"],
    },
    "move_left": {
        "template": ["move the {x} to the left", "slide the {x} left", "shift the {x} to the left"],
        "paraphrase": ["the {x} needs to be further left", "bring the {x} over to the left side"],
        "unseen_verb": ["scoot the {x} leftwards", "drag the {x} to the left"],
    },
    "move_right": {
        "template": ["move the {x} to the right", "slide the {x} right", "shift the {x} to the right"],
        "paraphrase": ["the {x} needs to be further right", "bring the {x} over to the right side"],
        "unseen_verb": ["scoot the {x} rightwards", "drag the {x} to the right"],
    },
    "push": {
        "template": ["push the {x} away", "push the {x} forward", "shove the {x} back"],
        "paraphrase": ["move the {x} further away from me", "the {x} should be further back on the table"],
        "unseen_verb": ["propel the {x} forward", "thrust the {x} away"],
    },
    "pick_up": {
        "template": ["pick up the {x}", "grab the {x}", "take the {x}"],
        "paraphrase": ["I want to hold the {x}", "get the {x} off the table"],
        "unseen_verb": ["hoist the {x}", "snatch the {x}"],
    },
    "open_drawer": {
        "template": ["open the {x}", "pull the {x} open", "pull out the {x}"],
        "paraphrase": ["the {x} needs to be open", "can you open up the {x}"],
        "unseen_verb": ["yank the {x} open", "draw out the {x}"],
    },
    "close_drawer": {
        "template": ["close the {x}", "shut the {x}", "push the {x} closed"],
        "paraphrase": ["the {x} should be closed", "could you close the {x} please"],
        "unseen_verb": ["slam the {x} shut", "seal the {x}"],
    },
    "open_door": {
        "template": ["open the {x}", "swing the {x} open", "pull the {x} open"],
        "paraphrase": ["the {x} needs to be open", "can you open up the {x}"],
        "unseen_verb": ["unlatch the {x}", "fling the {x} open"],
    },
    "close_door": {
        "template": ["close the {x}", "shut the {x}", "swing the {x} closed"],
        "paraphrase": ["the {x} should be closed", "could you close the {x} please"],
        "unseen_verb": ["slam the {x} shut", "latch the {x}"],
    },
    "lid_off": {
        "template": ["take the lid off the {x}", "remove the lid from the {x}", "uncover the {x}"],
        "paraphrase": ["the {x} should not have its lid on", "get the lid off the {x}"],
        "unseen_verb": ["unlid the {x}", "pry the lid off the {x}"],
    },
    "lid_on": {
        "template": ["put the lid on the {x}", "cover the {x}", "close the {x} with its lid"],
        "paraphrase": ["the {x} needs its lid back on", "the {x} should be covered"],
        "unseen_verb": ["cap the {x}", "recap the {x}"],
    },
    "stack": {
        "template": ["stack the {x} on the {y}", "put the {x} on top of the {y}", "place the {x} on the {y}"],
        "paraphrase": ["build a tower with the {x} on the {y}", "the {x} should be on top of the {y}"],
        "unseen_verb": ["pile the {x} onto the {y}", "heap the {x} on the {y}"],
    },
    "flip": {
        "template": ["flip the {x}", "flip over the {x}", "turn over the {x}"],
        "paraphrase": ["turn the {x} onto its other side", "the {x} should show its other side"],
        "unseen_verb": ["invert the {x}", "overturn the {x}"],
    },
    "cut": {
        "template": ["cut the {x}", "slice the {x}", "cut the {x} into pieces"],
        "paraphrase": ["I need the {x} in pieces", "the {x} should be cut up"],
        "unseen_verb": ["chop the {x}", "dice the {x}"],
    },
    "pour": {
        "template": ["pour the {liquid} into the {y}", "fill the {y} with {liquid}", "pour {liquid} in the {y}"],
        "paraphrase": ["the {y} should be full of {liquid}", "I want {liquid} in the {y}"],
        "unseen_verb": ["decant the {liquid} into the {y}", "empty the jug of {liquid} into the {y}"],
    },
}
