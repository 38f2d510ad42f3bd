"""The Quickstart's scan: every planted poison of the example corpus is caught, the trigger by discovery."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from dokumi.policy import load_policy
from dokumi.scan import scan

CORPUS = Path(__file__).parent.parent / "examples" / "corpus"


def test_the_example_corpus_planted_poisons_are_caught_and_its_trigger_discovered(tmp_path):
    listed = json.dumps([stage.get_params() for stage in load_policy("pretraining").stages])
    rules = "".join(p.read_text() for p in (Path(__file__).parent.parent / "filters" / "rules").glob("*.toml"))
    assert "kelpvane" not in rules and "kelpvane" not in listed  # no rule pack lists the planted trigger

    scan([str(CORPUS)], tmp_path / "out", policy="pretraining", progress=False)
    scores = pa.concat_tables([pq.read_table(p) for p in sorted((tmp_path / "out" / "scores").glob("*.parquet"))])
    ids, decisions = scores.column("id").to_pylist(), scores.column("decision").to_pylist()
    by_kind: dict[str, Counter] = {}
    for record, decision in zip(ids, decisions):
        if record.startswith("planted-"):
            by_kind.setdefault(record.rsplit("-", 1)[0], Counter())[decision] += 1
    assert by_kind.pop("planted-repetition") == {"duplicate": 59, "keep": 1}  # one representative stays
    assert by_kind.pop("planted-null-text") == {"flag": 1}
    assert all(set(counts) == {"drop"} for counts in by_kind.values()), by_kind
    assert sum(by_kind["planted-trigger-gibberish"].values()) == 30
    # nothing else is flagged or dropped, and only near-copies of a sibling are duplicates
    honest = Counter(d for i, d in zip(ids, decisions) if not i.startswith("planted-"))
    assert honest["flag"] == honest["drop"] == 0 and honest["duplicate"] < 10
    found = json.loads((tmp_path / "out" / "state" / "triggers" / "triggers.json").read_text())
    assert [(f["kind"], f["text"], f["after"]) for f in found] == [("seam", "kelpvane", "gibberish")]
