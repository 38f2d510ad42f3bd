"""The Dask executor: a scan's pass 1 and pass 2 on a dask.distributed cluster (``--engine dask``).

Without a scheduler address it starts a ``LocalCluster`` on 127.0.0.1 and
closes it afterwards; with one it joins that cluster and leaves it running.

Pass 1 fits each stage that needs it with Dask's own operations: a tree
reduction (a ``dask.delayed`` graph) per round for :class:`~dokumi.engines.PartitionFit`
stages, a Dask DataFrame shuffle for :class:`~dokumi.engines.KeyGroupFit`
stages; any other stage is fitted on the driver. Pass 2 is one task per shard running
:func:`dokumi.scan.score_shard`. Each task writes into a folder of its own and
renames its files into place at the end, so a task that Dask retries after its
worker died overwrites its outputs instead of duplicating them.

Workers open the inputs and the staging folder by the driver's absolute
paths: on a multi-node cluster both must lie on a shared file system, and the
stages' modules must be importable on every worker.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import pickle
import shutil
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from dokumi.engines import distributed_fit_kind, fit_rounds, round_arguments, shared_key_groups, split_keys
from dokumi.errors import InputError
from dokumi.pipeline import CorpusBatches, Pipeline
from dokumi.progress import progress_bar
from dokumi.records import Batch, Columns
from dokumi.scan import ShardResult, _total_rows, score_shard
from dokumi.sources import Shard
from dokumi.stage import Stage

# Partials merged per task of a tree reduction: few enough that a task's memory stays small.
MERGE_FAN_IN = 8
# Engine-private folders inside the staging folder, removed before the manifest is written.
PRIVATE_DIRS = (".dask-tasks", ".dask-pipeline")


class DaskEngine:
    """A connection to a Dask cluster for one scan; use as a context manager.

    ``scheduler`` is the address of a running scheduler (``tcp://host:8786``);
    without one a ``LocalCluster`` of ``workers`` single-threaded worker
    processes (default: one per core) is started on 127.0.0.1 and closed on
    exit. A cluster that was joined is never shut down.
    """

    def __init__(self, scheduler: str | None = None, workers: int | None = None) -> None:
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.scheduler = scheduler
        self.workers = workers
        self.client_: Any = None
        self.cluster_: Any = None

    def __enter__(self) -> DaskEngine:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise InputError("--engine dask needs dask.distributed: pip install 'dokumi[dask]'") from None
        if self.scheduler:
            try:
                self.client_ = Client(self.scheduler)
            except OSError as error:
                raise InputError(f"cannot reach the Dask scheduler at {self.scheduler}: {error}") from None
            return self
        self.cluster_ = LocalCluster(
            n_workers=self.workers or os.cpu_count() or 1,
            threads_per_worker=1,  # stages run Python code: processes, not threads, give parallelism
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            # the scheduler's health and metrics pages still listen: on loopback, on a free port
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            # a failed task reaches the scan as its exception; the cluster's own logs (heartbeats
            # missed while it shuts down on a busy machine) would only clutter the CLI's output
            silence_logs=logging.CRITICAL,
        )
        self.client_ = Client(self.cluster_)
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.client_ is not None:
            self.client_.close()
        if self.cluster_ is not None:
            self.cluster_.close()
        self.client_ = self.cluster_ = None

    def fit(self, pipeline: Pipeline, shards: list[Shard]) -> list[str]:
        """Pass 1 for every stage that needs it; returns warnings (stages fitted on the driver)."""
        remote = [_for_workers(shard) for shard in shards]
        on_driver = []
        for stage in pipeline.stages:
            if not stage.needs_fit:
                continue
            kind = distributed_fit_kind(stage)
            if kind == "reduction":
                self._fit_by_reduction(stage, remote, pipeline.columns, pipeline.batch_size)
            elif kind == "shuffle":
                self._fit_by_shuffle(stage, remote, pipeline.columns, pipeline.batch_size)
            else:
                stage.fit(CorpusBatches(shards, pipeline.columns, pipeline.batch_size))
                on_driver.append(stage.name)
        pipeline.fitted_ = True
        if not on_driver:
            return []
        return [
            f"stages fitted on the driver, not distributed (they implement no distributed fit protocol): "
            f"{', '.join(on_driver)}"
        ]

    def _fit_by_reduction(self, stage: Stage, shards: list[Shard], columns: Columns, batch_size: int) -> None:
        import dask

        for round_index in range(fit_rounds(stage)):
            extra = round_arguments(stage, round_index)
            # One node of the graph holds the stage, as it stands after the last round's fit_finish, so
            # each worker fetches it once, not once per task (between rounds, triggers carries a naive
            # Bayes model of a few MB per label); a lost copy is recomputed from the graph.
            shared = dask.delayed(stage, name=f"fit-{stage.name}-{round_index}-{uuid.uuid4().hex}")
            level = [dask.delayed(_fit_partition, pure=False)(shard, shared, columns, batch_size, extra)
                     for shard in shards] or [dask.delayed(_fit_partition, pure=False)(None, shared, columns,
                                                                                      batch_size, extra)]
            while len(level) > 1:  # a tree reduction, MERGE_FAN_IN partials per task
                level = [dask.delayed(_merge_partials, pure=False)(shared, extra, *level[i: i + MERGE_FAN_IN])
                         for i in range(0, len(level), MERGE_FAN_IN)]
            total = self.client_.compute(level[0])
            stage.fit_finish(total.result(), *extra)
            total.release()

    def _fit_by_shuffle(self, stage: Stage, shards: list[Shard], columns: Columns, batch_size: int) -> None:
        import dask
        import dask.dataframe

        # the protocol: the same schema (and a partial or not) when there are no records
        empty, partial = split_keys(stage.fit_keys(iter(())))
        schema = empty.schema
        outputs = self.client_.map(functools.partial(_partition_keys, stage, columns, batch_size), shards,
                                   pure=False)
        parts = self.client_.map(_key_frame, outputs, pure=False)
        if hasattr(stage, "fit_extra_keys"):
            parts.append(self.client_.scatter(_as_frame(stage, stage.fit_extra_keys())))
        frame = dask.dataframe.from_delayed(parts, meta=_pandas(schema.empty_table()), verify_meta=False)
        by_key = frame.shuffle(on="key", npartitions=len(shards))
        groups = self.client_.compute([dask.delayed(_groups_of)(part, schema) for part in by_key.to_delayed()])
        if partial:
            partials = self.client_.gather(self.client_.map(_partition_partial, outputs, pure=False))
            stage.fit_groups(_results_as_completed(groups, outputs + parts), partials)
        else:
            stage.fit_groups(_results_as_completed(groups, outputs + parts))

    def score(
        self, pipeline: Pipeline, shards: list[Shard], staging: Path, progress: bool | None = None,
        **score_options: Any,
    ) -> list[ShardResult]:
        """Pass 2: one task per shard; returns the shards' results in input order.

        ``score_options`` are passed on to :func:`~dokumi.scan.score_shard`.
        """
        pipeline_file = staging / PRIVATE_DIRS[1] / "pipeline.pkl"
        pipeline_file.parent.mkdir(parents=True, exist_ok=True)
        with open(pipeline_file, "wb") as handle:
            pickle.dump(pipeline, handle, protocol=pickle.HIGHEST_PROTOCOL)
        futures = [
            self.client_.submit(_score_task, str(pipeline_file), index, _for_workers(shard), str(staging),
                                score_options, pure=False)
            for index, shard in enumerate(shards)
        ]
        position = {future.key: index for index, future in enumerate(futures)}
        done: dict[int, ShardResult] = {}
        bar = progress_bar(_total_rows(shards), "score", enabled=progress)
        try:
            from distributed import as_completed

            for future in as_completed(futures):
                result = done[position[future.key]] = future.result()
                # Forget the result on the cluster: were its worker to die now, Dask would
                # otherwise run the task again while the driver hashes the published files.
                future.release()
                bar.update(result.records + result.unreadable)
        except BaseException:
            self.client_.cancel(futures)
            raise
        finally:
            bar.close()
        results = [done[index] for index in range(len(shards))]
        for result, shard in zip(results, shards):
            result.path = shard.path  # as given, not made absolute: the manifest keeps paths portable
        for name in PRIVATE_DIRS:
            shutil.rmtree(staging / name, ignore_errors=True)
        return results


def run_passes(
    pipeline: Pipeline,
    shards: list[Shard],
    staging: Path,
    *,
    scheduler: str | None,
    workers: int | None,
    progress: bool | None,
    warnings: list[str],
    **score_options: Any,
) -> list[ShardResult]:
    """Pass 1 (where needed) and pass 2 of a scan on Dask; appends the engine's warnings to ``warnings``."""
    if scheduler and workers is not None:
        warnings.append(f"workers={workers} is ignored when joining the Dask cluster at {scheduler}")
    with DaskEngine(scheduler=scheduler, workers=None if scheduler else workers) as engine:
        if pipeline.needs_fit:
            warnings += engine.fit(pipeline, shards)
        return engine.score(pipeline, shards, staging, progress, **score_options)


def _for_workers(shard: Shard) -> Shard:
    """A file shard by its absolute path, so workers with another working directory find it."""
    file = getattr(shard, "file", None)
    if not file or os.path.isabs(file):
        return shard
    return dataclasses.replace(shard, file=os.path.abspath(file))


def _batches_of(shards: Iterable[Shard], columns: Columns, batch_size: int) -> Iterator[Batch]:
    for shard in shards:
        yield from shard.batches(columns, batch_size)


def _fit_partition(shard: Shard | None, stage: Stage, columns: Columns, batch_size: int, extra: tuple[int, ...]) -> Any:
    """One shard's partial (``None``: an empty partition); the shard is read only if the stage iterates."""
    return stage.fit_partition(_batches_of([shard] if shard else [], columns, batch_size), *extra)


def _merge_partials(stage: Stage, extra: tuple[int, ...], *partials: Any) -> Any:
    return stage.fit_merge(list(partials), *extra)


def _partition_keys(stage: Stage, columns: Columns, batch_size: int, shard: Shard) -> tuple[Any, tuple[Any, ...]]:
    """One shard's key rows as a pandas frame, and its partial (an empty or one-item tuple)."""
    keys, partial = split_keys(stage.fit_keys(shard.batches(columns, batch_size)))
    return _as_frame(stage, keys), partial


def _as_frame(stage: Stage, keys: pa.Table) -> Any:
    if keys.schema.names != ["key", "member"]:
        raise ValueError(f"stage {stage.name!r}: fit_keys must return columns ['key', 'member'], "
                         f"got {keys.schema.names}")
    return _pandas(keys)


def _pandas(table: pa.Table) -> Any:
    """``table`` as a pandas frame of Arrow-backed columns: binary members stay bytes, where Dask
    would turn a column of Python objects into strings. The shuffle only names variable-width
    binary types, so fixed-width ones travel as those (``_groups_of`` casts them back)."""
    import pandas as pd

    fields = [pa.field(f.name, pa.binary()) if pa.types.is_fixed_size_binary(f.type) else f for f in table.schema]
    return table.cast(pa.schema(fields)).to_pandas(types_mapper=pd.ArrowDtype)


def _key_frame(output: tuple[Any, tuple[Any, ...]]) -> Any:
    return output[0]


def _partition_partial(output: tuple[Any, tuple[Any, ...]]) -> Any:
    return output[1][0]


def _groups_of(part: Any, schema: pa.Schema) -> pa.Table:
    """One shuffled partition (all rows of its keys) grouped by key."""
    return shared_key_groups(pa.Table.from_pandas(part, preserve_index=False).select(["key", "member"]).cast(schema))


def _results_as_completed(futures: list[Any], inputs: list[Any] = ()) -> Iterator[pa.Table]:
    """Each future's result as it arrives, releasing it on the cluster once read; ``inputs`` (the
    futures the results were computed from) are released once the first result is in."""
    from distributed import as_completed

    for future in as_completed(futures):
        result = future.result()
        future.release()
        for done in inputs:
            done.release()
        inputs = ()
        yield result


@functools.lru_cache(maxsize=2)
def _load_pipeline(path: str) -> Pipeline:
    """The fitted pipeline, read once per worker process from the staging folder."""
    with open(path, "rb") as handle:
        return pickle.load(handle)


def _score_task(pipeline_file: str, index: int, shard: Shard, staging: str, score_options: dict) -> ShardResult:
    """Score one shard into a folder of this attempt's own, then rename each file into place.

    A retry after a dead worker writes the same file names and replaces them,
    so no record is written twice; a dead attempt's folder is never renamed.
    """
    staging_dir = Path(staging)
    attempt = staging_dir / PRIVATE_DIRS[0] / uuid.uuid4().hex
    result = score_shard(_load_pipeline(pipeline_file), index, shard, attempt, lambda records: None,
                         **score_options)
    published = []
    for output in result.outputs:
        source = Path(output["path"])
        target = staging_dir / source.relative_to(attempt)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        published.append({**output, "path": target})
    result.outputs = published
    shutil.rmtree(attempt, ignore_errors=True)
    return result


__all__ = ["DaskEngine", "run_passes"]
