"""JSON Lines: read defensively (one hostile line never stops the file), written back faithfully.

Lines end in ``\\n``, ``\\r\\n`` or, in a file whose first line ends so, a lone
``\\r``; a UTF-8 byte order mark before the first record is skipped. A
``.gz`` file whose compressed stream breaks is read up to the break, and the
error is named. :func:`parse_record` turns one line into a dict or into a
reason code (``unreadable:...``) naming what was wrong and where, for the
quarantine: not UTF-8, not JSON, not an object, nested deeper than
:data:`MAX_DEPTH`, a number too long to convert, a lone surrogate escape, or
a content column that is not a string.

Writing: :class:`JsonlWriter` appends lines to ``.jsonl`` or ``.jsonl.gz``
(gzip without a timestamp, so the same records give the same bytes).
:func:`spliced_line` adds dokumi's fields to a record's original line without
re-encoding it; :func:`record_line` encodes a record read from elsewhere.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import json
import math
import re
import sys
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

# JSON nested deeper than this is quarantined rather than parsed. serde_json's default; far below
# Python's recursion limit, so whether a line parses never depends on the caller's stack depth.
MAX_DEPTH = 128
READ_CHUNK = 1 << 20
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip header and trailer (CRC-32 and length checked) around deflate
BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
# the \uD800-\uDFFF escapes; only a line holding one can decode to a lone surrogate
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89abcdefABCDEF][0-9a-fA-F]{2}")
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_BRACKETS = np.frombuffer(b"[]{}", dtype=np.uint8)
_OPENERS = np.frombuffer(b"[{", dtype=np.uint8)


class StreamError(Exception):
    """The file's bytes could not be read past some point (a corrupt or truncated ``.gz``)."""


def open_chunks(path: str, chunk_size: int = READ_CHUNK) -> Iterator[bytes]:
    """The file's bytes (decompressed for ``.gz``) in chunks of at most ``chunk_size``.

    Raises :class:`StreamError` where a compressed stream breaks after some bytes were read, and
    :class:`~dokumi.errors.InputError` when not one byte can be decompressed.
    """
    from dokumi.remote import open_binary  # a local file, or an object streamed in ranged requests

    with open_binary(path) as handle:
        if not path.lower().endswith(".gz"):
            while chunk := handle.read(chunk_size):
                yield chunk
            return
        produced = False
        try:
            for chunk in _gunzip(handle, chunk_size):
                if chunk:
                    produced = True
                    yield chunk
        except StreamError as error:
            if produced:
                raise
            from dokumi.errors import InputError

            raise InputError(f"{path}: not a readable gzip file ({error})") from None


def _gunzip(handle: Any, chunk_size: int) -> Iterator[bytes]:
    """Decompress gzip members one after another, yielding output as soon as zlib gives it (gzip.GzipFile
    buffers, and loses what it had decompressed when the stream then breaks)."""
    decompressor, fed = zlib.decompressobj(_GZIP_WBITS), False
    while True:
        data = handle.read(chunk_size)
        if not data:
            if fed and not decompressor.eof:
                raise StreamError("compressed file ended before the end-of-stream marker was reached")
            return
        while data:
            fed = True
            before = decompressor.copy()
            try:
                output = decompressor.decompress(data, chunk_size)  # bounded: a zip bomb expands by chunks
            except zlib.error as error:
                yield from _salvage(before, data, chunk_size)
                raise StreamError(f"corrupt compressed data: {error}") from None
            if output:
                yield output
            if decompressor.eof:
                data = decompressor.unused_data.lstrip(b"\x00")  # the next member; trailing zero padding is ignored
                decompressor, fed = zlib.decompressobj(_GZIP_WBITS), False
            else:
                data = decompressor.unconsumed_tail


def _salvage(decompressor: Any, data: bytes, chunk_size: int) -> Iterator[bytes]:
    """What ``data`` decompresses to before the byte where zlib fails. zlib discards a failing call's whole
    output, so on this error path the input is fed again by halves, down to the one byte that fails."""
    if len(data) <= 1:
        yield from _feed(decompressor, data, chunk_size)[0]
        return
    half = len(data) // 2
    trial = decompressor.copy()
    outputs, fine = _feed(trial, data[:half], chunk_size)
    if fine:
        yield from outputs
        if not trial.eof:
            yield from _salvage(trial, data[half:], chunk_size)
    else:
        yield from _salvage(decompressor, data[:half], chunk_size)


