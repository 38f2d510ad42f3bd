"""Object storage through fsspec: URLs (``s3://``, ``gs://``, ``hf://``, ``memory://``, ...) as inputs and as --out.

Inputs are streamed, never downloaded first: Parquet through a pyarrow
random-access file over the fsspec filesystem (the footer, then the row groups
it reads), JSONL and CSV as a sequential byte stream. A folder (a prefix) or a
glob is listed through fsspec, with the local rules for what is left out.

An output URL is written in two steps (:class:`RemoteOut`): the scan goes to a
local folder exactly as a local scan does, then every file is uploaded under a
staging prefix of the destination, copied into place, and ``manifest.json``
written last: a reader treats a folder without ``manifest.json`` as
unfinished (docs/object-storage.md).

fsspec is imported only when a URL is given; the protocol's own package
(s3fs, gcsfs, huggingface_hub) comes with ``pip install 'dokumi[cloud]'``.
Credentials are the store's standard ones (for S3 botocore's chain, including
``AWS_ENDPOINT_URL`` for S3-compatible stores).
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
import uuid
from pathlib import Path
from typing import Any, BinaryIO

from dokumi.errors import InputError
from dokumi.inputfiles import NAMED_PER_KIND, is_data_file

# a protocol (or a chain such as simplecache::s3) followed by ://; a Windows drive (C:\) never matches
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*(::[A-Za-z][A-Za-z0-9+.\-]*)*://")
_LOCAL_PROTOCOLS = ("file", "local")
MANIFEST = "manifest.json"
STAGING_PREFIX = ".dokumi-staging-"
JOURNAL = "replacing.json"  # in a staging prefix: the files of the earlier scan that a publish replaces
READ_BLOCK = 8 << 20  # bytes a sequential read asks the store for at once


def is_url(path: Any) -> bool:
    """Whether ``path`` is a URL of a filesystem other than the local one (``file://`` is local)."""
    if not isinstance(path, str) or not _URL.match(path):
        return False
    return path.split("://", 1)[0].lower() not in _LOCAL_PROTOCOLS


def localize(path: Any) -> Any:
    """A ``file://`` URL as a plain local path (so every local guarantee applies); anything else unchanged."""
    if isinstance(path, str) and path.split("://", 1)[0].lower() in _LOCAL_PROTOCOLS and "://" in path:
        from fsspec.implementations.local import LocalFileSystem

        return LocalFileSystem._strip_protocol(path)
    return path


def shareable(path: str) -> bool:
    """Whether another process can open ``path``: not a ``memory://`` object, which lives in this process."""
    return not (is_url(path) and "memory" in path.split("://", 1)[0].lower().split("::"))


def _missing(path: str) -> InputError:
    hint = "" if shareable(path) else "; memory:// lives in one process, so another process cannot read it"
    return InputError(f"input {path} does not exist (any more){hint}")


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path within it; a missing protocol package is a one-line error."""
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as error:
        raise InputError(f"{url}: {error} (pip install 'dokumi[cloud]' brings s3fs, gcsfs and huggingface_hub)") \
            from None
    except ValueError as error:
        raise InputError(f"{url}: not a URL fsspec can open ({error})") from None


def _prefix(url: str) -> str:
    """The part of ``url`` before the filesystem path: ``s3://``, ``simplecache::s3://``."""
    return url[: url.index("://") + 3]


def _store_error(url: str, error: Exception) -> InputError:
    """A one-line error for a failed request: missing credentials, access denied, an unreachable endpoint."""
    return InputError(f"{url}: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'failed'}")


def find_files(specs: list[str]) -> tuple[list[str], list[str]]:
    """The data objects that URL ``specs`` name (objects, prefixes walked, globs), as URLs, and one-line notices
    of what a prefix held that is not read (other objects, hidden names), as :func:`dokumi.inputfiles.find_files`
    does for local folders."""
    files: list[str] = []
    notices: list[str] = []
    for spec in specs:
        fs, path = filesystem(spec)
        prefix = _prefix(spec)
        try:
            if fs.isdir(path):
                found, notice = _walk(fs, path, prefix, spec)
                notices += [notice] if notice else []
                files += found
            elif fs.isfile(path):
                files.append(spec)
            elif any(char in path for char in "*?["):
                found = sorted(p for p, info in fs.glob(path, detail=True).items() if info.get("type") == "file")
                if not found:
                    raise InputError(f"no object matches {spec!r}")
                files += [prefix + p for p in found]
            else:
                raise InputError(f"input {spec!r} does not exist")
        except InputError:
            raise
        except Exception as error:  # botocore/google-auth errors (credentials, endpoints) share no base class
            raise _store_error(spec, error) from None
    return list(dict.fromkeys(files)), notices


def _walk(fs: Any, root: str, prefix: str, spec: str) -> tuple[list[str], str | None]:
    found, other, hidden = [], [], []
    for path in sorted(fs.find(root)):
        relative = posixpath.relpath(path, root)
        if any(part.startswith(".") for part in relative.split("/")):
            hidden.append(relative)
        elif is_data_file(posixpath.basename(path)):
            found.append(prefix + path)
        else:
            other.append(relative)
    parts = [f"{label}: {_listed(names)}" for names, label in ((other, "not Parquet, JSONL or CSV"),
                                                                 (hidden, "hidden")) if names]
    notice = f"input {spec}: skipped {len(other) + len(hidden):,} entries; {'; '.join(parts)}" if parts else None
    if not found:
        raise InputError(f"prefix {spec!r} holds no Parquet, JSONL or CSV objects"
                         + (f" ({notice.split(': ', 1)[1]})" if notice else ""))
    return found, notice


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:NAMED_PER_KIND])
    return shown + (f", +{len(names) - NAMED_PER_KIND:,} more" if len(names) > NAMED_PER_KIND else "")


