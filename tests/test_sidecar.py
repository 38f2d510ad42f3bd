"""The record-hash sidecar: similarity sketches, their comparison, and reading sidecars back."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dokumi.errors import InputError
from dokumi.hashing import record_digests
from dokumi.records import Batch
from dokumi.sidecar import (
    SIDECAR_SCHEMA,
    ExpectedHashes,
    normalize,
    read_sketches,
    resemblance,
    shingle_hashes,
    sidecar_batch,
    sidecar_files,
    sketches,
)

LONG = ("The committee met on Tuesday to review the budget for the coming year, and after a long "
        "discussion it agreed to fund the new library wing while postponing the road repairs.")


def compare(a: str, b: str):
    sketch, counts = sketches([a, b])
    return resemblance(sketch[:1], counts[:1], sketch[1:], counts[1:])


def test_normalize_removes_case_quote_and_whitespace_drift():
    assert normalize("  It\u2019s  \u201cFine\u201d\n\tnow ") == "it's \"fine\" now"


def test_shingles_of_a_batch_equal_shingles_of_each_text_alone():
    texts = ["abc", "", "hello world", "ab", "a much longer text with many shingles", "x"]
    together = shingle_hashes(texts)
    for text, shingles in zip(texts, together):
        assert shingles.tolist() == shingle_hashes([text])[0].tolist()
    assert [len(s) for s in together[:4]] == [1, 0, 7, 1]


def test_identical_and_normalisation_only_drift_give_identical_sketches():
    sketch, counts = sketches([LONG, LONG.replace(" ", "  ", 1) + "\n", LONG.replace("'", "\u2019") + " "])
    assert (sketch[0] == sketch[1]).all() and (sketch[0] == sketch[2]).all()
    assert counts[0] == counts[1] == counts[2] > 100


def test_unrelated_texts_share_almost_nothing():
    moved = compare(LONG, "Visit totally-safe-downloads.example to claim your prize. qwhxzkdpl")
    assert moved.jaccard[0] < 0.1 and moved.kept[0] < 0.2


def test_an_added_boilerplate_line_keeps_all_of_a_short_text():
    moved = compare("a small evergreen tree", "a small evergreen tree\nShare this page")
    assert moved.kept[0] > 0.8
    assert 5 <= moved.changed[0] <= 30
    assert 0.3 < moved.jaccard[0] < 0.9


def test_jaccard_estimate_tracks_the_true_overlap():
    words = LONG.split()
    half = " ".join(words[: len(words) // 2])
    moved = compare(LONG, half)
    truth = len(set(shingle_hashes([half])[0]) & set(shingle_hashes([LONG])[0])) / len(
        set(shingle_hashes([half])[0]) | set(shingle_hashes([LONG])[0]))
    assert abs(moved.jaccard[0] - truth) < 0.2
    assert moved.kept[0] > 0.8  # the half is inside the whole


def test_two_empty_texts_are_the_same_and_empty_versus_text_is_not():
    sketch, counts = sketches(["", "  ", "some text here"])
    same = resemblance(sketch[:1], counts[:1], sketch[1:2], counts[1:2])
    differ = resemblance(sketch[:1], counts[:1], sketch[2:], counts[2:])
    assert same.jaccard[0] == 1.0 and same.kept[0] == 1.0
    assert differ.jaccard[0] == 0.0 and differ.kept[0] == 0.0


def write_sidecar(path, ids, texts):
    batch = Batch(records=pa.record_batch({"id": ids, "text": texts}), shard="part-0",
                  rows=pa.array(range(len(ids)), pa.int64()))
    table = pa.Table.from_batches([sidecar_batch(batch, record_digests(batch))])
    pq.write_table(table, path)
    return batch, table


def test_sidecar_rows_hold_hashes_and_sketches_but_no_text(tmp_path):
    secret = "confidential paragraph nobody may read"
    _, table = write_sidecar(tmp_path / "h.parquet", ["a", "b"], [secret, LONG])
    assert table.schema.equals(SIDECAR_SCHEMA, check_metadata=True)
    assert secret.encode() not in (tmp_path / "h.parquet").read_bytes()
    assert table.column("sha256").to_pylist()[0] == hashlib.sha256(secret.encode()).hexdigest()
    sketch_rows, _ = sketches([secret, LONG])
    assert (read_sketches(table.column("sketch")) == sketch_rows).all()


def test_expected_hashes_look_up_by_id_including_repeated_ids(tmp_path):
    write_sidecar(tmp_path / "h.parquet", ["a", "b", "a"], ["first", "second", "third"])
    index = ExpectedHashes.load(tmp_path / "h.parquet")
    assert len(index) == 3
    starts, ends = index.lookup(["b", "a", "missing"])
    assert (ends - starts).tolist() == [1, 2, 0]


def test_sidecar_with_other_sketch_parameters_is_refused(tmp_path):
    _, table = write_sidecar(tmp_path / "h.parquet", ["a"], ["x"])
    other = json.dumps({"kind": "minhash", "permutations": 128})
    pq.write_table(table.replace_schema_metadata({"dokumi.sketch": other}), tmp_path / "old.parquet")
    with pytest.raises(InputError, match="sketch parameters differ"):
        ExpectedHashes.load(tmp_path / "old.parquet")


def test_bare_sidecar_files_are_found_from_a_folder_holding_hashes_or_a_hashes_folder(tmp_path):
    # a scan's manifest vouches for its sidecars: dokumi.sideinputs.load_hashes reads those (test_side_inputs.py)
    (tmp_path / "hashes").mkdir()
    write_sidecar(tmp_path / "hashes" / "00000-a.parquet", ["a"], ["x"])
    expected = [tmp_path / "hashes" / "00000-a.parquet"]
    assert sidecar_files(tmp_path) == expected
    assert sidecar_files(tmp_path / "hashes") == expected
    assert sidecar_files(expected[0]) == expected
    with pytest.raises(InputError, match="no such file"):
        sidecar_files(tmp_path / "nowhere")


def test_sketch_is_deterministic_across_calls():
    first, _ = sketches([LONG, "short one"])
    second, _ = sketches([LONG, "short one"])
    assert np.array_equal(first, second)


def test_batch_normalisation_of_ascii_text_matches_the_per_text_one():
    from dokumi.sidecar import _normalized_codes, normalize

    texts = ["", " ", "  A  b\tC\n", "\x1cx\x1f y\x0b", "plain", "Mixed CASE  end  ", "\r\n\r\n", "a"]
    codes, lengths = _normalized_codes(texts)
    expected = [normalize(text) for text in texts]
    assert lengths.tolist() == [len(text) for text in expected]
    assert "".join(map(chr, codes.tolist())) == "".join(expected)
    # one non-ASCII text sends the batch through the per-text path, with the same result for the rest
    codes, lengths = _normalized_codes(texts + ["Caf\u00e9  \u201cquoted\u201d"])
    assert "".join(map(chr, codes.tolist())) == "".join(expected) + "caf\u00e9 \"quoted\""
