"""Hostile and odd input: one bad line never stops a scan, and every output reads back."""

from __future__ import annotations

import gzip
import json
import os
import zlib
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import PLUMBING, assert_accounted, clean_rows, read_outputs, write_jsonl, write_parquet

from dokumi import InputError, scan
from dokumi.cli import main
from dokumi.display import printable
from dokumi.jsonlines import MAX_DEPTH, parse_record, split_lines, too_deep_at


def nested(depth: int, kind: str) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


def assert_readable(out: Path) -> None:
    """Every Parquet file a scan wrote opens with pyarrow and with pandas."""
    files = sorted(out.rglob("*.parquet"))
    assert files
    for file in files:
        table = pq.read_table(file)
        frame = pd.read_parquet(file)
        assert len(frame) == table.num_rows, file
        names = [name.casefold() for name in table.schema.names]
        assert len(set(names)) == len(names), f"duplicate fields in {file}: {table.schema.names}"


GOOD = clean_rows(6)

PREFIX = b'{"id": "bad", "text": "x", "n": '
HOSTILE_LINES = {
    "long-integer": (PREFIX + b"9" * 5000 + b"}", f"unreadable:number-too-long,col={len(PREFIX) + 1}"),
    "deep-nesting": (PREFIX + b"[" * 100_000 + b"]" * 100_000 + b"}",
                     f"unreadable:too-deep,limit={MAX_DEPTH},col={len(PREFIX) + MAX_DEPTH}"),  # the object is level 1
    "surrogate-in-text": (rb'{"id": "bad", "text": "a\ud800b"}', "unreadable:lone-surrogate,field=text"),
    "surrogate-in-id": (rb'{"id": "b\udc00", "text": "fine"}', "unreadable:lone-surrogate,field=id"),
    "surrogate-in-field": (rb'{"id": "bad", "text": "fine", "meta": {"tags": ["ok", "\ud800"]}}',
                           "unreadable:lone-surrogate,field=meta.tags[1]"),
    "surrogate-in-key": (rb'{"id": "bad", "text": "fine", "k\ud800": 1}', r"unreadable:lone-surrogate,field=k\ud800"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_LINES))
def test_one_hostile_jsonl_line_is_quarantined_and_every_other_record_lands_once(tmp_path, case):
    line, reason = HOSTILE_LINES[case]
    path = write_jsonl(tmp_path / "in.jsonl", [*GOOD[:3], line, *GOOD[3:]])
    result = scan(path, out=tmp_path / "out", policy=PLUMBING)
    outputs = assert_accounted(tmp_path / "out", 7)
    scores = {row["row"]: row for row in outputs["scores"].to_pylist()}
    assert scores[3]["reasons"] == [reason] and scores[3]["decision"] == "drop"
    assert sorted(outputs["clean"].column("id").to_pylist()) == sorted(row["id"] for row in GOOD)
    assert f"shard in.jsonl line 4: {reason} (quarantined)" in result.warnings
    unreadable = pq.read_table(tmp_path / "out" / "quarantine" / "00000-in.unreadable.parquet")
    assert unreadable.column("raw").to_pylist() == [line + b"\n"]
    assert_readable(tmp_path / "out")


def test_hostile_lines_through_the_cli_give_one_warning_line_each_and_no_traceback(tmp_path, capsys):
    lines = [HOSTILE_LINES[case][0] for case in sorted(HOSTILE_LINES)]
    path = write_jsonl(tmp_path / "in.jsonl", [GOOD[0], *lines, GOOD[1]])
    code = main(["scan", str(path), "--out", str(tmp_path / "out"), "--policy", str(PLUMBING)])
    captured = capsys.readouterr()
    assert code == 0 and "Traceback" not in captured.err
    warnings = [line for line in captured.out.splitlines() if line.startswith("warning: shard in.jsonl line")]
    assert len(warnings) == 5  # the first five by line; the sixth is counted
    assert "warning: shard in.jsonl: 1 more unreadable rows quarantined" in captured.out
    assert_accounted(tmp_path / "out", 8)


def test_too_deep_at_ignores_brackets_inside_strings():
    text = json.dumps({"text": "[" * 500, "n": nested(3, "list")}).encode()
    assert too_deep_at(text) is None
    assert parse_record(text)[1] is None
    assert too_deep_at(b'{"a": ' + b"[" * 130 + b"]" * 130 + b"}") == 6 + MAX_DEPTH


def gzip_lines(rows: list[dict]) -> bytes:
    return gzip.compress(b"".join(json.dumps(row).encode() + b"\n" for row in rows))


