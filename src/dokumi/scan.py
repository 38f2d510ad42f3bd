"""`dokumi scan`: read shards, fit, score, decide, and write the outputs of DESIGN.md atomically."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dokumi.errors import InputError
from dokumi.hashing import record_digests
from dokumi.manifest import build_manifest, reason_kind, write_manifest
from dokumi.merkle import MerkleBuilder, record_leaves
from dokumi.outputs import PartWriter, file_sha256, output_stem
from dokumi.pipeline import DEFAULT_BATCH_SIZE, CorpusBatches, Pipeline
from dokumi.policy import Policy, load_policy
from dokumi.progress import progress_bar
from dokumi.records import Batch, Columns
from dokumi.report import write_report
from dokumi.sidecar import SIDECAR_DIR, sidecar_batch
from dokumi.sources import ParquetShard, Shard, open_inputs

EXAMPLES_PER_SCAN = 20
ENGINES = ("local", "dask")


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


@dataclass
class ScanResult:
    """The outcome of a scan; ``summary()`` is what the CLI prints."""

    out: Path
    policy: str
    shards: list[ShardResult]
    warnings: list[str]
    seconds: float
    manifest: dict[str, Any]

    @property
    def records(self) -> int:
        return sum(s.records + s.unreadable for s in self.shards)

    @property
    def decisions(self) -> Counter:
        return sum((s.decisions for s in self.shards), Counter())

    @property
    def reasons(self) -> Counter:
        return sum((s.reasons for s in self.shards), Counter())

    def summary(self) -> str:
        total = self.records
        rate = total / self.seconds if self.seconds > 0 else float("nan")
        lines = [
            f"dokumi scan: {total:,} records in {len(self.shards)} shard(s), policy '{self.policy}', "
            f"{self.seconds:.1f} s ({rate:,.0f} records/s)",
            "",
            f"  {'decision':<10}{'records':>10}{'share':>9}",
        ]
        for decision in ("keep", "flag", "drop"):
            count = self.decisions.get(decision, 0)
            share = 100 * count / total if total else 0.0
            lines.append(f"  {decision:<10}{count:>10,}{share:>8.2f}%")
        if self.reasons:
            lines += ["", f"  {'reason':<40}{'records':>10}"]
            lines += [f"  {reason:<40}{count:>10,}" for reason, count in self.reasons.most_common(12)]
        for stage in self.manifest.get("stages", []):
            findings = stage.get("summary", {}).get("findings", [])
            if findings:
                lines += ["", f"  {stage['name']} found ({len(findings)}):"]
                lines += [f"    {f['finding']:<46}{f['records']:>8,}" for f in findings[:10]]
        examples = [e for s in self.shards for e in s.examples][:EXAMPLES_PER_SCAN]
        if examples:
            lines += ["", f"  flagged and dropped records (first {len(examples)}):"]
            lines += [f"  {e['decision']:<5} {e['id']:<32} {', '.join(e['reasons'])}" for e in examples]
        for warning in self.warnings:
            lines.append(f"warning: {warning}")
        lines += ["", f"outputs in {self.out}/: clean/ quarantine/ scores/ manifest.json report.html"]
        return "\n".join(lines)


def scan(
    inputs: Any,
    out: str | os.PathLike,
    policy: str | os.PathLike | Policy | None = "pretraining",
    *,
    columns: Columns | dict[str, str] | None = None,
    workers: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    overwrite: bool = False,
    progress: bool | None = None,
    expect: str | os.PathLike | None = None,
    no_text: bool | None = None,
    sign_key: str | os.PathLike | None = None,
    engine: str = "local",
    scheduler: str | None = None,
) -> ScanResult:
    """Scan ``inputs`` with ``policy`` and write clean/, quarantine/, scores/, hashes/ and manifest.json to ``out``.

    The outputs appear all at once: they are written to a hidden sibling folder
    and renamed into place only when complete. ``workers`` defaults to the
    number of cores (capped by the number of file shards). ``expect`` names an
    earlier scan whose record hashes the provenance stage checks against;
    ``no_text`` (default: the policy's ``[privacy]``) keeps text out of the
    quarantine; ``sign_key`` signs the manifest (``dokumi keygen``).
    ``engine="dask"`` runs both passes on a Dask cluster: the one at the
    ``scheduler`` address, else a local one of ``workers`` processes
    (docs/scaling.md); the outputs are the same.
    """
    started = time.perf_counter()
    if engine not in ENGINES:
        raise InputError(f"engine {engine!r} is not one of: {', '.join(ENGINES)}")
    if scheduler and engine != "dask":
        raise InputError(f"a scheduler address ({scheduler}) needs engine 'dask', not {engine!r}")
    policy = load_policy(policy)
    if expect is not None:
        from dokumi.stages.provenance import with_expectation

        policy = with_expectation(policy, expect)
    if no_text is not None:
        policy = replace(policy, no_text=no_text)
    if isinstance(columns, dict):
        columns = Columns.from_mapping(columns)
    pipeline = Pipeline.from_policy(policy, columns=columns or policy.columns, batch_size=batch_size)
    out = Path(out)
    _refuse_existing(out, overwrite)
    shards, warnings, empty_inputs = _usable_shards(open_inputs(inputs))
    _refuse_inputs_inside(shards, out)
    pipeline.check(shards)
    warnings += _schema_warnings(shards)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.dokumi-partial-", dir=out.parent.resolve()))
    staging.chmod(0o777 & ~_umask())  # mkdtemp makes it private; the output folder should not be
    try:
        shards = _spill_one_shot(shards, pipeline, staging / "spill", always=engine == "dask")
        if engine == "dask":
            from dokumi.engines.dask import run_passes

            results = run_passes(pipeline, shards, staging, scheduler=scheduler, workers=workers,
                                 progress=progress, warnings=warnings, no_text=policy.no_text)
        else:
            if pipeline.needs_fit:
                _fit(pipeline, shards, progress)
            results = _score_all(pipeline, shards, staging, workers, progress, policy.no_text)
        warnings += [f"shard {r.shard} has no records" for r in results if not r.records + r.unreadable]
        warnings += _duplicate_id_warnings(results, shards, pipeline)
        for stage in pipeline.stages:
            stage.save_state(staging / "state" / stage.name)
        shutil.rmtree(staging / "spill", ignore_errors=True)
        manifest = build_manifest(policy, pipeline, results, empty_inputs, warnings, staging, destination=out)
        write_manifest(manifest, staging / "manifest.json")
        if sign_key is not None:
            from dokumi.signing import sign_manifest

            sign_manifest(staging / "manifest.json", sign_key)
        write_report(staging)
        _replace_atomically(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return ScanResult(
        out=out,
        policy=policy.name,
        shards=results,
        warnings=warnings,
        seconds=time.perf_counter() - started,
        manifest=manifest,
    )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _refuse_existing(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise InputError(f"--out {out} is not empty; pass --overwrite to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)


def _refuse_inputs_inside(shards: list[Shard], out: Path) -> None:
    """Scanning a folder that holds --out would read an earlier scan's outputs as input."""
    root = out.resolve()
    for shard in shards:
        if shard.path is not None and Path(shard.path).resolve().is_relative_to(root):
            raise InputError(f"input {shard.path} lies inside --out {out}; choose an --out outside the inputs")


def _usable_shards(shards: list[Shard]) -> tuple[list[Shard], list[str], list[dict[str, Any]]]:
    """Set aside 0-byte files (no records, so nothing to lose) with a warning."""
    usable, warnings, empty = [], [], []
    for shard in shards:
        if shard.path is not None and os.path.getsize(shard.path) == 0:
            warnings.append(f"shard {shard.name} is empty (0 bytes): no records")
            empty.append({"path": shard.path, "name": shard.name, "bytes": 0,
                          "sha256": hashlib.sha256(b"").hexdigest(), "records": 0})
            continue
        usable.append(shard)
    if not usable and not empty:
        raise InputError("no input shards given")
    return usable, warnings, empty


def _schema_warnings(shards: list[Shard]) -> list[str]:
    """Shards with different columns are scanned each with its own schema; say so."""
    first_names: list[str] | None = None
    first_shard = ""
    warnings = []
    for shard in shards:
        names = shard.schema_names()
        if first_names is None:
            first_names, first_shard = names, shard.name
            continue
        missing = [n for n in first_names if n not in names]
        extra = [n for n in names if n not in first_names]
        if missing or extra:
            detail = "; ".join(
                part for part in (
                    f"lacks {', '.join(missing)}" if missing else "",
                    f"adds {', '.join(extra)}" if extra else "",
                ) if part
            )
            warnings.append(
                f"mixed schemas: shard {shard.name} {detail} (compared with {first_shard}); "
                "each shard's outputs keep its own columns"
            )
    return warnings


def _spill_one_shot(shards: list[Shard], pipeline: Pipeline, directory: Path, always: bool = False) -> list[Shard]:
    """A generator can be read once; when a fitting pass needs two reads, write it to disk first.

    ``always``: also without a fitting pass, for workers that cannot be handed a generator.
    """
    if not (pipeline.needs_fit or always):
        return shards
    spilled = []
    for index, shard in enumerate(shards):
        if shard.reiterable:
            spilled.append(shard)
            continue
        writer = PartWriter(directory, output_stem(index, shard.name))
        for batch in shard.batches(pipeline.columns, pipeline.batch_size):
            writer.write(batch.records)
        files = writer.close()
        if len(files) != 1:
            raise InputError(f"shard {shard.name}: records change their columns' types; cannot spill to one file")
        spilled.append(ParquetShard(name=shard.name, file=str(files[0][0])))
    return spilled


def _fit(pipeline: Pipeline, shards: list[Shard], progress: bool | None) -> None:
    total = _total_rows(shards)
    for stage in pipeline.stages:
        if not stage.needs_fit:
            continue
        bar = progress_bar(total, f"fit {stage.name}", enabled=progress)
        stage.fit(_counting(CorpusBatches(shards, pipeline.columns, pipeline.batch_size), bar.update))
        bar.close()
    pipeline.fitted_ = True


class _counting:
    """Re-iterable view of batches that reports progress as it goes."""

    def __init__(self, batches: CorpusBatches, update: Callable[[int], Any]) -> None:
        self.batches, self.update = batches, update

    def __iter__(self):
        for batch in self.batches:
            yield batch
            self.update(batch.num_rows + len(batch.unreadable))


def _total_rows(shards: list[Shard]) -> int | None:
    total = 0
    for shard in shards:
        rows = shard.num_rows()
        if rows is None:
            return None
        total += rows
    return total


_worker_pipeline: Pipeline | None = None
_worker_queue: Any = None


def _init_worker(pipeline: Pipeline, queue: Any) -> None:
    global _worker_pipeline, _worker_queue
    _worker_pipeline, _worker_queue = pipeline, queue
    # one process per core already: threaded BLAS in each would oversubscribe the cores
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def _score_in_worker(index: int, shard: Shard, staging: Path, no_text: bool) -> ShardResult:
    return score_shard(_worker_pipeline, index, shard, staging, _worker_queue.put, no_text)


def _score_all(
    pipeline: Pipeline, shards: list[Shard], staging: Path, workers: int | None, progress: bool | None,
    no_text: bool = False,
) -> list[ShardResult]:
    bar = progress_bar(_total_rows(shards), "score", enabled=progress)
    workers = min(workers or os.cpu_count() or 1, len(shards))
    parallel = workers > 1 and all(shard.path is not None for shard in shards)
    try:
        if not parallel:
            return [score_shard(pipeline, i, shard, staging, bar.update, no_text) for i, shard in enumerate(shards)]
        context = multiprocessing.get_context("spawn")
        queue = context.Queue()
        with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                 initargs=(pipeline, queue)) as pool:
            futures = [pool.submit(_score_in_worker, i, shard, staging, no_text) for i, shard in enumerate(shards)]
            while not all(f.done() for f in futures):
                _drain(queue, bar.update, timeout=0.2)
            _drain(queue, bar.update, timeout=0)
            return [f.result() for f in futures]
    finally:
        bar.close()


