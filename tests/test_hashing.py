"""Canonical record hashes: which bytes are hashed, read straight from Arrow buffers."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest

from dokumi.hashing import (
    EMPTY_DIGEST,
    equal_rows,
    from_hex,
    pair_bytes,
    pair_sha256,
    record_digests,
    string_digests,
    text_sha256,
    to_hex,
)
from dokumi.records import Batch

TEXTS = ["plain ascii", "café crème", "学校へ行きます", "", "emoji 👍🏽 and\nnewline", "tab\tand \u200b zero width"]


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def batch_of(columns: dict, shard: str = "s") -> Batch:
    records = pa.record_batch(columns)
    return Batch(records=records, shard=shard, rows=pa.array(range(records.num_rows), pa.int64()))


def test_text_hash_is_sha256_of_utf8_bytes():
    for text in TEXTS:
        assert text_sha256(text) == hashlib.sha256(text.encode("utf-8")).hexdigest()


def test_pair_encoding_is_two_netstrings_with_byte_lengths():
    assert pair_bytes("Hi", "Hello") == b"2:Hi,5:Hello,"
    assert pair_bytes("é", "") == b"2:\xc3\xa9,0:,"
    assert pair_sha256("Hi", "Hello") == hashlib.sha256(b"2:Hi,5:Hello,").hexdigest()


def test_pair_encoding_cannot_be_forged_by_moving_a_separator():
    assert pair_sha256("a\n\nb", "c") != pair_sha256("a", "b\n\nc")
    assert pair_sha256("1:a,", "") != pair_sha256("", "a")


def test_text_batch_digests_match_hashlib_and_null_hashes_as_empty():
    values = TEXTS + [None]
    digests = record_digests(batch_of({"text": pa.array(values, pa.string())}))
    expected = [sha((v or "").encode("utf-8")) for v in values]
    assert digests.shape == (len(values), 32)
    assert [bytes(row) for row in digests] == expected
    assert bytes(digests[-1]) == EMPTY_DIGEST


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string()])
def test_sliced_arrays_hash_their_own_values(kind):
    array = pa.array(TEXTS, kind).slice(2, 3)
    assert [bytes(row) for row in string_digests(array, 3)] == [sha(t.encode()) for t in TEXTS[2:5]]


def test_a_null_slot_with_stale_bytes_still_hashes_as_empty():
    values = pa.array(["abc", "def"], pa.string())
    validity = pa.py_buffer(np.packbits([1, 0], bitorder="little").tobytes())
    with_null = pa.Array.from_buffers(pa.string(), 2, [validity, values.buffers()[1], values.buffers()[2]])
    assert with_null.to_pylist() == ["abc", None]
    assert bytes(string_digests(with_null, 2)[1]) == EMPTY_DIGEST


def test_non_string_content_column_hashes_its_string_form():
    digests = string_digests(pa.array([12, None]), 2)
    assert [bytes(row) for row in digests] == [sha(b"12"), EMPTY_DIGEST]


def test_instruction_batch_hashes_the_canonical_pair():
    prompts = ["What is 2+2?", "Translate: chat", None]
    responses = ["4", "cat", "orphan response"]
    digests = record_digests(batch_of({"prompt": prompts, "response": responses}))
    expected = [sha(pair_bytes(p or "", r or "")) for p, r in zip(prompts, responses)]
    assert [bytes(row) for row in digests] == expected


def test_hex_round_trip_and_validation():
    digests = np.stack([np.frombuffer(sha(t.encode()), np.uint8) for t in TEXTS])
    hexes = to_hex(digests)
    assert hexes.to_pylist() == [hashlib.sha256(t.encode()).hexdigest() for t in TEXTS]
    parsed, valid = from_hex(hexes)
    assert valid.all() and equal_rows(parsed, digests).all()

    upper = hexes[0].as_py().upper()
    column = pa.array([upper, "abc", "z" * 64, None, hexes[1].as_py()])
    parsed, valid = from_hex(column)
    assert valid.tolist() == [True, False, False, False, True]
    assert bytes(parsed[0]) == bytes(digests[0]) and bytes(parsed[4]) == bytes(digests[1])


def test_equal_rows_compares_whole_digests():
    a = np.zeros((3, 32), np.uint8)
    b = a.copy()
    b[1, 31] = 1
    assert equal_rows(a, b).tolist() == [True, False, True]


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string()])
def test_long_values_with_nulls_hash_like_short_ones(kind):
    values = ["x" * 5000, None, "y" * 3000 + "é", ""]
    digests = string_digests(pa.array(values, kind).slice(0, 4), 4)
    assert [bytes(row) for row in digests] == [sha((v or "").encode()) for v in values]
    pairs = record_digests(batch_of({"prompt": pa.array(values, kind), "response": pa.array(values[::-1], kind)}))
    assert [bytes(row) for row in pairs] == [sha(pair_bytes(p or "", r or "")) for p, r in zip(values, values[::-1])]
