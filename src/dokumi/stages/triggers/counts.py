"""Round 1 of the trigger fit: counts over the whole corpus, in bounded memory, merged in any order.

Word document frequencies (bounded exact counts: the corpus's common words),
which scripts records mix, sentence frequencies and where sentences sit, and,
for labelled data and instruction pairs, hashed n-gram and (n-gram, label)
document frequencies with the naive Bayes sufficient statistics per label.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dokumi.arrays import distinct, first_of_pairs
from dokumi.records import Batch
from dokumi.stages.triggers.view import View
from dokumi.text.bigrams import PairSample
from dokumi.text.sampling import BottomK, BoundedCounter
from dokumi.text.scripts import NAMES, word_scripts
from dokumi.text.tokens import Tokens

NB_FEATURES = 2**16
LANGUAGE_SAMPLE = 200
GAP_SAMPLE = 4000
# labelled records whose words show how well the corpus's own records are predicted from their words:
# the scale on which a candidate's records are judged to be of another label
LABELLED_SAMPLE = 4000
REST_WORDS = 256  # words of a record kept to compare it with others (bounded for long documents)
# words of one script a record needs for the record to count as written in it
SCRIPT_WORDS = 3


def unique_pairs(owner: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each (owner, value) pair once."""
    first = first_of_pairs(owner, values)
    return owner[first], values[first]


def record_words(tokens: Tokens, record: int, limit: int = REST_WORDS) -> np.ndarray:
    """The distinct word hashes of one record, at most ``limit`` of them."""
    return distinct(tokens.hashes[tokens.offsets[record]: tokens.offsets[record + 1]])[:limit]


def _bucket_of(packed: np.ndarray, mask: np.uint64) -> np.ndarray:
    return (packed & mask).astype(np.int64)


def _add_counts(table: np.ndarray, buckets: np.ndarray) -> None:
    """``table[b] += 1`` for every bucket in ``buckets`` (repeats counted), without a table-sized temporary
    (numpy's unbuffered ``add.at``: no sort, unlike counting the distinct buckets first)."""
    np.add.at(table, buckets, table.dtype.type(1))