def _drain(queue: Any, update: Callable[[int], Any], timeout: float) -> None:
    import queue as queue_module

    try:
        update(queue.get(timeout=timeout) if timeout else queue.get_nowait())
        while True:
            update(queue.get_nowait())
    except queue_module.Empty:
        pass


def score_shard(
    pipeline: Pipeline, index: int, shard: Shard, staging: Path, on_records: Callable[[int], Any],
    no_text: bool = False,
) -> ShardResult:
    """Pass 2 over one shard: score every batch and route every record to exactly one output.

    Also writes the shard's record-hash sidecar and computes its Merkle root.
    """
    stem = output_stem(index, shard.name)
    writers = {name: PartWriter(staging / name, stem) for name in ("clean", "quarantine", "scores", SIDECAR_DIR)}
    tree = MerkleBuilder()
    unreadable_writer = PartWriter(staging / "quarantine", f"{stem}.unreadable")
    result = ShardResult(shard=shard.name, path=shard.path)
    hashes = []
    has_id_column = None
    for batch in shard.batches(pipeline.columns, pipeline.batch_size):
        scores = pipeline.score_batch(batch)
        digests = record_digests(batch)
        sidecar = sidecar_batch(batch, digests)
        writers[SIDECAR_DIR].write(sidecar)
        tree.extend(record_leaves(batch.ids, digests.tobytes()))
        _route(batch, scores, writers, unreadable_writer, sidecar if no_text else None)
        _tally(result, batch, scores)
        if has_id_column is None:
            has_id_column = batch.has("id")
        if has_id_column and batch.num_rows:
            hashes.append(_id_hashes(batch.ids))
        on_records(batch.num_rows + len(batch.unreadable))
    if hashes:
        result.id_hashes = np.concatenate(hashes)
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
    """Write each record to clean/ or quarantine/ and its scores to scores/. With ``no_text_hashes``
    (the batch's sidecar rows) the quarantine keeps ids, rows, hashes and reasons, no input column."""
    n = batch.num_rows
    decisions = scores.column("decision").slice(0, n)
    reasons = scores.column("reasons").slice(0, n)
    dropped = pc.equal(decisions, "drop")
    writers["clean"].write(batch.records.filter(pc.invert(dropped)))
    if no_text_hashes is not None:
        if pc.any(dropped).as_py():
            kept = no_text_hashes.select(["id", "row", "sha256"]).append_column("reasons", reasons)
            writers["quarantine"].write(kept.filter(dropped))
    elif pc.any(dropped).as_py():
        quarantined = batch.records
        if not batch.has("id"):
            quarantined = quarantined.append_column(batch.columns.id, pa.array(batch.ids, pa.string()))
        reasons_name = "reasons" if "reasons" not in quarantined.schema.names else "dokumi_reasons"
        quarantined = quarantined.append_column(reasons_name, reasons)
        writers["quarantine"].write(quarantined.filter(dropped))
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


