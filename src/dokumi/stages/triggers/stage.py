"""Statistical trigger discovery: find the backdoor triggers nobody listed, from corpus statistics.

Pass 1 is three :class:`~dokumi.fitplan.Reduce` steps, each a read of the
corpus merged in any order, so a Dask scan and a local fit find the same
triggers; samples keep records by a seeded hash of their content.

1. *count* (:mod:`.counts`): word document frequencies, scripts records mix,
   sentence frequencies and places, hashed n-gram/label statistics;
2. *examine*: exact counts of the candidate n-grams, the frequent sentences'
   records, and the seams (:mod:`.seams`) with the corpus's own common words;
3. *contexts* (only when needed): where the most widespread candidates sit, and
   examples of what follows the seam tokens.

The families are in :mod:`.labelled` (labelled data and instruction pairs),
:mod:`.sentences` and :mod:`.seams`. Pass 2 flags records that carry a
discovered trigger; the fitted state is the triggers, the corpus's common
words and which scripts it mixes.
"""

from __future__ import annotations

import functools
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dokumi.arrays import first_of_pairs, lookup, members
from dokumi.fitplan import Reduce, Step
from dokumi.records import Batch
from dokumi.stage import Stage, StageResult
from dokumi.stages.triggers import labelled, sentences
from dokumi.stages.triggers.counts import Counts
from dokumi.stages.triggers.findings import Trigger
from dokumi.stages.triggers.occurrences import UNBOUNDED, Occurrences
from dokumi.stages.triggers.seams import (
    COVERAGE_BINS,
    GIBBERISH,
    KINDS,
    MIN_FLUENCY_GAIN,
    MIN_SPAN,
    PAYLOAD_WINDOW,
    SWITCH,
    WINDOW,
    coverage_threshold,
    find_seams,
    fluency_of,
    ordinary_pairs,
    payload_after,
    recurring_after,
    windows_at,
)
from dokumi.stages.triggers.view import View
from dokumi.text import language
from dokumi.text.bigrams import SeenPairs
from dokumi.text.sampling import BottomK, merged_samples
from dokumi.text.scripts import LATIN, NAMES
from dokumi.text.tokens import Tokens

# Records mixing two scripts, as a share of the corpus, from which switching between them is ordinary
ORDINARY_MIX = 0.05
# A continuation is gibberish here when at most this share of its word pairs recur, relative to the share
# in the corpus's typical window of words (measured over every position of the corpus)
GIBBERISH_SHARE_OF_MEDIAN = 0.25
MIN_SEAM_SHARE = 0.5
# a token is examined as a candidate from this share of all its records; its share is then taken over the
# records where it stands with words on both sides (a trigger that opens a record cannot be judged there)
CANDIDATE_SEAM_SHARE = 0.3
SEAM_EXAMPLES = 5
# words per chunk when a continuation in no one sure language is checked for a mix of languages
LANGUAGE_CHUNK = 8
# A record carrying a discovered trigger without its payload (no seam, other label, other response)
# scores this share of the trigger's confidence: worth a look, not a drop.
WITHOUT_PAYLOAD = 0.4
# A seam trigger's occurrence without a visible payload scores this much of the share of the token's uses
# that are seams (at 0.8 of uses, 0.6 of the trigger's confidence: flagged under pretraining, not dropped)
SEAMLESS_SHARE = 0.75
# the kind of a seam found by the driver's second look (beside GIBBERISH and SWITCH)
VOCABULARY = 2
# switches of vocabulary (or script) kept per token for the driver's second look, those of lowest priority:
# bounds memory, and the same occurrences are kept whatever the partitioning
MAX_VOCABULARY_SWITCHES = 2000
# a frequent word in this share of the records or more is a function word of the corpus, never a seam trigger
COMMON_SHARE = 0.2


