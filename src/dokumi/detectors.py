"""Anomaly detectors over embedded records, and the calibration that turns their scores into percentiles.

Each detector is fitted on a reference sample (:class:`Embedded`), keeps the
raw scores of that sample in ``reference_scores_`` (leaving each record out of
its own neighbourhood), and maps new records to raw scores, higher = more
unusual. :class:`TailCalibrator` turns raw scores into percentiles of the
reference, so a threshold reads as a false-positive budget.
"""

from __future__ import annotations

import abc
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp
from scipy.linalg import eigh
from scipy.sparse.csgraph import connected_components
from sklearn.cluster import KMeans
from sklearn.covariance import MinCovDet
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest


@dataclass
class Embedded:
    """Records as the detectors see them.

    ``vectors`` are unit-norm embeddings (float32, one row per record);
    ``token_counts`` the number of words; ``labels`` label keys as strings
    (``None`` when the data has no labels); ``prompts`` and ``responses``
    L2-normalised lexical vectors of instruction pairs (``None`` otherwise).
    """

    vectors: np.ndarray
    token_counts: np.ndarray
    labels: np.ndarray | None = None
    prompts: sp.csr_matrix | None = None
    responses: sp.csr_matrix | None = None

    def __len__(self) -> int:
        return len(self.vectors)


# Records per block of the kNN cosine matrix (block x reference floats in memory at once).
KNN_CHUNK = 1024
# The robust covariance is fitted on at most this many reference records: scikit-learn's FastMCD runs
# its trials on the whole set up to 500 records and switches to a nested-subset search (about 8x the
# time) above, and 500 records already pin down a covariance of a few dimensions.
MCD_RECORDS = 500


class TailCalibrator:
    """Percentiles of a reference sample, extended beyond its ``tail_start`` quantile by an exponential tail.

    Below the ``tail_start`` quantile a score's percentile is the share of the
    reference strictly below it. Above, it is ``1 - (1 - tail_start) *
    exp(-(x - u) / scale)``, with ``scale`` read from the spread between the
    ``band_start`` and ``tail_start`` quantiles. Estimating the tail from that
    band, not from the very top, keeps the calibration honest when up to
    ``1 - tail_start`` of the reference is itself poison, and keeps scores
    beyond the largest reference value graded instead of tied at 1.
    """

    def __init__(self, tail_start: float = 0.98, band_start: float = 0.90) -> None:
        if not 0 < band_start < tail_start < 1:
            raise ValueError(f"need 0 < band_start ({band_start}) < tail_start ({tail_start}) < 1")
        self.tail_start = tail_start
        self.band_start = band_start

    def fit(self, reference: np.ndarray) -> TailCalibrator:
        """Learn the reference distribution of raw scores and the exponential tail beyond ``tail_start``."""
        values = np.sort(np.asarray(reference, dtype=np.float64))
        if not len(values):
            raise ValueError("cannot calibrate on an empty reference sample")
        self.sorted_ = values
        self.tail_from_ = float(np.quantile(values, self.tail_start))
        band_from = float(np.quantile(values, self.band_start))
        scale = (self.tail_from_ - band_from) / np.log((1 - self.band_start) / (1 - self.tail_start))
        if scale <= 0:
            above = values[values > self.tail_from_]
            scale = float(above.mean() - self.tail_from_) if len(above) else 0.0
        self.scale_ = max(scale, 1e-12 * max(1.0, abs(self.tail_from_)))
        return self

    def surprise(self, scores: np.ndarray) -> np.ndarray:
        """``-log(1 - percentile)``: 0 for the bottom of the reference, growing without bound in the tail."""
        scores = np.asarray(scores, dtype=np.float64)
        below = np.searchsorted(self.sorted_, scores, side="left") / len(self.sorted_)
        body = -np.log1p(-np.minimum(below, self.tail_start))
        tail = -np.log1p(-self.tail_start) + (scores - self.tail_from_) / self.scale_
        return np.where(scores > self.tail_from_, np.maximum(tail, body), body)

    def percentile(self, scores: np.ndarray) -> np.ndarray:
        """The calibrated score in [0, 1]: the share of reference records expected below each score."""
        return -np.expm1(-self.surprise(scores))


