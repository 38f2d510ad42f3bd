"""Re-check a scan against its manifest (``dokumi verify``) and prove single records in or out (``dokumi prove``).

``verify`` recomputes every file hash, every record hash and every Merkle root
the manifest commits to, and checks the signature; each mismatch names the
file and, for records, the record id. ``prove`` writes an inclusion proof that
anyone can check with the manifest alone (:func:`check_proof`), no data needed.
"""

from __future__ import annotations

import hashlib
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from dokumi.documents import read_json_document
from dokumi.errors import InputError
from dokumi.hashing import from_hex, record_digests
from dokumi.manifest import corpus_root, read_manifest, resolve
from dokumi.merkle import (
    MerkleBuilder,
    inclusion_path,
    merkle_root,
    record_leaf,
    record_leaves,
    root_from_path,
    shard_leaf,
)
from dokumi.outputs import file_sha256
from dokumi.records import Columns
from dokumi.signing import SignatureCheck, canonical_json, signature_path_for, verify_signature

PROOF_SCHEMA = "dokumi.proof/1"
RECORDS_REPORTED_PER_SHARD = 50


@dataclass
class Problem:
    """One thing that does not match the manifest."""

    kind: str
    path: str | None = None
    record: str | None = None
    detail: str = ""

    def __str__(self) -> str:
        where = " ".join(part for part in (self.path, f"record {self.record!r}" if self.record else None) if part)
        return f"{self.kind}: {where}: {self.detail}" if where else f"{self.kind}: {self.detail}"


@dataclass
class VerifyReport:
    """The outcome of :func:`verify`; ``ok`` only when nothing mismatched."""

    manifest: Path
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    signature: SignatureCheck | None = None
    files: int = 0
    records: int = 0

    @property
    def ok(self) -> bool:
        """Whether nothing mismatched."""
        return not self.problems

    def text(self) -> str:
        """The report for people: counts, signature, notes, one line per mismatch, then OK or FAILED."""
        lines = [f"dokumi verify {self.manifest}: {self.files} files, {self.records:,} records re-hashed"]
        if self.signature is not None and self.signature.fingerprint:
            state = "valid" if self.signature.valid else "INVALID"
            lines.append(f"signature: {state} ({' + '.join(self.signature.algorithms)}), "
                         f"signed by key {self.signature.fingerprint}")
        lines += [f"note: {note}" for note in self.notes]
        lines += [f"MISMATCH {problem}" for problem in self.problems]
        lines.append("OK: everything matches the manifest" if self.ok else
                     f"FAILED: {len(self.problems)} mismatch(es)")
        return "\n".join(lines)


def verify(
    manifest_path: str | os.PathLike,
    data: str | os.PathLike | None = None,
    key: str | os.PathLike | None = None,
    batch_size: int = 1024,
) -> VerifyReport:
    """Check a scan folder against its manifest.

    ``data`` relocates the inputs: each is looked up as ``<data>/<shard name>``
    instead of by the manifest's path. ``key`` is a trusted public key: the
    manifest must then be signed by it.
    """
    manifest_path = _manifest_file(manifest_path)
    manifest = read_manifest(manifest_path)
    report = VerifyReport(manifest=manifest_path)
    _check_signature(manifest_path, key, report)
    for entry in manifest["outputs"] + manifest.get("state", []):
        _check_file(resolve(manifest_path, entry["path"]), entry, report)
    sidecars = _sidecars_by_shard(manifest_path, manifest)
    for entry in manifest["inputs"]:
        expected = _sidecar_records(sidecars.get(entry["name"], []))
        _check_sidecar_root(entry, expected, report)
        _check_input(manifest_path, manifest, entry, expected, data, batch_size, report)
    if corpus_root(manifest["inputs"]) != manifest["merkle"]["root"]:
        report.problems.append(Problem("corpus-root", manifest_path.name,
                                       detail="the shard roots do not give merkle.root"))
    return report


def _manifest_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path / "manifest.json" if path.is_dir() else path


def _check_signature(manifest_path: Path, key: str | os.PathLike | None, report: VerifyReport) -> None:
    if not signature_path_for(manifest_path).exists():
        if key is not None:
            report.problems.append(Problem("signature", manifest_path.name,
                                           detail="unsigned, but a trusted key was given"))
        else:
            report.notes.append("the manifest is not signed (dokumi sign)")
        return
    report.signature = verify_signature(manifest_path, trusted_key=key)
    for problem in report.signature.problems:
        report.problems.append(Problem("signature", signature_path_for(manifest_path).name, detail=problem))