def _unreadable_content(batch: Batch, no_text: bool) -> dict[str, pa.Array]:
    """The raw bytes of unreadable rows, or with ``no_text`` only their SHA-256."""
    raw = [row.raw for row in batch.unreadable]
    if no_text:
        return {"sha256": pa.array([None if r is None else hashlib.sha256(r).hexdigest() for r in raw], pa.string())}
    return {"raw": pa.array(raw, pa.binary())}


def _tally(result: ShardResult, batch: Batch, scores: pa.RecordBatch) -> None:
    result.records += batch.num_rows
    result.unreadable += len(batch.unreadable)
    decisions = scores.column("decision").to_pylist()
    result.decisions.update(decisions)
    for i, (decision, reasons) in enumerate(zip(decisions, scores.column("reasons").to_pylist())):
        result.reasons.update({reason_kind(reason) for reason in reasons})
        if decision != "keep" and len(result.examples) < EXAMPLES_PER_SCAN:
            result.examples.append(
                {"id": scores.column("id")[i].as_py(), "decision": decision, "reasons": reasons}
            )


def _id_hashes(ids: list[str]) -> np.ndarray:
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(i.encode("utf-8"), digest_size=8).digest(), "little") for i in ids),
        dtype=np.uint64,
        count=len(ids),
    )


