"""The near_duplicates stage: repetition screening, dedup, protected set, cross-run index, determinism."""

from __future__ import annotations

import json
import pickle
import random
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dokumi.cli import main
from dokumi.engines.local import CorpusBatches
from dokumi.errors import InputError
from dokumi.pipeline import Pipeline
from dokumi.policy import load_policy
from dokumi.records import Columns
from dokumi.scan import scan
from dokumi.sources import open_inputs
from dokumi.stages.near_duplicates import NearDuplicates, repetition_score

VOCABULARY = [f"word{i}" for i in range(4000)]


def _unique_docs(rng: random.Random, n: int, words: int = 30) -> list[str]:
    return [" ".join(rng.choices(VOCABULARY, k=words)) for _ in range(n)]


def _copies(rng: random.Random, text: str, n: int) -> list[str]:
    """Lightly edited copies: one word inserted, deleted or swapped, sometimes a lead-in."""
    copies = []
    for _ in range(n):
        words = text.split()
        i = rng.randrange(len(words) - 1)
        op = rng.randrange(3)
        if op == 0:
            words.insert(i, "really")
        elif op == 1:
            del words[i]
        else:
            words[i], words[i + 1] = words[i + 1], words[i]
        copies.append(rng.choice(["", "News: ", "Update: "]) + " ".join(words))
    return copies


def _score(stage: NearDuplicates, texts: list[str]) -> tuple[np.ndarray, list[list[str]]]:
    """Fit and score with a rule that flags anything above 0, so every reason is reported."""
    from dokumi.policy import StageRule

    batches = list(Pipeline([stage], rules={stage.name: StageRule(threshold=1e-9)}, batch_size=16)
                   .score([{"text": t} for t in texts]))
    scores = np.concatenate([b.column("near_duplicates_score").to_numpy() for b in batches])
    reasons = [r for b in batches for r in b.column("reasons").to_pylist()]
    return scores, reasons


@pytest.fixture
def corpus() -> tuple[list[str], np.ndarray]:
    rng = random.Random(0)
    unique = _unique_docs(rng, 120)
    copies = _copies(rng, " ".join(rng.choices(VOCABULARY, k=40)), 25)
    texts = unique + copies
    order = list(range(len(texts)))
    rng.shuffle(order)
    return [texts[i] for i in order], np.array([i >= len(unique) for i in order])


def test_repetition_mode_scores_every_copy_and_no_unique_document(corpus):
    texts, is_copy = corpus
    scores, reasons = _score(NearDuplicates(min_cluster_size=10), texts)
    assert (scores[is_copy] > 0.5).all()
    assert (scores[~is_copy] == 0).all()
    sizes = {r for i in np.flatnonzero(is_copy) for r in reasons[i]}
    assert len(sizes) == 1
    assert re.fullmatch(r"near-duplicate:cluster=[0-9a-f]{12},size=25", sizes.pop())
    assert all(not reasons[i] for i in np.flatnonzero(~is_copy))


def test_scores_are_graded_by_cluster_size():
    rng = random.Random(1)
    texts = (_unique_docs(rng, 300) + _copies(rng, " ".join(rng.choices(VOCABULARY, k=40)), 4)
             + _copies(rng, " ".join(rng.choices(VOCABULARY, k=40)), 30))
    scores, _ = _score(NearDuplicates(min_cluster_size=10, min_cluster_share=1.0), texts)
    small, large = scores[300:304], scores[304:]
    assert 0 < small.min() and small.max() < 0.5 < large.min()
    assert repetition_score(1, 10) == 0.0 and repetition_score(10, 10) == 0.5
    assert repetition_score(4, 10) < repetition_score(9, 10) < repetition_score(11, 10) < repetition_score(300, 10) < 1


def test_a_small_corpus_lowers_the_size_that_counts_as_repetition():
    rng = random.Random(2)
    texts = _unique_docs(rng, 40) + _copies(rng, " ".join(rng.choices(VOCABULARY, k=40)), 3)
    default_share, _ = _score(NearDuplicates(min_cluster_size=50), texts)
    # 1% of 43 records is below 2, so the boundary is 2 records: three copies score 1 - 0.5 * 1 / 2
    assert (default_share[40:] == 0.75).all()
    tiny_share, _ = _score(NearDuplicates(min_cluster_size=50, min_cluster_share=0.5), texts)
    assert (tiny_share[40:] < 0.5).all()


