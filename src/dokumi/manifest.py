"""The provenance manifest: what went in, what came out, under which policy. Never raw text.

The schema is versioned (``schema``) and documented in ``docs/manifest.md``
with a JSON Schema in ``docs/manifest.schema.json``. Paths of outputs are
relative to the manifest's folder; paths of inputs too where they can be, so a
scan folder and its data can move to another machine and still verify.
"""

from __future__ import annotations

import json
import os
import platform
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dokumi.decisions import DECISIONS
from dokumi.documents import read_json_document
from dokumi.hashing import PAIR_ENCODING
from dokumi.merkle import ALGORITHM as MERKLE_ALGORITHM
from dokumi.merkle import EMPTY_ROOT, merkle_root, shard_leaf
from dokumi.outputs import file_sha256
from dokumi.routing import routes
from dokumi.sidecar import SKETCH

if TYPE_CHECKING:
    from dokumi.pipeline import Pipeline
    from dokumi.policy import Policy
    from dokumi.scoring import ShardResult

MANIFEST_SCHEMA = "dokumi.manifest/1"
RECORD_HASH = "sha256 of the UTF-8 text; instruction pairs: sha256 of netstring(prompt) + netstring(response)"


# the names of record-specific values in reason codes: ``near-duplicate:cluster=...`` counts as
# ``near-duplicate``, while ``trigger:token=...`` names a kind of finding and stays ``trigger:token``
_VALUE_NAMES = ("cluster", "similarity", "host", "bytes", "column")


def reason_kind(reason: str) -> str:
    """A reason code without its record-specific values, for counting.

    ``near-duplicate:cluster=12,size=40`` -> ``near-duplicate``;
    ``trigger:zero-width,count=3`` -> ``trigger:zero-width``;
    ``trigger:gibberish-after=kelpvane`` -> ``trigger:gibberish-after``; ``hash-mismatch`` stays.
    """
    head, equals, _ = reason.partition("=")
    if not equals:
        return reason
    if "," in head:
        return head[: head.index(",")]
    kind, colon, name = head.rpartition(":")
    return kind if colon and name in _VALUE_NAMES else head


def corpus_root(inputs: list[dict[str, Any]]) -> str:
    """The corpus Merkle root (hex) over the inputs' shard roots, in manifest order."""
    return merkle_root([shard_leaf(entry["name"], bytes.fromhex(entry["merkle_root"])) for entry in inputs]).hex()


def build_manifest(
    policy: Policy,
    pipeline: Pipeline,
    results: list[ShardResult],
    empty_inputs: list[dict[str, Any]],
    warnings: list[str],
    out: Path,
    destination: Path | None = None,
) -> dict[str, Any]:
    """The manifest of a scan whose outputs are in ``out``; ``destination`` is the folder the
    manifest will finally live in (``out`` unless the scan writes to a staging folder first)."""
    from dokumi import __version__

    destination = Path(destination or out)
    decisions: Counter = Counter()
    reasons: Counter = Counter()
    inputs = [
        {**entry, "path": _relative(entry["path"], destination), "unreadable": 0,
         "merkle_root": EMPTY_ROOT.hex(), "leaves": 0}
        for entry in empty_inputs
    ]
    outputs = []
    for result in results:
        decisions.update(result.decisions)
        reasons.update(result.reasons)
        inputs.append(
            {
                "path": _relative(result.path, destination),
                "name": result.shard,
                "bytes": result.input_bytes,
                "sha256": result.input_sha256,
                "records": result.records + result.unreadable,
                "unreadable": result.unreadable,
                "merkle_root": result.merkle_root,
                "leaves": result.leaves,
            }
        )
        for output in result.outputs:
            path = Path(output["path"])
            outputs.append(
                {
                    "kind": output["kind"],
                    "path": path.relative_to(out).as_posix(),
                    "bytes": path.stat().st_size,
                    "sha256": file_sha256(path),
                    "records": output["records"],
                    "input": result.shard,
                }
            )
    state_dir = out / "state"
    state = [
        {"path": path.relative_to(out).as_posix(), "bytes": path.stat().st_size, "sha256": file_sha256(path)}
        for path in sorted(state_dir.rglob("*")) if path.is_file()
    ] if state_dir.is_dir() else []
    return {
        "schema": MANIFEST_SCHEMA,
        "tool": {"name": "dokumi", "version": __version__, "python": platform.python_version()},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "policy": {"name": policy.name, "source": _relative(policy.source, destination), "sha256": policy.sha256},
        "columns": vars(pipeline.columns),
        "stages": [
            {
                "name": stage.name,
                "class": f"{type(stage).__module__}.{type(stage).__qualname__}",
                "params": stage.get_params(),
                "rule": vars(pipeline.rule(stage.name)),
                "summary": stage.summary(),
            }
            for stage in pipeline.stages
        ],
        "records": {"null_content": policy.records.null_content, "max_text_bytes": policy.records.max_text_bytes,
                    "oversized": policy.records.oversized},
        "privacy": {"no_text": policy.no_text},
        "routing": routes(policy.flag_folder),
        "hashing": {"file": "sha256", "record": RECORD_HASH, "pair_encoding": PAIR_ENCODING, "sketch": SKETCH},
        "merkle": {
            "algorithm": MERKLE_ALGORITHM,
            "record_leaf": "netstring(record id) || sha256(record)",
            "shard_leaf": "netstring(shard name) || shard root",
            "root": corpus_root(inputs),
            "shards": len(inputs),
        },
        "inputs": inputs,
        "outputs": outputs,
        "state": state,
        "counts": {
            "records": sum(decisions.values()),
            "decisions": {d: decisions.get(d, 0) for d in DECISIONS},
            "reasons": dict(sorted(reasons.items())),
        },
        "warnings": warnings,
    }


def _relative(path: str | None, folder: Path) -> str | None:
    """``path`` relative to ``folder`` (the manifest's), so that both can move together; absolute
    only where no relative path exists (another drive)."""
    if path is None:
        return None
    try:
        return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(folder))).as_posix()
    except ValueError:
        return Path(path).resolve().as_posix()


def resolve(manifest_path: Path, path: str) -> Path:
    """A path from the manifest as a file on this machine (relative paths are to the manifest's folder)."""
    candidate = Path(path)
    return candidate if candidate.is_absolute() else manifest_path.parent / candidate


def write_manifest(manifest: dict[str, Any], path: Path) -> None:
    """Write ``manifest`` to ``path`` as indented UTF-8 JSON."""
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Load a manifest, checking that this version of dokumi understands its schema."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    return read_json_document(path, "manifest", MANIFEST_SCHEMA)
