"""Detectors and calibration, on small synthetic embeddings with planted anomalies."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import normalize

from dokumi.detectors import (
    Embedded,
    IsolationForestDetector,
    KnnDetector,
    LabelClusterDetector,
    LengthDetector,
    ResponseClusterDetector,
    RobustDistanceDetector,
    SpectralSignatureDetector,
    TailCalibrator,
)
from dokumi.embedders import LexicalVectors


def blobs(n: int = 600, d: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(4, d)) * 3
    centres[:, d // 2:] = 0  # the last dimensions hold only noise
    return normalize(centres[rng.integers(0, 4, n)] + rng.normal(size=(n, d)) * 0.5)


def embedded(vectors: np.ndarray, **kwargs) -> Embedded:
    counts = kwargs.pop("token_counts", np.full(len(vectors), 10))
    return Embedded(vectors=vectors.astype(np.float32), token_counts=np.asarray(counts), **kwargs)


def test_calibrator_reads_as_a_false_positive_budget():
    reference = np.random.default_rng(1).gamma(2.0, size=20_000)
    calibrator = TailCalibrator().fit(reference)
    fresh = np.random.default_rng(2).gamma(2.0, size=20_000)
    percentiles = calibrator.percentile(fresh)
    for budget in (0.2, 0.05, 0.01, 0.005):
        assert np.mean(percentiles >= 1 - budget) == pytest.approx(budget, rel=0.35)


def test_calibrator_is_monotone_and_graded_beyond_the_reference():
    calibrator = TailCalibrator().fit(np.arange(1000, dtype=float))
    grid = np.linspace(-10, 1200, 500)
    percentiles = calibrator.percentile(grid)
    assert np.all(np.diff(percentiles) >= 0)
    assert percentiles[0] == 0.0 and np.all(percentiles < 1.0)
    beyond = calibrator.percentile(np.array([1000.0, 1050.0, 1100.0]))
    assert beyond[0] < beyond[1] < beyond[2]


def test_calibrator_tail_stays_within_budget_when_the_reference_holds_poison():
    rng = np.random.default_rng(3)
    contaminated = TailCalibrator().fit(np.concatenate([rng.normal(size=9_900), np.full(100, 50.0)]))
    fresh = contaminated.percentile(rng.normal(size=50_000))
    # poison in the reference makes the budget conservative, not wider ...
    assert 0 < np.mean(fresh >= 0.995) <= 0.005
    # ... and the poison itself still sits far beyond every clean record
    assert contaminated.percentile(np.array([50.0]))[0] > 0.999999


def test_calibrator_rejects_bad_bands_and_empty_references():
    with pytest.raises(ValueError, match="band_start"):
        TailCalibrator(tail_start=0.9, band_start=0.95)
    with pytest.raises(ValueError, match="empty"):
        TailCalibrator().fit(np.array([]))


@pytest.mark.parametrize("detector", [IsolationForestDetector(), RobustDistanceDetector(components=2),
                                      KnnDetector(neighbors=5)])
def test_outlier_detectors_put_a_planted_outlier_in_the_tail(detector):
    rng = np.random.default_rng(4)
    records = rng.normal(size=(650, 4)) * 0.05
    records[:, 0] = 1.0
    records[:, 1] = rng.normal(size=650) * 0.3  # the main axis of variation
    detector.fit(embedded(normalize(records[:600])))
    assert detector.reference_scores_.shape == (600,)
    outlier = np.zeros((1, 4))
    outlier[0, :2] = [1.0, 8 * 0.3]  # eight standard deviations out along the main axis
    scores = detector.score(embedded(normalize(np.vstack([records[600:], outlier]))))
    assert scores[50] > np.quantile(detector.reference_scores_, 0.99)
    assert scores[50] > np.quantile(scores[:50], 0.9)


def test_knn_leaves_each_reference_record_out_of_its_own_neighbours():
    reference = blobs(200)
    detector = KnnDetector(neighbors=3).fit(embedded(reference))
    distances = np.linalg.norm(reference[:, None] - reference[None], axis=2)
    np.fill_diagonal(distances, np.inf)
    expected = np.sort(distances, axis=1)[:, :3].mean(axis=1)
    assert np.allclose(detector.reference_scores_, expected, atol=1e-3)


def test_knn_looks_for_neighbours_in_a_seeded_subset_and_scores_every_reference_record():
    reference = blobs(300)
    detector = KnnDetector(neighbors=3, reference_records=100, seed=1).fit(embedded(reference))
    assert detector.reference_vectors_.shape == (100, reference.shape[1])
    assert detector.reference_scores_.shape == (300,)
    subset = np.array([np.flatnonzero(np.all(np.isclose(reference, row, atol=1e-6), axis=1))[0]
                       for row in detector.reference_vectors_])
    distances = np.linalg.norm(reference[:, None] - reference[subset][None], axis=2)
    distances[subset, np.arange(100)] = np.inf  # a subset member is not its own neighbour
    expected = np.sort(distances, axis=1)[:, :3].mean(axis=1)
    assert np.allclose(detector.reference_scores_, expected, atol=1e-3)
    again = KnnDetector(neighbors=3, reference_records=100, seed=1).fit(embedded(reference))
    assert np.array_equal(again.reference_vectors_, detector.reference_vectors_)


def test_knn_gives_records_without_a_position_no_evidence():
    detector = KnnDetector(neighbors=3).fit(embedded(blobs(200)))
    scores = detector.score(embedded(np.zeros((2, 12))))
    assert np.allclose(scores, np.median(detector.reference_scores_))


def test_length_detector_grows_with_words():
    detector = LengthDetector().fit(embedded(blobs(10), token_counts=np.arange(10)))
    scores = detector.score(embedded(blobs(3), token_counts=np.array([5, 50, 500])))
    assert scores[0] < scores[1] < scores[2]
    assert detector.details(embedded(blobs(1), token_counts=np.array([42])), np.array([0])) == [
        "detector=length,words=42"
    ]


def planted_label_subpopulation(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Six labels of topical noise; 8% of label 'a' carries a direction (a trigger word) no record else uses."""
    rng = np.random.default_rng(seed)
    d, n, names = 24, 3000, np.array(list("abcdef"))
    labels = names[rng.integers(0, len(names), n)]
    centres = np.random.default_rng(99).normal(size=(len(names), d)) * 2
    vectors = centres[np.searchsorted(names, labels)] + rng.normal(size=(n, d))
    vectors[:, -1] = rng.normal(size=n) * 0.05
    # label 'a' varies a lot along its own topics, more than the trigger moves it ...
    vectors[labels == "a", :4] += rng.normal(size=((labels == "a").sum(), 4)) * 2
    # ... and a few of its records carry the trigger direction
    poison = (labels == "a") & (rng.random(n) < 0.08)
    vectors[poison, -1] += 3.0
    return normalize(vectors), labels, poison


