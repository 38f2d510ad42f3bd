"""Occurrences of tokens kept for the driver's second look, as columns, bounded per token by content.

Round 2 of the trigger fit notes, per token, where the text after it turns
into other words (a switch of vocabulary or of script) so that the driver can
judge those places again without the token's own records. Up to ``limit``
occurrences are kept per token: those of lowest priority (a seeded hash of the
record's content), so that the kept ones are the same whatever the corpus's
partitioning and order, and merging partials (keep the ``limit`` lowest of the
union) gives what one partition would have kept. Columns rather than a tuple
per occurrence: with a tuple and a small array for each of its 565,000
occurrences, the second round's partial of every shared corpus pickled in 6.9 s
and loaded in 4.1 s; as columns, in 1.3 s and 1.0 s. A payload of varying
length per occurrence (the word pairs after a token that recur in the corpus)
is a :class:`Ragged` column: one flat array and a length per occurrence, not a
row padded to the longest.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dokumi.arrays import rank_in_runs

# rows held before the per-token bound is applied again while a partition is read
_COMPACT_ROWS = 1 << 16


@dataclass(frozen=True)
class Ragged:
    """A column of variable-length rows: row ``i`` is the next ``lengths[i]`` elements of ``values``."""

    lengths: np.ndarray  # any integer type (positions are computed in int64)
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def starts(self) -> np.ndarray:
        """Where each row begins in ``values``."""
        return np.cumsum(self.lengths, dtype=np.int64) - self.lengths

    @property
    def rows(self) -> np.ndarray:
        """The row of each element of ``values``."""
        return np.repeat(np.arange(len(self.lengths)), self.lengths)

    def take(self, rows: np.ndarray) -> Ragged:
        """The rows ``rows``, in that order."""
        lengths = self.lengths[rows]
        # each kept element: its row's start in values, plus its place within the row
        ends = np.cumsum(lengths, dtype=np.int64)
        within = np.arange(int(ends[-1]) if len(ends) else 0) - np.repeat(ends - lengths, lengths)
        return Ragged(lengths, self.values[np.repeat(self.starts[rows], lengths) + within])

    def slicer(self) -> Any:
        """A function of (start, end) giving rows ``start`` to ``end`` as views, for many slices of one column."""
        bounds = [0] + np.cumsum(self.lengths, dtype=np.int64).tolist()
        return lambda start, end: Ragged(self.lengths[start:end], self.values[bounds[start]:bounds[end]])

    @classmethod
    def concatenate(cls, parts: list[Ragged]) -> Ragged:
        return cls(np.concatenate([part.lengths for part in parts]), np.concatenate([part.values for part in parts]))


def _concatenate(columns: list) -> np.ndarray | Ragged:
    return Ragged.concatenate(columns) if isinstance(columns[0], Ragged) else np.concatenate(columns)


def _take(column: np.ndarray | Ragged, rows: np.ndarray) -> np.ndarray | Ragged:
    return column.take(rows) if isinstance(column, Ragged) else column[rows]


def _slicer(column: np.ndarray | Ragged) -> Any:
    return column.slicer() if isinstance(column, Ragged) else lambda start, end: column[start:end]


@dataclass
class Occurrences:
    """Per token, the ``limit`` occurrences of lowest (priority, record); payload columns beside them.

    ``add`` appends one batch's occurrences (the same payload columns every time, arrays or
    :class:`Ragged`); :meth:`groups` yields each token's kept rows, in token order.
    """

    limit: int
    chunks: list[dict[str, Any]] = field(default_factory=list)
    rows: int = 0
    _bounded_rows: int = 0

    def add(self, token: np.ndarray, record: np.ndarray, priority: np.ndarray, **payload: np.ndarray | Ragged) -> None:
        """One batch's occurrences: the token, the record's content key, its priority, and payload columns."""
        if not len(token):
            return
        self.chunks.append({"token": np.asarray(token, dtype=np.uint64), "record": np.asarray(record, dtype=np.uint64),
                            "priority": np.asarray(priority, dtype=np.uint64), **payload})
        self.rows += len(token)
        if self.rows > max(_COMPACT_ROWS, 2 * self._bounded_rows):  # keeps a partition's memory bounded
            self._bound()

    def _bound(self) -> None:
        """One chunk, sorted by (token, priority, record), at most ``limit`` rows per token."""
        if len(self.chunks) == 1 and self.rows == self._bounded_rows:
            return
        columns: dict[str, Any] = {name: _concatenate([chunk[name] for chunk in self.chunks])
                                   for name in self.chunks[0]}
        token = columns["token"]
        order = np.lexsort((columns["record"], columns["priority"], token))
        kept = order[rank_in_runs(token[order]) < self.limit]
        self.chunks = [{name: _take(column, kept) for name, column in columns.items()}]
        self.rows = self._bounded_rows = len(kept)

    @classmethod
    def merged(cls, parts: list[Occurrences]) -> Occurrences:
        """The occurrences of every part, bounded per token as one partition's would be."""
        out = cls(max((part.limit for part in parts), default=0))
        for part in parts:
            out.chunks += part.chunks
            out.rows += part.rows
        if out.chunks:
            out._bound()
        return out

    def groups(self) -> Iterator[tuple[int, dict[str, Any]]]:
        """Each token (ascending) with its kept rows' columns."""
        if not self.chunks:
            return
        self._bound()
        columns = self.chunks[0]
        token = columns["token"]
        bounds = np.flatnonzero(np.concatenate(([True], token[1:] != token[:-1], [True])))
        slicers = {name: _slicer(column) for name, column in columns.items()}
        for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            yield int(token[start]), {name: cut(start, end) for name, cut in slicers.items()}

    def distinct_records(self) -> dict[int, int]:
        """How many distinct records each token's kept occurrences are in (copies of a record count once)."""
        if not self.chunks:
            return {}
        self._bound()
        token, record = self.chunks[0]["token"], self.chunks[0]["record"]
        # rows are sorted by token, then priority: a record's rows (one priority) stand together
        new = np.concatenate(([True], (token[1:] != token[:-1]) | (record[1:] != record[:-1])))
        tokens, counts = np.unique(token[new], return_counts=True)
        return dict(zip(tokens.tolist(), counts.tolist()))

    def __len__(self) -> int:
        return self.rows


__all__ = ["Occurrences", "Ragged"]
