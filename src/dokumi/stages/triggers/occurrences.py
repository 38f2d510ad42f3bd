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
and loaded in 4.1 s; as columns, in 1.3 s and 1.0 s.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from dokumi.arrays import rank_in_runs

# rows held before the per-token bound is applied again while a partition is read
_COMPACT_ROWS = 1 << 16


@dataclass
class Occurrences:
    """Per token, the ``limit`` occurrences of lowest (priority, record); payload columns beside them.

    ``add`` appends one batch's occurrences (the same payload columns every time);
    :meth:`groups` yields each token's kept rows, in token order.
    """

    limit: int
    chunks: list[dict[str, np.ndarray]] = field(default_factory=list)
    rows: int = 0
    _bounded_rows: int = 0

    def add(self, token: np.ndarray, record: np.ndarray, priority: np.ndarray, **payload: np.ndarray) -> None:
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
        columns = {name: np.concatenate([chunk[name] for chunk in self.chunks]) for name in self.chunks[0]}
        token = columns["token"]
        order = np.lexsort((columns["record"], columns["priority"], token))
        kept = order[rank_in_runs(token[order]) < self.limit]
        self.chunks = [{name: column[kept] for name, column in columns.items()}]
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

    def groups(self) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Each token (ascending) with its kept rows' columns."""
        if not self.chunks:
            return
        self._bound()
        columns = self.chunks[0]
        token = columns["token"]
        bounds = np.flatnonzero(np.concatenate(([True], token[1:] != token[:-1], [True])))
        for start, end in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            yield int(token[start]), {name: column[start:end] for name, column in columns.items()}

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


__all__ = ["Occurrences"]