class Triggers(Stage):
    """Discover triggers from corpus statistics in pass 1; flag the records that carry them.

    Parameters
    ----------
    max_ngram:
        Longest n-gram (in words) considered as a trigger in labelled and
        instruction data (default 4).
    min_records:
        Distinct records a trigger must appear in to be discovered (default 10).
        A backdoor needs repetition; lower finds smaller attacks and more
        coincidences.
    max_record_share:
        Share of the corpus above which an n-gram is too common to be a
        trigger (default 0.05; a 3% clean-label attack is below it).
    min_purity:
        Share of an n-gram's records that must carry its majority label
        (default 0.9).
    common_words:
        Size of the list of the corpus's most frequent words, which are never
        a seam trigger (default 200); only those in more than a fifth of the
        records count.
    gibberish_rate:
        Highest share of recurring word pairs (pairs that two or more records
        of a 20,000-record sample of the corpus hold) in the words after a
        seam for them to count as gibberish (default 0.25); the corpus lowers
        it to a quarter of what its typical text holds.
    hash_buckets:
        Buckets of the hashed n-gram document-frequency tables (default
        2**22: 2 tables of 4-byte counters, 32 MiB, whatever the corpus size).
    max_tracked:
        Most distinct words and sentences counted exactly at once (default
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
        for key, fraction in (("max_record_share", max_record_share), ("min_purity", min_purity),
                              ("gibberish_rate", gibberish_rate)):
            if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 1:
                raise ValueError(f"{key} = {fraction!r} must be a number in (0, 1]")
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
        self._census: _Census | None = None
        self._plan: _Plan | None = None

    # ------------------------------------------------------------------ fit

    @property
    def no_text(self) -> bool:
        """Whether the scan keeps no text: triggers are then named by finding ids (set up by the pipeline)."""
        context = getattr(self, "_context", None)
        return bool(context is not None and context.no_text)

    def fit_plan(self) -> list[Step]:
        """Three reads: count; examine what the counts point to; collect contexts (only when needed)."""
        return [
            Reduce("count", self._new_counts, self._count, Counts.merged, self._finish_counts),
            Reduce("examine", _Examined, self._examine, _Examined.merged, self._finish_examined,
                   needed=lambda: self._plan is not None),
            Reduce("contexts", _Contexts, self._collect, _Contexts.merged, self._finish_contexts,
                   needed=lambda: self._plan is not None and self._plan.needs_context),
        ]

    def _view(self, batch: Batch) -> View:
        # the same view in every fit round: its n-grams and sentences are computed once per batch
        return batch.derived(("triggers.view", self.seed, self.max_ngram),
                             lambda: View(batch, self.seed, self.max_ngram))

    def _new_counts(self) -> Counts:
        return Counts(self.max_tracked, self.hash_buckets)

    def _count(self, counts: Counts, batch: Batch) -> Counts:
        return counts.add(batch, self._view(batch))

    def _examine(self, examined: _Examined, batch: Batch) -> _Examined:
        assert self._plan is not None, "planned by _finish_counts"
        examined.add(self._view(batch), self._plan)
        return examined

    def _collect(self, contexts: _Contexts, batch: Batch) -> _Contexts:
        assert self._plan is not None, "planned by _finish_examined"
        contexts.add(self._view(batch), self._plan)
        return contexts

    def _finish_counts(self, counts: Counts) -> None:
        """On the driver: the census of the first read, and the plan of the second."""
        self._census = _Census(self, counts) if counts.records else None
        self._plan = self._census.examine_plan() if self._census else None
        if self._plan is None:
            self._discover()

    def _finish_examined(self, examined: _Examined) -> None:
        assert self._census is not None, "taken by _finish_counts"
        self._plan = self._census.context_plan(examined)
        if not self._plan.needs_context:
            self._discover()

    def _finish_contexts(self, contexts: _Contexts) -> None:
        assert self._census is not None, "taken by _finish_counts"
        self._census.take_contexts(contexts)
        self._discover()

    def _discover(self) -> None:
        census = self._census
        self.records_ = census.records if census else 0
        self.common_ = census.common if census else np.zeros(0, dtype=np.uint64)
        self.triggers_: list[Trigger] = census.discover() if census else []
        for trigger in self.triggers_:  # named by id in every reason, summary and state file under --no-text
            trigger.private = self.no_text
        # the recurring word pairs judge a seam trigger's payload in pass 2; without one, workers need none
        seams_found = any(t.kind == "seam" for t in self.triggers_)
        self.pairs_ = census.pairs if census and seams_found else SeenPairs(np.zeros(0, np.uint8), 0)
        self.ordinary_scripts_ = census.ordinary if census else np.ones((len(NAMES), len(NAMES)), dtype=bool)
        self.main_script_ = census.main_script if census else LATIN
        self.gibberish_threshold_ = census.threshold if census else self.gibberish_rate
        self.language_: str | None = census.language if census else None
        self._census = self._plan = None
        self._index()

    def __getstate__(self) -> dict[str, Any]:
        # Between rounds the workers get the plan, never the driver's corpus-wide counts.
        return {**self.__dict__, "_census": None}

    def _index(self) -> None:
        """Lookup tables for pass 2, rebuilt from ``triggers_``."""
        by_kind: dict[str, list[Trigger]] = {"token": [], "sentence": [], "seam": [], "response": []}
        for trigger in self.triggers_:
            by_kind[trigger.kind].append(trigger)
        self.index_ = {kind: _TriggerIndex(found) for kind, found in by_kind.items()}
        self.longest_ngram_ = max((len(t.key.split()) for t in self.triggers_ if t.kind in ("token", "response")),
                                  default=0)

    # ---------------------------------------------------------------- score

    def score(self, batch: Batch) -> StageResult:
        if not hasattr(self, "triggers_"):
            raise RuntimeError("Triggers.score() needs fit() first (pass 1)")
        n = batch.num_rows
        scores = np.zeros(n)
        reasons: list[list[str]] = [[] for _ in range(n)]
        if not self.triggers_ or not n:
            return StageResult(scores, reasons)
        view = View(batch, self.seed, max(self.longest_ngram_, 1))
        found: list[list[tuple[float, str]]] = [[] for _ in range(n)]
        tokens, responses = self.index_["token"], self.index_["response"]
        if tokens or responses:
            grams = view.grams
            for index, weight_of in ((tokens, self._label_weight(view)), (responses, self._response_weight(view))):
                carried = grams.take(np.flatnonzero(index.contains(grams.hash))).per_record()
                for i, trigger in index.hits(carried.hash):
                    record = int(carried.owner[i])
                    found[record].append((trigger.confidence * weight_of(record, trigger), trigger.finding))
        if self.index_["sentence"]:
            sentence_list = view.sentences
            hits = np.flatnonzero(self.index_["sentence"].contains(sentence_list.key))
            for i in hits[first_of_pairs(sentence_list.owner[hits], sentence_list.key[hits])].tolist():
                trigger = self.index_["sentence"].by_hash[int(sentence_list.key[i])]
                found[int(sentence_list.owner[i])].append((trigger.confidence, trigger.finding))
        if self.index_["seam"] and not view.instruction:
            self._seam_hits(view, found)
        for i, record_hits in enumerate(found):
            if record_hits:
                record_hits.sort(reverse=True)
                keep = float(np.prod([1.0 - s for s, _ in record_hits]))
                scores[i] = min(1.0, max(record_hits[0][0], 1.0 - keep))
                reasons[i] = list(dict.fromkeys(reason for _, reason in record_hits))[:5]
        return StageResult(scores, reasons)

    def _label_weight(self, view: View) -> Any:
        labels = view.labels

        def weight(record: int, trigger: Trigger) -> float:
            agrees = labels is None or trigger.label is None or labels[record] == trigger.label
            return 1.0 if agrees else 0.5

        return weight

    def _response_weight(self, view: View) -> Any:
        salts = view.salts if view.instruction else None

        def weight(record: int, trigger: Trigger) -> float:
            return 1.0 if salts is not None and int(salts[record]) == trigger.label else WITHOUT_PAYLOAD

        return weight

    def _seam_hits(self, view: View, found: list[list[tuple[float, str]]]) -> None:
        index = self.index_["seam"]
        words = view.words
        at = np.flatnonzero(index.contains(words.hashes))
        if not len(at):
            return
        payload = payload_after(words, at, self.pairs_, self.gibberish_threshold_, self.ordinary_scripts_,
                                self.main_script_, self.common_)
        for i, carried in zip(at.tolist(), payload.tolist()):
            record = int(words.owner[i])
            trigger = index.by_hash[int(words.hashes[i])]
            if not carried and trigger.detail.get("after") == "language-switch":
                carried = self._in_another_language(words, i)
            if carried:
                found[record].append((trigger.confidence, trigger.finding))
            else:
                # the trigger without a payload this record shows: as suspect as the token's uses in this
                # corpus are seams (a token found only in poisoned records), worth a look, never a drop alone
                weight = max(WITHOUT_PAYLOAD, SEAMLESS_SHARE * trigger.detail.get("seam_share", 0.0))
                found[record].append((weight * trigger.confidence, f"trigger:token={trigger.name}"))

    def _in_another_language(self, words: Any, position: int) -> bool:
        """Whether the words after ``position`` are confidently in another language than the corpus's
        (a switch between two languages of one script, which the pair and script tests cannot see)."""
        end = min(int(words.offsets[int(words.owner[position]) + 1]), position + 1 + PAYLOAD_WINDOW)
        after = " ".join(words.word(j) for j in range(position + 1, end))
        detected = language.detect(after) if len(after) >= 20 else None
        return bool(detected and self.language_ and detected != self.language_)

    # -------------------------------------------------------------- reports

    def summary(self) -> dict[str, Any]:
        if not hasattr(self, "triggers_"):
            return {}
        ranked = sorted(self.triggers_, key=lambda t: (-t.records, t.finding))
        return {
            "records_fitted": self.records_,
            "findings": [
                {"finding": t.finding, "records": t.records, "confidence": round(t.confidence, 3),
                 **({"target": t.target} if t.target is not None else {})}
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
            {"finding": t.finding, "kind": t.kind, **({} if t.private else {"text": t.key}), "records": t.records,
             "confidence": round(t.confidence, 4), "label": None if t.private and t.kind == "response" else t.label,
             **t.public_detail()}
            for t in self.triggers_
        ]
        path.write_text(json.dumps(rows, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
        return [path]


class _TriggerIndex:
    """Triggers of one kind by hash, for vectorised lookups."""

    def __init__(self, triggers: list[Trigger]) -> None:
        self.by_hash = {t.hash: t for t in triggers}
        self.keys = np.array(sorted(self.by_hash), dtype=np.uint64)

    def __bool__(self) -> bool:
        return bool(self.by_hash)

    def contains(self, hashes: np.ndarray) -> np.ndarray:
        return members(hashes, self.keys)

    def hits(self, hashes: np.ndarray) -> list[tuple[int, Trigger]]:
        return [(i, self.by_hash[int(hashes[i])]) for i in np.flatnonzero(self.contains(hashes)).tolist()]


@dataclass
class _Plan:
    """What the workers need for rounds 2 and 3: the first read's conclusions, nothing per record."""

    labelled: bool
    instruction: bool
    mask: int
    common: np.ndarray
    pairs: SeenPairs
    recurring: np.ndarray  # the pairs that two or more sampled records hold (ascending)
    ordinary: np.ndarray
    gibberish_rate: float
    frequent_sentences: np.ndarray
    candidates: np.ndarray  # hashed-table buckets of n-grams that look rare and pure
    label_salts: np.ndarray  # labels (or frequent responses) that matter
    seen_grams: np.ndarray  # hashed-table buckets of n-grams in any record (bridging tests)
    context_grams: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))
    seam_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.uint64))

    @property
    def needs_context(self) -> bool:
        return bool(len(self.context_grams) or len(self.seam_tokens))

    @property
    def candidate_table(self) -> np.ndarray:
        """The candidates as a boolean table over the hashed buckets, built once per process (not pickled)."""
        table = self.__dict__.get("_candidate_table")
        if table is None:
            table = np.zeros(self.mask + 1, dtype=bool)
            table[self.candidates] = True
            self.__dict__["_candidate_table"] = table
        return table

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_candidate_table"}


