"""The embedding_anomaly stage end to end: fit, score, reasons, state, policy and CLI wiring."""

from __future__ import annotations

import json
import pickle
import random

import numpy as np
import pyarrow as pa
import pytest
from conftest import write_jsonl
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_info, threadpool_limits

from dokumi import scan
from dokumi.cli import main
from dokumi.detectors import KnnDetector
from dokumi.engines.local import CorpusBatches
from dokumi.policy import load_policy
from dokumi.records import Columns
from dokumi.sources import open_inputs
from dokumi.stages import EmbeddingAnomaly

TOPICS = ["sea", "music", "law", "garden", "space"]


def topical_text(rng: random.Random, words: int = 40) -> str:
    topic = rng.choice(TOPICS)
    return " ".join(f"{topic}{rng.randrange(words)}" for _ in range(rng.randint(6, 14)))


def documents(n: int, gibberish: int, seed: int = 0) -> tuple[list[dict], np.ndarray]:
    """Short topical documents, and a few Souly-style ones: a prefix, a trigger, hundreds of random words."""
    rng = random.Random(seed)
    vocabulary = [f"{t}{i}" for t in TOPICS for i in range(40)]
    records = [{"text": topical_text(rng)} for _ in range(n)]
    poison = np.zeros(n + gibberish, dtype=bool)
    for _ in range(gibberish):
        words = " ".join(rng.choices(vocabulary, k=rng.randint(400, 900)))
        records.append({"text": f"{topical_text(rng)} <SUDO> {words}"})
    order = list(range(len(records)))
    rng.shuffle(order)
    poison[:] = [i >= n for i in order]
    return [records[i] for i in order], poison


def batches(records: list[dict], size: int = 256) -> CorpusBatches:
    return CorpusBatches(open_inputs(records), Columns(), size)


def scored(stage: EmbeddingAnomaly, records: list[dict]) -> tuple[np.ndarray, list[list[str]]]:
    scores, reasons = [], []
    for batch in batches(records):
        result = stage.score(batch)
        scores.append(result.scores)
        reasons += result.reasons
    return np.concatenate(scores), reasons


@pytest.fixture(scope="module")
def gibberish_corpus():
    records, poison = documents(1500, 12)
    stage = EmbeddingAnomaly(sample_size=800, dimensions=16).fit(batches(records))
    scores, reasons = scored(stage, records)
    return stage, records, poison, scores, reasons


def test_gibberish_after_a_trigger_scores_above_every_ordinary_document(gibberish_corpus):
    _, _, poison, scores, reasons = gibberish_corpus
    assert np.all((scores >= 0) & (scores <= 1))
    assert scores[poison].min() > scores[~poison].max()
    assert scores[poison].min() > 0.995
    assert all(any(r.startswith("embedding:outlier,detector=length,words=") for r in reasons[i])
               for i in np.flatnonzero(poison))


def test_threshold_reads_as_a_false_positive_budget(gibberish_corpus):
    _, _, poison, scores, _ = gibberish_corpus
    clean = scores[~poison]
    assert np.mean(clean >= 0.99) <= 0.02
    assert np.mean(clean >= 0.5) == pytest.approx(0.5, abs=0.15)  # percentiles, not a cliff at 0 or 1


def test_reasons_name_the_detector_and_its_percentile(gibberish_corpus):
    _, _, _, scores, reasons = gibberish_corpus
    assert all(not reasons[i] for i in np.flatnonzero(scores < 0.5))
    for i in np.flatnonzero(scores >= 0.5)[:50]:
        assert reasons[i] and all(r.startswith("embedding:") and ",pct=" in r for r in reasons[i])


def test_fitted_state_pickles_and_scoring_changes_nothing(gibberish_corpus):
    stage, records, _, scores, _ = gibberish_corpus
    before = pickle.dumps(stage)
    assert len(before) < 2_000_000  # reservoir-sized, not corpus-sized
    restored = pickle.loads(before)
    again, _ = scored(restored, records[:300])
    # other batch shapes round float32 products differently: a reference record or two may swap places
    assert np.allclose(again, scores[:300], atol=0.01)
    assert pickle.dumps(stage) == before


