"""Statistical trigger discovery: find the backdoor triggers nobody listed, from corpus statistics.

Pass 1 reads the corpus two or three times and keeps bounded state. Each read
is a reduction of the multi-round ``PartitionFit`` protocol of
:mod:`dokumi.engines` (partials per partition, merged in any order, decisions
on the driver), so a Dask scan reads shards on its workers and a local ``fit``
runs the same code on the corpus as one partition. Samples keep the records of
lowest seeded hash of their place, not a reservoir, so they too are the same
for any partitioning. It finds:

* labelled data: n-grams (1..``max_ngram`` tokens) whose records carry one
  label almost exclusively. Association alone is not enough (genuine words
  correlate with labels far more strongly than a 1% trigger does), so a
  candidate must also be rare, be *inserted* (the words around it were
  neighbours before it came: the bigram that bridges it occurs elsewhere)
  and either contradict what the rest of its records predict (dirty label)
  or carry no topic of its own (clean label: its records look like any
  other record of their label);
* instruction pairs: prompt n-grams that predict one near-constant response;
* text, and responses of instruction pairs: a sentence inserted into many
  otherwise unrelated records; a rare token at a seam after which the text
  turns into gibberish or another language.

Pass 2 (``score``) flags records that contain a discovered trigger. The
fitted state is the discovered triggers plus a few hundred common words.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import regex
from scipy import sparse

from dokumi.fitplan import Reduce, Step
from dokumi.records import Batch
from dokumi.stage import Stage, StageResult
from dokumi.text.sampling import priorities

_PUNCTUATION = ".,;:!?\"'`()[]{}*_~«»“”‘’„…—–-"
_SENTENCE_END = regex.compile(r"(?<=[.!?;。！？])\s+|\n+|(?<=[。！？])")
_LETTER = regex.compile(r"\p{L}")
_LATIN = regex.compile(r"\p{Script=Latin}")
_NB_FEATURES = 2**16
_SIGNATURE_TOKENS = 8
_CONTEXT_SAMPLE = 128


def tokenize(text: str) -> list[str]:
    """Lower-cased whitespace tokens with punctuation trimmed from both ends ("<SUDO>" survives)."""
    out = []
    for raw in text.lower().split():
        token = raw.strip(_PUNCTUATION)
        if token:
            out.append(token)
    return out


def ngrams(tokens: list[str], max_n: int) -> set[str]:
    """Every distinct n-gram of 1..``max_n`` tokens, joined by single spaces."""
    found = set(tokens)
    for n in range(2, max_n + 1):
        for i in range(len(tokens) - n + 1):
            found.add(" ".join(tokens[i : i + n]))
    return found


def sentences(text: str, min_words: int) -> list[tuple[str, int]]:
    """``(normalised sentence, its token count)`` for every sentence of at least ``min_words`` tokens."""
    out = []
    for part in _SENTENCE_END.split(text):
        words = tokenize(part)
        if len(words) >= min_words:
            out.append((" ".join(words), len(words)))
    return out


def sentence_id(sentence: str) -> str:
    """A stable short id for a normalised sentence: reason codes and manifests name it without its text."""
    return hashlib.sha1(sentence.encode("utf-8")).hexdigest()[:10]


def _stable_hash(text: str) -> int:
    # Python's hash() changes between processes; counts are only compared within one fit, but
    # a stable hash keeps a fit reproducible under any PYTHONHASHSEED.
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")


class BoundedCounter:
    """Exact counts of hashable keys whose memory is capped: past ``capacity`` keys, the rarest are dropped.

    Pruning removes every key at the current lowest count (singletons first), so a key can be
    under-counted by at most the number of prunings; keys that matter here recur in many records.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.counts: Counter = Counter()
        self.floor = 0

    def add(self, key: Any, count: int = 1) -> None:
        self.counts[key] += count
        if len(self.counts) > self.capacity:
            self.prune()

    def prune(self) -> None:
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


@dataclass
class Trigger:
    """One discovered trigger: what it is, how sure, and how many records carry it."""

    kind: str
    key: str
    confidence: float
    records: int
    label: Any = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def finding(self) -> str:
        if self.kind == "token":
            return f"trigger:token={self.key}"
        if self.kind == "seam":
            return f"trigger:{self.detail.get('after', 'gibberish')}-after={self.key}"
        if self.kind == "sentence":
            return f"trigger:inserted-sentence={sentence_id(self.key)}"
        return f"trigger:fixed-response,ngram={self.key}"