class Detector(abc.ABC):
    """A detector fitted on a reference sample. ``kind`` names its reason code (``embedding:<kind>``)."""

    name: ClassVar[str] = ""
    kind: ClassVar[str] = "outlier"
    reference_scores_: np.ndarray  # raw scores of the reference sample, set by fit

    def applies(self, reference: Embedded) -> bool:
        """Whether the reference carries what this detector needs (labels, instruction pairs)."""
        return True

    @abc.abstractmethod
    def fit(self, reference: Embedded) -> Detector:
        """Learn from ``reference`` and set ``reference_scores_``."""

    @abc.abstractmethod
    def score(self, records: Embedded) -> np.ndarray:
        """Raw scores, higher = more unusual."""

    def details(self, records: Embedded, rows: np.ndarray) -> list[str]:
        """For each of ``rows``, the part of the reason code that says where the finding lies."""
        return [f"detector={self.name}"] * len(rows)

    def summary(self) -> dict[str, Any]:
        """Corpus-level facts the detector learned, for the manifest (JSON-serialisable; empty by default)."""
        return {}


class IsolationForestDetector(Detector):
    """Isolation forest (Liu et al. 2008) on the embeddings: records that few random splits isolate.

    32 trees of 256 records each, a third of scikit-learn's default: scoring
    pays a fixed overhead per tree and batch, and this detector carries none
    of the benchmark's attack scenarios. On its off-topic scenario the fewer
    trees cost a little (AUROC 0.62 to 0.59, recall at 1% false positives
    0.10 to 0.06, means over five seeds).
    """

    name = "isolation_forest"

    def __init__(self, trees: int = 32, seed: int = 0) -> None:
        self.trees = trees
        self.seed = seed

    def fit(self, reference: Embedded) -> IsolationForestDetector:
        self.forest_ = IsolationForest(n_estimators=self.trees, random_state=self.seed).fit(reference.vectors)
        self.reference_scores_ = self.score(reference)
        return self

    def score(self, records: Embedded) -> np.ndarray:
        return -self.forest_.score_samples(records.vectors)


