"""Library hygiene: column mappings, side inputs on scan(), hints in errors, the log, typing marker and version."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import PLUMBING, clean_rows, write_jsonl, write_parquet
from test_datatrove import corpus

from dokumi import Pipeline, scan
from dokumi.cli import main

ROOT = Path(__file__).resolve().parent.parent
RECIPE_WITH_COLUMNS = PLUMBING.read_text() + '\n[columns]\nid = "key"\n'


def test_from_policy_takes_a_dict_of_columns_and_keeps_the_recipes_other_names(tmp_path):
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(RECIPE_WITH_COLUMNS)
    pipeline = Pipeline.from_policy(recipe, columns={"text": "body"})
    assert (pipeline.columns.text, pipeline.columns.id, pipeline.columns.label) == ("body", "key", "label")
    batch = next(pipeline.score([{"key": "k1", "body": "hi\u200bthere"}]))
    assert batch.column("id").to_pylist() == ["k1"] and batch.column("decision").to_pylist() == ["drop"]
    with pytest.raises(ValueError, match="unknown column role 'txt'"):
        Pipeline.from_policy(recipe, columns={"txt": "body"})
    write_parquet(tmp_path / "data" / "a.parquet", [{"key": "k1", "body": "hi\u200bthere"}, {"key": "k2", "body": "x"}])
    result = scan(tmp_path / "data", out=tmp_path / "out", policy=recipe, columns={"text": "body"}, progress=False)
    assert result.manifest["columns"]["id"] == "key" and result.manifest["columns"]["text"] == "body"
    assert sorted(pq.read_table(tmp_path / "out" / "scores").column("id").to_pylist()) == ["k1", "k2"]


def test_scan_takes_every_side_input(tmp_path):
    rows = corpus()
    write_jsonl(tmp_path / "old" / "a.jsonl", rows[:120])
    scan(tmp_path / "old", out=tmp_path / "earlier", policy="finetuning", progress=False)
    new = [dict(row) for row in rows[120:]]
    new[0]["text"] = rows[50]["text"] + " with more"  # a near-copy of a record the earlier scan indexed
    new[1].update(id="r60", text="substituted content in entirely different words")  # an earlier id, other text
    protected = "the secret evaluation question about rivers and bridges in winter mornings with quiet gardens"
    write_jsonl(tmp_path / "new" / "b.jsonl", new)
    write_jsonl(tmp_path / "eval" / "e.jsonl", [{"id": "e1", "text": protected}])
    new[2]["text"] = protected + " indeed"
    write_jsonl(tmp_path / "new" / "b.jsonl", new)
    write_jsonl(tmp_path / "reference" / "r.jsonl", rows[:100])
    result = scan(tmp_path / "new", out=tmp_path / "second", policy="finetuning", progress=False,
                  reference=tmp_path / "reference", protect=tmp_path / "eval", index=tmp_path / "earlier",
                  expect=tmp_path / "earlier")
    stages = {stage["name"]: stage for stage in result.manifest["stages"]}
    assert stages["embedding_anomaly"]["summary"]["reference"]["records_seen"] == 100
    assert stages["near_duplicates"]["summary"]["protected_matches"] == 1
    assert stages["provenance"]["summary"]["expected_records"] == 120
    scores = {row["id"]: row for row in pq.read_table(tmp_path / "second" / "scores").to_pylist()}
    assert any("earlier=1" in reason for reason in scores["r120"]["reasons"])
    assert scores["r60"]["decision"] == "drop" and scores["r60"]["reasons"][0].startswith("hash-mismatch")


def test_a_missing_column_error_suggests_column(tmp_path, capsys):
    write_parquet(tmp_path / "data" / "a.parquet", [{"id": "1", "content": "hello"}])
    assert main(["scan", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--policy", str(PLUMBING)]) == 2
    error = capsys.readouterr().err
    assert "column 'text' missing in shard a.parquet" in error and "--column text=NAME" in error
    assert error.count("\n") == 1
    assert main(["scan", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--policy", str(PLUMBING),
                 "--column", "text=content"]) == 0


def test_verify_after_a_move_suggests_data(tmp_path, capsys):
    write_parquet(tmp_path / "data" / "a.parquet", clean_rows(5))
    scan(tmp_path / "data", out=tmp_path / "out", policy=PLUMBING, progress=False)
    shutil.move(tmp_path / "data", tmp_path / "moved")
    assert main(["verify", str(tmp_path / "out")]) == 1
    assert "pass --data DIR" in capsys.readouterr().out
    assert main(["verify", str(tmp_path / "out"), "--data", str(tmp_path / "moved")]) == 0
    assert "pass --data DIR" not in capsys.readouterr().out


def test_log_file_records_the_run_and_its_warnings_never_text(tmp_path, capsys):
    rows = clean_rows(6)
    rows[1]["id"] = rows[0]["id"]  # a repeated id: a warning
    rows[2]["text"] = "uniquesecretphrase \u200b"
    write_parquet(tmp_path / "data" / "a.parquet", rows)
    log = tmp_path / "logs" / "dokumi.log"
    args = ["--log-file", str(log), "scan", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
            "--policy", str(PLUMBING)]
    assert main(args) == 0
    assert main(args) == 2  # --out exists now: the error is logged too
    text = log.read_text()
    assert "INFO dokumi: scan of 1 shard(s) with policy 'plumbing'" in text
    assert "WARNING dokumi: 1 records repeat an id" in text
    assert "scan done: keep 5, duplicate 0, flag 0, drop 1" in text
    assert "ERROR dokumi:" in text and "exit status 0" in text
    assert "uniquesecretphrase" not in text
    capsys.readouterr()
    assert main(["--log-file", str(tmp_path / "logs"), "policies"]) == 2  # a folder is not a log file


def test_wheel_is_typed_and_versioned_from_git(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, timeout=300)
    wheel = next(tmp_path.glob("dokumi-*.whl"))
    archive = zipfile.ZipFile(wheel)
    assert "dokumi/py.typed" in archive.namelist()
    metadata = next(name for name in archive.namelist() if name.endswith(".dist-info/METADATA"))
    version = next(line.split(": ", 1)[1] for line in archive.read(metadata).decode().splitlines()
                   if line.startswith("Version: "))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if commit.returncode == 0:  # a git checkout: the version names the commit unless HEAD is tagged
        tag = subprocess.run(["git", "describe", "--exact-match", "--tags"], cwd=ROOT, capture_output=True, text=True)
        assert (f"+g{commit.stdout.strip()[:7]}" in version) or (tag.returncode == 0 and tag.stdout.strip().lstrip("v")
                                                                   == version)
    else:  # a source archive outside git: the fallback version
        assert version == "0.1.0"


def test_manifest_records_the_running_version(tmp_path):
    import dokumi

    write_parquet(tmp_path / "data" / "a.parquet", clean_rows(3))
    scan(tmp_path / "data", out=tmp_path / "out", policy=PLUMBING, progress=False)
    tool = json.loads((tmp_path / "out" / "manifest.json").read_text())["tool"]
    assert tool["version"] == dokumi.__version__ and tool["name"] == "dokumi"