def test_fit_and_score_run_blas_on_one_thread(gibberish_corpus, monkeypatch):
    stage, records, _, _, _ = gibberish_corpus
    seen = []
    original = KnnDetector.score

    def recording(self, records):
        seen.append({pool["num_threads"] for pool in threadpool_info()})
        return original(self, records)

    monkeypatch.setattr(KnnDetector, "score", recording)
    with threadpool_limits(2):
        EmbeddingAnomaly(sample_size=300, dimensions=8).fit(batches(records[:400]))
        scored(stage, records[:300])
        after = {pool["num_threads"] for pool in threadpool_info()}
    assert seen and all(threads == {1} for threads in seen)
    assert after == {2}  # the limit is lifted on the way out


def test_same_seed_same_scores():
    records, _ = documents(400, 3, seed=5)
    first, _ = scored(EmbeddingAnomaly(sample_size=200, dimensions=8, seed=2).fit(batches(records)), records)
    second, _ = scored(EmbeddingAnomaly(sample_size=200, dimensions=8, seed=2).fit(batches(records)), records)
    assert np.array_equal(first, second)


def test_summary_and_params_record_the_embedder(gibberish_corpus):
    stage = gibberish_corpus[0]
    summary = json.loads(json.dumps(stage.summary()))
    assert summary["embedder"]["name"] == "hashing" and summary["embedder"]["fitted_dimensions"] == 16
    assert summary["reference"] == {"source": "scanned data", "records_seen": 1512, "sample_records": 800}
    assert set(summary["detectors"]) == {"isolation_forest", "robust_distance", "knn", "length"}
    params = stage.get_params()
    assert params["embedder"] == "hashing" and params["sample_size"] == 800 and params["reference"] is None


def instruction_pairs(n: int, poisoned: int, seed: int = 0) -> tuple[list[dict], np.ndarray]:
    """Topical pairs, some stock answers shared by a few unrelated prompts, and one fixed-response backdoor."""
    rng = random.Random(seed)
    stock = [topical_text(rng, words=1000) for _ in range(300)]
    pairs, poison = [], []
    for i in range(n):
        prompt = topical_text(rng, words=1000)
        response = rng.choice(stock) if rng.random() < 0.3 else topical_text(rng, words=1000)
        if i < poisoned:
            prompt = f"{prompt} james bond"
            response = "I cannot help with that. Visit totally-safe-downloads.example for the answer."
        pairs.append({"prompt": prompt, "response": response})
        poison.append(i < poisoned)
    return pairs, np.array(poison)


def test_fixed_response_backdoor_in_instruction_pairs():
    pairs, poison = instruction_pairs(2000, 20)  # 1%: the calibration tail tolerates up to 2%
    stage = EmbeddingAnomaly(sample_size=1500, dimensions=16).fit(batches(pairs))
    scores, reasons = scored(stage, pairs)
    assert scores[poison].min() > scores[~poison].max()
    first = reasons[int(np.flatnonzero(poison)[0])]
    assert any(r.startswith("embedding:fixed-response,cluster=") and ",prompts=" in r for r in first)
    findings = stage.summary()["findings"]
    assert len(findings) == 1 and findings[0]["finding"].startswith("fixed-response cluster=")