class RobustDistanceDetector(Detector):
    """Mahalanobis distance under a Minimum Covariance Determinant fit (Rousseeuw 1984).

    The embeddings are first reduced to their leading ``components`` principal
    components: MCD needs many more records than dimensions, and the leading
    components carry the shape of the bulk of the corpus.
    """

    name = "robust_distance"

    def __init__(self, components: int = 8, seed: int = 0) -> None:
        self.components = components
        self.seed = seed

    def fit(self, reference: Embedded) -> RobustDistanceDetector:
        n, d = reference.vectors.shape
        components = max(1, min(self.components, d, n // 10))
        # from the covariance matrix: one small eigenproblem, several times faster than an SVD of the sample
        self.pca_ = PCA(n_components=components, svd_solver="covariance_eigh").fit(reference.vectors)
        reduced = self.pca_.transform(reference.vectors)
        subset = np.random.default_rng(self.seed).permutation(n)[:MCD_RECORDS]
        with warnings.catch_warnings():
            # a singular or nearly singular covariance is reported as a warning; the fit is still usable
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", UserWarning)
            self.covariance_ = MinCovDet(random_state=self.seed).fit(reduced[subset])
        self.reference_scores_ = self.score(reference)
        return self

    def score(self, records: Embedded) -> np.ndarray:
        reduced = self.pca_.transform(records.vectors)
        return np.sqrt(np.maximum(self.covariance_.mahalanobis(reduced), 0.0))


class KnnDetector(Detector):
    """Mean distance to the ``neighbors`` nearest reference records (cosine geometry, unit vectors).

    The neighbours are looked for among a seeded random subset of at most
    ``reference_records`` of the reference: the cost of scoring a record grows
    with that subset, and a subsample ranks outliers as well as the whole
    sample or better (Zimek et al. 2013, "Subsampling for efficient and
    effective unsupervised outlier detection ensembles"). Every reference
    record is still scored against the subset, for calibration.

    A record never counts as its own neighbour: the closest match is skipped
    when it is identical (cosine 1), so reference records and new records are
    measured alike. A record with an all-zero embedding (none of its words
    known to the embedder) has no place among neighbours and gets the
    reference's median distance: no evidence either way.
    """

    name = "knn"

    def __init__(self, neighbors: int = 10, reference_records: int = 500, seed: int = 0) -> None:
        self.neighbors = neighbors
        self.reference_records = reference_records
        self.seed = seed

    def fit(self, reference: Embedded) -> KnnDetector:
        subset = np.sort(np.random.default_rng(self.seed).permutation(len(reference))[:self.reference_records])
        self.k_ = max(1, min(self.neighbors, len(subset) - 1))
        self.reference_vectors_ = np.ascontiguousarray(reference.vectors[subset], dtype=np.float32)
        self.empty_score_ = 0.0
        scores = self.score(reference)
        placed = reference.vectors.any(axis=1)
        self.empty_score_ = float(np.median(scores[placed])) if placed.any() else 0.0
        self.reference_scores_ = np.where(placed, scores, self.empty_score_)
        return self

    def score(self, records: Embedded) -> np.ndarray:
        scores = np.zeros(len(records))
        for start in range(0, len(records), KNN_CHUNK):
            # on unit vectors, the largest cosines are the nearest neighbours
            cosine = records.vectors[start:start + KNN_CHUNK] @ self.reference_vectors_.T
            nearest = -np.sort(-np.partition(cosine, -(self.k_ + 1), axis=1)[:, -(self.k_ + 1):], axis=1)
            distances = np.sqrt(np.maximum(2.0 - 2.0 * nearest, 0.0))
            # float32 rounding leaves a record's cosine with itself a little below 1
            self_match = nearest[:, 0] >= 1.0 - 1e-4
            kept = np.where(self_match[:, None], distances[:, 1:], distances[:, :-1])
            scores[start:start + KNN_CHUNK] = kept.mean(axis=1)
        scores[~records.vectors.any(axis=1)] = self.empty_score_
        return scores


class LengthDetector(Detector):
    """Documents far longer than the reference: the log of the word count.

    Bag-of-words embeddings place a long run of random words at the centre of
    the corpus (the average of many words is the average document), so the
    embedding detectors cannot see gibberish; its length beside short records
    can.
    """

    name = "length"

    def fit(self, reference: Embedded) -> LengthDetector:
        self.reference_scores_ = self.score(reference)
        return self

    def score(self, records: Embedded) -> np.ndarray:
        return np.log1p(records.token_counts.astype(np.float64))

    def details(self, records: Embedded, rows: np.ndarray) -> list[str]:
        return [f"detector=length,words={int(records.token_counts[i])}" for i in rows]


def contrast_directions(
    vectors: np.ndarray, labels: np.ndarray, min_records: int, ridge: float, count: int
) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per label: its mean, the ``count`` directions along which it varies most *relative to the corpus*,
    and the variance ratios along them.

    Solves the generalised eigenproblem ``Σ_label v = λ Σ_corpus v`` (the
    label's covariance against the whole sample's, ridge-regularised): this
    whitens away the variation every label shares, so a small subpopulation
    that only this label holds, such as a trigger word, dominates the top
    direction even when the label's own topics vary more in absolute terms.
    """
    corpus = np.cov(vectors, rowvar=False).astype(np.float64)
    d = corpus.shape[0]
    corpus += ridge * max(np.trace(corpus) / d, 1e-12) * np.eye(d)
    directions = {}
    for label in np.unique(labels):
        members = vectors[labels == label].astype(np.float64)
        if len(members) < min_records:
            continue
        mean = members.mean(axis=0)
        covariance = np.cov(members, rowvar=False)
        top = min(count, d)
        ratios, vecs = eigh(covariance, corpus, subset_by_index=[d - top, d - 1])
        directions[str(label)] = (mean, vecs[:, ::-1].T.copy(), ratios[::-1].copy())
    return directions


class SpectralSignatureDetector(Detector):
    """Spectral signatures per label (Tran et al. 2018), on corpus-whitened embeddings.

    Each label is centred and scored by the largest squared projection on its
    top ``directions`` (default 3), each in units of the label's variance along
    it: the trigger's direction is not always the top one (with the top one
    alone, 1 of 10 reference samples of the dirty-label benchmark ranked it
    third and AUROC fell to 0.74; with three, AUROC stayed within 0.93-0.96). The direction comes
    from the label's covariance relative to the corpus covariance (a whitening
    in the spirit of SPECTRE, Hayase et al. 2021) rather than the plain top
    singular vector, which in real text follows the label's natural topics.
    """

    name = "spectral"
    kind = "spectral"

    def __init__(self, min_records: int = 30, ridge: float = 0.01, directions: int = 3) -> None:
        self.min_records = min_records
        self.ridge = ridge
        self.directions = directions

    def applies(self, reference: Embedded) -> bool:
        return reference.labels is not None

    def fit(self, reference: Embedded) -> SpectralSignatureDetector:
        assert reference.labels is not None, "applies() holds"
        found = contrast_directions(reference.vectors, reference.labels, self.min_records, self.ridge,
                                    self.directions)
        self.signatures_: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self.ratios_: dict[str, float] = {}
        for label, (mean, directions, ratios) in found.items():
            projections = (reference.vectors[reference.labels == label] - mean) @ directions.T
            self.signatures_[label] = (mean.astype(np.float32), directions.astype(np.float32),
                                       np.maximum(projections.var(axis=0), 1e-12))
            self.ratios_[label] = float(ratios[0])
        self.reference_scores_ = self.score(reference)
        return self

    def score(self, records: Embedded) -> np.ndarray:
        scores = np.zeros(len(records))
        if records.labels is None:
            return scores
        for label, (mean, directions, variances) in self.signatures_.items():
            members = records.labels == label
            if members.any():
                projections = (records.vectors[members] - mean) @ directions.T
                scores[members] = (projections**2 / variances).max(axis=1)
        return scores

    def details(self, records: Embedded, rows: np.ndarray) -> list[str]:
        assert records.labels is not None, "applies() holds"
        return [f"label={records.labels[i]}" for i in rows]

    def summary(self) -> dict[str, Any]:
        """The labels fitted and the five with the strongest top-direction variance ratio."""
        strongest = sorted(self.ratios_.items(), key=lambda item: -item[1])[:5]
        return {"labels_fitted": len(self.signatures_),
                "strongest_labels": [{"label": label, "variance_ratio": round(r, 2)} for label, r in strongest]}


class LabelClusterDetector(Detector):
    """Activation-clustering style (Chen et al. 2018): split each label in two and score the small side.

    Each label's records are projected on its ``directions`` contrast
    directions (see :func:`contrast_directions`) and split by 2-means. When
    the smaller cluster holds at most ``max_share`` of the label, a record's
    raw score is how much closer it lies to the small cluster's centre than
    to the large one's, in units of the label's typical distance.
    """

    name = "label_clusters"
    kind = "label-cluster"

    def __init__(self, min_records: int = 30, ridge: float = 0.01, directions: int = 3, max_share: float = 0.35,
                 seed: int = 0) -> None:
        self.min_records = min_records
        self.ridge = ridge
        self.directions = directions
        self.max_share = max_share
        self.seed = seed

    def applies(self, reference: Embedded) -> bool:
        return reference.labels is not None

    def fit(self, reference: Embedded) -> LabelClusterDetector:
        assert reference.labels is not None, "applies() holds"
        found = contrast_directions(reference.vectors, reference.labels, self.min_records, self.ridge,
                                    self.directions)
        self.clusters_: dict[str, dict[str, Any]] = {}
        for label, (mean, directions, _) in found.items():
            projected = (reference.vectors[reference.labels == label] - mean) @ directions.T
            kmeans = KMeans(n_clusters=2, n_init=4, random_state=self.seed).fit(projected)
            sizes = np.bincount(kmeans.labels_, minlength=2)
            small = int(np.argmin(sizes))
            share = sizes[small] / sizes.sum()
            if share > self.max_share or sizes[small] == 0:
                continue
            centres = kmeans.cluster_centers_
            typical = float(np.median(np.linalg.norm(projected - centres[1 - small], axis=1)))
            self.clusters_[label] = {
                "mean": mean.astype(np.float32), "directions": directions.astype(np.float32),
                "small": centres[small], "large": centres[1 - small], "typical": max(typical, 1e-12),
                "share": float(share),
            }
        self.reference_scores_ = self.score(reference)
        return self

    def score(self, records: Embedded) -> np.ndarray:
        scores = np.zeros(len(records))
        if records.labels is None:
            return scores
        for label, cluster in self.clusters_.items():
            members = records.labels == label
            if not members.any():
                continue
            projected = (records.vectors[members] - cluster["mean"]) @ cluster["directions"].T
            to_large = np.linalg.norm(projected - cluster["large"], axis=1)
            to_small = np.linalg.norm(projected - cluster["small"], axis=1)
            scores[members] = np.maximum(to_large - to_small, 0.0) / cluster["typical"]
        return scores

    def details(self, records: Embedded, rows: np.ndarray) -> list[str]:
        assert records.labels is not None, "applies() holds"
        return [f"label={records.labels[i]},share={self.clusters_[records.labels[i]]['share']:.3f}"
                for i in rows]

    def summary(self) -> dict[str, Any]:
        """The share of the minority cluster of each label that split in two."""
        return {"labels_split": {label: round(c["share"], 3) for label, c in self.clusters_.items()}}


class ResponseClusterDetector(Detector):
    """Many unrelated prompts answered by one near-identical response: a trigger-to-fixed-output backdoor.

    A record's raw score sums, over reference pairs whose response has cosine
    at least ``similarity`` with its own (lexical TF-IDF vectors), how
    unrelated their prompt is to its prompt (``1 - cosine``). A response that
    many copies of one question share scores nothing; one fixed answer to
    fifty different questions scores about fifty.
    """

    name = "response_clusters"
    kind = "fixed-response"

    def __init__(self, similarity: float = 0.9) -> None:
        self.similarity = similarity

    def applies(self, reference: Embedded) -> bool:
        return reference.prompts is not None and reference.responses is not None

    def fit(self, reference: Embedded, prompt_keys: list[str] | None = None) -> ResponseClusterDetector:
        assert reference.prompts is not None and reference.responses is not None, "applies() holds"
        self.prompts_ = reference.prompts.astype(np.float32)
        self.responses_ = reference.responses.astype(np.float32)
        same = (self.responses_ @ self.responses_.T).tocsr()
        same.data = (same.data >= self.similarity).astype(np.int8)
        same.eliminate_zeros()
        _, self.cluster_of_ = connected_components(same, directed=False)
        keys = prompt_keys if prompt_keys is not None else [str(i) for i in range(len(reference))]
        distinct: dict[int, set[str]] = {}
        for cluster, key in zip(self.cluster_of_, keys):
            distinct.setdefault(int(cluster), set()).add(key)
        self.cluster_prompts_ = {cluster: len(found) for cluster, found in distinct.items() if len(found) > 1}
        scores = self.score(reference)
        # leave each reference record out of its own count
        own = np.asarray(reference.prompts.multiply(reference.prompts).sum(axis=1)).ravel()
        has_response = np.diff(reference.responses.indptr) > 0
        self.reference_scores_ = scores - has_response * (1.0 - np.clip(own, 0.0, 1.0))
        return self

    def _matches(self, records: Embedded) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pairs (record row, reference row, response cosine) at or above the similarity threshold."""
        assert records.responses is not None, "applies() holds"
        similar = (records.responses.astype(np.float32) @ self.responses_.T).tocoo()
        keep = similar.data >= self.similarity
        return similar.row[keep], similar.col[keep], similar.data[keep]

    def score(self, records: Embedded) -> np.ndarray:
        scores = np.zeros(len(records))
        if records.responses is None or not len(records):
            return scores
        rows, cols, _ = self._matches(records)
        if len(rows):
            assert records.prompts is not None, "applies() holds"
            prompt_cosine = np.asarray(
                records.prompts[rows].multiply(self.prompts_[cols]).sum(axis=1)).ravel()
            np.add.at(scores, rows, 1.0 - np.clip(prompt_cosine, 0.0, 1.0))
        return scores

    def details(self, records: Embedded, rows: np.ndarray) -> list[str]:
        match_rows, cols, similarity = self._matches(records)
        best: dict[int, tuple[float, int]] = {}
        for row, col, value in zip(match_rows, cols, similarity):
            if value > best.get(int(row), (-1.0, 0))[0]:
                best[int(row)] = (float(value), int(col))
        found = []
        for i in rows:
            cluster = int(self.cluster_of_[best[int(i)][1]]) if int(i) in best else -1
            found.append(f"cluster={cluster},prompts={self.cluster_prompts_.get(cluster, 1)}")
        return found

    def summary(self) -> dict[str, Any]:
        """The ten response clusters reached from the most distinct prompts."""
        largest = sorted(self.cluster_prompts_.items(), key=lambda item: -item[1])[:10]
        return {"clusters": [{"cluster": cluster, "distinct_prompts": count} for cluster, count in largest]}


DETECTORS: dict[str, type[Detector]] = {
    cls.name: cls
    for cls in (IsolationForestDetector, RobustDistanceDetector, KnnDetector, LengthDetector,
                SpectralSignatureDetector, LabelClusterDetector, ResponseClusterDetector)
}

__all__ = [
    "DETECTORS",
    "Detector",
    "Embedded",
    "IsolationForestDetector",
    "KnnDetector",
    "LabelClusterDetector",
    "LengthDetector",
    "ResponseClusterDetector",
    "RobustDistanceDetector",
    "SpectralSignatureDetector",
    "TailCalibrator",
    "contrast_directions",
]