def _check_file(path: Path, entry: dict[str, Any], report: VerifyReport) -> bool:
    """Size and SHA-256 of one file against its manifest entry; True when they match."""
    shown = entry.get("path") or str(path)
    if not path.is_file():
        report.problems.append(Problem("missing-file", shown, detail="listed in the manifest, not found"))
        return False
    report.files += 1
    if entry.get("bytes") is not None and path.stat().st_size != entry["bytes"]:
        report.problems.append(Problem("file-changed", shown,
                                       detail=f"{path.stat().st_size} bytes, manifest says {entry['bytes']}"))
        return False
    if entry.get("sha256") and file_sha256(path) != entry["sha256"]:
        report.problems.append(Problem("file-changed", shown, detail="sha256 differs from the manifest"))
        return False
    return True


def _sidecars_by_shard(manifest_path: Path, manifest: dict[str, Any]) -> dict[str, list[Path]]:
    files: dict[str, list[Path]] = defaultdict(list)
    for entry in manifest["outputs"]:
        if entry["kind"] == "hashes":
            files[entry["input"]].append(resolve(manifest_path, entry["path"]))
    return files


@dataclass
class _ShardRecords:
    ids: list[str]
    rows: list[int]
    digests: bytes


def _sidecar_records(files: list[Path]) -> _ShardRecords:
    ids, rows, digests = [], [], []
    for file in files:
        if not file.is_file():
            continue
        table = pq.read_table(file, columns=["id", "row", "sha256"])
        ids += table.column("id").to_pylist()
        rows += table.column("row").to_pylist()
        digests.append(from_hex(table.column("sha256").combine_chunks())[0].tobytes())
    return _ShardRecords(ids, rows, b"".join(digests))


def _check_sidecar_root(entry: dict[str, Any], expected: _ShardRecords, report: VerifyReport) -> None:
    root = merkle_root(record_leaves(expected.ids, expected.digests)).hex()
    if root != entry["merkle_root"]:
        report.problems.append(Problem("sidecar-root", entry["name"],
                                       detail="the record-hash sidecar does not give the shard's merkle_root"))


def _check_input(
    manifest_path: Path, manifest: dict[str, Any], entry: dict[str, Any], expected: _ShardRecords,
    data: str | os.PathLike | None, batch_size: int, report: VerifyReport,
) -> None:
    if data is not None:
        path = Path(data) / entry["name"]
    elif entry.get("path"):
        path = resolve(manifest_path, entry["path"])
    else:
        report.notes.append(f"input {entry['name']} was not a file: checked through its sidecar only")
        return
    shown = str(path)
    if not path.is_file():
        report.problems.append(Problem("missing-file", shown, detail=f"input shard {entry['name']} not found"))
        return
    _check_file(path, {**entry, "path": shown}, report)
    if entry.get("bytes") == 0:
        return
    from dokumi.sources import open_inputs

    shard = open_inputs([str(path)])[0]
    shard.name = entry["name"]
    actual_ids, actual_rows, digests, tree = [], [], [], MerkleBuilder()
    for batch in shard.batches(Columns(**manifest["columns"]), batch_size):
        batch_digests = record_digests(batch).tobytes()
        actual_ids += batch.ids
        actual_rows += batch.rows.to_pylist()
        digests.append(batch_digests)
        tree.extend(record_leaves(batch.ids, batch_digests))
    report.records += tree.size
    if tree.root().hex() == entry["merkle_root"]:
        return
    report.problems.append(Problem("shard-root", shown, detail=f"records give Merkle root {tree.root().hex()[:16]}…, "
                                   f"manifest says {entry['merkle_root'][:16]}…"))
    _report_records(shown, _ShardRecords(actual_ids, actual_rows, b"".join(digests)), expected, report)


def _report_records(shown: str, actual: _ShardRecords, expected: _ShardRecords, report: VerifyReport) -> None:
    """Name the records whose hashes differ, that disappeared, or that appeared."""
    problems: list[Problem] = []
    if actual.ids == expected.ids:
        for i, record_id in enumerate(actual.ids):
            if actual.digests[32 * i:32 * i + 32] != expected.digests[32 * i:32 * i + 32]:
                problems.append(Problem("record-changed", shown, record_id,
                                        f"row {actual.rows[i]}: content hash differs from the sidecar"))
    else:
        indexed = {record_id: i for i, record_id in reversed(list(enumerate(expected.ids)))}
        present = set(actual.ids)
        for i, record_id in enumerate(actual.ids):
            j = indexed.get(record_id)
            if j is None:
                problems.append(Problem("record-added", shown, record_id, f"row {actual.rows[i]}: not in the sidecar"))
            elif actual.digests[32 * i:32 * i + 32] != expected.digests[32 * j:32 * j + 32]:
                problems.append(Problem("record-changed", shown, record_id,
                                        f"row {actual.rows[i]}: content hash differs from the sidecar"))
        problems += [
            Problem("record-missing", shown, record_id, f"row {expected.rows[j]}: in the sidecar, not in the data")
            for record_id, j in indexed.items() if record_id not in present
        ]
        if not problems:
            problems.append(Problem("records-reordered", shown, detail="same records in another order"))
    report.problems += problems[:RECORDS_REPORTED_PER_SHARD]
    if len(problems) > RECORDS_REPORTED_PER_SHARD:
        report.problems.append(Problem("more-records", shown,
                                       detail=f"{len(problems) - RECORDS_REPORTED_PER_SHARD:,} more records differ"))


