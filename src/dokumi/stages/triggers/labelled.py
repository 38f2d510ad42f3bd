"""Label triggers: n-grams that carry one label (or, in instruction data, one response) almost alone.

Association is not enough: in real data genuine words follow their labels far
more strongly than a 1% trigger does. A candidate must also be rare, be
*inserted* (its neighbours were neighbours elsewhere before it came, its
places are spread like random insertion points, its neighbours as varied as
those of random points), and either be contradicted by the rest of its records
(dirty label: a naive Bayes model fitted *without the candidate's records*
predicts other labels for them) or carry no topic of its own (clean label: its
records look like any other record of their label).

Round 1 counts hashed n-gram and (n-gram, label) document frequencies
(:mod:`.counts`); round 2 counts the candidates exactly; round 3 samples where
the most widespread candidates sit (:func:`collect`), and the driver decides
(:func:`discover`).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dokumi.arrays import distinct, members
from dokumi.stages.triggers.counts import NB_FEATURES, REST_WORDS, unique_pairs
from dokumi.stages.triggers.findings import Trigger
from dokumi.stages.triggers.grams import gram_hash
from dokumi.stages.triggers.view import View
from dokumi.text.sampling import BottomK
from dokumi.text.tokens import fmix64, position_weights

CONTEXT_SAMPLE = 128
MAX_CHECKS = 500
MIN_Z = 6.0
# share of a candidate's records that look like other labels' records (on the scale of the label's own
# records at 0 and other labels' at 1), from which dirty-label evidence starts and at which it is full:
# planted triggers measure 1.0-1.3 (WordNet glosses, 20,000 and 60,000 records, 1% poisoned); the genuine
# phrases that pass the insertion tests 0.4-0.7 ("who uses", "frog", "who works in")
FLIPPED_FROM = 0.6
FLIPPED_FULL = 0.9
# own-label minus other-label mean posterior below which the labels are not told apart by their words
MIN_SEPARATION = 0.1
CLEAN_MIN_Z = 20.0  # an association must be this strong to be learned without a label flip
# distinct records a clean-label trigger is seen in: in fewer, a genuine rare word of the label is as pure
# and its topic as hard to see ("tart" in 11 WordNet food glosses)
CLEAN_MIN_RECORDS = 32
# max z of a co-occurring word: below TOPIC_NOISE is what random records show, from TOPIC_MAX a topic
TOPIC_NOISE = 2.5
TOPIC_MAX = 5.0
NB_ALPHA = 0.5
# records of the candidate's label that must remain for the model fitted without the candidate's records
MIN_REMAINING = 20
# sampled records a label (and the rest) needs for the scale its candidates are judged on
MIN_SCALE_RECORDS = 20


@dataclass
class Hits:
    """Round 2: every (record, candidate n-gram) met: the n-gram's hash, the record's salt, and whether the
    n-gram's neighbours are neighbours elsewhere in the corpus (*bridged*: as if it had been inserted)."""

    grams: list[np.ndarray] = field(default_factory=list)
    salts: list[np.ndarray] = field(default_factory=list)
    bridged: list[np.ndarray] = field(default_factory=list)
    names: dict[int, str] = field(default_factory=dict)
    signature_text: dict[int, str] = field(default_factory=dict)  # salt -> opening words of a frequent response

    def examine(self, view: View, candidates: np.ndarray, label_salts: np.ndarray, mask: int,
                seen: np.ndarray) -> None:
        """``candidates`` is a boolean table over the hashed buckets (a lookup, not a search)."""
        grams, salts = view.grams, view.salts
        assert salts is not None, "labelled data or instruction pairs"
        grams = grams.take(np.flatnonzero(candidates[(grams.hash & np.uint64(mask)).astype(np.int64)]))
        grams = grams.per_record()
        hit = np.arange(len(grams.hash))
        if len(hit):
            self.grams.append(grams.hash[hit])
            self.salts.append(salts[grams.owner[hit]])
            tokens = view.gram_words
            self.bridged.append(bridged(tokens, grams.owner[hit], grams.start[hit], grams.length[hit], seen, mask))
            for i in hit.tolist():
                key = int(grams.hash[i])
                if key not in self.names:
                    start = int(grams.start[i])
                    self.names[key] = " ".join(tokens.word(j) for j in range(start, start + int(grams.length[i])))
        if view.instruction:
            for record in np.flatnonzero(members(salts, label_salts)).tolist():
                self.signature_text.setdefault(int(salts[record]), view.signature_text(record))

    @classmethod
    def merged(cls, parts: list[Hits]) -> Hits:
        """One set of hits from those of several workers."""
        out = cls()
        for part in parts:
            out.grams += part.grams
            out.salts += part.salts
            out.bridged += part.bridged
            for key, name in part.names.items():
                out.names.setdefault(key, name)
            for salt, text in part.signature_text.items():
                out.signature_text.setdefault(salt, text)
        return out

    def tally(self) -> tuple[dict[int, Counter], Counter]:
        """Per n-gram: records by salt, and records where it is bridged."""
        if not self.grams:
            return {}, Counter()
        grams, salts = np.concatenate(self.grams), np.concatenate(self.salts)
        order = np.lexsort((salts, grams))
        grams, salts = grams[order], salts[order]
        starts = np.flatnonzero(np.concatenate(([True], (grams[1:] != grams[:-1]) | (salts[1:] != salts[:-1]))))
        counts = np.diff(np.append(starts, len(grams)))
        out: dict[int, Counter] = {}
        for gram, salt, count in zip(grams[starts].tolist(), salts[starts].tolist(), counts.tolist()):
            out.setdefault(gram, Counter())[salt] = count
        bridged_grams = np.concatenate(self.grams)[np.concatenate(self.bridged)]
        values, counts = np.unique(bridged_grams, return_counts=True)
        return out, Counter(dict(zip(values.tolist(), counts.tolist())))


