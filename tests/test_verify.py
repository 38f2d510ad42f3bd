"""dokumi verify and prove: every byte of data, outputs and sidecar is re-checked; proofs need no data."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import clean_rows, write_jsonl, write_parquet

from dokumi.cli import main
from dokumi.scan import scan
from dokumi.verify import check_proof, prove, verify

RECIPE = 'name = "provenance-only"\n[stages.provenance]\naction = "drop"\nthreshold = 0.5\nflag_threshold = 0.2\n'
SCHEMA = Path(__file__).resolve().parents[1] / "docs" / "manifest.schema.json"


@pytest.fixture
def corpus(tmp_path):
    """Two Parquet shards and a JSONL shard under data/, scanned into out/."""
    data = tmp_path / "data"
    write_parquet(data / "a.parquet", clean_rows(40, "a"))
    write_parquet(data / "b.parquet", clean_rows(35, "b"))
    write_jsonl(data / "c.jsonl", clean_rows(25, "c"))
    (tmp_path / "recipe.toml").write_text(RECIPE)
    scan(data, out=tmp_path / "out", policy=tmp_path / "recipe.toml", workers=1, progress=False)
    return tmp_path


def kinds(report):
    return sorted({problem.kind for problem in report.problems})


def test_an_untouched_scan_verifies(corpus):
    report = verify(corpus / "out")
    assert report.ok, report.text()
    assert report.records == 100
    assert report.files >= 9  # 3 inputs, their clean/scores/hashes outputs


def test_one_changed_byte_in_a_jsonl_shard_is_named_by_record(corpus):
    path = corpus / "data" / "c.jsonl"
    raw = bytearray(path.read_bytes())
    position = raw.index(b"c-7") + len(b'c-7", "text": "') + 2
    raw[position] ^= 0x01  # one bit of one letter of one record
    path.write_bytes(bytes(raw))
    report = verify(corpus / "out")
    assert not report.ok
    changed = [p for p in report.problems if p.kind == "record-changed"]
    assert [(p.record, Path(p.path).name) for p in changed] == [("c-7", "c.jsonl")]
    assert {"file-changed", "shard-root"} <= set(kinds(report))


def test_one_changed_character_in_a_parquet_shard_is_named_by_record(corpus):
    path = corpus / "data" / "a.parquet"
    rows = pq.read_table(path).to_pylist()
    rows[13]["text"] = rows[13]["text"].replace("a", "o", 1)
    write_parquet(path, rows)
    report = verify(corpus / "out")
    assert [p.record for p in report.problems if p.kind == "record-changed"] == ["a-13"]


def test_swapped_and_dropped_shards_are_detected(corpus):
    data = corpus / "data"
    shutil.copy(data / "a.parquet", corpus / "tmp.parquet")
    shutil.copy(data / "b.parquet", data / "a.parquet")
    shutil.copy(corpus / "tmp.parquet", data / "b.parquet")
    swapped = verify(corpus / "out")
    assert {Path(p.path).name for p in swapped.problems if p.kind == "file-changed"} == {"a.parquet", "b.parquet"}
    assert {p.record for p in swapped.problems if p.kind == "record-added"} >= {"b-0", "a-0"}

    (data / "c.jsonl").unlink()
    dropped = verify(corpus / "out")
    assert any(p.kind == "missing-file" and p.path.endswith("c.jsonl") for p in dropped.problems)


def test_edited_outputs_and_sidecars_are_detected(corpus):
    out = corpus / "out"
    clean = sorted((out / "clean").glob("*.parquet"))[0]
    rows = pq.read_table(clean).to_pylist()
    write_parquet(clean, rows[:-1])  # a record quietly removed from the clean output
    sidecar = sorted((out / "hashes").glob("*.parquet"))[1]
    table = pq.read_table(sidecar)
    pq.write_table(table.slice(1), sidecar)
    report = verify(out)
    changed = {p.path for p in report.problems if p.kind == "file-changed"}
    assert clean.relative_to(out).as_posix() in changed
    assert sidecar.relative_to(out).as_posix() in changed
    assert kinds(report) == ["file-changed"]  # a changed sidecar is not used to name records


def test_moved_scan_and_data_verify_through_relative_paths_or_data(corpus, tmp_path_factory):
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    shutil.copytree(corpus / "out", elsewhere / "scans" / "out")
    shutil.copytree(corpus / "data", elsewhere / "shards")
    # the manifest's relative input paths point to ../data: here the data lies in ../../shards
    assert not verify(elsewhere / "scans" / "out").ok
    assert verify(elsewhere / "scans" / "out", data=elsewhere / "shards").ok
    shutil.copytree(corpus / "data", elsewhere / "scans" / "data")
    assert verify(elsewhere / "scans" / "out").ok


def test_manifest_holds_no_absolute_paths_and_no_text(corpus):
    text = (corpus / "out" / "manifest.json").read_text()
    manifest = json.loads(text)
    assert all(not entry["path"].startswith("/") for entry in manifest["inputs"] + manifest["outputs"])
    assert "small domesticated" not in text
    for sidecar in (corpus / "out" / "hashes").glob("*.parquet"):
        assert "text" not in pq.read_schema(sidecar).names


def test_manifest_matches_its_json_schema(corpus):
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    manifest = json.loads((corpus / "out" / "manifest.json").read_text())
    jsonschema.validate(manifest, schema)
    broken = {**manifest, "merkle": {**manifest["merkle"], "root": "not hex"}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_proof_holds_without_data_and_fails_when_tampered(corpus):
    proof = prove(corpus / "out", "b-17")
    manifest = json.loads((corpus / "out" / "manifest.json").read_text())
    shutil.rmtree(corpus / "data")
    assert check_proof(proof, manifest) == []
    assert check_proof(proof, manifest, text=clean_rows(35, "b")[17]["text"]) == []
    assert check_proof(proof, manifest, text="something else") == ["the given text does not hash to the proven sha256"]
    forged = json.loads(json.dumps(proof))
    forged["record"]["sha256"] = "0" * 64
    assert "the record's audit path does not lead to the shard root" in check_proof(forged, manifest)
    other = {**manifest, "merkle": {**manifest["merkle"], "root": "f" * 64}}
    assert check_proof(proof, other) == ["the proof's corpus root is not the manifest's merkle.root",
                                         "the proof's manifest_sha256 is not this manifest's"]


def test_cli_verify_exit_codes_and_prove(corpus, capsys):
    assert main(["verify", str(corpus / "out" / "manifest.json")]) == 0
    assert capsys.readouterr().out.rstrip().endswith("OK (UNSIGNED): everything matches the manifest, "
                                                     "which nothing vouches for")
    assert main(["prove", str(corpus / "out"), "a-3"]) == 0
    proof_path = corpus / "proof.json"
    proof_path.write_text(capsys.readouterr().out)
    assert json.loads(proof_path.read_text())["record"]["id"] == "a-3"
    assert main(["verify", str(corpus / "out"), "--proof", str(proof_path)]) == 0
    assert main(["prove", str(corpus / "out"), "no-such-id"]) == 2
    (corpus / "data" / "a.parquet").unlink()
    assert main(["verify", str(corpus / "out")]) == 1
    assert "MISMATCH missing-file" in capsys.readouterr().out


def test_the_manifest_takes_the_hashes_computed_while_scoring_and_saving_state(tmp_path, monkeypatch):
    import dokumi.manifest

    data = tmp_path / "data"
    write_parquet(data / "a.parquet", clean_rows(30, "a"))
    write_parquet(data / "b.parquet", clean_rows(30, "b"))
    (tmp_path / "nd.toml").write_text('name = "nd"\n[stages.near_duplicates]\naction = "flag"\nthreshold = 0.5\n')
    hashed = []
    original = dokumi.manifest.file_sha256
    monkeypatch.setattr(dokumi.manifest, "file_sha256", lambda path: hashed.append(Path(path)) or original(path))
    scan(data, out=tmp_path / "out", policy=tmp_path / "nd.toml", workers=1, progress=False)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["state"] and manifest["outputs"], "the scan saved state and wrote outputs"
    listed = {entry["path"] for entry in manifest["state"] + manifest["outputs"]}
    assert not [path for path in hashed if any(path.as_posix().endswith(item) for item in listed)], \
        "an output or a state file was hashed a second time for the manifest"
    report = verify(tmp_path / "out")
    assert report.ok, report.text()
