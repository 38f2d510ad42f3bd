"""Re-check a scan against its manifest (``dokumi verify``) and prove single records in or out (``dokumi prove``).

``verify`` recomputes every file hash, every record hash and every Merkle root
the manifest commits to, checks that the scan folder holds no file the
manifest does not list, and checks the signature; each mismatch names the file
and, for records, the record id. It reads only inside the scan folder and the
one data folder the manifest names (or ``--data``), never through a path with
``..`` or an absolute one, and only regular files. ``prove`` writes an
inclusion proof that anyone can check with the manifest alone
(:func:`check_proof`), no data needed: every field of the proof is bound.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from dokumi.documents import read_json_document, shape_problem
from dokumi.errors import InputError
from dokumi.hashing import from_hex, record_digests
from dokumi.manifest import (
    UNLISTED,
    corpus_root,
    data_folder,
    manifest_sha256,
    read_manifest,
    unsafe_relative_path,
)
from dokumi.merkle import (
    MerkleBuilder,
    inclusion_path,
    merkle_root,
    record_leaf,
    record_leaves,
    root_from_path,
    shard_leaf,
)
from dokumi.records import Columns
from dokumi.remote import is_url
from dokumi.signing import SignatureCheck, signature_path_for, verify_signature

PROOF_SCHEMA = "dokumi.proof/2"
RECORDS_REPORTED_PER_SHARD = 50
UNSIGNED_WARNING = ("UNSIGNED: the manifest has no signature. The files match this manifest, but nothing shows the "
                    "manifest is the one the scan wrote: whoever could change the files could have rewritten it "
                    "to match (docs/threat-model.md). Sign with dokumi sign; check with --key or --require-signature")


@dataclass
class Problem:
    """One thing that does not match the manifest."""

    kind: str
    path: str | None = None
    record: str | None = None
    detail: str = ""

    def __str__(self) -> str:
        where = " ".join(part for part in (self.path, f"record {self.record!r}" if self.record else None) if part)
        return _one_line(f"{self.kind}: {where}: {self.detail}" if where else f"{self.kind}: {self.detail}")


def _one_line(text: str) -> str:
    """Names from a manifest or a folder may hold line breaks or escapes: show them escaped, on one line."""
    return text.encode("unicode_escape").decode("ascii") if not text.isprintable() else text


@dataclass
class VerifyReport:
    """The outcome of :func:`verify`; ``ok`` only when nothing mismatched.

    ``signed``: the manifest has a signature file (valid or not); an unsigned manifest can
    be ``ok`` (the files match it) while proving nothing about who wrote it.
    """

    manifest: Path
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    signature: SignatureCheck | None = None
    signed: bool = False
    files: int = 0
    records: int = 0

    @property
    def ok(self) -> bool:
        """Whether nothing mismatched."""
        return not self.problems

    def text(self) -> str:
        """The report for people: counts, signature, notes, one line per mismatch, then OK or FAILED."""
        lines = [_one_line(f"dokumi verify {self.manifest}: {self.files} files, {self.records:,} records re-hashed")]
        if not self.signed:
            lines.append(UNSIGNED_WARNING)
        elif self.signature is not None and self.signature.fingerprint:
            state = "valid" if self.signature.valid else "INVALID"
            lines.append(f"signature: {state} ({' + '.join(self.signature.algorithms)}), "
                         f"signed by key {self.signature.fingerprint}")
        lines += [_one_line(f"note: {note}") for note in self.notes]
        lines += [f"MISMATCH {problem}" for problem in self.problems]
        if not self.ok:
            lines.append(f"FAILED: {len(self.problems)} mismatch(es)")
        elif not self.signed:
            lines.append("OK (UNSIGNED): everything matches the manifest, which nothing vouches for")
        else:
            lines.append("OK: everything matches the manifest")
        return "\n".join(lines)


def verify(
    manifest_path: str | os.PathLike,
    data: str | os.PathLike | None = None,
    key: str | os.PathLike | None = None,
    batch_size: int = 1024,
    require_signature: bool = False,
) -> VerifyReport:
    """Check a scan folder against its manifest.

    ``data`` relocates the inputs: each is looked up as ``<data>/<shard name>``
    instead of by the manifest's path. ``key`` is a trusted public key: the
    manifest must then be signed by it. ``require_signature``: an unsigned
    manifest is a problem (without it, an unsigned one is reported, not failed).
    A manifest that cannot be read raises :class:`InputError`.
    """
    manifest_path = _manifest_file(manifest_path)
    manifest = read_manifest(manifest_path)
    report = VerifyReport(manifest=manifest_path)
    _check_signature(manifest_path, manifest, key, require_signature, report)
    checked = _check_listing(manifest_path, manifest, report)
    for entry in manifest["outputs"] + manifest["state"] + manifest["files"]:
        if entry["path"] in checked and checked[entry["path"]] is None:
            checked[entry["path"]] = _check_file(manifest_path.parent / entry["path"], entry, report,
                                                 inside=manifest_path.parent)
    sidecars = _sidecars_by_shard(manifest, checked)
    folder = _input_folder(manifest_path, manifest, data, report)
    for entry in manifest["inputs"]:
        expected = _usable_sidecar(entry, sidecars.get(entry["name"], []), manifest_path, report)
        _check_input(manifest, entry, expected, folder, batch_size, report)
    if corpus_root(manifest["inputs"]) != manifest["merkle"]["root"]:
        report.problems.append(Problem("corpus-root", manifest_path.name,
                                       detail="the shard roots do not give merkle.root"))
    if manifest["merkle"]["shards"] != len(manifest["inputs"]):
        report.problems.append(Problem("corpus-root", manifest_path.name,
                                       detail=f"merkle.shards is {manifest['merkle']['shards']}, the manifest lists "
                                              f"{len(manifest['inputs'])} inputs"))
    return report


def _manifest_file(path: str | os.PathLike) -> Path:
    if is_url(path):
        raise InputError(f"{path}: verify reads a local copy of the scan folder; download it first "
                         "(docs/object-storage.md)")
    path = Path(path)
    return path / "manifest.json" if path.is_dir() else path


def _check_signature(manifest_path: Path, manifest: dict[str, Any], key: str | os.PathLike | None,
                     require_signature: bool, report: VerifyReport) -> None:
    report.signed = signature_path_for(manifest_path).exists()
    if not report.signed:
        if key is not None or require_signature:
            reason = "a trusted key was given" if key is not None else "--require-signature"
            report.problems.append(Problem("unsigned", manifest_path.name, detail=f"no signature file, but {reason}"))
        if key is not None:
            verify_signature(manifest_path, trusted_key=key, manifest=manifest)  # an unusable key file still fails
        return
    report.signature = verify_signature(manifest_path, trusted_key=key, manifest=manifest)
    for problem in report.signature.problems:
        report.problems.append(Problem("signature", signature_path_for(manifest_path).name, detail=problem))
    if report.signature.valid and key is None:
        report.notes.append(f"the signing key {report.signature.fingerprint} is not pinned: give --key PUB to "
                            "require that signer (anyone can sign a forged manifest with a key of their own)")


def _check_listing(manifest_path: Path, manifest: dict[str, Any], report: VerifyReport) -> dict[str, bool | None]:
    """Every listed path must be a plain relative path, listed once; every file in the scan folder must be
    listed. Returns the listed paths that are safe to open (value: not yet checked)."""
    checked: dict[str, bool | None] = {}
    for entry in manifest["outputs"] + manifest["state"] + manifest["files"]:
        path = entry["path"]
        problem = unsafe_relative_path(path)
        if problem:
            report.problems.append(Problem("unsafe-path", path[:200], detail=f"{problem}; not read"))
        elif path in UNLISTED:
            report.problems.append(Problem("unsafe-path", path,
                                           detail="a manifest cannot list itself or its signature"))
        elif path in checked:
            report.problems.append(Problem("listed-twice", path, detail="the manifest lists this path twice"))
        else:
            checked[path] = None
    folder = manifest_path.parent
    exempt = {manifest_path.name, signature_path_for(manifest_path).name}
    for root, directories, files in os.walk(folder):
        for name in sorted(directories + files):
            path = Path(root) / name
            relative = path.relative_to(folder).as_posix()
            if path.is_symlink():
                report.problems.append(Problem("unlisted-file", relative,
                                               detail="a symbolic link in the scan folder (dokumi writes none)"))
            elif name in directories or relative in exempt:
                continue
            elif relative not in checked:
                report.problems.append(Problem("unlisted-file", relative,
                                               detail="in the scan folder, not listed in the manifest"))
    return checked


def _check_file(path: Path, entry: dict[str, Any], report: VerifyReport, inside: Path | None = None,
                shown: str | None = None) -> bool | None:
    """Size and SHA-256 of one regular file against its manifest entry: True when they match, False
    when they differ, None when it is missing or not a regular file (each reported).

    ``inside``: the file must also lie in that folder once symbolic links are resolved.
    """
    shown = shown or entry["path"]
    digest, problem = _hash_regular_file(path, inside)
    if problem:
        kind = "missing-file" if problem == "not found" else "not-a-file"
        report.problems.append(Problem(kind, shown, detail=f"listed in the manifest, {problem}"))
        return None
    size, sha256 = digest
    report.files += 1
    if entry.get("bytes") is not None and size != entry["bytes"]:
        report.problems.append(Problem("file-changed", shown, detail=f"{size} bytes, manifest says {entry['bytes']}"))
        return False
    if entry.get("sha256") and sha256 != entry["sha256"]:
        report.problems.append(Problem("file-changed", shown, detail="sha256 differs from the manifest"))
        return False
    return True


def _hash_regular_file(path: Path, inside: Path | None) -> tuple[tuple[int, str], str | None]:
    """``((size, sha256), None)`` of a regular file, or ``(_, why not)``: never follows a last-component link,
    never blocks on a FIFO, never reads a device."""
    try:
        with _open_regular(path, inside) as handle:
            digest, size = hashlib.sha256(), 0
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    except _Unreadable as error:
        return (0, ""), str(error)
    return (size, digest.hexdigest()), None


class _Unreadable(Exception):
    """Why a listed file was not read."""


def _open_regular(path: Path, inside: Path | None) -> BinaryIO:
    """``path`` opened for reading if it is a regular file (inside ``inside`` once links are resolved)."""
    if inside is not None and not os.path.realpath(path).startswith(os.path.realpath(inside) + os.sep):
        raise _Unreadable("outside the scan folder once links are resolved; not read")
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise _Unreadable("not found") from None
    except OSError as error:
        raise _Unreadable("a symbolic link, not followed" if os.path.islink(path)
                          else (error.strerror or str(error))) from None
    handle = os.fdopen(descriptor, "rb")
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        handle.close()
        raise _Unreadable("not a regular file; not read")
    return handle


def _sidecars_by_shard(manifest: dict[str, Any], checked: dict[str, bool | None]) -> dict[str, list[tuple[str, bool]]]:
    """Per input, its sidecar files (path, whether it matched the manifest)."""
    files: dict[str, list[tuple[str, bool]]] = defaultdict(list)
    for entry in manifest["outputs"]:
        if entry["kind"] == "hashes":
            files[entry["input"]].append((entry["path"], bool(checked.get(entry["path"]))))
    return files


@dataclass
class _ShardRecords:
    ids: list[str]
    rows: list[int]
    digests: bytes


def _sidecar_records(files: list[Path], inside: Path) -> _ShardRecords:
    """The records of a shard's sidecar files (regular files in ``inside``); InputError when one is not a
    readable sidecar."""
    ids, rows, digests = [], [], []
    for file in files:
        try:
            with _open_regular(file, inside) as handle:
                data = handle.read()
        except _Unreadable as error:
            raise InputError(f"sidecar {file.name}: {error}") from None
        try:
            table = pq.read_table(pa.BufferReader(data), columns=["id", "row", "sha256"])
            file_ids, file_rows = table.column("id").to_pylist(), table.column("row").to_pylist()
            file_digests, valid = from_hex(table.column("sha256").combine_chunks())
        except (pa.ArrowException, OSError, KeyError, ValueError, TypeError) as error:
            raise InputError(f"{file.name}: not a record-hash sidecar ({_one_line(str(error))[:200]})") from None
        if None in file_ids or not all(isinstance(row, int) for row in file_rows) or not valid.all():
            raise InputError(f"{file.name}: a sidecar row lacks its id, row or a valid sha256")
        ids += file_ids
        rows += file_rows
        digests.append(file_digests.tobytes())
    return _ShardRecords(ids, rows, b"".join(digests))


def _usable_sidecar(entry: dict[str, Any], files: list[tuple[str, bool]], manifest_path: Path,
                    report: VerifyReport) -> _ShardRecords | None:
    """The shard's sidecar records when its files match the manifest and give the shard's Merkle root."""
    if not all(matched for _, matched in files):
        return None  # the changed or missing file is reported already
    try:
        records = _sidecar_records([manifest_path.parent / path for path, _ in files], manifest_path.parent)
    except InputError as error:
        report.problems.append(Problem("sidecar-unreadable", entry["name"], detail=str(error)))
        return None
    if merkle_root(record_leaves(records.ids, records.rows, records.digests)).hex() != entry["merkle_root"]:
        report.problems.append(Problem("sidecar-root", entry["name"],
                                       detail="the record-hash sidecar does not give the shard's merkle_root"))
        return None
    return records


def _input_folder(manifest_path: Path, manifest: dict[str, Any], data: str | os.PathLike | None,
                  report: VerifyReport) -> Path | None:
    """Where the inputs are read: ``data``, else the one data folder the manifest names; None: none usable."""
    try:
        folder = data_folder(manifest["inputs"])
    except InputError as error:
        if data is None:
            report.problems.append(Problem("unsafe-path", manifest_path.name, detail=f"{error}; inputs not read"))
            return None
        names = [entry["name"] for entry in manifest["inputs"] if unsafe_relative_path(entry["name"])]
        if names:
            report.problems.append(Problem("unsafe-path", manifest_path.name, detail=f"{error}; inputs not read"))
            return None
        folder = None
    if data is not None:
        report.notes.append(f"inputs read from {data} (--data)")
        return Path(data)
    if folder is None:
        return None
    report.notes.append(f"inputs read from {folder} (relative to the manifest's folder), as the manifest says")
    return manifest_path.parent / folder


def _check_input(
    manifest: dict[str, Any], entry: dict[str, Any], expected: _ShardRecords | None, folder: Path | None,
    batch_size: int, report: VerifyReport,
) -> None:
    if entry["path"] is None:
        report.notes.append(f"input {entry['name']} was not a file: checked through its sidecar only")
        return
    if folder is None:
        if is_url(entry["path"]):
            report.notes.append(f"input {entry['name']} is in object storage ({entry['path'][:200]}): not re-read; "
                                "give --data DIR, a local copy, to re-hash it")
        return
    path = folder / entry["name"]
    shown = str(path)
    if _check_file(path, entry, report, shown=shown) is None:
        return  # missing or not a regular file: reported, nothing to re-hash
    if entry["bytes"] == 0:
        return
    from dokumi.sources import open_inputs

    actual_ids, actual_rows, digests, tree = [], [], [], MerkleBuilder()
    try:
        shard = open_inputs([str(path)])[0]
        shard.name = entry["name"]
        for batch in shard.batches(Columns(**manifest["columns"]), batch_size):
            batch_digests = record_digests(batch).tobytes()
            batch_rows = batch.rows.to_pylist()
            actual_ids += batch.ids
            actual_rows += batch_rows
            digests.append(batch_digests)
            tree.extend(record_leaves(batch.ids, batch_rows, batch_digests))
    except (InputError, pa.ArrowException, OSError) as error:
        report.problems.append(Problem("input-unreadable", shown, detail=_one_line(str(error))[:300]))
        return
    report.records += tree.size
    if tree.root().hex() == entry["merkle_root"]:
        return
    report.problems.append(Problem("shard-root", shown, detail=f"records give Merkle root {tree.root().hex()[:16]}…, "
                                   f"manifest says {entry['merkle_root'][:16]}…"))
    if expected is not None:
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


def occurrences(manifest_path: str | os.PathLike, record_id: str) -> list[dict[str, Any]]:
    """Where ``record_id`` stands in the corpus of the manifest, from its sidecars: ``[{"shard", "row"}, ...]``."""
    manifest_path = _manifest_file(manifest_path)
    manifest = read_manifest(manifest_path)
    return [{"shard": entry["name"], "row": records.rows[index]}
            for _, entry, records in _shard_sidecars(manifest_path, manifest)
            for index, found in enumerate(records.ids) if found == record_id]


def prove(manifest_path: str | os.PathLike, record_id: str, shard: str | None = None,
          row: int | None = None) -> dict[str, Any]:
    """An inclusion proof that ``record_id``, at its shard and row, with its content hash, is in the corpus
    of the manifest. An id that occurs more than once: the first occurrence, or the one in ``shard``
    and at ``row`` (see :func:`occurrences`)."""
    manifest_path = _manifest_file(manifest_path)
    manifest = read_manifest(manifest_path)
    names = [entry["name"] for entry in manifest["inputs"]]
    for shard_index, entry, records in _shard_sidecars(manifest_path, manifest):
        if shard is not None and entry["name"] != shard:
            continue
        candidates = [i for i, found in enumerate(records.ids)
                      if found == record_id and (row is None or records.rows[i] == row)]
        if not candidates:
            continue
        index = candidates[0]
        leaves = record_leaves(records.ids, records.rows, records.digests)
        if merkle_root(leaves).hex() != entry["merkle_root"]:
            raise InputError(f"the sidecar of shard {entry['name']} does not match the manifest; run dokumi verify")
        shard_leaves = [shard_leaf(name, bytes.fromhex(e["merkle_root"])) for name, e in zip(names, manifest["inputs"])]
        return {
            "schema": PROOF_SCHEMA,
            "manifest_sha256": manifest_sha256(manifest),
            "corpus_root": manifest["merkle"]["root"],
            "record": {
                "id": record_id,
                "sha256": records.digests[32 * index:32 * index + 32].hex(),
                "shard": entry["name"],
                "row": records.rows[index],
                "leaf_index": index,
            },
            "shard": {"name": entry["name"], "leaves": len(leaves), "root": entry["merkle_root"],
                      "path": [node.hex() for node in inclusion_path(leaves, index)]},
            "corpus": {"shards": len(shard_leaves), "index": shard_index,
                       "path": [node.hex() for node in inclusion_path(shard_leaves, shard_index)]},
        }
    where = "".join([f" in shard {shard!r}" if shard is not None else "", f" at row {row}" if row is not None else ""])
    raise InputError(_one_line(f"record id {record_id!r} is not in the corpus of {manifest_path}{where}"))


def _shard_sidecars(
    manifest_path: Path, manifest: dict[str, Any]
) -> Iterator[tuple[int, dict[str, Any], _ShardRecords]]:
    """Each input with the records of its sidecar files (paths checked to lie in the scan folder)."""
    files: dict[str, list[Path]] = defaultdict(list)
    for entry in manifest["outputs"]:
        if entry["kind"] == "hashes":
            problem = unsafe_relative_path(entry["path"])
            if problem:
                raise InputError(f"{manifest_path}: sidecar path {entry['path'][:200]!r}: {problem}; not read")
            files[entry["input"]].append(manifest_path.parent / entry["path"])
    for shard_index, entry in enumerate(manifest["inputs"]):
        yield shard_index, entry, _sidecar_records(files.get(entry["name"], []), manifest_path.parent)


# every field of a proof, with its type: a field the checker does not know is refused, not ignored
_PROOF_SHAPE = {
    "schema": "str",
    "manifest_sha256": "sha256",
    "corpus_root": "sha256",
    "record": {"id": "str", "sha256": "sha256", "shard": "str", "row": "count", "leaf_index": "count"},
    "shard": {"name": "str", "leaves": "count", "root": "sha256", "path": ["sha256"]},
    "corpus": {"shards": "count", "index": "count", "path": ["sha256"]},
}


def check_proof(proof: Any, manifest: dict[str, Any] | None = None, text: str | None = None) -> list[str]:
    """Problems with an inclusion proof (empty when it holds). Needs no data.

    Every field is bound: the record's id, row and sha256 make its leaf; the leaf index and
    the shard's size fix the audit path to the shard root; the shard's name and root make its
    leaf in the corpus tree; the record's shard must be that shard. With ``manifest``, the proof
    must also be made from exactly that manifest (``manifest_sha256``), lead to its
    ``merkle.root``, and name its shard, root and size as the manifest does. With ``text``, the
    record's content must hash to the proven sha256. A field that is missing, of the wrong
    type, or unknown is a problem.
    """
    problem = shape_problem(proof, _PROOF_SHAPE, "", exact=True)
    if problem:
        return [f"not a {PROOF_SCHEMA} proof ({problem})"]
    if proof["schema"] != PROOF_SCHEMA:
        return [f"not a {PROOF_SCHEMA} proof (schema {proof['schema'][:80]!r})"]
    record, shard, corpus = proof["record"], proof["shard"], proof["corpus"]
    problems = []
    if record["shard"] != shard["name"]:
        problems.append("record.shard is not shard.name")
    leaf = record_leaf(record["id"], record["row"], bytes.fromhex(record["sha256"]))
    shard_root = root_from_path(leaf, record["leaf_index"], shard["leaves"], [bytes.fromhex(h) for h in shard["path"]])
    if shard_root is None or shard_root.hex() != shard["root"]:
        problems.append("the record's audit path does not lead to the shard root")
    top = root_from_path(shard_leaf(shard["name"], bytes.fromhex(shard["root"])), corpus["index"],
                         corpus["shards"], [bytes.fromhex(h) for h in corpus["path"]])
    if top is None or top.hex() != proof["corpus_root"]:
        problems.append("the shard's audit path does not lead to the corpus root")
    if manifest is not None:
        problems += _proof_against_manifest(proof, manifest)
    if text is not None and hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest() != record["sha256"]:
        problems.append("the given text does not hash to the proven sha256")
    return problems


def _proof_against_manifest(proof: dict[str, Any], manifest: dict[str, Any]) -> list[str]:
    problems = []
    if manifest["merkle"]["root"] != proof["corpus_root"]:
        problems.append("the proof's corpus root is not the manifest's merkle.root")
    if manifest_sha256(manifest) != proof["manifest_sha256"]:
        problems.append("the proof's manifest_sha256 is not this manifest's")
    shard, corpus, inputs = proof["shard"], proof["corpus"], manifest["inputs"]
    if corpus["shards"] != len(inputs):
        problems.append(f"the proof's corpus.shards is {corpus['shards']}; the manifest lists {len(inputs)} inputs")
    if corpus["index"] >= len(inputs):
        problems.append("the proof's corpus.index names no input of the manifest")
        return problems
    entry = inputs[corpus["index"]]
    if (entry["name"], entry["merkle_root"], entry["leaves"]) != (shard["name"], shard["root"], shard["leaves"]):
        problems.append(f"the proof's shard (name, root, leaves) is not input {corpus['index']} of the manifest")
    return problems


def read_proof(path: str | os.PathLike) -> dict[str, Any]:
    """A proof file, strictly parsed (:mod:`dokumi.documents`); InputError naming the file otherwise."""
    return read_json_document(path, "proof file", PROOF_SCHEMA)


__all__ = ["Problem", "VerifyReport", "verify", "prove", "occurrences", "check_proof", "read_proof",
           "manifest_sha256"]
