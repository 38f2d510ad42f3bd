"""Which records hold a word of one set followed, a few words later, by a word of another set.

A rule such as "reveal ... system prompt" (a sequence of slots, at most ``gap``
words apart) is an exact regex run record by record. Its words alone let
most records of a technical corpus through ("print" and "password" each occur
in a third of man pages); their distance, counted on the batch's shared
words, sends only the records where they come close to the regex. For
ASCII text the words here are exactly the regex's ``\\w+`` runs, so the
distance test never drops a record the regex would match; records with any
other character keep going to the regex (Unicode word rules differ slightly).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dokumi.arrays import distinct, members
from dokumi.text.tokens import Tokens, word_hash, words_of


@dataclass(frozen=True)
class WordSet:
    """Words given whole (their hashes, ascending) or as prefixes (a rule's ``word*``)."""

    exact: np.ndarray
    prefixes: tuple[bytes, ...] = ()

    def holds(self, tokens: Tokens, positions: np.ndarray) -> np.ndarray:
        """Whether the words at ``positions`` of ``tokens`` are in the set."""
        found = members(tokens.hashes[positions], self.exact)
        for prefix in self.prefixes:
            found |= _starts_with(tokens, positions, prefix)
        return found


@dataclass(frozen=True)
class Near:
    """A word of ``before`` followed by one of ``after`` with at most ``gap`` words between them."""

    before: WordSet
    after: WordSet
    gap: int

    def records(self, tokens: Tokens, among: np.ndarray | None = None) -> np.ndarray:
        """Per record of ``tokens``, whether it holds such a pair (only records where ``among`` is true
        are looked at; the others are false)."""
        found = np.zeros(len(tokens), dtype=bool)
        words = np.arange(len(tokens.hashes)) if among is None else np.flatnonzero(among[tokens.owner])
        left = words[self.before.holds(tokens, words)]
        if not len(left):
            return found
        end = tokens.offsets[tokens.owner[left] + 1]
        for distance in range(1, self.gap + 2):
            at = left + distance
            inside = at < end
            at = at[inside]
            found[tokens.owner[at[self.after.holds(tokens, at)]]] = True
        return found


def sequence_pairs(slots: list[list[str]], gap: int) -> tuple[Near, ...] | None:
    """For a rule's sequence of slots (alternative words or phrases, ``word*`` a prefix), one :class:`Near`
    per pair of neighbouring slots: the last words of the first slot's alternatives before the first words
    of the next one's. None where the words cannot stand for the regex (an alternative without a word,
    a character outside ASCII)."""
    ends, starts = [], []
    for slot in slots:
        edges = [_edges(item) for item in slot]
        if any(edge is None for edge in edges):
            return None
        starts.append(_word_set([edge[0] for edge in edges if edge is not None]))
        ends.append(_word_set([edge[1] for edge in edges if edge is not None]))
    return tuple(Near(ends[i], starts[i + 1], gap) for i in range(len(slots) - 1))


def _edges(item: str) -> tuple[tuple[str, bool], tuple[str, bool]] | None:
    """The first and last word of one alternative, each with whether it is a prefix."""
    if not item.isascii():
        return None
    parts = item.split()
    first_words, last_words = words_of(parts[0].rstrip("*")), words_of(parts[-1].rstrip("*"))
    if not first_words or not last_words:
        return None
    # a wildcard ends a part: it makes the part's last word a prefix
    first_is_prefix = parts[0].endswith("*") and len(first_words) == 1
    return (first_words[0], first_is_prefix), (last_words[-1], parts[-1].endswith("*"))


def _word_set(words: list[tuple[str, bool]]) -> WordSet:
    exact = [word_hash(word.encode("utf-8")) for word, prefix in words if not prefix]
    prefixes = tuple(sorted({word.encode("utf-8") for word, prefix in words if prefix}))
    return WordSet(distinct(np.array(exact, dtype=np.uint64)), prefixes)


def _starts_with(tokens: Tokens, positions: np.ndarray, prefix: bytes) -> np.ndarray:
    """Whether the words at ``positions`` begin with ``prefix`` (normalised bytes): byte by byte, each
    byte read only for the words that matched the bytes before it."""
    starts = tokens.starts[positions]
    alive = np.flatnonzero(tokens.ends[positions] - starts >= len(prefix))
    for offset, byte in enumerate(prefix):
        alive = alive[tokens.data[starts[alive] + offset] == byte]
    found = np.zeros(len(positions), dtype=bool)
    found[alive] = True
    return found


__all__ = ["Near", "WordSet", "sequence_pairs"]
