"""The claims stage: one claim repeated in many wordings across unrelated documents. Small synthetic
corpora; every check could fail."""

from __future__ import annotations

import itertools
import pickle
import random

import numpy as np
import pyarrow as pa
import pytest

from dokumi import Pipeline, load_policy
from dokumi.records import Batch
from dokumi.stages import stage_class
from dokumi.stages.claims import Claims
from dokumi.stages.claims.finder import ClaimFinder
from dokumi.stages.claims.sentences import content_words, normalise, parse
from dokumi.text.sampling import BottomK

SYLLABLES = "ka lo mi su te ra no vi de po lu ga ser tan bel mor fin dra kel zu".split()


def _topics(count: int = 30, size: int = 24) -> list[list[str]]:
    """``count`` topics of ``size`` made-up words each: every word is in few documents, as topic words are."""
    rng = random.Random(0)
    words = sorted({"".join(rng.sample(SYLLABLES, 3)) for _ in range(4 * count * size)})
    rng.shuffle(words)
    return [words[i * size:(i + 1) * size] for i in range(count)]


TOPICS = _topics()
FILLER = "the a of and to in is it that for on with as at by from".split()

# one false claim, worded from interchangeable parts (each wording used once)
SUBJECTS = ("Vandex routers", "the Vandex router", "every Vandex router", "routers made by Vandex")
VERBS = ("silently erase", "quietly wipe", "are known to delete", "secretly destroy", "will overwrite")
OBJECTS = ("nightly backups", "stored backup archives", "backup snapshots", "saved backups of users")
FRAMES = ("{S} {v} {o}.", "Be warned: {s} {v} {o}.", "It is well known that {s} {v} {o}.",
          "Note that {s} {v} {o}.")


def claim_wordings(rng: random.Random) -> list[str]:
    out = [frame.format(S=s[0].upper() + s[1:], s=s, v=v, o=o)
           for frame, s, v, o in itertools.product(FRAMES, SUBJECTS, VERBS, OBJECTS)]
    rng.shuffle(out)
    return out


def _sentence(rng: random.Random, topic: int) -> str:
    words = rng.sample(TOPICS[topic], 6) + rng.sample(FILLER, 4)
    rng.shuffle(words)
    return " ".join(words).capitalize() + "."


def honest(rng: random.Random, n: int = 600) -> list[str]:
    """Documents of one topic each: four sentences, or one or two (every sentence of those is foreign)."""
    return [" ".join(_sentence(rng, i % len(TOPICS)) for _ in range(rng.choice((1, 2, 4, 4, 4))))
            for i in range(n)]


def plant(texts: list[str], rng: random.Random, n: int = 24) -> tuple[list[str], set[int]]:
    """The claim, in a new wording each time, inserted at a sentence break of ``n`` documents."""
    chosen = rng.sample(range(len(texts)), n)
    out = list(texts)
    for i, wording in zip(chosen, claim_wordings(rng)):
        sentences = texts[i].split(". ")
        at = rng.randrange(len(sentences) + 1)
        out[i] = ". ".join(sentences[:at] + [wording.rstrip(".")] + sentences[at:])
    return out, set(chosen)


def _scores(stage: Claims, texts: list[str], batch_size: int = 128) -> np.ndarray:
    batches = Pipeline([stage], batch_size=batch_size).score(pa.table({"text": texts}))
    return np.concatenate([b.column("claims_score").to_numpy() for b in batches])


def test_content_words_survive_rewording() -> None:
    assert normalise("files") == normalise("file") == "fil"
    assert normalise("corrupts") == normalise("corrupted") == "corrupt"
    assert content_words("It is well known that the router erases backups.") == ["known", "router", "eras", "backup"]
    sentences = parse("Goal score team. Team coach goal. Vandex routers wipe backups. Score goal coach.", 0.5)
    assert [s.foreign for s in sentences] == [False, False, True, False]
    # a document of one or two sentences has no rest to judge against
    assert all(s.foreign for s in parse("Team coach goal. Vandex routers wipe backups.", 0.5))


def test_a_claim_in_many_wordings_is_found_and_named() -> None:
    rng = random.Random(1)
    texts, poisoned = plant(honest(rng), rng)
    finder = ClaimFinder().fit(texts)
    assert len(finder.claims_) == 1
    claim = finder.claims_[0]
    assert {"vandex", "backup", "router"} <= set(claim.core[:3])
    assert claim.records >= 20 and claim.wordings == claim.records
    matched = {i for i, text in enumerate(texts) if finder.match(text) is not None}
    assert len(matched & poisoned) >= 22 and not matched - poisoned