def _feed(decompressor: Any, data: bytes, chunk_size: int) -> tuple[list[bytes], bool]:
    outputs = []
    while data:
        try:
            outputs.append(decompressor.decompress(data, chunk_size))
        except zlib.error:
            return outputs, False
        if decompressor.eof:
            break
        data = decompressor.unconsumed_tail
    return outputs, True


def refuse_utf16(first: bytes, where: str) -> None:
    """JSON Lines are UTF-8; a UTF-16 file would give nothing but unreadable lines."""
    from dokumi.errors import InputError

    if first.startswith(_UTF16_BOMS):
        raise InputError(f"{where}: UTF-16 encoded (byte order mark); JSON Lines must be UTF-8")


def split_lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """Lines with their terminators; the terminator is ``\\n`` unless the first line ends in a lone ``\\r``."""
    chunks = iter(chunks)
    head: list[bytes] = []
    separator = b"\n"
    broken: StreamError | None = None
    try:
        for chunk in chunks:
            head.append(chunk)
            found = _first_terminator(b"".join(head[-2:]))
            if found is not None:
                separator = found
                break
    except StreamError as error:
        broken = error
    yield from _split(_chain(head, chunks, broken), separator)


def _first_terminator(data: bytes) -> bytes | None:
    """``\\r`` when the first line break is a lone CR, ``\\n`` for LF or CRLF; None when undecided yet."""
    cr, lf = data.find(b"\r"), data.find(b"\n")
    if cr == -1 and lf == -1:
        return None
    if cr == -1 or (lf != -1 and lf < cr):
        return b"\n"
    if cr + 1 == len(data):
        return None  # a CR at the end of what was read: the next byte decides
    return b"\n" if data[cr + 1:cr + 2] == b"\n" else b"\r"


def _chain(first: list[bytes], rest: Iterator[bytes], broken: StreamError | None) -> Iterator[bytes]:
    yield from first
    if broken is not None:
        raise broken
    yield from rest


def _split(chunks: Iterable[bytes], separator: bytes) -> Iterator[bytes]:
    pending: list[bytes] = []  # pieces of a line longer than a chunk: joined once, never re-copied
    try:
        for chunk in chunks:
            parts = chunk.split(separator)
            if len(parts) == 1:
                pending.append(chunk)
                continue
            pending.append(parts[0])
            yield b"".join(pending) + separator
            for part in parts[1:-1]:
                yield part + separator
            pending = [parts[-1]] if parts[-1] else []
    except StreamError:
        if pending:  # the line the break cut short, then the break
            yield b"".join(pending)
        raise
    if pending:
        yield b"".join(pending)


def parse_record(line: bytes, string_columns: Iterable[str] = ()) -> tuple[dict[str, Any] | None, str | None]:
    """``(record, None)``, or ``(None, reason)`` for a line that cannot be a record.

    ``string_columns`` must hold strings or null. Reason codes name the place: ``col`` is the
    1-based character column in the line, ``field`` a path into the record.
    """
    try:
        decoded = line.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, f"unreadable:non-utf8,byte={error.start}"
    if decoded.count("[") + decoded.count("{") > MAX_DEPTH:
        column = too_deep_at(line)
        if column is not None:
            return None, f"unreadable:too-deep,limit={MAX_DEPTH},col={column}"
    try:
        value = json.loads(decoded)
    except json.JSONDecodeError as error:
        return None, f"unreadable:invalid-json,col={error.colno}"
    except ValueError:  # an integer beyond Python's conversion limit (a guard against quadratic parsing)
        return None, f"unreadable:number-too-long,col={_long_number_at(decoded)}"
    except RecursionError:  # MAX_DEPTH keeps this out of reach; kept for a caller deep in its own stack
        return None, "unreadable:too-deep"
    if not isinstance(value, dict):
        return None, f"unreadable:not-an-object,type={type(value).__name__}"
    if _SURROGATE_ESCAPE.search(decoded):
        path = lone_surrogate_at(value)
        if path is not None:
            return None, f"unreadable:lone-surrogate,field={path}"
    for name in string_columns:
        if name in value and value[name] is not None and not isinstance(value[name], str):
            return None, f"unreadable:column={name},type={type(value[name]).__name__}"
    return value, None


