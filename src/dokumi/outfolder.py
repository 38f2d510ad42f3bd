"""The ``--out`` folder of a scan: one scan at a time, nothing deleted that dokumi did not write, and a
swap into place that a crash cannot leave half done.

Next to ``--out`` (say ``runs/scan``) dokumi keeps, while a scan runs:

- ``runs/.scan.dokumi-lock``: the lock a scan holds from its first check to its last rename
  (``flock``; the kernel releases it when the process dies, however it dies);
- ``runs/.scan.dokumi-partial``: the staging folder the outputs are written into, marked as
  dokumi's by a ``.dokumi-staging`` file; an interrupted scan leaves it for ``--resume``;
- ``runs/.scan.dokumi-swap``: written once the staging folder is complete, removed once it has
  replaced ``--out``: a crash in between is finished by the next scan into the same ``--out``;
- ``runs/.scan.dokumi-old``: the earlier scan, between the two renames of that swap.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from dokumi.errors import DokumiError, InputError, OutputError

MARKER = ".dokumi-staging"
# files a scan folder holds besides the outputs and state its manifest lists
_SCAN_FILES = ("manifest.json", "report.html")


class OutFolder:
    """The ``--out`` folder of one scan; a context manager that holds its lock.

    On entry it takes the lock (a second scan into the same ``--out`` is refused at
    once) and finishes a swap that a crashed scan left half done. :meth:`check`
    refuses an ``--out`` that cannot be replaced safely; :meth:`staging` gives the
    folder to write into; :meth:`seal` and :meth:`publish` swap it into place.
    """

    def __init__(self, out: str | os.PathLike, *, overwrite: bool = False, resume: bool = False,
                 private: tuple[str, ...] = ()) -> None:
        self.out = Path(out)
        self.overwrite = overwrite
        self.resume = resume
        self.private = private  # entries of the staging folder that are removed before it is published
        self.notes: list[str] = []
        self._lock: int | None = None

    def sibling(self, kind: str) -> Path:
        """The hidden sibling of ``--out`` for ``kind`` (``lock``, ``partial``, ``swap``, ``old``)."""
        return self.out.parent / f".{self.out.name}.dokumi-{kind}"

    def __enter__(self) -> OutFolder:
        if not self.out.name or self.out.name in (".", ".."):
            self.out = Path(os.path.abspath(self.out))
        if self.out.exists() and not self.out.is_dir():
            raise InputError(f"--out {self.out} exists and is not a directory")
        refuse_working_directory(self.out)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _lock(self.sibling("lock"), self.out)
        try:
            self._finish_swap()
            if self.sibling("old").exists() or self.sibling("old").is_symlink():  # no swap of ours left it
                raise InputError(f"{self.sibling('old')} is in the way of --out {self.out} and was not left by "
                                 "a dokumi scan; move it away")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._lock is not None:
            _unlock(self._lock, self.sibling("lock"))
            self._lock = None

    def check(self) -> None:
        """Refuse, before any data is read, an ``--out`` this scan may not replace.

        A non-empty folder needs ``overwrite``, and then must be a dokumi scan: a manifest
        that lists every file in it. Nothing is deleted when the check fails.
        """
        out = self.out
        if not out.is_dir() or not any(out.iterdir()):
            return
        if not self.overwrite:
            raise InputError(f"--out {out} is not empty; pass --overwrite to replace it")
        foreign = files_not_from_dokumi(out)
        if foreign:
            raise InputError(f"--overwrite refused: {out} is not a dokumi scan folder ({foreign}); "
                             "nothing was deleted, choose another --out or move its files away")

    def staging(self) -> tuple[Path, bool]:
        """The folder to write the scan into, and whether it holds an interrupted scan's work.

        With ``resume`` an interrupted scan's staging folder is kept as it is (the checkpoints in
        it say what can be reused); otherwise it is removed first.
        """
        staging = self.sibling("partial")
        if staging.exists() or staging.is_symlink():
            if not is_staging(staging):
                raise InputError(f"{staging} is in the way of --out {self.out} and was not written by dokumi; "
                                 "move it away")
            if self.resume:
                return staging, True
            shutil.rmtree(staging)
            self.notes.append(f"removed the partial output of an interrupted scan ({staging.name}); "
                              "--resume would have continued it")
        staging.mkdir(mode=0o777)  # as any folder the user makes: the outputs are to be read by others
        try:
            (staging / MARKER).write_text(json.dumps({"out": str(self.out.resolve())}) + "\n", encoding="utf-8")
        except BaseException:  # interrupted before the folder could be known as dokumi's
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return staging, False

    def discard(self, staging: Path) -> None:
        """Remove a staging folder whose scan failed."""
        if is_staging(staging):
            shutil.rmtree(staging, ignore_errors=True)

    def seal(self, staging: Path) -> None:
        """Record (in a synced journal file) that ``staging`` is complete: from here on, a crash is
        finished by the next scan into this ``--out`` (:meth:`_finish_swap`), which publishes it."""
        journal = self.sibling("swap")
        try:
            _write_synced(journal, json.dumps({"staging": staging.name}) + "\n")
        except BaseException:
            journal.unlink(missing_ok=True)
            raise

    def publish(self, staging: Path) -> None:
        """Swap the sealed ``staging`` folder into place; its ``private`` entries are removed first."""
        try:
            self._swap(staging)
        except OSError as error:
            raise OutputError(f"could not move the finished scan into {self.out} ({error}); the next "
                              "dokumi scan into this --out finishes the move") from None

    def _swap(self, staging: Path) -> None:
        for name in (*self.private, MARKER):
            path = staging / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        old = self.sibling("old")
        if self.out.exists():
            if old.exists():
                shutil.rmtree(old)
            os.replace(self.out, old)
        os.replace(staging, self.out)
        _sync_folder(self.out.parent)
        shutil.rmtree(old, ignore_errors=True)
        self.sibling("swap").unlink()

    def _finish_swap(self) -> None:
        """Finish a swap that a crash interrupted: the complete staging folder goes into place."""
        journal = self.sibling("swap")
        if not journal.exists():
            return
        staging = self.sibling("partial")
        if staging.is_dir() and not staging.is_symlink():
            self._swap(staging)
            self.notes.append(f"finished publishing {self.out}: the scan that wrote it stopped between renames")
            return
        old = self.sibling("old")
        if not self.out.exists() and old.is_dir():  # the new scan is gone: put the earlier one back
            os.replace(old, self.out)
            self.notes.append(f"restored the earlier scan in {self.out}: a scan stopped between renames")
        shutil.rmtree(old, ignore_errors=True)
        journal.unlink()


def is_staging(path: Path) -> bool:
    """Whether ``path`` is a staging folder dokumi made (a real folder holding its marker file)."""
    return path.is_dir() and not path.is_symlink() and (path / MARKER).is_file()


def refuse_working_directory(out: Path) -> None:
    """A scan replaces ``--out`` as a whole: never the folder the user stands in, or one above it."""
    here = Path.cwd().resolve()
    target = out.resolve()
    if here == target or here.is_relative_to(target):
        raise InputError(f"--out {out} is the current directory or holds it; a scan replaces its --out folder "
                         "as a whole: choose a new folder, e.g. --out scan")


def files_not_from_dokumi(folder: Path) -> str | None:
    """Why ``folder`` is not wholly a dokumi scan (the first file its manifest does not list), or None."""
    from dokumi.manifest import read_manifest
    from dokumi.signing import signature_path_for

    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        return "it has no manifest.json"
    try:
        manifest = read_manifest(manifest_path)
        listed = {entry["path"] for key in ("outputs", "state", "files") for entry in manifest.get(key) or []}
    except (DokumiError, KeyError, TypeError, AttributeError) as error:
        return f"its manifest.json is not a dokumi manifest: {error}"
    listed |= {*_SCAN_FILES, signature_path_for(manifest_path).name}
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not path.is_dir():
            name = path.relative_to(folder).as_posix()
            if name not in listed:
                return f"its manifest does not list {name}"
    return None


def _lock(path: Path, out: Path) -> int:
    """Take the lock at ``path`` without waiting; a held lock is refused naming the process holding it."""
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            _try_lock(handle)
        except OSError:
            holder = os.read(handle, 64).decode("ascii", "replace").strip() or "unknown"
            os.close(handle)
            raise InputError(f"--out {out} is being written by another dokumi scan (process {holder}); "
                             "wait for it to finish or choose another --out") from None
        # a scan that just finished removed the file it locked: hold the lock on the file that is there now
        try:
            same = os.path.samestat(os.fstat(handle), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(handle, 0)
            os.write(handle, f"{os.getpid()}\n".encode())
            return handle
        os.close(handle)


def _unlock(handle: int, path: Path) -> None:
    try:
        if os.name == "posix":  # removed while held, so no other scan can lock a file about to vanish
            path.unlink(missing_ok=True)
    finally:
        os.close(handle)


def _try_lock(handle: int) -> None:
    if sys.platform == "win32":
        import msvcrt

        msvcrt.locking(handle, msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make renames in ``folder`` durable (POSIX; elsewhere a no-op)."""
    if os.name != "posix":
        return
    handle = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


__all__ = ["MARKER", "OutFolder", "files_not_from_dokumi", "is_staging", "refuse_working_directory"]
