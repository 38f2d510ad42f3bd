"""Executors beyond the embedded one, and the protocol a stage implements to be fitted on them.

``dokumi scan --engine dask`` (``engines/dask.py``) runs pass 1 and pass 2 on
a Dask cluster. Pass 2 needs nothing from a stage beyond ``score``. Pass 1
can only be distributed for a stage that says how its corpus-level state is
built from pieces; a stage does so by implementing one of two protocols:

- :class:`PartitionFit`, a reduction: ``fit_partition`` turns one partition of
  the corpus (a shard) into a compact partial on a worker; ``fit_merge``
  merges partials, on workers, in a tree; ``fit_finish`` sets the fitted
  state from the final partial on the driver. Shapes that fit: n-gram
  document frequencies (partial = counts), a reservoir sample (partial = the
  bottom-k records by a seeded hash of their id), means and histograms.
  A stage that reads the corpus more than once, each read depending on what
  the previous ones found, sets ``fit_rounds`` to the number of reads: each
  round is a reduction of its own, its methods take the round (0, 1, ...)
  as a last argument, and the stage goes to the workers again before each
  round, so what ``fit_finish(partial, round)`` set reaches the next round's
  ``fit_partition``. A round with nothing to learn returns its partial
  without iterating ``batches``, which then reads nothing.
- :class:`KeyGroupFit`, a shuffle: ``fit_keys`` maps a partition to a table of
  ``(key, member)`` rows on a worker; the engine groups the rows of all
  partitions by key with a Dask DataFrame shuffle and hands the groups of two
  or more members to ``fit_groups`` on the driver. Shapes that fit: LSH band
  buckets (key = band hash, member = record id), exact duplicates (key =
  content hash). Two optional extensions: ``fit_keys`` may return
  ``(table, partial)``, a per-partition value the driver needs whole (the
  engine then calls ``fit_groups(groups, partials)`` with every partition's
  partial, in no particular order); and a method ``fit_extra_keys()`` gives
  rows from outside the corpus (an earlier scan's index), grouped together
  with the corpus's and computed once, on the driver.

A stage that implements neither is fitted by its ordinary ``fit`` on the
driver, with the corpus streamed through it; the scan says so in a warning.
So is a stage whose ``fits_distributed`` attribute is False (a protocol
that some parameter values cannot follow). A stage implementing a protocol
keeps ``fit`` for the local executor, most simply as
``return fit_in_one_process(self, batches)``, so both executors run the
same code.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dokumi.records import Batch
from dokumi.stage import Stage


@runtime_checkable
class PartitionFit(Protocol):
    """A stage whose fitted state is a reduction over partitions of the corpus.

    The result must not depend on how the corpus is partitioned or in which
    order partials are merged (``fit_merge`` is associative and commutative).
    With ``fit_rounds`` > 1 each method takes the round as a last argument.
    """

    def fit_partition(self, batches: Iterable[Batch]) -> Any:
        """A compact, picklable partial for one partition; must not change fitted state."""

    def fit_merge(self, partials: list[Any]) -> Any:
        """One partial equivalent to all of ``partials``."""

    def fit_finish(self, partial: Any) -> Stage:
        """Set the fitted state (attributes ending with ``_``) from the merged partial; return self."""


@runtime_checkable
class KeyGroupFit(Protocol):
    """A stage whose fitted state comes from grouping records that share a key.

    Groups arrive in no particular order, and members within a group in no
    particular order: sort them where order matters.
    """

    def fit_keys(self, batches: Iterable[Batch]) -> pa.Table | tuple[pa.Table, Any]:
        """Columns ``key`` and ``member``, one row per (key, record) pair; the same schema
        every time, an empty table of those types when ``batches`` yields nothing. Optionally
        also a picklable partial of this partition, handed whole to ``fit_groups``."""

    def fit_groups(self, groups: Iterable[pa.Table]) -> Stage:
        """Set the fitted state from tables with columns ``key`` and ``members`` (a list of
        two or more); return self. The tables together hold every shared key once. A stage
        whose ``fit_keys`` returns partials takes them as a second argument (a list)."""


def shared_key_groups(keys: pa.Table) -> pa.Table:
    """Rows of ``keys`` grouped by ``key``: columns ``key`` and ``members``, only keys with two or more members.

    A key that only one record has links nothing, so it is left out. The rows are sorted by key
    and cut where the key changes: only the members of shared keys are copied, which keeps an
    LSH table, where most keys are shared by no one, cheap to group.
    """
    if keys.schema.names != ["key", "member"]:
        raise ValueError(f"fit_keys must return columns ['key', 'member'], got {keys.schema.names}")
    key, member = keys.column("key"), keys.column("member")
    if key.null_count:
        raise ValueError("fit_keys returned a null key")
    if not keys.num_rows:
        return pa.table({"key": key.combine_chunks(), "members": pa.array([], pa.list_(member.type))})
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


def split_keys(result: pa.Table | tuple[pa.Table, Any]) -> tuple[pa.Table, tuple[Any, ...]]:
    """What ``fit_keys`` returned as the key table and its partial, if any (an empty or one-item tuple)."""
    if isinstance(result, tuple):
        keys, partial = result
        return keys, (partial,)
    return result, ()


def fit_rounds(stage: Stage) -> int:
    """How many times a :class:`PartitionFit` stage reads the corpus (its ``fit_rounds``, default 1)."""
    rounds = getattr(stage, "fit_rounds", 1)
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"stage {stage.name!r}: fit_rounds must be a positive integer, got {rounds!r}")
    return rounds


def round_arguments(stage: Stage, round_index: int) -> tuple[int, ...]:
    """The trailing arguments of a :class:`PartitionFit` method in ``round_index``: none for a one-round stage."""
    return (round_index,) if fit_rounds(stage) > 1 else ()


def fit_in_one_process(stage: Stage, batches: Iterable[Batch]) -> Stage:
    """Fit ``stage`` through its distributed-fit protocol in this process: what the Dask engine
    does across workers, with the whole corpus as one partition (``batches`` is read once per round)."""
    if isinstance(stage, KeyGroupFit):
        keys, partials = split_keys(stage.fit_keys(batches))
        extra = stage.fit_extra_keys() if hasattr(stage, "fit_extra_keys") else None
        if extra is not None and extra.num_rows:
            keys = pa.concat_tables([keys, extra])
        groups = [shared_key_groups(keys)]
        del keys, extra  # the rows of every key can be far larger than the groups: free them before fitting
        return stage.fit_groups(groups, list(partials)) if partials else stage.fit_groups(groups)
    if isinstance(stage, PartitionFit):
        for round_index in range(fit_rounds(stage)):
            extra = round_arguments(stage, round_index)
            stage.fit_finish(stage.fit_merge([stage.fit_partition(batches, *extra)], *extra), *extra)
        return stage
    raise TypeError(f"stage {stage.name!r} implements neither PartitionFit nor KeyGroupFit")


def distributed_fit_kind(stage: Stage) -> str | None:
    """``"shuffle"``, ``"reduction"`` or None: how an engine can fit ``stage`` across workers."""
    if not getattr(stage, "fits_distributed", True):
        return None
    if isinstance(stage, KeyGroupFit):
        return "shuffle"
    if isinstance(stage, PartitionFit):
        return "reduction"
    return None


__all__ = [
    "KeyGroupFit",
    "PartitionFit",
    "distributed_fit_kind",
    "fit_in_one_process",
    "fit_rounds",
    "round_arguments",
    "shared_key_groups",
    "split_keys",
]
