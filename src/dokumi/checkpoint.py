"""Checkpoints of a scan in its staging folder, so that ``dokumi scan --resume`` goes on where an
interrupted attempt stopped.

Every scan of files keeps, in ``<staging>/.dokumi-resume/``:

- ``key.json``: what the work depends on: the dokumi version, a SHA-256 of the recipe (policy file,
  every stage's parameters and rule, record rules, columns, privacy, batch size, and the size and
  modification time of every side-input file) and a SHA-256 of the inputs (each file's name, path,
  size and modification time);
- ``fitted.pkl``: the stages after pass 1 (their fitted state, as scoring processes receive it), with
  ``fitted.json`` holding its SHA-256 and that of each file the stages saved in ``state/``;
- ``shards/<index>.json``: for each shard whose pass 2 finished, what scoring it returned, and the
  size and SHA-256 of each output file it wrote (``<index>.ids.npy``: its record-id hashes).

A resumed scan reuses the fitted state and every shard whose record and output files still match
their hashes; any other shard's partial files are removed and it is scored again. The outputs are
the same, byte for byte, as an uninterrupted scan's (the manifest's and report's timestamps aside).

The fitted state is a pickle, and unpickling runs code: it is loaded only from files that this user
owns and nobody else may write, in a folder alike (so another account cannot plant one), read
without following links, and only when its SHA-256 matches the record written after it.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import pickle
import shutil
import stat
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dokumi.errors import InputError
from dokumi.outputs import file_sha256, output_stem

if TYPE_CHECKING:
    from dokumi.pipeline import Pipeline
    from dokumi.policy import Policy
    from dokumi.scoring import ShardResult
    from dokumi.sources import Shard
    from dokumi.stage import Stage

CHECKPOINT_DIR = ".dokumi-resume"
# folders of a staging folder that hold no shard's outputs
NOT_SHARD_OUTPUTS = (CHECKPOINT_DIR, "state", "spill")
# of those, the ones a resumed scan writes again from the beginning (state/ is kept with the fitted state)
REWRITTEN = ("spill",)


def scan_key(policy: Policy, pipeline: Pipeline, shards: list[Shard], options: dict[str, Any]) -> dict[str, str]:
    """What a scan's work depends on, as hashes: ``version``, ``recipe`` (with the scoring ``options``,
    such as the output format) and ``inputs``."""
    from dokumi import __version__

    recipe = {
        "policy": [policy.name, policy.sha256],
        "stages": [[stage.name, f"{type(stage).__module__}.{type(stage).__qualname__}", stage.get_params(),
                    vars(pipeline.rule(stage.name))] for stage in pipeline.stages],
        "records": vars(pipeline.records),
        "columns": vars(pipeline.columns),
        "no_text": policy.no_text,
        "batch_size": pipeline.batch_size,
        "options": options,
        "side_inputs": [[stage.name, name, _files_of(getattr(stage, name))]
                        for stage in pipeline.stages for name in stage.side_inputs
                        if getattr(stage, name, None) is not None],
    }
    inputs = [[shard.name, *_file_identity(shard.path)] for shard in shards]
    return {"version": __version__, "recipe": _digest(recipe), "inputs": _digest(inputs)}


def _files_of(spec: Any) -> list[list[Any]]:
    """Every file under a side-input path (a file, folder or glob), with its size and modification time."""
    spec = os.fspath(spec)
    if os.path.isdir(spec):
        files = sorted(os.path.join(root, name) for root, _, names in os.walk(spec) for name in names)
    elif os.path.exists(spec):
        files = [spec]
    else:
        files = sorted(glob.glob(spec, recursive=True))
    return [[os.path.relpath(f, spec) if os.path.isdir(spec) else f, *_file_identity(f)] for f in files]


def _file_identity(path: str | None) -> list[Any]:
    if path is None:
        raise ValueError("checkpoints are kept only for inputs read from files")
    info = os.stat(path)
    return [os.path.abspath(path), info.st_size, info.st_mtime_ns]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode("utf-8")).hexdigest()


class Checkpoint:
    """The checkpoints of one scan in ``staging``; :meth:`open` starts or resumes them."""

    def __init__(self, staging: Path, key: dict[str, str]) -> None:
        self.staging = staging
        self.folder = staging / CHECKPOINT_DIR
        self.key = key
        self.notes: list[str] = []
        # the SHA-256 of each file in state/ (by its path in the staging folder), once saved or checked
        self.state_hashes: dict[str, str] = {}

    @classmethod
    def open(cls, staging: Path, key: dict[str, str], resume: bool) -> Checkpoint:
        """The checkpoints in ``staging``: an earlier attempt's when ``resume`` (refused if its key
        differs from ``key``), else new ones."""
        checkpoint = cls(staging, key)
        if resume:
            earlier = checkpoint._earlier_key()
            if earlier is not None:
                changed = [name for name in ("version", "recipe", "inputs") if earlier.get(name) != key[name]]
                if changed:
                    what = {"version": f"dokumi version ({earlier.get('version')} then, {key['version']} now)",
                            "recipe": "policy, its parameters or side inputs", "inputs": "input files"}
                    raise InputError(f"--resume: the interrupted scan in {staging} used other "
                                     f"{', '.join(what[name] for name in changed)}; run without --resume "
                                     "to start again")
                checkpoint._tidy()
                return checkpoint
            checkpoint.notes.append("--resume: the interrupted scan left no checkpoint; started from the beginning")
            checkpoint._clear()
        _private_folder(checkpoint.folder)
        _private_folder(checkpoint.folder / "shards")
        _write_private(checkpoint.folder / "key.json", _json_bytes(key))
        return checkpoint

    def _earlier_key(self) -> dict[str, Any] | None:
        data = _read_private(self.folder / "key.json")
        try:
            key = json.loads(data) if data is not None else None
        except ValueError:
            return None
        return key if isinstance(key, dict) else None

    def _clear(self) -> None:
        """Remove whatever an earlier attempt left, but the marker that makes the folder dokumi's."""
        from dokumi.outfolder import MARKER

        for path in self.staging.iterdir():
            if path.name == MARKER:
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()

    def _tidy(self) -> None:
        """Remove what a resumed scan writes again from the beginning: all but the shards' outputs and state."""
        from dokumi.outfolder import MARKER

        for path in self.staging.iterdir():
            if path.name in (MARKER, CHECKPOINT_DIR):
                continue
            if path.is_dir() and not path.is_symlink():
                if path.name in REWRITTEN or path.name.startswith("."):
                    shutil.rmtree(path)
            else:
                path.unlink()

    # pass 1

    def save_fitted(self, stages: list[Stage], warnings: list[str]) -> None:
        """Keep the fitted stages (as scoring processes receive them), the fit's warnings and the hashes
        of the state the stages saved; written before the record that vouches for them."""
        data = pickle.dumps({"stages": stages, "warnings": warnings}, protocol=pickle.HIGHEST_PROTOCOL)
        _write_private(self.folder / "fitted.pkl", data)
        state = self._state_files()
        record = {"key": self.key, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "state": state}
        self._vouch_for(state)
        _write_private(self.folder / "fitted.json", _json_bytes(record))

    def _vouch_for(self, state: list[list[Any]]) -> None:
        """Keep the hashes of the state files a record vouches for (saved, or checked on resume)."""
        self.state_hashes = {path: sha256 for path, _, sha256 in state}

    def _state_files(self) -> list[list[Any]]:
        state = self.staging / "state"
        return [[path.relative_to(self.staging).as_posix(), path.stat().st_size, file_sha256(path)]
                for path in sorted(state.rglob("*")) if path.is_file()] if state.is_dir() else []

    def load_fitted(self) -> tuple[list[Stage], list[str]] | None:
        """The fitted stages and warnings an earlier attempt kept, with the state they saved in ``state/``;
        None (and no ``state/``) where there are none to trust."""
        fitted = self._fitted()
        if fitted is None:
            shutil.rmtree(self.staging / "state", ignore_errors=True)
        return fitted

    def _fitted(self) -> tuple[list[Stage], list[str]] | None:
        record = _read_private(self.folder / "fitted.json")
        if record is None:
            self.notes.append("--resume: the interrupted scan had not finished pass 1; fitted again")
            return None
        if not hasattr(os, "getuid"):  # no owner to check the pickle against (Windows): fit again
            return None
        try:
            expected = json.loads(record)
        except ValueError:
            return None
        data = _read_private(self.folder / "fitted.pkl")
        state = self._state_files()
        if data is None or expected.get("key") != self.key or expected.get("state") != state \
                or hashlib.sha256(data).hexdigest() != expected.get("sha256"):
            self.notes.append("--resume: the fitted state kept did not match its record; fitted again")
            return None
        self._vouch_for(state)
        fitted = pickle.loads(data)  # noqa: S301 - our own file, checked above (see the module's docstring)
        self.notes.append("--resume: reused the fitted state of pass 1")
        return fitted["stages"], fitted["warnings"]

    # pass 2

    def save_shard(self, index: int, result: ShardResult) -> None:
        """Keep what scoring shard ``index`` returned, with the size and SHA-256 of each file it wrote."""
        values: dict[str, Any] = {}
        for item in dataclasses.fields(result):
            value = getattr(result, item.name)
            if item.name == "outputs":
                value = [_describe_output(output, self.staging) for output in value]
            elif item.name == "id_hashes":
                if value is not None:
                    path = self.folder / "shards" / f"{index:05d}.ids.npy"
                    _write_private(path, _npy_bytes(value))
                    value = {"file": path.name, "sha256": file_sha256(path)}
            elif item.name == "digest":
                value = None  # the report's digest: a resumed scan's report reads scores/ instead
            elif isinstance(value, Counter):
                value = {"counter": dict(value)}
            elif isinstance(value, Path):
                value = str(value)
            values[item.name] = value
        try:
            data = _json_bytes({"key": self.key, "index": index, "result": values})
        except (TypeError, ValueError):  # a field JSON cannot hold: a resumed scan scores this shard again
            return
        _write_private(self.folder / "shards" / f"{index:05d}.json", data)

    def finished_shards(self, shards: list[Shard]) -> dict[int, ShardResult]:
        """The shards an earlier attempt finished and whose outputs still match; every other
        shard's partial outputs are removed, so it can be scored again from nothing."""
        finished = {}
        for index, shard in enumerate(shards):
            result = self._finished(index, shard)
            if result is None:
                self.discard_outputs(index, shard)
            else:
                finished[index] = result
        self.notes.append(f"--resume: reused the scores of {len(finished)} of {len(shards)} shard(s)")
        return finished

    def _finished(self, index: int, shard: Shard) -> ShardResult | None:
        from dokumi.scoring import ShardResult

        data = _read_private(self.folder / "shards" / f"{index:05d}.json")
        if data is None:
            return None
        try:
            record = json.loads(data)
            if record["key"] != self.key or record["index"] != index or record["result"]["shard"] != shard.name:
                return None
            values = dict(record["result"])
            outputs = []
            for output in values["outputs"]:
                path = self.staging / output["path"]
                if not _inside(path, self.staging) or not path.is_file() or path.stat().st_size != output["bytes"] \
                        or file_sha256(path) != output["sha256"]:
                    return None
                outputs.append({**output, "path": path})
            values["outputs"] = outputs
            if values["id_hashes"] is not None:
                path = self.folder / "shards" / values["id_hashes"]["file"]
                if not _inside(path, self.folder) or file_sha256(path) != values["id_hashes"]["sha256"]:
                    return None
                values["id_hashes"] = np.load(path, allow_pickle=False)
            for name, value in values.items():
                if isinstance(value, dict) and set(value) == {"counter"}:
                    values[name] = Counter(value["counter"])
            values["path"] = shard.path
            return ShardResult(**values)
        except (KeyError, TypeError, ValueError, OSError):
            return None

    def discard_outputs(self, index: int, shard: Shard) -> None:
        """Forget shard ``index`` and remove every file a (partial) scoring of it may have written."""
        (self.folder / "shards" / f"{index:05d}.json").unlink(missing_ok=True)
        discard_shard_outputs(self.staging, index, shard.name)


