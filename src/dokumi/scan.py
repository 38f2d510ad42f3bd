"""`dokumi scan`: read shards, fit, score, decide, and write the outputs of DESIGN.md atomically.

This module only orchestrates: inputs (:mod:`dokumi.sources`), the pipeline
and its recipe (:mod:`dokumi.pipeline`, :mod:`dokumi.policy`), an engine for
the two passes (:mod:`dokumi.engines`), per-shard scoring
(:mod:`dokumi.scoring`), the manifest and the report.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from dokumi import remote
from dokumi.checkpoint import CHECKPOINT_DIR, Checkpoint, scan_key
from dokumi.engines import Engine, make_engine
from dokumi.errors import InputError, OutputError
from dokumi.logs import log
from dokumi.manifest import build_manifest, list_remaining_files, write_manifest
from dokumi.outfolder import MARKER, OutFolder
from dokumi.pipeline import DEFAULT_BATCH_SIZE, Pipeline
from dokumi.policy import Policy, load_policy, with_side_inputs
from dokumi.records import Columns
from dokumi.report import ScoresDigest, write_report
from dokumi.routing import output_format as output_format_for
from dokumi.scoring import ShardResult, id_hashes
from dokumi.sources import (
    Shard,
    open_inputs,
    refuse_inputs_inside,
    schema_warnings,
    spill_one_shot,
    usable_shards,
)
from dokumi.summary import ScanResult

# what the staging folder holds for the scan's own bookkeeping: removed before it becomes --out, never listed
PRIVATE = (CHECKPOINT_DIR, MARKER)


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
    reference: str | os.PathLike | None = None,
    protect: str | os.PathLike | None = None,
    index: str | os.PathLike | None = None,
    expect: str | os.PathLike | None = None,
    expect_key: str | os.PathLike | None = None,
    no_text: bool | None = None,
    sign_key: str | os.PathLike | None = None,
    engine: str = "local",
    scheduler: str | None = None,
    cache_mb: int | None = None,
    output_format: str | None = None,
    resume: bool = False,
) -> ScanResult:
    """Scan ``inputs`` with ``policy``; write the routed records, scores/, hashes/ and manifest.json to ``out``.

    The outputs appear all at once: they are written to a hidden sibling folder
    and renamed into place only when complete. One scan at a time writes to an
    ``out``; ``overwrite`` replaces only a folder that is a dokumi scan. With
    ``resume``, the work an interrupted scan of the same inputs, recipe and
    dokumi version finished (pass 1, each shard of pass 2) is reused, and the
    work of this one is kept if it fails (docs/outputs.md).

    ``workers`` (scoring processes) defaults to one per core, per shard and per
    32 MB of input files: a process costs 2-4 CPU-seconds to start. ``cache_mb``
    (default 512) bounds the decoded batches the local engine keeps between
    reads of the corpus; 0 reads the files again in every round.

    Side inputs go to the stages that declare them: ``reference`` (trusted data
    that ``embedding_anomaly`` fits on), ``protect`` (documents whose
    near-duplicates are dropped), ``index`` (an earlier scan whose records
    ``near_duplicates`` clusters with these), ``expect`` (an earlier scan whose
    record hashes ``provenance`` checks, once they match that scan's manifest and
    its signature; ``expect_key``: the public key that must have signed it). All
    are loaded and checked before any data is read. ``no_text`` (default: the
    policy's ``[privacy]``) keeps text out of the quarantine; ``sign_key`` signs
    the manifest (``dokumi keygen``).
    ``engine="dask"`` runs both passes on a Dask cluster: the one at the
    ``scheduler`` address, else a local one of ``workers`` processes
    (docs/scaling.md); the outputs are the same. ``output_format`` (``parquet`` or ``jsonl``)
    is the format of the routed records; default: each input's own (docs/outputs.md).
    ``inputs`` and ``out`` may be fsspec URLs (``s3://``, ``gs://``, ``hf://``, ``memory://``): inputs are
    streamed, and an ``out`` URL gets the finished scan uploaded, ``manifest.json`` last (docs/object-storage.md).
    """
    started = time.perf_counter()
    runner = make_engine(engine, workers=workers, scheduler=scheduler, cache_mb=cache_mb)
    policy = load_policy(policy)
    policy = with_side_inputs(policy, {"reference": reference, "protect": protect, "index": index,
                                       "expect": expect, "expect_key": expect_key})
    if no_text is not None:
        policy = replace(policy, no_text=no_text)
    output_format_for(None, output_format)  # an unknown format fails before any data is read
    # a dict names some roles; the recipe's [columns] (or the defaults) name the rest
    pipeline = Pipeline.from_policy(policy, columns=columns or policy.columns, batch_size=batch_size)
    target = remote.destination(out)  # an --out URL: scanned into a local folder, then published there
    local_root: str | None = None
    if target is not None:
        if resume:
            raise InputError("--resume needs a local --out: a scan to an object store starts again from nothing")
        target.refuse_existing(overwrite)
        local_root = tempfile.mkdtemp(prefix="dokumi-remote-out-")
        out = Path(local_root) / "scan"
    else:
        out = Path(remote.localize(out))
    try:
        result = _scan_into(out, target, inputs, overwrite, resume, pipeline, policy, runner, scheduler, workers,
                            progress, engine, sign_key, output_format, started)
    finally:
        if local_root is not None:
            shutil.rmtree(local_root, ignore_errors=True)
    return result


def _scan_into(out: Path, target: Any, inputs: Any, overwrite: bool, resume: bool, pipeline: Pipeline,
               policy: Policy, runner: Engine, scheduler: str | None, workers: int | None, progress: bool | None,
               engine: str, sign_key: Any, output_format: str | None, started: float) -> ScanResult:
    """The scan into the local folder ``out``; published to ``target`` (an object store) when given."""
    with OutFolder(out, overwrite=overwrite, resume=resume, private=(CHECKPOINT_DIR,)) as folder:
        folder.check()  # before any data is read: a refused --out costs nothing
        notices: list[str] = []  # files left out of the inputs' folders and globs, named
        shards = open_inputs(inputs, notices)
        refuse_inputs_inside(shards, target.url if target else folder.out)
        pipeline.setup()  # side inputs loaded and checked before any data is read
        shards, warnings, empty_inputs = usable_shards(shards)
        warnings = notices + warnings
        pipeline.check(shards)
        warnings += schema_warnings(shards)
        if scheduler and workers is not None:
            warnings.append(f"workers={workers} is ignored when joining the Dask cluster at {scheduler}")
        # checkpoints identify local files (size, modification time); an object store's are read afresh
        from_files = all(shard.path is not None and not remote.is_url(shard.path) for shard in shards)
        if resume and not from_files:
            raise InputError("--resume needs every input read from local files (Parquet, JSONL or CSV): "
                             "an in-memory table, an iterator or an object-store URL is not recognised again")
        log.info("scan of %d shard(s) with policy %r (sha256 %s) into %s, engine %s", len(shards), policy.name,
                 policy.sha256, folder.out, engine)
        options = {"no_text": policy.no_text, "output_format": output_format, "flag_folder": policy.flag_folder}
        staging = None
        try:
            staging, earlier = folder.staging()
            checkpoint = Checkpoint.open(staging, scan_key(policy, pipeline, shards, options), resume=earlier) \
                if from_files else None
            results, manifest = _run(pipeline, policy, shards, staging, target.url if target else folder.out, runner,
                                     warnings, empty_inputs,
                                     checkpoint if earlier else None, checkpoint, progress, engine, sign_key, options)
            folder.seal(staging)
        except BaseException as error:
            if staging is not None and not resume:
                folder.discard(staging)
            if isinstance(error, OSError) and out_of_space(error):
                kept = "kept: free some space and run again with --resume" if resume else "removed"
                raise OutputError(f"no space left on the device while writing the scan next to {folder.out} "
                                  f"({first_line(error)}); the partial output was {kept}") from None
            raise
        # sealed: from here a crash leaves a journal, and the next scan into this --out finishes the move
        folder.publish(staging)
        if target is not None:
            target.publish(folder.out)
    log.info("scan done: %s", ", ".join(f"{d} {n}" for d, n in manifest["counts"]["decisions"].items()))
    notes = folder.notes + (checkpoint.notes if checkpoint is not None else [])
    return ScanResult(
        out=target.url if target else folder.out,
        policy=policy.name,
        shards=results,
        warnings=warnings,
        seconds=time.perf_counter() - started,
        manifest=manifest,
        notes=notes,
    )


def _run(pipeline: Pipeline, policy: Policy, shards: list[Shard], staging: Path, out: Path | str, runner: Engine,
         warnings: list[str], empty_inputs: list[dict[str, Any]], earlier: Checkpoint | None,
         checkpoint: Checkpoint | None, progress: bool | None, engine: str,
         sign_key: str | os.PathLike | None, options: dict[str, Any]) -> tuple[list[ShardResult], dict[str, Any]]:
    """Both passes, the state, manifest and report into ``staging``, reusing what ``earlier`` (the
    checkpoints of an interrupted attempt) holds and keeping new ``checkpoint``s as it goes.
    ``options`` go to :func:`~dokumi.scoring.score_shard`."""
    fitted = earlier.load_fitted() if earlier is not None and pipeline.needs_fit else None
    if pipeline.needs_fit or engine == "dask":  # Dask workers cannot be handed a generator
        shards = spill_one_shot(shards, pipeline.columns, pipeline.batch_size, staging / "spill")
    with runner:
        if fitted is not None:
            pipeline.stages, fit_warnings = fitted
            warnings += fit_warnings
        else:
            fit_warnings = runner.fit(pipeline, shards, progress, staging=staging) if pipeline.needs_fit else []
            warnings += fit_warnings
            # saved before pass 2 (scoring never changes fitted state), while this process holds all of it:
            # the copies that scoring processes (and a resumed scan) receive leave out what only state/ needs
            shutil.rmtree(staging / "state", ignore_errors=True)  # an interrupted attempt's, not vouched for
            for stage in pipeline.stages:
                stage.save_state(staging / "state" / stage.name)
            if checkpoint is not None and pipeline.needs_fit:
                checkpoint.save_fitted(pipeline.stages, fit_warnings)
        pipeline.fitted_ = True
        finished = earlier.finished_shards(shards) if earlier is not None else {}
        results = runner.score(pipeline, shards, staging, progress, finished=finished,
                               on_result=checkpoint.save_shard if checkpoint is not None else None, **options)
    warnings += [note for r in results for note in r.notes]  # unreadable lines, broken streams
    warnings += [f"shard {r.shard} has no records" for r in results if not r.records + r.unreadable]
    # a stage (or one of its detectors) that stood aside on this corpus says so in the summary
    warnings += [f"stage {stage.name}: {reason}" for stage in pipeline.stages
                 for reason in stage.summary().get("skipped", [])]
    warnings += duplicate_id_warnings(results, shards, pipeline)
    for warning in warnings:
        log.warning(warning)
    shutil.rmtree(staging / "spill", ignore_errors=True)
    manifest = build_manifest(policy, pipeline, results, empty_inputs, warnings, staging, destination=out,
                              state_hashes=checkpoint.state_hashes if checkpoint is not None else None)
    # before the manifest is written: it lists the report too
    write_report(staging, manifest=manifest, digests=_report_digests(results))
    list_remaining_files(manifest, staging, leave_out=PRIVATE)
    write_manifest(manifest, staging / "manifest.json")
    if sign_key is not None:
        from dokumi.signing import sign_manifest

        sign_manifest(staging / "manifest.json", sign_key)
    return results, manifest


def _report_digests(results: list[ShardResult]) -> list[ScoresDigest] | None:
    """The shards' digests of their scores in the order of the scores files' names (the report's reading
    order); None where a shard has scores but no digest (a checkpoint of an older version): read them."""
    named = []
    for result in results:
        files = sorted(Path(o["path"]).name for o in result.outputs if o["kind"] == "scores")
        if not files:
            continue
        if result.digest is None:
            return None
        named.append((files[0], result.digest))
    return [digest for _, digest in sorted(named, key=lambda pair: pair[0])]


def out_of_space(error: OSError) -> bool:
    """Whether ``error`` says the disk (or the user's quota) is full; Arrow's errors name it only in words."""
    codes = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
    return error.errno in codes or any(words in str(error) for words in ("No space left", "Disk quota exceeded"))


def first_line(error: BaseException) -> str:
    """The first line of ``error``'s message (its type's name when it has none): messages stay one line."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def duplicate_id_warnings(
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
            for value, row in zip(id_hashes(batch.ids).tolist(), batch.rows.to_pylist()):
                if value in places:
                    places[value].append(f"{shard.name} row {row}")
    id_column = pipeline.columns.id
    warnings = [
        f"{extra:,} records repeat an id of column '{id_column}' (all kept; scores/ tells them apart by shard and row)"
    ]
    warnings += [f"duplicate id in column '{id_column}' at {', '.join(p[:4])}" for p in places.values()]
    return warnings


__all__ = ["ScanResult", "scan"]
