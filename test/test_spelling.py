"""Typo correction of instructions (editing/spelling.py) and how predict() reports it."""
import numpy as np
import pytest

from actedit_ros.editing import GoalPredictor
from actedit_ros.editing.spelling import SpellingCorrector


@pytest.fixture(scope="module")
def predictor():
    return GoalPredictor.from_pretrained(None)


def test_typos_are_corrected_and_known_words_kept(predictor):
    corrector = SpellingCorrector.for_tokenizer(predictor.components.tokenizer)
    result = corrector.correct("Elevaet the purple mug, then put it in the bowwl")
    assert result.text == "Elevate the purple mug, then put it in the bowl"
    assert result.corrections == [("Elevaet", "Elevate"), ("bowwl", "bowl")]
    assert "'bowwl' as 'bowl'" in result.note()
    # English words, words of the tokenizer's vocabulary (British "colour"), short words and numbers stay as written
    for text in ("open the drawer", "the colour of the cup", "thn stop", "move block 42 to the left"):
        assert corrector.correct(text).text == text
    assert SpellingCorrector({"bowwl"}).correct("the bowwl").corrections == []


def test_predict_reads_the_corrected_instruction_and_says_so(predictor):
    start = np.full((48, 64, 3), 120, np.uint8)
    corrected = predictor.predict(start, "eleate the cup", steps=2)
    assert any("'eleate' as 'elevate'" in note for note in corrected.notes)
    same = predictor.predict(start, "elevate the cup", steps=2)
    assert np.array_equal(corrected.image, same.image)  # the text encoder read the same words
    as_written = predictor.predict(start, "eleate the cup", steps=2, correct_spelling=False)
    assert not any("eleate" in note for note in as_written.notes)
    assert not np.array_equal(as_written.image, corrected.image)