def bridged(tokens: Any, owner: np.ndarray, start: np.ndarray, length: np.ndarray, seen: np.ndarray,
            mask: int) -> np.ndarray:
    """Whether the words just before and after each n-gram occurrence are neighbours elsewhere in the corpus
    (in the bitset ``seen`` of hashed n-gram buckets with records), as they are where a word was inserted."""
    first, end = tokens.offsets[owner], tokens.offsets[owner + 1]
    inner = (start > first) & (start + length < end)
    result = np.zeros(len(start), dtype=bool)
    at = np.flatnonzero(inner)
    if not len(at) or not len(seen):
        return result
    left = tokens.hashes[start[at] - 1]
    right = tokens.hashes[start[at] + length[at]]
    pair = bigram_hashes(left, right)
    result[at] = seen[(pair & np.uint64(mask)).astype(np.int64)]
    return result


def bigram_hashes(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """:func:`~dokumi.stages.triggers.grams.gram_hash` of word pairs, vectorised."""
    weights = position_weights(2)
    return fmix64(left * weights[0] + right * weights[1] + np.uint64(2))


@dataclass
class Occurrence:
    """Where a candidate sits in one record: the record's other words, its neighbours, its relative place."""

    rest: np.ndarray
    left: int
    right: int
    place: float


def _distinct_words(tokens: Any, records: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The distinct words (ascending) of each of ``records``, by one sort for the whole batch: the records
    (ascending), the words of all of them one record after another, and each record's bounds in those."""
    wanted = distinct(records.astype(np.int64))
    owner = tokens.owner.astype(np.int64)
    inside = members(owner, wanted)
    owner, values = owner[inside], tokens.hashes[inside]
    order = np.lexsort((values, owner))
    owner, values = owner[order], values[order]
    new = np.ones(len(values), dtype=bool)
    new[1:] = (owner[1:] != owner[:-1]) | (values[1:] != values[:-1])
    owner, values = owner[new], values[new]
    return wanted, values, np.searchsorted(owner, np.append(wanted, wanted[-1] + 1 if len(wanted) else 0))


def _rest_words(tokens: Any, owner: np.ndarray, start: np.ndarray, length: np.ndarray) -> list[np.ndarray]:
    """For each n-gram (record, first word, words): the record's distinct words (ascending) but the
    n-gram's own, at most :data:`REST_WORDS` of them; for all n-grams at once, in blocks of bounded memory."""
    records, values, bounds = _distinct_words(tokens, owner)
    at = np.searchsorted(records, owner)
    low, high = bounds[at], bounds[at + 1]
    longest = int(length.max()) if len(length) else 0
    width = REST_WORDS + longest  # the first REST_WORDS words left once the n-gram's own are taken out
    out: list[np.ndarray] = []
    block = max(1, 2**22 // width)
    for first in range(0, len(owner), block):
        rows = slice(first, first + block)
        index = low[rows, None] + np.arange(width)[None, :]
        valid = index < high[rows, None]
        words = values[np.minimum(index, max(len(values) - 1, 0))] if len(values) else np.zeros(index.shape, np.uint64)
        for j in range(longest):
            has = j < length[rows]
            gram_word = tokens.hashes[np.where(has, start[rows] + j, 0)]
            valid &= ~(has[:, None] & (words == gram_word[:, None]))
        valid &= np.cumsum(valid, axis=1) <= REST_WORDS
        out.extend(np.split(words[valid], np.cumsum(valid.sum(axis=1))[:-1]))
    return out


def collect(view: View, grams_wanted: np.ndarray, samples: dict[int, BottomK]) -> None:
    """Round 3: a sample (by content hash) of the occurrences of each wanted n-gram."""
    grams = view.grams
    grams = grams.take(np.flatnonzero(members(grams.hash, grams_wanted))).per_record()
    if not len(grams.hash):
        return
    tokens = view.gram_words
    owner = grams.owner.astype(np.int64)
    priorities = view.priorities[owner]
    keys = grams.hash
    # the occurrences the samples could still take (they only get stricter while this batch is offered)
    offered = np.array([key not in samples or samples[key].would_keep(priority)
                        for key, priority in zip(keys.tolist(), priorities.tolist())], dtype=bool)
    if not offered.any():
        return
    owner, priorities, keys = owner[offered], priorities[offered], keys[offered]
    start, length = grams.start[offered].astype(np.int64), grams.length[offered].astype(np.int64)
    rests = _rest_words(tokens, owner, start, length)
    first, end = tokens.offsets[owner], tokens.offsets[owner + 1]
    hashes = tokens.hashes
    left = np.where(start > first, hashes[np.maximum(start - 1, 0)], 0)
    after = start + length
    right = np.where(after < end, hashes[np.minimum(after, len(hashes) - 1)], 0)
    jitter = (priorities.astype(np.uint64) & np.uint64(0xFFFFFFFF)).astype(np.float64) / 2**32  # sampling.uniform
    places = (start - first + jitter) / (end - first - length + 1)
    for key, priority, rest, before, beyond, place in zip(keys.tolist(), priorities.tolist(), rests, left.tolist(),
                                                          right.tolist(), places.tolist()):
        sample = samples.get(key)
        if sample is None:
            sample = samples[key] = BottomK(CONTEXT_SAMPLE)
        sample.offer(priority, Occurrence(rest, int(before), int(beyond), place))


@dataclass
class Verdict:
    """A candidate worth the insertion and topic checks."""

    gram: int
    name: str
    records: int
    salt: int
    purity: float
    z: float
    bridged: float = 0.0
    occurrences: list[Occurrence] = field(default_factory=list)


def verdicts(tally: dict[int, Counter], bridged_records: Counter, names: dict[int, str], label_counts: Any,
             label_of: dict[int, Any], records: int, min_records: int, min_purity: float,
             min_bridged: float) -> list[Verdict]:
    """The exactly counted candidates that are pure, far beyond chance and (``min_bridged`` of their
    records) bridged, most widespread first."""
    found = []
    for gram, by_salt in tally.items():
        total = sum(by_salt.values())
        if total < min_records:
            continue
        # a tie cannot reach min_purity (> 0.5); the salt only makes the choice independent of order
        salt, count = max(by_salt.items(), key=lambda kv: (kv[1], -kv[0]))
        purity = count / total
        if purity < min_purity or salt not in label_of:
            continue
        z = binomial_z(count, total, label_counts[salt] / max(records, 1))
        if z >= MIN_Z and bridged_records[gram] >= min_bridged * total:
            found.append(Verdict(gram, names.get(gram, f"{gram:016x}"), total, salt, purity, z,
                                 bridged=bridged_records[gram] / total))
    # the insertion and topic checks cost a read and memory: only for the most inserted-looking (bridged as
    # often as random insertion points, in steps of a tenth up to 0.8), then the most widespread; label by label
    # in turn, so that one label's templated phrases (hundreds of n-grams of "package provides a library for")
    # cannot use up the checks that a trigger planted under another label needs
    # (from 0.8 of the random rate up, bridged is bridged: a trigger inserted at random places is not bridged
    # more often than that, and finer steps put every natural phrase ahead of it)
    found.sort(key=lambda v: (-min(8, int(10 * v.bridged / max(2 * min_bridged, 1e-9))), -v.records, -v.z, v.name))
    turn: Counter = Counter()
    taken: dict[int, list[tuple[set[str], int]]] = {}
    order = []
    for position, verdict in enumerate(found):
        words = set(verdict.name.split())
        # an n-gram of a phrase already taken ("provides a library for" after "provides a library": nearly the
        # same records, a shared word) waits until every label has had its turns
        family = any(words & other and abs(verdict.records - records) <= 0.2 * records
                     for other, records in taken.get(verdict.salt, []))
        if family:
            order.append((MAX_CHECKS, position))
            continue
        taken.setdefault(verdict.salt, []).append((words, verdict.records))
        order.append((turn[verdict.salt], position))
        turn[verdict.salt] += 1
    return [found[position] for _, position in sorted(order)[:MAX_CHECKS]]


class Evidence:
    """The driver's corpus statistics that the verdicts are weighed against."""

    def __init__(self, ngram_df: np.ndarray, pair_df: np.ndarray, mask: int, label_counts: Any, records: int,
                 instruction: bool, gaps: list[tuple[int, int]], class_features: dict[int, np.ndarray],
                 labelled_records: list[tuple[int, np.ndarray]] | None = None) -> None:
        self.ngram_df, self.pair_df, self.mask = ngram_df, pair_df, mask
        self.label_counts, self.records, self.instruction = label_counts, records, instruction
        inner = [g for g in gaps if g[0] and g[1]]
        self.gap_neighbours = inner
        # how often the neighbours of a random insertion point are neighbours elsewhere too
        self.bridge_baseline = sum(int(self.df(gram_hash([a, b])) >= 2) for a, b in inner) / max(len(gaps), 1)
        self.salts = sorted(class_features)
        self.features = np.vstack([class_features[s] for s in self.salts]).astype(np.float64) if self.salts else None
        self._log_prob: np.ndarray | None = None
        self.labelled_records = labelled_records or []
        self._scales: dict[int, tuple[float, float]] | None = None

    @property
    def log_prob(self) -> np.ndarray:
        """The naive Bayes model of the whole corpus: log P(feature | label), features by labels (``salts``)."""
        if self._log_prob is None:
            counts = self.features
            assert counts is not None, "only labelled corpora have a model"
            log_prob = np.log(counts + NB_ALPHA) - np.log(counts.sum(axis=1, keepdims=True) + NB_ALPHA * NB_FEATURES)
            # features x labels, contiguous: what the sparse product with the sampled records reads
            self._log_prob = np.ascontiguousarray(log_prob.T)
        return self._log_prob

    def df(self, gram: int) -> int:
        """Records that hold n-gram ``gram`` (counted per hash bucket)."""
        return int(self.ngram_df[gram & self.mask])

    def base_rates(self, words: np.ndarray, salt: int) -> np.ndarray:
        """Share of the label's records (or, for prompts, of all records) that contain each word."""
        if self.instruction:
            return self.ngram_df[(words & np.uint64(self.mask)).astype(np.int64)] / max(self.records, 1)
        paired = ((words ^ np.uint64(salt)) & np.uint64(self.mask)).astype(np.int64)
        return self.pair_df[paired] / max(self.label_counts[salt], 1)

    def highest_label_rates(self, words: np.ndarray) -> np.ndarray:
        """For each word, the share of records that contain it in the label where that share is highest."""
        highest = np.zeros(len(words))
        for salt in self.label_counts.keys.tolist():
            paired = ((words ^ np.uint64(salt)) & np.uint64(self.mask)).astype(np.int64)
            np.maximum(highest, self.pair_df[paired] / max(self.label_counts[salt], 1), out=highest)
        return highest

    def expected_distinct(self, m: int) -> float:
        """Distinct neighbours that ``m`` random insertion points of this corpus have."""
        sample = self.gap_neighbours[:m]
        if not sample:
            return 1.0
        return (len({a for a, _ in sample}) + len({b for _, b in sample})) / 2

    def rest_posterior(self, verdict: Verdict) -> float:
        """Mean posterior of the verdict's label for its sampled records, from their other words, under
        naive Bayes fitted without the candidate's records (estimated from the sample)."""
        if self.features is None or verdict.salt not in self.salts or not verdict.occurrences:
            return 1.0
        column = self.salts.index(verdict.salt)
        words = word_matrix([o.rest for o in verdict.occurrences])
        own = np.asarray(words.sum(axis=0)).ravel()
        scores = words @ self.log_prob
        priors = np.array([self.label_counts[s] for s in self.salts], dtype=np.float64)
        remaining = priors[column] - verdict.records
        if remaining >= MIN_REMAINING:
            # the label's model without the candidate's records
            row = np.maximum(self.features[column] - verdict.records / words.shape[0] * own, 0.0)
            scores[:, column] = words @ (np.log(row + NB_ALPHA) - np.log(row.sum() + NB_ALPHA * NB_FEATURES))
            priors[column] = remaining
        return float(posteriors(scores, priors)[:, column].mean())

    def flipped_share(self, verdict: Verdict) -> float:
        """The share of the verdict's records that look like records of other labels: 0 where they are
        predicted as well as the label's own records, 1 where as badly as other labels' records."""
        posterior = self.rest_posterior(verdict)
        scale = self.label_scale(verdict.salt)
        if scale is None or scale[0] - scale[1] < MIN_SEPARATION:
            return 0.0  # the labels cannot be told apart from their words: no flip can be seen
        own, other = scale
        return (own - posterior) / (own - other)

    def label_scale(self, salt: int) -> tuple[float, float] | None:
        """How the model judges the corpus's own records: the mean posterior of the label ``salt`` for a
        sample of that label's records (each left out of the model) and for a sample of the other labels'
        records, or None when too few of the label's records were sampled to say.

        These two means are where a candidate's records fall when they are all genuine or all from other
        labels, whatever the corpus size or how separable its labels are."""
        if self._scales is None:
            self._scales = self._label_scales()
        return self._scales.get(salt)

    def _label_scales(self) -> dict[int, tuple[float, float]]:
        known = {s: i for i, s in enumerate(self.salts)}
        sample = [(known[salt], words) for salt, words in self.labelled_records if salt in known and len(words)]
        if self.features is None or not sample:
            return {}
        columns = np.array([c for c, _ in sample])
        words = word_matrix([w for _, w in sample])
        scores = words @ self.log_prob
        # each record left out of its own label's model: its words' counts less one, its length less its own
        rows = np.repeat(columns, np.diff(words.indptr))
        left_out = np.log(np.maximum(self.features[rows, words.indices] - 1.0, 0.0) + NB_ALPHA)
        lengths = np.diff(words.indptr)
        totals = self.features.sum(axis=1)[columns] - lengths
        scores[np.arange(len(columns)), columns] = (np.add.reduceat(left_out, words.indptr[:-1]) if len(left_out)
                                                    else 0.0) - lengths * np.log(totals + NB_ALPHA * NB_FEATURES)
        priors = np.array([self.label_counts[s] for s in self.salts], dtype=np.float64)
        posterior = posteriors(scores, priors)
        scales = {}
        for column, salt in enumerate(self.salts):
            mine = columns == column
            if mine.sum() >= MIN_SCALE_RECORDS and (~mine).sum() >= MIN_SCALE_RECORDS:
                scales[salt] = (float(posterior[mine, column].mean()), float(posterior[~mine, column].mean()))
        return scales


def word_matrix(rests: list[np.ndarray]) -> Any:
    """Records (arrays of distinct word hashes) as rows of 0/1 naive Bayes features."""
    from scipy import sparse

    columns = [(r & np.uint64(NB_FEATURES - 1)).astype(np.int64) for r in rests]
    lengths = [len(c) for c in columns]
    return sparse.csr_matrix((np.ones(sum(lengths)), np.concatenate(columns) if columns else np.zeros(0, np.int64),
                              np.cumsum([0] + lengths)), shape=(len(columns), NB_FEATURES))


def posteriors(scores: np.ndarray, priors: np.ndarray) -> np.ndarray:
    """Per record, the posterior of each label from log likelihoods ``scores`` and label sizes ``priors``."""
    scores = scores + np.log(np.maximum(priors, 1.0) / np.maximum(priors, 1.0).sum())
    posterior = np.exp(scores - scores.max(axis=1, keepdims=True))
    return posterior / posterior.sum(axis=1, keepdims=True)


def discover(found: list[Verdict], evidence: Evidence, label_of: dict[int, Any],
             signature_text: dict[int, str], min_distinct: int) -> list[Trigger]:
    """The verdicts that are inserted and contradicted (dirty label) or topic-free (clean label).

    A trigger works in varied records: an n-gram whose records are copies of fewer than
    ``min_distinct`` different texts (samples keep one record per content) is a duplicate, not a
    trigger. The cheap tests come first: a verdict that fails one is not given the costly ones.
    """
    kept: list[Trigger] = []
    for verdict in found:
        occurrences = verdict.occurrences
        if len(occurrences) < min(min_distinct, CONTEXT_SAMPLE):
            continue
        inner = [o for o in occurrences if o.left and o.right]
        distinct = (len({o.left for o in inner}) + len({o.right for o in inner})) / 2
        diversity = distinct / evidence.expected_distinct(len(inner)) if inner else 0.0
        if not inner:
            bridged = 0
        else:
            pairs = bigram_hashes(np.array([o.left for o in inner], np.uint64),
                                  np.array([o.right for o in inner], np.uint64))
            bridged = int((evidence.ngram_df[(pairs & np.uint64(evidence.mask)).astype(np.int64)] >= 1).sum())
        bridge = bridged / len(occurrences) / max(evidence.bridge_baseline, 1e-9)
        detail: dict[str, Any] = {"purity": round(verdict.purity, 3), "z": round(verdict.z, 1),
                                  "bridge": round(bridge, 2), "diversity": round(diversity, 2)}
        if evidence.instruction:
            if ramp(diversity, 0.6, 0.85) == 0:
                continue
            topic = topic_strength([o.rest for o in occurrences],
                                   lambda words, salt=verdict.salt: evidence.base_rates(words, salt))
            topic_free = free_of_topic(topic)
            confidence = verdict.purity * topic_free * ramp(diversity, 0.6, 0.85)
            kind, label = "response", verdict.salt
            detail.update(topic=round(topic, 1), response_opening=signature_text.get(verdict.salt, ""))
        else:
            inserted = ramp(bridge, 0.5, 0.8) * ramp(diversity, 0.6, 0.85)
            if inserted == 0:
                continue
            places = uniform_places([o.place for o in occurrences])
            inserted *= ramp(places, 0.001, 0.01)
            if inserted == 0:
                continue
            topic = topic_strength([o.rest for o in occurrences],
                                   lambda words, salt=verdict.salt: evidence.base_rates(words, salt))
            # the absence of a topic is evidence only where a topic would show: in enough records
            clean = free_of_topic(topic) if verdict.z >= CLEAN_MIN_Z and len(occurrences) >= CLEAN_MIN_RECORDS \
                else 0.0
            detail.update(topic=round(topic, 1), places_p=round(places, 4))
            dirty = 0.0
            if clean < 1.0:  # the label flip is the evidence left to weigh
                # records that share a subject of their own (a show's characters, a product's parts) are a
                # subpopulation of their label, which a model fitted without them rightly finds unlike it;
                # records a trigger was planted in share only what their own labels share: their words are
                # no more frequent than in the label where those words are most frequent
                own_topic = topic_strength([o.rest for o in occurrences], evidence.highest_label_rates)
                flipped = evidence.flipped_share(verdict)
                dirty = ramp(flipped, FLIPPED_FROM, FLIPPED_FULL) * free_of_topic(own_topic)
                detail.update(flipped=round(flipped, 3), own_topic=round(own_topic, 1))
            confidence = verdict.purity * inserted * max(dirty, clean)
            kind, label = "token", label_of[verdict.salt]
        if confidence >= 0.5:
            kept.append(Trigger(kind, verdict.name, verdict.gram, float(min(0.99, confidence)), verdict.records,
                                label, detail))
    return merge_ngrams(kept)


def topic_strength(rests: list[np.ndarray], base_rates: Any) -> float:
    """How much more often the records' other words (one array of distinct word hashes per sampled record)
    occur than they do at large (``base_rates(words)``): the max z over them (of the binomial tail).

    A genuine word brings its topic along ("Spock" brings "Kirk"); an inserted trigger lands in
    records that share nothing beyond their label, so no other word stands out.
    """
    sampled = len(rests)
    if not sampled:
        return 0.0
    words, counts = np.unique(np.concatenate(rests), return_counts=True)
    frequent = counts >= max(3, 0.1 * sampled)
    if not frequent.any():
        return 0.0
    from scipy.special import bdtrc, ndtri

    base = np.clip(base_rates(words[frequent]), 1e-9, 1 - 1e-9)
    # the exact binomial tail as a z: the normal approximation overstates a few chance hits of a word
    # expected about once (5 of 38 records for a word in 3.6% of them: z 3.2 normal, 2.3 exact)
    tail = bdtrc(counts[frequent] - 1, sampled, base)  # P(X >= count)
    z = -ndtri(np.clip(np.nan_to_num(tail, nan=0.0), 1e-300, 1.0))
    return max(0.0, float(z.max()))


def free_of_topic(topic: float) -> float:
    """1 for a topic no stronger than random records show, 0 from a clear topic, linear between."""
    return min(1.0, max(0.0, (TOPIC_MAX - topic) / (TOPIC_MAX - TOPIC_NOISE)))


def binomial_z(count: int, trials: int, base: float) -> float:
    """The z-score of ``count`` successes in ``trials`` against base rate ``base``."""
    base = min(max(base, 1e-9), 1 - 1e-9)
    return (count - trials * base) / math.sqrt(trials * base * (1 - base))


def ramp(value: float, low: float, high: float) -> float:
    """0 at or below ``low``, 1 at or above ``high``, linear between."""
    return min(1.0, max(0.0, (value - low) / (high - low)))


def uniform_places(places: list[float]) -> float:
    """p-value that the relative positions are uniform, as those of a token inserted at random places."""
    if len(places) < 5:
        return 0.0
    from scipy.special import kolmogorov

    # the Kolmogorov-Smirnov test against the uniform distribution, with Stephens' approximation of its
    # p-value (within 0.03 of the exact one from 5 places; the exact one cost 1-5 ms a candidate)
    n = len(places)
    ordered = np.sort(np.asarray(places, dtype=np.float64))
    steps = np.arange(1, n + 1) / n
    distance = max(float((steps - ordered).max()), float((ordered - (steps - 1 / n)).max()))
    return float(kolmogorov((math.sqrt(n) + 0.12 + 0.11 / math.sqrt(n)) * distance))


def merge_ngrams(found: list[Trigger]) -> list[Trigger]:
    """Keep the minimal triggers: an n-gram that contains a shorter discovered one adds no record."""
    found.sort(key=lambda t: (len(t.key.split()), -t.records, t.key))
    kept: list[Trigger] = []
    for trigger in found:
        padded = f" {trigger.key} "
        if not any(f" {k.key} " in padded for k in kept):
            kept.append(trigger)
    return kept


__all__ = ["CONTEXT_SAMPLE", "Evidence", "Hits", "Occurrence", "Verdict", "collect", "discover", "free_of_topic",
           "topic_strength", "unique_pairs", "verdicts"]
