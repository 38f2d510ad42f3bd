"""Where each decision goes (clean/, flagged/, duplicates/, quarantine/) and in which format (Parquet, JSONL)."""

from __future__ import annotations

import base64
import datetime
import gzip
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import PLUMBING, assert_accounted, clean_rows, read_jsonl, write_parquet

from dokumi import PolicyError, scan
from dokumi.cli import main

# with the plumbing recipe: a zero-width space drops, a lone left-to-right mark flags, the rest is kept
DROP, FLAG = "zero\u200bwidth", "a lone \u200e mark"

ROUTED_RECIPE = """
name = "routed"
[records]
null_content = "flag"
[routing]
flag = "{flag}"
[stages.invisible]
action = "drop"
threshold = 0.5
flag_threshold = 0.3
[stages.near_duplicates]
mode = "dedup"
action = "off"
duplicates = "duplicate"
jaccard = 0.7
verify = "exact"
"""


def recipe(tmp_path: Path, flag: str = "flagged") -> Path:
    path = tmp_path / f"routed-{flag}.toml"
    path.write_text(ROUTED_RECIPE.format(flag=flag))
    return path


def routed_rows() -> list[dict]:
    rows = clean_rows(12)
    rows[2]["text"] = DROP
    rows[5]["text"] = FLAG
    rows[8]["text"] = rows[9]["text"] = rows[10]["text"] = "the very same sentence written out three times here"
    return rows


def ids(table: pa.Table | None) -> list[str]:
    return sorted(table.column("id").to_pylist()) if table is not None else []