def too_deep_at(line: bytes, limit: int = MAX_DEPTH) -> int | None:
    """The 1-based column where the line's nesting first goes past ``limit``, or None if it never does.

    Strings are blanked first, so brackets inside them do not count; the rest is array arithmetic.
    """
    blanked = _STRING.sub(lambda match: b'"' + b" " * (len(match.group()) - 2) + b'"', line)
    positions = np.frombuffer(blanked, dtype=np.uint8)
    brackets = np.flatnonzero(np.isin(positions, _BRACKETS))
    if not len(brackets):
        return None
    steps = np.where(np.isin(positions[brackets], _OPENERS), 1, -1)
    beyond = np.flatnonzero(np.cumsum(steps) > limit)
    if not len(beyond):
        return None
    offset = int(brackets[beyond[0]])
    return len(line[:offset].decode("utf-8", errors="replace")) + 1


def _long_number_at(decoded: str) -> int:
    """The column of the first run of digits longer than Python converts (1 if none is found)."""
    limit = sys.get_int_max_str_digits() if hasattr(sys, "get_int_max_str_digits") else 4300
    match = re.search(rf"\d{{{limit + 1},}}", decoded) if limit else None
    return match.start() + 1 if match else 1


def lone_surrogate_at(value: Any, path: str = "") -> str | None:
    """The path (``meta.tags[2]``) of the first key or string holding a lone surrogate, else None."""
    if isinstance(value, str):
        return None if _encodes(value) else (path or "$")
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{field_label(key)}" if path else field_label(key)
            if not _encodes(key):
                return here
            found = lone_surrogate_at(item, here)
            if found is not None:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = lone_surrogate_at(item, f"{path}[{index}]")
            if found is not None:
                return found
    return None


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def field_label(name: str, limit: int = 40) -> str:
    """A field name from the data, safe inside a reason code: printable ASCII other than ``,=``, else escaped."""
    shown = "".join(ch if " " < ch < "\x7f" and ch not in ",=" else _escaped(ch) for ch in name[:limit])
    return shown + ("..." if len(name) > limit else "") if shown else '""'


def _escaped(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


class JsonlWriter:
    """Lines appended to one ``.jsonl`` (or gzip-compressed ``.jsonl.gz``) file, created at the first line."""

    def __init__(self, path: Path, compressed: bool = False) -> None:
        self.path = path
        self.compressed = compressed
        self.count = 0
        self._raw: Any = None
        self._handle: Any = None

    def write(self, lines: list[bytes]) -> None:
        """Append ``lines`` (each one JSON record, without its line break)."""
        if not lines:
            return
        if self._handle is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._raw = open(self.path, "wb")  # noqa: SIM115 - closed in close()
            # no file name and no timestamp in the gzip header: the same records give the same bytes
            self._handle = (gzip.GzipFile(filename="", mode="wb", fileobj=self._raw, compresslevel=6, mtime=0)
                            if self.compressed else self._raw)
        self._handle.write(b"".join(lines))
        self.count += len(lines)

    def close(self) -> list[tuple[Path, int]]:
        """Finish the file; the files written and their record counts (none when nothing was written)."""
        if self._handle is None:
            return []
        self._handle.close()
        if self._raw is not self._handle:
            self._raw.close()
        self._handle = self._raw = None
        return [(self.path, self.count)]


def spliced_line(raw: bytes, added: list[tuple[str, Any]]) -> bytes:
    """The record's line as it was read, ending in ``\n``, with ``added`` fields inserted before its closing
    brace: the record's own fields keep their exact bytes (numbers, escapes, key order)."""
    line = raw.rstrip(b" \t\r\n")
    if not added:
        return line + b"\n"
    body = line[:-1].rstrip(b" \t\r\n")  # a readable line is one object: it ends with "}"
    fields = ", ".join(f"{json.dumps(name, ensure_ascii=False)}: {_dumps(value)}" for name, value in added)
    separator = b" " if body.endswith(b"{") else b", "
    return body + separator + fields.encode("utf-8") + b"}\n"


def record_line(record: dict[str, Any]) -> bytes:
    """One record (values as Arrow's ``to_pylist`` gives them) as a JSON line."""
    return _dumps(record).encode("utf-8") + b"\n"


def _dumps(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, default=_json_value)
    except ValueError:  # NaN or an infinity: strict JSON has none, so they become null
        return json.dumps(_finite(value), ensure_ascii=False, allow_nan=False, default=_json_value)


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _json_value(value: Any) -> Any:
    """Arrow values JSON has no type for: bytes as base64, times as ISO 8601, decimals as exact strings."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    return str(value)  # Decimal (exact), timedelta, and anything else


__all__ = ["BOM", "MAX_DEPTH", "JsonlWriter", "StreamError", "field_label", "lone_surrogate_at", "open_chunks",
           "parse_record", "record_line", "refuse_utf16", "spliced_line", "split_lines", "too_deep_at"]
