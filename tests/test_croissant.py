"""dokumi croissant: a Croissant 1.1 description of the clean output that mlcroissant validates and reads."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest
from conftest import PLUMBING, clean_rows, write_parquet

from dokumi.cli import main
from dokumi.scan import scan

mlc = pytest.importorskip("mlcroissant", reason="needs mlcroissant (declared in the test extra)")


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    root = tmp_path_factory.mktemp("croissant")
    for shard in range(2):
        rows = clean_rows(20, prefix=f"s{shard}")
        for i, row in enumerate(rows):
            row.update(score=i / 3, count=i, ok=i % 2 == 0, tags=[f"t{i}", "x"] if i % 4 else None)
        rows[2]["text"] += " \u200bsecretword"  # dropped by the plumbing recipe
        rows[5]["text"] += " \u200f"  # a lone bidi mark: flagged
        write_parquet(root / "data" / f"part-{shard}.parquet", rows)
    scan(root / "data", out=root / "out", policy=PLUMBING, workers=1, progress=False)
    return root / "out"


def validate(path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlcroissant.scripts.validate", "--jsonld", str(path)],
                          capture_output=True, text=True, timeout=300)


def test_mlcroissant_validates_and_reads_the_clean_records(scanned):
    assert main(["croissant", str(scanned), "--license", "CC-BY-4.0", "--cite-as", "@misc{x, title={x}}"]) == 0
    path = scanned / "croissant.json"
    checked = validate(path)
    assert checked.returncode == 0, checked.stderr
    assert "warning" not in checked.stderr.lower() and "error" not in checked.stderr.lower(), checked.stderr
    clean = pq.read_table(sorted((scanned / "clean").glob("*.parquet"))).to_pylist()
    records = list(mlc.Dataset(str(path)).records("clean"))
    assert sorted(r["clean/id"].decode() for r in records) == sorted(r["id"] for r in clean)
    assert 30 < len(records) < 40  # the 2 drops (and flags where routed to flagged/) are not described
    by_id = {r["clean/id"].decode(): r for r in records}
    assert by_id["s0-3"]["clean/count"] == 3 and by_id["s0-3"]["clean/ok"] == False  # noqa: E712
    assert by_id["s0-3"]["clean/score"] == pytest.approx(1.0)
    assert [t.decode() for t in by_id["s0-1"]["clean/tags"]] == ["t1", "x"]


def test_distributions_record_sets_and_rai_fields(scanned):
    assert main(["croissant", str(scanned)]) == 0
    document = json.loads((scanned / "croissant.json").read_text())
    manifest = json.loads((scanned / "manifest.json").read_text())
    assert document["conformsTo"] == "http://mlcommons.org/croissant/1.1"
    files = {d["contentUrl"]: d["sha256"] for d in document["distribution"] if d["@type"] == "cr:FileObject"}
    assert files == {p.relative_to(scanned).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                     for p in (scanned / "clean").iterdir()}
    fields = {f["name"]: f for f in document["recordSet"][0]["field"]}
    assert set(fields) == {"id", "text", "score", "count", "ok", "tags"}
    assert (fields["count"]["dataType"], fields["score"]["dataType"], fields["ok"]["dataType"]) == \
        ("sc:Integer", "sc:Float", "sc:Boolean")
    assert fields["tags"]["isArray"] is True and fields["tags"]["dataType"] == "sc:Text"
    protocol = " ".join(document["rai:dataPreprocessingProtocol"])
    assert manifest["policy"]["sha256"] in protocol and "'plumbing'" in protocol
    assert "2 drop" in protocol and "trigger:zero-width 2" in protocol
    flagged_apart = any(output["kind"] == "flagged" for output in manifest["outputs"])
    assert ("decided keep:" if flagged_apart else "decided keep and flag:") in protocol
    assert any(text.startswith("invisible:") for text in document["rai:dataLimitations"])
    assert manifest["merkle"]["root"] in document["rai:dataCollection"]
    assert "secretword" not in (scanned / "croissant.json").read_text()  # counts, never text
    assert "license" not in document  # only the data's owner knows it


def test_a_clean_file_changed_since_the_scan_is_refused(tmp_path, capsys):
    write_parquet(tmp_path / "data" / "a.parquet", clean_rows(5))
    scan(tmp_path / "data", out=tmp_path / "out", policy=PLUMBING, workers=1, progress=False)
    clean = next((tmp_path / "out" / "clean").iterdir())
    clean.write_bytes(clean.read_bytes() + b"\0")
    assert main(["croissant", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err
    assert "changed since the scan" in error and clean.name in error and error.count("\n") == 1
    assert main(["croissant", str(tmp_path / "data")]) == 2
    assert not (tmp_path / "out" / "croissant.json").exists()
