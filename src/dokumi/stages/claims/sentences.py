"""A document as its sentences, each reduced to the content words a claim is made of.

A claim survives rewording in its content words: the subject, what is said of it and its object
("gzip", "corrupt", "archive", "gigabyte"), whatever the frame ("Be warned: ...", "It is well known
that ..."). :func:`parse` splits a text into sentences and keeps, per sentence, its lowercased
content words (function words left out, a light suffix stripping so that "corrupts", "corrupted"
and "corrupt" are one word), in order.

:func:`parse` also tells which sentences are *foreign*: unlike the rest of their document (most of
their content words occur in no other sentence of it) and written in prose (:func:`is_prose`). An
inserted claim is such a sentence; most sentences of a real document share words with their
neighbours. Documents of one or two sentences have no rest to compare with: each of their prose
sentences counts as foreign.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache

from dokumi.stages.subpopulations.words import FUNCTION_WORDS

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n\s*\n")
_WORD = re.compile(r"[a-z][a-z0-9]*(?:['-][a-z0-9]+)*|\d+(?:[.,]\d+)*")
# a sentence of more content words than this is a list or a table, not a claim
MAX_SENTENCE_WORDS = 40
# and one of fewer has too little to say
MIN_SENTENCE_WORDS = 3
# documents with fewer sentences have no rest to judge a sentence against
MIN_CONTEXT_SENTENCES = 3
# characters of code, markup, paths and URLs: a claim is stated in prose
_CODE = re.compile(r"[{}\[\]<>=/\\#*_|`@$%&~^+]|://")
# share of a prose sentence's space-separated tokens that are words (an attribution "-- Kirk, \"Catspaw\",
# stardate 3018.2" or a list of numbers is not prose)
MIN_WORD_SHARE = 0.7
_PROSE_TOKEN = re.compile(r"^[(\"']*[^\W\d_][\w'-]*[)\"'.,;:!?]*$")


@lru_cache(maxsize=1 << 16)
def normalise(word: str) -> str:
    """``word`` without a plural, past or progressive ending, nor a final "e" ("files" and "file" ->
    "fil", "damaged" and "damages" -> "damag"): crude, but the same for every wording."""
    if len(word) > 4 and word.endswith("ies"):
        word = word[:-3] + "y"
    elif len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    for ending in ("ing", "ed"):
        if len(word) - len(ending) >= 3 and word.endswith(ending):
            word = word[:-len(ending)]
            break
    if len(word) > 3 and word.endswith("e"):
        word = word[:-1]
    return word


def content_words(sentence: str) -> list[str]:
    """The normalised content words of ``sentence``, in order (function words, numbers and single letters left
    out: numbers count in lists and tables, not in what a claim says)."""
    return [normalise(w) for w in _WORD.findall(sentence.lower())
            if len(w) > 1 and w not in FUNCTION_WORDS and not w[0].isdigit()]


def is_prose(sentence: str) -> bool:
    """Whether ``sentence`` reads as prose: no code, markup, path or URL characters, and mostly words."""
    if len(_CODE.findall(sentence)) > 1:
        return False
    tokens = sentence.split()
    return bool(tokens) and sum(bool(_PROSE_TOKEN.match(token)) for token in tokens) >= MIN_WORD_SHARE * len(tokens)


@dataclass(frozen=True)
class Sentence:
    """One sentence of a document: its text, its content words in order, and whether it is a foreign
    sentence in prose (one that could state a claim)."""

    text: str
    words: tuple[str, ...]
    foreign: bool


def parse(text: str, min_foreign: float) -> list[Sentence]:
    """The sentences of ``text`` of 3-40 content words, each marked foreign when it is prose and at least
    ``min_foreign`` of its distinct content words occur in no other sentence of the text."""
    pieces = [(piece.strip(), content_words(piece)) for piece in _SENTENCE.split(text)]
    pieces = [(piece, words) for piece, words in pieces if words]
    # in how many sentences each word occurs
    spread = Counter(word for _, words in pieces for word in set(words))
    judged = len(pieces) >= MIN_CONTEXT_SENTENCES
    out = []
    for piece, words in pieces:
        distinct = set(words)
        if not MIN_SENTENCE_WORDS <= len(distinct) or len(words) > MAX_SENTENCE_WORDS:
            continue
        alone = sum(spread[word] == 1 for word in distinct) / len(distinct)
        foreign = alone >= min_foreign if judged else True
        out.append(Sentence(piece, tuple(words), foreign and is_prose(piece)))
    return out


__all__ = ["MAX_SENTENCE_WORDS", "Sentence", "content_words", "is_prose", "normalise", "parse"]