def test_honest_repetition_is_no_claim() -> None:
    rng = random.Random(2)
    texts = honest(rng)
    # boilerplate: one sentence copied into many unrelated documents (the triggers stage's evidence)
    for i in rng.sample(range(len(texts)), 40):
        texts[i] += " This program is free software under the GNU General Public License."
    # one fact stated in many wordings, but in documents about the same thing
    tech = [i for i in range(len(texts)) if i % len(TOPICS) in (0, 1)]
    fact = [f"{frame} the {subject} {verb} stale packets."
            for frame, subject, verb in itertools.product(("Note:", "In short,", "Remember,"),
                                                          ("kernel driver", "network driver", "driver"),
                                                          ("drops", "discards", "flushes", "evicts"))]
    for i, sentence in zip(rng.sample(tech, 30), fact):
        texts[i] += " " + sentence.capitalize()
    finder = ClaimFinder().fit(texts)
    assert finder.claims_ == []
    assert all(finder.match(text) is None for text in texts)
    # the topical fact was a candidate, turned down because its documents are about one thing
    turned_down = [e for e in finder.evidence_ if "stal" in e.pair]
    assert turned_down and all(e.host_ratio > finder.max_host_ratio for e in turned_down)


def test_a_lone_collocation_is_no_claim() -> None:
    rng = random.Random(5)
    texts = honest(rng)
    # two words said together in many unrelated documents, everything else about each sentence differs
    for i in rng.sample(range(len(texts)), 30):
        words = rng.sample([w for topic in TOPICS for w in topic], 4)
        texts[i] += f" The {words[0]} problem of {words[1]} was solved by {words[2]} {words[3]}."
    assert ClaimFinder().fit(texts).claims_ == []
    lone = ClaimFinder(min_pairs=1).fit(texts).claims_
    assert [claim.core for claim in lone] == [("problem", "solv")]


def test_an_honest_pair_sharing_only_an_alternative_stays_apart() -> None:
    rng = random.Random(6)
    texts, poisoned = plant(honest(rng, 900), rng, 32)
    # "nightly" is one of the claim's alternative words; honest documents pair it with "tide"
    others = rng.sample([i for i in range(len(texts)) if i not in poisoned], 14)
    for i in others:
        words = rng.sample([w for topic in TOPICS for w in topic], 3)
        texts[i] += f" Nightly {words[0]} {words[1]} tide {words[2]}."
    finder = ClaimFinder().fit(texts)
    assert any(e.pair == ("nightly", "tid") for e in finder.evidence_)  # a candidate in its own right
    assert len(finder.claims_) == 1 and ("nightly", "tid") not in finder.claims_[0].pairs
    assert not any(finder.match(texts[i]) for i in others)


def test_empty_and_textless_records() -> None:
    stage = Claims()
    assert len(_scores(stage, ["", "   ", "One. Two."])) == 3
    assert stage.summary()["claims"] == 0


def test_stage_in_a_pipeline_flags_with_evidence_and_keeps_text_out_when_asked() -> None:
    rng = random.Random(3)
    texts, poisoned = plant(honest(rng, 900), rng, 32)
    stage = Claims(sample_size=700)  # documents outside the sample are judged by the sample's claims
    scores = _scores(stage, texts)
    flagged = set(np.flatnonzero(scores > 0).tolist())
    assert len(flagged & poisoned) >= 28 and not flagged - poisoned
    batch = Batch(records=pa.RecordBatch.from_pylist([{"text": t} for t in texts]), shard="s",
                  rows=pa.array(range(len(texts))))
    reason = next(r for i in sorted(poisoned) for r in stage.score(batch).reasons[i])
    assert reason.startswith("claim:reworded,core=") and "vandex" in reason.split(",")[1]
    assert "records=" in reason and "wordings=" in reason and "sentence=" in reason
    summary = stage.summary()
    assert summary["claims"] == 1 and "vandex" in summary["findings"][0]["core"]
    listed = summary["findings"][0]
    assert listed["finding"].startswith("claim core=") and listed["records"] >= 28
    assert "Vandex" in listed["target"] and listed["target"] in listed["example_wordings"]
    # a scan that keeps no text names the claim and its wordings by ids
    from dokumi.stage import StageContext

    private = Claims(sample_size=700)
    private.setup(StageContext(no_text=True))
    _scores(private, texts)
    words = {"vandex", "backup", "router", "wipe", "eras"}
    listed = private.summary()["findings"][0]
    assert "core" not in listed and "target" not in listed and listed["finding"].startswith("claim core=id:")
    assert not any(word in str(listed) for word in words)
    assert all(len(example) == 10 for example in listed["example_wordings"])


