"""`dokumi scan`: read shards, fit, score, decide, and write the outputs of DESIGN.md atomically.

This module only orchestrates: inputs (:mod:`dokumi.sources`), the pipeline
and its recipe (:mod:`dokumi.pipeline`, :mod:`dokumi.policy`), an engine for
the two passes (:mod:`dokumi.engines`), per-shard scoring
(:mod:`dokumi.scoring`), the manifest and the report.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from dokumi import remote
from dokumi.engines import make_engine
from dokumi.logs import log
from dokumi.manifest import build_manifest, list_remaining_files, write_manifest
from dokumi.outputs import publish, refuse_existing, staging_folder
from dokumi.pipeline import DEFAULT_BATCH_SIZE, Pipeline
from dokumi.policy import Policy, load_policy, with_side_inputs
from dokumi.records import Columns
from dokumi.report import write_report
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
) -> ScanResult:
    """Scan ``inputs`` with ``policy``; write the routed records, scores/, hashes/ and manifest.json to ``out``.

    The outputs appear all at once: they are written to a hidden sibling folder
    and renamed into place only when complete. ``workers`` (scoring processes)
    defaults to one per core, per shard and per 32 MB of input files: a process
    costs 2-4 CPU-seconds to start. ``cache_mb`` (default 512) bounds the decoded
    batches the local engine keeps between reads of the corpus; 0 reads the
    files again in every round.

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
    if target is not None:
        target.refuse_existing(overwrite)
        local_root = tempfile.mkdtemp(prefix="dokumi-remote-out-")
    out = Path(remote.localize(out)) if target is None else Path(local_root) / "scan"
    refuse_existing(out, overwrite)
    pipeline.setup()  # side inputs loaded and checked before any data is read
    notices: list[str] = []  # files left out of the inputs' folders and globs, named
    shards, warnings, empty_inputs = usable_shards(open_inputs(inputs, notices))
    warnings = notices + warnings
    refuse_inputs_inside(shards, target.url if target else out)
    pipeline.check(shards)
    warnings += schema_warnings(shards)
    if scheduler and workers is not None:
        warnings.append(f"workers={workers} is ignored when joining the Dask cluster at {scheduler}")
    staging = staging_folder(out)
    log.info("scan of %d shard(s) with policy %r (sha256 %s) into %s, engine %s", len(shards), policy.name,
             policy.sha256, out, engine)
    try:
        if pipeline.needs_fit or engine == "dask":  # Dask workers cannot be handed a generator
            shards = spill_one_shot(shards, pipeline.columns, pipeline.batch_size, staging / "spill")
        with runner:
            if pipeline.needs_fit:
                warnings += runner.fit(pipeline, shards, progress)
                pipeline.fitted_ = True
            results = runner.score(pipeline, shards, staging, progress, no_text=policy.no_text,
                                   output_format=output_format, flag_folder=policy.flag_folder)
        warnings += [note for r in results for note in r.notes]  # unreadable lines, broken streams
        warnings += [f"shard {r.shard} has no records" for r in results if not r.records + r.unreadable]
        # a stage (or one of its detectors) that stood aside on this corpus says so in the summary
        warnings += [f"stage {stage.name}: {reason}" for stage in pipeline.stages
                     for reason in stage.summary().get("skipped", [])]
        warnings += duplicate_id_warnings(results, shards, pipeline)
        for warning in warnings:
            log.warning(warning)
        for stage in pipeline.stages:
            stage.save_state(staging / "state" / stage.name)
        shutil.rmtree(staging / "spill", ignore_errors=True)
        manifest = build_manifest(policy, pipeline, results, empty_inputs, warnings, staging,
                                  destination=target.url if target else out)
        write_report(staging, manifest=manifest)  # before the manifest is written: it lists the report too
        list_remaining_files(manifest, staging)
        write_manifest(manifest, staging / "manifest.json")
        if sign_key is not None:
            from dokumi.signing import sign_manifest

            sign_manifest(staging / "manifest.json", sign_key)
        publish(staging, out)
        if target is not None:
            target.publish(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if target is not None:
            shutil.rmtree(local_root, ignore_errors=True)
    log.info("scan done: %s", ", ".join(f"{d} {n}" for d, n in manifest["counts"]["decisions"].items()))
    return ScanResult(
        out=target.url if target else out,
        policy=policy.name,
        shards=results,
        warnings=warnings,
        seconds=time.perf_counter() - started,
        manifest=manifest,
    )


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
