"""Embedding anomaly: off-distribution documents and backdoored subpopulations, scored from embeddings.

Pass 1 draws a bounded sample by seeded content hash (of the scanned data, or of a trusted
``reference``), fits the embedder and the detectors on it, and calibrates
every detector against it. Pass 2 embeds each batch and scores it. A record's
score is the percentile, among the reference records, of its strongest
detector finding, so a threshold of 0.995 reads "flag about 0.5% of records
like the reference".
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
from sklearn.preprocessing import normalize
from threadpoolctl import ThreadpoolController

from dokumi.detectors import DETECTORS, Detector, Embedded, ResponseClusterDetector, TailCalibrator
from dokumi.embedders import MIN_WORD_CHARS, Embedder, HashingSvdEmbedder, LexicalVectors, SampledWords, make_embedder
from dokumi.fitplan import Fold, Reduce, Step
from dokumi.records import Batch
from dokumi.stage import Stage, StageContext, StageResult
from dokumi.text.sampling import priorities
from dokumi.text.tokens import Tokens

DEFAULT_DETECTORS = tuple(DETECTORS)
# Only the first characters of a record are embedded, so the sample's memory stays bounded.
MAX_EMBEDDED_CHARS = 20_000
# Below this many reference records a 0.5% tail holds less than one record and percentiles would
# promote whatever is most unusual in a tiny corpus: the stage scores nothing and says why.
MIN_REFERENCE_RECORDS = 200
# Reasons are written for records scoring at least this much (the pipeline shows them only when flagged).
REASON_FLOOR = 0.5
# A detector other than the strongest is named in the reasons from this percentile up.
ALSO_REASON_PERCENTILE = 0.99
# A fixed-response cluster is reported in the summary when its members reach this percentile.
FINDING_PERCENTILE = 0.999
UNLABELLED = ""

Method = TypeVar("Method", bound=Callable[..., Any])


@functools.cache
def _thread_pools() -> ThreadpoolController:
    """The BLAS and OpenMP thread pools of this process (found once: looking them up takes milliseconds)."""
    return ThreadpoolController()


def _single_threaded(method: Method) -> Method:
    """Run ``method`` with BLAS and OpenMP on one thread.

    The matrices here are small: a second thread gains nothing on an idle
    machine, and on a busy one the spinning thread pools made fit and score
    1.6 to 1.9 times slower (benchmarks/bench_embedding_anomaly.py, speed).
    """
    @functools.wraps(method)
    def limited(*args: Any, **kwargs: Any) -> Any:
        with _thread_pools().limit(limits=1):
            return method(*args, **kwargs)

    return limited  # type: ignore[return-value]


class EmbeddingAnomaly(Stage):
    """Score records that look unlike the reference sample, by several detectors on their embeddings.

    Parameters
    ----------
    embedder:
        ``"hashing"`` (default: hashed words, TF-IDF, truncated SVD; nothing to
        download), ``"column"`` (vectors in the ``embedding`` column) or
        ``"sentence-transformers:<local path or cached model name>"``.
    dimensions:
        Embedding size of the hashing embedder (default 128).
    sample_size:
        Records in the sample (those of lowest seeded content hash) the detectors are fitted and calibrated
        on (default 5000). Memory and fitting time grow with it, not with the
        corpus.
    detectors:
        Names of the detectors to run (default: all). Those that need labels
        (``spectral``, ``label_clusters``) or instruction pairs
        (``response_clusters``) switch themselves off on data without them.
    neighbors:
        ``k`` of the kNN distance detector (default 10).
    response_similarity:
        Cosine of the word TF-IDF vectors at which two responses count as
        near-identical (default 0.9).
    min_label_records:
        Reference records a label needs before its spectral signature and
        clusters are fitted (default 30).
    reference:
        Path (Parquet, JSONL, directory or glob) of trusted data to fit on
        instead of the scanned data (default ``None``). Use it whenever a
        clean sample exists: poison inside the reference raises the bar.
    seed:
        Seed of the sample and every randomised fit (default 0).
    """

    name = "embedding_anomaly"

    def __init__(
        self,
        embedder: str = "hashing",
        dimensions: int = 128,
        sample_size: int = 5000,
        detectors: list[str] | None = None,
        neighbors: int = 10,
        response_similarity: float = 0.9,
        min_label_records: int = 30,
        reference: str | None = None,
        seed: int = 0,
    ) -> None:
        for parameter, value, low in (("dimensions", dimensions, 2), ("sample_size", sample_size,
                                      MIN_REFERENCE_RECORDS), ("neighbors", neighbors, 1),
                                      ("min_label_records", min_label_records, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{parameter} = {value!r} must be an integer of at least {low}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed = {seed!r} must be an integer")
        if isinstance(response_similarity, bool) or not isinstance(response_similarity, (int, float)) \
                or not 0 < response_similarity <= 1:
            raise ValueError(f"response_similarity = {response_similarity!r} must be a number in (0, 1]")
        if detectors is not None:
            if isinstance(detectors, str) or not detectors or not all(isinstance(d, str) for d in detectors):
                raise ValueError(f"detectors = {detectors!r} must be a non-empty list of detector names")
            unknown = [d for d in detectors if d not in DETECTORS]
            if unknown:
                raise ValueError(f"detectors: unknown detector {unknown[0]!r}; known: {', '.join(DETECTORS)}")
        if reference is not None and (not isinstance(reference, str) or not reference):
            raise ValueError(f"reference = {reference!r} must be a path to Parquet or JSONL data")
        make_embedder(embedder)  # validates the spec; the fitted one is built in fit()
        self.embedder = embedder
        self.dimensions = dimensions
        self.sample_size = sample_size
        self.detectors = list(detectors) if detectors is not None else None
        self.neighbors = neighbors
        self.response_similarity = float(response_similarity)
        self.min_label_records = min_label_records
        self.reference = reference
        self.seed = seed
        if embedder == "column":
            self.reads = ("content", "embedding")

    # pass 1 -----------------------------------------------------------------

    # a trusted reference arrives as a side corpus at setup: the stage then samples and fits on it there
    side_inputs = {"reference": "corpus"}

    @property
    def needs_fit(self) -> bool:  # type: ignore[override]
        """Fitted on the scanned data unless a trusted ``reference`` was given (fitted at setup)."""
        return self.reference is None

    def setup(self, context: StageContext) -> None:
        """With a ``reference``, draw the sample from it and fit the detectors before the corpus is read."""
        super().setup(context)
        if "reference" in context.inputs:
            self._finish_sample(self._fold().run(context.inputs["reference"]))

    def fit_plan(self) -> list[Step]:
        """One reduction: the ``sample_size`` records of lowest seeded content hash, then the detectors."""
        if not self.needs_fit:
            return []
        fold = self._fold()
        return [Reduce("sample", fold.start, fold.add, fold.merge, self._finish_sample)]

    def _fold(self) -> Fold:
        return Fold(self._empty_sample, self._sample_batch, self._merge_samples)

    # the sample as a reduction, so that a Dask cluster draws the same sample as one process,
    # whatever the partitioning; records are kept by a seeded hash of their content

    def _empty_sample(self) -> dict[str, Any]:
        return _empty_sample(self.embedder == "column", self.embedder == "hashing")

    def _sample_batch(self, sample: dict[str, Any], batch: Batch) -> dict[str, Any]:
        # once the sample is full, only records below its highest priority can enter it
        below = sample["priority"][-1] if len(sample["priority"]) >= self.sample_size else None
        candidates = _batch_sample(batch, self.seed, sample["vectors"] is not None, below,
                                   with_words=sample.get("words") is not None)
        return _bottom_k([sample, candidates], self.sample_size)

    def _merge_samples(self, partials: list[dict[str, Any]]) -> dict[str, Any]:
        return _bottom_k(partials, self.sample_size)

    @_single_threaded
    def _finish_sample(self, sample: dict[str, Any]) -> None:
        self.records_seen_ = sample["seen"]
        self.reference_records_ = len(sample["texts"])
        self.embedder_: Embedder = make_embedder(self.embedder, self.dimensions, self.seed)
        self.detectors_: list[Detector] = []
        # why the stage, or one of its detectors, stands aside on this corpus (reported, never a crash)
        self.skipped_: list[str] = []
        if self.reference_records_ < MIN_REFERENCE_RECORDS:
            self.skipped_.append(f"the reference holds {self.reference_records_} records; "
                                 f"at least {MIN_REFERENCE_RECORDS} are needed")
            return
        if self.embedder_.source == "embedding":
            vectors = self.embedder_.fit_transform(sample["vectors"])
        elif sample.get("words") is not None:  # the sampled records' words, kept from their batches' tokens
            assert isinstance(self.embedder_, HashingSvdEmbedder), "words are sampled for the hashing embedder"
            vectors = self.embedder_.fit_transform(SampledWords.of(sample["words"]))
        else:
            vectors = self.embedder_.fit_transform(sample["texts"])
        if vectors.shape[1] == 0:
            self.skipped_.append("the reference's words are too few to embed (a vocabulary of fewer than two "
                                 "words seen twice)")
            return
        self.labelled_ = any(label != UNLABELLED for label in sample["labels"])
        self.instruction_ = sample["prompts"] is not None
        self.lexical_ = None
        if self.instruction_:
            self.lexical_ = LexicalVectors().fit(sample["prompts"] + sample["responses"])
        reference = self._embedded(vectors, sample["token_counts"], sample["labels"], sample["prompts"],
                                   sample["responses"])
        self.calibrators_: list[TailCalibrator] = []
        for name in self.detectors or DEFAULT_DETECTORS:
            detector = self._detector(name)
            if not detector.applies(reference):
                continue
            try:
                if isinstance(detector, ResponseClusterDetector):
                    detector.fit(reference, prompt_keys=sample["prompts"])
                else:
                    detector.fit(reference)
                calibrator = TailCalibrator().fit(detector.reference_scores_)
            except (ValueError, ArithmeticError, np.linalg.LinAlgError) as error:
                # a degenerate reference (identical records, a singular covariance): this detector steps aside
                self.skipped_.append(f"detector {name} could not be fitted on this reference: {error}")
                continue
            self.detectors_.append(detector)
            self.calibrators_.append(calibrator)
        if self.detectors_:
            self.combined_ = TailCalibrator().fit(self._surprises(reference, reference_scores=True).max(axis=1))

    def _detector(self, name: str) -> Detector:
        cls = DETECTORS[name]
        options = {"seed": self.seed, "neighbors": self.neighbors, "similarity": self.response_similarity,
                   "min_records": self.min_label_records}
        accepted = inspect.signature(cls.__init__).parameters
        return cls(**{key: value for key, value in options.items() if key in accepted})

    # pass 2 -----------------------------------------------------------------

    @_single_threaded
    def score(self, batch: Batch) -> StageResult:
        n = batch.num_rows
        if not self.detectors_ or not n:
            return StageResult.empty(n)
        labels = [_label_key(label) for label in batch.labels] if batch.labels is not None else None
        records = self._embedded(self._embed(batch), _word_counts(batch.texts), labels,
                                 batch.prompts if batch.is_instruction else None,
                                 batch.responses if batch.is_instruction else None)
        surprises = self._surprises(records)
        scores = self.combined_.percentile(surprises.max(axis=1))
        return StageResult(scores, self._reasons(records, surprises, scores))

    def _embed(self, batch: Batch) -> np.ndarray:
        if self.embedder_.source == "embedding":
            return self.embedder_.transform(_column_vectors(batch))
        if isinstance(self.embedder_, HashingSvdEmbedder) and (batch.content_bytes <= MAX_EMBEDDED_CHARS).all():
            return self.embedder_.transform(batch.words)  # the batch's shared words: no second tokenisation
        return self.embedder_.transform([text[:MAX_EMBEDDED_CHARS] for text in batch.texts])

    def _embedded(self, embedded, token_counts, labels, prompts, responses) -> Embedded:
        lexical = self.lexical_ if self.instruction_ and prompts is not None else None
        return Embedded(
            vectors=normalize(embedded).astype(np.float32),
            token_counts=np.asarray(token_counts, dtype=np.int64),
            labels=np.asarray(labels, dtype=object) if self.labelled_ and labels is not None else None,
            prompts=lexical.transform([p[:MAX_EMBEDDED_CHARS] for p in prompts]) if lexical else None,
            responses=lexical.transform([r[:MAX_EMBEDDED_CHARS] for r in responses]) if lexical else None,
        )

    def _surprises(self, records: Embedded, reference_scores: bool = False) -> np.ndarray:
        columns = [
            calibrator.surprise(detector.reference_scores_ if reference_scores else detector.score(records))
            for detector, calibrator in zip(self.detectors_, self.calibrators_)
        ]
        return np.column_stack(columns)

    def _reasons(self, records: Embedded, surprises: np.ndarray, scores: np.ndarray) -> list[list[str]]:
        reasons: list[list[str]] = [[] for _ in range(len(scores))]
        percentiles = -np.expm1(-surprises)
        strongest = surprises.argmax(axis=1)
        for d, detector in enumerate(self.detectors_):
            rows = np.flatnonzero((scores >= REASON_FLOOR)
                                  & ((strongest == d) | (percentiles[:, d] >= ALSO_REASON_PERCENTILE)))
            if not len(rows):
                continue
            details = detector.details(records, rows)
            for row, detail, percentile in zip(rows.tolist(), details, percentiles[rows, d].tolist()):
                reasons[row].append(f"embedding:{detector.kind},{detail},pct={_percent(percentile)}")
        return reasons

    # reporting --------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        if not hasattr(self, "embedder_"):
            return {}
        described: dict[str, Any] = {
            "embedder": self.embedder_.describe(),
            "reference": {"source": "reference" if self.reference is not None else "scanned data",
                          "records_seen": self.records_seen_, "sample_records": self.reference_records_},
        }
        if self.skipped_:
            described["skipped"] = list(self.skipped_)
        if not self.detectors_:
            return described
        described["detectors"] = {detector.name: detector.summary() for detector in self.detectors_}
        findings = []
        scale = self.records_seen_ / max(self.reference_records_, 1)
        for detector, calibrator in zip(self.detectors_, self.calibrators_):
            if not isinstance(detector, ResponseClusterDetector):
                continue
            strongest: dict[int, float] = {}
            for cluster, raw in zip(detector.cluster_of_, detector.reference_scores_):
                strongest[int(cluster)] = max(strongest.get(int(cluster), 0.0), float(raw))
            for cluster, raw in sorted(strongest.items(), key=lambda item: -item[1]):
                if calibrator.percentile(np.array([raw]))[0] < FINDING_PERCENTILE:
                    break
                findings.append({"finding": f"fixed-response cluster={cluster}",
                                 "records": round(detector.cluster_prompts_.get(cluster, 1) * scale)})
        described["findings"] = findings
        return described


SAMPLE_COLUMNS = ("priority", "texts", "token_counts", "labels", "prompts", "responses", "vectors", "words")


def _empty_sample(with_vectors: bool, with_words: bool = False) -> dict[str, Any]:
    sample: dict[str, Any] = {key: [] for key in SAMPLE_COLUMNS}
    sample.update(priority=np.zeros(0, dtype=np.uint64), prompts=None, responses=None, seen=0,
                  vectors=[] if with_vectors else None, words=[] if with_words else None)
    return sample


def _priorities(batch: Batch, seed: int) -> np.ndarray:
    """A seeded 64-bit hash of each record's content: the same on any worker, in any order and container."""
    return priorities(batch.content_keys, seed, "embedding_anomaly")


