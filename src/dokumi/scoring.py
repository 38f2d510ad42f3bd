"""Pass 2 over one shard: score every batch, route every record to exactly one output, hash and tally.

Every engine runs :func:`score_shard` once per shard, in whatever process it
chooses; the :class:`ShardResult` it returns is small enough to send back.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dokumi import remote, routing
from dokumi.decisions import ALARMS
from dokumi.manifest import reason_kind
from dokumi.merkle import MerkleBuilder, record_leaves
from dokumi.outputs import PartWriter, output_stem
from dokumi.records import Batch
from dokumi.report import ScoresDigest
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
    # what the report shows of this shard's scores, gathered as they were written (None: read them again)
    digest: ScoresDigest | None = None


def score_shard(
    pipeline: Pipeline, index: int, shard: Shard, staging: Path, on_records: Callable[[int], Any],
    no_text: bool = False, batches: Iterable[Batch] | None = None, output_format: str | None = None,
    flag_folder: str = "flagged",
) -> ShardResult:
    """Score every batch of ``shard`` and route every record to exactly one output under ``staging``.

    Also writes the shard's record-hash sidecar and computes its Merkle root. ``batches``: the
    shard's batches already read (all its records, in order), else the shard is read here.
    ``output_format`` (``parquet``, ``jsonl``; default the input's) is the format of the routed
    records; ``flag_folder`` where records decided ``flag`` go (:mod:`dokumi.routing`).
    """
    stem = output_stem(index, shard.name)
    fmt = routing.output_format(shard.path, output_format)
    folders = routing.routes(flag_folder)
    records = {folder: routing.RecordWriter(staging / folder, stem, fmt) for folder in dict.fromkeys(folders.values())}
    tables = {name: PartWriter(staging / name, stem) for name in ("quarantine", "scores", SIDECAR_DIR)}
    tree = MerkleBuilder()
    unreadable_writer = PartWriter(staging / "quarantine", f"{stem}.unreadable")
    result = ShardResult(shard=shard.name, path=shard.path)
    digest = ScoresDigest([stage.name for stage in pipeline.stages])
    hashes = []
    has_id_column = None
    limit = pipeline.records.max_text_bytes
    for batch in batches if batches is not None else shard.batches(pipeline.columns, pipeline.batch_size):
        scores = pipeline.score_batch(batch)
        digests = batch.digests
        # a record above max_text_bytes gets no similarity sketch: the recipe routes it unread
        sidecar = sidecar_batch(batch, digests, skip=batch.content_bytes > limit)
        tables[SIDECAR_DIR].write(sidecar)
        tree.extend(record_leaves(batch.ids, batch.rows.to_pylist(), digests.tobytes()))
        _route(batch, scores, folders, records, tables, sidecar if no_text else None)
        tables["scores"].write(scores)
        digest.add(scores)
        _write_unreadable(batch, unreadable_writer, no_text)
        _note_unreadable(result, batch)
        _tally(result, batch, scores)
        if has_id_column is None and batch.num_rows:  # a batch of unreadable rows alone has no columns
            has_id_column = batch.has("id")
        if has_id_column and batch.num_rows:
            hashes.append(id_hashes(batch.ids))
        on_records(batch.num_rows + len(batch.unreadable))
    if hashes:
        result.id_hashes = np.concatenate(hashes)
    if result.unreadable > UNREADABLE_NOTES:
        result.notes.append(f"shard {shard.name}: {result.unreadable - UNREADABLE_NOTES:,} more unreadable rows "
                            f"quarantined (quarantine/{stem}.unreadable.parquet lists them all)")
    closing: list[tuple[str, Any]] = [*records.items(), *tables.items(), ("quarantine", unreadable_writer)]
    for kind, writer in closing:
        for path, count in writer.close():
            result.outputs.append({"kind": kind, "path": path, "records": count})
    result.merkle_root, result.leaves = tree.root().hex(), tree.size
    result.digest = digest
    if shard.path is not None:
        result.input_bytes = remote.size(shard.path)  # a local file or an object-store URL
        result.input_sha256 = remote.sha256(shard.path)
    return result


def _route(
    batch: Batch, scores: pa.RecordBatch, folders: dict[str, str], records: dict[str, routing.RecordWriter],
    tables: dict[str, PartWriter], no_text_hashes: pa.RecordBatch | None = None,
) -> None:
    """Write each record to the folder of its decision (``folders``): kept ones as they came, flagged ones
    with their reasons and risk, dropped ones with their reasons. With ``no_text_hashes`` (the batch's
    sidecar rows) the quarantine keeps ids, rows, hashes and reasons, no input column."""
    n = batch.num_rows
    decisions = scores.column("decision").slice(0, n)
    reasons = scores.column("reasons").slice(0, n)
    risk = scores.column("risk").slice(0, n)
    for decision, folder in folders.items():
        chosen = pc.equal(decisions, decision)
        if decision == "drop" and no_text_hashes is not None:
            if pc.any(chosen).as_py():
                kept = no_text_hashes.select(["id", "row", "sha256"]).append_column("reasons", reasons)
                tables["quarantine"].write(kept.filter(chosen))
        elif decision == "drop":
            records[folder].write(batch, chosen, {"reasons": reasons})
        elif decision == "flag" and folder != "clean":
            records[folder].write(batch, chosen, {"reasons": reasons, "risk": risk})
        else:
            records[folder].write(batch, chosen)


def _write_unreadable(batch: Batch, writer: PartWriter, no_text: bool) -> None:
    if batch.unreadable:
        writer.write(
            pa.record_batch(
                {
                    "id": [row.id for row in batch.unreadable],
                    "shard": [row.shard for row in batch.unreadable],
                    "row": pa.array([row.row for row in batch.unreadable], pa.int64()),
                    "reasons": [[row.reason] for row in batch.unreadable],
                    **_unreadable_content(batch, no_text),
                }
            )
        )


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
        result.notes.append(f"shard {row.shard} {row.unit} {row.row + 1}: {row.reason} (quarantined)")


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
