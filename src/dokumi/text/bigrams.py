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
    """A round-1 partial: the distinct word pairs of the ``size`` records of lowest content hash.

    Kept as flat arrays (priorities ascending, each record's pairs between ``offsets``), not one array per
    record: a partial of 20,000 records pickles as three buffers, which Dask moves between workers and
    unpickles without creating 20,000 objects.
    """

    def __init__(self, size: int = SAMPLE_RECORDS) -> None:
        self.size = size
        self.priorities = np.zeros(0, dtype=np.uint64)
        self.offsets = np.zeros(1, dtype=np.int64)
        self.pairs = np.zeros(0, dtype=np.uint64)

    def __len__(self) -> int:
        return len(self.priorities)

    def add(self, tokens: Tokens, priorities: np.ndarray) -> None:
        """Offer a batch's records by priority; keep the word pairs of the ``size`` lowest, one record per content."""
        priorities = np.asarray(priorities, dtype=np.uint64)
        order = np.argsort(priorities, kind="stable")[: self.size]
        if len(self) >= self.size:
            order = order[priorities[order] < self.priorities[-1]]
        # one record per content (copies share a priority), none already kept
        _, first = np.unique(priorities[order], return_index=True)
        chosen = order[np.sort(first)]
        chosen = chosen[~np.isin(priorities[chosen], self.priorities)]
        if not len(chosen):
            return
        pairs, valid = pair_hashes(tokens)
        owner = np.repeat(np.arange(len(tokens.counts)), tokens.counts)
        rank = np.full(len(tokens.counts), -1, dtype=np.int64)
        rank[chosen] = np.arange(len(chosen))
        mine = valid & (rank[owner] >= 0)
        owners, values = rank[owner[mine]], pairs[mine]
        # each record's distinct pairs, ascending, the first PAIRS_PER_RECORD of them
        order = np.lexsort((values, owners))
        owners, values = owners[order], values[order]
        keep = np.ones(len(values), dtype=bool)
        keep[1:] = (owners[1:] != owners[:-1]) | (values[1:] != values[:-1])
        owners, values = owners[keep], values[keep]
        starts = np.searchsorted(owners, np.arange(len(chosen) + 1))
        within = np.arange(len(owners)) - starts[owners]
        capped = within < PAIRS_PER_RECORD
        counts = np.bincount(owners[capped], minlength=len(chosen))
        fresh = PairSample(self.size)
        fresh.priorities = priorities[chosen]
        fresh.offsets = np.concatenate(([0], np.cumsum(counts)))
        fresh.pairs = values[capped]
        merged = PairSample.merged([self, fresh])
        self.priorities, self.offsets, self.pairs = merged.priorities, merged.offsets, merged.pairs

    @classmethod
    def merged(cls, parts: list[PairSample]) -> PairSample:
        """The ``size`` records of lowest priority among the parts' (a record in two parts counts once)."""
        out = cls(parts[0].size)
        priorities = np.concatenate([p.priorities for p in parts])
        if not len(priorities):
            return out
        lengths = np.concatenate([np.diff(p.offsets) for p in parts])
        starts = np.concatenate([p.offsets[:-1] + shift for p, shift in
                                 zip(parts, np.cumsum([0] + [len(p.pairs) for p in parts[:-1]]))])
        pairs = np.concatenate([p.pairs for p in parts])
        kept, first = np.unique(priorities, return_index=True)  # ascending, one per priority
        first = first[: out.size]
        out.priorities = kept[: out.size]
        lengths, starts = lengths[first], starts[first]
        out.offsets = np.concatenate(([0], np.cumsum(lengths)))
        # gather each kept record's segment of pairs, in order
        out.pairs = pairs[np.repeat(starts - out.offsets[:-1], lengths) + np.arange(out.offsets[-1])]
        return out

    def counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Each distinct sampled pair (ascending) and how many sampled records hold it."""
        return np.unique(self.pairs, return_counts=True)

    def recurring(self) -> tuple[np.ndarray, np.ndarray]:
        """The pairs (ascending) that two or more sampled records hold, and how many hold each."""
        values, counts = self.counts()
        held = counts >= 2
        return values[held], counts[held]

    def table(self) -> SeenPairs:
        """The pairs that two or more sampled records hold, as a bit table."""
        return SeenPairs.of(self.recurring()[0], len(self))


class SeenPairs:
    """The bit table of recurring word pairs; sent to workers packed, unpacked once per process."""

    def __init__(self, packed: np.ndarray, records: int) -> None:
        self.packed, self.records = packed, records

    @classmethod
    def of(cls, recurring: np.ndarray, records: int) -> SeenPairs:
        """The table of the pair hashes ``recurring``, from a sample of ``records`` records."""
        bits = np.zeros(TABLE_BITS, dtype=bool)
        bits[(recurring % np.uint64(TABLE_BITS)).astype(np.int64)] = True
        return cls(np.packbits(bits), records)

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
        return self.seen(pairs, valid), valid

    def seen(self, pairs: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Which of the pair hashes ``pairs`` (where ``valid``) recur in the corpus."""
        return self._bits[(pairs % np.uint64(TABLE_BITS)).astype(np.int64)] & valid


__all__ = ["PairSample", "SeenPairs", "pair_hashes"]
