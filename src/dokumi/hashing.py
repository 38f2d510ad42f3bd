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
import pyarrow.compute as pc

from dokumi.records import Batch

PAIR_ENCODING = "netstring/1"
DIGEST_SIZE = 32
EMPTY_DIGEST = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256
# mean value size from which slicing the Arrow buffer beats copying each value out
_SLICE_FROM_BYTES = 256
_COLON, _COMMA, _EMPTY = (pa.scalar(text, pa.large_string()) for text in (":", ",", ""))
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
    """SHA-256 of each value's UTF-8 bytes, taken straight from the Arrow buffers (no decoding)."""
    if array is None:
        return np.tile(np.frombuffer(EMPTY_DIGEST, np.uint8), (length, 1))
    values = _utf8_values(array)
    if values is None:
        values = [value.encode("utf-8") for value in _python_strings(array)]
    return _stack([_sha256(value).digest() for value in values])


def _pair_digests(prompts: pa.Array, responses: pa.Array) -> np.ndarray:
    encoded = _pair_array(prompts, responses)
    if encoded is None:
        return _stack(
            [_sha256(pair_bytes(p, r)).digest() for p, r in zip(_python_strings(prompts), _python_strings(responses))]
        )
    values = _utf8_values(encoded)
    assert values is not None, "the pair encoding is a string array"
    return _stack([_sha256(value).digest() for value in values])


def _pair_array(prompts: pa.Array, responses: pa.Array) -> pa.Array | None:
    """The canonical pair encoding of every record, built by Arrow kernels; None unless both are strings."""
    if not all(pa.types.is_string(a.type) or pa.types.is_large_string(a.type) for a in (prompts, responses)):
        return None
    parts = []
    for array in (prompts, responses):
        array = pc.fill_null(array.cast(pa.large_string()), "")
        parts += [pc.cast(pc.binary_length(array), pa.large_string()), _COLON, array, _COMMA]
    return pc.binary_join_element_wise(*parts, _EMPTY)


def _utf8_values(array: pa.Array) -> list[bytes] | list[memoryview] | None:
    """The UTF-8 bytes of each value of a string array (null as empty), or None for other types.

    Never decodes: short values are copied out as bytes (cheapest per value),
    long ones are memoryview slices of the Arrow buffer (no copy at all).
    """
    if pa.types.is_string(array.type):
        binary, offset_type = pa.binary(), np.int32
    elif pa.types.is_large_string(array.type):
        binary, offset_type = pa.large_binary(), np.int64
    else:
        return None
    if array.null_count:
        array = pc.fill_null(array, "")
    offsets = np.frombuffer(array.buffers()[1], dtype=offset_type)[array.offset:array.offset + len(array) + 1]
    if len(array) and offsets[-1] - offsets[0] >= _SLICE_FROM_BYTES * len(array):
        data = memoryview(array.buffers()[2])
        bounds = offsets.tolist()
        return [data[start:end] for start, end in zip(bounds, bounds[1:])]
    return array.view(binary).to_pylist()


def _python_strings(array: pa.Array) -> list[str]:
    return ["" if value is None else value if isinstance(value, str) else str(value) for value in array.to_pylist()]


def _null_mask(array: pa.Array) -> np.ndarray:
    if not array.null_count:
        return np.zeros(len(array), dtype=bool)
    return array.is_null().to_numpy(zero_copy_only=False)


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
    offset_type = np.int32 if pa.types.is_string(array.type) else np.int64
    _, offsets_buffer, data_buffer = array.buffers()
    offsets = np.frombuffer(offsets_buffer, dtype=offset_type)[array.offset:array.offset + n + 1].astype(np.int64)
    valid = (np.diff(offsets) == 2 * DIGEST_SIZE) & ~_null_mask(array)
    if not valid.any():
        return digests, valid
    raw = np.frombuffer(data_buffer, dtype=np.uint8)
    if valid.all() and offsets[-1] - offsets[0] == 2 * DIGEST_SIZE * n:
        # the usual case, one run of n * 64 hex characters: parse it in one call
        try:
            parsed = bytes.fromhex(raw[offsets[0]:offsets[-1]].tobytes().decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            parsed = b""
        if len(parsed) == DIGEST_SIZE * n:
            return np.frombuffer(parsed, dtype=np.uint8).reshape(n, DIGEST_SIZE).copy(), valid
    rows = raw[offsets[:-1][valid, None] + np.arange(2 * DIGEST_SIZE)]
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
