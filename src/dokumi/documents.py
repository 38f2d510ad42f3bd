"""Read the JSON documents dokumi writes (manifests, keys, signatures, proofs, saved state), strictly.

A document that an attacker may have edited must mean one thing to every
reader, and reading it must never crash: duplicate keys (where readers disagree
on which value counts), integers of thousands of digits, ``NaN`` and
``Infinity`` (not JSON), lone surrogates, and nesting deeper than any dokumi document are
refused with a one-line error naming the file.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any

from dokumi.errors import DokumiError, InputError

# deeper than any document dokumi writes (a manifest nests about 8 levels), far below Python's recursion limit
MAX_DEPTH = 64
# a SHA-256 fits in 78 decimal digits; no count, size or seed dokumi writes comes near
MAX_INTEGER_DIGITS = 80


class DocumentError(ValueError):
    """Why a JSON text is not a document dokumi reads (a one-line reason, no file name)."""


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document: dict[str, Any] = {}
    for key, value in pairs:
        if key in document:
            raise DocumentError(f"duplicate key {key!r}")
        document[key] = value
    return document


def _integer(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INTEGER_DIGITS:
        raise DocumentError(f"an integer of {len(text.lstrip('-')):,} digits")
    return int(text)


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise DocumentError(f"number {text[:40]} is out of range")
    return value


def _constant(name: str) -> Any:
    raise DocumentError(f"{name} is not JSON")


def _check_value(value: Any) -> None:
    """Refuse nesting deeper than MAX_DEPTH and strings with lone surrogates (``"\\ud800"`` parses, but is
    no Unicode text: it cannot be hashed or signed as UTF-8). Iterative: a hostile value cannot overflow it."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise DocumentError(f"a string with a lone surrogate ({item[:40]!r})") from None
        elif isinstance(item, (dict, list)):
            if depth > MAX_DEPTH:
                raise DocumentError(f"nested more than {MAX_DEPTH} levels deep")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def parse_json(text: str) -> Any:
    """``text`` as JSON, strictly (see the module's docstring); :class:`DocumentError` otherwise."""
    try:
        value = json.loads(text, object_pairs_hook=_object, parse_int=_integer, parse_float=_float,
                           parse_constant=_constant)
    except json.JSONDecodeError as error:
        raise DocumentError(str(error)) from None
    except RecursionError:  # the decoder's own guard, far below the interpreter's stack
        raise DocumentError(f"nested more than {MAX_DEPTH} levels deep") from None
    _check_value(value)
    return value


def read_json(path: str | os.PathLike, what: str, error: type[DokumiError] = InputError) -> Any:
    """The JSON value in the file at ``path``, strictly parsed; ``error`` naming the file otherwise."""
    path = Path(path)
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the reader, a device never end
            raise error(f"{what} {path} is not a regular file")
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    except OSError as problem:
        raise error(f"{what} {path}: cannot read it ({problem.strerror or problem})") from None
    except UnicodeDecodeError as problem:
        raise error(f"{path}: not a JSON {what} (not UTF-8: {problem.reason} at byte {problem.start})") from None
    try:
        return parse_json(text)
    except DocumentError as problem:
        raise error(f"{path}: not a valid JSON {what} ({problem})") from None


def read_json_document(
    path: str | os.PathLike, what: str, schema: str, error: type[DokumiError] = InputError
) -> dict[str, Any]:
    """The JSON object at ``path`` whose ``schema`` field is ``schema``; otherwise ``error`` naming the file."""
    document = read_json(path, what, error)
    problem = schema_problem(document, what, schema)
    if problem:
        raise error(f"{path}: {problem}")
    return document


def schema_problem(document: Any, what: str, schema: str) -> str | None:
    """Why ``document`` is not a ``what`` of ``schema`` (an object whose ``schema`` field is it), or None."""
    if not isinstance(document, dict):
        return f"{_json_type(document)}, not a {what} (a JSON object)"
    found = document.get("schema")
    if found != schema:
        shown = repr(found) if isinstance(found, str) and len(found) < 80 else _json_type(found)
        return f"{what} schema {shown}; this dokumi reads {schema!r}"
    return None


_HEX64 = re.compile(r"[0-9a-f]{64}")


def shape_problem(value: Any, shape: Any, where: str = "", exact: bool = False) -> str | None:
    """What is wrong with the shape of a parsed document, naming the field; None when nothing is.

    ``shape`` mirrors the document: a dict of field -> shape (an object with at least those
    fields; with ``exact``, no others), a one-item list (an array of that shape), or a scalar
    kind: ``"str"``, ``"count"`` (integer >= 0), ``"sha256"`` (64 lowercase hex digits),
    ``"dict"``, ``"counts"`` (object of counts); a kind ending in ``?`` may also be null.
    """
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return f"{where or 'the document'} must be an object, not {_json_type(value)}"
        for key, inner in shape.items():
            name = f"{where}.{key}" if where else key
            if key not in value:
                return f"{name} is missing"
            if isinstance(inner, str) and inner.endswith("?"):
                if value[key] is None:
                    continue
                inner = inner[:-1]
            problem = shape_problem(value[key], inner, name, exact)
            if problem:
                return problem
        if exact and set(value) - set(shape):
            unknown = sorted(set(value) - set(shape))[0]
            return f"unknown field {(f'{where}.' if where else '') + unknown[:80]!r}"
        return None
    if isinstance(shape, list):
        if not isinstance(value, list):
            return f"{where} must be an array, not {_json_type(value)}"
        for index, item in enumerate(value):
            problem = shape_problem(item, shape[0], f"{where}[{index}]", exact)
            if problem:
                return problem
        return None
    return _scalar_problem(value, shape, where)


def _scalar_problem(value: Any, kind: str, where: str) -> str | None:
    if kind == "str":
        return None if isinstance(value, str) else f"{where} must be a string, not {_json_type(value)}"
    if kind == "count":
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= 0
        return None if ok else f"{where} must be a non-negative integer, not {_json_type(value)}"
    if kind == "sha256":
        ok = isinstance(value, str) and _HEX64.fullmatch(value) is not None
        return None if ok else f"{where} must be 64 lowercase hex digits"
    if kind == "dict":
        return None if isinstance(value, dict) else f"{where} must be an object, not {_json_type(value)}"
    if kind == "counts":
        if not isinstance(value, dict):
            return f"{where} must be an object, not {_json_type(value)}"
        for key, count in value.items():
            problem = _scalar_problem(count, "count", f"{where}.{key[:80]}")
            if problem:
                return problem
        return None
    raise ValueError(f"unknown shape {kind!r}")


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a negative integer" if value < 0 else "an integer"
    names = {dict: "an object", list: "an array", str: "a string", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)