def test_gzip_with_a_cut_tail_scans_the_readable_prefix_and_names_the_error(tmp_path):
    rows = [{"id": f"r{i}", "text": f"record number {i} with some words"} for i in range(400)]
    data = gzip_lines(rows)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) * 3 // 4])
    whole = zlib.decompressobj(31).decompress(path.read_bytes())
    complete = whole.count(b"\n")
    result = scan(path, out=tmp_path / "out", policy=PLUMBING)
    outputs = assert_accounted(tmp_path / "out", complete + 1)
    assert outputs["clean"].column("id").to_pylist() == [f"r{i}" for i in range(complete)]
    last = outputs["scores"].to_pylist()[-1]
    assert last["reasons"] == ["unreadable:truncated"] and last["row"] == complete
    assert any(w.startswith(f"shard cut.jsonl.gz: reading stopped after line {complete + 1}")
               and "end-of-stream marker" in w for w in result.warnings)
    raw = pq.read_table(tmp_path / "out" / "quarantine" / "00000-cut.unreadable.parquet").column("raw")
    assert raw.to_pylist() == [whole[whole.rindex(b"\n") + 1:]]


def test_gzip_with_corrupt_data_names_the_error_and_keeps_what_came_before(tmp_path):
    rows = [{"id": f"r{i}", "text": f"record {i} " + "words " * (i % 7)} for i in range(3000)]
    data = bytearray(gzip_lines(rows))
    data[-8:-4] = bytes(4 * [0])  # the CRC-32 in the trailer: every byte decompresses, the check fails
    path = tmp_path / "crc.jsonl.gz"
    path.write_bytes(bytes(data))
    result = scan(path, out=tmp_path / "out", policy=PLUMBING)
    assert_accounted(tmp_path / "out", 3000)
    assert any("crc.jsonl.gz: reading stopped after line 3,000" in w and "corrupt compressed data" in w
               for w in result.warnings)