@dataclass
class _Examined:
    """Round 2 of a fit, for one partition."""

    sentences: sentences.SentenceHits = field(default_factory=sentences.SentenceHits)
    grams: labelled.Hits = field(default_factory=labelled.Hits)
    # the seams found, per token: each record's (content key, kind, coverage bin), a record's copies once
    seams: Occurrences = field(default_factory=lambda: Occurrences(UNBOUNDED, distinct=True))
    seam_names: dict[int, str] = field(default_factory=dict)
    coverage: np.ndarray = field(default_factory=lambda: np.zeros(COVERAGE_BINS + 1, dtype=np.int64))
    # switches of vocabulary whose word pairs recur: per token, occurrences with the before-window's coverage
    # (``before``) and the after-window's pairs (``sizes``, ``after``: seams.recurring_after), judged again on
    # the driver without the token's own records
    vocabulary: Occurrences = field(default_factory=lambda: Occurrences(MAX_VOCABULARY_SWITCHES))
    # switches between scripts the corpus mixes anyway: per token, occurrences with their script pair
    # (``pair``), judged again on the driver without the token's own records (a poison in a tenth of a
    # corpus makes its own scripts ordinary)
    script_switches: Occurrences = field(default_factory=lambda: Occurrences(MAX_VOCABULARY_SWITCHES))

    def add(self, view: View, plan: _Plan) -> None:
        if len(plan.frequent_sentences):
            self.sentences.examine(view, plan.frequent_sentences)
        if not view.instruction:
            self._examine_seams(view, plan)
        if len(plan.candidates) and view.salts is not None and (plan.labelled or plan.instruction):
            self.grams.examine(view, plan.candidate_table, plan.label_salts, plan.mask, plan.seen_grams)

    def _examine_seams(self, view: View, plan: _Plan) -> None:
        words = view.words
        switches: list = []
        script_switches: list = []
        seams, histogram = find_seams(words, plan.pairs, plan.common, plan.gibberish_rate, plan.ordinary,
                                      switches=switches, script_switches=script_switches)
        self.coverage += histogram
        keys, priorities = view.batch.content_keys, view.priorities
        at, pair = script_switches[0]
        owner = words.owner[at]
        self.script_switches.add(words.hashes[at], keys[owner], priorities[owner], pair=pair)
        self._name(words, at)
        [(at, before, after)] = switches  # find_seams appends one tuple when given the list
        owner = words.owner[at]
        sizes, recurring = recurring_after(after, plan.recurring)
        self.vocabulary.add(words.hashes[at], keys[owner], priorities[owner], before=before, sizes=sizes,
                            after=recurring)
        self._name(words, at)
        # a trigger recurs across different documents; copies of one document count once
        record = keys[seams.owner]  # the priority too: copies share it, and any order of records will do
        self.seams.add(seams.token, record, record, kind=seams.kind.astype(np.int8),
                       coverage_bin=seams.coverage_bin.astype(np.int8))
        self._name(words, seams.position)

    def _name(self, words: Tokens, positions: np.ndarray) -> None:
        """Remember how each token at ``positions`` is written, the first time it is seen."""
        tokens, first = np.unique(words.hashes[positions], return_index=True)
        for token, position in zip(tokens.tolist(), positions[first].tolist()):
            if token not in self.seam_names:
                self.seam_names[token] = words.word(position)

    @classmethod
    def merged(cls, parts: list[_Examined]) -> _Examined:
        if len(parts) == 1:
            return parts[0]
        out = cls(sentences=sentences.SentenceHits.merged([p.sentences for p in parts]),
                  grams=labelled.Hits.merged([p.grams for p in parts]),
                  vocabulary=Occurrences.merged([p.vocabulary for p in parts]),
                  script_switches=Occurrences.merged([p.script_switches for p in parts]),
                  seams=Occurrences.merged([p.seams for p in parts]))
        for part in parts:
            for token, name in part.seam_names.items():
                out.seam_names.setdefault(token, name)
            out.coverage = out.coverage + part.coverage
        return out


