"""Vectorised features of a batch for trigger statistics: word n-grams, sentences, windows around words.

Everything starts from the batch's shared words (:class:`dokumi.text.tokens.Tokens`):
an n-gram is a hash of its words' hashes, a sentence a hash of its words, so
no Python loop runs per word.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa

from dokumi.arrays import first_of_pairs
from dokumi.text.scripts import HAN, KANA, word_scripts
from dokumi.text.tokens import Tokens, fmix64, position_weights

# sentence ends in normalised bytes: . ! ? ; followed by white space, or a line break
_STOPS = np.frombuffer(b".!?;", dtype=np.uint8)
_SPACES = np.frombuffer(b" \t\n\r\x0b\x0c\x00", dtype=np.uint8)
_NEWLINE = np.uint8(ord("\n"))
_MAX_WEIGHTS = 4096


def gram_hash(word_hashes: list[int] | np.ndarray) -> int:
    """The hash of one n-gram from its words' hashes (a unigram is its word's hash)."""
    words = np.asarray(word_hashes, dtype=np.uint64)
    if len(words) == 1:
        return int(words[0])
    weights = position_weights(len(words))
    return int(fmix64(np.array([np.sum(words * weights, dtype=np.uint64) + np.uint64(len(words))],
                               dtype=np.uint64))[0])


@dataclass
class Grams:
    """Every n-gram (1..max_n words, inside one record) of a batch: its record, hash, length and first word."""

    owner: np.ndarray
    hash: np.ndarray
    length: np.ndarray
    start: np.ndarray

    @classmethod
    def of(cls, tokens: Tokens, max_n: int) -> Grams:
        """Every word n-gram up to ``max_n`` words of ``tokens``, with owner, length and start."""
        hashes, offsets = tokens.hashes, tokens.offsets
        owner = tokens.owner
        ends = offsets[1:][owner] if len(owner) else np.zeros(0, dtype=np.int64)
        position = np.arange(len(hashes), dtype=np.int64)
        weights = position_weights(max_n)
        owners, grams, lengths, starts = [owner], [hashes], [np.ones(len(hashes), np.int8)], [position]
        combined = hashes * weights[0]
        for n in range(2, max_n + 1):
            valid = position + n <= ends
            if not valid.any():
                break
            combined[: len(hashes) - n + 1] += hashes[n - 1:] * weights[n - 1]
            at = np.flatnonzero(valid)
            owners.append(owner[at])
            grams.append(fmix64(combined[at] + np.uint64(n)))
            lengths.append(np.full(len(at), n, np.int8))
            starts.append(at)
        return cls(np.concatenate(owners), np.concatenate(grams), np.concatenate(lengths), np.concatenate(starts))

    def take(self, rows: np.ndarray) -> Grams:
        """The n-grams at positions ``rows``."""
        return Grams(self.owner[rows], self.hash[rows], self.length[rows], self.start[rows])

    def per_record(self) -> Grams:
        """Each (record, n-gram) once: its first occurrence (by word position)."""
        if not len(self.hash):
            return self
        return self.take(first_of_pairs(self.owner, self.hash))


@dataclass
class Sentences:
    """A batch's sentences (or lines): each one's record, hash of its normalised words, word count and place."""

    owner: np.ndarray
    key: np.ndarray
    words: np.ndarray
    first: np.ndarray
    last: np.ndarray
    tokens: Tokens
    record_words: np.ndarray

    @classmethod
    def of(cls, texts: pa.Array | list[str] | Tokens, min_words: int) -> Sentences:
        """The sentences of at least ``min_words`` words, from the texts' words (given, or split here).

        A sentence ends at a line break, or at ``.``, ``!``, ``?`` or ``;`` followed by white space (a CJK
        full stop counts as one, see :mod:`dokumi.text.tokens`): found in the normalised bytes the words
        were cut from, so no text is split or tokenised again.
        """
        tokens = texts if isinstance(texts, Tokens) else Tokens.of(texts)
        n_records = len(tokens)
        if not len(tokens.hashes):
            empty = np.zeros(0, dtype=np.int64)
            return cls(empty, empty.astype(np.uint64), empty, empty.astype(bool), empty.astype(bool),
                       _subset(tokens, empty), np.zeros(n_records, dtype=np.int64))
        data = tokens.data
        ending = np.zeros(len(data), dtype=bool)
        ending[:-1] = np.isin(data[:-1], _STOPS) & np.isin(data[1:], _SPACES)
        ending |= data == _NEWLINE
        ends = np.flatnonzero(ending)
        # sentence number of every word: the sentence ends before it (a record's first word opens one)
        number = np.searchsorted(ends, tokens.starts)
        owner = tokens.owner
        opens = np.ones(len(number), dtype=bool)
        opens[1:] = (number[1:] != number[:-1]) | (owner[1:] != owner[:-1])
        starts = np.flatnonzero(opens)
        counts = np.diff(np.append(starts, len(number)))
        sentence_owner = owner[starts]
        pieces = Tokens(tokens.hashes, np.append(starts, len(number)), tokens.starts, tokens.ends, data)
        record_words = tokens.counts
        keep = np.flatnonzero(_word_lengths(tokens, starts, counts) >= min_words)
        # first and last among the record's sentences of min_words or more (a short line does not count)
        kept_owner = sentence_owner[keep]
        first = np.ones(len(keep), dtype=bool)
        first[1:] = kept_owner[1:] != kept_owner[:-1]
        last = np.ones(len(keep), dtype=bool)
        last[:-1] = kept_owner[1:] != kept_owner[:-1]
        key = _sequence_hashes(pieces, keep)
        return cls(kept_owner, key, counts[keep], first, last, _subset(pieces, keep), record_words)

    def text(self, index: int) -> str:
        """The normalised words of sentence ``index``, joined by spaces."""
        start, end = self.tokens.offsets[index], self.tokens.offsets[index + 1]
        return " ".join(self.tokens.word(i) for i in range(start, end))

    @cached_property
    def alone(self) -> np.ndarray:
        """Sentences that are the whole of their record."""
        return self.words == self.record_words[self.owner]


def _word_lengths(tokens: Tokens, starts: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Each piece's length in words, where two Chinese or Japanese characters make one word.

    Every Han and kana character is a word of its own in :class:`Tokens` (those scripts are written
    without spaces), but a word of Chinese or Japanese is about two characters long: counted one to
    a word, a six-character heading (``中文版维护人``, "maintainer of the Chinese version") would
    pass for a six-word sentence, and the credits line that ends many translated man pages for an
    inserted sentence.
    """
    if not len(tokens.data) or tokens.data.max() < 0xE3:  # no character of U+3000 or above: no Han, no kana
        return counts
    unspaced = np.isin(word_scripts(tokens), (HAN, KANA))
    if not unspaced.any():
        return counts
    halves = np.add.reduceat(np.where(unspaced, 1, 2), starts) if len(starts) else np.zeros(0, np.int64)
    return halves // 2


