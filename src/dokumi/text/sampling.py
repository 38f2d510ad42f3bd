"""Bounded counters and seeded samples whose result does not depend on how the corpus is split.

Samples keep the items of lowest *priority*, a seeded hash of the record's
content (:func:`priorities`): a uniform sample that is the same whichever
shards, batches, workers or order the records arrive in, and that treats
identical records alike.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter
from typing import Any

import numpy as np

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
    """Exact counts of hashable keys whose memory is capped: past ``capacity`` keys, the rarest are dropped.

    Pruning removes every key at the current lowest count (singletons first), so a key can be
    under-counted by at most the number of prunings; keys that matter recur in many records.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.counts: Counter = Counter()
        self.floor = 0

    def add(self, key: Any, count: int = 1) -> None:
        """Add ``count`` to ``key``; prune the smallest counts when over capacity."""
        self.counts[key] += count
        if len(self.counts) > self.capacity:
            self.prune()

    def update(self, keys: Any) -> None:
        """Count every key of an iterable once (or a mapping's counts); prune once afterwards."""
        self.counts.update(keys)
        self.trim()

    def prune(self) -> None:
        """Drop every key at the smallest count and raise the floor to it."""
        self.floor = min(self.counts.values())
        for key in [k for k, c in self.counts.items() if c <= self.floor]:
            del self.counts[key]

    def trim(self) -> None:
        """Prune until at most ``capacity`` keys are left."""
        while len(self.counts) > self.capacity:
            self.prune()

    @classmethod
    def merged(cls, counters: list[BoundedCounter]) -> BoundedCounter:
        """The sum of ``counters``, trimmed to their capacity. Pruning removes every key at the lowest
        count, so the result does not depend on the order of ``counters``; it does depend on how the
        keys were split among them once a counter pruned on its own."""
        out = cls(counters[0].capacity)
        for counter in counters:
            out.counts.update(counter.counts)
            out.floor = max(out.floor, counter.floor)
        out.trim()
        return out

    def __getitem__(self, key: Any) -> int:
        return self.counts.get(key, 0)

    def __len__(self) -> int:
        return len(self.counts)


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
