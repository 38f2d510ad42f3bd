"""Canonical record hashes: exactly which bytes are hashed, and fast hashing of Arrow columns.

A record's hash is the SHA-256 of its content as UTF-8:

* text records: the UTF-8 bytes of ``text`` (DESIGN.md's ``sha256`` column);
* instruction pairs: the canonical pair encoding, two netstrings
  (``<byte length>:<bytes>,``), prompt first::

      pair_bytes("Hi", "Hello") == b"2:Hi,5:Hello,"

  Netstrings make the encoding unambiguous (no separator can be forged inside
  a prompt) and easy to reproduce in any language.

A null text, prompt or response is hashed as the empty string. Digests are
compared and stored as lowercase hex; upper-case hex is accepted on input.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

from dokumi.records import Batch

PAIR_ENCODING = "netstring/1"
DIGEST_SIZE = 32
EMPTY_DIGEST = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256
_HEX_VALUES = np.full(256, 255, dtype=np.uint8)
_HEX_VALUES[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)
_HEX_VALUES[np.frombuffer(b"ABCDEF", np.uint8)] = np.arange(10, 16, dtype=np.uint8)


def text_sha256(text: str) -> str:
    """Lowercase hex SHA-256 of ``text`` encoded as UTF-8."""
    return _sha256(text.encode("utf-8")).hexdigest()


def pair_bytes(prompt: str, response: str) -> bytes:
    """The canonical encoding of an instruction pair: ``netstring(prompt) + netstring(response)``."""
    return _netstring(prompt.encode("utf-8")) + _netstring(response.encode("utf-8"))


def pair_sha256(prompt: str, response: str) -> str:
    """Lowercase hex SHA-256 of :func:`pair_bytes`."""
    return _sha256(pair_bytes(prompt, response)).hexdigest()


def _netstring(data: bytes) -> bytes:
    return b"%d:%s," % (len(data), data)


def record_digests(batch: Batch) -> np.ndarray:
    """The SHA-256 of every record of ``batch`` as an ``(n, 32)`` uint8 array.

    Text batches hash ``text``; instruction batches hash the netstring pair.
    """
    if batch.is_instruction:
        return _pair_digests(batch.column("prompt"), batch.column("response"))
    return string_digests(batch.column("text"), batch.num_rows)


def string_digests(array: pa.Array | None, length: int) -> np.ndarray:
    """SHA-256 of each value's UTF-8 bytes, read straight from the Arrow buffers (no decoding)."""
    if array is None:
        return np.tile(np.frombuffer(EMPTY_DIGEST, np.uint8), (length, 1))
    views = _utf8_views(array)
    if views is None:
        digests = [_sha256(value.encode("utf-8")).digest() for value in _python_strings(array)]
    else:
        data, offsets = views
        digests = [_sha256(data[start:end]).digest() for start, end in zip(offsets, offsets[1:])]
        _blank_nulls(array, digests)
    return _stack(digests)


def _pair_digests(prompts: pa.Array, responses: pa.Array) -> np.ndarray:
    prompt_views, response_views = _utf8_views(prompts), _utf8_views(responses)
    if prompt_views is None or response_views is None:
        return _stack(
            [_sha256(pair_bytes(p, r)).digest() for p, r in zip(_python_strings(prompts), _python_strings(responses))]
        )
    prompt_data, prompt_offsets = prompt_views
    response_data, response_offsets = response_views
    prompt_null = _null_mask(prompts)
    response_null = _null_mask(responses)
    digests = []
    for i in range(len(prompts)):
        prompt = b"" if prompt_null[i] else prompt_data[prompt_offsets[i]:prompt_offsets[i + 1]]
        response = b"" if response_null[i] else response_data[response_offsets[i]:response_offsets[i + 1]]
        digest = _sha256(b"%d:" % len(prompt))
        digest.update(prompt)
        digest.update(b",%d:" % len(response))
        digest.update(response)
        digest.update(b",")
        digests.append(digest.digest())
    return _stack(digests)


def _utf8_views(array: pa.Array) -> tuple[memoryview, list[int]] | None:
    """The data buffer and value offsets of a string array, or None for other types."""
    if pa.types.is_string(array.type):
        offset_type = np.int32
    elif pa.types.is_large_string(array.type):
        offset_type = np.int64
    else:
        return None
    _, offsets_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=offset_type)[array.offset:array.offset + len(array) + 1]
    data = memoryview(data_buffer) if data_buffer is not None else memoryview(b"")
    return data, offsets.tolist()


def _python_strings(array: pa.Array) -> list[str]:
    return ["" if value is None else value if isinstance(value, str) else str(value) for value in array.to_pylist()]


def _null_mask(array: pa.Array) -> np.ndarray:
    if not array.null_count:
        return np.zeros(len(array), dtype=bool)
    return array.is_null().to_numpy(zero_copy_only=False)


def _blank_nulls(array: pa.Array, digests: list[bytes]) -> None:
    # Arrow does not promise that a null slot spans zero bytes.
    for i in np.flatnonzero(_null_mask(array)):
        digests[i] = EMPTY_DIGEST


def _stack(digests: list[bytes]) -> np.ndarray:
    return np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(-1, DIGEST_SIZE)


def to_hex(digests: np.ndarray) -> pa.StringArray:
    """``(n, 32)`` digests as an Arrow array of lowercase hex strings, built without per-row Python work."""
    n = len(digests)
    data = pa.py_buffer(np.ascontiguousarray(digests).tobytes().hex().encode("ascii"))
    offsets = pa.py_buffer(np.arange(0, 2 * DIGEST_SIZE * (n + 1), 2 * DIGEST_SIZE, dtype=np.int32).tobytes())
    return pa.Array.from_buffers(pa.string(), n, [None, offsets, data])


def from_hex(array: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Parse hex digests: ``(digests (n, 32) uint8, valid (n,) bool)``.

    ``valid`` is False for nulls and for values that are not 64 hex characters.
    """
    n = len(array)
    digests = np.zeros((n, DIGEST_SIZE), dtype=np.uint8)
    if not pa.types.is_string(array.type) and not pa.types.is_large_string(array.type):
        try:
            array = array.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return digests, np.zeros(n, dtype=bool)
    data, offsets = _utf8_views(array)
    starts = np.asarray(offsets[:-1], dtype=np.int64)
    valid = (np.diff(np.asarray(offsets, dtype=np.int64)) == 2 * DIGEST_SIZE) & ~_null_mask(array)
    if not valid.any():
        return digests, valid
    raw = np.frombuffer(data, dtype=np.uint8)
    rows = raw[starts[valid, None] + np.arange(2 * DIGEST_SIZE)]
    nibbles = _HEX_VALUES[rows]
    good = ~(nibbles == 255).any(axis=1)
    digests[np.flatnonzero(valid)[good]] = (nibbles[good, 0::2] << 4) | nibbles[good, 1::2]
    valid[np.flatnonzero(valid)[~good]] = False
    return digests, valid


def equal_rows(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Row-wise equality of two ``(n, 32)`` digest arrays."""
    return np.ascontiguousarray(left).view(f"V{DIGEST_SIZE}").ravel() == np.ascontiguousarray(right).view(
        f"V{DIGEST_SIZE}"
    ).ravel()