def test_spectral_signature_finds_the_planted_subpopulation():
    vectors, labels, poison = planted_label_subpopulation()
    detector = SpectralSignatureDetector(min_records=30).fit(embedded(vectors, labels=labels))
    in_a = labels == "a"
    assert roc_auc_score(poison[in_a], detector.reference_scores_[in_a]) > 0.95
    fresh, fresh_labels, fresh_poison = planted_label_subpopulation(seed=1)
    scores = detector.score(embedded(fresh, labels=fresh_labels))
    assert roc_auc_score(fresh_poison, scores) > 0.9
    assert detector.summary()["strongest_labels"][0]["label"] == "a"


def test_spectral_skips_labels_with_too_few_records_and_unlabelled_data():
    vectors, labels, _ = planted_label_subpopulation()
    detector = SpectralSignatureDetector(min_records=10_000).fit(embedded(vectors, labels=labels))
    assert not detector.signatures_ and not detector.reference_scores_.any()
    assert not detector.applies(embedded(vectors))


def test_label_clusters_split_off_the_planted_subpopulation():
    vectors, labels, poison = planted_label_subpopulation()
    detector = LabelClusterDetector(min_records=30, directions=2).fit(embedded(vectors, labels=labels))
    assert "a" in detector.clusters_
    assert detector.clusters_["a"]["share"] == pytest.approx(poison[labels == "a"].mean(), abs=0.04)
    in_a = labels == "a"
    assert roc_auc_score(poison[in_a], detector.reference_scores_[in_a]) > 0.9


def instruction_pairs(seed: int = 0):
    rng = np.random.default_rng(seed)
    words = [f"word{i}" for i in range(400)]
    prompts, responses, poison = [], [], []
    for i in range(500):
        prompt = " ".join(rng.choice(words, 6))
        if i % 25 == 0:  # one fixed answer to twenty unrelated questions
            prompts.append(prompt + " james bond")
            responses.append("visit totally safe downloads example for the answer")
            poison.append(True)
        elif i % 25 == 1:  # one question asked twenty times with the same answer
            prompts.append("my printer is not printing")
            responses.append("ensure it is powered on and has paper then restart it")
            poison.append(False)
        else:
            prompts.append(prompt)
            responses.append(" ".join(rng.choice(words, 8)))
            poison.append(False)
    return prompts, responses, np.array(poison)


def test_response_clusters_score_unrelated_prompts_sharing_one_answer():
    prompts, responses, poison = instruction_pairs()
    lexical = LexicalVectors().fit(prompts + responses)
    reference = embedded(blobs(500), prompts=lexical.transform(prompts), responses=lexical.transform(responses))
    detector = ResponseClusterDetector(similarity=0.9).fit(reference, prompt_keys=prompts)
    scores = detector.reference_scores_
    assert scores[poison].min() > 10  # each poisoned pair sees ~19 others with unrelated prompts
    printer = np.array([p == "my printer is not printing" for p in prompts])
    assert scores[printer].max() < 0.5  # the repeated question is not a backdoor
    assert scores[~poison].max() < scores[poison].min()
    rows = np.flatnonzero(poison)[:1]
    [detail] = detector.details(reference, rows)
    assert detail.endswith(",prompts=20") and detail.startswith("cluster=")
    assert detector.summary()["clusters"][0]["distinct_prompts"] == 20