def _batch_sample(batch: Batch, seed: int, with_vectors: bool, below: np.uint64 | None = None,
                  with_words: bool = False) -> dict[str, Any]:
    """The records of ``batch`` with priority under ``below`` (all when None), in sample form; counts all as seen.

    ``with_words``: also each record's words as the hashing embedder reads them (:func:`_sampled_words`).
    """
    sample = _empty_sample(with_vectors, with_words)
    sample["seen"] = batch.num_rows
    if not batch.num_rows:
        return sample
    priority = _priorities(batch, seed)
    rows = np.flatnonzero(priority < below) if below is not None else np.arange(batch.num_rows)
    texts = [batch.texts[i] for i in rows.tolist()]
    pairs = batch.is_instruction
    labels, prompts, responses = batch.labels, batch.prompts, batch.responses
    vectors = _column_vectors(batch) if with_vectors else None
    sample.update(
        priority=priority[rows],
        texts=[text[:MAX_EMBEDDED_CHARS] for text in texts],
        token_counts=_word_counts(texts).tolist(),
        labels=[_label_key(labels[i]) for i in rows.tolist()] if labels is not None else [UNLABELLED] * len(rows),
        prompts=[prompts[i][:MAX_EMBEDDED_CHARS] for i in rows.tolist()] if pairs and prompts is not None else None,
        responses=[responses[i][:MAX_EMBEDDED_CHARS] for i in rows.tolist()] if pairs and responses is not None
        else None,
        vectors=[vectors[i] for i in rows.tolist()] if vectors is not None else None,
        words=_sampled_words(batch, rows, texts) if with_words else None,
    )
    return sample