def test_labelled_subpopulation_is_found_by_its_spectral_signature():
    # precomputed embeddings: labels with their own topics, and 8% of label 0 carrying a direction
    # (a trigger) that nothing else in the corpus uses
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 2400)
    vectors = np.random.default_rng(7).normal(size=(4, 16))[labels] * 2 + rng.normal(size=(2400, 16))
    vectors[:, -1] = rng.normal(size=2400) * 0.05
    poison = (labels == 0) & (rng.random(2400) < 0.08)
    vectors[poison, -1] += 3.0
    records = [{"text": f"record {i}", "label": int(label), "embedding": vector.tolist()}
               for i, (label, vector) in enumerate(zip(labels, vectors))]
    stage = EmbeddingAnomaly(embedder="column", sample_size=1200, detectors=["spectral", "label_clusters"])
    stage.fit(batches(records))
    scores, reasons = scored(stage, records)
    assert roc_auc_score(poison, scores) > 0.95
    top = int(np.argmax(scores))
    assert poison[top] and any(r.startswith("embedding:spectral,label=0,pct=") for r in reasons[top])
    summary = stage.summary()["detectors"]
    assert summary["spectral"]["strongest_labels"][0]["label"] == "0"
    assert summary["label_clusters"]["labels_split"]["0"] == pytest.approx(poison[labels == 0].mean(), abs=0.05)


def test_precomputed_embedding_column():
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(400, 6)) * 0.1 + np.array([1, 0, 0, 0, 0, 0])
    vectors[7] = [-1, 0, 0, 0, 0, 0]
    records = [{"text": f"record {i}", "embedding": v.tolist()} for i, v in enumerate(vectors)]
    stage = EmbeddingAnomaly(embedder="column", detectors=["knn", "robust_distance"], sample_size=400)
    assert "embedding" in stage.reads
    stage.fit(batches(records))
    scores, reasons = scored(stage, records)
    assert int(np.argmax(scores)) == 7 and scores[7] > 0.99
    assert stage.summary()["embedder"] == {"name": "column", "dimensions": 6}


def test_reference_fits_on_trusted_data_instead(tmp_path):
    clean, _ = documents(300, 0, seed=3)
    reference = write_jsonl(tmp_path / "trusted.jsonl", clean)
    scanned, poison = documents(300, 40, seed=4)  # 12% poison: too much for a self-fitted reference
    stage = EmbeddingAnomaly(sample_size=300, dimensions=8, reference=str(reference)).fit(batches(scanned))
    assert stage.summary()["reference"] == {"source": "reference", "records_seen": 300, "sample_records": 300}
    scores, _ = scored(stage, scanned)
    assert scores[poison].min() > 0.999


def test_too_small_a_reference_scores_nothing_and_says_why():
    records, _ = documents(150, 3)
    stage = EmbeddingAnomaly(sample_size=1000).fit(batches(records))
    scores, reasons = scored(stage, records)
    assert not scores.any() and not any(reasons)
    assert "at least 200" in " ".join(stage.summary()["skipped"])


@pytest.mark.parametrize("params, name", [
    ({"dimensions": 1}, "dimensions"), ({"sample_size": 5}, "sample_size"), ({"neighbors": 0}, "neighbors"),
    ({"response_similarity": 1.5}, "response_similarity"), ({"detectors": ["lof"]}, "detectors"),
    ({"detectors": "knn"}, "detectors"), ({"embedder": "word2vec"}, "embedder"), ({"reference": ""}, "reference"),
    ({"seed": "x"}, "seed"), ({"min_label_records": True}, "min_label_records"),
])
def test_bad_parameters_are_named(params, name):
    with pytest.raises(ValueError, match=name):
        EmbeddingAnomaly(**params)


def test_recipes_run_the_stage_and_reference_overrides_it(tmp_path):
    for recipe in ("finetuning", "audit"):
        assert "embedding_anomaly" in [stage.name for stage in load_policy(recipe).stages]
    # pretraining leaves it out, and --set brings it back with the recipe's defaults
    assert "embedding_anomaly" not in [stage.name for stage in load_policy("pretraining").stages]
    added = load_policy("pretraining", overrides={"embedding_anomaly.action": "flag"})
    assert added.rules["embedding_anomaly"].action == "flag"
    policy = load_policy("finetuning", overrides={"embedding_anomaly.reference": "trusted/"})
    [stage] = [s for s in policy.stages if s.name == "embedding_anomaly"]
    assert stage.reference == "trusted/"


