"""Pass 2 over one shard: score every batch, route every record to exactly one output, hash and tally.

Every engine runs :func:`score_shard` once per shard, in whatever process it
chooses; the :class:`ShardResult` it returns is small enough to send back.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dokumi.decisions import ALARMS
from dokumi.manifest import reason_kind
from dokumi.merkle import MerkleBuilder, record_leaves
from dokumi.outputs import PartWriter, added_column_names, added_field, file_sha256, output_stem
from dokumi.records import Batch, filter_records
from dokumi.sidecar import SIDECAR_DIR, sidecar_batch
from dokumi.sources import Shard

if TYPE_CHECKING:
    from dokumi.pipeline import Pipeline

EXAMPLES_PER_SCAN = 20
# unreadable lines named one by one in the warnings, per shard; the quarantine lists them all
UNREADABLE_NOTES = 5


@dataclass
class ShardResult:
    """What scoring one shard produced; small enough to send between processes."""

    shard: str
    path: str | None
    records: int = 0
    unreadable: int = 0
    decisions: Counter = field(default_factory=Counter)
    reasons: Counter = field(default_factory=Counter)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    input_bytes: int | None = None
    input_sha256: str | None = None
    id_hashes: np.ndarray | None = None
    examples: list[dict[str, Any]] = field(default_factory=list)
    merkle_root: str = ""
    leaves: int = 0
    notes: list[str] = field(default_factory=list)


def score_shard(
    pipeline: Pipeline, index: int, shard: Shard, staging: Path, on_records: Callable[[int], Any],
    no_text: bool = False, batches: Iterable[Batch] | None = None,
) -> ShardResult:
    """Score every batch of ``shard`` and route every record to exactly one output under ``staging``.

    Also writes the shard's record-hash sidecar and computes its Merkle root. ``batches``: the
    shard's batches already read (all its records, in order), else the shard is read here.
    """
    stem = output_stem(index, shard.name)
    writers = {name: PartWriter(staging / name, stem)
               for name in ("clean", "duplicates", "quarantine", "scores", SIDECAR_DIR)}
    tree = MerkleBuilder()
    unreadable_writer = PartWriter(staging / "quarantine", f"{stem}.unreadable")
    result = ShardResult(shard=shard.name, path=shard.path)
    hashes = []
    has_id_column = None
    limit = pipeline.records.max_text_bytes
    for batch in batches if batches is not None else shard.batches(pipeline.columns, pipeline.batch_size):
        scores = pipeline.score_batch(batch)
        digests = batch.digests
        # a record above max_text_bytes gets no similarity sketch: the recipe routes it unread
        sidecar = sidecar_batch(batch, digests, skip=batch.content_bytes > limit)
        writers[SIDECAR_DIR].write(sidecar)
        tree.extend(record_leaves(batch.ids, digests.tobytes()))
        _route(batch, scores, writers, unreadable_writer, sidecar if no_text else None)
        _note_unreadable(result, batch)
        _tally(result, batch, scores)
        if has_id_column is None:
            has_id_column = batch.has("id")
        if has_id_column and batch.num_rows:
            hashes.append(id_hashes(batch.ids))
        on_records(batch.num_rows + len(batch.unreadable))
    if hashes:
        result.id_hashes = np.concatenate(hashes)
    if result.unreadable > UNREADABLE_NOTES:
        result.notes.append(f"shard {shard.name}: {result.unreadable - UNREADABLE_NOTES:,} more unreadable lines "
                            f"quarantined (quarantine/{stem}.unreadable.parquet lists them all)")
    for kind, writer in (*writers.items(), ("quarantine", unreadable_writer)):
        for path, count in writer.close():
            result.outputs.append({"kind": kind, "path": path, "records": count})
    result.merkle_root, result.leaves = tree.root().hex(), tree.size
    if shard.path is not None:
        result.input_bytes = os.path.getsize(shard.path)
        result.input_sha256 = file_sha256(shard.path)
    return result


def _route(
    batch: Batch, scores: pa.RecordBatch, writers: dict[str, PartWriter], unreadable: PartWriter,
    no_text_hashes: pa.RecordBatch | None = None,
) -> None:
    """Write each record to clean/ (kept and flagged), duplicates/ (redundant copies) or quarantine/
    (dropped), and its scores to scores/. With ``no_text_hashes`` (the batch's sidecar rows) the
    quarantine keeps ids, rows, hashes and reasons, no input column."""
    n = batch.num_rows
    decisions = scores.column("decision").slice(0, n)
    reasons = scores.column("reasons").slice(0, n)
    dropped = pc.equal(decisions, "drop")
    duplicate = pc.equal(decisions, "duplicate")
    writers["clean"].write(filter_records(batch.records, pc.invert(pc.or_(dropped, duplicate))))
    if pc.any(duplicate).as_py():
        writers["duplicates"].write(filter_records(batch.records, duplicate))
    if no_text_hashes is not None:
        if pc.any(dropped).as_py():
            kept = no_text_hashes.select(["id", "row", "sha256"]).append_column("reasons", reasons)
            writers["quarantine"].write(kept.filter(dropped))
    elif pc.any(dropped).as_py():
        writers["quarantine"].write(filter_records(with_added_columns(batch, {"reasons": reasons}), dropped))
    writers["scores"].write(scores)
    if batch.unreadable:
        unreadable.write(
            pa.record_batch(
                {
                    "id": [row.id for row in batch.unreadable],
                    "shard": [row.shard for row in batch.unreadable],
                    "row": pa.array([row.row for row in batch.unreadable], pa.int64()),
                    "reasons": [[row.reason] for row in batch.unreadable],
                    **_unreadable_content(batch, no_text_hashes is not None),
                }
            )
        )


def with_added_columns(batch: Batch, added: dict[str, pa.Array]) -> pa.RecordBatch:
    """The batch's records, their columns untouched, plus ``added`` (role: values) and the derived id where
    the input has no id column, each under a name no input column uses (:func:`~dokumi.outputs.added_column_names`)."""
    columns = dict(added)
    wanted = list(added)
    if not batch.has("id"):
        columns = {"id": pa.array(batch.ids, pa.string()), **columns}
        wanted = [batch.columns.id, *wanted]
    records = batch.records
    for (role, values), name in zip(columns.items(), added_column_names(records.schema.names, wanted)):
        records = records.append_column(added_field(name, role, values.type), values)
    return records


def _unreadable_content(batch: Batch, no_text: bool) -> dict[str, pa.Array]:
    """The raw bytes of unreadable rows, or with ``no_text`` only their SHA-256."""
    raw = [row.raw for row in batch.unreadable]
    if no_text:
        return {"sha256": pa.array([None if r is None else hashlib.sha256(r).hexdigest() for r in raw], pa.string())}
    return {"raw": pa.array(raw, pa.binary())}


def _note_unreadable(result: ShardResult, batch: Batch) -> None:
    """One warning line per unreadable row (the first few of the shard) naming its line and what was wrong."""
    result.notes.extend(batch.notes)
    for row in batch.unreadable[:max(0, UNREADABLE_NOTES - result.unreadable)]:
        result.notes.append(f"shard {row.shard} line {row.row + 1}: {row.reason} (quarantined)")


def _tally(result: ShardResult, batch: Batch, scores: pa.RecordBatch) -> None:
    result.records += batch.num_rows
    result.unreadable += len(batch.unreadable)
    decisions = scores.column("decision")
    for item in pc.value_counts(decisions).to_pylist():
        result.decisions[item["values"]] += item["counts"]
    decided = decisions.to_numpy(zero_copy_only=False)
    flagged = np.flatnonzero(decided != "keep")
    reasons = scores.column("reasons")
    for i in flagged.tolist():
        codes = reasons[i].as_py()
        result.reasons.update({reason_kind(reason) for reason in codes})
        # the examples are alarms: copies are listed by cluster in the findings, not one by one
        if len(result.examples) < EXAMPLES_PER_SCAN and decided[i] in ALARMS:
            result.examples.append({"id": scores.column("id")[i].as_py(), "decision": decisions[i].as_py(),
                                    "reasons": codes})


def id_hashes(ids: list[str]) -> np.ndarray:
    """A 64-bit hash of each record id (duplicate-id detection holds 8 bytes per record)."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(i.encode("utf-8"), digest_size=8).digest(), "little") for i in ids),
        dtype=np.uint64,
        count=len(ids),
    )


__all__ = ["EXAMPLES_PER_SCAN", "ShardResult", "id_hashes", "score_shard"]
