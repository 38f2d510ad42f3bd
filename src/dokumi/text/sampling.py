"""Bounded counters and seeded samples whose result does not depend on how the corpus is split.

Samples keep the items of lowest *priority*, a seeded hash of the record's
content (:func:`priorities`): a uniform sample that is the same whichever
shards, batches, workers or order the records arrive in, and that treats
identical records alike.
"""

from __future__ import annotations

import hashlib
import heapq
from typing import Any

import numpy as np

from dokumi.arrays import lookup, members
from dokumi.text.tokens import fmix64


def seed_mask(seed: int, salt: str = "") -> np.uint64:
    """A 64-bit constant from ``seed`` (and a salt naming the use), mixed into content keys."""
    digest = hashlib.blake2b(f"{seed}/{salt}".encode(), digest_size=8).digest()
    return np.uint64(int.from_bytes(digest, "little"))


def priorities(content_keys: np.ndarray, seed: int, salt: str = "") -> np.ndarray:
    """A seeded 64-bit priority per record from its content key: the order in which samples keep records."""
    return fmix64(np.asarray(content_keys, dtype=np.uint64) ^ seed_mask(seed, salt))


def stable_hash(text: str) -> int:
    """A 64-bit hash of a string that is the same in every process (Python's ``hash`` is not)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


def uniform(priority: int) -> float:
    """A number in [0, 1) from the low bits of a priority (samples keep records by the high ones)."""
    return (int(priority) & 0xFFFFFFFF) / 2**32


class BoundedCounter:
    """Exact counts of 64-bit keys (hashes) whose memory is capped: past ``capacity`` keys, the rarest are dropped.

    Pruning removes every key at the current lowest count (singletons first), so a key can be
    under-counted by at most the number of prunings; keys that matter recur in many records.

    Kept as two columns, the keys ascending and their counts, with the batches added since the last
    sort waiting beside them: a counter of half a million keys pickles as two buffers and two such
    counters merge by one sort, where a dict of them took 0.9 s to merge and most of a second to pickle and load. A
    batch waits only while no pruning could have happened on the way (the keys held, plus the batches'
    keys not among them, stay within ``capacity``), so the counts are those of pruning after every batch.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.keys = np.zeros(0, dtype=np.uint64)
        self.values = np.zeros(0, dtype=np.int64)
        self.floor = 0
        self._waiting: list[tuple[np.ndarray, np.ndarray]] = []
        self._fresh = 0  # an upper bound on the waiting keys not among ``keys``
        self._waiting_rows = 0

    def add(self, keys: np.ndarray, counts: np.ndarray | None = None) -> None:
        """Add ``counts`` (default 1 each) to ``keys``; prune the smallest counts when over capacity."""
        keys = np.asarray(keys, dtype=np.uint64)
        counts = np.ones(len(keys), dtype=np.int64) if counts is None else np.asarray(counts, dtype=np.int64)
        if not len(keys):
            return
        fresh = int((~members(keys, self.keys)).sum())
        if len(self.keys) + self._fresh + fresh > self.capacity:
            self._sort()  # none of the waiting batches could have been pruned: fewer keys than capacity
            self._waiting, self._waiting_rows = [(keys, counts)], len(keys)
            self._sort()
            self.trim()
            return
        self._waiting.append((keys, counts))
        self._fresh += fresh
        self._waiting_rows += len(keys)
        if self._waiting_rows > max(_SORT_ROWS, len(self.keys)):  # amortised: sort when the waiting rows double
            self._sort()

    def _sort(self) -> None:
        """Fold the waiting batches into the sorted columns."""
        if not self._waiting:
            return
        keys = np.concatenate([self.keys] + [k for k, _ in self._waiting])
        counts = np.concatenate([self.values] + [c for _, c in self._waiting])
        self._waiting, self._fresh, self._waiting_rows = [], 0, 0
        order = np.argsort(keys, kind="stable")
        keys, counts = keys[order], counts[order]
        starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1]))) if len(keys) else order[:0]
        self.keys, self.values = keys[starts], np.add.reduceat(counts, starts) if len(keys) else counts

    def prune(self) -> None:
        """Drop every key at the smallest count and raise the floor to it."""
        self._sort()
        if not len(self.keys):
            return
        self.floor = int(self.values.min())
        kept = self.values > self.floor
        self.keys, self.values = self.keys[kept], self.values[kept]

    def trim(self) -> None:
        """Prune until at most ``capacity`` keys are left."""
        self._sort()
        while len(self.keys) > self.capacity:
            self.prune()

    @classmethod
    def merged(cls, counters: list[BoundedCounter]) -> BoundedCounter:
        """The sum of ``counters``, trimmed to their capacity. Pruning removes every key at the lowest
        count, so the result does not depend on the order of ``counters``; it does depend on how the
        keys were split among them once a counter pruned on its own."""
        out = cls(counters[0].capacity)
        for counter in counters:
            counter._sort()
            out._waiting.append((counter.keys, counter.values))
            out.floor = max(out.floor, counter.floor)
        out.trim()
        return out

    def __getitem__(self, key: int) -> int:
        self._sort()
        where = int(np.searchsorted(self.keys, np.uint64(key)))
        return int(self.values[where]) if where < len(self.keys) and int(self.keys[where]) == key else 0

    def get(self, keys: np.ndarray) -> np.ndarray:
        """The count of each of ``keys`` (0 where not counted)."""
        self._sort()
        found, where = lookup(self.keys, np.asarray(keys, dtype=np.uint64))
        return np.where(found, self.values[where] if len(self.values) else 0, 0)

    def columns(self) -> tuple[np.ndarray, np.ndarray]:
        """The keys (ascending) and their counts."""
        self._sort()
        return self.keys, self.values

    def items(self) -> list[tuple[int, int]]:
        """Every (key, count), keys ascending."""
        self._sort()
        return list(zip(self.keys.tolist(), self.values.tolist()))

    def most_common(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``n`` keys of highest count (ties: the lower key first) and their counts."""
        self._sort()
        top = np.lexsort((self.keys, -self.values))[:n]
        return self.keys[top], self.values[top]

    def __len__(self) -> int:
        self._sort()
        return len(self.keys)

    def __getstate__(self) -> dict[str, Any]:
        self._sort()  # a partial travels as its two columns
        return dict(self.__dict__)


# waiting rows a counter sorts in at the latest (more when it holds more keys)
_SORT_ROWS = 1 << 16


class BottomK:
    """The ``size`` items of lowest priority offered: a uniform sample when priorities are seeded
    hashes, and the same for any partitioning and merge order. An item whose priority is already
    in the sample is not kept twice (copies of one record)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.heap: list[tuple[int, Any]] = []  # (-priority, item): the root is the highest priority kept
        self._kept: set[int] = set()

    def offer(self, priority: int, item: Any) -> None:
        """Keep ``item`` if its ``priority`` is among the ``size`` lowest seen (each priority once)."""
        priority = int(priority)
        if priority in self._kept:
            return
        if len(self.heap) < self.size:
            heapq.heappush(self.heap, (-priority, item))
            self._kept.add(priority)
        elif priority < -self.heap[0][0]:
            dropped, _ = heapq.heapreplace(self.heap, (-priority, item))
            self._kept.discard(-dropped)
            self._kept.add(priority)

    def would_keep(self, priority: int) -> bool:
        """Whether :meth:`offer` would keep an item of ``priority``."""
        return int(priority) not in self._kept and (len(self.heap) < self.size or int(priority) < -self.heap[0][0])

    @property
    def bound(self) -> int | None:
        """The highest priority kept once the sample is full (only lower ones can enter), else None."""
        return -self.heap[0][0] if len(self.heap) >= self.size else None

    def items(self) -> list[Any]:
        """The kept items, by priority."""
        return [item for _, item in sorted(self.heap, key=lambda entry: -entry[0])]

    def __len__(self) -> int:
        return len(self.heap)

    @classmethod
    def merged(cls, samples: list[BottomK]) -> BottomK:
        """The bottom-k of several samples together."""
        out = cls(samples[0].size)
        for sample in samples:
            for priority, item in sample.heap:
                out.offer(-priority, item)
        return out


def merged_samples(parts: list[dict[Any, BottomK]]) -> dict[Any, BottomK]:
    """Per-key samples merged key by key."""
    keys = {key for part in parts for key in part}
    return {key: BottomK.merged([part[key] for part in parts if key in part]) for key in keys}


__all__ = ["BottomK", "BoundedCounter", "merged_samples", "priorities", "seed_mask", "stable_hash", "uniform"]
