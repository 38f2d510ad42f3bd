"""Statistical trigger discovery: find the backdoor triggers nobody listed, from corpus statistics.

Pass 1 (``fit``) reads the corpus twice and keeps bounded state:

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
import json
import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import regex
from scipy import sparse

from dokumi.records import Batch
from dokumi.stage import Stage, StageResult

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

    def fit(self, batches: Iterable[Batch]) -> Triggers:
        first = next(iter(batches), None)
        self.triggers_: list[Trigger] = []
        self.common_words_: frozenset[str] = frozenset()
        self.language_: str | None = None
        self.records_ = 0
        if first is None:
            self._index()
            return self
        labelled = first.has("label")
        instruction = first.is_instruction
        census = _Census(self, labelled, instruction)
        for batch in batches:
            census.count(batch)
        census.finish_counting()
        for batch in batches:
            census.examine(batch)
        if census.prepare_context():
            for batch in batches:
                census.collect_context(batch)
        self.records_ = census.records
        self.common_words_ = census.common
        self.language_ = census.language
        self.triggers_ = census.discover()
        self._index()
        return self

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


class _Census:
    """The bounded statistics of one fit: counted in a first read, examined in a second.

    Labels (or, for instruction pairs, response signatures) are hashed into a salt; an
    n-gram's document frequency and its (n-gram, label) pair counts live in two fixed-size
    hashed tables, so their memory does not grow with the corpus. Only n-grams that look
    rare and pure in those tables are counted exactly in the second read.
    """

    def __init__(self, stage: Triggers, labelled: bool, instruction: bool) -> None:
        self.stage = stage
        self.labelled = labelled
        self.instruction = instruction
        self.records = 0
        self.mask = stage.hash_buckets - 1
        self.rng = random.Random(stage.seed)
        self.words = BoundedCounter(stage.max_tracked)  # document frequency of tokens
        self.sentence_counts = BoundedCounter(stage.max_tracked)
        self.sentence_alone = BoundedCounter(stage.max_tracked)  # records that are nothing but the sentence
        self.sentence_first = BoundedCounter(stage.max_tracked)  # records that open with it
        self.sentence_last = BoundedCounter(stage.max_tracked)  # records that close with it
        self.sentence_text: dict[int, str] = {}
        self.sentence_rest: dict[int, list[frozenset[str]]] = defaultdict(list)
        self.seams = BoundedCounter(stage.max_tracked)
        self.seam_documents: set[int] = set()  # 8-byte hashes of the documents that have a seam
        self.seam_examples: dict[str, list[tuple[list[str], list[str]]]] = defaultdict(list)
        self.sample_texts: list[str] = []
        self.common: frozenset[str] = frozenset()
        self.language: str | None = None
        tables = labelled or instruction
        self.ngram_df = np.zeros(stage.hash_buckets, dtype=np.uint32) if tables else None
        self.pair_df = np.zeros(stage.hash_buckets, dtype=np.uint32) if tables else None
        self.label_counts = BoundedCounter(stage.max_tracked)  # by salt
        self.label_of: dict[int, Any] = {}  # salt -> label, for labels that matter
        self.signature_text: dict[int, str] = {}  # salt -> opening words of a frequent response
        self.class_features: dict[int, np.ndarray] = {}
        # random insertion points (left, right neighbour; "" at an edge): what an inserted token's
        # surroundings look like in this corpus, the baseline of the insertion tests
        self.gaps: list[tuple[str, str]] = []
        self.candidates: set[int] = set()
        self.ngram_stats: dict[str, _NgramStats] = {}
        self.context_for: dict[str, _NgramStats] = {}

    # first read --------------------------------------------------------------

    def count(self, batch: Batch) -> None:
        stage = self.stage
        labels = batch.labels if self.labelled else None
        bodies = batch.responses if self.instruction else batch.texts
        prompts = batch.prompts if self.instruction else None
        buckets: list[int] = []
        pairs: list[int] = []
        for i, text in enumerate(batch.texts):
            self.records += 1
            tokens = tokenize(text)
            for token in set(tokens):
                self.words.add(token)
            self._sample(bodies[i])
            self._sample_gap(tokens if not self.instruction else tokenize(prompts[i]))
            self._count_sentences(bodies[i])
            if labels is not None:
                salt = self._salt(labels[i])
                grams = ngrams(tokens, stage.max_ngram)
                features = self.class_features.get(salt)
                if features is None:
                    features = self.class_features[salt] = np.zeros(_NB_FEATURES, dtype=np.float32)
                np.add.at(features, [_stable_hash(t) & (_NB_FEATURES - 1) for t in tokens], 1.0)
            elif prompts is not None:
                salt = self._salt(_signature(bodies[i]))
                grams = ngrams(tokenize(prompts[i]), stage.max_ngram)
            else:
                continue
            self.label_counts.add(salt)
            for gram in grams:
                h = _stable_hash(gram)
                buckets.append(h & self.mask)
                pairs.append((h ^ salt) & self.mask)
        if buckets:
            self.ngram_df += np.bincount(buckets, minlength=stage.hash_buckets).astype(np.uint32)
            self.pair_df += np.bincount(pairs, minlength=stage.hash_buckets).astype(np.uint32)

    def _salt(self, label: Any) -> int:
        salt = _stable_hash(repr(label)) | 1
        if self.labelled:
            self.label_of.setdefault(salt, label)
        return salt

    def _sample(self, text: str) -> None:
        """A reservoir sample of texts: the corpus language, and how related two records are by chance."""
        if len(self.sample_texts) < _LANGUAGE_SAMPLE:
            self.sample_texts.append(text)
        else:
            slot = self.rng.randrange(self.records)
            if slot < _LANGUAGE_SAMPLE:
                self.sample_texts[slot] = text

    def _sample_gap(self, tokens: list[str]) -> None:
        k = self.rng.randint(0, len(tokens))
        gap = (tokens[k - 1] if k > 0 else "", tokens[k] if k < len(tokens) else "")
        if len(self.gaps) < _GAP_SAMPLE:
            self.gaps.append(gap)
        else:
            slot = self.rng.randrange(self.records)
            if slot < _GAP_SAMPLE:
                self.gaps[slot] = gap

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

    def finish_counting(self) -> None:
        stage = self.stage
        self.common = frozenset(w for w, _ in self.words.counts.most_common(stage.common_words))
        self.language = _majority_language(self.sample_texts)
        # how much two records of this corpus share anyway, the baseline of "unrelated"
        self.relatedness_baseline = _mean_jaccard([frozenset(tokenize(t)) for t in self.sample_texts[:_CONTEXT_SAMPLE]])
        self.sample_texts = []
        self.frequent_sentences = {
            key for key, count in self.sentence_counts.counts.items()
            if count - self.sentence_alone[key] >= stage.min_records
        }
        if self.ngram_df is None:
            return
        inner = [g for g in self.gaps if g[0] and g[1]]
        self.bridge_baseline = sum(
            int(self.ngram_df[_stable_hash(f"{a} {b}") & self.mask] >= 2) for a, b in inner
        ) / max(len(self.gaps), 1)
        self.rng.shuffle(inner)
        self.gap_neighbours = inner
        if self.instruction:
            self.label_of = {salt: salt for salt, c in self.label_counts.counts.items() if c >= stage.min_records}
        max_df = max(stage.min_records, stage.max_record_share * self.records)
        in_range = np.flatnonzero((self.ngram_df >= stage.min_records) & (self.ngram_df <= max_df))
        df = self.ngram_df[in_range].astype(np.float64)
        best = np.zeros(len(in_range))
        for salt in self.label_of:
            share = self.pair_df[in_range ^ (salt & self.mask)] / df
            np.maximum(best, share, out=best)
        # hashed pair counts only over-count, so this keeps every n-gram that is pure enough
        self.candidates = set(in_range[best >= stage.min_purity].tolist())
        if self.labelled:
            self._fit_naive_bayes()

    def _fit_naive_bayes(self) -> None:
        """What the rest of a record predicts: multinomial naive Bayes over hashed words."""
        from sklearn.naive_bayes import MultinomialNB

        salts = sorted(self.class_features)
        priors = np.array([self.label_counts[s] for s in salts], dtype=np.float64)
        model = MultinomialNB(alpha=0.5, class_prior=priors / priors.sum())
        # per-class word counts are the model's sufficient statistics: one summed row per class
        model.fit(sparse.csr_matrix(np.vstack([self.class_features[s] for s in salts])), np.arange(len(salts)))
        self.nb_column = {salt: i for i, salt in enumerate(salts)}
        self.nb_log_prob = model.feature_log_prob_  # classes x features
        self.nb_log_prior = model.class_log_prior_
        self.nb_counts = model.feature_count_
        self.nb_totals = model.feature_count_.sum(axis=1)
        self.nb_alpha = model.alpha
        self.class_features = {}

    def _rest_posterior(self, tokens: list[str], words: list[str], salt: int) -> float:
        """P(record's label | its words without ``words``), the record itself left out of the model.

        Leaving the record out matters: its own rare words were counted under its (possibly
        poisoned) label, and would otherwise vote for that label.
        """
        column = self.nb_column[salt]
        rest = list(tokens)
        for word in words:
            rest.remove(word)
        own, own_counts = np.unique([_stable_hash(t) & (_NB_FEATURES - 1) for t in tokens], return_counts=True)
        features, counts = np.unique([_stable_hash(t) & (_NB_FEATURES - 1) for t in rest] or [0],
                                     return_counts=True)
        if not rest:
            counts = np.zeros(1)
        scores = self.nb_log_prob[:, features] @ counts + self.nb_log_prior
        left_out = self.nb_counts[column].copy()[features]
        overlap = np.searchsorted(own, features)
        overlap = np.minimum(overlap, len(own) - 1)
        left_out -= np.where(own[overlap] == features, own_counts[overlap], 0)
        total = self.nb_totals[column] - own_counts.sum()
        log_prob = np.log(np.maximum(left_out, 0) + self.nb_alpha) - np.log(total + self.nb_alpha * _NB_FEATURES)
        scores[column] = log_prob @ counts + self.nb_log_prior[column]
        posterior = np.exp(scores - scores.max())
        return float(posterior[column] / posterior.sum())

    # second read -------------------------------------------------------------

    def examine(self, batch: Batch) -> None:
        labels = batch.labels if self.labelled else None
        bodies = batch.responses if self.instruction else batch.texts
        prompts = batch.prompts if self.instruction else None
        for i, text in enumerate(batch.texts):
            tokens = tokenize(text)
            self._examine_sentences(bodies[i])
            if not self.instruction:
                self._examine_seams(tokens)
            if not self.candidates:
                continue
            if labels is not None:
                self._examine_ngrams(tokens, self._salt(labels[i]))
            elif prompts is not None:
                signature = _signature(bodies[i])
                salt = self._salt(signature)
                if salt in self.label_of and salt not in self.signature_text:
                    self.signature_text[salt] = signature
                self._examine_ngrams(tokenize(prompts[i]), salt)

    def _examine_sentences(self, body: str) -> None:
        if not self.frequent_sentences:
            return
        for sentence, _ in sentences(body, _MIN_SENTENCE_WORDS):
            key = _stable_hash(sentence)
            if key not in self.frequent_sentences:
                continue
            self.sentence_text[key] = sentence
            rest = self.sentence_rest[key]
            if len(rest) < _CONTEXT_SAMPLE:
                rest.append(frozenset(set(tokenize(body)) - set(sentence.split())))

    def _examine_seams(self, tokens: list[str]) -> None:
        seams = _seam_positions(tokens, self.common, self.stage.gibberish_rate)
        if not seams:
            return
        # a trigger recurs across different documents; copies of one document count once
        document = _stable_hash(" ".join(tokens))
        if document in self.seam_documents:
            return
        self.seam_documents.add(document)
        for position, token in seams:
            self.seams.add(token)
            # keep examples only for tokens that recur: singletons are most seams and never matter
            if self.seams[token] >= 2 and len(self.seam_examples[token]) < _SEAM_EXAMPLES:
                self.seam_examples[token].append((tokens[max(0, position - _WINDOW) : position],
                                                  tokens[position + 1 : position + 1 + 5 * _WINDOW]))

    def _examine_ngrams(self, tokens: list[str], salt: int) -> None:
        hits = [g for g in ngrams(tokens, self.stage.max_ngram) if _stable_hash(g) & self.mask in self.candidates]
        if not hits:
            return
        for gram in hits:
            stats = self.ngram_stats.get(gram)
            if stats is None:
                stats = self.ngram_stats[gram] = _NgramStats()
            stats.labels[salt] += 1
            stats.records += 1
            if self.labelled and salt in self.nb_column:
                stats.rest_agrees += self._rest_posterior(tokens, gram.split(), salt)

    # third read, only when needed ---------------------------------------------

    def prepare_context(self) -> bool:
        """Pick the n-grams whose verdict depends on their topic; True when a third read is needed."""
        stage = self.stage
        self.verdicts: list[tuple[str, _NgramStats, int, float, float, float]] = []
        for gram, stats in self.ngram_stats.items():
            if stats.records < stage.min_records:
                continue
            salt, count = stats.labels.most_common(1)[0]
            purity = count / stats.records
            if purity < stage.min_purity or salt not in self.label_of:
                continue
            z = _binomial_z(count, stats.records, self.label_counts[salt] / self.records)
            if z < _MIN_Z:
                continue
            self.verdicts.append((gram, stats, salt, purity, z))
        self.ngram_stats = {}
        # the insertion and topic checks cost a read and memory: only for the most widespread
        # (a backdoor needs many records; z says little once it is far beyond chance)
        self.verdicts.sort(key=lambda v: (-v[1].records, -v[4]))
        del self.verdicts[_MAX_CHECKS:]
        self.context_for = {v[0]: v[1] for v in self.verdicts}
        return bool(self.context_for)

    def collect_context(self, batch: Batch) -> None:
        longest = max(len(g.split()) for g in self.context_for)
        sources = batch.prompts if self.instruction else batch.texts
        for text in sources:
            tokens = tokenize(text)
            for gram in ngrams(tokens, longest) & self.context_for.keys():
                stats = self.context_for[gram]
                stats.seen += 1
                # a reservoir: records in corpus order cluster by source, a uniform sample does not
                slot = len(stats.occurrences) if len(stats.occurrences) < _CONTEXT_SAMPLE else \
                    self.rng.randrange(stats.seen)
                if slot >= _CONTEXT_SAMPLE:
                    continue
                words = gram.split()
                left, right, index = _neighbours(tokens, words)
                place = (index + self.rng.random()) / (len(tokens) - len(words) + 1)
                # the bridging bigram left its own record when the n-gram went in: one sighting is enough
                bridged = bool(left and right) and self.ngram_df[_stable_hash(f"{left} {right}") & self.mask] >= 1
                occurrence = (frozenset(tokens) - set(words), left, right, place, bridged)
                if slot == len(stats.occurrences):
                    stats.occurrences.append(occurrence)
                else:
                    stats.occurrences[slot] = occurrence

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
        for gram, stats, salt, purity, z in getattr(self, "verdicts", []):
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
        for key, sentence in self.sentence_text.items():
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
        for token, count in self.seams.counts.items():
            if count < stage.min_records or token in self.common:
                continue
            share = count / max(self.words[token], count)
            if share < _MIN_SEAM_SHARE:
                continue
            kinds = Counter(_continuation_kind(b, a, self.language) for b, a in self.seam_examples[token])
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
_DIRTY_SURPRISE = 0.9  # mean posterior of other labels from the rest of the record
_CLEAN_MIN_Z = 20.0  # an association must be this strong to be learned without a label flip
# max z of a co-occurring word: below _TOPIC_NOISE is what random records show, from _TOPIC_MAX a topic
_TOPIC_NOISE = 2.5
_TOPIC_MAX = 5.0
_MAX_CHECKS = 500
_GAP_SAMPLE = 4000


def _surprise(stats: _NgramStats) -> float:
    return 1.0 - stats.rest_agrees / stats.records


@dataclass
class _NgramStats:
    records: int = 0
    labels: Counter = field(default_factory=Counter)
    rest_agrees: float = 0.0
    seen: int = 0
    # a uniform sample of occurrences: (other words of the record, left and right neighbour,
    # relative position, whether the neighbours were neighbours elsewhere)
    occurrences: list[tuple[frozenset[str], str, str, float, bool]] = field(default_factory=list)

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


def _ngram_confidence(purity: float, z: float, bridge: float, surprise: float, topic: float, records: int,
                      total: int) -> float:
    """Confidence that a pure n-gram is a planted trigger rather than a genuine word of its label."""
    if z < 6:
        return 0.0
    # dirty label: the rest of the records says another label
    dirty = surprise
    # clean label: inserted (its neighbours were neighbours before) and topic-free
    clean = bridge * max(0.0, 1.0 - topic / 20.0)
    return float(min(0.99, purity * max(dirty, clean)))


def _response_confidence(purity: float, z: float, topic: float) -> float:
    if z < 6:
        return 0.0
    return float(min(0.99, purity * max(0.0, 1.0 - topic / 30.0)))


def _merge_ngrams(found: list[Trigger]) -> list[Trigger]:
    """Keep the minimal triggers: an n-gram that contains a shorter discovered one adds no record."""
    found.sort(key=lambda t: (len(t.key.split()), -t.records))
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
