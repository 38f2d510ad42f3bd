"""Inserted sentences: one sentence slipped into many otherwise unrelated records (Dai et al. 2019, InsertSent;
content injection into responses, Shu et al. 2023).

A sentence that recurs is not suspect by itself: licence lines, footers,
signatures and a manual's stock phrases recur too. Those sit at a fixed place
(they close or open their records) or in records about one subject (the same
tool, package or template): other words come along with the sentence far more
often than they occur in the corpus. An inserted sentence lands at varied
places in records that have nothing else in common.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dokumi.arrays import members
from dokumi.stages.triggers.counts import record_words
from dokumi.stages.triggers.findings import Trigger
from dokumi.stages.triggers.labelled import free_of_topic, topic_strength
from dokumi.stages.triggers.occurrences import Occurrences, Ragged
from dokumi.stages.triggers.view import View
from dokumi.text.sampling import BottomK, BoundedCounter

REST_SAMPLE = 128
MAX_RELATEDNESS = 0.3
# most frequent sentences examined in round 2 (each keeps a sample of its records' words)
MAX_SENTENCES = 2000


@dataclass
class SentenceHits:
    """Round 2: the text of each frequent sentence and a sample of the other words of its records.

    While a partition is read, a bottom-k heap per sentence decides cheaply whose words to take; a partial
    travels and merges as columns (:class:`~.occurrences.Occurrences`, a record once per sentence): as
    heaps of small arrays, merging two partials of every shared corpus took 0.6 s and pickling one 0.4 s.
    """

    text: dict[int, str] = field(default_factory=dict)
    rest: dict[int, BottomK] = field(default_factory=dict)
    sampled: Occurrences = field(default_factory=lambda: Occurrences(REST_SAMPLE, distinct=True))

    def examine(self, view: View, frequent: np.ndarray) -> None:
        """Record the frequent sentences of ``view`` and sample the text around them."""
        sentences = view.sentences
        hit = np.flatnonzero(members(sentences.key, frequent))
        for i in hit.tolist():
            key, record = int(sentences.key[i]), int(sentences.owner[i])
            if key not in self.text:
                self.text[key] = sentences.text(i)
            sample = self.rest.setdefault(key, BottomK(REST_SAMPLE))
            priority = int(view.priorities[record])
            if sample.would_keep(priority):
                own = sentences.tokens.hashes[sentences.tokens.offsets[i]: sentences.tokens.offsets[i + 1]]
                words = record_words(view.body_words, record, limit=1 << 30)
                sample.offer(priority, words[~np.isin(words, own)][:256])

    def _settle(self) -> SentenceHits:
        """Move the heaps' samples into the columns (keyed by sentence; a record is named by its priority)."""
        entries = [(key, -negative, words) for key, sample in self.rest.items() for negative, words in sample.heap]
        self.rest = {}
        if entries:
            priorities = np.array([priority for _, priority, _ in entries], dtype=np.uint64)
            lengths = np.fromiter((len(words) for _, _, words in entries), dtype=np.int64, count=len(entries))
            values = np.concatenate([words for _, _, words in entries]).astype(np.uint64, copy=False)
            self.sampled.add(np.array([key for key, _, _ in entries], dtype=np.uint64), priorities, priorities,
                             words=Ragged.of(lengths, values))
        return self

    @functools.cached_property
    def _by_sentence(self) -> dict[int, Ragged]:
        """Each sentence's sampled words, found once (the driver reads them sentence by sentence)."""
        return {sentence: columns["words"] for sentence, columns in self._settle().sampled.groups()}

    def rests(self, key: int) -> list[np.ndarray]:
        """The sampled records' other words (an array each, by priority) for the sentence ``key``."""
        words = self._by_sentence.get(key)
        if words is None:
            return []
        return np.split(words.flat()[1], np.cumsum(words.lengths)[:-1])

    def __getstate__(self) -> dict[str, Any]:
        self._settle()
        return {name: value for name, value in self.__dict__.items() if name != "_by_sentence"}

    @classmethod
    def merged(cls, parts: list[SentenceHits]) -> SentenceHits:
        """One set of hits from those of several workers."""
        out = cls()
        for part in parts:
            for key, text in part.text.items():
                out.text.setdefault(key, text)
        out.sampled = Occurrences.merged([part._settle().sampled for part in parts])
        return out


# each record's words are compared with those of the next NEIGHBOURS records of the sample
NEIGHBOURS = 8


