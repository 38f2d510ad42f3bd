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
is a :class:`Ragged` column: rows pointing into one flat array, not rows
padded to the longest. The frequent sentences' samples of their records' words
are kept the same way, a record's copies once (``distinct``), and so are the
seams found by record (no bound: :data:`UNBOUNDED`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dokumi.arrays import members, rank_in_runs

# rows held before the per-token bound is applied again while a partition is read
_COMPACT_ROWS = 1 << 16
# a limit no token reaches: every distinct occurrence is kept
UNBOUNDED = 1 << 62


@dataclass(frozen=True)
class Ragged:
    """A column of variable-length rows: row ``i`` is ``values[starts[i]: starts[i] + lengths[i]]``.

    Rows point into ``values`` rather than standing in its order, so that taking rows (sorting and bounding
    occurrences) moves two numbers per row, not the values: gathering the 7 million values of two merged
    second-round partials of every shared corpus took 0.8 s. :meth:`compact` drops the values no row
    points to, keeping their order, with masks and running sums only.
    """

    starts: np.ndarray  # int64
    lengths: np.ndarray  # any integer type (positions are computed in int64)
    values: np.ndarray

    @classmethod
    def of(cls, lengths: np.ndarray, values: np.ndarray) -> Ragged:
        """Rows laid out one after another in ``values``, ``lengths[i]`` elements each."""
        return cls(np.cumsum(lengths, dtype=np.int64) - lengths, lengths, values)

    def __len__(self) -> int:
        return len(self.lengths)

    def flat(self) -> tuple[np.ndarray, np.ndarray]:
        """The elements row by row: each one's row, and the values."""
        rows = np.repeat(np.arange(len(self.lengths)), self.lengths)
        ends = np.cumsum(self.lengths, dtype=np.int64)
        within = np.arange(len(rows)) - np.repeat(ends - self.lengths, self.lengths)
        return rows, self.values[np.repeat(self.starts, self.lengths) + within]

    def take(self, rows: np.ndarray) -> Ragged:
        """The rows ``rows``, in that order (pointing into the same values)."""
        return Ragged(self.starts[rows], self.lengths[rows], self.values)

    def compact(self) -> Ragged:
        """The same rows over only the values they point to, in their order (rows must not share values)."""
        full = self.lengths > 0
        starts, ends = self.starts[full], self.starts[full] + self.lengths[full]
        if int(self.lengths.sum(dtype=np.int64)) == len(self.values):
            return self
        # a value is kept where more rows have opened than closed before it (0 or 1: rows do not overlap)
        opened = np.zeros(len(self.values) + 1, dtype=np.int8)
        closed = np.zeros(len(self.values) + 1, dtype=np.int8)
        opened[starts], closed[ends] = 1, 1
        kept = np.cumsum(opened[:-1] - closed[:-1], dtype=np.int8) > 0
        # each row's new start: the lengths of the rows whose values lie before its own
        order = np.argsort(self.starts, kind="stable")
        lengths = self.lengths[order].astype(np.int64)
        moved = np.empty(len(order), dtype=np.int64)
        moved[order] = np.cumsum(lengths) - lengths
        return Ragged(moved, self.lengths, self.values[kept])

    def slicer(self) -> Any:
        """A function of (start, end) giving rows ``start`` to ``end``, for many slices of one column."""
        return lambda start, end: Ragged(self.starts[start:end], self.lengths[start:end], self.values)

    @classmethod
    def concatenate(cls, parts: list[Ragged]) -> Ragged:
        """The rows of ``parts`` one after another."""
        shifts = np.cumsum([0] + [len(part.values) for part in parts[:-1]])
        return cls(np.concatenate([part.starts + shift for part, shift in zip(parts, shifts)]),
                   np.concatenate([part.lengths for part in parts]), np.concatenate([part.values for part in parts]))


def _concatenate(columns: list) -> np.ndarray | Ragged:
    return Ragged.concatenate(columns) if isinstance(columns[0], Ragged) else np.concatenate(columns)


def _take(column: np.ndarray | Ragged, rows: np.ndarray) -> np.ndarray | Ragged:
    if not isinstance(column, Ragged):
        return column[rows]
    taken = column.take(rows)
    # the values of dropped rows are let go once they are most of the column, and before pickling
    return taken.compact() if 2 * int(taken.lengths.sum(dtype=np.int64)) < len(taken.values) else taken


def _compact(column: np.ndarray | Ragged) -> np.ndarray | Ragged:
    return column.compact() if isinstance(column, Ragged) else column


def _slicer(column: np.ndarray | Ragged) -> Any:
    return column.slicer() if isinstance(column, Ragged) else lambda start, end: column[start:end]


@dataclass
class Occurrences:
    """Per token, the ``limit`` occurrences of lowest (priority, record); payload columns beside them.

    ``add`` appends one batch's occurrences (the same payload columns every time, arrays or
    :class:`Ragged`); :meth:`groups` yields each token's kept rows, in token order.
    """

    limit: int
    distinct: bool = False  # a record's copies (same token, priority and record) kept once
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
        if self.distinct and len(order):
            same = [column[order] for column in (token, columns["priority"], columns["record"])]
            order = order[np.concatenate(([True], np.any([c[1:] != c[:-1] for c in same], axis=0)))]
        kept = order[rank_in_runs(token[order]) < self.limit]
        self.chunks = [{name: _take(column, kept) for name, column in columns.items()}]
        self.rows = self._bounded_rows = len(kept)

    @classmethod
    def merged(cls, parts: list[Occurrences]) -> Occurrences:
        """The occurrences of every part, bounded per token as one partition's would be."""
        out = cls(max((part.limit for part in parts), default=0), any(part.distinct for part in parts))
        for part in parts:
            out.chunks += part.chunks
            out.rows += part.rows
        if out.chunks:
            out._bound()
        return out

    def groups(self, only: np.ndarray | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
        """Each token (ascending) with its kept rows' columns; only the tokens of ``only`` (ascending) if given."""
        if not self.chunks:
            return
        self._bound()
        columns = self.chunks[0]
        token = columns["token"]
        bounds = np.flatnonzero(np.concatenate(([True], token[1:] != token[:-1], [True])))
        starts, ends = bounds[:-1], bounds[1:]
        if only is not None:
            chosen = members(token[starts], np.asarray(only, dtype=np.uint64))
            starts, ends = starts[chosen], ends[chosen]
        slicers = {name: _slicer(column) for name, column in columns.items()}
        for start, end in zip(starts.tolist(), ends.tolist()):
            yield int(token[start]), {name: cut(start, end) for name, cut in slicers.items()}

    def columns(self) -> dict[str, Any]:
        """Every kept row's columns, by token, then priority and record (empty: no columns)."""
        if not self.chunks:
            return {}
        self._bound()
        return self.chunks[0]

    def distinct_record_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Each token (ascending) and how many distinct records its kept occurrences are in (copies of a
        record count once)."""
        if not self.chunks:
            return np.zeros(0, dtype=np.uint64), np.zeros(0, dtype=np.int64)
        self._bound()
        token, record = self.chunks[0]["token"], self.chunks[0]["record"]
        # rows are sorted by token, then priority: a record's rows (one priority) stand together
        new = np.concatenate(([True], (token[1:] != token[:-1]) | (record[1:] != record[:-1])))
        return np.unique(token[new], return_counts=True)

    def distinct_records(self) -> dict[int, int]:
        """:meth:`distinct_record_counts` as a dict."""
        tokens, counts = self.distinct_record_counts()
        return dict(zip(tokens.tolist(), counts.tolist()))

    def __len__(self) -> int:
        return self.rows

    def __getstate__(self) -> dict[str, Any]:
        if self.chunks:
            self._bound()
        self.chunks = [{name: _compact(column) for name, column in chunk.items()} for chunk in self.chunks]
        return dict(self.__dict__)


__all__ = ["UNBOUNDED", "Occurrences", "Ragged"]
