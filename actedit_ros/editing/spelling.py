"""Spelling correction of instructions before they reach the text encoder.

A typo turns a word the text encoder knows into word pieces it has rarely seen together ("eleate" instead of
"elevate"), and the editor, not knowing what is asked, tends to return the unchanged scene. People and speech-to-text
front ends make such slips. Each word of at least ``MIN_LETTERS`` letters that is neither in an English word list
(pyspellchecker's frequency dictionary) nor a whole word of the model's own tokenizer vocabulary is replaced by the
most frequent English word one edit away (a letter dropped, added, changed, or two neighbours swapped), when there
is one. Everything else is left as written: short words (too ambiguous), words with digits, and words the tokenizer
knows (so "colour" stays). The result says what was changed, and the prediction's notes show it.
Measured in the README ("Typos").
"""
from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

MIN_LETTERS = 4
_WORD = re.compile(r"[A-Za-z]+")


@dataclass
class SpellingResult:
    text: str  # the instruction as the text encoder will read it
    corrections: list[tuple[str, str]] = field(default_factory=list)  # (as written, as read), in order

    def note(self) -> str:
        return "read " + ", ".join(f"'{a}' as '{b}'" for a, b in self.corrections)


class SpellingCorrector:
    """Corrects instructions word by word; ``known_words`` (lower case) are never changed. Thread-safe."""

    def __init__(self, known_words: set[str] = frozenset()):
        from spellchecker import SpellChecker  # pyspellchecker; its English dictionary ships in the wheel

        self._checker = SpellChecker(language="en", distance=1)
        self._known = {w.lower() for w in known_words}
        self._lock = threading.Lock()
        self._cache: dict[str, str] = {}

    @classmethod
    def for_tokenizer(cls, tokenizer) -> "SpellingCorrector":
        """A corrector that keeps every whole word of a tokenizer's vocabulary (WordPiece or CLIP BPE)."""
        words = set()
        for token in tokenizer.get_vocab():
            word = token[:-4] if token.endswith("</w>") else token  # CLIP marks a word's end with </w>
            if word.isalpha() and word.isascii():
                words.add(word.lower())
        return cls(words)

    def _word(self, word: str) -> str:
        lower = word.lower()
        if len(lower) < MIN_LETTERS or lower in self._known:
            return word
        with self._lock:
            if lower not in self._cache:
                known = lower in self._checker
                self._cache[lower] = lower if known else (self._checker.correction(lower) or lower)
            fixed = self._cache[lower]
        if fixed == lower:
            return word
        return fixed.capitalize() if word[0].isupper() else fixed

    def correct(self, text: str) -> SpellingResult:
        corrections = []

        def replace(match: re.Match) -> str:
            fixed = self._word(match.group(0))
            if fixed != match.group(0):
                corrections.append((match.group(0), fixed))
            return fixed

        return SpellingResult(_WORD.sub(replace, text), corrections)
