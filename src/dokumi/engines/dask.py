"""The Dask engine: a scan's pass 1 and pass 2 on a dask.distributed cluster (``--engine dask``).

Without a scheduler address it starts a ``LocalCluster`` on 127.0.0.1 and
closes it afterwards; with one it joins that cluster and leaves it running.

Pass 1 interprets the stages' fit plans (:mod:`dokumi.fitplan`) with Dask's
own operations, round by round: one task per shard reads it once and folds it
into a partial for every stage with a step in the round; a :class:`~dokumi.fitplan.Reduce`
step's partials are merged in a tree of tasks, a :class:`~dokumi.fitplan.GroupByKey`
step's key rows are grouped by a Dask DataFrame shuffle; each stage finishes on
the driver, and goes to the workers again for the next round. Pass 2 is one
task per shard running :func:`dokumi.scoring.score_shard`. Each task writes
into a folder of its own and renames its files into place at the end, so a
task that Dask retries after its worker died overwrites its outputs instead
of duplicating them.

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
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from dokumi.engines import Engine
from dokumi.engines.local import CorpusBatches, fit_plans, total_rows
from dokumi.errors import InputError
from dokumi.fitplan import GroupByKey, KeyPartial, Reduce, partition_partials, shared_key_groups
from dokumi.progress import progress_bar
from dokumi.records import Columns
from dokumi.scoring import ShardResult, score_shard
from dokumi.sources import Shard
from dokumi.stage import Stage

if TYPE_CHECKING:
    from dokumi.pipeline import Pipeline

# Partials merged per task of a tree reduction: few enough that a task's memory stays small.
MERGE_FAN_IN = 8
# Engine-private folders inside the staging folder, removed before the manifest is written.
PRIVATE_DIRS = (".dask-tasks", ".dask-pipeline")


class DaskEngine(Engine):
    """A connection to a Dask cluster for one scan; use as a context manager.

    ``scheduler`` is the address of a running scheduler (``tcp://host:8786``);
    without one a ``LocalCluster`` of ``workers`` single-threaded worker
    processes (default: one per core) is started on 127.0.0.1 and closed on
    exit. A cluster that was joined is never shut down.
    """

    name = "dask"

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

    def fit(self, pipeline: Pipeline, shards: list[Shard], progress: bool | None = None) -> list[str]:
        """Pass 1: every stage's fit plan, one read of every shard per round for all stages together."""
        remote = [_for_workers(shard) for shard in shards]
        plans = fit_plans(pipeline.stages)
        rounds = max((len(plan) for _, plan in plans), default=0)
        for index in range(rounds):
            active = [(stage, plan[index]) for stage, plan in plans if index < len(plan) and plan[index].needed()]
            if not active:
                continue
            bar = progress_bar(len(remote), f"fit {index + 1}/{rounds} (shards)", enabled=progress)
            self._round([stage for stage, _ in active], [step for _, step in active], index, remote,
                        pipeline.columns, pipeline.batch_size, pipeline.records.max_text_bytes, bar.update)
            bar.close()
        return []

    def _round(self, stages: list[Stage], steps: list[Any], index: int, shards: list[Shard], columns: Columns,
               batch_size: int, max_text_bytes: int, update: Any) -> None:
        """One round: a task per shard folds it for every step; then each step merges or groups and finishes."""
        from distributed import as_completed

        client = self.client_
        # the stages as they stand after the last round's finish, sent once to each worker that needs them
        [held] = client.scatter([_Stages(stages, index)], hash=False)
        reader = functools.partial(_partition_round, columns=columns, batch_size=batch_size,
                                   max_text_bytes=max_text_bytes)
        parts = client.map(reader, [held] * len(shards), shards, pure=False) if shards else [
            client.submit(reader, held, None, pure=False)]
        for future in as_completed(parts):
            future.result()  # raise a worker's error here, before merging
            update(1)
        try:
            for position, step in enumerate(steps):
                picked = client.map(_pick, parts, [position] * len(parts), pure=False)
                if isinstance(step, Reduce):
                    step.finish(self._tree(held, position, picked, _merge_partials))
                else:
                    self._group(step, held, position, picked)
                client.cancel(picked)
        finally:
            client.cancel(parts + [held])

    def _tree(self, held: Any, position: int, level: list[Any], merge: Any) -> Any:
        """Merge the partials of ``level`` on the workers, MERGE_FAN_IN at a time; the result on the driver."""
        client = self.client_
        while len(level) > 1:
            level = [client.submit(merge, held, position, *level[i: i + MERGE_FAN_IN], pure=False)
                     for i in range(0, len(level), MERGE_FAN_IN)]
        result = level[0].result()
        client.cancel(level)
        return result

    def _group(self, step: GroupByKey, held: Any, position: int, picked: list[Any]) -> None:
        import dask
        import dask.dataframe

        client = self.client_
        frames = client.map(_key_frame, picked, pure=False)
        if step.extra is not None:
            frames.append(client.scatter(_pandas(step.extra().cast(step.schema))))
        frame = dask.dataframe.from_delayed(frames, meta=_pandas(step.schema.empty_table()), verify_meta=False)
        by_key = frame.shuffle(on="key", npartitions=max(len(picked), 1))
        groups = client.compute([dask.delayed(_groups_of)(part, step.schema) for part in by_key.to_delayed()])
        side = None
        if step.partial is not None:
            sides = client.map(_side_of, picked, pure=False)
            side = self._tree(held, position, sides, _merge_sides)
        step.finish(_results_as_completed(groups, frames), side)

    def score(
        self, pipeline: Pipeline, shards: list[Shard], staging: Path, progress: bool | None = None,
        **score_options: Any,
    ) -> list[ShardResult]:
        """Pass 2: one task per shard; returns the shards' results in input order.

        ``score_options`` are passed on to :func:`~dokumi.scoring.score_shard`.
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
        bar = progress_bar(total_rows(shards), "score", enabled=progress)
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


def _for_workers(shard: Shard) -> Shard:
    """A file shard by its absolute path, so workers with another working directory find it."""
    file = getattr(shard, "file", None)
    if not file or os.path.isabs(file):
        return shard
    return dataclasses.replace(shard, file=os.path.abspath(file))


class _Stages:
    """The stages of one round as one object, so each worker fetches them once per round."""

    def __init__(self, stages: list[Stage], index: int) -> None:
        self.stages, self.index = stages, index
        self._steps: list[Any] | None = None

    @property
    def steps(self) -> list[Any]:
        if self._steps is None:
            self._steps = [stage.fit_plan()[self.index] for stage in self.stages]
        return self._steps

    def __getstate__(self) -> dict[str, Any]:
        return {"stages": self.stages, "index": self.index, "_steps": None}


def _partition_round(held: _Stages, shard: Shard | None, columns: Columns, batch_size: int,
                     max_text_bytes: int) -> list[Any]:
    """One shard's partial for every step of the round (``None``: an empty partition)."""
    batches = CorpusBatches([shard] if shard is not None else [], columns, batch_size, max_text_bytes)
    return partition_partials(held.steps, batches)


def _pick(partials: list[Any], position: int) -> Any:
    return partials[position]


def _merge_partials(held: _Stages, position: int, *partials: Any) -> Any:
    return held.steps[position].merge(list(partials))


def _merge_sides(held: _Stages, position: int, *partials: Any) -> Any:
    return held.steps[position].partial.merge(list(partials))


def _side_of(partial: KeyPartial) -> Any:
    return partial.side


def _key_frame(partial: KeyPartial) -> Any:
    return _pandas(partial.keys)


def _pandas(table: pa.Table) -> Any:
    """``table`` as a pandas frame of Arrow-backed columns: binary members stay bytes, where Dask
    would turn a column of Python objects into strings. The shuffle only names variable-width
    binary types, so fixed-width ones travel as those (``_groups_of`` casts them back)."""
    import pandas as pd

    fields = [pa.field(f.name, pa.binary()) if pa.types.is_fixed_size_binary(f.type) else f for f in table.schema]
    return table.cast(pa.schema(fields)).to_pandas(types_mapper=pd.ArrowDtype)


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


__all__ = ["DaskEngine"]