def test_dedup_mode_keeps_one_record_of_each_cluster_whatever_the_order():
    rng = random.Random(3)
    original = " ".join(rng.choices(VOCABULARY, k=40))
    cluster = [original] + _copies(rng, original, 3) + [original]  # an exact copy too: 5 records
    texts = _unique_docs(rng, 50) + cluster
    kept = set()
    for order in (list(range(len(texts))), list(range(len(texts)))[::-1]):
        records = [{"id": f"r{i}", "text": texts[i]} for i in order]
        scores = np.concatenate([b.column("near_duplicates_score").to_numpy() for b in Pipeline(
            [NearDuplicates(mode="dedup", jaccard=0.5)], batch_size=16).score(records)])
        by_id = dict(zip((r["id"] for r in records), scores.tolist()))
        representatives = [f"r{i}" for i in range(50, 55) if by_id[f"r{i}"] == 0]
        assert len(representatives) == 1  # the exact copy is a duplicate too
        assert all(np.isclose(by_id[f"r{i}"], 1 - 0.5 / 4) for i in range(50, 55) if f"r{i}" not in representatives)
        assert all(by_id[f"r{i}"] == 0 for i in range(50))
        kept.add(representatives[0])
    assert len(kept) == 1  # the same record in either order


@pytest.mark.parametrize("verify", ["signature", "exact", "off"])
def test_every_check_finds_the_copies(corpus, verify):
    texts, is_copy = corpus
    scores, _ = _score(NearDuplicates(min_cluster_size=10, verify=verify), texts)
    assert (scores[is_copy] > 0.5).all() and (scores[~is_copy] == 0).all()


def test_protected_documents_are_reported(tmp_path):
    rng = random.Random(4)
    secret = " ".join(rng.choices(VOCABULARY, k=40))
    (tmp_path / "protected.jsonl").write_text(json.dumps({"text": secret}) + "\n")
    texts = _unique_docs(rng, 60) + _copies(rng, secret, 1)
    scores, reasons = _score(NearDuplicates(protect=str(tmp_path)), texts)
    assert scores[60] == 1.0 and "near-duplicate:protected" in reasons[60]
    assert (scores[:60] == 0).all()


def test_an_index_carries_an_earlier_corpus_into_the_next_run(tmp_path):
    rng = random.Random(5)
    original = " ".join(rng.choices(VOCABULARY, k=40))
    first = NearDuplicates(mode="dedup", jaccard=0.5)
    Pipeline([first]).fit([{"text": t} for t in _unique_docs(rng, 30) + [original]])
    written = first.save_state(tmp_path / "state" / "near_duplicates")
    assert {p.name for p in written} == {"signatures.npy", "contents.parquet", "params.json"}
    assert np.load(tmp_path / "state" / "near_duplicates" / "signatures.npy").shape == (31, 128)

    second = NearDuplicates(mode="dedup", jaccard=0.5, index=str(tmp_path))  # a scan's output folder works
    scores, reasons = _score(second, _unique_docs(rng, 20) + _copies(rng, original, 1))
    # the earlier scan's record represents the cluster: the new copy is the duplicate
    assert scores[20] == 0.5 and reasons[20][0].endswith(",size=2,earlier=1")
    assert (scores[:20] == 0).all()
    # the state of the second run holds both corpora
    second.save_state(tmp_path / "second")
    assert len(pq.read_table(tmp_path / "second" / "contents.parquet")) == 52

    with pytest.raises(InputError, match="was built with ngram=5; this stage uses 3"):
        Pipeline([NearDuplicates(ngram=3, index=str(tmp_path))]).fit([{"text": "a b c"}])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="--index .*: not a scan folder"):
        Pipeline([NearDuplicates(index=str(tmp_path / "empty"))]).fit([{"text": "a b c"}])


def test_copies_sent_to_workers_are_small_and_score_the_same(corpus, tmp_path):
    texts, _ = corpus
    stage = NearDuplicates(min_cluster_size=10)
    records = [{"text": t} for t in texts]
    Pipeline([stage]).fit(records)
    copy = pickle.loads(pickle.dumps(stage))
    assert not hasattr(copy, "index_")
    # workers get the clustered contents' signatures (to place new records), not every content's
    clustered = sum(c is not None for c in stage.index_.cluster)
    assert len(copy.probe_.signatures) == clustered < len(stage.index_.signature) and clustered >= 20
    assert len(pickle.dumps(stage)) < stage.index_.signature.nbytes / 2
    with pytest.raises(RuntimeError, match="process that ran fit"):
        copy.save_state(tmp_path)
    batches = list(CorpusBatches(open_inputs(records), Columns(), 16))
    assert [stage.score(b).scores.tolist() for b in batches] == [copy.score(b).scores.tolist() for b in batches]
    assert sum(r != [] for b in batches for r in copy.score(b).reasons) == 25


