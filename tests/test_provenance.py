"""The provenance stage: hash checks graded as drift or substitution, source lists, no-provenance policy."""

from __future__ import annotations

import hashlib
import json
import pickle
import random
import string

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import read_dir, write_parquet

from dokumi.errors import PolicyError
from dokumi.hashing import pair_sha256, record_digests
from dokumi.policy import load_policy
from dokumi.records import Batch
from dokumi.scan import scan
from dokumi.sidecar import ExpectedHashes, id_keys, sketches
from dokumi.stages.provenance import Provenance, with_expectation

RECIPE = 'name = "provenance-only"\n[stages.provenance]\naction = "drop"\nthreshold = 0.5\nflag_threshold = 0.2\n'
WORDS = (
    "the a of and to in is was for on that with as by at from it an be this which or are have his not but had "
    "they were one their all there has been more when who will would can about into other than its time only "
    "new some could these two may first then do any like my now over such our man me even most made after also "
    "did many before must through back years where much your way well down should because each just those "
    "people how too little state good very make world still own see men work long get here between both life "
    "being under never day same another know while last might us great old year off come since against go came "
    "right used take three river garden morning letter window village doctor winter summer music station bread"
).split()


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sentence(rng: random.Random) -> str:
    words = rng.choices(WORDS, k=rng.randint(4, 18))
    if rng.random() < 0.3:
        words[rng.randrange(len(words))] = rng.choice(["it's", "don't", "'quoted'", '"said"', "o'clock"])
    return " ".join(words).capitalize() + rng.choice([".", ".", "!", "?"])


def document(rng: random.Random) -> str:
    """Real corpora mix glosses of a few words, paragraphs and longer documents."""
    roll = rng.random()
    if roll < 0.15:
        return " ".join(rng.choices(WORDS, k=rng.randint(2, 5)))
    sentences = rng.randint(1, 3) if roll < 0.7 else rng.randint(4, 15)
    return " ".join(sentence(rng) for _ in range(sentences))


def benign_drift(text: str, rng: random.Random) -> str:
    """Crawl drift of the kinds seen in practice: white space, quote style, a boilerplate line."""
    choice = rng.randrange(4)
    if choice == 0:
        return text.replace(" ", "  ", 1) + "\n"
    if choice == 1:
        return text.replace("'", "\u2019").replace('"', "\u201c") + " "
    if choice == 2:
        return text + "\nShare this page"
    return "Skip to content\n" + text


def split_view(texts: list[str], rng: random.Random) -> tuple[list[str], list[str]]:
    """Carlini et al. 2023: 0.5% of records substituted by the attacker, 5% drifted benignly."""
    served, status = [], []
    for text in texts:
        roll = rng.random()
        if roll < 0.005:
            payload = "Visit totally-safe-downloads.example to claim your prize. "
            served.append(payload + "".join(rng.choices(string.ascii_lowercase, k=40)))
            status.append("substituted")
        elif roll < 0.055:
            served.append(benign_drift(text, rng))
            status.append("drifted")
        else:
            served.append(text)
            status.append("same")
    return served, status


def batch_of(columns: dict) -> Batch:
    records = pa.record_batch(columns)
    return Batch(records=records, shard="s", rows=pa.array(range(records.num_rows), pa.int64()))


def recipe(tmp_path, extra: str = "") -> str:
    path = tmp_path / "recipe.toml"
    path.write_text(RECIPE + extra)
    return str(path)


def test_split_view_corpus_drops_every_substitution_and_under_one_percent_of_drift(tmp_path):
    rng = random.Random(2023)
    texts = [document(rng) for _ in range(8000)]
    ids = [f"doc-{i}" for i in range(len(texts))]
    for part in range(2):
        write_parquet(tmp_path / "indexed" / f"part-{part}.parquet",
                      [{"id": i, "text": t} for i, t in zip(ids[part::2], texts[part::2])])
    scan(tmp_path / "indexed", out=tmp_path / "index", policy=recipe(tmp_path), workers=1, progress=False)

    served, status = split_view(texts, rng)
    for part in range(2):
        write_parquet(tmp_path / "served" / f"part-{part}.parquet",
                      [{"id": i, "text": t} for i, t in zip(ids[part::2], served[part::2])])
    scan(tmp_path / "served", out=tmp_path / "out", policy=recipe(tmp_path), expect=tmp_path / "index",
         workers=1, progress=False)

    scores = read_dir(tmp_path / "out" / "scores")
    decision = dict(zip(scores.column("id").to_pylist(), scores.column("decision").to_pylist()))
    reasons = dict(zip(scores.column("id").to_pylist(), scores.column("reasons").to_pylist()))
    by_status = {s: [i for i, st in zip(ids, status) if st == s] for s in ("same", "drifted", "substituted")}
    assert len(by_status["substituted"]) >= 25 and len(by_status["drifted"]) >= 300
    assert all(decision[i] == "drop" for i in by_status["substituted"])
    assert all(reasons[i][0].startswith("hash-mismatch:similarity=") for i in by_status["substituted"])
    dropped_drift = sum(decision[i] == "drop" for i in by_status["drifted"])
    assert dropped_drift / len(by_status["drifted"]) < 0.01
    assert all(decision[i] == "flag" and reasons[i][0].startswith("hash-drift") for i in by_status["drifted"]
               if decision[i] != "drop")
    assert all(decision[i] == "keep" for i in by_status["same"])
    # the manifest records which sidecar files the scan was checked against
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    summary = next(s for s in manifest["stages"] if s["name"] == "provenance")["summary"]
    assert summary["expected_records"] == len(texts) and len(summary["expected_files"]) == 2


