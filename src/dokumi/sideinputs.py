"""Side inputs: data a stage needs beside the corpus, loaded and checked before any corpus data is read.

A stage declares which of its parameters name side inputs, and of which kind
(``Stage.side_inputs``): ``"corpus"`` (records, e.g. ``protect``, ``reference``),
``"state"`` (an earlier scan's saved state of that stage, e.g. ``index``) or
``"hashes"`` (an earlier scan's record hashes, ``expect``). :func:`prepare`
loads each one that is set, fails with a one-line error when it is missing,
unreadable or lacks the columns the stage needs, and hands the loaded inputs
to the stage's ``setup``. Stages never open files themselves.
"""

from __future__ import annotations

import hashlib
import os
import stat
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dokumi.documents import read_json
from dokumi.errors import DokumiError, InputError
from dokumi.records import Batch, Columns
from dokumi.sources import Shard, open_inputs
from dokumi.stage import SIDE_INPUT_KINDS, Stage, StageContext


def flag_of(stage: Stage, parameter: str) -> str:
    """How a person set the input: the CLI shortcut and the recipe key."""
    return f"--{parameter.replace('_', '-')} ({stage.name}.{parameter})"


@dataclass
class SideCorpus:
    """Records given beside the corpus (protected documents, a trusted reference): re-readable batches.

    Reading it raises a one-line error on an unreadable record (a protected document that
    cannot be read cannot be protected) and when it holds no record at all.
    """

    path: str
    label: str
    shards: list[Shard]
    columns: Columns
    batch_size: int

    def __iter__(self) -> Iterator[Batch]:
        records = 0
        for shard in self.shards:
            for batch in self._batches(shard):
                if batch.unreadable:
                    row = batch.unreadable[0]
                    raise InputError(f"{self.label} {shard.path or shard.name}: row {row.row} is unreadable "
                                     f"({row.reason})")
                records += batch.num_rows
                yield batch
        if not records:
            raise InputError(f"{self.label} {self.path}: holds no records")

    def _batches(self, shard: Shard) -> Iterator[Batch]:
        try:
            yield from shard.batches(self.columns, self.batch_size)
        except (OSError, EOFError, zlib.error, ValueError, RecursionError) as error:  # broke while being read
            reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
            raise InputError(f"{self.label} {shard.path or shard.name}: cannot read it ({reason[:200]})") from None