def prove(manifest_path: str | os.PathLike, record_id: str) -> dict[str, Any]:
    """An inclusion proof that ``record_id`` with its content hash is in the corpus of the manifest."""
    manifest_path = _manifest_file(manifest_path)
    manifest = read_manifest(manifest_path)
    sidecars = _sidecars_by_shard(manifest_path, manifest)
    names = [entry["name"] for entry in manifest["inputs"]]
    for shard_index, entry in enumerate(manifest["inputs"]):
        records = _sidecar_records(sidecars.get(entry["name"], []))
        if record_id not in records.ids:
            continue
        index = records.ids.index(record_id)
        leaves = record_leaves(records.ids, records.digests)
        if merkle_root(leaves).hex() != entry["merkle_root"]:
            raise InputError(f"the sidecar of shard {entry['name']} does not match the manifest; run dokumi verify")
        shard_leaves = [shard_leaf(name, bytes.fromhex(e["merkle_root"])) for name, e in zip(names, manifest["inputs"])]
        return {
            "schema": PROOF_SCHEMA,
            "manifest_sha256": hashlib.sha256(canonical_json(manifest)).hexdigest(),
            "corpus_root": manifest["merkle"]["root"],
            "record": {
                "id": record_id,
                "sha256": records.digests[32 * index:32 * index + 32].hex(),
                "shard": entry["name"],
                "row": records.rows[index],
                "leaf_index": index,
                "occurrences": records.ids.count(record_id),
            },
            "shard": {"name": entry["name"], "leaves": len(leaves), "root": entry["merkle_root"],
                      "path": [node.hex() for node in inclusion_path(leaves, index)]},
            "corpus": {"shards": len(shard_leaves), "index": shard_index,
                       "path": [node.hex() for node in inclusion_path(shard_leaves, shard_index)]},
        }
    raise InputError(f"record id {record_id!r} is not in the corpus of {manifest_path}")


def check_proof(proof: dict[str, Any], manifest: dict[str, Any] | None = None, text: str | None = None) -> list[str]:
    """Problems with an inclusion proof (empty when it holds). Needs no data: with ``manifest`` the
    proof must also lead to that manifest's corpus root; with ``text`` the record's content must hash
    to the proven sha256."""
    problems = []
    try:
        record, shard, corpus = proof["record"], proof["shard"], proof["corpus"]
        leaf = record_leaf(record["id"], bytes.fromhex(record["sha256"]))
        shard_path = [bytes.fromhex(h) for h in shard["path"]]
        shard_root = root_from_path(leaf, record["leaf_index"], shard["leaves"], shard_path)
        if shard_root is None or shard_root.hex() != shard["root"]:
            problems.append("the record's audit path does not lead to the shard root")
        top = root_from_path(shard_leaf(shard["name"], bytes.fromhex(shard["root"])), corpus["index"],
                             corpus["shards"], [bytes.fromhex(h) for h in corpus["path"]])
        if top is None or top.hex() != proof["corpus_root"]:
            problems.append("the shard's audit path does not lead to the corpus root")
    except (KeyError, TypeError, ValueError) as error:
        return [f"not a {PROOF_SCHEMA} proof ({error})"]
    if manifest is not None and manifest["merkle"]["root"] != proof["corpus_root"]:
        problems.append("the proof's corpus root is not the manifest's merkle.root")
    if text is not None and hashlib.sha256(text.encode("utf-8")).hexdigest() != record["sha256"]:
        problems.append("the given text does not hash to the proven sha256")
    return problems


def read_proof(path: str | os.PathLike) -> dict[str, Any]:
    """An inclusion proof file written by ``dokumi prove``."""
    return read_json_document(path, "proof file", PROOF_SCHEMA)


__all__ = ["Problem", "VerifyReport", "verify", "prove", "check_proof", "read_proof"]
