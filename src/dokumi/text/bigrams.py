"""Which word pairs a corpus's ordinary text is made of, from a sample of its records.

Fluent text is mostly word pairs that recur across records ("of the", "is used
to"); words drawn at random from a vocabulary almost never make such a pair,
however common each word is. The table is built from a bounded sample (by
content hash) of the corpus: its size does not grow with the corpus, and a
pair counts only when it occurs in two or more sampled records, so a record
never vouches for itself.
"""

from __future__ import annotations

import functools

import numpy as np

from dokumi.arrays import distinct
from dokumi.text.sampling import BottomK
from dokumi.text.tokens import Tokens, fmix64, position_weights

TABLE_BITS = 2**24  # 2 MiB packed, 16 MiB unpacked per process; a sample of 20,000 records sets < 10%
SAMPLE_RECORDS = 20_000
PAIRS_PER_RECORD = 256


def pair_hashes(tokens: Tokens) -> tuple[np.ndarray, np.ndarray]:
    """For every word, the hash of the pair it opens with the next word, and whether that word is in the
    same record (the last word of a record opens no pair)."""
    hashes = tokens.hashes
    n = len(hashes)
    valid = np.ones(n, dtype=bool)
    if n:
        valid[tokens.offsets[1:][tokens.counts > 0] - 1] = False
    weights = position_weights(2)
    following = np.zeros(n, dtype=np.uint64)
    following[:-1] = hashes[1:]
    return fmix64(hashes * weights[0] + following * weights[1] + np.uint64(0xB16)), valid


class PairSample:
    """A round-1 partial: the distinct word pairs of the records of lowest content hash."""

    def __init__(self, size: int = SAMPLE_RECORDS) -> None:
        self.sample = BottomK(size)

    def add(self, tokens: Tokens, priorities: np.ndarray) -> None:
        order = np.argsort(priorities, kind="stable")
        candidates = [i for i in order[: self.sample.size].tolist() if self.sample.would_keep(int(priorities[i]))]
        if not candidates:
            return
        pairs, valid = pair_hashes(tokens)
        for record in candidates:
            start, end = int(tokens.offsets[record]), int(tokens.offsets[record + 1])
            mine = pairs[start:end][valid[start:end]]
            self.sample.offer(int(priorities[record]), distinct(mine)[:PAIRS_PER_RECORD])

    @classmethod
    def merged(cls, parts: list[PairSample]) -> PairSample:
        out = cls(parts[0].sample.size)
        out.sample = BottomK.merged([p.sample for p in parts])
        return out

    def table(self) -> SeenPairs:
        """The pairs that two or more sampled records hold, as a bit table."""
        items = self.sample.items()
        bits = np.zeros(TABLE_BITS, dtype=bool)
        if items:
            values, counts = np.unique(np.concatenate(items), return_counts=True)
            bits[(values[counts >= 2] % np.uint64(TABLE_BITS)).astype(np.int64)] = True
        return SeenPairs(np.packbits(bits), len(items))


class SeenPairs:
    """The bit table of recurring word pairs; sent to workers packed, unpacked once per process."""

    def __init__(self, packed: np.ndarray, records: int) -> None:
        self.packed, self.records = packed, records

    @functools.cached_property
    def _bits(self) -> np.ndarray:
        if not len(self.packed):  # an empty table: no pair recurs
            return np.zeros(TABLE_BITS, dtype=bool)
        return np.unpackbits(self.packed).astype(bool)

    def __getstate__(self) -> dict:
        return {"packed": self.packed, "records": self.records}

    def flags(self, tokens: Tokens) -> tuple[np.ndarray, np.ndarray]:
        """Per word: whether the pair it opens recurs in the corpus, and whether it opens a pair."""
        pairs, valid = pair_hashes(tokens)
        seen = self._bits[(pairs % np.uint64(TABLE_BITS)).astype(np.int64)] & valid
        return seen, valid


__all__ = ["PairSample", "SeenPairs", "pair_hashes"]