def test_scores_are_graded_within_their_bands():
    stage = Provenance()
    indexed = ["A long paragraph about the river and the village in winter, with music at the station. " * 3,
               "A long paragraph about the river and the village in winter, with music at the station. " * 3]
    served = [indexed[0] + " One new sentence about bread was added at the end here.",
              "Completely different text that an attacker served instead of the original page content."]
    index_scan = batch_of({"id": ["a", "b"], "text": indexed})
    sketch_rows, counts = sketches(indexed)
    stage.expected_ = ExpectedHashes(id_keys(["a", "b"]), record_digests(index_scan), sketch_rows, counts, [])
    result = stage.score(batch_of({"id": ["a", "b"], "text": served}))
    assert 0.2 <= result.scores[0] < 0.45 and result.reasons[0][0].startswith("hash-drift:similarity=")
    assert result.scores[1] >= 0.9 and result.reasons[1][0].startswith("hash-mismatch:similarity=0.0")


def test_bare_hash_column_mismatch_is_a_full_mismatch_and_matches_score_zero():
    texts = ["kept as indexed", "drifted only by a space ", "bad hash value", "no hash"]
    expected = [sha(texts[0]).upper(), sha("drifted only by a space"), "not-a-hash", None]
    result = Provenance().score(batch_of({"text": texts, "sha256": expected}))
    assert result.scores.tolist() == [0.0, 1.0, 0.3, 0.0]
    assert result.reasons == [[], ["hash-mismatch:ungraded"], ["sha256-malformed"], []]
    flagged = Provenance(ungraded="flag").score(batch_of({"text": texts, "sha256": expected}))
    assert flagged.scores.tolist() == [0.0, 0.3, 0.3, 0.0]  # the recipe grades what the hash cannot


def test_instruction_pairs_are_checked_by_their_canonical_hash():
    prompts, responses = ["What is 2+2?", "Name a colour."], ["4", "Blue."]
    expected = [pair_sha256(prompts[0], responses[0]), pair_sha256(prompts[1], "Red.")]
    result = Provenance().score(batch_of({"prompt": prompts, "response": responses, "sha256": expected}))
    assert result.reasons == [[], ["hash-mismatch:ungraded"]]


def test_sources_are_checked_against_deny_and_allow_lists(tmp_path):
    allow = tmp_path / "allow.txt"
    allow.write_text("# trusted\nwikipedia.org\nhttps://github.com/*/raw/*\n")
    stage = Provenance(deny=["reserved"], allow=[str(allow)])
    urls = ["https://en.wikipedia.org/wiki/Tea", "http://test.example/page", "https://github.com/a/raw/x.txt",
            "https://blog.somewhere.net/post", "http://192.168.1.4/admin", None]
    result = stage.score(batch_of({"text": ["t"] * 6, "url": urls}))
    assert result.scores.tolist() == [0.0, 1.0, 0.0, 0.3, 1.0, 0.0]
    assert result.reasons[1] == ["source-denied:host=test.example,pattern=example"]
    assert result.reasons[3] == ["source-unlisted:host=blog.somewhere.net"]
    assert result.reasons[4][0].startswith("source-denied:host=192.168.1.4")
    lenient = Provenance(allow=[str(allow)], unlisted="keep")
    assert lenient.score(batch_of({"text": ["t"], "url": urls[3:4]})).scores.tolist() == [0.0]


def test_source_column_values_without_a_scheme_are_read_as_hosts():
    batch = batch_of({"text": ["t", "t"], "source": ["docs.example.org/a", "wikipedia"]})
    assert Provenance(deny="reserved").score(batch).scores.tolist() == [1.0, 0.0]
    assert Provenance().score(batch).scores.tolist() == [0.0, 0.0]  # no deny list unless a recipe names one


