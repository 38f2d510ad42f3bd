"""The provenance manifest: what went in, what came out, under which policy. Never raw text.

The schema is versioned (``schema``) and documented in ``docs/manifest.md``
with a JSON Schema in ``docs/manifest.schema.json``. Paths of outputs are
relative to the manifest's folder; paths of inputs too where they can be, so a
scan folder and its data can move to another machine and still verify.

The manifest commits to every file of its scan folder: per-shard outputs
(``outputs``), fitted state (``state``) and everything else dokumi wrote there
(``files``: the report); only the manifest and its signature are not listed.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import platform
from collections import Counter
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING, Any

from dokumi.decisions import DECISIONS
from dokumi.documents import read_json, schema_problem, shape_problem
from dokumi.errors import InputError
from dokumi.hashing import PAIR_ENCODING
from dokumi.merkle import ALGORITHM as MERKLE_ALGORITHM
from dokumi.merkle import EMPTY_ROOT, merkle_root, shard_leaf
from dokumi.outputs import file_sha256
from dokumi.records import Columns
from dokumi.remote import is_url
from dokumi.routing import routes
from dokumi.sidecar import SKETCH

if TYPE_CHECKING:
    from dokumi.pipeline import Pipeline
    from dokumi.policy import Policy
    from dokumi.scoring import ShardResult

MANIFEST_SCHEMA = "dokumi.manifest/2"
RECORD_LEAF = "netstring(record id) || netstring(row) || sha256(record)"
# files of a scan folder that the manifest cannot list: itself and its detached signature
UNLISTED = ("manifest.json", "manifest.json.sig")
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


def manifest_sha256(manifest: dict[str, Any]) -> str:
    """SHA-256 of the manifest's canonical JSON: the bytes its signature covers, whatever the indentation."""
    from dokumi.signing import canonical_json

    return hashlib.sha256(canonical_json(manifest)).hexdigest()


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
    destination: Path | str | None = None,
    state_hashes: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The manifest of a scan whose outputs are in ``out``; ``destination`` is the folder the
    manifest will finally live in (``out`` unless the scan writes to a staging folder first).
    ``state_hashes`` are the SHA-256 of files in ``state/`` already computed (by their path in ``out``)."""
    from dokumi import __version__

    # an --out URL stays a string: Path would fold its "//"
    destination = destination if isinstance(destination, str) and is_url(destination) else Path(destination or out)
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
                    # hashed where the shard was scored (a resumed shard's, checked again on resume)
                    "sha256": output.get("sha256") or file_sha256(path),
                    "records": output["records"],
                    "input": result.shard,
                }
            )
    state_dir = out / "state"
    known = state_hashes or {}
    state = [
        {"path": relative, "bytes": path.stat().st_size, "sha256": known.get(relative) or file_sha256(path)}
        for path in sorted(state_dir.rglob("*")) if path.is_file()
        for relative in [path.relative_to(out).as_posix()]
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
            "record_leaf": RECORD_LEAF,
            "shard_leaf": "netstring(shard name) || shard root",
            "root": corpus_root(inputs),
            "shards": len(inputs),
        },
        "inputs": inputs,
        "outputs": outputs,
        "state": state,
        "files": [],
        "counts": {
            "records": sum(decisions.values()),
            "decisions": {d: decisions.get(d, 0) for d in DECISIONS},
            "reasons": dict(sorted(reasons.items())),
        },
        "warnings": warnings,
    }


def _relative(path: str | None, folder: Path | str) -> str | None:
    """``path`` relative to ``folder`` (the manifest's), so that both can move together; absolute
    only where no relative path exists (another drive, or a manifest in object storage); a URL as given."""
    if path is None:
        return None
    if is_url(path):
        return path
    if is_url(folder):
        return Path(path).resolve().as_posix()
    try:
        return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(folder))).as_posix()
    except ValueError:
        return Path(path).resolve().as_posix()


def list_remaining_files(manifest: dict[str, Any], out: Path, leave_out: tuple[str, ...] = ()) -> None:
    """Add to ``manifest["files"]`` every file under ``out`` that it does not list yet (the report, ...),
    so that the manifest commits to the whole scan folder; call it after the last file is written.
    ``leave_out``: entries of ``out`` (files or folders) that are removed before it is published."""
    listed = {entry["path"] for entry in manifest["outputs"] + manifest["state"] + manifest["files"]}
    for path in sorted(out.rglob("*")):
        relative = path.relative_to(out).as_posix()
        if relative.split("/")[0] in leave_out:
            continue
        if path.is_file() and relative not in listed and relative not in UNLISTED:
            manifest["files"].append({"path": relative, "bytes": path.stat().st_size, "sha256": file_sha256(path)})


def unsafe_relative_path(path: str) -> str | None:
    """Why ``path`` (from a manifest) is not a plain relative path below a folder; None when it is.

    dokumi writes POSIX paths without ``..``, ``.``, empty parts or back slashes; anything else in
    the place of an output path could make a reader open files outside the scan folder.
    """
    if not path:
        return "an empty path"
    if "\\" in path or "\x00" in path:
        return "a back slash or NUL byte in the path"
    if path.startswith("/") or PureWindowsPath(path).drive:
        return "an absolute path"
    parts = path.split("/")
    if ".." in parts:
        return "'..' leaves the folder"
    if "" in parts or "." in parts:
        return "not a normalized path"
    return None


def scan_file(manifest_path: Path, path: str) -> Path:
    """An output path of the manifest as a file inside the manifest's folder; InputError when it is not one."""
    problem = unsafe_relative_path(path)
    if problem:
        raise InputError(f"{manifest_path}: output path {path[:200]!r}: {problem}; refusing to read it")
    return manifest_path.parent / path


def data_folder(inputs: list[dict[str, Any]]) -> str | None:
    """The one folder, relative to the manifest's, that holds every input at ``<folder>/<name>``.

    InputError when an input's path is absolute, is not ``<folder>/<name>``, or the inputs
    name different folders: ``verify`` reads inputs only inside that folder (or ``--data``).
    None when no input was a file.
    """
    folders = set()
    for entry in inputs:
        name, path = entry["name"], entry["path"]
        problem = unsafe_relative_path(name)
        if problem:
            raise InputError(f"input shard name {name[:200]!r}: {problem}")
        if path is None or is_url(path):  # in memory, or in object storage: verify reads it only with --data
            continue
        if path.startswith("/") or PureWindowsPath(path).drive:
            raise InputError(f"input {name!r} has an absolute path in the manifest; give --data DIR")
        if path != name and not path.endswith("/" + name):
            raise InputError(f"input path {path[:200]!r} does not end with its shard name {name!r}")
        folder = path[: len(path) - len(name)].rstrip("/") or "."
        # '..' only at the start: the data folder may lie beside or above the scan folder, then goes down
        below = list(itertools.dropwhile(lambda part: part == "..", folder.split("/"))) if folder != "." else []
        if below and unsafe_relative_path("/".join(below)):
            raise InputError(f"input path {path[:200]!r}: the data folder {folder[:200]!r} is not a normalized path")
        folders.add(folder)
    if len(folders) > 1:
        raise InputError(f"the inputs lie in {len(folders)} different data folders ({', '.join(sorted(folders)[:3])}); "
                         "give --data DIR")
    return folders.pop() if folders else None


def relist_file(manifest: dict[str, Any], out: Path, relative: str) -> None:
    """Update (or add) the ``files`` entry of ``out/relative`` after dokumi rewrote it (``dokumi report``)."""
    path = out / relative
    entry = {"path": relative, "bytes": path.stat().st_size, "sha256": file_sha256(path)}
    manifest["files"] = [e for e in manifest["files"] if e["path"] != relative] + [entry]
    manifest["files"].sort(key=lambda e: e["path"])


def write_manifest(manifest: dict[str, Any], path: Path) -> None:
    """Write the manifest atomically: a crash leaves the old one or the new one, never half of one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Load a manifest strictly (:mod:`dokumi.documents`), checking that this version of dokumi understands
    its schema and that every field a reader uses has its type; InputError naming the field otherwise."""
    path = Path(path)
    if path.is_dir():
        path = path / "manifest.json"
    document = read_json(path, "manifest")
    if isinstance(document, dict) and document.get("schema") == "dokumi.manifest/1":
        raise InputError(f"{path}: manifest schema 'dokumi.manifest/1' was written by dokumi 0.1, which did not "
                         f"list every file of the scan folder; verify it with dokumi 0.1, or scan again")
    problem = schema_problem(document, "manifest", MANIFEST_SCHEMA)
    if problem:
        raise InputError(f"{path}: {problem}")
    problem = manifest_problem(document)
    if problem:
        raise InputError(f"{path}: malformed manifest: {problem}")
    try:
        Columns.from_mapping(document["columns"], where="columns")
    except ValueError as error:
        raise InputError(f"{path}: malformed manifest: {error}") from None
    return document


# the shape of the fields that dokumi's readers (verify, prove, report, --expect) use (dokumi.documents.shape_problem)
_FILE = {"path": "str", "bytes": "count", "sha256": "sha256"}
_SHAPE: dict[str, Any] = {
    "tool": {"name": "str", "version": "str"},
    "created": "str",
    "policy": {"name": "str"},
    "columns": {},
    "stages": [{"name": "str", "params": "dict", "summary": "dict"}],
    "merkle": {"root": "sha256", "shards": "count"},
    "inputs": [{"path": "str?", "name": "str", "bytes": "count?", "sha256": "sha256?", "records": "count",
                "unreadable": "count", "merkle_root": "sha256", "leaves": "count"}],
    "outputs": [{**_FILE, "kind": "str", "records": "count", "input": "str"}],
    "state": [_FILE],
    "files": [_FILE],
    "counts": {"records": "count", "decisions": "counts", "reasons": "counts"},
    "warnings": ["str"],
}


def manifest_problem(document: dict[str, Any]) -> str | None:
    """What is wrong with the shape of a manifest (field path and expectation), or None."""
    return shape_problem(document, _SHAPE, "")
