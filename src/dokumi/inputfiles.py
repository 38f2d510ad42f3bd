"""Which files the inputs name: files, folders (walked) and globs, each file once, nothing skipped silently.

A folder is walked following links to folders (a folder reached twice, as a
link loop does, is read once). Every file is counted once by its identity on
disk (device and inode), so a link to a file, or a hard link, beside the file
itself does not scan its records twice. What is left out is named in one
notice per input: files that are neither Parquet nor JSONL, hidden entries
(names starting with a dot, such as ``.cache/``), and links to nothing.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field

from dokumi.errors import InputError

PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz")
CSV_SUFFIXES = (".csv", ".tsv", ".csv.gz", ".tsv.gz")
# names a notice lists for each kind of skipped entry; the rest are counted
NAMED_PER_KIND = 5


@dataclass
class Skipped:
    """Entries of one input that were not read, by kind, as paths relative to that input."""

    other: list[str] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)
    dangling: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def notice(self, spec: str) -> str | None:
        """One line naming what ``spec`` (a folder or glob) left out and why, or None when nothing was."""
        kinds = [(self.other, "not Parquet, JSONL or CSV"), (self.hidden, "hidden"), (self.dangling, "link to nothing"),
                 (self.unreadable, "cannot be listed")]
        parts = [f"{label}: {_listed(names)}" for names, label in kinds if names]
        count = sum(len(names) for names, _ in kinds)
        return f"input {spec}: skipped {count:,} entries; {'; '.join(parts)}" if parts else None


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:NAMED_PER_KIND])
    return shown + (f", +{len(names) - NAMED_PER_KIND:,} more" if len(names) > NAMED_PER_KIND else "")


def is_data_file(name: str) -> bool:
    """Whether a file name is one dokumi reads (Parquet, JSONL or CSV, not a dot-file)."""
    return name.lower().endswith(PARQUET_SUFFIXES + JSONL_SUFFIXES + CSV_SUFFIXES) and not name.startswith(".")


def find_files(specs: list[str | os.PathLike]) -> tuple[list[str], list[str]]:
    """The data files that ``specs`` name, in order and each once, and one-line notices of what was left out."""
    files: list[str] = []
    notices: list[str] = []
    for spec in (str(os.fspath(s)) for s in specs):
        if os.path.isdir(spec):
            skipped = Skipped()
            found = walk(spec, skipped)
            notice = skipped.notice(spec)
            if not found:
                raise InputError(f"directory {spec!r} holds no Parquet, JSONL or CSV files"
                                 + (f" ({notice.split(': ', 1)[1]})" if notice else ""))
            notices += [notice] if notice else []
            files.extend(found)
        elif os.path.isfile(spec):
            files.append(spec)
        elif os.path.islink(spec):
            raise InputError(f"input {spec!r} is a link to {os.readlink(spec)!r}, which does not exist")
        elif glob.has_magic(spec):
            matched = sorted(glob.glob(spec, recursive=True))
            found = [path for path in matched if os.path.isfile(path)]
            if not found:
                raise InputError(f"no file matches {spec!r}")
            dangling = [path for path in matched if os.path.islink(path) and not os.path.exists(path)]
            if dangling:
                notices.append(f"input {spec}: skipped {len(dangling):,} entries; link to nothing: {_listed(dangling)}")
            files.extend(found)
        else:
            raise InputError(f"input {spec!r} does not exist")
    unique, same = once_each(files)
    if same:
        pairs = [f"{copy} = {kept}" for copy, kept in same]
        notices.append(f"{len(same):,} input path(s) name a file already read (a link, or the file named twice), "
                       f"read once: {_listed(pairs)}")
    return unique, notices


def walk(folder: str, skipped: Skipped) -> list[str]:
    """Data files under ``folder`` in sorted path order, following links to folders but never a folder twice."""
    found: list[str] = []
    visited: set[tuple[int, int]] = set()
    pending = [folder]
    while pending:
        directory = pending.pop()
        identity = _identity(directory)
        if identity in visited:
            continue
        visited.add(identity)
        try:
            entries = list(os.scandir(directory))
        except OSError as error:
            skipped.unreadable.append(f"{os.path.relpath(directory, folder)}/ ({error.strerror})")
            continue
        for entry in entries:
            relative = os.path.relpath(entry.path, folder).replace(os.sep, "/")
            if entry.name.startswith("."):
                skipped.hidden.append(relative + ("/" if entry.is_dir() else ""))
            elif entry.is_symlink() and not os.path.exists(entry.path):
                skipped.dangling.append(relative)
            elif entry.is_dir():
                pending.append(entry.path)
            elif entry.is_file() and is_data_file(entry.name):
                found.append(entry.path)
            else:
                skipped.other.append(relative)
    for names in (skipped.other, skipped.hidden, skipped.dangling, skipped.unreadable):
        names.sort()
    return sorted(found)


def once_each(files: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """``files`` with each file on disk once (the path that is not a link where there is a choice), and the
    ``(left out, kept)`` pairs."""
    files = list(dict.fromkeys(os.path.normpath(f) for f in files))
    chosen: dict[tuple[int, int], str] = {}
    for path in files:
        identity = _identity(path)
        if identity not in chosen or (os.path.islink(chosen[identity]) and not os.path.islink(path)):
            chosen[identity] = path
    kept = set(chosen.values())
    same = [(path, chosen[_identity(path)]) for path in files if path not in kept]
    return [path for path in files if path in kept], same


def _identity(path: str) -> tuple[int, int]:
    status = os.stat(path)
    return status.st_dev, status.st_ino


__all__ = ["CSV_SUFFIXES", "JSONL_SUFFIXES", "PARQUET_SUFFIXES", "find_files", "is_data_file", "once_each", "walk"]