def test_a_gz_file_that_is_not_gzip_at_all_is_a_one_line_error(tmp_path, capsys, no_leftovers):
    path = tmp_path / "fake.jsonl.gz"
    path.write_bytes(b'{"text": "plain, not compressed"}\n')
    code = main(["scan", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "fake.jsonl.gz: not a readable gzip file" in err
    no_leftovers(tmp_path / "out")


def test_fields_nested_fifty_levels_deep_leave_every_output_readable(tmp_path):
    rows = [
        {"id": "lists", "text": "zero\u200bwidth", "meta": nested(50, "list")},
        {"id": "dicts", "text": "plain words", "meta": nested(50, "dict")},
        {"id": "empty", "text": "hidden\u200bagain", "meta": {}, "items": [{}]},
        *GOOD,
    ]
    path = write_jsonl(tmp_path / "in.jsonl", rows)
    scan(path, out=tmp_path / "parquet", policy=PLUMBING, output_format="parquet")
    outputs = assert_accounted(tmp_path / "parquet", len(rows))
    assert_readable(tmp_path / "parquet")
    quarantined = {row["id"]: row for row in outputs["quarantine"].to_pylist()}
    assert json.loads(quarantined["lists"]["meta"]) == nested(50, "list")
    assert json.loads(quarantined["empty"]["meta"]) == {}
    assert json.loads(quarantined["empty"]["items"]) == [{}]
    scan(path, out=tmp_path / "jsonl", policy=PLUMBING)  # JSONL out: the fields as they came
    assert_readable(tmp_path / "jsonl")
    lines = (tmp_path / "jsonl" / "quarantine" / "00000-in.jsonl").read_text().splitlines()
    assert [json.loads(line)["meta"] for line in lines] == [nested(50, "list"), {}]


def test_in_memory_tables_with_unwritable_nesting_are_written_as_json_text(tmp_path):
    table = pa.table({
        "id": ["a", "b"],
        "text": ["fine words", "zero\u200bwidth"],
        "deep": pa.array([nested(50, "list"), None]),
        "shallow": pa.array([nested(20, "dict"), nested(20, "dict")]),
    })
    scan(table, out=tmp_path / "out", policy=PLUMBING)
    assert_readable(tmp_path / "out")
    outputs = assert_accounted(tmp_path / "out", 2)
    clean = outputs["clean"]
    assert clean.schema.field("deep").type == pa.string()
    assert json.loads(clean.column("deep")[0].as_py()) == nested(50, "list")
    assert pa.types.is_struct(clean.schema.field("shallow").type), "columns Parquet can hold stay nested"


def test_input_columns_named_like_dokumis_own_never_collide(tmp_path):
    rows = [
        {"text": "fine words", "reasons": "theirs", "dokumi_reasons": 1, "Risk": 0.5, "decision": "ship",
         "ID": "their id"},
        {"text": "zero\u200bwidth", "reasons": "theirs too", "dokumi_reasons": 2, "Risk": 0.7, "decision": "hold",
         "ID": "their other id"},
    ]
    write_parquet(tmp_path / "in.parquet", rows)
    scan(tmp_path / "in.parquet", out=tmp_path / "out", policy=PLUMBING)
    assert_readable(tmp_path / "out")
    quarantine = read_outputs(tmp_path / "out")["quarantine"]
    names = quarantine.schema.names
    assert names[:6] == ["text", "reasons", "dokumi_reasons", "Risk", "decision", "ID"]
    added = {field.metadata[b"dokumi.column"].decode(): field.name
             for field in quarantine.schema if field.metadata and b"dokumi.column" in field.metadata}
    assert added == {"id": "dokumi_id", "reasons": "dokumi_reasons_2"}
    row = quarantine.to_pylist()[0]
    assert (row["reasons"], row["dokumi_reasons"], row["Risk"], row["decision"], row["ID"]) == (
        "theirs too", 2, 0.7, "hold", "their other id")
    assert row["dokumi_reasons_2"] == ["trigger:zero-width,count=1"]
    assert row["dokumi_id"] == "in.parquet:1"


def test_an_input_naming_a_column_twice_is_a_one_line_error(tmp_path, capsys, no_leftovers):
    table = pa.Table.from_arrays([pa.array(["a"]), pa.array(["x"]), pa.array(["b"])], names=["id", "text", "id"])
    pq.write_table(table, tmp_path / "twice.parquet")
    code = main(["scan", str(tmp_path / "twice.parquet"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err == "dokumi: error: shard twice.parquet: column 'id' appears 2 times\n"
    with pytest.raises(InputError, match="shard records: column 'id' appears 2 times"):
        scan(table, out=tmp_path / "out")
    no_leftovers(tmp_path / "out")


def test_utf8_bom_keeps_the_first_record(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"".join(json.dumps(row).encode() + b"\n" for row in GOOD))
    scan(path, out=tmp_path / "out", policy=PLUMBING)
    outputs = assert_accounted(tmp_path / "out", len(GOOD))
    assert outputs["clean"].column("id").to_pylist() == [row["id"] for row in GOOD]


@pytest.mark.parametrize("ending", [b"\r", b"\r\n", b"\n"])
def test_every_line_ending_gives_one_record_per_line(tmp_path, ending):
    rows = clean_rows(100)
    path = tmp_path / "lines.jsonl"
    path.write_bytes(ending.join(json.dumps(row).encode() for row in rows) + ending)
    scan(path, out=tmp_path / "out", policy=PLUMBING)
    outputs = assert_accounted(tmp_path / "out", 100)
    assert outputs["clean"].column("id").to_pylist() == [row["id"] for row in rows]


def test_split_lines_finds_a_lone_cr_across_chunk_boundaries():
    chunks = [b'{"a": 1}\r', b'{"a": 2}\r{"a"', b": 3}"]
    assert list(split_lines(chunks)) == [b'{"a": 1}\r', b'{"a": 2}\r', b'{"a": 3}']
    assert list(split_lines([b'{"a": 1}\r', b'\n{"a": 2}\r\n'])) == [b'{"a": 1}\r\n', b'{"a": 2}\r\n']


def test_a_utf16_file_is_a_one_line_error(tmp_path, no_leftovers):
    path = tmp_path / "wide.jsonl"
    path.write_bytes('{"text": "hello"}\n'.encode("utf-16"))
    with pytest.raises(InputError, match="wide.jsonl: UTF-16 encoded"):
        scan(path, out=tmp_path / "out")
    no_leftovers(tmp_path / "out")


def test_links_are_read_once_and_skipped_entries_are_named(tmp_path):
    data = tmp_path / "data"
    write_jsonl(data / "a.jsonl", clean_rows(5, "a"))
    write_jsonl(data / "sub" / "b.jsonl", clean_rows(3, "b"))
    os.symlink("a.jsonl", data / "link-to-a.jsonl")
    os.symlink("../a.jsonl", data / "sub" / "also-a.jsonl")
    os.link(data / "sub" / "b.jsonl", data / "hard-b.jsonl")
    os.symlink("..", data / "sub" / "loop")
    os.symlink("missing.jsonl", data / "dangling.jsonl")
    (data / "notes.txt").write_text("not data")
    write_jsonl(data / ".hidden.jsonl", clean_rows(2, "hidden"))
    result = scan(data, out=tmp_path / "out", policy=PLUMBING)
    outputs = assert_accounted(tmp_path / "out", 8)
    assert sorted(outputs["clean"].column("id").to_pylist()) == sorted(
        [f"a-{i}" for i in range(5)] + [f"b-{i}" for i in range(3)])
    assert {i["name"] for i in result.manifest["inputs"]} == {"a.jsonl", "hard-b.jsonl"} or {
        i["name"] for i in result.manifest["inputs"]} == {"a.jsonl", "sub/b.jsonl"}
    skipped = next(w for w in result.warnings if w.startswith(f"input {data}: skipped"))
    assert "not Parquet, JSONL or CSV: notes.txt" in skipped
    assert "hidden: .hidden.jsonl" in skipped
    assert "link to nothing: dangling.jsonl" in skipped
    once = next(w for w in result.warnings if "name a file already read" in w)
    assert "link-to-a.jsonl" in once and "also-a.jsonl" in once
    assert "\n" not in skipped and "\n" not in once


def test_a_dangling_link_given_as_input_is_named(tmp_path):
    os.symlink("gone.parquet", tmp_path / "link.parquet")
    with pytest.raises(InputError, match=r"link\.parquet' is a link to 'gone\.parquet', which does not exist"):
        scan(tmp_path / "link.parquet", out=tmp_path / "out")


def test_ids_cannot_forge_lines_in_the_cli_summary(tmp_path, capsys):
    forged = "x\nwarning: all records verified clean\x1b[2K"
    rows = [{"id": forged, "text": "zero\u200bwidth"}, {"id": "\x1b[31mred\u202e", "text": "bidi\u202eover"}]
    write_parquet(tmp_path / "in.parquet", rows)
    code = main(["scan", str(tmp_path / "in.parquet"), "--out", str(tmp_path / "out"), "--policy", str(PLUMBING)])
    out = capsys.readouterr().out
    assert code == 0
    assert "\x1b" not in out and "\u202e" not in out
    assert not any(line.startswith("warning: all records") for line in out.splitlines())
    assert "x\\nwarning: all records verified clean\\x1b[2K" in out
    assert "\\x1b[31mred\\u202e" in out


def test_printable_keeps_text_in_any_script_and_escapes_controls():
    assert printable("学校 café doc-1") == "学校 café doc-1"
    assert printable("a\nb\r\tc\x00\x1b\u2028\u200b") == "a\\nb\\r\\tc\\x00\\x1b\\u2028\\u200b"


TEXT_TYPES = {
    "dictionary": lambda texts: pa.array(texts).dictionary_encode(),
    "string_view": lambda texts: pa.array(texts, pa.string_view()),
    "large_string": lambda texts: pa.array(texts, pa.large_string()),
}


@pytest.mark.parametrize("kind", sorted(TEXT_TYPES))
def test_text_columns_of_every_string_type_are_scanned_alike(tmp_path, kind):
    texts = [row["text"] for row in GOOD] + ["zero\u200bwidth", None, "bidi \u202etxet\u202c"]
    ids = [f"r{i}" for i in range(len(texts))]
    plain = pa.table({"id": ids, "text": pa.array(texts, pa.string())})
    typed = pa.table({"id": ids, "text": TEXT_TYPES[kind](texts)})
    pq.write_table(plain, tmp_path / "plain.parquet")
    pq.write_table(typed, tmp_path / "typed.parquet")
    expected = scan(tmp_path / "plain.parquet", out=tmp_path / "plain", policy=PLUMBING)
    for source, out in ((tmp_path / "typed.parquet", "file"), (typed, "memory")):
        result = scan(source, out=tmp_path / out, policy=PLUMBING)
        outputs = assert_accounted(tmp_path / out, len(texts))
        assert outputs["scores"].select(["id", "decision", "reasons", "risk"]).equals(
            read_outputs(tmp_path / "plain")["scores"].select(["id", "decision", "reasons", "risk"]))
        assert result.manifest["inputs"][0]["merkle_root"] == expected.manifest["inputs"][0]["merkle_root"]
        assert outputs["clean"].schema.field("text").type == typed.schema.field("text").type
        assert_readable(tmp_path / out)


def test_in_memory_records_arrow_cannot_hold_are_a_one_line_error_naming_row_and_field(tmp_path, no_leftovers):
    rows = [{"id": "a", "text": "fine"}, {"id": "b", "text": "fine", "meta": {"tag": "x\ud800"}}]
    with pytest.raises(InputError, match=r"shard records: row 1: field meta\.tag holds a lone surrogate"):
        scan(rows, out=tmp_path / "out", policy=PLUMBING)
    no_leftovers(tmp_path / "out")


def test_cli_errors_quoting_data_stay_on_one_line(tmp_path, capsys):
    path = write_jsonl(tmp_path / "keys.jsonl", [{"body\ndokumi: all clear\x1b[2J": "no text column"}])
    code = main(["scan", str(path), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "\x1b" not in err
    assert err.startswith("dokumi: error: column 'text' missing in shard keys.jsonl")
    assert "found: body\\ndokumi: all clear\\x1b[2J" in err