def test_copies_made_after_the_state_is_saved_read_the_probe_from_it(corpus, tmp_path):
    """In a scan every record was fitted, so the copies sent to workers (and kept for --resume) leave the
    clusters' signatures in the saved state and read them only for a record the fit never saw."""
    texts, _ = corpus
    rng = random.Random(11)
    stage = NearDuplicates(min_cluster_size=10)
    Pipeline([stage]).fit([{"text": t} for t in texts])
    unsaved = len(pickle.dumps(stage))
    written = stage.save_state(tmp_path / "state")
    assert {p.name for p in written} == {"signatures.npy", "contents.parquet", "params.json", "words.npy"}
    copy = pickle.loads(pickle.dumps(stage))
    assert len(pickle.dumps(stage)) < unsaved - stage.probe_.signatures.nbytes
    # records the fit never saw: copies of a planted cluster's text join it, unique ones stay alone
    planted = [t for t, r in zip(texts, stage.score(_batch(texts)).reasons) if r][0]
    new = _copies(rng, planted, 3) + _unique_docs(rng, 5)
    fitted, copied = stage.score(_batch(new)), copy.score(_batch(new))
    assert fitted.scores.tolist() == copied.scores.tolist() and fitted.reasons == copied.reasons
    assert all(copied.reasons[:3]) and not any(copied.reasons[3:])
    assert copied.duplicate.tolist() == fitted.duplicate.tolist()
    # without its saved state a copy says what it is missing, instead of scoring new records as unique
    gone, other = pickle.loads(pickle.dumps(stage)), pickle.loads(pickle.dumps(stage))
    (tmp_path / "state" / "signatures.npy").unlink()
    with pytest.raises(RuntimeError, match="never saw needs the clusters' signatures"):
        gone.score(_batch(new))
    # nor reads another fit's state saved in its place
    refitted = NearDuplicates(min_cluster_size=10)
    Pipeline([refitted]).fit([{"text": t} for t in texts[::2]])
    refitted.save_state(tmp_path / "state")
    with pytest.raises(RuntimeError, match="another fit's contents"):
        other.score(_batch(new))


def _batch(texts: list[str]):
    return next(iter(CorpusBatches(open_inputs([{"text": t} for t in texts]), Columns(), len(texts))))


def test_copies_keep_the_band_choice_and_follow_a_changed_jaccard(corpus, monkeypatch):
    """A worker's copy does not integrate datasketch's band choice again (a second of CPU per process)."""
    import dokumi.stages.near_duplicates.stage as module

    texts, _ = corpus
    stage = NearDuplicates(min_cluster_size=10)
    Pipeline([stage]).fit([{"text": t} for t in texts])
    chosen = stage.bands
    copy = pickle.loads(pickle.dumps(stage))
    calls = []
    monkeypatch.setattr(module, "band_parameters", lambda *args: calls.append(args) or (7, 2))
    assert copy.bands == chosen and not calls
    copy.jaccard = 0.9  # a changed threshold is chosen for again
    assert copy.bands == (7, 2) and calls == [(0.9, copy.num_perm)]


def test_summary_names_the_signature_scheme_and_the_largest_cluster(corpus):
    texts, _ = corpus
    stage = NearDuplicates(min_cluster_size=10)
    assert stage.summary() == {}
    Pipeline([stage]).fit([{"text": t} for t in texts])
    summary = stage.summary()
    assert summary["signature"] == {"num_perm": 128, "seed": 1, "ngram": 5, "scheme": "affine32",
                                    "hashfunc": "dokumi.minhash.shingle_hash32"}
    assert summary["largest"][0]["size"] == 25 and summary["clusters"] == 1
    assert summary["findings"] == [{"finding": f"near-duplicate cluster {summary['largest'][0]['cluster']}",
                                    "records": 25}]
    json.dumps(summary)


@pytest.mark.parametrize("kwargs, name", [
    ({"mode": "drop"}, "mode"), ({"jaccard": 1.0}, "jaccard"), ({"verify": "maybe"}, "verify"),
    ({"min_cluster_size": 1}, "min_cluster_size"), ({"min_cluster_share": 0}, "min_cluster_share"),
    ({"protect": 3}, "protect"), ({"index": ""}, "index"), ({"ngram": 0}, "ngram"),
])
def test_invalid_parameters_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        NearDuplicates(**kwargs)