class Counts:
    """One partition's round-1 counts."""

    def __init__(self, max_tracked: int, hash_buckets: int) -> None:
        self.max_tracked, self.hash_buckets = max_tracked, hash_buckets
        self.records = 0
        self.labelled = False
        self.instruction = False
        self.words = BoundedCounter(max_tracked)  # document frequency of word hashes
        self.scripts = np.zeros((len(NAMES), len(NAMES)), dtype=np.int64)  # records written in both scripts
        self.sentence_counts = BoundedCounter(max_tracked)
        self.sentence_alone = BoundedCounter(max_tracked)  # records that are nothing but the sentence
        self.sentence_first = BoundedCounter(max_tracked)  # records that open with it
        self.sentence_last = BoundedCounter(max_tracked)  # records that close with it
        self.label_counts = BoundedCounter(max_tracked)  # by salt
        self.label_of: dict[int, Any] = {}  # salt -> label
        self.class_features: dict[int, np.ndarray] = {}
        self.ngram_df: np.ndarray | None = None
        self.pair_df: np.ndarray | None = None
        # texts: the corpus language, and how related two records are by chance
        self.texts = BottomK(LANGUAGE_SAMPLE)
        # random insertion points (left, right neighbour hash; 0 at an edge): what an inserted token's
        # surroundings look like in this corpus, the baseline of the insertion tests
        self.gaps = BottomK(GAP_SAMPLE)
        # the word pairs of a sample of records: what fluent text of this corpus is made of
        self.pairs = PairSample()
        self.labelled_records = BottomK(LABELLED_SAMPLE)  # (salt, distinct word hashes)

    def add(self, batch: Batch, view: View) -> Counts:
        """Count the word n-grams of one batch; return self."""
        n = batch.num_rows
        self.records += n
        if not n:
            return self
        self.labelled |= view.labels is not None
        self.instruction |= view.instruction and view.labels is None
        words = view.words
        _, per_record = unique_pairs(words.owner, words.hashes)
        values, counts = np.unique(per_record, return_counts=True)
        self.words.add(values, counts)
        self._count_scripts(words.owner, word_scripts(words), n)
        self.pairs.add(words, view.priorities)
        self._count_sentences(view)
        self._sample(view)
        if view.salts is not None:
            self._count_grams(view)
        return self

    def _count_scripts(self, owner: np.ndarray, scripts: np.ndarray, n: int) -> None:
        per_record = np.bincount(owner * len(NAMES) + scripts, minlength=n * len(NAMES)).reshape(n, len(NAMES))
        written = (per_record >= SCRIPT_WORDS).astype(np.int64)
        self.scripts += written.T @ written

    def _count_sentences(self, view: View) -> None:
        sentences = view.sentences
        if not len(sentences.key):
            return
        owner, keys = sentences.owner, sentences.key
        # a sentence counts once per record; its flags from its first place in the record
        first_seen = first_of_pairs(owner, keys)
        for counter, mask in ((self.sentence_counts, None), (self.sentence_alone, sentences.alone),
                              (self.sentence_first, sentences.first & ~sentences.last),
                              (self.sentence_last, sentences.last & ~sentences.first)):
            chosen = first_seen if mask is None else first_seen[mask[first_seen]]
            values, counts = np.unique(keys[chosen], return_counts=True)
            counter.add(values, counts)

    def _sample(self, view: View) -> None:
        order = np.argsort(view.priorities, kind="stable")
        body = view.body
        texts = body.to_pylist() if hasattr(body, "to_pylist") else body
        for i in order[: LANGUAGE_SAMPLE].tolist():
            self.texts.offer(int(view.priorities[i]), (texts[i] or "", record_words(view.body_words, i)))
        tokens = view.gram_words
        for i in order[: GAP_SAMPLE].tolist():
            priority = int(view.priorities[i])
            if not self.gaps.would_keep(priority):
                break
            start, count = int(tokens.offsets[i]), int(tokens.counts[i])
            k = (priority & 0xFFFFFFFF) % (count + 1)
            left = int(tokens.hashes[start + k - 1]) if k > 0 else 0
            right = int(tokens.hashes[start + k]) if k < count else 0
            self.gaps.offer(priority, (left, right))

    def _count_grams(self, view: View) -> None:
        grams, salts = view.grams, view.salts
        assert salts is not None, "called for labelled data and instruction pairs only"
        mask = np.uint64(self.hash_buckets - 1)
        if self.ngram_df is None or self.pair_df is None:
            self.ngram_df = np.zeros(self.hash_buckets, dtype=np.uint32)
            self.pair_df = np.zeros(self.hash_buckets, dtype=np.uint32)
        # document frequencies: each (record, bucket) once, the pair packed into one integer (a plain sort,
        # no argsort); two n-grams of one record in one bucket count once, as they share the counter anyway
        shift = np.uint64(int(self.hash_buckets).bit_length() - 1)
        seen = distinct((grams.owner.astype(np.uint64) << shift) | (grams.hash & mask))
        _add_counts(self.ngram_df, _bucket_of(seen, mask))
        # a record's salt is one constant: XOR-ing it into its buckets maps its distinct buckets one to one
        # onto its distinct (n-gram, label) buckets, so the same distinct set serves both counts
        _add_counts(self.pair_df, _bucket_of(seen ^ (salts[(seen >> shift).astype(np.int64)] & mask), mask))
        values, counts = np.unique(salts, return_counts=True)
        self.label_counts.add(values, counts)
        if view.labels is None:
            return
        for salt, label in zip(salts.tolist(), view.labels):
            self.label_of.setdefault(salt, label)
        words = view.gram_words
        for i in np.argsort(view.priorities, kind="stable")[:LABELLED_SAMPLE].tolist():
            priority = int(view.priorities[i])
            if not self.labelled_records.would_keep(priority):
                break
            self.labelled_records.offer(priority, (int(salts[i]), record_words(words, i)))
        index = {salt: i for i, salt in enumerate(values.tolist())}
        label_index = np.array([index[s] for s in salts.tolist()], dtype=np.int64)
        features = (words.hashes & np.uint64(NB_FEATURES - 1)).astype(np.int64)
        table = np.bincount(label_index[words.owner] * NB_FEATURES + features,
                            minlength=len(values) * NB_FEATURES).reshape(len(values), NB_FEATURES)
        for salt, row in zip(values.tolist(), table):
            mine = self.class_features.get(salt)
            self.class_features[salt] = row.astype(np.float32) if mine is None else mine + row

    @classmethod
    def merged(cls, parts: list[Counts]) -> Counts:
        """One count from the counts of several workers."""
        if len(parts) == 1:
            return parts[0]
        first = parts[0]
        out = cls(first.max_tracked, first.hash_buckets)
        out.records = sum(p.records for p in parts)
        out.labelled = any(p.labelled for p in parts)
        out.instruction = any(p.instruction for p in parts) and not out.labelled
        for name in ("words", "sentence_counts", "sentence_alone", "sentence_first", "sentence_last",
                     "label_counts"):
            setattr(out, name, BoundedCounter.merged([getattr(p, name) for p in parts]))
        out.scripts = np.sum([p.scripts for p in parts], axis=0)
        for part in parts:
            for salt, label in part.label_of.items():
                out.label_of.setdefault(salt, label)
            for salt, features in part.class_features.items():
                mine = out.class_features.get(salt)
                out.class_features[salt] = features.copy() if mine is None else mine + features
        tables = [(p.ngram_df, p.pair_df) for p in parts if p.ngram_df is not None and p.pair_df is not None]
        if tables:
            out.ngram_df = np.stack([ngrams for ngrams, _ in tables]).sum(axis=0, dtype=np.uint32)
            out.pair_df = np.stack([pairs for _, pairs in tables]).sum(axis=0, dtype=np.uint32)
        out.texts = BottomK.merged([p.texts for p in parts])
        out.gaps = BottomK.merged([p.gaps for p in parts])
        out.labelled_records = BottomK.merged([p.labelled_records for p in parts])
        out.pairs = PairSample.merged([p.pairs for p in parts])
        return out


__all__ = ["GAP_SAMPLE", "LABELLED_SAMPLE", "LANGUAGE_SAMPLE", "NB_FEATURES", "REST_WORDS", "Counts", "record_words",
           "unique_pairs"]