def discard_shard_outputs(staging: Path, index: int, shard_name: str) -> None:
    """Remove every file that scoring shard ``index`` (named ``shard_name``) wrote into ``staging``, so that
    it can be scored again from nothing: no record twice, no stale part file."""
    prefix = f"{output_stem(index, shard_name)}."
    for folder in staging.iterdir():
        if folder.is_dir() and not folder.is_symlink() and folder.name not in NOT_SHARD_OUTPUTS \
                and not folder.name.startswith("."):
            for file in folder.iterdir():
                if file.name.startswith(prefix):
                    file.unlink()


def hash_outputs(result: ShardResult) -> ShardResult:
    """``result`` with the SHA-256 of each output file, computed where the shard was scored (in parallel)."""
    for output in result.outputs:
        output.setdefault("sha256", file_sha256(output["path"]))
    return result


def _describe_output(output: dict[str, Any], staging: Path) -> dict[str, Any]:
    path = Path(output["path"])
    return {**output, "path": path.relative_to(staging).as_posix(), "bytes": path.stat().st_size,
            "sha256": output.get("sha256") or file_sha256(path)}


def _inside(path: Path, folder: Path) -> bool:
    return os.path.abspath(path).startswith(os.path.abspath(folder) + os.sep)


def _npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


def _json_bytes(value: Any) -> bytes:
    return (json.dumps(value, sort_keys=True) + "\n").encode("utf-8")


def _private_folder(path: Path) -> None:
    path.mkdir(mode=0o700, exist_ok=True)


def _write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all (a temporary file renamed), readable by this user only."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(handle, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def _read_private(path: Path) -> bytes | None:
    """The bytes of ``path`` if it and its folders up to the checkpoint folder are this user's own and
    writable by nobody else; None otherwise (missing, a link, another owner, or group/world-writable)."""
    folder = path.parent
    folders = [folder] if folder.name == CHECKPOINT_DIR else [folder, folder.parent]
    try:
        for item in folders:
            if not _private(os.lstat(item)) or not stat.S_ISDIR(os.lstat(item).st_mode):
                return None
        handle = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    with os.fdopen(handle, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode) or not _private(info):
            return None
        return file.read()


def _private(info: os.stat_result) -> bool:
    owner = getattr(os, "getuid", None)
    if owner is not None and info.st_uid != owner():
        return False
    return not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


__all__ = ["CHECKPOINT_DIR", "Checkpoint", "discard_shard_outputs", "hash_outputs", "scan_key"]