def _sampled_words(batch: Batch, rows: np.ndarray, texts: list[str]) -> list[np.ndarray]:
    """The hashes of the words the hashing embedder reads (:data:`MIN_WORD_CHARS` characters or more) of
    each sampled record: from the batch's shared words, so the fit does not tokenise the sample again;
    a record longer than :data:`MAX_EMBEDDED_CHARS` from its embedded start only."""
    hashes, offsets = batch.words.at_least(MIN_WORD_CHARS)
    long = np.flatnonzero(batch.content_bytes[rows] > MAX_EMBEDDED_CHARS)
    words = [hashes[offsets[i]: offsets[i + 1]].copy() for i in rows.tolist()]
    if len(long):
        cut_hashes, cut_offsets = Tokens.of([texts[i][:MAX_EMBEDDED_CHARS] for i in long.tolist()]).at_least(
            MIN_WORD_CHARS)
        for k, i in enumerate(long.tolist()):
            words[i] = cut_hashes[cut_offsets[k]: cut_offsets[k + 1]].copy()
    return words


def _bottom_k(samples: list[dict[str, Any]], size: int) -> dict[str, Any]:
    """The ``size`` records of lowest priority among ``samples``, in priority order (associative, commutative)."""
    merged = {"seen": sum(s["seen"] for s in samples)}
    samples = [s for s in samples if len(s["texts"])] or samples[:1]
    priority = np.concatenate([s["priority"] for s in samples])
    keep = np.argsort(priority, kind="stable")[:size]
    merged["priority"] = priority[keep]
    instruction = any(s["prompts"] is not None for s in samples)
    for key in SAMPLE_COLUMNS[1:]:
        present = [s[key] for s in samples if s[key] is not None]
        if key in ("prompts", "responses") and not instruction or key in ("vectors", "words") and not present:
            merged[key] = None
            continue
        if key in ("prompts", "responses"):
            # text records mixed with pairs: their prompt is empty and their response is the text
            column = [v for s in samples for v in (s[key] if s[key] is not None else [""] * len(s["texts"]))]
        else:
            column = [v for values in present for v in values]
        merged[key] = [column[i] for i in keep.tolist()]
    return merged


def _column_vectors(batch: Batch) -> list:
    column = batch.column("embedding")
    if column is None:
        raise ValueError(f"embedder 'column': shard {batch.shard} has no column {batch.columns.embedding!r}")
    return column.to_pylist()


def _label_key(label: Any) -> str:
    return UNLABELLED if label is None else str(label)


def _word_counts(texts: list[str]) -> np.ndarray:
    """Whitespace-separated words per text (the length detector's measure)."""
    return np.fromiter(map(len, map(str.split, texts)), dtype=np.int64, count=len(texts))


def _percent(percentile: float) -> str:
    """A percentile as a percentage with enough digits to tell it from 100."""
    digits = 1 if percentile < 0.999 else min(4, math.ceil(-math.log10(max(1 - percentile, 1e-12))) - 1)
    return f"{100 * percentile:.{digits}f}"


__all__ = ["EmbeddingAnomaly"]