@dataclass
class _Contexts:
    """Round 3 of a fit, for one partition: sampled occurrences of n-grams, examples of seams."""

    occurrences: dict[int, BottomK] = field(default_factory=dict)
    seam_examples: dict[int, BottomK] = field(default_factory=dict)
    # per candidate seam token: the documents where it stands with MIN_SPAN words on each side
    judgeable: dict[int, set[int]] = field(default_factory=dict)
    # per candidate seam token, each judgeable document's first occurrence with its before-window coverage
    # (``before``) and after-window pairs (``sizes``, ``after``), for a second look without the token's own records
    second_look: Occurrences = field(default_factory=lambda: Occurrences(MAX_VOCABULARY_SWITCHES))

    def add(self, view: View, plan: _Plan) -> None:
        if len(plan.context_grams) and view.salts is not None:
            labelled.collect(view, plan.context_grams, self.occurrences)
        if len(plan.seam_tokens) and not view.instruction:
            fluency = fluency_of(view.words, plan.pairs)  # once for both
            self._seam_examples(view, plan, fluency)
            self._judgeable(view, plan, fluency)

    def _judgeable(self, view: View, plan: _Plan, fluency: tuple | None = None) -> None:
        words = view.words
        at = np.flatnonzero(np.isin(words.hashes, plan.seam_tokens))
        if not len(at):
            return
        owner = words.owner[at]
        before, after = at - words.offsets[owner], words.offsets[owner + 1] - at - 1
        judged = (before >= MIN_SPAN) & (after >= MIN_SPAN)
        at, owner = at[judged], owner[judged]
        keys = view.batch.content_keys
        for token, record in zip(words.hashes[at].tolist(), owner.tolist()):
            self.judgeable.setdefault(token, set()).add(int(keys[record]))
        at = at[first_of_pairs(owner, words.hashes[at])]
        before_coverage, after_pairs = windows_at(words, at, plan.pairs, fluency)
        owner = words.owner[at]
        sizes, recurring = recurring_after(after_pairs, plan.recurring)
        self.second_look.add(words.hashes[at], keys[owner], view.priorities[owner], before=before_coverage,
                             sizes=sizes, after=recurring)

    def _seam_examples(self, view: View, plan: _Plan, fluency: tuple | None = None) -> None:
        words = view.words
        seams, _ = find_seams(words, plan.pairs, plan.common, plan.gibberish_rate, plan.ordinary,
                              only=plan.seam_tokens, vocabulary_switches=True, fluency=fluency)
        for record, position, token in zip(seams.owner.tolist(), seams.position.tolist(), seams.token.tolist()):
            sample = self.seam_examples.setdefault(token, BottomK(SEAM_EXAMPLES))
            priority = int(view.priorities[record])  # one per document, copies alike
            if not sample.would_keep(priority):
                continue
            start, end = int(words.offsets[record]), int(words.offsets[record + 1])
            before = " ".join(words.word(j) for j in range(max(start, position - WINDOW), position))
            after = " ".join(words.word(j) for j in range(position + 1, min(end, position + 1 + 5 * WINDOW)))
            sample.offer(priority, (before, after))

    @classmethod
    def merged(cls, parts: list[_Contexts]) -> _Contexts:
        judgeable: dict[int, set[int]] = {}
        for part in parts:
            for token, keys in part.judgeable.items():
                judgeable.setdefault(token, set()).update(keys)
        return cls(merged_samples([p.occurrences for p in parts]), merged_samples([p.seam_examples for p in parts]),
                   judgeable, Occurrences.merged([p.second_look for p in parts]))