def test_side_inputs_are_checked_before_any_data_is_read(tmp_path):
    (tmp_path / "eval.jsonl").write_text(json.dumps({"question": "no text column"}) + "\n")
    read = []

    def records():
        read.append(1)
        yield {"text": "a b c"}

    for path, message in ((tmp_path / "missing", "--protect .*does not exist"),
                          (tmp_path / "eval.jsonl", "--protect .*eval.jsonl: no column 'text'")):
        with pytest.raises(InputError, match=message):
            next(Pipeline([NearDuplicates(protect=str(path))]).score(records()))
    assert not read


def test_recipes_configure_the_stage():
    dedup = load_policy("dedup")
    stage = next(s for s in dedup.stages if s.name == "near_duplicates")
    assert stage.mode == "dedup" and dedup.rules["near_duplicates"].duplicates == "duplicate"
    for name in ("pretraining", "finetuning", "audit"):
        policy = load_policy(name)
        stage = next(s for s in policy.stages if s.name == "near_duplicates")
        assert stage.mode == "repetition" and policy.rules["near_duplicates"].duplicates == "duplicate"
    # redundancy is no evidence: only the audit recipe flags by cluster size
    assert load_policy("audit").rules["near_duplicates"].action == "flag"
    assert load_policy("pretraining").rules["near_duplicates"].action == "off"


def _write_shards(directory, texts: list[str], shards: int = 4) -> list[str]:
    directory.mkdir()
    paths = []
    for k in range(shards):
        path = directory / f"part-{k}.parquet"
        pq.write_table(pa.table({"text": texts[k::shards]}), path, row_group_size=7)
        paths.append(str(path))
    return paths


def _scores_by_record(out) -> list[tuple]:
    table = pa.concat_tables([pq.read_table(p) for p in sorted((out / "scores").glob("*.parquet"))])
    rows = zip(*[table.column(c).to_pylist() for c in ("shard", "row", "near_duplicates_score", "reasons")])
    return sorted(rows)


def test_clusters_do_not_depend_on_shard_order_or_workers(tmp_path):
    rng = random.Random(6)
    texts = _unique_docs(rng, 80)
    for size in (12, 5, 2):
        texts += _copies(rng, " ".join(rng.choices(VOCABULARY, k=40)), size)
    rng.shuffle(texts)
    paths = _write_shards(tmp_path / "in", texts)
    policy = tmp_path / "policy.toml"
    policy.write_text('[stages.near_duplicates]\naction = "flag"\nthreshold = 0.000001\nmin_cluster_size = 10\n')
    scan(paths, tmp_path / "one", policy=str(policy), workers=1, progress=False)
    shuffled = paths[:]
    random.Random(1).shuffle(shuffled)
    assert shuffled != paths
    scan(shuffled, tmp_path / "two", policy=str(policy), workers=2, batch_size=5, progress=False)
    one, two = _scores_by_record(tmp_path / "one"), _scores_by_record(tmp_path / "two")
    assert one == two
    clustered = [r for r in one if r[3]]
    assert len(clustered) == 19 and len({r[3][0] for r in clustered}) == 3


def test_cli_protect_and_index_map_to_the_stage(tmp_path, capsys):
    rng = random.Random(7)
    secret = " ".join(rng.choices(VOCABULARY, k=40))
    (tmp_path / "eval.jsonl").write_text(json.dumps({"text": secret}) + "\n")
    paths = _write_shards(tmp_path / "in", _unique_docs(rng, 30) + _copies(rng, secret, 1), shards=1)
    assert main(["scan", *paths, "--out", str(tmp_path / "first"), "--policy", "audit",
                 "--protect", str(tmp_path / "eval.jsonl"), "--workers", "1", "--no-progress"]) == 0
    manifest = json.loads((tmp_path / "first" / "manifest.json").read_text())
    stage = next(s for s in manifest["stages"] if s["name"] == "near_duplicates")
    assert stage["params"]["protect"] == str(tmp_path / "eval.jsonl")
    assert stage["summary"]["protected_matches"] == 1
    assert (tmp_path / "first" / "state" / "near_duplicates" / "signatures.npy").exists()

    later = _write_shards(tmp_path / "later", _copies(rng, secret, 1) + _unique_docs(rng, 5), shards=1)
    assert main(["scan", *later, "--out", str(tmp_path / "second"), "--policy", "audit",
                 "--index", str(tmp_path / "first"), "--workers", "1", "--no-progress"]) == 0
    manifest = json.loads((tmp_path / "second" / "manifest.json").read_text())
    stage = next(s for s in manifest["stages"] if s["name"] == "near_duplicates")
    assert stage["summary"]["indexed"] == 31 and stage["summary"]["largest"][0]["earlier"] == 1
    capsys.readouterr()


