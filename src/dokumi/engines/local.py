"""The local engine: pass 1 in this process, pass 2 in one process per core (the default).

Pass 1 interprets the stages' fit plans (:mod:`dokumi.fitplan`) with the whole
corpus as one partition: round by round, it reads the corpus once and hands
every batch to each stage that has a step in the round. ``Stage.fit`` runs the
same interpreter, so a stage fitted alone and one fitted in a scan agree.
Pass 2 scores each shard in a worker process (``spawn``: nothing of the
parent's threads or open files is inherited).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dokumi import remote
from dokumi.checkpoint import hash_outputs
from dokumi.engines import Engine
from dokumi.errors import DokumiError
from dokumi.fitplan import GroupByKey, KeyPartial, Reduce, Step, partition_partials, shared_key_groups
from dokumi.progress import progress_bar
from dokumi.records import Batch, Columns
from dokumi.scoring import ShardResult, score_shard
from dokumi.sideinputs import prepare
from dokumi.sources import Shard
from dokumi.stage import Stage

if TYPE_CHECKING:
    from dokumi.pipeline import Pipeline


# Decoded batches the local engine keeps between reads, estimated as this many times their Arrow bytes
# (the words, hashes and digests computed on them): a corpus that fits is read from disk and tokenised once.
CACHE_BYTES = 512 * 2**20
_DECODED_PER_ARROW_BYTE = 6
# What stages derive from a kept batch and keep with it (Batch.derived: the trigger statistics' n-grams
# and sentences), estimated the same way: about 17 more, measured as peak memory on 9.4 MB of labelled
# man pages. A batch keeps them only while they fit the budget too; otherwise they are derived again.
_DERIVED_PER_ARROW_BYTE = 18


class CorpusBatches:
    """Every batch of every shard, read again from the start on each iteration (``reads`` counts them).

    Records above ``max_text_bytes`` are left out: the recipe routes them unread,
    so no stage or sketch spends time on them. With ``cache_bytes``, the batches of
    whole shards are kept after the first read while they fit in that budget, with
    what stages computed on them (words, hashes), and later reads reuse them.
    """

    def __init__(self, shards: list[Shard], columns: Columns, batch_size: int,
                 max_text_bytes: int | None = None, cache_bytes: int = 0) -> None:
        self.shards = shards
        self.columns = columns
        self.batch_size = batch_size
        self.max_text_bytes = max_text_bytes
        self.cache_bytes = cache_bytes
        self.reads = 0
        self._cached: dict[int, list[Batch]] = {}
        self._used = 0

    def __iter__(self) -> Iterator[Batch]:
        self.reads += 1
        for index, shard in enumerate(self.shards):
            cached = self._cached.get(index)
            if cached is not None:
                for batch in cached:
                    yield within_limit(batch, self.max_text_bytes)
                continue
            kept: list[Batch] | None = [] if self._used < self.cache_bytes else None
            costs: list[int] = []
            for batch in shard.batches(self.columns, self.batch_size):
                if kept is not None:
                    cost = _DECODED_PER_ARROW_BYTE * batch.records.nbytes
                    derived = _DERIVED_PER_ARROW_BYTE * batch.records.nbytes
                    if self._used + cost + derived <= self.cache_bytes:
                        batch.keep_derived()
                        cost += derived
                    kept.append(batch)
                    costs.append(cost)
                    self._used += cost
                    if self._used > self.cache_bytes:
                        self._used -= sum(costs)
                        for dropped in kept:
                            dropped.forget_derived()
                        kept = None
                yield within_limit(batch, self.max_text_bytes)
            if kept is not None:
                self._cached[index] = kept

    @property
    def cached_bytes(self) -> int:
        """What the kept batches are estimated to take."""
        return self._used

    def cached(self, index: int) -> list[Batch] | None:
        """Every batch of shard ``index`` (all its records) when the cache holds the whole shard."""
        return self._cached.get(index)


def within_limit(batch: Batch, max_text_bytes: int | None) -> Batch:
    """``batch`` without its records above ``max_text_bytes`` (the same batch when there are none)."""
    if max_text_bytes is None or not batch.num_rows:
        return batch
    small = batch.content_bytes <= max_text_bytes
    if small.all():
        return batch
    import numpy as np

    return batch.select(np.flatnonzero(small))


def fit_stages(
    stages: list[Stage],
    batches: Iterable[Batch],
    *,
    columns: Columns | None = None,
    batch_size: int = 1024,
    progress: bool | None = False,
    total: int | None = None,
) -> int:
    """Fit ``stages`` on ``batches`` by their plans, reading ``batches`` once per round; returns the reads.

    Stages not yet set up are set up first (side inputs loaded) with ``columns`` and ``batch_size``.
    """
    prepare(stages, columns or Columns(), batch_size)
    plans = fit_plans(stages)
    rounds = max((len(plan) for _, plan in plans), default=0)
    reads = 0
    for index in range(rounds):
        steps = [step for _, plan in plans if index < len(plan) for step in [plan[index]] if step.needed()]
        if not steps:
            continue
        bar = progress_bar(total, f"fit {index + 1}/{rounds}", enabled=progress)
        partials = partition_partials(steps, _counting(batches, bar.update))
        bar.close()
        reads += 1
        for step, partial in zip(steps, partials):
            finish_locally(step, partial)
    return reads


def fit_plans(stages: list[Stage]) -> list[tuple[Stage, list[Step]]]:
    """Every stage that needs a fit, with its plan; a stage that needs one and declares none is an error."""
    plans = []
    for stage in stages:
        if not stage.needs_fit:
            continue
        plan = stage.fit_plan()
        if not plan:
            raise TypeError(f"stage {stage.name!r} needs a fit but its fit_plan() declares no step "
                            "(see docs/architecture.md, 'Writing a stage')")
        plans.append((stage, plan))
    return plans


def finish_locally(step: Step, partial: Any) -> None:
    """Finish one step from the single partition's partial (no merge is needed)."""
    if isinstance(step, Reduce):
        step.finish(partial)
        return
    assert isinstance(step, GroupByKey) and isinstance(partial, KeyPartial)
    keys = partial.keys
    extra = step.extra() if step.extra is not None else None
    if extra is not None and extra.num_rows:
        import pyarrow as pa

        keys = pa.concat_tables([keys, extra.cast(step.schema)])
    groups = shared_key_groups(keys)
    del keys, extra, partial.keys  # the rows of every key can be far larger than the groups
    step.finish([groups], partial.side)