def test_each_decision_goes_to_its_own_folder(tmp_path):
    write_parquet(tmp_path / "in.parquet", routed_rows())
    result = scan(tmp_path / "in.parquet", out=tmp_path / "out", policy=recipe(tmp_path))
    outputs = assert_accounted(tmp_path / "out", 12)
    assert dict(result.decisions) == {"keep": 8, "duplicate": 2, "flag": 1, "drop": 1}
    assert ids(outputs["flagged"]) == ["doc-5"] and ids(outputs["quarantine"]) == ["doc-2"]
    assert ids(outputs["duplicates"]) == ["doc-10", "doc-9"]
    assert "doc-5" not in ids(outputs["clean"]) and len(ids(outputs["clean"])) == 8
    assert outputs["clean"].schema.names == ["id", "text"]
    flagged = outputs["flagged"].to_pylist()[0]
    assert flagged["reasons"] == ["trigger:bidi-mark,count=1"]
    assert 0.5 <= flagged["risk"] < 0.9
    assert outputs["flagged"].schema.names == ["id", "text", "reasons", "risk"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["routing"] == {"keep": "clean", "duplicate": "duplicates", "flag": "flagged", "drop": "quarantine"}
    assert {o["kind"] for o in manifest["outputs"]} >= {"clean", "flagged", "duplicates", "quarantine"}
    summary = result.summary()
    assert "  flag               1    8.33%  flagged/" in summary
    assert "  keep               8   66.67%  clean/" in summary
    report = (tmp_path / "out" / "report.html").read_text()
    assert "<td class='folder'>flagged/</td>" in report and "<td class='folder'>quarantine/</td>" in report


def test_a_recipe_can_route_flags_to_clean(tmp_path):
    write_parquet(tmp_path / "in.parquet", routed_rows())
    result = scan(tmp_path / "in.parquet", out=tmp_path / "out", policy=recipe(tmp_path, "clean"))
    outputs = assert_accounted(tmp_path / "out", 12)
    assert outputs["flagged"] is None and not (tmp_path / "out" / "flagged").exists()
    assert "doc-5" in ids(outputs["clean"]) and outputs["clean"].schema.names == ["id", "text"]
    assert result.manifest["routing"]["flag"] == "clean"
    assert "  flag               1    8.33%  clean/" in result.summary()


def test_routing_accepts_only_known_folders(tmp_path):
    with pytest.raises(PolicyError, match=r"\[routing\]: flag = 'elsewhere' is not one of 'flagged', 'clean'"):
        scan(clean_rows(2), out=tmp_path / "out", policy=recipe(tmp_path, "elsewhere"))


def test_cli_set_routes_flags_to_clean(tmp_path, capsys):
    write_parquet(tmp_path / "in.parquet", routed_rows())
    code = main(["scan", str(tmp_path / "in.parquet"), "--out", str(tmp_path / "out"), "--policy",
                 str(recipe(tmp_path)), "--set", "routing.flag=clean"])
    assert code == 0 and "flag               1    8.33%  clean/" in capsys.readouterr().out


ROUND_TRIP = [
    {"id": "a", "text": "plain words", "meta": {"nested": {"list": [1, 2.5, None, {"deep": True}]}, "empty": {}},
     "unicode": "日本語 🎌 café \\ \" \t", "nothing": None},
    {"id": "b", "text": "other words", "only_here": [{"x": 1}, {"y": "z"}], "big": 123456789012345678901234567890},
    {"text": "no id at all", "float": 1e-300, "mixed": [1, "two", None]},
    {"id": "c", "text": DROP, "reasons": "the input's own", "risk": "theirs"},
    {"id": "d", "text": FLAG, "nested": {"k": "v"}},
    {"id": "e", "text": None},
]


def write_lines(path: Path, rows: list[dict]) -> bytes:
    data = b"".join(json.dumps(row, ensure_ascii=False).encode() + b"\n" for row in rows)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return data


@pytest.mark.parametrize("name", ["in.jsonl", "in.jsonl.gz"])
def test_jsonl_in_gives_jsonl_out_with_every_field_as_it_came(tmp_path, name):
    data = write_lines(tmp_path / name, ROUND_TRIP)
    scan(tmp_path / name, out=tmp_path / "out", policy=PLUMBING)
    assert_accounted(tmp_path / "out", len(ROUND_TRIP))
    suffix = ".jsonl.gz" if name.endswith(".gz") else ".jsonl"
    folder = tmp_path / "out"
    assert sorted(p.name for p in (folder / "clean").iterdir()) == [f"00000-in{suffix}"]
    clean = read_jsonl(folder / "clean" / f"00000-in{suffix}")
    assert clean == ROUND_TRIP[:3], "kept records: every field, nested, unicode and null, exactly as read"
    lines = data.splitlines(keepends=True)
    raw_clean = (gzip.decompress if name.endswith(".gz") else bytes)((folder / "clean" / f"00000-in{suffix}")
                                                                     .read_bytes())
    assert raw_clean == b"".join(lines[:3]), "and byte for byte"
    quarantined = read_jsonl(folder / "quarantine" / f"00000-in{suffix}")
    assert quarantined == [{**ROUND_TRIP[3], "dokumi_reasons": ["trigger:zero-width,count=1"]}]
    flagged = {row["id"]: row for row in read_jsonl(folder / "flagged" / f"00000-in{suffix}")}
    assert set(flagged) == {"d", "e"}
    # a record of this batch has its own reasons and risk: dokumi's take other names, for every record of it
    assert {k: v for k, v in flagged["d"].items() if k not in ("dokumi_reasons", "dokumi_risk")} == ROUND_TRIP[4]
    assert flagged["e"]["dokumi_reasons"] == ["null-content"] and flagged["e"]["text"] is None
    assert 0 < flagged["d"]["dokumi_risk"] < 1


def test_compressed_jsonl_outputs_are_byte_identical_across_runs(tmp_path):
    write_lines(tmp_path / "in.jsonl.gz", ROUND_TRIP)
    for out in ("one", "two"):
        scan(tmp_path / "in.jsonl.gz", out=tmp_path / out, policy=PLUMBING)
    for folder in ("clean", "flagged", "quarantine"):
        first = (tmp_path / "one" / folder / "00000-in.jsonl.gz").read_bytes()
        assert first == (tmp_path / "two" / folder / "00000-in.jsonl.gz").read_bytes()


def test_parquet_in_jsonl_out_keeps_values_json_can_hold(tmp_path):
    table = pa.table({
        "id": ["a", "b", "c"],
        "text": ["plain words", FLAG, "more words"],
        "nested": pa.array([{"k": [1, 2]}, None, {"k": []}]),
        "when": pa.array([datetime.datetime(2024, 5, 1, 12, 30), None, None], pa.timestamp("us")),
        "blob": pa.array([b"\x00\xff", None, b""], pa.binary()),
        "score": [0.5, float("nan"), None],
        "label": pa.array(["x", "y", "x"]).dictionary_encode(),
    })
    pq.write_table(table, tmp_path / "in.parquet")
    code = main(["scan", str(tmp_path / "in.parquet"), "--out", str(tmp_path / "out"), "--policy", str(PLUMBING),
                 "--output-format", "jsonl"])
    assert code == 0
    clean = read_jsonl(tmp_path / "out" / "clean" / "00000-in.jsonl")
    assert clean[0] == {"id": "a", "text": "plain words", "nested": {"k": [1, 2]}, "when": "2024-05-01T12:30:00",
                        "blob": base64.b64encode(b"\x00\xff").decode(), "score": 0.5, "label": "x"}
    assert clean[1]["nested"] == {"k": []} and clean[1]["score"] is None and clean[1]["blob"] == ""
    flagged = read_jsonl(tmp_path / "out" / "flagged" / "00000-in.jsonl")
    assert flagged[0]["id"] == "b" and flagged[0]["score"] is None, "NaN is not JSON: it becomes null"
    assert flagged[0]["reasons"] and 0 < flagged[0]["risk"] < 1


def test_jsonl_in_parquet_out_on_request(tmp_path):
    write_lines(tmp_path / "in.jsonl", ROUND_TRIP)
    scan(tmp_path / "in.jsonl", out=tmp_path / "out", policy=PLUMBING, output_format="parquet")
    outputs = assert_accounted(tmp_path / "out", len(ROUND_TRIP))
    assert not list((tmp_path / "out").rglob("*.jsonl"))
    assert outputs["clean"].column("unicode").to_pylist()[0] == ROUND_TRIP[0]["unicode"]
    for file in (tmp_path / "out").rglob("*.parquet"):
        pd.read_parquet(file)


def test_unknown_output_format_is_refused_before_reading(tmp_path, capsys):
    with pytest.raises(Exception, match="output format 'csv' is not one of: parquet, jsonl"):
        scan(clean_rows(2), out=tmp_path / "out", policy=PLUMBING, output_format="csv")
    assert not (tmp_path / "out").exists()
    with pytest.raises(SystemExit):
        main(["scan", "x.parquet", "--out", str(tmp_path / "out"), "--output-format", "csv"])
    assert "invalid choice: 'csv'" in capsys.readouterr().err


@pytest.mark.parametrize("name, separator", [("in.csv", ","), ("in.tsv", "\t"), ("in.csv.gz", ",")])
def test_csv_and_tsv_input_with_a_column_mapping(tmp_path, capsys, name, separator):
    header = separator.join(["doc_id", "body", "label"])
    lines = [header, f'001{separator}"plain, quoted{separator}words"{separator}a',
             f'002{separator}"two\nlines of {DROP}"{separator}b', f"003{separator}{FLAG}{separator}",
             f"004{separator}too{separator}many{separator}fields", f"005{separator}caf\udce9{separator}x",
             f"006{separator}last words{separator}c"]
    data = "\n".join(lines).encode("utf-8", "surrogateescape") + b"\n"
    (tmp_path / name).write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    code = main(["scan", str(tmp_path / name), "--out", str(tmp_path / "out"), "--policy", str(PLUMBING),
                 "--column", "text=body", "--column", "id=doc_id"])
    captured = capsys.readouterr()
    assert code == 0 and "Traceback" not in captured.err
    outputs = assert_accounted(tmp_path / "out", 6)
    clean = outputs["clean"].to_pylist()
    assert clean == [{"doc_id": "001", "body": f"plain, quoted{separator}words", "label": "a"},
                     {"doc_id": "006", "body": "last words", "label": "c"}], "text kept as text: 001 stays 001"
    assert pq.read_table(tmp_path / "out" / "quarantine" / "00000-in.parquet").column("doc_id").to_pylist() == [
        "002"]
    assert outputs["flagged"].column("doc_id").to_pylist() == ["003"]
    reasons = {row["row"]: row["reasons"] for row in outputs["scores"].to_pylist()}
    assert sorted(r[0] for r in reasons.values() if r and r[0].startswith("unreadable")) == [
        "unreadable:csv-fields,expected=3,got=4", "unreadable:non-utf8,field=body,byte=3"]
    assert f"warning: shard {name} record" in captured.out


def test_report_with_text_reads_flagged_and_quarantined_records_in_jsonl(tmp_path):
    write_lines(tmp_path / "in.jsonl.gz", ROUND_TRIP)
    scan(tmp_path / "in.jsonl.gz", out=tmp_path / "out", policy=PLUMBING)
    plain = (tmp_path / "out" / "report.html").read_text()
    assert "zero\u200bwidth" not in plain, "no text unless asked"
    assert main(["report", str(tmp_path / "out"), "--with-text"]) == 0
    report = (tmp_path / "out" / "report.html").read_text()
    # the text of flagged and quarantined records, its hidden characters shown as code points
    assert "zero<span class='cp'>U+200B</span>width" in report
    assert "a lone <span class='cp'>U+200E</span> mark" in report
