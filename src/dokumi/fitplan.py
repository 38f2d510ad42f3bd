"""Fit plans: how a stage learns corpus statistics, as an ordered list of typed steps.

A stage that needs corpus statistics returns its plan from ``fit_plan()``. Each
step is one read of the corpus (a *round*); the engine reads the corpus once
per round for all stages together and hands every batch to each stage that
has a step in that round. Steps are bound methods of the stage, so a step can
read what earlier steps set; the engine sends the stage to its workers again
before each round.

Two kinds of step, each run the same way by every engine (:mod:`dokumi.engines`):

- :class:`Reduce`: every partition folds its batches into a partial
  (``start``, then ``add`` per batch), partials are merged (``merge``:
  associative and commutative, so partitioning and merge order do not matter),
  and ``finish`` sets the fitted state from the merged partial. Shapes that
  fit: counts, histograms, a bottom-k sample by content hash.
- :class:`GroupByKey`: every batch gives ``(key, member)`` rows; the engine
  groups the rows of the whole corpus by key (a shuffle on Dask) and hands the
  keys that two or more rows share to ``finish``. Shapes that fit: LSH band
  buckets, exact duplicates. ``partial`` optionally folds what the driver
  needs whole beside the groups (e.g. signatures); ``extra`` gives rows from
  side inputs (an earlier scan's index) to group together with the corpus's.

A step whose ``needed()`` is false when its round comes is skipped without
reading anything.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dokumi.records import Batch


def always() -> bool:
    """The default ``needed`` of a step: it always runs."""
    return True


@dataclass(frozen=True)
class Fold:
    """A partition's partial: ``start()``, then ``add(partial, batch) -> partial`` per batch;
    ``merge(partials) -> partial`` combines partials in any grouping and order."""

    start: Callable[[], Any]
    add: Callable[[Any, Batch], Any]
    merge: Callable[[list[Any]], Any]

    def run(self, batches: Iterable[Batch]) -> Any:
        """Fold ``batches`` from ``start()`` through ``add``; return the partial state."""
        partial = self.start()
        for batch in batches:
            partial = self.add(partial, batch)
        return partial


@dataclass(frozen=True)
class Reduce:
    """A reduction over the corpus; ``finish(merged partial)`` sets the fitted state on the driver."""

    name: str
    start: Callable[[], Any]
    add: Callable[[Any, Batch], Any]
    merge: Callable[[list[Any]], Any]
    finish: Callable[[Any], None]
    needed: Callable[[], bool] = always

    @property
    def fold(self) -> Fold:
        """The step's start/add/merge functions as one :class:`Fold`."""
        return Fold(self.start, self.add, self.merge)


@dataclass(frozen=True)
class GroupByKey:
    """A grouping of the corpus's ``(key, member)`` rows by key.

    ``keys(batch)`` returns a table of ``schema`` (columns ``key`` and ``member``,
    one row per pair; the same schema every time). ``finish(groups, partial)``
    receives tables with columns ``key`` and ``members`` (a list of two or more),
    which together hold every shared key once, in no particular order, and the
    merged ``partial`` (None without one).
    """

    name: str
    keys: Callable[[Batch], pa.Table]
    schema: pa.Schema
    finish: Callable[[Iterable[pa.Table], Any], None]
    partial: Fold | None = None
    extra: Callable[[], pa.Table] | None = None
    needed: Callable[[], bool] = always

    def __post_init__(self) -> None:
        if self.schema.names != ["key", "member"]:
            raise ValueError(f"step {self.name!r}: a GroupByKey schema has columns ['key', 'member'], "
                             f"got {self.schema.names}")


Step = Reduce | GroupByKey


@dataclass
class KeyPartial:
    """A partition's share of a :class:`GroupByKey` step: its key rows and its side partial."""

    keys: pa.Table
    side: Any = None


def partition_partials(steps: list[Step], batches: Iterable[Batch]) -> list[Any]:
    """One partition's partial for every step of a round, from a single read of ``batches``.

    A :class:`Reduce` step's partial is its fold's; a :class:`GroupByKey` step's a :class:`KeyPartial`.
    """
    partials: list[Any] = []
    tables: list[list[pa.Table]] = []
    for step in steps:
        tables.append([])
        if isinstance(step, Reduce):
            partials.append(step.start())
        else:
            partials.append(step.partial.start() if step.partial else None)
    for batch in batches:
        for i, step in enumerate(steps):
            if isinstance(step, Reduce):
                partials[i] = step.add(partials[i], batch)
                continue
            keys = check_keys(step, step.keys(batch))
            if keys.num_rows:
                tables[i].append(keys)
            if step.partial is not None:
                partials[i] = step.partial.add(partials[i], batch)
    return [
        partial if isinstance(step, Reduce)
        else KeyPartial(pa.concat_tables(rows) if rows else step.schema.empty_table(), partial)
        for step, partial, rows in zip(steps, partials, tables)
    ]


def check_keys(step: GroupByKey, keys: pa.Table) -> pa.Table:
    """``keys`` if it has the step's schema; a clear error naming the step otherwise."""
    if keys.schema.names != ["key", "member"]:
        raise ValueError(f"step {step.name!r}: keys() must return columns ['key', 'member'], got {keys.schema.names}")
    if not keys.schema.equals(step.schema):
        keys = keys.cast(step.schema)
    return keys


def shared_key_groups(keys: pa.Table) -> pa.Table:
    """Rows of ``keys`` grouped by ``key``: columns ``key`` and ``members``, only keys with two or more members.

    A key that only one row has links nothing, so it is left out. The rows are sorted by key
    and cut where the key changes: only the members of shared keys are copied, which keeps an
    LSH table, where most keys are shared by no one, cheap to group.
    """
    if keys.schema.names != ["key", "member"]:
        raise ValueError(f"key rows must have columns ['key', 'member'], got {keys.schema.names}")
    key, member = keys.column("key"), keys.column("member")
    if key.null_count:
        raise ValueError("a key row has a null key")
    if not keys.num_rows:
        return pa.table({"key": key.combine_chunks(), "members": pa.array([], pa.list_(member.type))})
    if pa.types.is_integer(key.type):
        # numpy's sort of one array: Arrow's sort of a table's many chunks merges them, 10x slower
        order = pa.array(np.argsort(key.to_numpy(), kind="stable"))
    else:
        order = pc.sort_indices(key)
    ordered = key.take(order).combine_chunks()
    same = pc.equal(ordered.slice(1), ordered.slice(0, len(ordered) - 1)).to_numpy(zero_copy_only=False)
    shared = np.zeros(len(ordered), dtype=bool)  # rows whose key another row has
    shared[1:] |= same
    shared[:-1] |= same
    positions = np.flatnonzero(shared)
    opens = np.ones(len(positions), dtype=bool)  # a shared row opens a group unless the row before has its key
    opens[1:] = ~same[positions[1:] - 1]
    offsets = np.append(np.flatnonzero(opens), len(positions))
    group_keys = ordered.take(positions[offsets[:-1]])
    del ordered, same, shared, opens  # the sort's temporaries are as long as the table: free them first
    members = member.take(order.to_numpy()[positions]).combine_chunks()
    large = len(positions) >= 2**31
    lists = (pa.LargeListArray if large else pa.ListArray).from_arrays(
        pa.array(offsets, pa.int64() if large else pa.int32()), members)
    return pa.table({"key": group_keys, "members": lists})


__all__ = ["Fold", "GroupByKey", "KeyPartial", "Reduce", "Step", "always", "check_keys", "partition_partials",
           "shared_key_groups"]