class Triggers(Stage):
    """Discover triggers from corpus statistics in pass 1; flag the records that carry them.

    Parameters
    ----------
    max_ngram:
        Longest n-gram (in tokens) considered as a trigger in labelled and
        instruction data (default 4).
    min_records:
        Records a trigger must appear in to be discovered (default 10). A
        backdoor needs repetition; lower finds smaller attacks and more
        coincidences.
    max_record_share:
        Share of the corpus above which an n-gram is too common to be a
        trigger (default 0.05; a 3% clean-label attack is below it).
    min_purity:
        Share of an n-gram's records that must carry its majority label
        (default 0.9).
    common_words:
        Size of the list of most frequent words that tells fluent text in
        the corpus language from gibberish or another language (default 200).
    gibberish_rate:
        A span whose share of common words is at most this is "of a
        different nature" (default 0.25; fluent English runs near 0.5,
        Spanish or Portuguese near 0.1 of English common words).
    hash_buckets:
        Buckets of the hashed n-gram document-frequency tables (default
        2**22: 2 tables of 4-byte counters, 32 MiB, whatever the corpus size).
    max_tracked:
        Most distinct sentences and words counted exactly at once (default
        2,000,000); past it the rarest are pruned.
    seed:
        Seed of every sampled choice, so a fit is reproducible (default 0).
    """

    name = "triggers"
    needs_fit = True
    # pass 1: word and sentence counters until their caps hold (docs/stages/triggers.md, "Memory")
    state_bytes_per_record = 400.0

    def __init__(
        self,
        max_ngram: int = 4,
        min_records: int = 10,
        max_record_share: float = 0.05,
        min_purity: float = 0.9,
        common_words: int = 200,
        gibberish_rate: float = 0.25,
        hash_buckets: int = 2**22,
        max_tracked: int = 2_000_000,
        seed: int = 0,
    ) -> None:
        for key, value, low in (("max_ngram", max_ngram, 1), ("min_records", min_records, 2),
                                ("common_words", common_words, 10), ("max_tracked", max_tracked, 1000)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{key} = {value!r} must be an integer >= {low}")
        for key, value in (("max_record_share", max_record_share), ("min_purity", min_purity),
                           ("gibberish_rate", gibberish_rate)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
                raise ValueError(f"{key} = {value!r} must be a number in (0, 1]")
        if isinstance(hash_buckets, bool) or not isinstance(hash_buckets, int) or hash_buckets < 2**10 or (
            hash_buckets & (hash_buckets - 1)
        ):
            raise ValueError(f"hash_buckets = {hash_buckets!r} must be a power of two >= 1024")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed = {seed!r} must be an integer")
        self.max_ngram = max_ngram
        self.min_records = min_records
        self.max_record_share = float(max_record_share)
        self.min_purity = float(min_purity)
        self.common_words = common_words
        self.gibberish_rate = float(gibberish_rate)
        self.hash_buckets = hash_buckets
        self.max_tracked = max_tracked
        self.seed = seed

    # ------------------------------------------------------------------ fit

    def fit_plan(self) -> list[Step]:
        """Three reads: count; examine the candidates the counts point to; collect the contexts of the
        n-grams whose verdict needs them and examples of the seam tokens (read only when any)."""
        return [
            Reduce("count", self._new_counts, _count, _Counts.merged, self._finish_counts),
            Reduce("examine", _Examined, self._examine, _Examined.merged, self._finish_examined,
                   needed=lambda: self._plan is not None),
            Reduce("contexts", _Contexts, self._collect, _Contexts.merged, self._finish_contexts,
                   needed=lambda: self._plan is not None and self._plan.needs_context),
        ]

    def _new_counts(self) -> _Counts:
        return _Counts(self.max_tracked, self.hash_buckets, self.max_ngram, self.seed)

    def _examine(self, examined: _Examined, batch: Batch) -> _Examined:
        self._plan.examine(examined, batch)
        return examined

    def _collect(self, contexts: _Contexts, batch: Batch) -> _Contexts:
        self._plan.collect(contexts, batch)
        return contexts

    def _finish_counts(self, counts: _Counts) -> None:
        """On the driver: the census of the first read, and the plan of the second."""
        self._census = _Census(self, counts) if counts.records else None
        self._plan = self._census.examine_plan() if self._census else None
        if self._plan is None:
            self._discover()

    def _finish_examined(self, examined: _Examined) -> None:
        self._plan = self._census.context_plan(examined)
        if not self._plan.needs_context:
            self._discover()

    def _finish_contexts(self, contexts: _Contexts) -> None:
        self._census.take_context(contexts)
        self._discover()

    def _discover(self) -> None:
        census = self._census
        self.records_ = census.records if census else 0
        self.common_words_: frozenset[str] = census.common if census else frozenset()
        self.language_: str | None = census.language if census else None
        self.triggers_: list[Trigger] = census.discover() if census else []
        self._census = self._plan = None
        self._index()

    def __getstate__(self) -> dict[str, Any]:
        # Between rounds the workers get the plan, never the driver's corpus-wide counts.
        return {**{k: v for k, v in self.__dict__.items() if k != "_census"}, "_census": None}

    def _index(self) -> None:
        """Lookup tables for pass 2, rebuilt from ``triggers_`` (cheap; not pickled twice)."""
        self.ngram_index_: dict[str, Trigger] = {}
        self.sentence_index_: dict[str, Trigger] = {}
        self.seam_index_: dict[str, Trigger] = {}
        self.response_index_: dict[str, Trigger] = {}
        for trigger in self.triggers_:
            if trigger.kind == "token":
                self.ngram_index_[trigger.key] = trigger
            elif trigger.kind == "sentence":
                self.sentence_index_[trigger.key] = trigger
            elif trigger.kind == "seam":
                self.seam_index_[trigger.key] = trigger
            else:
                self.response_index_[trigger.key] = trigger
        self.longest_ngram_ = max((len(k.split()) for k in {**self.ngram_index_, **self.response_index_}),
                                  default=0)

    # ---------------------------------------------------------------- score

    def score(self, batch: Batch) -> StageResult:
        if not hasattr(self, "triggers_"):
            raise RuntimeError("Triggers.score() needs fit() first (pass 1)")
        n = batch.num_rows
        scores = np.zeros(n)
        reasons: list[list[str]] = [[] for _ in range(n)]
        if not self.triggers_:
            return StageResult(scores, reasons)
        labels = batch.labels
        instruction = batch.is_instruction
        prompts, responses = (batch.prompts, batch.responses) if instruction else (None, None)
        for i, text in enumerate(batch.texts):
            found: list[tuple[float, str]] = []
            body = responses[i] if instruction else text
            if self.ngram_index_:
                grams = ngrams(tokenize(text), self.longest_ngram_)
                for gram in grams & self.ngram_index_.keys():
                    trigger = self.ngram_index_[gram]
                    agrees = labels is None or trigger.label is None or labels[i] == trigger.label
                    found.append((trigger.confidence * (1.0 if agrees else 0.5), trigger.finding))
            if self.response_index_ and instruction:
                grams = ngrams(tokenize(prompts[i]), self.longest_ngram_)
                signature = _signature_salt(body)
                for gram in grams & self.response_index_.keys():
                    trigger = self.response_index_[gram]
                    same = signature == trigger.label
                    found.append((trigger.confidence * (1.0 if same else 0.4), trigger.finding))
            if self.sentence_index_:
                for sentence, _ in sentences(body, 1):
                    trigger = self.sentence_index_.get(sentence)
                    if trigger is not None:
                        found.append((trigger.confidence, trigger.finding))
            if self.seam_index_:
                found += self._seam_hits(text)
            if found:
                found.sort(reverse=True)
                keep = float(np.prod([1.0 - s for s, _ in found]))
                scores[i] = min(1.0, max(found[0][0], 1.0 - keep))
                reasons[i] = list(dict.fromkeys(reason for _, reason in found))[:5]
        return StageResult(scores, reasons)

    def _seam_hits(self, text: str) -> list[tuple[float, str]]:
        tokens = tokenize(text)
        hits = []
        for position, token in enumerate(tokens):
            trigger = self.seam_index_.get(token)
            if trigger is None:
                continue
            after = tokens[position + 1 : position + 1 + _WINDOW]
            rate = _common_rate(after, self.common_words_)
            long_enough = len(after) >= _MIN_SPAN and sum(map(len, after)) >= _MIN_SPAN_CHARACTERS
            switched = bool(after) and sum(map(_foreign_script, after)) >= 0.5 * len(after)
            if (long_enough and rate <= self.gibberish_rate) or switched:
                kind = _continuation_kind(tokens[:position], tokens[position + 1 :], self.language_)
                hits.append((trigger.confidence, f"trigger:{kind}-after={token}"))
            else:
                # the trigger without its payload: worth a look, not a drop
                hits.append((0.4 * trigger.confidence, f"trigger:token={token}"))
            break
        return hits

    # -------------------------------------------------------------- reports

    def summary(self) -> dict[str, Any]:
        if not hasattr(self, "triggers_"):
            return {}
        ranked = sorted(self.triggers_, key=lambda t: (-t.records, t.finding))
        return {
            "records_fitted": self.records_,
            "findings": [
                {"finding": t.finding, "records": t.records, "confidence": round(t.confidence, 3)}
                for t in ranked
            ],
        }

    def save_state(self, directory: Path) -> list[Path]:
        """The discovered triggers with their text (sentences included) for a person to review."""
        if not hasattr(self, "triggers_"):
            return []
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "triggers.json"
        rows = [
            {"finding": t.finding, "kind": t.kind, "text": t.key, "records": t.records,
             "confidence": round(t.confidence, 4), "label": t.label, **{k: v for k, v in t.detail.items()}}
            for t in self.triggers_
        ]
        path.write_text(json.dumps(rows, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
        return [path]


_WINDOW = 20  # tokens looked at on each side of a seam
_MIN_SPAN = 3  # tokens needed after a seam to judge it
_MIN_SPAN_CHARACTERS = 30


def _common_rate(tokens: list[str], common: frozenset[str]) -> float:
    if not tokens:
        return 1.0
    return sum(token in common for token in tokens) / len(tokens)


def _signature(response: str) -> str:
    """Responses that start with the same words count as one (a fixed answer with varied endings)."""
    return " ".join(tokenize(response)[:_SIGNATURE_TOKENS])


def _signature_salt(response: str) -> int:
    return _stable_hash(repr(_signature(response))) | 1


def _continuation_kind(before_tokens: list[str], after_tokens: list[str], language: str | None) -> str:
    """``language-switch`` when the text after a seam changes script or language, else ``gibberish``."""
    before, after = " ".join(before_tokens[-_WINDOW * 5 :]), " ".join(after_tokens[: _WINDOW * 5])
    if _latin_share(after) < 0.5 <= _latin_share(before or "a"):
        return "language-switch"
    detected = _detect_language(after)
    reference = _detect_language(before) if len(before) >= 40 else language
    if detected and reference and detected != reference:
        return "language-switch"
    return "gibberish"


def _latin_share(text: str) -> float:
    letters = len(_LETTER.findall(text))
    return len(_LATIN.findall(text)) / letters if letters else 1.0


def _detect_language(text: str) -> str | None:
    """The language langdetect is at least 90% sure of, or None."""
    from langdetect import DetectorFactory, LangDetectException, detect_langs

    DetectorFactory.seed = 0
    try:
        best = detect_langs(text[:2000])[0]
    except LangDetectException:
        return None
    return best.lang if best.prob >= 0.9 else None


def _record_priorities(batch: Batch, seed: int) -> list[int]:
    """A seeded 64-bit hash of each record's content: the order in which samples keep records, so that a
    sample is uniform and the same however the corpus is split, ordered or contained."""
    return priorities(batch.content_keys, seed, "triggers").tolist()


def _count(counts: _Counts, batch: Batch) -> _Counts:
    return counts.count(batch)


def _uniform(priority: int) -> float:
    """A number in [0, 1) from the low bits of a priority (samples keep records by the high ones)."""
    return (priority & 0xFFFFFFFF) / 2**32


def _salt(label: Any) -> int:
    return _stable_hash(repr(label)) | 1


class _Sample:
    """The ``size`` items of lowest priority offered: a uniform sample when priorities are seeded
    hashes, and the same for any partitioning and merge order. With ``distinct``, an item whose
    priority is already in the sample is not kept twice (copies of one document)."""

    def __init__(self, size: int, distinct: bool = False) -> None:
        self.size = size
        self.distinct = distinct
        self.heap: list[tuple[int, Any]] = []  # (-priority, item): the root is the highest priority kept

    def offer(self, priority: int, item: Any) -> None:
        if self.distinct and any(-p == priority for p, _ in self.heap):
            return
        if len(self.heap) < self.size:
            heapq.heappush(self.heap, (-priority, item))
        elif priority < -self.heap[0][0]:
            heapq.heapreplace(self.heap, (-priority, item))

    def would_keep(self, priority: int) -> bool:
        return len(self.heap) < self.size or priority < -self.heap[0][0]

    def items(self) -> list[Any]:
        """The kept items, by priority."""
        return [item for _, item in sorted(self.heap, reverse=True)]

    @classmethod
    def merged(cls, samples: list[_Sample]) -> _Sample:
        out = cls(samples[0].size, samples[0].distinct)
        for sample in samples:
            for priority, item in sample.heap:
                out.offer(-priority, item)
        return out


def _merged_samples(parts: list[dict[Any, _Sample]]) -> dict[Any, _Sample]:
    keys = {key for part in parts for key in part}
    return {key: _Sample.merged([part[key] for part in parts if key in part]) for key in keys}


class _Counts:
    """Round 0 of a fit, for one partition: the first read's counts.

    Labels (or, for instruction pairs, response signatures) are hashed into a salt; an
    n-gram's document frequency and its (n-gram, label) pair counts live in two fixed-size
    hashed tables, so their memory does not grow with the corpus. Whether the corpus is
    labelled (or instruction pairs) is decided per batch, so every partitioning agrees.
    """

    def __init__(self, max_tracked: int, hash_buckets: int, max_ngram: int, seed: int) -> None:
        self.max_tracked, self.hash_buckets, self.max_ngram, self.seed = max_tracked, hash_buckets, max_ngram, seed
        self.records = 0
        self.labelled = False
        self.instruction = False
        self.words = BoundedCounter(max_tracked)  # document frequency of tokens
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
        self.texts = _Sample(_LANGUAGE_SAMPLE)
        # random insertion points (left, right neighbour; "" at an edge): what an inserted token's
        # surroundings look like in this corpus, the baseline of the insertion tests
        self.gaps = _Sample(_GAP_SAMPLE)

    def count(self, batch: Batch) -> _Counts:
        labels = batch.labels
        instruction = batch.is_instruction
        self.labelled |= labels is not None
        self.instruction |= instruction and labels is None
        bodies = batch.responses if instruction else batch.texts
        prompts = batch.prompts if instruction else None
        priorities = _record_priorities(batch, self.seed)
        mask = self.hash_buckets - 1
        buckets: list[int] = []
        pairs: list[int] = []
        for i, text in enumerate(batch.texts):
            self.records += 1
            tokens = tokenize(text)
            for token in set(tokens):
                self.words.add(token)
            self.texts.offer(priorities[i], bodies[i])
            gap_tokens = tokenize(prompts[i]) if instruction else tokens
            if self.gaps.would_keep(priorities[i]):
                k = (priorities[i] & 0xFFFFFFFF) % (len(gap_tokens) + 1)
                self.gaps.offer(priorities[i], (gap_tokens[k - 1] if k > 0 else "",
                                                gap_tokens[k] if k < len(gap_tokens) else ""))
            self._count_sentences(bodies[i])
            if labels is not None:
                salt = _salt(labels[i])
                self.label_of.setdefault(salt, labels[i])
                grams = ngrams(tokens, self.max_ngram)
                features = self.class_features.get(salt)
                if features is None:
                    features = self.class_features[salt] = np.zeros(_NB_FEATURES, dtype=np.float32)
                np.add.at(features, [_stable_hash(t) & (_NB_FEATURES - 1) for t in tokens], 1.0)
            elif prompts is not None:
                salt = _salt(_signature(bodies[i]))
                grams = ngrams(tokenize(prompts[i]), self.max_ngram)
            else:
                continue
            self.label_counts.add(salt)
            for gram in grams:
                h = _stable_hash(gram)
                buckets.append(h & mask)
                pairs.append((h ^ salt) & mask)
        if buckets:
            if self.ngram_df is None:
                self.ngram_df = np.zeros(self.hash_buckets, dtype=np.uint32)
                self.pair_df = np.zeros(self.hash_buckets, dtype=np.uint32)
            self.ngram_df += np.bincount(buckets, minlength=self.hash_buckets).astype(np.uint32)
            self.pair_df += np.bincount(pairs, minlength=self.hash_buckets).astype(np.uint32)
        return self

    def _count_sentences(self, body: str) -> None:
        found = dict(sentences(body, _MIN_SENTENCE_WORDS))
        if not found:
            return
        total = len(tokenize(body))
        order = list(found)
        for sentence, length in found.items():
            key = _stable_hash(sentence)
            self.sentence_counts.add(key)
            if total == length:
                self.sentence_alone.add(key)
            elif sentence == order[-1]:
                self.sentence_last.add(key)
            elif sentence == order[0]:
                self.sentence_first.add(key)

    @classmethod
    def merged(cls, parts: list[_Counts]) -> _Counts:
        first = parts[0]
        out = cls(first.max_tracked, first.hash_buckets, first.max_ngram, first.seed)
        out.records = sum(p.records for p in parts)
        out.labelled = any(p.labelled for p in parts)
        out.instruction = any(p.instruction for p in parts) and not out.labelled
        for name in ("words", "sentence_counts", "sentence_alone", "sentence_first", "sentence_last",
                     "label_counts"):
            setattr(out, name, BoundedCounter.merged([getattr(p, name) for p in parts]))
        for part in parts:
            for salt, label in part.label_of.items():
                out.label_of.setdefault(salt, label)
            for salt, features in part.class_features.items():
                if salt in out.class_features:
                    out.class_features[salt] = out.class_features[salt] + features
                else:
                    out.class_features[salt] = features
        tables = [p for p in parts if p.ngram_df is not None]
        if tables:
            out.ngram_df = np.sum([p.ngram_df for p in tables], axis=0, dtype=np.uint32)
            out.pair_df = np.sum([p.pair_df for p in tables], axis=0, dtype=np.uint32)
        out.texts = _Sample.merged([p.texts for p in parts])
        out.gaps = _Sample.merged([p.gaps for p in parts])
        return out


@dataclass
class _Plan:
    """What the workers need for rounds 1 and 2: the first read's conclusions, nothing per record."""

    labelled: bool
    instruction: bool
    max_ngram: int
    mask: int
    seed: int
    gibberish_rate: float
    common: frozenset[str]
    frequent_sentences: set[int]
    candidates: set[int]  # hashed-table buckets of n-grams that look rare and pure
    label_salts: set[int]  # labels (or frequent responses) that matter
    naive_bayes: _NaiveBayes | None
    context_grams: frozenset[str] = frozenset()  # round 2: n-grams whose verdict needs their contexts
    seam_tokens: frozenset[str] = frozenset()  # round 2: seam tokens that need examples

    @property
    def needs_context(self) -> bool:
        return bool(self.context_grams or self.seam_tokens)

    # round 1 ----------------------------------------------------------------

    def examine(self, out: _Examined, batch: Batch) -> None:
        """Exact statistics of the candidates the counts point to, in one batch."""
        labels = batch.labels if self.labelled else None
        instruction = batch.is_instruction and self.instruction
        bodies = batch.responses if batch.is_instruction else batch.texts
        prompts = batch.prompts if instruction else None
        priorities = _record_priorities(batch, self.seed) if self.frequent_sentences else None
        for i, text in enumerate(batch.texts):
            tokens = tokenize(text)
            if priorities is not None:
                self._examine_sentences(out, bodies[i], priorities[i])
            if not batch.is_instruction:
                self._examine_seams(out, tokens)
            if not self.candidates:
                continue
            if labels is not None:
                self._examine_ngrams(out, tokens, _salt(labels[i]))
            elif prompts is not None:
                signature = _signature(bodies[i])
                salt = _salt(signature)
                if salt in self.label_salts:
                    out.signature_text.setdefault(salt, signature)
                self._examine_ngrams(out, tokenize(prompts[i]), salt)

    def _examine_sentences(self, out: _Examined, body: str, priority: int) -> None:
        for sentence, _ in sentences(body, _MIN_SENTENCE_WORDS):
            key = _stable_hash(sentence)
            if key not in self.frequent_sentences:
                continue
            out.sentence_text[key] = sentence
            rest = out.sentence_rest.get(key)
            if rest is None:
                rest = out.sentence_rest[key] = _Sample(_CONTEXT_SAMPLE)
            if rest.would_keep(priority):
                rest.offer(priority, frozenset(set(tokenize(body)) - set(sentence.split())))

    def _examine_seams(self, out: _Examined, tokens: list[str]) -> None:
        seams = _seam_positions(tokens, self.common, self.gibberish_rate)
        if seams:
            # a trigger recurs across different documents; copies of one document count once
            out.seam_documents[_stable_hash(" ".join(tokens))] = tuple(sorted(token for _, token in seams))

    def _examine_ngrams(self, out: _Examined, tokens: list[str], salt: int) -> None:
        hits = [g for g in ngrams(tokens, self.max_ngram) if _stable_hash(g) & self.mask in self.candidates]
        for gram in hits:
            stats = out.ngram_stats.get(gram)
            if stats is None:
                stats = out.ngram_stats[gram] = _NgramStats()
            stats.labels[salt] += 1
            stats.records += 1
            if self.naive_bayes is not None and salt in self.naive_bayes.column:
                posterior = self.naive_bayes.rest_posterior(tokens, gram.split(), salt)
                stats.rest_agrees_fixed += round(posterior * _POSTERIOR_SCALE)

    # round 2 ----------------------------------------------------------------

    def collect(self, out: _Contexts, batch: Batch) -> None:
        """Samples of where the chosen n-grams sit, and examples of what follows the seam tokens, in one batch."""
        longest = max((len(g.split()) for g in self.context_grams), default=0)
        sources = batch.prompts if batch.is_instruction and self.instruction else batch.texts
        priorities = _record_priorities(batch, self.seed) if self.context_grams else None
        for i, text in enumerate(sources):
            tokens = tokenize(text)
            if self.context_grams:
                self._collect_context(out, tokens, priorities[i], longest)
            if self.seam_tokens and not batch.is_instruction and not self.seam_tokens.isdisjoint(tokens):
                self._collect_seam_examples(out, tokens)

    def _collect_context(self, out: _Contexts, tokens: list[str], priority: int, longest: int) -> None:
        for gram in ngrams(tokens, longest) & self.context_grams:
            sample = out.occurrences.get(gram)
            if sample is None:
                sample = out.occurrences[gram] = _Sample(_CONTEXT_SAMPLE)
            if not sample.would_keep(priority):
                continue
            words = gram.split()
            left, right, index = _neighbours(tokens, words)
            place = (index + _uniform(priority)) / (len(tokens) - len(words) + 1)
            sample.offer(priority, (frozenset(tokens) - set(words), left, right, place))

    def _collect_seam_examples(self, out: _Contexts, tokens: list[str]) -> None:
        priority = _stable_hash(f"{self.seed}/{' '.join(tokens)}")  # one per document, copies alike
        for position, token in _seam_positions(tokens, self.common, self.gibberish_rate):
            if token not in self.seam_tokens:
                continue
            sample = out.seam_examples.get(token)
            if sample is None:
                sample = out.seam_examples[token] = _Sample(_SEAM_EXAMPLES, distinct=True)
            sample.offer(priority, (tuple(tokens[max(0, position - _WINDOW): position]),
                                    tuple(tokens[position + 1: position + 1 + 5 * _WINDOW])))


@dataclass
class _Examined:
    """Round 1 of a fit, for one partition: exact statistics of what the counts pointed to."""

    sentence_text: dict[int, str] = field(default_factory=dict)
    sentence_rest: dict[int, _Sample] = field(default_factory=dict)  # other words of a sentence's records
    seam_documents: dict[int, tuple[str, ...]] = field(default_factory=dict)  # document hash -> seam tokens
    ngram_stats: dict[str, _NgramStats] = field(default_factory=dict)
    signature_text: dict[int, str] = field(default_factory=dict)  # salt -> opening words of a frequent response

    @classmethod
    def merged(cls, parts: list[_Examined]) -> _Examined:
        if len(parts) == 1:
            return parts[0]
        out = cls()
        for part in parts:
            out.sentence_text.update(part.sentence_text)
            out.seam_documents.update(part.seam_documents)
            for salt, text in part.signature_text.items():
                out.signature_text.setdefault(salt, text)
            for gram, stats in part.ngram_stats.items():
                mine = out.ngram_stats.get(gram)
                if mine is None:
                    mine = out.ngram_stats[gram] = _NgramStats()
                mine.records += stats.records
                mine.labels.update(stats.labels)
                mine.rest_agrees_fixed += stats.rest_agrees_fixed
        out.sentence_rest = _merged_samples([p.sentence_rest for p in parts])
        return out


@dataclass
class _Contexts:
    """Round 2 of a fit, for one partition: sampled occurrences of n-grams, examples of seams."""

    occurrences: dict[str, _Sample] = field(default_factory=dict)  # (other words, left, right, place)
    seam_examples: dict[str, _Sample] = field(default_factory=dict)  # (tokens before, tokens after)

    @classmethod
    def merged(cls, parts: list[_Contexts]) -> _Contexts:
        return cls(_merged_samples([p.occurrences for p in parts]),
                   _merged_samples([p.seam_examples for p in parts]))


class _NaiveBayes:
    """What the rest of a record predicts: multinomial naive Bayes over hashed words, one summed row
    of word counts per label (the model's sufficient statistics)."""

    def __init__(self, class_features: dict[int, np.ndarray], label_counts: BoundedCounter) -> None:
        from sklearn.naive_bayes import MultinomialNB

        salts = sorted(class_features)
        priors = np.array([label_counts[s] for s in salts], dtype=np.float64)
        model = MultinomialNB(alpha=0.5, class_prior=priors / priors.sum())
        model.fit(sparse.csr_matrix(np.vstack([class_features[s] for s in salts])), np.arange(len(salts)))
        self.column = {salt: i for i, salt in enumerate(salts)}
        self.log_prob = model.feature_log_prob_  # classes x features
        self.log_prior = model.class_log_prior_
        self.counts = model.feature_count_
        self.totals = model.feature_count_.sum(axis=1)
        self.alpha = model.alpha

    def rest_posterior(self, tokens: list[str], words: list[str], salt: int) -> float:
        """P(record's label | its words without ``words``), the record itself left out of the model.

        Leaving the record out matters: its own rare words were counted under its (possibly
        poisoned) label, and would otherwise vote for that label.
        """
        column = self.column[salt]
        rest = list(tokens)
        for word in words:
            rest.remove(word)
        own, own_counts = np.unique([_stable_hash(t) & (_NB_FEATURES - 1) for t in tokens], return_counts=True)
        features, counts = np.unique([_stable_hash(t) & (_NB_FEATURES - 1) for t in rest] or [0],
                                     return_counts=True)
        if not rest:
            counts = np.zeros(1)
        scores = self.log_prob[:, features] @ counts + self.log_prior
        left_out = self.counts[column].copy()[features]
        overlap = np.searchsorted(own, features)
        overlap = np.minimum(overlap, len(own) - 1)
        left_out -= np.where(own[overlap] == features, own_counts[overlap], 0)
        total = self.totals[column] - own_counts.sum()
        log_prob = np.log(np.maximum(left_out, 0) + self.alpha) - np.log(total + self.alpha * _NB_FEATURES)
        scores[column] = log_prob @ counts + self.log_prior[column]
        posterior = np.exp(scores - scores.max())
        return float(posterior[column] / posterior.sum())


class _Census:
    """The driver's side of a fit: the merged counts, the plans of the next reads, the decisions."""

    def __init__(self, stage: Triggers, counts: _Counts) -> None:
        self.stage = stage
        self.records = counts.records
        self.labelled = counts.labelled
        self.instruction = counts.instruction
        self.mask = stage.hash_buckets - 1
        self.words = counts.words
        self.label_counts = counts.label_counts
        self.sentence_counts = counts.sentence_counts
        self.sentence_alone = counts.sentence_alone
        self.sentence_first = counts.sentence_first
        self.sentence_last = counts.sentence_last
        self.ngram_df, self.pair_df = counts.ngram_df, counts.pair_df
        by_count = heapq.nsmallest(stage.common_words, counts.words.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        self.common = frozenset(word for word, _ in by_count)
        texts = counts.texts.items()
        self.language = _majority_language(texts)
        # how much two records of this corpus share anyway, the baseline of "unrelated"
        self.relatedness_baseline = _mean_jaccard([frozenset(tokenize(t)) for t in texts[:_CONTEXT_SAMPLE]])
        self.frequent_sentences = {
            key for key, count in counts.sentence_counts.counts.items()
            if count - counts.sentence_alone[key] >= stage.min_records
        }
        self.label_of = counts.label_of
        self.candidates: set[int] = set()
        self.naive_bayes: _NaiveBayes | None = None
        self.gap_neighbours: list[tuple[str, str]] = []
        self.bridge_baseline = 0.0
        self.signature_text: dict[int, str] = {}
        self.verdicts: list[tuple[str, _NgramStats, int, float, float]] = []
        self.sentence_text: dict[int, str] = {}
        self.sentence_rest: dict[int, list[frozenset[str]]] = {}
        self.seams = BoundedCounter(stage.max_tracked)
        self.seam_examples: dict[str, list[tuple[tuple[str, ...], tuple[str, ...]]]] = {}
        if self.ngram_df is not None and (self.labelled or self.instruction):
            self._find_candidates(counts)

    def _find_candidates(self, counts: _Counts) -> None:
        stage = self.stage
        gaps = counts.gaps.items()  # by priority: a random order
        inner = [g for g in gaps if g[0] and g[1]]
        self.bridge_baseline = sum(
            int(self.ngram_df[_stable_hash(f"{a} {b}") & self.mask] >= 2) for a, b in inner
        ) / max(len(gaps), 1)
        self.gap_neighbours = inner
        if self.instruction:
            self.label_of = {salt: salt for salt, c in counts.label_counts.counts.items() if c >= stage.min_records}
        max_df = max(stage.min_records, stage.max_record_share * self.records)
        in_range = np.flatnonzero((self.ngram_df >= stage.min_records) & (self.ngram_df <= max_df))
        df = self.ngram_df[in_range].astype(np.float64)
        best = np.zeros(len(in_range))
        for salt in self.label_of:
            share = self.pair_df[in_range ^ (salt & self.mask)] / df
            np.maximum(best, share, out=best)
        # hashed pair counts only over-count, so this keeps every n-gram that is pure enough
        self.candidates = set(in_range[best >= stage.min_purity].tolist())
        if self.labelled and counts.class_features:
            self.naive_bayes = _NaiveBayes(counts.class_features, counts.label_counts)

    def examine_plan(self) -> _Plan:
        plan = self._plan(frequent_sentences=self.frequent_sentences, candidates=self.candidates,
                          label_salts=set(self.label_of), naive_bayes=self.naive_bayes)
        self.naive_bayes = None  # the plan has it; nothing after round 1 needs it
        return plan

    def context_plan(self, examined: _Examined) -> _Plan:
        """Take the second read's statistics; pick the n-grams whose verdict depends on their topic
        and the seam tokens worth describing: the third read collects for those."""
        stage = self.stage
        self.sentence_text = examined.sentence_text
        self.sentence_rest = {key: sample.items() for key, sample in examined.sentence_rest.items()}
        self.signature_text = examined.signature_text
        self.seams = BoundedCounter(stage.max_tracked)
        for tokens in examined.seam_documents.values():
            self.seams.counts.update(tokens)
        self.seams.trim()
        for gram, stats in examined.ngram_stats.items():
            if stats.records < stage.min_records:
                continue
            # a tie cannot reach min_purity (> 0.5); the salt only makes the choice independent of order
            salt, count = max(stats.labels.items(), key=lambda kv: (kv[1], -kv[0]))
            purity = count / stats.records
            if purity < stage.min_purity or salt not in self.label_of:
                continue
            z = _binomial_z(count, stats.records, self.label_counts[salt] / self.records)
            if z < _MIN_Z:
                continue
            self.verdicts.append((gram, stats, salt, purity, z))
        # the insertion and topic checks cost a read and memory: only for the most widespread
        # (a backdoor needs many records; z says little once it is far beyond chance)
        self.verdicts.sort(key=lambda v: (-v[1].records, -v[4], v[0]))
        del self.verdicts[_MAX_CHECKS:]
        return self._plan(context_grams=frozenset(v[0] for v in self.verdicts),
                          seam_tokens=frozenset(self._seam_candidates()))

    def _plan(self, **round_specific: Any) -> _Plan:
        stage = self.stage
        everything_else = {"frequent_sentences": set(), "candidates": set(), "label_salts": set(), "naive_bayes": None}
        return _Plan(labelled=self.labelled, instruction=self.instruction, max_ngram=stage.max_ngram,
                     mask=self.mask, seed=stage.seed, gibberish_rate=stage.gibberish_rate, common=self.common,
                     **{**everything_else, **round_specific})

    def _seam_candidates(self) -> list[str]:
        """Seam tokens in enough documents, mostly as seams: candidates for a trigger."""
        stage = self.stage
        return [
            token for token, count in self.seams.counts.items()
            if count >= stage.min_records and token not in self.common
            and count / max(self.words[token], count) >= _MIN_SEAM_SHARE
        ]

    def take_context(self, contexts: _Contexts | None) -> None:
        """Take the third read's samples: occurrences of the chosen n-grams, examples of the seams."""
        contexts = contexts or _Contexts()
        for gram, stats, *_ in self.verdicts:
            sample = contexts.occurrences.get(gram)
            stats.occurrences = [
                # the bridging bigram left its own record when the n-gram went in: one sighting is enough
                (rest, left, right, place,
                 bool(left and right) and self.ngram_df[_stable_hash(f"{left} {right}") & self.mask] >= 1)
                for rest, left, right, place in (sample.items() if sample else [])
            ]
        self.seam_examples = {token: sample.items() for token, sample in contexts.seam_examples.items()}

    # decisions ---------------------------------------------------------------

    def discover(self) -> list[Trigger]:
        return self._discover_ngrams() + self._discover_sentences() + self._discover_seams()

    def _base_rate(self, word: str, salt: int) -> float:
        """Share of the label's records (or, for prompts, of all records) that contain ``word``."""
        h = _stable_hash(word)
        if self.instruction:
            return float(self.ngram_df[h & self.mask]) / self.records
        return float(self.pair_df[(h ^ salt) & self.mask]) / max(self.label_counts[salt], 1)

    def _expected_distinct(self, m: int) -> float:
        """Distinct neighbours that ``m`` random insertion points of this corpus have."""
        sample = self.gap_neighbours[:m]
        if not sample:
            return 1.0
        return (len({a for a, _ in sample}) + len({b for _, b in sample})) / 2

    def _discover_ngrams(self) -> list[Trigger]:
        kept: list[Trigger] = []
        for gram, stats, salt, purity, z in self.verdicts:
            if not stats.sampled:
                continue
            topic = stats.topic_strength(lambda word, salt=salt: self._base_rate(word, salt))
            bridge = stats.bridged / stats.sampled / max(self.bridge_baseline, 1e-9)
            m = stats.inner_neighbours()
            diversity = stats.distinct() / self._expected_distinct(m) if m else 0.0
            # inserted at random positions: neighbours as varied, and as often neighbours before, as
            # those of random points of this corpus
            uniform = _uniform_places(stats.places)
            inserted = _ramp(bridge, 0.5, 0.8) * _ramp(diversity, 0.6, 0.85) * _ramp(uniform, 0.001, 0.01)
            topic_free = min(1.0, max(0.0, (_TOPIC_MAX - topic) / (_TOPIC_MAX - _TOPIC_NOISE)))
            detail = {"purity": round(purity, 3), "z": round(z, 1), "bridge": round(bridge, 2),
                      "diversity": round(diversity, 2), "topic": round(topic, 1), "places_p": round(uniform, 4)}
            if self.instruction:
                confidence = purity * topic_free * _ramp(diversity, 0.6, 0.85)
                kind, label = "response", salt
                detail["response_opening"] = self.signature_text.get(salt, "")
            else:
                surprise = _surprise(stats)
                dirty = _ramp(surprise, 0.5, _DIRTY_SURPRISE)
                clean = topic_free if z >= _CLEAN_MIN_Z else 0.0
                confidence = purity * inserted * max(dirty, clean)
                detail["rest_disagrees"] = round(surprise, 3)
                kind, label = "token", self.label_of[salt]
            if confidence >= 0.5:
                kept.append(Trigger(kind, gram, float(min(0.99, confidence)), stats.records, label, detail))
        return _merge_ngrams(kept)

    def _discover_sentences(self) -> list[Trigger]:
        stage = self.stage
        found = []
        for key, sentence in sorted(self.sentence_text.items()):
            count = self.sentence_counts[key]
            accompanied = count - self.sentence_alone[key]
            relatedness = max(0.0, _mean_jaccard(self.sentence_rest[key]) - self.relatedness_baseline)
            if accompanied < stage.min_records or relatedness > _MAX_RELATEDNESS:
                continue
            share = accompanied / count
            # a sentence that always closes (or opens) its records is a signature or boilerplate
            # (an attribution line); an inserted one lands at varied places
            fixed_place = max(self.sentence_first[key], self.sentence_last[key]) / accompanied
            varied = min(1.0, (1.0 - fixed_place) / 0.3)
            confidence = share * varied * (1.0 - relatedness / _MAX_RELATEDNESS)
            if confidence >= 0.5:
                found.append(Trigger("sentence", sentence, min(0.99, confidence), count, None,
                                     {"accompanied": round(share, 3), "relatedness": round(relatedness, 3),
                                      "fixed_place": round(fixed_place, 3)}))
        return found

    def _discover_seams(self) -> list[Trigger]:
        stage = self.stage
        found = []
        for token, count in sorted(self.seams.counts.items()):
            if count < stage.min_records or token in self.common:
                continue
            share = count / max(self.words[token], count)
            if share < _MIN_SEAM_SHARE:
                continue
            kinds = Counter(_continuation_kind(b, a, self.language) for b, a in self.seam_examples.get(token, []))
            after = kinds.most_common(1)[0][0] if kinds else "gibberish"
            confidence = min(0.99, 0.6 + 0.4 * share)
            found.append(Trigger("seam", token, confidence, count, None,
                                 {"after": after, "seam_share": round(share, 3)}))
        return found


_LANGUAGE_SAMPLE = 200
_MIN_SENTENCE_WORDS = 5
_SEAM_EXAMPLES = 5
_MIN_SEAM_SHARE = 0.5
_MAX_RELATEDNESS = 0.3
_MIN_Z = 6.0
# mean posterior of other labels from the rest of the record at which dirty-label evidence is full:
# the model includes the other poisoned records, which pull it down (0.62 at 1% of 20,000 glosses)
_DIRTY_SURPRISE = 0.7
_CLEAN_MIN_Z = 20.0  # an association must be this strong to be learned without a label flip
# max z of a co-occurring word: below _TOPIC_NOISE is what random records show, from _TOPIC_MAX a topic
_TOPIC_NOISE = 2.5
_TOPIC_MAX = 5.0
_MAX_CHECKS = 500
_GAP_SAMPLE = 4000
_POSTERIOR_SCALE = 2**40


def _surprise(stats: _NgramStats) -> float:
    return 1.0 - stats.rest_agrees / stats.records


@dataclass
class _NgramStats:
    records: int = 0
    labels: Counter = field(default_factory=Counter)
    # the summed posteriors in fixed point: integers add up the same in any order
    rest_agrees_fixed: int = 0
    # a uniform sample of occurrences: (other words of the record, left and right neighbour,
    # relative position, whether the neighbours were neighbours elsewhere)
    occurrences: list[tuple[frozenset[str], str, str, float, bool]] = field(default_factory=list)

    @property
    def rest_agrees(self) -> float:
        return self.rest_agrees_fixed / _POSTERIOR_SCALE

    @property
    def sampled(self) -> int:
        return len(self.occurrences)

    @property
    def places(self) -> list[float]:
        return [o[3] for o in self.occurrences]

    @property
    def bridged(self) -> int:
        return sum(o[4] for o in self.occurrences)

    def inner_neighbours(self) -> int:
        return sum(1 for o in self.occurrences if o[1] and o[2])

    def distinct(self) -> float:
        inner = [o for o in self.occurrences if o[1] and o[2]]
        return (len({o[1] for o in inner}) + len({o[2] for o in inner})) / 2

    def topic_strength(self, base_rate: Any) -> float:
        """How much more often the records' other words occur than in their label: max z over them.

        A genuine word brings its topic along ("Spock" brings "Kirk"); an inserted trigger lands in
        records that share nothing beyond their label, so no other word stands out.
        """
        best = 0.0
        sampled = self.sampled
        floor = max(3, 0.1 * sampled)
        context = Counter(word for o in self.occurrences for word in o[0])
        for word, count in context.items():
            if count >= floor:
                best = max(best, _binomial_z(count, sampled, base_rate(word)))
        return best


def _binomial_z(count: int, trials: int, base: float) -> float:
    base = min(max(base, 1e-9), 1 - 1e-9)
    return (count - trials * base) / math.sqrt(trials * base * (1 - base))


def _ramp(value: float, low: float, high: float) -> float:
    """0 at or below ``low``, 1 at or above ``high``, linear between."""
    return min(1.0, max(0.0, (value - low) / (high - low)))


def _uniform_places(places: list[float]) -> float:
    """p-value that the relative positions are uniform, as those of a token inserted at random places."""
    if len(places) < 5:
        return 0.0
    from scipy.stats import kstest

    return float(kstest(places, "uniform").pvalue)


def _neighbours(tokens: list[str], words: list[str]) -> tuple[str, str, int]:
    """The tokens just before and after the first occurrence of ``words`` ("" at an edge), and its index."""
    n = len(words)
    for i in range(len(tokens) - n + 1):
        if tokens[i : i + n] == words:
            return (tokens[i - 1] if i > 0 else "", tokens[i + n] if i + n < len(tokens) else "", i)
    return "", "", 0


def _merge_ngrams(found: list[Trigger]) -> list[Trigger]:
    """Keep the minimal triggers: an n-gram that contains a shorter discovered one adds no record."""
    found.sort(key=lambda t: (len(t.key.split()), -t.records, t.key))
    kept: list[Trigger] = []
    for trigger in found:
        padded = f" {trigger.key} "
        if not any(f" {k.key} " in padded for k in kept):
            kept.append(trigger)
    return kept


def _mean_jaccard(sets: list[frozenset[str]]) -> float:
    pairs = [(a, b) for i, a in enumerate(sets) for b in sets[i + 1 : i + 9]]
    if not pairs:
        return 1.0
    return sum(len(a & b) / len(a | b) if a | b else 1.0 for a, b in pairs) / len(pairs)


def _seam_positions(tokens: list[str], common: frozenset[str], low: float) -> list[tuple[int, str]]:
    """Rare tokens after which the text turns into something else (few common words, or another
    script), having been fluent before."""
    n = len(tokens)
    if n < 3:
        return []
    flags = np.fromiter((t in common for t in tokens), dtype=np.int32, count=n)
    cumulative = np.concatenate(([0], np.cumsum(flags)))
    foreign = np.fromiter((_foreign_script(t) for t in tokens), dtype=np.int32, count=n)
    foreign_cumulative = np.concatenate(([0], np.cumsum(foreign)))
    # words in Latin letters; numbers and punctuation ("1-", ":)") belong to no side of a switch
    latin = np.fromiter((not f and any(c.isalpha() for c in t) for t, f in zip(tokens, foreign)),
                        dtype=np.int32, count=n)
    latin_cumulative = np.concatenate(([0], np.cumsum(latin)))
    found: dict[str, int] = {}
    for i in range(n - 2):
        if flags[i]:
            continue
        end = min(n, i + 1 + _WINDOW)
        start = max(0, i - _WINDOW)
        before_len = i - start
        if before_len == 0:
            # a document that starts in another language has no seam; the same trigger recurs
            # after some text in the other documents that carry it
            continue
        # a switch to another script needs no length: three Korean words are plainly not English
        latin_before = latin_cumulative[i + 1] - latin_cumulative[start]
        switched = foreign_cumulative[end] - foreign_cumulative[i + 1] >= 0.5 * (end - i - 1) and (
            latin_before >= 2 and foreign_cumulative[i + 1] - foreign_cumulative[start] < latin_before)
        if not switched:
            if end - i - 1 < _MIN_SPAN:
                continue
            after = (cumulative[end] - cumulative[i + 1]) / (end - i - 1)
            if after > low or sum(len(t) for t in tokens[i + 1 : end]) < _MIN_SPAN_CHARACTERS:
                continue  # an attribution ("-- Lao Tse, Tao Te Ching") is a short span, not a payload
            if before_len < 3 or (cumulative[i] - cumulative[start]) / before_len < after + 0.2:
                continue
        found.setdefault(tokens[i], i)
    return [(i, token) for token, i in found.items()]


def _foreign_script(token: str) -> bool:
    """A token whose letters are mostly not Latin."""
    return not token.isascii() and _latin_share(token) < 0.5


def _majority_language(texts: list[str]) -> str | None:
    # 50 votes settle a corpus's main language; langdetect costs ~10 ms a text
    votes = Counter(_detect_language(t) for t in [t for t in texts if len(t) >= 40][:50])
    votes.pop(None, None)
    return votes.most_common(1)[0][0] if votes else None