def _sequence_hashes(tokens: Tokens, rows: np.ndarray) -> np.ndarray:
    """A hash of each selected piece's word sequence (its words' hashes weighted by position)."""
    if not len(rows):
        return np.zeros(0, dtype=np.uint64)
    counts = tokens.counts[rows]
    starts = tokens.offsets[rows]
    owner = np.repeat(np.arange(len(rows)), counts)
    index = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    words = tokens.hashes[np.repeat(starts, counts) + index]
    weighted = words * position_weights(min(int(counts.max()), _MAX_WEIGHTS))[np.minimum(index, _MAX_WEIGHTS - 1)]
    sums = np.add.reduceat(weighted, np.cumsum(counts) - counts) if len(weighted) else np.zeros(0, np.uint64)
    del owner
    return fmix64(sums + counts.astype(np.uint64))


def _subset(tokens: Tokens, rows: np.ndarray) -> Tokens:
    """The words of the selected pieces only (offsets renumbered)."""
    counts = tokens.counts[rows]
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    index = np.repeat(tokens.offsets[rows], counts) + (np.arange(int(offsets[-1])) - np.repeat(offsets[:-1], counts))
    return Tokens(tokens.hashes[index], offsets, tokens.starts[index], tokens.ends[index], tokens.data)


def window_sums(values: np.ndarray, offsets: np.ndarray, owner: np.ndarray, width: int,
                after_width: int | None = None) -> tuple[np.ndarray, ...]:
    """For every word: the sum of ``values`` over the ``width`` words before it and the ``after_width``
    (default ``width``) words after it inside its record, and how many words each window holds."""
    total = np.concatenate(([0], np.cumsum(values, dtype=np.int64)))
    position = np.arange(len(values), dtype=np.int64)
    begin = np.maximum(position - width, offsets[:-1][owner])
    end = np.minimum(position + 1 + (width if after_width is None else after_width), offsets[1:][owner])
    before = total[position] - total[begin]
    after = total[end] - total[position + 1]
    return before, position - begin, after, end - position - 1


__all__ = ["Grams", "Sentences", "gram_hash", "window_sums"]