def size(path: str) -> int:
    """Bytes in the file or object at ``path`` (a local path or a URL)."""
    if not is_url(path):
        return os.path.getsize(path)
    fs, inner = filesystem(path)
    try:
        return int(fs.size(inner))
    except FileNotFoundError:
        raise _missing(path) from None


def sha256(path: str, chunk_size: int = READ_BLOCK) -> str:
    """Lowercase hex SHA-256 of the file or object at ``path``, read as one sequential stream."""
    digest = hashlib.sha256()
    with open_binary(path) as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def open_binary(path: str) -> BinaryIO:
    """The file or object at ``path`` opened for reading bytes; an object is read in ranged requests."""
    if not is_url(path):
        return open(path, "rb")
    fs, inner = filesystem(path)
    try:
        return fs.open(inner, "rb", block_size=READ_BLOCK, cache_type="readahead")
    except FileNotFoundError:
        raise _missing(path) from None


def open_random_access(path: str) -> Any:
    """A pyarrow random-access file for Parquet: a local path as it is, an object through
    ``pyarrow.fs.PyFileSystem(FSSpecHandler(fs))``, so pyarrow reads the footer and the row groups it needs."""
    if not is_url(path):
        return path
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    fs, inner = filesystem(path)
    return PyFileSystem(FSSpecHandler(fs)).open_input_file(inner)


def input_stream(path: str) -> Any:
    """A pyarrow input stream of the file's bytes, gunzipped for a ``.gz`` name (CSV reading)."""
    import pyarrow as pa

    if not is_url(path):
        return pa.input_stream(path, compression="detect")
    return pa.input_stream(open_binary(path), compression="gzip" if path.lower().endswith(".gz") else None)


def shard_names(files: list[str]) -> list[str]:
    """Shard names for files some of which are URLs: relative to the common folder of all of them, as local
    files are named, so that the same layout gives the same names (and derived ids) on a disk or in a bucket."""
    keys = ["/" + f.replace("://", "/", 1) if is_url(f) else os.path.abspath(f).replace(os.sep, "/") for f in files]
    if len(keys) == 1:
        return [posixpath.basename(keys[0])]
    root = posixpath.commonpath([posixpath.dirname(k) for k in keys])
    return [posixpath.relpath(k, root) for k in keys]