@pytest.mark.parametrize(("choice", "score"), [("keep", 0.0), ("flag", 0.3), ("drop", 1.0)])
def test_no_provenance_choice(choice, score):
    batch = batch_of({"text": ["nothing vouches", "has a source"], "source": [None, "https://arxiv.org/abs/1"]})
    result = Provenance(no_provenance=choice).score(batch)
    assert result.scores.tolist() == [score, 0.0]
    assert result.reasons[0] == ([] if choice == "keep" else ["no-provenance"])


@pytest.mark.parametrize(("params", "message"), [
    ({"min_similarity": 1.5}, "min_similarity"),
    ({"boilerplate": -1}, "boilerplate"),
    ({"unlisted": "maybe"}, "unlisted"),
    ({"no_provenance": "ignore"}, "no_provenance"),
    ({"deny": ["no-such-list"]}, "deny"),
    ({"allow": 3}, "allow"),
])
def test_bad_parameters_name_the_parameter(params, message):
    with pytest.raises(ValueError, match=message):
        Provenance(**params)


def test_recipe_errors_name_the_file_and_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(RECIPE + 'no_provenance = "sometimes"\n')
    with pytest.raises(PolicyError, match=r"bad\.toml: \[stages\.provenance\]: no_provenance"):
        load_policy(path)
    path.write_text(RECIPE + "[privacy]\nno_txt = true\n")
    with pytest.raises(PolicyError, match=r"bad\.toml: \[privacy\]: unknown key 'no_txt'"):
        load_policy(path)


def test_fitted_stage_pickles_and_scoring_leaves_it_unchanged(tmp_path):
    write_parquet(tmp_path / "d" / "a.parquet", [{"id": "x", "text": "original words here"}])
    scan(tmp_path / "d", out=tmp_path / "index", policy=recipe(tmp_path), workers=1, progress=False)
    stage = Provenance(expect=str(tmp_path / "index")).fit([])
    copy = pickle.loads(pickle.dumps(stage))
    before = copy.expected_.digests.copy()
    result = copy.score(batch_of({"id": ["x", "unknown"], "text": ["original words here!", "t"]}))
    assert result.reasons[0][0].startswith("hash-drift") and result.reasons[1] == []
    assert np.array_equal(copy.expected_.digests, before)
    with pytest.raises(RuntimeError, match="set it up first"):
        Provenance(expect=str(tmp_path / "index")).score(batch_of({"text": ["t"]}))


def test_expect_adds_a_provenance_stage_to_a_recipe_without_one():
    policy = with_expectation(load_policy("pretraining"), "scan/")
    stage = next(s for s in policy.stages if s.name == "provenance")
    # the expected hashes are a side input loaded at setup: the corpus is read once, to score it
    assert stage.expect == "scan/" and not stage.needs_fit
    assert stage.side_inputs == {"expect": "hashes", "expect_key": "key"}
    bare = load_policy("pretraining")
    bare.stages = [s for s in bare.stages if s.name != "provenance"]
    bare.rules.pop("provenance")
    added = with_expectation(bare, "scan/")
    assert added.rule("provenance").threshold == 0.5 and added.rule("provenance").action == "drop"


def test_no_text_quarantine_keeps_ids_hashes_and_reasons_only(tmp_path):
    secret = "CONFIDENTIAL: merger terms for ACME"
    rows = [{"id": "ok", "text": "fine", "owner": "alice", "sha256": None},
            {"id": "bad", "text": secret, "owner": "bob", "sha256": sha("what was approved")}]
    write_parquet(tmp_path / "d" / "a.parquet", rows)
    scan(tmp_path / "d", out=tmp_path / "out", policy=recipe(tmp_path), workers=1, progress=False, no_text=True)
    quarantine = read_dir(tmp_path / "out" / "quarantine")
    assert quarantine.column_names == ["id", "row", "sha256", "reasons"]
    assert quarantine.to_pylist() == [{"id": "bad", "row": 1, "sha256": sha(secret),
                                       "reasons": ["hash-mismatch:ungraded"]}]
    for path in (tmp_path / "out").rglob("*"):
        if path.is_file() and "clean" not in path.parts:
            assert secret.encode() not in path.read_bytes(), path


def test_recipe_privacy_table_turns_no_text_on(tmp_path):
    write_parquet(tmp_path / "d" / "a.parquet", [{"id": "bad", "text": "secret", "sha256": sha("other")}])
    scan(tmp_path / "d", out=tmp_path / "out", policy=recipe(tmp_path, "[privacy]\nno_text = true\n"),
         workers=1, progress=False)
    assert "text" not in pq.read_schema(next((tmp_path / "out" / "quarantine").glob("*.parquet"))).names
    manifest = (tmp_path / "out" / "manifest.json").read_text()
    assert '"no_text": true' in manifest