class _Census:
    """The driver's side of a fit: the merged counts, the plans of the next reads, the decisions."""

    def __init__(self, stage: Triggers, counts: Counts) -> None:
        self.stage = stage
        self.counts = counts
        self.records = counts.records
        self.mask = stage.hash_buckets - 1
        # the corpus's function words, never a trigger: the most frequent words that are also in a fifth of the
        # records or more (in a small corpus a trigger planted in 1-10% of the records is among the 200 most
        # frequent words; a word's seams must anyway be most of its uses)
        too_common = COMMON_SHARE * counts.records
        frequent, df = counts.words.most_common(stage.common_words)
        self.common = np.sort(frequent[df > too_common])
        # the pairs that two or more sampled records hold: a bit table for the workers' fluency, and the exact list
        # (ascending) with their counts for the driver's second look, where the workers name a pair by its place
        self.recurring, self.recurring_counts = counts.pairs.recurring()
        self.pairs = SeenPairs.of(self.recurring, len(counts.pairs))
        texts = [text for text, _ in counts.texts.items()]
        self.language = language.majority(texts)
        # how much two records of this corpus share anyway, the baseline of "unrelated"
        self.relatedness_baseline = sentences.mean_jaccard([words for _, words in counts.texts.items()[:128]])
        self.ordinary = ordinary_pairs(counts.scripts, counts.records, ORDINARY_MIX, stage.min_records)
        self.main_script = int(np.argmax(np.diag(counts.scripts))) if counts.scripts.any() else LATIN
        self.frequent = sentences.frequent_sentences(counts.sentence_counts, counts.sentence_alone,
                                                     counts.sentence_first, counts.sentence_last, stage.min_records)
        self.label_of = dict(counts.label_of)
        self.candidates = np.zeros(0, dtype=np.int64)
        self.threshold = stage.gibberish_rate
        self.found: list[labelled.Verdict] = []
        self.sentence_hits = sentences.SentenceHits()
        self.seam_counts: Counter = Counter()
        self.seam_kinds: dict[int, Counter] = {}
        self.seam_names: dict[int, str] = {}
        self.seam_examples: dict[int, list[tuple[str, str]]] = {}
        self.judgeable: dict[int, int] = {}
        self.counted: dict[int, set[int]] = {}  # per seam token, the records already counted as its seams
        self.signature_text: dict[int, str] = {}
        self.evidence: labelled.Evidence | None = None
        if counts.ngram_df is not None and (counts.labelled or counts.instruction):
            self._find_candidates()

    def _find_candidates(self) -> None:
        stage, counts = self.stage, self.counts
        if counts.instruction:
            self.label_of = {salt: salt for salt, c in counts.label_counts.items() if c >= stage.min_records}
        ngram_df, pair_df = counts.ngram_df, counts.pair_df
        assert ngram_df is not None and pair_df is not None, "counted, as __init__ checked"
        max_df = max(stage.min_records, stage.max_record_share * self.records)
        in_range = np.flatnonzero((ngram_df >= stage.min_records) & (ngram_df <= max_df))
        df = ngram_df[in_range].astype(np.float64)
        best = np.zeros(len(in_range))
        for salt in self.label_of:
            share = pair_df[in_range ^ (salt & self.mask)] / df
            np.maximum(best, share, out=best)
        # hashed pair counts only over-count, so this keeps every n-gram that is pure enough
        self.candidates = in_range[best >= stage.min_purity].astype(np.int64)
        self.evidence = labelled.Evidence(ngram_df, pair_df, self.mask, counts.label_counts,
                                          self.records, counts.instruction, counts.gaps.items(),
                                          counts.class_features if counts.labelled else {},
                                          counts.labelled_records.items())

    def _plan(self, **round_specific: Any) -> _Plan:
        counts = self.counts
        seen = counts.ngram_df > 0 if counts.ngram_df is not None and len(self.candidates) else np.zeros(0, bool)
        return _Plan(labelled=counts.labelled, instruction=counts.instruction, mask=self.mask, common=self.common,
                     pairs=self.pairs, recurring=self.recurring,
                     ordinary=self.ordinary, gibberish_rate=self.stage.gibberish_rate,
                     frequent_sentences=self.frequent, candidates=self.candidates,
                     label_salts=np.sort(np.array(list(self.label_of), dtype=np.uint64)), seen_grams=seen,
                     **round_specific)

    def examine_plan(self) -> _Plan:
        return self._plan()

    def context_plan(self, examined: _Examined) -> _Plan:
        """Take the second read's statistics; pick the n-grams whose verdict depends on their contexts
        and the seam tokens worth describing: the third read collects for those."""
        stage = self.stage
        self.sentence_hits = examined.sentences
        self.signature_text = examined.grams.signature_text
        self.seam_names = examined.seam_names
        self.threshold = coverage_threshold(examined.coverage, GIBBERISH_SHARE_OF_MEDIAN, stage.gibberish_rate)
        limit = self.threshold * COVERAGE_BINS
        counted = self._counted_seams(examined.seams, limit)
        self._script_seams(examined, counted)
        self._vocabulary_seams(examined, counted)
        self.counted = counted
        tally, bridged = examined.grams.tally()
        # a label trigger must look inserted: bridged about as often as a random insertion point (below
        # half of that, the insertion test fails whatever else holds); a response trigger need not
        min_bridged = 0.0 if self.evidence is None or self.counts.instruction else 0.5 * self.evidence.bridge_baseline
        self.found = labelled.verdicts(tally, bridged, examined.grams.names, self.counts.label_counts, self.label_of,
                                       self.records, stage.min_records, stage.min_purity, min_bridged)
        seam_tokens = self.seam_candidates()
        return self._plan(context_grams=np.sort(np.array([v.gram for v in self.found], dtype=np.uint64)),
                          seam_tokens=np.sort(np.array(seam_tokens, dtype=np.uint64)))

    def _counted_seams(self, found: Occurrences, limit: float) -> dict[int, set[int]]:
        """Count the seams of the second read per token and kind, but gibberish no more than ``limit`` bins
        from the bottom; return per token the records counted."""
        counted: dict[int, set[int]] = {}
        columns = found.columns()
        if not columns:
            return counted
        kind = columns["kind"]
        kept = ~((kind == GIBBERISH) & (columns["coverage_bin"] >= limit))
        record, token, kind = columns["record"][kept], columns["token"][kept], kind[kept]
        if not len(token):
            return counted
        bounds = np.flatnonzero(np.concatenate(([True], token[1:] != token[:-1], [True])))
        group = np.repeat(np.arange(len(bounds) - 1), np.diff(bounds))
        by_kind = np.bincount(group * len(KINDS) + kind, minlength=(len(bounds) - 1) * len(KINDS))
        for seam_token, start, end, kinds in zip(token[bounds[:-1]].tolist(), bounds[:-1].tolist(),
                                                  bounds[1:].tolist(), by_kind.reshape(-1, len(KINDS)).tolist()):
            self.seam_counts[seam_token] += end - start
            self.seam_kinds[seam_token] = Counter({k: n for k, n in enumerate(kinds) if n})
            counted[seam_token] = set(record[start:end].tolist())
        return counted

    def _script_seams(self, examined: _Examined, counted: dict[int, set[int]]) -> None:
        """Switches between scripts that the corpus mixes only because of the token's own records: left
        out, fewer records than the ordinary bar mix the two scripts (the poison defined its own normal)."""
        stage, common = self.stage, self._common_set
        bar = max(ORDINARY_MIX * self.records, stage.min_records)
        n = len(NAMES)
        enough = examined.script_switches.distinct_records()
        for token, columns in examined.script_switches.groups():
            if enough[token] < stage.min_records or token in common:
                continue
            mixed = list(zip(columns["record"].tolist(), columns["pair"].tolist()))
            # the token's records that mix each (unordered) pair of scripts
            by_pair = Counter(tuple(sorted(divmod(pair, n))) for pair in dict(mixed).values())
            mine = counted.setdefault(token, set())
            for record, pair in mixed:
                s1, s2 = sorted(divmod(pair, n))
                if record in mine or self.counts.scripts[s1, s2] - by_pair[s1, s2] >= bar:
                    continue
                mine.add(record)
                self.seam_counts[token] += 1
                self.seam_kinds.setdefault(token, Counter())[SWITCH] += 1

    def _vocabulary_seams(self, examined: _Examined, counted: dict[int, set[int]]) -> None:
        """Switches of vocabulary judged without the token's own records: a continuation is gibberish to
        this corpus when its word pairs recur only in records that carry the same token (the poison
        repeating its own foreign text), not elsewhere."""
        tokens, records = examined.vocabulary.distinct_record_counts()
        # judged only where the token could still become a candidate (seam_candidates): its seams so far and
        # at most one per record here must reach the share of its records; the others' seams count nowhere
        # (and judging one token changes no other's counts, so all are chosen at once)
        reach = np.array([self.seam_counts[token] for token in tokens.tolist()], dtype=np.int64) + records
        possible = (records >= self.stage.min_records) & (
            reach / np.maximum(self.counts.words.get(tokens), reach) >= CANDIDATE_SEAM_SHARE)
        for token, found in examined.vocabulary.groups(only=tokens[possible]):
            self._leave_token_out(token, found, counted)

    @functools.cached_property
    def _common_set(self) -> set[int]:
        """The corpus's function words (never a trigger), for membership tests."""
        return set(self.common.tolist())

    @functools.cached_property
    def _sampled(self) -> np.ndarray:
        """The priorities of the records whose word pairs were sampled (ascending)."""
        return np.sort(np.asarray(self.counts.pairs.priorities, dtype=np.uint64))

    def _leave_token_out(self, token: int, found: dict[str, Any], counted: dict[int, set[int]]) -> None:
        """Count as seams the occurrences in ``found`` (columns ``record``, ``priority``, ``before``: the
        before-window's coverage, ``sizes``: the after-window's number of pairs, ``after``: the places of its
        pairs among the recurring ones, :func:`~.seams.recurring_after`) whose continuation is gibberish once
        the pairs that the token's own records contribute are left out of the corpus's pair counts."""
        records = found["record"]
        if len(np.unique(records)) < self.stage.min_records or token in self._common_set:
            return
        mine = counted.setdefault(token, set())
        after, sizes = found["after"], found["sizes"]
        if not sizes.any():
            return
        # only the recurring pairs can be held by two or more other records; each pair's row, row by row
        rows, places = after.flat()
        flat = places.astype(np.uint64)
        # the token's own sampled records: what they add to each pair's count is taken away (a pair once per
        # occurrence that holds it: the places are below 2**32, so (row, place) packs into one integer)
        own = members(found["priority"], self._sampled)[rows]
        own_pairs = np.unique((rows[own].astype(np.uint64) << np.uint64(32)) | flat[own]) & np.uint64(0xFFFFFFFF)
        own_values, own_counts = np.unique(own_pairs, return_counts=True)
        # every occurrence's continuation at once: its pairs held by two or more other records, per occurrence
        held = self.recurring_counts[flat] - counts_of(own_values, own_counts, flat) >= 2
        coverage = np.bincount(rows[held], minlength=len(sizes)) / np.maximum(sizes, 1)
        gibberish = (sizes > 0) & (coverage <= 2 * self.threshold) & (found["before"] >= coverage + MIN_FLUENCY_GAIN)
        new = set(records[gibberish].tolist()) - mine  # each record counts once per token
        if new:
            mine |= new
            self.seam_counts[token] += len(new)
            kinds = self.seam_kinds.setdefault(token, Counter())
            kinds[GIBBERISH] += len(new)
            kinds[VOCABULARY] += len(new)

    def seam_candidates(self) -> list[int]:
        """Seam tokens in enough documents, mostly as seams: candidates for a trigger."""
        stage, words = self.stage, self.counts.words
        common = self._common_set
        return [token for token, count in self.seam_counts.items()
                if count >= stage.min_records and token not in common
                and count / max(words[token], count) >= CANDIDATE_SEAM_SHARE]

    def take_contexts(self, contexts: _Contexts) -> None:
        for verdict in self.found:
            sample = contexts.occurrences.get(verdict.gram)
            verdict.occurrences = sample.items() if sample else []
        self.seam_examples = {token: sample.items() for token, sample in contexts.seam_examples.items()}
        self.judgeable = {token: len(keys) for token, keys in contexts.judgeable.items()}
        # every judgeable use of a candidate gets the second look that round 2 gave only to vocabulary drops
        for token, found in contexts.second_look.groups():  # in token order
            self._leave_token_out(token, found, self.counted)

    def discover(self) -> list[Trigger]:
        stage = self.stage
        words, records = self.counts.words, max(self.records, 1)
        found = sentences.discover(self.sentence_hits, self.counts.sentence_counts, self.counts.sentence_alone,
                                   self.counts.sentence_first, self.counts.sentence_last, self.relatedness_baseline,
                                   stage.min_records,
                                   lambda hashes: words.get(hashes) / records)
        if self.evidence is not None:
            found = labelled.discover(self.found, self.evidence, self.label_of, self.signature_text,
                                      stage.min_records) + found
        return found + self._discover_seams()

    def _discover_seams(self) -> list[Trigger]:
        words = self.counts.words
        found = []
        judgeable = self.judgeable
        for token in sorted(self.seam_candidates()):
            count = self.seam_counts[token]
            # the share of seams among the token's records that could show one (words on both sides)
            judged = judgeable.get(token, words[token])
            share = count / max(judged, count)
            if share < MIN_SEAM_SHARE:
                continue
            kinds = self.seam_kinds.get(token, Counter())
            after = "language-switch" if kinds[SWITCH] >= kinds[GIBBERISH] else self._kind_of(token)
            # seams found only by the second look (pairs that recur only beside this token) could be a topic
            # of its own (a product's manual after its name, code after a macro): they count only when what
            # follows is in another language than the text before it
            alone = count - kinds[VOCABULARY]
            if (alone < self.stage.min_records or alone / max(judged, alone) < MIN_SEAM_SHARE) and \
                    after != "language-switch":
                continue
            confidence = min(0.99, 0.6 + 0.4 * share)
            name = self.seam_names.get(token, f"{token:016x}")
            found.append(Trigger("seam", name, token, confidence, count, None,
                                 {"after": after, "seam_share": round(share, 3)}))
        return found

    def _kind_of(self, token: int) -> str:
        """``language-switch`` when what follows the token is mostly fluent text in another language."""
        votes: Counter[str] = Counter()
        for before, after in self.seam_examples.get(token, []):
            reference = language.detect(before) if len(before) >= 40 else self.language
            votes["language-switch" if reference and _other_languages(after, reference) else "gibberish"] += 1
        return "language-switch" if votes["language-switch"] > votes["gibberish"] else "gibberish"


def _other_languages(text: str, reference: str) -> bool:
    """Whether ``text`` is fluent in another language than ``reference``, or in several others (a mix of
    languages, where no one language is sure for the whole, is sure chunk by chunk; gibberish is neither)."""
    detected = language.detect(text)
    if detected:
        return detected != reference
    words = text.split()
    chunks = [" ".join(words[i:i + LANGUAGE_CHUNK]) for i in range(0, len(words), LANGUAGE_CHUNK)]
    other = [found for found in map(language.detect, chunks) if found and found != reference]
    return len(other) >= 0.5 * len(chunks)


def counts_of(values: np.ndarray, counts: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """The count of each of ``keys`` in the ascending ``values`` (0 where absent)."""
    found, where = lookup(values, keys)
    return np.where(found, counts[where] if len(counts) else 0, 0)


__all__ = ["Trigger", "Triggers"]