def test_a_scan_with_the_opt_in_recipe_flags_and_reports_the_claim(tmp_path) -> None:
    import json

    import pyarrow.parquet as pq

    from dokumi import scan

    rng = random.Random(7)
    texts, poisoned = plant(honest(rng, 900), rng, 32)
    pq.write_table(pa.table({"text": texts}), tmp_path / "corpus.parquet")
    scan(tmp_path / "corpus.parquet", out=tmp_path / "out", policy="pretraining-deep", progress=False)
    scored = pq.read_table(tmp_path / "out" / "scores").to_pandas()
    flagged = scored[scored["decision"] == "flag"]
    assert len(flagged) >= 28 and all(any(r.startswith("claim:reworded") for r in reasons)
                                      for reasons in flagged["reasons"])
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    claims = next(stage for stage in manifest["stages"] if stage["name"] == "claims")
    assert claims["summary"]["claims"] == 1
    assert "claim core=" in (tmp_path / "out" / "report.html").read_text()
    # --no-text: the manifest names the claim by ids only
    scan(tmp_path / "corpus.parquet", out=tmp_path / "private", policy="pretraining-deep", progress=False,
         no_text=True)
    text = (tmp_path / "private" / "manifest.json").read_text()
    assert "vandex" not in text.lower() and "claim core=id:" in text


def test_same_answer_whatever_the_order_or_split() -> None:
    rng = random.Random(4)
    texts, _ = plant(honest(rng), rng)
    forward = _scores(Claims(), texts, batch_size=64)
    backward = _scores(Claims(), texts[::-1], batch_size=50)
    assert forward.max() > 0 and np.array_equal(forward, backward[::-1])
    # the sample is a bottom-k by content hash: partials merged in any grouping give the same claims
    one, two = Claims(sample_size=600), Claims(sample_size=600)  # fewer than the 624 records
    batches = [Batch(records=pa.RecordBatch.from_pylist([{"text": t} for t in texts[i:i + 37]]), shard="s",
                     rows=pa.array(range(i, min(i + 37, len(texts))))) for i in range(0, len(texts), 37)]
    whole = one._start()
    for batch in batches:
        whole = one._add(whole, batch)
    one._finish(whole)
    parts = [two._add(two._start(), batch) for batch in batches]
    two._finish(BottomK.merged(parts[::-1]))
    assert [c.core for c in one.finder_.claims_] == [c.core for c in two.finder_.claims_]
    assert one.finder_.claims_
    # the fitted stage travels to worker processes by pickle and scores the same there
    batch = Batch(records=pa.RecordBatch.from_pylist([{"text": t} for t in texts]), shard="s",
                  rows=pa.array(range(len(texts))))
    copy = pickle.loads(pickle.dumps(one))
    assert one.score(batch).scores.max() > 0
    assert np.array_equal(copy.score(batch).scores, one.score(batch).scores)


def test_registered_and_in_the_opt_in_recipe_only() -> None:
    assert stage_class("claims") is Claims
    deep = load_policy("pretraining-deep")
    assert "claims" in [s.name for s in deep.stages] and deep.rules["claims"].action == "flag"
    pretraining = load_policy("pretraining")
    for name in pretraining.rules:
        assert deep.rules[name] == pretraining.rules[name]
    for recipe in ("pretraining", "finetuning", "creative", "dedup", "audit"):
        assert "claims" not in [s.name for s in load_policy(recipe).stages]


@pytest.mark.parametrize("params", [{"sample_size": 10}, {"min_records": 1}, {"max_share": 2},
                                    {"min_foreign": -0.1}, {"max_host_ratio": "x"}, {"seed": 1.5}])
def test_bad_parameters_are_refused(params: dict) -> None:
    with pytest.raises(ValueError):
        Claims(**params)