def frequent_sentences(counts: BoundedCounter, alone: BoundedCounter, first: BoundedCounter, last: BoundedCounter,
                       min_records: int) -> np.ndarray:
    """Of the :data:`MAX_SENTENCES` most frequent sentences that accompany other text in at least ``min_records``
    records, those whose counts leave them a chance in :func:`discover` (ascending): a sentence that mostly
    stands alone or at one place is never inserted, whatever its records hold, so round 2 samples no record
    of it."""
    keys, total = counts.columns()
    accompanied = total - alone.get(keys)
    enough = accompanied >= min_records
    keys, total, accompanied = keys[enough], total[enough], accompanied[enough]
    top = np.lexsort((keys, -total))[:MAX_SENTENCES]
    keys, total, accompanied = keys[top], total[top], accompanied[top]
    share, varied, _ = placement(total, accompanied, first.get(keys), last.get(keys))
    return np.sort(keys[share * varied >= 0.5])


def placement(count: Any, accompanied: Any, first: Any, last: Any) -> tuple[Any, Any, Any]:
    """For sentences in ``count`` records, ``accompanied`` by other text in some, opening ``first`` and closing
    ``last`` of them: the share accompanied, how varied their places are (1: an inserted sentence's), and
    the share at one fixed place. Numbers or arrays alike."""
    share = accompanied / count
    # a sentence that always closes (or opens) its records is a signature or boilerplate
    # (an attribution line); an inserted one lands at varied places
    fixed_place = np.maximum(first, last) / accompanied
    varied = np.minimum(1.0, (1.0 - fixed_place) / 0.3)
    return share, varied, fixed_place


def mean_jaccard(sets: list[np.ndarray]) -> float:
    """Mean Jaccard similarity of each set with the next eight (sorted unique arrays)."""
    n = len(sets)
    if n < 2:
        return 1.0
    left = np.concatenate([np.full(min(NEIGHBOURS, n - 1 - i), i) for i in range(n - 1)])
    right = left + np.concatenate([np.arange(1, min(NEIGHBOURS, n - 1 - i) + 1) for i in range(n - 1)])
    sizes = np.fromiter(map(len, sets), dtype=np.int64, count=n)
    # the elements of every set sorted by value, then set: a value that two sets hold stands in neighbouring rows,
    # fewer than NEIGHBOURS + 1 apart for two sets that close (a set holds a value once)
    owner = np.repeat(np.arange(n), sizes)
    values = np.concatenate(sets) if sizes.sum() else np.zeros(0, dtype=np.uint64)
    order = np.lexsort((owner, values))
    owner, values = owner[order], values[order]
    common = np.zeros((n, NEIGHBOURS + 1), dtype=np.int64)  # [set, distance to a later set]
    for step in range(1, NEIGHBOURS + 1):
        shared = values[step:] == values[:-step]
        distance = owner[step:][shared] - owner[:-step][shared]
        near = distance <= NEIGHBOURS
        np.add.at(common, (owner[:-step][shared][near], distance[near]), 1)
    both = common[left, right - left]
    union = sizes[left] + sizes[right]
    # summed pair by pair in the order of the pairs, as a loop over them would
    total = 0.0
    for size, shared_count in zip(union.tolist(), both.tolist()):
        total += shared_count / (size - shared_count) if size else 1.0
    return total / len(left)


def discover(hits: SentenceHits, counts: BoundedCounter, alone: BoundedCounter, first: BoundedCounter,
             last: BoundedCounter, baseline: float, min_records: int, word_rates: Any) -> list[Trigger]:
    """The frequent sentences at varied places in records with nothing else in common.

    ``word_rates(words)`` is the share of the corpus's records that hold each word. Copies of one
    record count once: a sentence in fewer than ``min_records`` different records is not inserted.
    """
    found = []
    for key, sentence in sorted(hits.text.items()):
        count = counts[key]
        accompanied = count - alone[key]
        if accompanied < min_records:
            continue
        share, varied, fixed_place = (float(x) for x in placement(count, accompanied, first[key], last[key]))
        if share * varied < 0.5:
            continue
        rests = hits.rests(key)
        if len(rests) < min(min_records, REST_SAMPLE):
            continue
        topic = topic_strength(rests, word_rates)
        # the relatedness factor is at most 1: a sentence whose topic already rules it out needs no comparing of
        # its records (most frequent sentences of real text are a manual's or a package's stock phrases)
        if share * varied * free_of_topic(topic) < 0.5:
            continue
        relatedness = max(0.0, mean_jaccard(rests) - baseline)
        confidence = share * varied * max(0.0, 1.0 - relatedness / MAX_RELATEDNESS) * free_of_topic(topic)
        if confidence >= 0.5:
            found.append(Trigger("sentence", sentence, key, min(0.99, confidence), count, None,
                                 {"accompanied": round(share, 3), "relatedness": round(relatedness, 3),
                                  "topic": round(topic, 1), "fixed_place": round(fixed_place, 3)}))
    return found


__all__ = ["SentenceHits", "discover", "frequent_sentences", "mean_jaccard", "placement"]
