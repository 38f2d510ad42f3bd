"""Bad input: a clear message naming file, row and column, and no record lost."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import assert_accounted, clean_rows, read_outputs, write_jsonl, write_parquet

from dokumi import InputError, scan
from dokumi.cli import main


def test_missing_column_names_column_shard_and_found_columns(tmp_path, no_leftovers):
    write_parquet(tmp_path / "in" / "a.parquet", clean_rows(3))
    write_parquet(tmp_path / "in" / "b.parquet", [{"id": "x", "body": "no text column here"}])
    out = tmp_path / "out"
    with pytest.raises(InputError) as error:
        scan(tmp_path / "in", out=out)
    message = str(error.value)
    assert "column 'text' missing in shard b.parquet" in message
    assert "found: id, body" in message
    no_leftovers(out)


def test_missing_column_cli_exits_nonzero_with_one_line(tmp_path, capsys, no_leftovers):
    write_parquet(tmp_path / "a.parquet", [{"body": "x"}])
    code = main(["scan", str(tmp_path / "a.parquet"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code != 0
    assert err.count("\n") == 1 and err.startswith("dokumi: error: column 'text' missing")
    no_leftovers(tmp_path / "out")


def test_custom_column_name_is_used(tmp_path):
    write_parquet(tmp_path / "a.parquet", [{"content": "hello world"}, {"content": "zero\u200bwidth"}])
    code = main(["scan", str(tmp_path / "a.parquet"), "--out", str(tmp_path / "out"), "--column", "text=content"])
    assert code == 0
    scores = assert_accounted(tmp_path / "out", 2)["scores"]
    assert scores.column("decision").to_pylist() == ["keep", "drop"]


def test_empty_files_and_zero_row_shards_warn_and_count_zero(tmp_path):
    folder = tmp_path / "in"
    write_parquet(folder / "full.parquet", clean_rows(4))
    (folder / "zero-bytes.parquet").write_bytes(b"")
    (folder / "empty.jsonl").write_bytes(b"")
    pq.write_table(pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}),
                   folder / "no-rows.parquet")
    result = scan(folder, out=tmp_path / "out")
    assert any("zero-bytes.parquet is empty (0 bytes)" in w for w in result.warnings)
    assert "shard no-rows.parquet has no records" in result.warnings
    assert "shard empty.jsonl is empty (0 bytes): no records" in result.warnings
    assert_accounted(tmp_path / "out", 4)
    inputs = {i["name"]: i["records"] for i in result.manifest["inputs"]}
    assert inputs == {"full.parquet": 4, "zero-bytes.parquet": 0, "empty.jsonl": 0, "no-rows.parquet": 0}


def test_corrupt_parquet_names_file_and_leaves_no_complete_output(tmp_path, no_leftovers):
    folder = tmp_path / "in"
    write_parquet(folder / "good.parquet", clean_rows(5))
    (folder / "bad.parquet").write_bytes(b"PAR1 this is not really parquet at all PAR1")
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"shard bad\.parquet: corrupt or not a Parquet file"):
        scan(folder, out=out)
    no_leftovers(out)


def test_truncated_parquet_is_detected(tmp_path, no_leftovers):
    path = write_parquet(tmp_path / "in" / "cut.parquet", clean_rows(200))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.parquet"):
        scan(path, out=tmp_path / "out")
    no_leftovers(tmp_path / "out")


def test_corrupt_page_inside_parquet_fails_naming_the_shard(tmp_path, no_leftovers):
    rows = [{"id": f"r{i}", "text": f"record number {i} " * 20} for i in range(2000)]
    path = write_parquet(tmp_path / "in" / "pages.parquet", rows, compression="snappy", row_group_size=500)
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 200] = b"\xff" * 200  # scramble a data page, keep the footer intact
    path.write_bytes(bytes(data))
    out = tmp_path / "out"
    with pytest.raises(InputError, match=r"shard pages\.parquet: corrupt"):
        scan(path, out=out, workers=1)
    no_leftovers(out)


def test_non_utf8_and_non_json_lines_are_quarantined_as_unreadable(tmp_path):
    path = write_jsonl(
        tmp_path / "mixed.jsonl",
        [
            {"id": "ok-1", "text": "fine text"},
            b'{"id": "latin1", "text": "caf\xe9"}',
            b"{not json at all",
            b"[1, 2, 3]",
            {"id": "ok-2", "text": 42},
            {"id": "ok-3", "text": "more fine text"},
        ],
    )
    result = scan(path, out=tmp_path / "out")
    outputs = assert_accounted(tmp_path / "out", 6)
    scores = outputs["scores"].to_pylist()
    by_row = {row["row"]: row for row in scores}
    assert by_row[1]["reasons"] == ["unreadable:non-utf8,byte=29"]
    assert by_row[1]["id"] == "mixed.jsonl:1"
    assert by_row[2]["reasons"][0].startswith("unreadable:invalid-json")
    assert by_row[3]["reasons"] == ["unreadable:not-an-object,type=list"]
    assert by_row[4]["reasons"] == ["unreadable:column=text,type=int"]
    assert {by_row[r]["decision"] for r in (1, 2, 3, 4)} == {"drop"}
    unreadable = pq.read_table(next((tmp_path / "out" / "quarantine").glob("*.unreadable.parquet")))
    assert unreadable.column("raw").to_pylist()[0] == b'{"id": "latin1", "text": "caf\xe9"}\n'
    assert result.decisions["drop"] == 4


def test_null_text_is_flagged_or_dropped_by_policy(tmp_path):
    rows = [{"id": "a", "text": "fine"}, {"id": "b", "text": None}]
    write_parquet(tmp_path / "a.parquet", rows)
    pretraining = scan(tmp_path / "a.parquet", out=tmp_path / "pre", policy="pretraining")
    assert pretraining.decisions == {"keep": 1, "flag": 1}
    finetuning = scan(tmp_path / "a.parquet", out=tmp_path / "fine", policy="finetuning")
    assert finetuning.decisions == {"keep": 1, "drop": 1}
    quarantine = assert_accounted(tmp_path / "fine", 2)["quarantine"]
    assert quarantine.column("id").to_pylist() == ["b"]
    assert quarantine.column("reasons").to_pylist() == [["null-content"]]


def test_duplicate_ids_are_kept_and_reported_with_shard_and_row(tmp_path):
    write_parquet(tmp_path / "in" / "a.parquet", [{"id": "same", "text": "one"}, {"id": "u1", "text": "two"}])
    write_parquet(tmp_path / "in" / "b.parquet", [{"id": "u2", "text": "three"}, {"id": "same", "text": "four"}])
    result = scan(tmp_path / "in", out=tmp_path / "out", workers=2)
    assert_accounted(tmp_path / "out", 4)
    text = "\n".join(result.warnings)
    assert "1 records repeat an id of column 'id'" in text
    assert "a.parquet row 0" in text and "b.parquet row 1" in text


def test_fifty_megabyte_document_is_scanned_and_flagged_oversized(tmp_path):
    big = "lorem ipsum dolor sit amet " * (50_000_000 // 27 + 1)
    write_parquet(tmp_path / "big.parquet", [{"id": "big", "text": big}, {"id": "small", "text": "ok"}])
    result = scan(tmp_path / "big.parquet", out=tmp_path / "out")
    scores = assert_accounted(tmp_path / "out", 2)["scores"].to_pylist()
    assert scores[0]["reasons"] == [f"oversized:bytes={len(big)}"]
    assert scores[0]["decision"] == "flag"
    assert result.decisions == {"flag": 1, "keep": 1}


def test_mixed_schemas_across_shards_keep_their_own_columns(tmp_path):
    write_parquet(tmp_path / "in" / "a.parquet", [{"id": "a1", "text": "alpha", "label": 1}])
    write_parquet(tmp_path / "in" / "b.parquet", [{"id": "b1", "text": "beta", "url": "http://x.example"}])
    write_jsonl(tmp_path / "in" / "c.jsonl", [{"text": "gamma"}, {"text": "delta", "extra": [1, 2]}])
    result = scan(tmp_path / "in", out=tmp_path / "out", workers=1, output_format="parquet")
    assert_accounted(tmp_path / "out", 4)
    warning = next(w for w in result.warnings if w.startswith("mixed schemas: shard b.parquet"))
    assert "lacks label" in warning and "adds url" in warning
    clean = sorted((tmp_path / "out" / "clean").glob("*.parquet"))
    assert [pq.read_schema(f).names for f in clean] == [["id", "text", "label"], ["id", "text", "url"],
                                                        ["text", "extra"]]


def test_mixed_value_types_within_a_jsonl_column_are_kept_as_json_text_in_parquet(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"text": "a", "meta": 1}, {"text": "b", "meta": {"k": "v"}}])
    scan(path, out=tmp_path / "out", output_format="parquet")
    clean = read_outputs(tmp_path / "out")["clean"]
    assert clean.column("meta").to_pylist() == ["1", json.dumps({"k": "v"})]
    scan(path, out=tmp_path / "jsonl")  # JSONL in, JSONL out: each value as it came
    lines = (tmp_path / "jsonl" / "clean" / "00000-m.jsonl").read_text().splitlines()
    assert [json.loads(line)["meta"] for line in lines] == [1, {"k": "v"}]


def test_unknown_file_format_and_missing_input_are_errors(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="notes.txt: unknown format"):
        scan(tmp_path / "notes.txt", out=tmp_path / "out")
    with pytest.raises(InputError, match="does not exist"):
        scan(tmp_path / "nope.parquet", out=tmp_path / "out")
    with pytest.raises(InputError, match="no file matches"):
        scan(str(tmp_path / "*.jsonl"), out=tmp_path / "out")


def test_out_inside_the_input_folder_is_refused_and_hidden_folders_are_skipped(tmp_path):
    write_parquet(tmp_path / "data" / "a.parquet", clean_rows(3))
    write_parquet(tmp_path / "data" / ".cache" / "old.parquet", clean_rows(3))
    scan(tmp_path / "data", out=tmp_path / "data" / "scan")
    assert_accounted(tmp_path / "data" / "scan", 3)
    with pytest.raises(InputError, match="lies inside --out"):
        scan(tmp_path / "data" / "scan" / "clean", out=tmp_path / "data" / "scan", overwrite=True)
    # the input folder itself is no scan: --overwrite is refused before anything is read or deleted
    with pytest.raises(InputError, match="not a dokumi scan folder"):
        scan(tmp_path / "data", out=tmp_path / "data", overwrite=True)
    assert_accounted(tmp_path / "data" / "scan", 3)
    assert (tmp_path / "data" / ".cache" / "old.parquet").is_file()


def test_text_column_of_wrong_type_in_parquet_is_an_error(tmp_path):
    write_parquet(tmp_path / "n.parquet", [{"text": 1}, {"text": 2}])
    with pytest.raises(InputError, match=r"column 'text' in shard n\.parquet has type int64"):
        scan(tmp_path / "n.parquet", out=tmp_path / "out")
