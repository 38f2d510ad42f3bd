"""Read the JSON documents dokumi writes (manifests, keys, proofs), each tagged with its schema."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from dokumi.errors import DokumiError, InputError


def read_json_document(
    path: str | os.PathLike, what: str, schema: str, error: type[DokumiError] = InputError
) -> dict[str, Any]:
    """The JSON object at ``path`` whose ``schema`` field is ``schema``; otherwise ``error`` naming the file."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as problem:
        raise error(f"{path}: not a JSON {what} ({problem})") from None
    found = document.get("schema") if isinstance(document, dict) else None
    if found != schema:
        raise error(f"{path}: {what} schema {found!r}; this dokumi reads {schema!r}")
    return document