class RemoteOut:
    """An --out URL: checked before the scan, then given the finished local scan folder to publish."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.fs, self.root = filesystem(self.url)
        self.root = self.root.rstrip("/")

    def _objects(self) -> list[str]:
        """Paths under the destination, relative to it."""
        try:
            if self.fs.isfile(self.root):
                raise InputError(f"--out {self.url} is an object, not a folder (prefix)")
            if not self.fs.isdir(self.root):
                return []
            return sorted(posixpath.relpath(p, self.root) for p in self.fs.find(self.root))
        except InputError:
            raise
        except Exception as error:  # credentials, endpoint, permissions: one line
            raise _store_error(self.url, error) from None

    def _previous_scan(self, objects: list[str], current: str = "") -> set[str]:
        """The objects dokumi wrote here, or an error naming those it did not: --overwrite never deletes them.

        Dokumi's are the files the destination's manifest lists, the staging prefixes of publishes that died
        part way (``current``, this publish's, left out), and the files such a publish's journal names: the
        new manifest it was publishing and the earlier scan's files it was replacing.
        """
        staged = sorted(o for o in objects if o.startswith(STAGING_PREFIX) and not (current and o.startswith(current)))
        objects = [o for o in objects if not o.startswith(STAGING_PREFIX)]
        if not objects:
            return set(staged)
        ours = {MANIFEST, MANIFEST + ".sig"}
        manifests = [MANIFEST] if MANIFEST in objects else []
        manifests += [o for o in staged if o.endswith("/" + MANIFEST) and o.count("/") == 1]
        for journal in [o for o in staged if o.endswith("/" + JOURNAL) and o.count("/") == 1]:
            ours |= set(self._read_listing(journal, "files"))
        if not manifests and len(ours) == 2:
            raise InputError(f"--out {self.url} holds {len(objects):,} objects and no {MANIFEST}: not a dokumi "
                             f"scan, so --overwrite will not replace it (e.g. {_listed(objects)})")
        for manifest in manifests:
            ours |= {entry["path"] for key in ("outputs", "state", "files")
                     for entry in self._read_listing(manifest, key)}
        foreign = [o for o in objects if o not in ours]
        if foreign:
            raise InputError(f"--out {self.url} holds {len(foreign):,} objects its {MANIFEST} does not list; "
                             f"--overwrite never deletes what dokumi did not write: {_listed(foreign)}")
        return set(objects) | set(staged)

    def _read_listing(self, name: str, key: str) -> list[Any]:
        try:
            listing = json.loads(self.fs.cat_file(f"{self.root}/{name}"))[key]
            if not isinstance(listing, list):
                raise TypeError(key)
            return listing
        except (ValueError, KeyError, TypeError, AttributeError):
            raise InputError(f"--out {self.url}: {name} is not a dokumi manifest; --overwrite will not replace "
                             "the folder") from None

    def refuse_existing(self, overwrite: bool) -> None:
        """Refuse a non-empty destination without ``overwrite``, and with it one holding foreign objects."""
        objects = self._objects()
        if objects and not overwrite:
            raise InputError(f"--out {self.url} is not empty; pass --overwrite to replace it")
        if objects:
            self._previous_scan(objects)

    def publish(self, folder: Path) -> None:
        """Upload the finished scan in ``folder``: all files under a staging prefix, then each copied into place
        with ``manifest.json`` last, then the staging prefix and the earlier scan's leftover files removed.

        Until the copies start, an earlier scan here stays whole; during them the folder has no manifest.json
        (a reader treats it as unfinished); a failed upload leaves the earlier scan as it was.
        """
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
        if MANIFEST not in files:
            raise InputError(f"{folder}: no {MANIFEST} to publish")
        staging_name = f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
        staging = f"{self.root}/{staging_name}"
        replacing = False
        try:
            self.fs.put([str(folder / f) for f in files], [f"{staging}/{f}" for f in files])
            uploaded = {posixpath.relpath(p, staging): info["size"]
                        for p, info in self.fs.find(staging, detail=True).items()}
            short = [f for f in files if uploaded.get(f) != (folder / f).stat().st_size]
            if short:
                raise InputError(f"--out {self.url}: upload incomplete ({_listed(short)}); the earlier contents "
                                 "are unchanged")
            # checked again: objects written since the scan began are not replaced either
            previous = self._previous_scan(self._objects(), current=staging_name + "/")
            # the journal lets a later --overwrite recognise the earlier files if this publish dies part way
            self.fs.pipe_file(f"{staging}/{JOURNAL}", json.dumps({"files": sorted(previous)}).encode())
            replacing = True
            last = [MANIFEST + ".sig", MANIFEST]  # the signature before the manifest that it signs
            # from here the destination has no manifest until the new one is written
            for name in last:
                if name in previous:
                    self.fs.rm_file(f"{self.root}/{name}")
            for name in [f for f in files if f not in last] + [n for n in last if n in files]:
                self.fs.copy(f"{staging}/{name}", f"{self.root}/{name}")
            stale = [o for o in previous if o not in files and not o.startswith(STAGING_PREFIX)]
            if stale:
                self.fs.rm([f"{self.root}/{o}" for o in stale])
            for old in {o.split("/", 1)[0] for o in previous if o.startswith(STAGING_PREFIX)}:
                self.fs.rm(f"{self.root}/{old}", recursive=True)  # of publishes that died part way
        except BaseException as error:
            if not replacing:
                self._remove(staging)
            if isinstance(error, Exception) and not isinstance(error, InputError):
                state = (f"the folder is unfinished (no {MANIFEST}); pass --overwrite to write it again" if replacing
                         else "the earlier contents are unchanged")
                raise InputError(f"{_store_error(self.url, error)}; {state}") from None
            raise
        self._remove(staging)

    def _remove(self, prefix: str) -> None:
        try:
            if self.fs.exists(prefix):
                self.fs.rm(prefix, recursive=True)
        except Exception:  # the publish's own error says more; a leftover staging prefix is named by its name
            pass


def destination(out: Any) -> RemoteOut | None:
    """A :class:`RemoteOut` for an --out URL, else None (a local path, ``file://`` included)."""
    return RemoteOut(out) if is_url(out) else None


__all__ = ["RemoteOut", "destination", "filesystem", "find_files", "input_stream", "is_url", "localize",
           "open_binary", "open_random_access", "sha256", "shard_names", "shareable", "size"]