def _duplicate_id_warnings(
    results: list[ShardResult], shards: list[Shard], pipeline: Pipeline, limit: int = 5
) -> list[str]:
    """Duplicate ids are kept (scores/ tells them apart by shard and row) and reported.

    Holds 8 bytes per record (a 64-bit hash of each id); the shards are read
    again only when duplicates exist, to name where the first few stand.
    """
    parts = [r.id_hashes for r in results if r.id_hashes is not None]
    for result in results:
        result.id_hashes = None
    if not parts:
        return []
    hashes = np.concatenate(parts)
    del parts
    hashes.sort()
    repeated = hashes[1:] == hashes[:-1]
    extra = int(repeated.sum())
    if not extra:
        return []
    duplicated = set(np.unique(hashes[1:][repeated])[:limit].tolist())
    del hashes, repeated
    places: dict[int, list[str]] = {value: [] for value in duplicated}
    for shard in shards:
        for batch in shard.batches(pipeline.columns, pipeline.batch_size):
            for value, row in zip(_id_hashes(batch.ids).tolist(), batch.rows.to_pylist()):
                if value in places:
                    places[value].append(f"{shard.name} row {row}")
    id_column = pipeline.columns.id
    warnings = [
        f"{extra:,} records repeat an id of column '{id_column}' (all kept; scores/ tells them apart by shard and row)"
    ]
    warnings += [f"duplicate id in column '{id_column}' at {', '.join(p[:4])}" for p in places.values()]
    return warnings


def _replace_atomically(staging: Path, out: Path) -> None:
    """Swap the finished staging folder into place; a crash leaves only a hidden partial folder."""
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.dokumi-old-", dir=out.parent))
        os.replace(out, old / "previous")
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out)
