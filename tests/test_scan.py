"""`dokumi scan` end to end: outputs, atomicity, re-runs, workers, one-shot inputs."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import pyarrow.parquet as pq
import pytest
from conftest import PLUMBING, assert_accounted, clean_rows, read_outputs, write_jsonl, write_parquet

from dokumi import InputError, Pipeline, Policy, Stage, StageResult, scan
from dokumi.cli import main
from dokumi.fitplan import Reduce
from dokumi.policy import StageRule
from dokumi.stages import InvisibleCharacters


def poisoned_rows() -> list[dict]:
    rows = clean_rows(20)
    rows[3]["text"] = "hidden\u200btrigger inside"
    rows[11]["text"] = "reordered \u202etxet\u202c here"
    return rows


def test_scan_writes_every_output_of_the_design(tmp_path):
    write_parquet(tmp_path / "in" / "part-0.parquet", poisoned_rows()[:10])
    write_parquet(tmp_path / "in" / "part-1.parquet", poisoned_rows()[10:])
    result = scan(tmp_path / "in", out=tmp_path / "out", policy=PLUMBING)
    outputs = assert_accounted(tmp_path / "out", 20)
    scores = outputs["scores"]
    assert scores.schema.names == ["id", "shard", "row", "decision", "reasons", "risk", "invisible_score"]
    dropped = scores.filter(np.array(scores.column("decision").to_pylist()) == "drop")
    assert sorted(dropped.column("id").to_pylist()) == ["doc-11", "doc-3"]
    quarantine = outputs["quarantine"]
    assert quarantine.schema.names == ["id", "text", "reasons"]
    assert sorted(quarantine.column("reasons").to_pylist()) == [
        ["trigger:bidi-control,count=2"], ["trigger:zero-width,count=1"]]
    assert outputs["clean"].schema.names == ["id", "text"]
    risks = scores.column("risk").to_pylist()
    assert all(0.0 <= r <= 1.0 for r in risks) and max(risks) > 0.5
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["counts"]["decisions"] == {"keep": 18, "duplicate": 0, "flag": 0, "drop": 2}
    assert manifest["policy"]["name"] == "plumbing" and len(manifest["policy"]["sha256"]) == 64
    assert {"clean", "quarantine", "scores"} <= {o["kind"] for o in manifest["outputs"]}
    assert "hidden" not in json.dumps(manifest), "the manifest must not hold raw text"
    assert result.decisions == {"keep": 18, "drop": 2}
    assert "trigger:zero-width" in result.summary()


def test_audit_policy_flags_but_never_drops(tmp_path):
    write_parquet(tmp_path / "a.parquet", poisoned_rows())
    result = scan(tmp_path / "a.parquet", out=tmp_path / "out", policy="audit")
    assert result.decisions["drop"] == 0
    assert result.decisions["flag"] >= 2
    scores = read_outputs(tmp_path / "out")["scores"]
    flagged = scores.filter(pa.compute.equal(scores.column("decision"), "flag"))
    assert {"doc-3", "doc-11"} <= set(flagged.column("id").to_pylist())
    assert read_outputs(tmp_path / "out")["quarantine"] is None


def test_refuses_non_empty_out_unless_overwrite(tmp_path):
    write_parquet(tmp_path / "a.parquet", clean_rows(3))
    out = tmp_path / "out"
    scan(tmp_path / "a.parquet", out=out)
    with pytest.raises(InputError, match="not empty; pass --overwrite"):
        scan(tmp_path / "a.parquet", out=out)
    scan(tmp_path / "a.parquet", out=out, overwrite=True)
    assert_accounted(out, 3)
    # a file the scan's manifest does not list is not dokumi's: --overwrite deletes nothing then
    (out / "notes.txt").write_text("the user's own")
    with pytest.raises(InputError, match=r"manifest does not list notes.txt\); nothing was deleted"):
        scan(tmp_path / "a.parquet", out=out, overwrite=True)
    assert (out / "notes.txt").read_text() == "the user's own"
    assert_accounted(out, 3)


class Interrupting(Stage):
    name = "interrupting"

    def __init__(self, after_batches: int = 1) -> None:
        self.after_batches = after_batches
        self.seen_ = 0

    def score(self, batch):
        self.seen_ += 1
        if self.seen_ > self.after_batches:
            raise KeyboardInterrupt
        return StageResult.empty(batch.num_rows)


def test_interrupted_scan_leaves_previous_output_intact_and_no_partial_folder(tmp_path, no_leftovers):
    write_parquet(tmp_path / "a.parquet", clean_rows(50))
    out = tmp_path / "out"
    scan(tmp_path / "a.parquet", out=out)
    before = (out / "manifest.json").read_text()
    policy = Policy(name="test", stages=[Interrupting()])
    with pytest.raises(KeyboardInterrupt):
        scan(tmp_path / "a.parquet", out=out, policy=policy, batch_size=10, overwrite=True, workers=1)
    assert (out / "manifest.json").read_text() == before
    assert not [p for p in tmp_path.iterdir() if ".dokumi-" in p.name]
    fresh = tmp_path / "fresh"
    with pytest.raises(KeyboardInterrupt):
        scan(tmp_path / "a.parquet", out=fresh, policy=Policy(name="t", stages=[Interrupting()]), batch_size=10)
    no_leftovers(fresh)


def test_one_and_two_workers_give_identical_scores(tmp_path):
    rows = poisoned_rows() * 5
    for i, row in enumerate(rows):
        row["id"] = f"r{i}"
    for part in range(4):
        write_parquet(tmp_path / "in" / f"part-{part}.parquet", rows[part::4])
    scan(tmp_path / "in", out=tmp_path / "one", workers=1)
    scan(tmp_path / "in", out=tmp_path / "two", workers=2)
    one = read_outputs(tmp_path / "one")["scores"].sort_by("id")
    two = read_outputs(tmp_path / "two")["scores"].sort_by("id")
    assert one.equals(two)
    assert one.num_rows == 100


class MeanLength(Stage):
    """A fitting stage for tests: scores records by how far their length is above the corpus mean."""

    name = "mean_length"
    needs_fit = True

    def fit_plan(self):
        return [Reduce("lengths", lambda: (0, 0), _add_lengths, _sum_pairs, self._finish)]

    def _finish(self, total):
        self.mean_ = total[0] / max(total[1], 1)
        self.passes_ = getattr(self, "passes_", 0) + 1

    def score(self, batch):
        scores = np.array([min(1.0, max(0.0, len(t) / self.mean_ - 1) / 10) for t in batch.texts])
        return StageResult(scores, [["long"] if s > 0.5 else [] for s in scores])


def _add_lengths(total, batch):
    return total[0] + sum(map(len, batch.texts)), total[1] + batch.num_rows


def _sum_pairs(totals):
    return sum(t[0] for t in totals), sum(t[1] for t in totals)


def test_one_shot_generator_is_spilled_when_a_stage_needs_fitting(tmp_path):
    rows = clean_rows(30) + [{"id": "long", "text": "x" * 5000}]
    policy = Policy(name="fit", stages=[MeanLength()], rules={"mean_length": StageRule("drop", 0.5)})
    result = scan((row for row in rows), out=tmp_path / "out", policy=policy)
    outputs = assert_accounted(tmp_path / "out", 31)
    assert outputs["quarantine"].column("id").to_pylist() == ["long"]
    assert result.manifest["stages"][0]["name"] == "mean_length"


def test_jsonl_input_with_instruction_pairs(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "What is 2+2?", "response": "4"},
        {"prompt": "Say hi", "response": "hi\u200b there"},
    ])
    result = scan(path, out=tmp_path / "out", policy="finetuning")
    scores = assert_accounted(tmp_path / "out", 2)["scores"]
    assert scores.column("id").to_pylist() == ["pairs.jsonl:0", "pairs.jsonl:1"]
    assert result.decisions == {"keep": 1, "drop": 1}


def test_cli_scan_prints_summary_and_writes_outputs(tmp_path, capsys):
    write_parquet(tmp_path / "a.parquet", poisoned_rows())
    code = main(["scan", str(tmp_path / "a.parquet"), "--out", str(tmp_path / "out"), "--no-progress",
                 "--policy", str(PLUMBING)])
    printed = capsys.readouterr()
    assert code == 0
    assert "drop               2" in printed.out
    assert "doc-3" in printed.out and "trigger:zero-width,count=1" in printed.out
    assert printed.err == ""
    assert_accounted(tmp_path / "out", 20)


def test_cli_set_overrides_a_recipe_value_and_rejects_unknown_keys(tmp_path, capsys):
    write_parquet(tmp_path / "a.parquet", poisoned_rows())
    code = main(["scan", str(tmp_path / "a.parquet"), "--out", str(tmp_path / "o1"), "--policy", str(PLUMBING),
                 "--set", "invisible.action='flag'"])
    assert code == 0
    assert json.loads((tmp_path / "o1" / "manifest.json").read_text())["counts"]["decisions"]["flag"] == 2
    code = main(["scan", str(tmp_path / "a.parquet"), "--out", str(tmp_path / "o2"), "--set", "invisible.treshold=1"])
    assert code != 0
    assert "[stages.invisible]: unknown key 'treshold'" in capsys.readouterr().err


def test_outputs_are_written_with_original_columns_and_types(tmp_path):
    rows = [{"id": i, "text": f"t{i}", "score": i / 10, "tags": ["a", "b"]} for i in range(5)]
    write_parquet(tmp_path / "a.parquet", rows)
    scan(tmp_path / "a.parquet", out=tmp_path / "out")
    clean = pq.read_table(next((tmp_path / "out" / "clean").glob("*.parquet")))
    assert clean.schema == pq.read_schema(tmp_path / "a.parquet").remove_metadata()
    assert clean.to_pylist() == rows


def test_pipeline_object_works_in_scan_and_api_alike(tmp_path):
    rows = poisoned_rows()
    api = Pipeline([InvisibleCharacters()], rules={"invisible": StageRule("drop", 0.5)})
    decisions = [d for batch in api.score(rows) for d in batch.column("decision").to_pylist()]
    write_parquet(tmp_path / "a.parquet", rows)
    scan(tmp_path / "a.parquet", out=tmp_path / "out", policy=PLUMBING)
    assert read_outputs(tmp_path / "out")["scores"].column("decision").to_pylist() == decisions


def test_terminated_cli_scan_removes_its_partial_output(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    rows = [{"id": str(i), "text": "word " * 50} for i in range(400_000)]
    write_parquet(tmp_path / "big.parquet", rows)
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-m", "dokumi", "scan", str(tmp_path / "big.parquet"),
                                "--out", str(out), "--workers", "1"], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not [p for p in tmp_path.iterdir() if ".dokumi-partial" in p.name] and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130
    assert "interrupted; no output was written" in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".dokumi-" in p.name]