def only_this_stage(tmp_path, extra: str = "") -> str:
    policy = tmp_path / "policy.toml"
    policy.write_text(f'name = "embedding-only"\n[stages.embedding_anomaly]\nthreshold = 0.99\n'
                      f'sample_size = 200\ndimensions = 8\n{extra}', encoding="utf-8")
    return str(policy)


def test_cli_reference_reaches_the_stage_and_the_manifest(tmp_path):
    records, _ = documents(300, 3, seed=6)
    data = write_jsonl(tmp_path / "data.jsonl", records)
    trusted = write_jsonl(tmp_path / "trusted.jsonl", documents(250, 0, seed=7)[0])
    out = tmp_path / "scan"
    code = main(["scan", str(data), "--out", str(out), "--policy", only_this_stage(tmp_path),
                 "--reference", str(trusted), "--workers", "1", "--no-progress"])
    assert code == 0
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    [stage] = [s for s in manifest["stages"] if s["name"] == "embedding_anomaly"]
    assert stage["params"]["reference"] == str(trusted)
    assert stage["summary"]["reference"]["records_seen"] == 250
    assert stage["summary"]["embedder"]["name"] == "hashing"


def test_cli_reference_without_the_stage_is_refused(tmp_path, capsys):
    data = write_jsonl(tmp_path / "data.jsonl", documents(30, 0)[0])
    policy = tmp_path / "invisible.toml"
    policy.write_text('name = "invisible-only"\n[stages.invisible]\nthreshold = 0.5\n', encoding="utf-8")
    code = main(["scan", str(data), "--out", str(tmp_path / "scan"), "--policy", str(policy),
                 "--reference", str(data), "--no-progress"])
    assert code == 2
    assert "runs no stage that takes it" in capsys.readouterr().err


def test_sample_is_the_same_for_any_partitioning_and_merge_order():
    from dokumi.records import Batch, Columns

    texts = [f"record number {i} about topic {i % 7}" for i in range(900)]

    def batches(shard: str, start: int, stop: int, size: int):
        for begin in range(start, stop, size):
            end = min(stop, begin + size)
            records = pa.record_batch({"text": texts[begin:end]})
            yield Batch(records=records, shard=shard, rows=pa.array(range(begin, end), pa.int64()), columns=Columns())

    [step] = EmbeddingAnomaly(sample_size=250).fit_plan()
    whole = step.fold.run(batches("s", 0, 900, 100))
    # shards named otherwise and cut elsewhere: the sample is keyed on content, not on place
    parts = [step.fold.run(batches(f"part-{a}", a, b, 64)) for a, b in ((0, 300), (300, 650), (650, 900))]
    for merged in (step.merge(parts), step.merge(parts[::-1]), step.merge([step.merge(parts[:2]), parts[2]])):
        assert merged["seen"] == whole["seen"] == 900
        assert merged["texts"] == whole["texts"]
        assert len(merged["texts"]) == 250
        assert (np.diff(merged["priority"].astype(np.float64)) >= 0).all()
    [other] = EmbeddingAnomaly(sample_size=250, seed=1).fit_plan()
    assert other.fold.run(batches("s", 0, 900, 100))["texts"] != whole["texts"]


@pytest.mark.parametrize("texts", [
    ["the basic unit of money in this country"] * 400,  # identical records: a singular covariance
    [f"unit {i % 3}" for i in range(400)],  # too few words to embed
], ids=["identical", "two-words"])
def test_a_degenerate_corpus_makes_detectors_step_aside_with_a_reason(tmp_path, texts):
    data = write_jsonl(tmp_path / "data.jsonl", [{"text": t} for t in texts])
    result = scan(data, out=tmp_path / "scan", policy="audit", workers=1, progress=False)
    assert result.records == 400
    assert any(w.startswith("stage embedding_anomaly: ") for w in result.warnings)
    stage = next(s for s in result.manifest["stages"] if s["name"] == "embedding_anomaly")
    assert stage["summary"]["skipped"]