@dataclass
class SavedState:
    """An earlier scan's saved state of one stage (``<scan>/state/<stage>/``), read through checked helpers."""

    path: str
    label: str
    folder: Path

    def read_json(self, name: str) -> dict[str, Any]:
        """The JSON object in file ``name`` of the saved state; ``InputError`` naming it otherwise."""
        try:
            value = read_json(self.folder / name, "state file")
        except InputError as error:
            raise InputError(f"{self.label}: {error}") from None
        if not isinstance(value, dict):
            raise InputError(f"{self.label} {self.path}: {name} is not a JSON object")
        return value

    def read_array(self, name: str) -> np.ndarray:
        """The NumPy array in file ``name`` (no pickles); ``InputError`` naming it otherwise."""
        try:
            return np.load(self.folder / name, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise InputError(f"{self.label} {self.path}: cannot read {name} ({error})") from None

    def read_table(self, name: str) -> pa.Table:
        """The Parquet table in file ``name``; ``InputError`` naming it otherwise."""
        try:
            return pq.read_table(self.folder / name)
        except (OSError, pa.ArrowInvalid) as error:
            raise InputError(f"{self.label} {self.path}: cannot read {name} ({error})") from None

    def exists(self, name: str) -> bool:
        """Whether the saved state holds a file ``name``."""
        return (self.folder / name).is_file()


def load_corpus(path: str, label: str, columns: Columns, batch_size: int) -> SideCorpus:
    """Checked shards of a side corpus: they exist, are readable, and carry the content columns."""
    try:
        shards = open_inputs(str(path))
    except InputError as error:
        raise InputError(f"{label}: {error}") from None
    for shard in shards:
        try:
            names = shard.schema_names()
        except InputError as error:
            raise InputError(f"{label}: {error}") from None
        except (OSError, EOFError, zlib.error, ValueError, RecursionError) as error:  # unreadable, bad gzip, hostile
            reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
            raise InputError(f"{label} {shard.path or shard.name}: cannot read it ({reason[:200]})") from None
        if not columns.content_roles(names):
            raise InputError(
                f"{label} {shard.path or shard.name}: no column {columns.text!r} (nor {columns.prompt!r} + "
                f"{columns.response!r}); found: {', '.join(names) or 'no columns'}"
            )
    return SideCorpus(str(path), label, shards, columns, batch_size)


def load_state(path: str, label: str, stage_name: str) -> SavedState:
    """An earlier scan's state folder of ``stage_name``: the scan's output folder or the state folder itself."""
    folder = Path(path)
    if not folder.exists():
        raise InputError(f"{label} {path}: does not exist")
    if not (folder / "params.json").is_file() and (folder / "state" / stage_name / "params.json").is_file():
        folder = folder / "state" / stage_name
    if not (folder / "params.json").is_file():
        raise InputError(f"{label} {path}: not a scan folder nor a state/{stage_name}/ folder (no params.json)")
    scan_folder = folder.parent.parent
    if folder.parent.name == "state" and (scan_folder / "manifest.json").is_file():
        _check_state_files(scan_folder / "manifest.json", folder, label)
    return SavedState(str(path), label, folder)


def _check_state_files(manifest_path: Path, folder: Path, label: str) -> None:
    """The state folder of a scan holds exactly the files its manifest lists under it, unchanged."""
    manifest, _ = _vouching_manifest_of(manifest_path, label, None, "its state is")
    prefix = folder.relative_to(manifest_path.parent).as_posix() + "/"
    listed = {entry["path"]: entry for entry in manifest["state"] if entry["path"].startswith(prefix)}
    present = {file.relative_to(manifest_path.parent).as_posix(): file
               for file in sorted(folder.rglob("*")) if file.is_file() or file.is_symlink()}
    for path in sorted(set(listed) | set(present)):
        if path not in listed:
            raise InputError(f"{label} {manifest_path.parent / path}: not listed in the scan's manifest; refusing it")
        if path not in present:
            raise InputError(f"{label} {manifest_path.parent / path}: listed in the scan's manifest, missing")
        data = _read_regular_file(present[path], label)
        if len(data) != listed[path]["bytes"] or hashlib.sha256(data).hexdigest() != listed[path]["sha256"]:
            raise InputError(f"{label} {present[path]}: its SHA-256 is not the one its manifest lists "
                             f"(replaced or damaged since the scan); refusing it")


def _vouching_manifest_of(manifest_path: Path, label: str, key: str | None, what: str) -> tuple[dict, str | None]:
    """An earlier scan's manifest, read strictly, with the fingerprint of its valid signature (None: unsigned);
    InputError when the signature does not verify, or is missing while ``key`` requires one."""
    from dokumi.manifest import read_manifest
    from dokumi.signing import signature_path_for, verify_signature

    try:
        manifest = read_manifest(manifest_path)
    except DokumiError as error:
        raise InputError(f"{label}: {error}") from None
    if signature_path_for(manifest_path).exists():
        check = verify_signature(manifest_path, trusted_key=key, manifest=manifest)
        if not check.valid:
            raise InputError(f"{label} {manifest_path}: signature check failed ({check.problems[0]}); "
                             f"{what} not trusted")
        return manifest, check.fingerprint
    if key is not None:
        raise InputError(f"{label} {manifest_path}: not signed, but --expect-key requires a signature by {key}")
    return manifest, None


def load_hashes(path: str, label: str, key: str | None = None) -> Any:
    """An earlier scan's record hashes (its manifest, scan folder, ``hashes/`` folder or one sidecar file),
    trusted only as far as its manifest vouches for them.

    Where the sidecars lie in a scan folder, its manifest is read strictly, its signature (if there
    is one) must verify, and every sidecar's size and SHA-256 must be those the manifest lists; the
    bytes checked are the bytes read. ``key`` (a public key file): the manifest must be signed by it.
    Sidecars with no manifest beside them are taken as they are, unless a ``key`` is given.
    """
    from dokumi.sidecar import ExpectedHashes

    target = Path(path)
    if not target.exists():
        raise InputError(f"{label} {path}: does not exist")
    manifest_path, wanted = _manifest_for_sidecars(target)
    if manifest_path is None:
        if key is not None:
            raise InputError(f"{label} {path}: no manifest.json vouches for these sidecars, so no signature can "
                             f"be checked; give the earlier scan's folder or manifest")
        hashes = ExpectedHashes.load(target)
        hashes.origin = {"manifest": None, "signed_by": None, "trusted_key": None}
        return hashes
    return _checked_hashes(manifest_path, wanted, label, key)


def _manifest_for_sidecars(target: Path) -> tuple[Path | None, set[str] | None]:
    """The manifest that lists the sidecars at ``target`` and which of its sidecars are meant (None: all)."""
    if target.is_file() and target.suffix == ".json":
        return target, None
    if target.is_dir() and (target / "manifest.json").is_file():
        return target / "manifest.json", None
    if target.is_dir() and (target.parent / "manifest.json").is_file():  # <scan>/hashes/
        return target.parent / "manifest.json", {
            file.relative_to(target.parent).as_posix() for file in sorted(target.glob("*.parquet"))}
    if target.is_file() and (target.parent.parent / "manifest.json").is_file():  # <scan>/hashes/<shard>.parquet
        return target.parent.parent / "manifest.json", {target.relative_to(target.parent.parent).as_posix()}
    return None, None


def _checked_hashes(manifest_path: Path, wanted: set[str] | None, label: str, key: str | None) -> Any:
    from dokumi.manifest import manifest_sha256, unsafe_relative_path
    from dokumi.sidecar import ExpectedHashes

    where = f"{label} {manifest_path}"
    manifest, signed_by = _vouching_manifest_of(manifest_path, label, key, "its sidecars are")
    listed = {entry["path"]: entry for entry in manifest["outputs"] if entry["kind"] == "hashes"}
    if not listed:
        raise InputError(f"{where}: the manifest lists no record-hash sidecar")
    unlisted = sorted((wanted or set()) - set(listed))
    if unlisted:
        raise InputError(f"{label} {manifest_path.parent / unlisted[0]}: not listed in the scan's manifest; "
                         f"refusing it")
    files: list[tuple[str, Any, str | None]] = []
    for path, entry in listed.items():
        if wanted is not None and path not in wanted:
            continue
        problem = unsafe_relative_path(path)
        if problem:
            raise InputError(f"{where}: sidecar path {path[:200]!r}: {problem}; refusing it")
        data = _read_regular_file(manifest_path.parent / path, label)
        digest = hashlib.sha256(data).hexdigest()
        if len(data) != entry["bytes"] or digest != entry["sha256"]:
            raise InputError(f"{label} {manifest_path.parent / path}: its SHA-256 is not the one its manifest lists "
                             f"(replaced or damaged since the scan); refusing it")
        files.append((str(manifest_path.parent / path), pa.BufferReader(data), digest))
    hashes = ExpectedHashes.read(files)
    hashes.origin = {"manifest": str(manifest_path), "manifest_sha256": manifest_sha256(manifest),
                     "signed_by": signed_by, "trusted_key": str(key) if key is not None else None}
    return hashes


def _read_regular_file(path: Path, label: str) -> bytes:
    """The bytes of a regular file (never a FIFO or a device, never through a last-component link)."""
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    except OSError as error:
        raise InputError(f"{label} {path}: cannot read it ({error.strerror or error})") from None
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            raise InputError(f"{label} {path}: not a regular file")
        return handle.read()


def load_key(path: str, label: str) -> str:
    """A public (or secret) key file, checked to be usable; its path."""
    from dokumi.signing import read_key

    if not Path(path).is_file():
        raise InputError(f"{label} {path}: no such key file")
    try:
        read_key(path, "public")
    except DokumiError as error:
        raise InputError(f"{label}: {error}") from None
    return str(path)


def load(kind: str, path: Any, label: str, stage_name: str, columns: Columns, batch_size: int,
         key: str | None = None) -> Any:
    """Load a side input of ``kind`` (``corpus``, ``state``, ``hashes`` or ``key``) for stage ``stage_name``."""
    if kind == "corpus":
        return load_corpus(path, label, columns, batch_size)
    if kind == "state":
        return load_state(str(path), label, stage_name)
    if kind == "hashes":
        return load_hashes(str(path), label, key)
    if kind == "key":
        return load_key(str(path), label)
    raise ValueError(f"side input kind {kind!r} is not one of {', '.join(SIDE_INPUT_KINDS)}")


def prepare(stages: Iterable[Stage], columns: Columns, batch_size: int, no_text: bool = False) -> None:
    """Load every stage's side inputs and call its ``setup``, once; before any corpus data is read."""
    for stage in stages:
        if stage.is_set_up:
            continue
        inputs: dict[str, Any] = {}
        # keys first: a "hashes" input is checked against the key input named <parameter>_key
        for parameter, kind in sorted(stage.side_inputs.items(), key=lambda item: item[1] != "key"):
            path = getattr(stage, parameter, None)
            if path is None:
                continue
            if kind == "key" and getattr(stage, parameter.removesuffix("_key"), None) is None:
                raise InputError(f"{flag_of(stage, parameter)} is set, but {flag_of(stage, parameter[:-4])} is not")
            inputs[parameter] = load(kind, path, flag_of(stage, parameter), stage.name, columns, batch_size,
                                     key=inputs.get(f"{parameter}_key"))
        stage.setup(StageContext(columns=columns, batch_size=batch_size, inputs=inputs, no_text=no_text))


__all__ = ["SavedState", "SideCorpus", "flag_of", "load", "prepare"]