class _counting:
    """A re-iterable view of batches that reports progress as it goes."""

    def __init__(self, batches: Iterable[Batch], update: Callable[[int], Any]) -> None:
        self.batches, self.update = batches, update

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.batches:
            yield batch
            self.update(batch.num_rows + len(batch.unreadable))


def total_rows(shards: list[Shard]) -> int | None:
    """Rows in all shards where every shard knows its count cheaply, else None."""
    total = 0
    for shard in shards:
        rows = shard.num_rows()
        if rows is None:
            return None
        total += rows
    return total


# Input bytes a scoring process must have before another one pays for itself: a spawned process imports
# the stages' libraries and unpickles the fitted pipeline, 2-4 CPU-seconds before it scores anything.
BYTES_PER_WORKER = 32 * 2**20


def default_workers(shards: list[Shard]) -> int:
    """One scoring process per core, per shard and per :data:`BYTES_PER_WORKER` of input files."""
    size = sum(remote.size(shard.path) for shard in shards if shard.path is not None)
    return max(1, min(os.cpu_count() or 1, len(shards), -(-size // BYTES_PER_WORKER)))


class LocalEngine(Engine):
    """Pass 1 in this process; pass 2 in ``workers`` processes (default: :func:`default_workers`)."""

    name = "local"

    def __init__(self, workers: int | None = None, cache_bytes: int = CACHE_BYTES) -> None:
        self.workers = workers
        self.cache_bytes = cache_bytes
        self.corpus_: CorpusBatches | None = None

    def fit(self, pipeline: Pipeline, shards: list[Shard], progress: bool | None = None,
            staging: Path | None = None) -> list[str]:
        self.corpus_ = CorpusBatches(shards, pipeline.columns, pipeline.batch_size, pipeline.records.max_text_bytes,
                                     cache_bytes=self.cache_bytes)
        fit_stages(pipeline.stages, self.corpus_, columns=pipeline.columns, batch_size=pipeline.batch_size,
                   progress=progress, total=total_rows(shards))
        return []

    def score(self, pipeline: Pipeline, shards: list[Shard], staging: Path, progress: bool | None = None,
              finished: Mapping[int, ShardResult] | None = None,
              on_result: Callable[[int, ShardResult], Any] | None = None, **options: Any) -> list[ShardResult]:
        results = dict(finished or {})
        todo = [i for i in range(len(shards)) if i not in results]

        def done(index: int, result: ShardResult) -> None:
            results[index] = result
            if on_result is not None:
                on_result(index, result)

        bar = progress_bar(total_rows([shards[i] for i in todo]), "score", enabled=progress)
        workers = min(self.workers, len(todo)) if self.workers else default_workers([shards[i] for i in todo])
        # a memory:// object exists only in this process
        paths = [shards[i].path for i in todo]
        parallel = workers > 1 and all(path is not None and remote.shareable(path) for path in paths)
        try:
            if parallel:
                _score_in_pool(pipeline, shards, todo, staging, workers, bar.update, done, options)
            else:
                # in this process, the batches the fit kept (with their words and hashes) are scored as they are
                corpus = self.corpus_ if self.corpus_ is not None and self.corpus_.shards is shards else None
                for i in todo:
                    done(i, hash_outputs(score_shard(pipeline, i, shards[i], staging, bar.update,
                                                     batches=corpus.cached(i) if corpus else None, **options)))
        finally:
            bar.close()
        return [results[i] for i in range(len(shards))]


# Times the shards left are scored again, in a new pool of half as many processes, after a scoring process
# died (killed, or out of memory): a death that comes back ends the scan with a one-line error.
POOL_RETRIES = 1


def _score_in_pool(pipeline: Pipeline, shards: list[Shard], todo: list[int], staging: Path, workers: int,
                   update: Callable[[int], Any], done: Callable[[int, ShardResult], Any],
                   options: dict[str, Any]) -> None:
    """Score the shards ``todo`` in ``workers`` spawned processes, calling ``done`` as each finishes."""
    from concurrent.futures import FIRST_COMPLETED, wait
    from concurrent.futures.process import BrokenProcessPool

    from dokumi.checkpoint import discard_shard_outputs

    context = multiprocessing.get_context("spawn")
    left = list(todo)
    for attempt in range(POOL_RETRIES + 1):
        queue = context.Queue()
        try:
            with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                     initargs=(pipeline, queue, os.getpid())) as pool:
                futures = {pool.submit(_score_in_worker, i, shards[i], staging, options): i for i in left}
                pending = set(futures)
                try:
                    while pending:
                        complete, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
                        _drain(queue, update, timeout=0)
                        for future in complete:
                            result = future.result()
                            index = futures[future]
                            left.remove(index)
                            done(index, result)
                except BaseException:
                    for future in pending:  # the scan stops: no shard that has not started is started
                        future.cancel()
                    raise
                _drain(queue, update, timeout=0)
            return
        except BrokenProcessPool:
            for index in left:  # a dead process may have written part of a shard: start those again from nothing
                discard_shard_outputs(staging, index, shards[index].name)
            if attempt == POOL_RETRIES:
                names = ", ".join(shards[i].name for i in left[:3]) + (", ..." if len(left) > 3 else "")
                raise DokumiError(
                    f"a scoring process died (killed, or out of memory) while scoring {len(left)} shard(s) "
                    f"({names}), again after {POOL_RETRIES} retry; try fewer --workers or smaller shards"
                ) from None
            workers = max(1, workers // 2)
        finally:
            queue.close()


_worker_pipeline: Pipeline | None = None
_worker_queue: Any = None

# Seconds between a scoring process's checks that the scan that started it is alive (where the
# operating system cannot kill it with its parent).
PARENT_POLL_SECONDS = 1.0


def _init_worker(pipeline: Pipeline, queue: Any, parent: int) -> None:
    global _worker_pipeline, _worker_queue
    die_with_parent(parent)
    _worker_pipeline, _worker_queue = pipeline, queue
    # one process per core already: threaded BLAS in each would oversubscribe the cores
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)


def die_with_parent(parent: int) -> None:
    """End this process as soon as process ``parent`` (the scan) dies, even by SIGKILL: a scoring process
    must not go on writing into a staging folder that a resumed or later scan owns.

    On Linux the kernel kills it (``PR_SET_PDEATHSIG``); everywhere a daemon thread checks
    every :data:`PARENT_POLL_SECONDS` that the parent is still this process's parent.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # it died before the kernel was asked to tell
        os._exit(1)
    threading.Thread(target=_watch_parent, args=(parent,), name="dokumi-watch-parent", daemon=True).start()


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)


def _score_in_worker(index: int, shard: Shard, staging: Path, options: dict[str, Any]) -> ShardResult:
    assert _worker_pipeline is not None, "set by the pool's initializer"
    return hash_outputs(score_shard(_worker_pipeline, index, shard, staging, _worker_queue.put, **options))


def _drain(queue: Any, update: Callable[[int], Any], timeout: float) -> None:
    import queue as queue_module

    try:
        update(queue.get(timeout=timeout) if timeout else queue.get_nowait())
        while True:
            update(queue.get_nowait())
    except queue_module.Empty:
        pass


__all__ = ["CACHE_BYTES", "CorpusBatches", "LocalEngine", "die_with_parent", "finish_locally", "fit_plans",
           "fit_stages", "total_rows", "within_limit"]