def test_pretraining_sets_copies_apart_as_duplicates_whatever_the_order(tmp_path, capsys):
    rng = random.Random(11)
    original = " ".join(rng.choices(VOCABULARY, k=40))
    copies = _copies(rng, original, 30)
    copies[0] = copies[0].replace(" ", " \u200b", 1)  # one copy also carries a hidden character
    texts = _unique_docs(rng, 60) + copies
    rng.shuffle(texts)
    paths = _write_shards(tmp_path / "in", texts)
    assert main(["scan", *paths, "--out", str(tmp_path / "a"), "--workers", "1", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert main(["scan", *reversed(paths), "--out", str(tmp_path / "b"), "--workers", "1", "--no-progress",
                 "--batch-size", "5"]) == 0
    capsys.readouterr()

    def decided(out):
        table = pa.concat_tables([pq.read_table(p) for p in sorted((out / "scores").glob("*.parquet"))])
        return {(s, r): d for s, r, d in zip(*[table.column(c).to_pylist() for c in ("shard", "row", "decision")])}

    first, second = decided(tmp_path / "a"), decided(tmp_path / "b")
    assert first == second  # the same representative whichever shard comes first
    counts = {d: list(first.values()).count(d) for d in set(first.values())}
    # 30 copies: the hidden-character copy is dropped (evidence outranks redundancy), one representative is
    # kept, the other 28 are duplicates; nothing is flagged for repetition alone
    assert counts == {"keep": 61, "duplicate": 28, "drop": 1}
    duplicates = pa.concat_tables([pq.read_table(p) for p in (tmp_path / "a" / "duplicates").glob("*.parquet")])
    assert duplicates.num_rows == 28 and set(duplicates.column("text").to_pylist()) <= set(copies)
    clean = pa.concat_tables([pq.read_table(p) for p in (tmp_path / "a" / "clean").glob("*.parquet")])
    assert sum(t in set(copies) for t in clean.column("text").to_pylist()) == 1
    manifest = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert manifest["counts"]["decisions"] == {"keep": 61, "duplicate": 28, "flag": 0, "drop": 1}
    assert "duplicates" in {o["kind"] for o in manifest["outputs"]}
    # the summary lists alarms one by one, and copies only by their cluster
    examples = printed.split("flagged and dropped records")[1]
    assert "drop" in examples and "duplicate " not in examples and "duplicates/" in printed


def test_records_that_share_a_passage_are_not_copies_of_each_other(tmp_path):
    rng = random.Random(12)
    footer = " ".join(rng.choices(VOCABULARY, k=40))
    # 60 documents of their own that end in the same 40-word footer (a licence notice, a list footer)
    shared = [" ".join(rng.choices(VOCABULARY, k=25)) + " " + footer for _ in range(60)]
    copies = _copies(rng, " ".join(rng.choices(VOCABULARY, k=40)), 30)
    texts = _unique_docs(rng, 100) + shared + copies
    rng.shuffle(texts)
    paths = _write_shards(tmp_path / "in", texts, shards=2)
    result = scan(paths, tmp_path / "out", policy="pretraining", workers=1, progress=False)
    table = pa.concat_tables([pq.read_table(p) for p in sorted((tmp_path / "out" / "scores").glob("*.parquet"))])
    clean = pa.concat_tables([pq.read_table(p) for p in sorted((tmp_path / "out" / "clean").glob("*.parquet"))])
    kept = set(clean.column("text").to_pylist())
    stage = next(s for s in result.manifest["stages"] if s["name"] == "near_duplicates")
    assert sorted(c["size"] for c in stage["summary"]["largest"][:2]) == [30, 60]  # both clusters are found
    assert all(text in kept for text in shared)  # each has words of its own: none is a copy
    assert sum(text in kept for text in copies) == 1  # the edited copies leave one representative
    assert table.column("decision").to_pylist().count("duplicate") == 29
