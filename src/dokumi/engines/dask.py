"""The Dask engine: a scan's pass 1 and pass 2 on a dask.distributed cluster (``--engine dask``).

Without a scheduler address it starts a ``LocalCluster`` on 127.0.0.1 and
closes it afterwards; with one it joins that cluster and leaves it running.

Pass 1 interprets the stages' fit plans (:mod:`dokumi.fitplan`) with Dask's
own operations, round by round: one task per shard reads it once and folds it
into a partial for every stage with a step in the round; a :class:`~dokumi.fitplan.Reduce`
step's partials are merged on the worker that holds them, then in a tree of
tasks down to a few that the driver merges, a :class:`~dokumi.fitplan.GroupByKey`
step's key rows are split by each shard's task by a hash of the key into buckets
and each bucket is grouped by a task of its own (a shuffle of Arrow tables:
converting them to a Dask DataFrame and back cost 2-3 times the grouping), or,
with more than ``MAX_SPLIT_TASKS`` partitions x buckets, by a Dask DataFrame
shuffle, which schedules in stages and spills to disk, while its side partial
(what the driver needs whole) reaches the driver as each shard is done; each
stage finishes on the driver, and goes to the workers again for the next round.
Pass 2 is one task per shard running :func:`dokumi.scoring.score_shard`. The
driver hands the shard tasks out as workers free up (:class:`_Dispatcher`): in
the first round to whichever worker is free, which becomes the shard's home;
in later rounds and in pass 2 a shard goes to its home (where that worker is
alive), which keeps the shard's decoded batches, with their words and hashes,
between reads within a budget, as the local engine does: a shard is read from
disk and tokenised once per scan where it fits. Each worker runs its costliest
shards first, timed by the first round, and a worker with none left takes over
another's cheapest where that ends the round sooner. Each task writes
into a folder of its own and renames its files into place at the end, so a
task that Dask retries after its worker died overwrites its outputs instead
of duplicating them.

On the cluster it starts itself, what the driver reads in bulk (side
partials, the last merges, key groups) is handed over through files of a
private folder rather than Dask's TLS comms, and a scheduler plugin lets a
task homed on a worker that died run on the next worker that joins.

Workers open the inputs and the staging folder by the driver's absolute
paths: on a multi-node cluster both must lie on a shared file system, and the
stages' modules must be importable on every worker.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gc
import logging
import multiprocessing
import os
import pickle
import shutil
import tempfile
import time
import uuid
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pyarrow as pa

from dokumi import remote
from dokumi.checkpoint import hash_outputs
from dokumi.engines import Engine
from dokumi.engines.local import CACHE_BYTES, CorpusBatches, fit_plans, total_rows
from dokumi.errors import InputError
from dokumi.fitplan import Fold, GroupByKey, KeyPartial, Reduce, partition_partials, shared_key_groups
from dokumi.progress import progress_bar
from dokumi.records import Columns
from dokumi.scoring import ShardResult, score_shard
from dokumi.sources import Shard
from dokumi.stage import Stage

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from dokumi.pipeline import Pipeline

# Partials merged per task of a tree reduction: few enough that a task's memory stays small.
MERGE_FAN_IN = 8
# Split tasks (partitions x buckets) above which key rows are grouped by Dask's DataFrame shuffle instead:
# each split task costs the scheduler a little, and the shuffle schedules in stages and spills to disk.
MAX_SPLIT_TASKS = 10_000
# Priority of fetching a shard's side partials: above every shard's task (those are 1 to the number of shards).
SIDE_PRIORITY = 2**31
# Engine-private folders inside the staging folder, removed before the manifest is written.
PRIVATE_DIRS = (".dask-tasks", ".dask-pipeline", ".dask-handoff")


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
        self.files_ = False  # whether partials for the driver go through files (see _Packed)
        self.handoff_: str | None = None  # their folder, during a fit

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
            self.files_ = self._hands_over_files(joined=True)
            self._watch_restarts()
            return self
        import dask

        # Dask starts workers with MALLOC_TRIM_THRESHOLD_=65536, which hands freed memory back to the system
        # at once: stages allocate and free many arrays per batch, and a shard's fit took 1.3-1.6x as long
        # (0.6 s -> 1.0 s for 10,000 glosses). glibc's own default adapts the threshold to the allocations.
        # Its workers also sample their own stacks every 10 ms for the dashboard's profile, which this
        # engine's cluster does not show: off, a shard's fit runs about 10% faster.
        security = _temporary_security()
        # Of the scheduler's and workers' web pages, only /health: the others (task names, logs, metrics)
        # would answer any local process, and the cluster's TLS does not cover them.
        settings: dict[str, Any] = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
                                    "distributed.worker.profile.enabled": False,
                                    "distributed.scheduler.http.routes": ["distributed.http.health"],
                                    "distributed.worker.http.routes": ["distributed.http.health"]}
        # Workers forked from a server that imported Dask, numpy and pandas once, where the system has one
        # (not Windows): a spawned worker imports them itself. Two workers started, imported the stages and
        # closed in 0.35 s instead of 1.1 s when the server was running, 1.1 s instead of 1.3 s when not.
        if "forkserver" in multiprocessing.get_all_start_methods():
            settings["distributed.worker.multiprocessing-method"] = "forkserver"
        with dask.config.set(settings):
            self.cluster_ = self._local_cluster(LocalCluster, security)
        self.client_ = Client(self.cluster_, security=security)
        self.files_ = self._hands_over_files(joined=False)
        self._watch_restarts()
        return self

    def _watch_restarts(self) -> None:
        """Install :func:`_loose_restrictions` on the scheduler: without it a scan waits for ever once a worker
        died while no other was running."""
        try:
            with warnings.catch_warnings():  # a joined cluster's scheduler has it from an earlier scan: replaced
                warnings.filterwarnings("ignore", message=".*already contains a plugin", category=UserWarning)
                self.client_.register_plugin(_loose_restrictions(), name=PLUGIN_NAME)
        except Exception as error:  # noqa: BLE001 (a joined scheduler that refuses it, for whatever reason)
            log.warning("the Dask scheduler did not take dokumi's plugin for restarted workers (%s): a shard "
                        "task whose worker died while no other worker ran can wait for ever",
                        (str(error).splitlines() or [type(error).__name__])[0])

    def _hands_over_files(self, joined: bool) -> bool:
        """Whether the partials the driver reads go through files (see :class:`_Packed`): on a cluster of this
        machine; not on a joined one, whose workers may run on other machines."""
        return not joined

    def _handoff_root(self, staging: Path | None) -> str:
        """The folder of one fit's partials, mode 0700: inside the scan's staging folder, which an interrupted
        scan leaves for ``--resume`` or the next scan to clear; without one (a fit called directly), a new
        folder where Dask's workers spill to disk."""
        if staging is None:
            import dask

            return tempfile.mkdtemp(prefix="dokumi-dask-", dir=dask.config.get("temporary-directory", None))
        folder = staging / PRIVATE_DIRS[2]
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return str(folder)

    def _local_cluster(self, LocalCluster: Any, security: Any) -> Any:  # noqa: N803 (the class, imported lazily)
        return LocalCluster(
            n_workers=self.workers or os.cpu_count() or 1,
            threads_per_worker=1,  # stages run Python code: processes, not threads, give parallelism
            processes=True,
            host="127.0.0.1",
            # TLS both ways with a key and certificate made for this cluster alone: only this scan's
            # client (and the cluster's own workers) hold them, so no other local process can connect
            protocol="tls://",
            security=security,
            dashboard_address=None,
            # the scheduler's health page still listens: on loopback, on a free port
            scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
            # a failed task reaches the scan as its exception; the cluster's own logs (heartbeats
            # missed while it shuts down on a busy machine) would only clutter the CLI's output
            silence_logs=logging.CRITICAL,
        )

    def __exit__(self, *exc_info: object) -> None:
        if self.client_ is not None:
            self.client_.close()
        if self.cluster_ is not None:
            self.cluster_.close()
        self.client_ = self.cluster_ = None

    @property
    def security_(self) -> Any:
        """The TLS credentials of the local cluster this engine started (None when it joined one)."""
        return self.cluster_.security if self.cluster_ is not None else None

    def _start_scan(self, shards: list[Shard]) -> None:
        """Name this scan (the workers' batch caches are keyed on it); its shards have no home worker yet."""
        if getattr(self, "scan_id_", None) is not None and getattr(self, "_placed", None) is shards:
            return
        self.scan_id_ = uuid.uuid4().hex
        self._placed = shards
        self.homes_: list[str | None] = [None] * len(shards)
        # each shard's share of a worker's batch cache: the shards are spread evenly, give or take a few
        workers = max(len(self._live_workers()), 1)
        self.cache_per_shard_ = CACHE_BYTES // max(-(-len(shards) // workers), 1)
        # what each shard is expected to cost: its rows until a first round has timed it
        self._expect([float(_rows_of(shard)) for shard in shards])

    def _submit(self, function: Any, *args: Any, shard: int, worker: str | None) -> Any:
        """Shard ``shard``'s task on ``worker`` (:class:`_Dispatcher`'s choice), or on any worker when that
        one is gone."""
        return self.client_.submit(function, *args, pure=False, workers=[worker] if worker else None,
                                   allow_other_workers=True, priority=self.priorities_[shard])

    def _dispatcher(self, todo: Iterable[int], submit: Callable[[int, str | None], Any]) -> _Dispatcher:
        return _Dispatcher(list(todo), self.homes_, self.costs_, submit, self._live_workers)

    def _live_workers(self) -> dict[str, int]:
        """The cluster's workers now, with their threads."""
        return {address: int(threads or 1) for address, threads in self.client_.nthreads().items()}

    def _expect(self, costs: list[float]) -> None:
        """Set the shards' expected costs, and their tasks' priorities: higher for a costlier shard (of
        equal costs, the earlier shard), from 1 to the number of shards."""
        self.costs_ = costs
        self.priorities_ = [0] * len(costs)
        for rank, shard in enumerate(sorted(range(len(costs)), key=lambda i: (-costs[i], i))):
            self.priorities_[shard] = len(costs) - rank

    def _time_shards(self) -> None:
        """After the first round: each shard's home is the worker that read it (and keeps its batches), and
        its expected cost the seconds that read took."""
        timed: dict[int, float] = {}
        for worker, seconds in self.client_.run(_shard_seconds, self.scan_id_).items():
            timed.update(seconds)
            for index in seconds:
                self.homes_[index] = worker
        if len(timed) == len(self.costs_):  # a shard that was not timed (a worker died): keep the rows
            self._expect([timed[index] for index in range(len(self.costs_))])

    def fit(self, pipeline: Pipeline, shards: list[Shard], progress: bool | None = None,
            staging: Path | None = None) -> list[str]:
        """Pass 1: every stage's fit plan, one read of every shard per round for all stages together."""
        self._start_scan(shards)
        remote = [_for_workers(shard) for shard in shards]
        plans = fit_plans(pipeline.stages)
        rounds = max((len(plan) for _, plan in plans), default=0)
        timed = False
        self.handoff_ = self._handoff_root(staging) if self.files_ else None
        try:
            for index in range(rounds):
                active = [(stage, plan[index]) for stage, plan in plans
                          if index < len(plan) and plan[index].needed()]
                if not active:
                    continue
                bar = progress_bar(len(remote), f"fit {index + 1}/{rounds} (shards)", enabled=progress)
                self._round([stage for stage, _ in active], [step for _, step in active], index, remote,
                            pipeline.columns, pipeline.batch_size, pipeline.records.max_text_bytes, bar.update)
                bar.close()
                if not timed:
                    self._time_shards()
                    timed = True
        finally:
            if self.handoff_ is not None:
                shutil.rmtree(self.handoff_, ignore_errors=True)
                self.handoff_ = None
        return []

    def _round(self, stages: list[Stage], steps: list[Any], index: int, shards: list[Shard], columns: Columns,
               batch_size: int, max_text_bytes: int, update: Any) -> None:
        """One round: a task per shard folds it for every step; then each step merges or groups and finishes."""
        from distributed import as_completed

        client = self.client_
        # the stages as they stand after the last round's finish, sent once to each worker that needs them
        handoff = self._handoff_folder()
        [held] = client.scatter([_Stages(stages, index, handoff)], hash=False)
        buckets = [self._buckets(step, len(shards)) if isinstance(step, GroupByKey) else 0 for step in steps]
        reader = functools.partial(_partition_round, columns=columns, batch_size=batch_size,
                                   max_text_bytes=max_text_bytes, scan_id=self.scan_id_,
                                   cache_bytes=self.cache_per_shard_, buckets=buckets)
        dispatch = self._dispatcher(range(len(shards)), lambda shard, worker: self._submit(
            reader, held, shard, shards[shard], shard=shard, worker=worker))
        sides = _SideGatherer(client, [position for position, step in enumerate(steps)
                                       if isinstance(step, GroupByKey) and step.partial is not None])
        pieces = _PlacedPieces(client, buckets)
        # an empty corpus: one empty partition, so that every step still finishes
        empty = [] if shards else [client.submit(reader, held, 0, None, pure=False)]
        try:
            running = as_completed(dispatch.start() + empty)
            for future in running:
                if future.status == "error":  # raise a worker's error here, before merging; the partials
                    future.result()            # themselves stay on the workers (tens of MB a shard)
                sides.fetch(future)
                pieces.place(future)
                update(1)
                running.update(dispatch.finished(future))
            parts = dispatch.futures() + empty
            homes = self._holders(parts)
            # every step's merging is sent before the first finish, so that the workers merge one step while
            # the driver finishes another; the groupings first, so that their pieces move between workers
            # while the trees merge
            merging: dict[int, Any] = {}
            for position, step in sorted(enumerate(steps), key=lambda item: isinstance(item[1], Reduce)):
                if isinstance(step, Reduce):
                    picked = client.map(_pick, parts, [position] * len(parts), pure=False)
                    merging[position] = self._tree(held, position, picked, homes, _merge_partials)
                else:
                    merging[position] = self._group(step, position, parts, buckets[position], pieces, handoff)
            # each step finishes in a thread of its own: the steps are of different stages, so independent, and
            # one stage's finish (numpy's sorts, which let go of the GIL) runs while another's Python waits for
            # its partials or works through its counts
            with ThreadPoolExecutor(max_workers=len(steps)) as pool:
                finishing = [pool.submit(self._finish, step, merging[position],
                                         functools.partial(sides.values, position))
                             for position, step in enumerate(steps)]
                for done in finishing:
                    done.result()
        finally:
            sides.close()
            client.cancel(dispatch.futures() + empty + [held] + pieces.futures())
            if handoff is not None:  # every partial of the round is read: a task still running writes in memory
                shutil.rmtree(handoff, ignore_errors=True)

    def _handoff_folder(self) -> str | None:
        """A new folder for one round's partials (None where the cluster was joined: its workers may run
        on other machines, so the partials go through Dask)."""
        if self.handoff_ is None:
            return None
        return tempfile.mkdtemp(prefix="round-", dir=self.handoff_)

    def _buckets(self, step: GroupByKey, partitions: int) -> int:
        """Into how many buckets each partition splits a grouping's key rows: two per worker; 0 where Dask's
        DataFrame shuffle groups them instead (more split pieces than ``MAX_SPLIT_TASKS``)."""
        sources = max(partitions, 1) + (step.extra is not None)
        workers = max(len(self.client_.scheduler_info()["workers"]), 1)
        buckets = max(1, min(sources, 2 * workers))
        return 0 if sources * buckets > MAX_SPLIT_TASKS else buckets

    def _finish(self, step: Any, pending: Any, gathered: Callable[[], list[Any]]) -> None:
        """Finish ``step`` from its merging (:meth:`_tree`) or its groups (:meth:`_group`) and the side
        partials the driver gathered while the partitions ran (``gathered()``)."""
        if isinstance(step, Reduce):
            step.finish(self._last_merge(step.merge, pending))
            return
        groups, inputs = pending
        side = None
        if step.partial is not None:
            sides = gathered()
            side = sides[0] if len(sides) == 1 else step.partial.merge(sides)
        step.finish(_results_as_completed(groups, inputs), side)

    def _holders(self, futures: list[Any]) -> list[str | None]:
        """The worker holding each finished future's result (None where Dask does not say)."""
        where = self.client_.who_has(futures)
        return [next(iter(where.get(future.key) or ()), None) for future in futures]

    def _tree(self, held: Any, position: int, level: list[Any], homes: list[str | None], merge: Any) -> list[Any]:
        """Merge the partials of ``level`` on the workers: first those one worker holds, on that worker (no
        transfer), MERGE_FAN_IN at a time; then across workers down to at most MERGE_FAN_IN, which the driver
        merges itself (:meth:`_last_merge`), as it must receive the result anyway. The merges of that last
        level are told so: they hand their result to the driver through the round's folder."""
        client = self.client_
        by_home: dict[str | None, list[Any]] = {}
        for future, home in zip(level, homes):
            by_home.setdefault(home, []).append(future)
        chunks = [(home, futures[i: i + MERGE_FAN_IN]) for home, futures in by_home.items()
                  for i in range(0, len(futures), MERGE_FAN_IN)]
        last = len(chunks) <= MERGE_FAN_IN
        level = [chunk[0] if len(chunk) == 1 else client.submit(
            merge, held, position, last, *chunk, pure=False, workers=[home] if home else None,
            allow_other_workers=True) for home, chunk in chunks]
        while len(level) > MERGE_FAN_IN:
            last = len(level) <= MERGE_FAN_IN ** 2
            level = [client.submit(merge, held, position, last, *level[i: i + MERGE_FAN_IN], pure=False)
                     for i in range(0, len(level), MERGE_FAN_IN)]
        return level

    def _last_merge(self, merge: Callable[[list[Any]], Any], level: list[Any]) -> Any:
        """The one partial from the last few, merged on the driver; released on the cluster once read."""
        partials = []
        for future in level:
            packed = future.result()
            partials.append(packed.value())
            packed.discard()
        self.client_.cancel(level)
        return partials[0] if len(partials) == 1 else merge(partials)

    def _group(self, step: GroupByKey, position: int, parts: list[Any], buckets: int,
               placed: _PlacedPieces, handoff: str | None) -> tuple[list[Any], list[Any]]:
        """Group the key rows of every partition by key: each partition split its rows by a hash of the
        key into ``buckets`` pieces, which went to their bucket's worker as the partition finished
        (``placed``), and one task per bucket groups there the pieces of all partitions. Returns the
        groups' futures and the futures they are made from."""
        client = self.client_
        extra = None
        if step.extra is not None:
            [extra] = client.scatter([[_KeyShare(KeyPartial(step.extra().cast(step.schema)), buckets)]], hash=False)
        if not buckets:
            sources = client.map(_pick, parts, [position] * len(parts), pure=False)
            if extra is not None:
                sources.append(client.submit(_pick, extra, 0, pure=False))
            return self._shuffle_groups(step, sources)
        if extra is not None:
            placed.place(extra, only=position, at=0)
        groups, inputs = [], placed.of(position)
        for bucket in range(buckets):
            home = placed.home(bucket)
            groups.append(client.submit(_group_bucket, handoff, *placed.of(position, bucket), pure=False,
                                        workers=[home] if home else None, allow_other_workers=True))
        return groups, inputs + ([extra] if extra is not None else [])

    def _shuffle_groups(self, step: GroupByKey, sources: list[Any]) -> tuple[list[Any], list[Any]]:
        """The groups by a Dask DataFrame shuffle on ``key``, for partitions too many to split into
        buckets task by task (Dask's shuffle spills to the workers' disks and schedules in stages)."""
        import dask
        import dask.dataframe

        frames = self.client_.map(_key_frame, sources, pure=False)
        frame = dask.dataframe.from_delayed(frames, meta=_pandas(step.schema.empty_table()), verify_meta=False)
        by_key = frame.shuffle(on="key", npartitions=max(len(sources), 1))
        groups = self.client_.compute([dask.delayed(_groups_of)(part, step.schema) for part in by_key.to_delayed()])
        return groups, list(sources) + frames

    def score(
        self, pipeline: Pipeline, shards: list[Shard], staging: Path, progress: bool | None = None,
        finished: Mapping[int, ShardResult] | None = None, on_result: Callable[[int, ShardResult], Any] | None = None,
        **score_options: Any,
    ) -> list[ShardResult]:
        """Pass 2: one task per shard not ``finished``; returns the shards' results in input order.

        ``on_result`` is called on the driver as each shard is done; ``score_options`` are passed on
        to :func:`~dokumi.scoring.score_shard`.
        """
        done: dict[int, ShardResult] = dict(finished or {})
        todo = [index for index in range(len(shards)) if index not in done]
        pipeline_file = staging / PRIVATE_DIRS[1] / "pipeline.pkl"
        pipeline_file.parent.mkdir(parents=True, exist_ok=True)
        with open(pipeline_file, "wb") as handle:
            pickle.dump(pipeline, handle, protocol=pickle.HIGHEST_PROTOCOL)
        self._start_scan(shards)
        dispatch = self._dispatcher(todo, lambda index, worker: self._submit(
            _score_task, str(pipeline_file), index, _for_workers(shards[index]), str(staging), score_options,
            self.scan_id_, shard=index, worker=worker))
        bar = progress_bar(total_rows([shards[index] for index in todo]), "score", enabled=progress)
        try:
            from distributed import as_completed

            running = as_completed(dispatch.start())
            for future in running:
                index = dispatch.shard_of(future)
                result = done[index] = future.result()
                result.path = shards[index].path  # as given, not made absolute: the manifest keeps paths portable
                # Forget the result on the cluster: were its worker to die now, Dask would
                # otherwise run the task again while the driver hashes the published files.
                future.release()
                if on_result is not None:
                    on_result(index, result)
                bar.update(result.records + result.unreadable)
                running.update(dispatch.finished(future))
        except BaseException:
            self.client_.cancel(dispatch.futures())
            raise
        finally:
            bar.close()
        results = [done[index] for index in range(len(shards))]
        for name in PRIVATE_DIRS:
            shutil.rmtree(staging / name, ignore_errors=True)
        self.client_.run(_forget_scan, self.scan_id_)  # the workers' cached batches of this scan
        del self.scan_id_  # no scan placed now
        return results


PLUGIN_NAME = "dokumi-loose-restrictions"


def _loose_restrictions() -> Any:
    """A scheduler plugin: a task sent to its shard's home worker with ``allow_other_workers`` that waits
    for a worker ("no-worker": its home died while no other worker was running, e.g. the one worker of
    ``--workers 1`` that its nanny restarts) runs on the next worker that joins.

    Dask's scheduler honours ``allow_other_workers`` when it places a task, but when a worker joins it
    only takes up waiting tasks whose restrictions name that worker: a task homed on a dead worker
    waited for ever, and so did the scan. The plugin drops such a task's stale restriction first. Its
    class is made here, where Dask is imported, and so pickled by value: a joined cluster's scheduler
    needs no dokumi to run it.
    """
    from distributed.diagnostics.plugin import SchedulerPlugin

    class LooseRestrictions(SchedulerPlugin):
        def add_worker(self, scheduler: Any, worker: str) -> None:
            for task in scheduler.unrunnable:
                if task.loose_restrictions and task.worker_restrictions and \
                        not any(address in scheduler.workers for address in task.worker_restrictions):
                    task.worker_restrictions = None

    return LooseRestrictions()


def _temporary_security() -> Any:
    """TLS credentials for one local cluster: a fresh self-signed key and certificate that every member
    (scheduler, workers, this client) must present, held in memory, never written to disk."""
    try:
        from distributed.security import Security

        return Security.temporary()
    except ImportError:
        raise InputError("--engine dask needs the cryptography package for its cluster's TLS: "
                         "pip install 'dokumi[dask]'") from None


def _for_workers(shard: Shard) -> Shard:
    """A file shard by its absolute path, so workers with another working directory find it."""
    file = getattr(shard, "file", None)
    if not file or os.path.isabs(file) or remote.is_url(file):  # a URL reads the same from every node
        return shard
    return dataclasses.replace(cast(Any, shard), file=os.path.abspath(file))  # a file shard: it has ``file``


class _Stages:
    """The stages of one round as one object, so each worker fetches them once per round."""

    def __init__(self, stages: list[Stage], index: int, handoff: str | None = None) -> None:
        self.stages, self.index = stages, index
        self.handoff = handoff  # the round's folder for partials (see _Packed), None: through Dask
        self._steps: list[Any] | None = None

    @property
    def steps(self) -> list[Any]:
        if self._steps is None:
            self._steps = [stage.fit_plan()[self.index] for stage in self.stages]
        return self._steps

    def __getstate__(self) -> dict[str, Any]:
        return {"stages": self.stages, "index": self.index, "handoff": self.handoff, "_steps": None}


# On a worker: the batches of the shards it read in the current scan, by (scan id, shard index).
_worker_corpora: dict[tuple[str, int], CorpusBatches] = {}
# On a worker: the seconds its first round took on each shard of the current scan, by (scan id, shard index).
_worker_seconds: dict[tuple[str, int], float] = {}


def _corpus_of(scan_id: str, index: int, shard: Shard, columns: Columns, batch_size: int, max_text_bytes: int,
               cache_bytes: int) -> CorpusBatches:
    """The worker's batches of one shard in this scan, kept after the first read while they fit the shard's
    share of the worker's budget, ``cache_bytes``, and what is left of that budget (a worker may read more
    shards than its share, taking them over from a busier one)."""
    for cache in (_worker_corpora, _worker_seconds):
        for key in [key for key in cache if key[0] != scan_id]:
            del cache[key]  # a later scan: the earlier one's batches and timings are no use
    corpus = _worker_corpora.get((scan_id, index))
    if corpus is None:
        left = CACHE_BYTES - sum(kept.cached_bytes for kept in _worker_corpora.values())
        corpus = _worker_corpora[scan_id, index] = CorpusBatches([shard], columns, batch_size, max_text_bytes,
                                                                 cache_bytes=max(min(cache_bytes, left), 0))
    return corpus


def _forget_scan(scan_id: str) -> None:
    for cache in (_worker_corpora, _worker_seconds):
        for key in [key for key in cache if key[0] == scan_id]:
            del cache[key]


def _shard_seconds(scan_id: str) -> dict[int, float]:
    return {index: seconds for (scan, index), seconds in _worker_seconds.items() if scan == scan_id}


def _rows_of(shard: Shard) -> int:
    """A shard's rows where it knows them cheaply (Parquet metadata, a table), else 1.

    What a shard costs before a round has timed it. Not its bytes: on every prepared corpus a shard of
    23,478 short conversation turns took 5 s, one of 23,478 long documents (17 MB) 0.5 s."""
    return shard.num_rows() or 1


class _Dispatcher:
    """Hands one pass's shard tasks to the workers as they free up, instead of all at once.

    Each worker holds at most two tasks per thread (one running, one queued behind it, so that it never
    waits for the driver between shards); the others wait here, costliest first. A worker takes its own
    shards first (their home: it read them in the first round and keeps their batches), then shards with
    no home or whose home is gone, then the cheapest waiting shard of the worker with the most left to do
    (its waiting and held shards, by expected cost), where that ends the pass sooner: it reads that shard
    again, at about twice the cost, after the tasks it holds. Sent to their homes all at once, shards left
    it to Dask's work stealing to even the workers out at a round's end, which let a worker idle 0.5-0.7 s
    a round before it took a task over (every prepared corpus, two workers), and a first round homed
    shards by their rows, which say little of what they cost.
    """

    # A shard read again by a worker that does not keep its batches costs about this many times as much.
    REREAD_FACTOR = 2.0
    TASKS_PER_THREAD = 2

    def __init__(self, shards: list[int], homes: list[str | None], costs: list[float],
                 submit: Callable[[int, str | None], Any], workers: Callable[[], dict[str, int]]) -> None:
        self._submit, self._workers, self._costs = submit, workers, costs
        self._waiting: dict[str | None, deque[int]] = {}
        for shard in sorted(shards, key=lambda i: (-costs[i], i)):
            self._waiting.setdefault(homes[shard], deque()).append(shard)
        self._sent: dict[Any, tuple[int, str | None]] = {}  # future key -> (shard, worker it was sent to)
        self._futures: dict[int, Any] = {}
        self._held: dict[str | None, int] = {}  # tasks sent to each worker and not finished
        self._held_cost: dict[str | None, float] = {}  # and their expected cost

    def start(self) -> list[Any]:
        """Send the first tasks; returns their futures."""
        return self._fill()

    def finished(self, future: Any) -> list[Any]:
        """``future`` is done: send what the freed worker (and any other with room) takes next."""
        shard, worker = self._sent[future.key]
        self._held[worker] -= 1
        self._held_cost[worker] -= self._costs[shard]
        return self._fill()

    def shard_of(self, future: Any) -> int:
        return self._sent[future.key][0]

    def futures(self) -> list[Any]:
        """Every task sent so far, by shard."""
        return [self._futures[shard] for shard in sorted(self._futures)]

    def _fill(self) -> list[Any]:
        sent = []
        workers = self._workers()
        room = sorted(workers)
        while room:  # one task per worker in turn: the two costliest shards start on two workers, not one
            for worker in list(room):
                shard = self._next(worker, workers) \
                    if self._held.get(worker, 0) < self.TASKS_PER_THREAD * workers[worker] else None
                if shard is None:
                    room.remove(worker)
                else:
                    sent.append(self._send(shard, worker))
        if not any(self._held.values()):
            # nothing running and no worker took a shard (none is alive now): one waits in Dask for the next
            shard = self._next(None, {})
            if shard is not None:
                sent.append(self._send(shard, None))
        return sent

    def _send(self, shard: int, worker: str | None) -> Any:
        future = self._futures[shard] = self._submit(shard, worker)
        self._sent[future.key] = (shard, worker)
        self._held[worker] = self._held.get(worker, 0) + 1
        self._held_cost[worker] = self._held_cost.get(worker, 0.0) + self._costs[shard]
        return future

    def _next(self, worker: str | None, alive: Mapping[str, int]) -> int | None:
        """The shard ``worker`` takes next, or None."""
        own = self._waiting.get(worker)
        if own:
            return own.popleft()
        for home, waiting in self._waiting.items():
            if waiting and (home is None or home not in alive):
                return waiting.popleft()
        # what each worker with shards waiting still has to do: those and the tasks it holds
        loads = {home: self._held_cost.get(home, 0.0) + sum(self._costs[shard] for shard in waiting)
                 for home, waiting in self._waiting.items() if waiting}
        if not loads:
            return None
        busiest = max(loads, key=lambda home: (loads[home], str(home)))
        cheapest = self._waiting[busiest][-1]
        # taken over where this worker, after what it holds, reads it again before its home would be done
        if self._held_cost.get(worker, 0.0) + self.REREAD_FACTOR * self._costs[cheapest] < loads[busiest]:
            return self._waiting[busiest].pop()
        return None


def _partition_round(held: _Stages, index: int, shard: Shard | None, columns: Columns, batch_size: int,
                     max_text_bytes: int, scan_id: str, cache_bytes: int, buckets: list[int]) -> list[Any]:
    """One shard's partial for every step of the round (``None``: an empty partition): a Reduce step's
    pickled, a GroupByKey step's as a :class:`_KeyShare` of ``buckets[position]`` pieces."""
    started = time.perf_counter()
    corpus = CorpusBatches([], columns, batch_size, max_text_bytes) if shard is None else \
        _corpus_of(scan_id, index, shard, columns, batch_size, max_text_bytes, cache_bytes)
    steps = held.steps
    parts = [_KeyShare(partial, buckets[position], steps[position].partial, held.handoff)
             if isinstance(partial, KeyPartial) else _Packed(partial)
             for position, partial in enumerate(partition_partials(steps, corpus))]
    if shard is not None:  # the first round read and decoded the shard: what later rounds' order goes by
        _worker_seconds.setdefault((scan_id, index), time.perf_counter() - started)
    return parts


class _Packed:
    """A partial pickled once: into one buffer, or, given a handoff folder (the engine's, on a cluster of
    this machine), into a file there, so that only its path travels through Dask.

    Dask would send each of a partial's numpy arrays as a frame of its own: a round-1 trigger partial of
    2 MB is 10,000 frames, which took 2.6 s to move between two workers on one machine, against 0.1 s to
    pickle whole. Files are for what the driver reads (side partials, the last merges, key groups): every
    byte Dask moves passes through its TLS comms, and 150 MB from a worker cost the driver 0.6-1.3 s of
    CPU, against 0.03 s to read them from a file; the driver's CPU in a two-worker scan of 300,000 glosses
    went from 7.4 s to 6.3 s (medians of 3). Between workers Dask's comms stay: with every partial and
    key-row piece sent through files, the workers' system CPU in a timed two-worker scan went from 1.3-1.6 s
    to 2.5-2.9 s each (a page-cache write touches fresh memory), for no gain in interleaved runs.
    """

    def __init__(self, value: Any, folder: str | None = None) -> None:
        self.data: bytes | None = None
        self.path: str | None = None
        with _collections_paused():  # as in value(): pickling a sample of many small arrays sets them off too
            if folder is not None:
                try:
                    self.path = _write_handoff(value, folder)
                    return
                except OSError:  # no space left there, or the folder is gone (a cancelled round): in memory
                    pass
            self.data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def value(self) -> Any:
        # unpickling makes many small objects (sampled records' word arrays); the collections they set off
        # scan the worker's whole heap: 3-5x the unpickling itself (a trigger partial: 0.05 s, 0.2 s with them)
        with _collections_paused():
            if self.path is not None:
                return _read_handoff(self.path)
            return pickle.loads(cast(bytes, self.data))

    def discard(self) -> None:
        """Remove the file of a partial that has been read for the last time (the round's end would)."""
        if self.path is not None:
            with contextlib.suppress(OSError):
                os.remove(self.path)


@contextlib.contextmanager
def _collections_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _write_handoff(value: Any, folder: str) -> str:
    """Pickle ``value`` into a new file of ``folder``: a count, the pickle's and each out-of-band buffer's
    length, the pickle, then the buffers (numpy's and Arrow's arrays, written without a copy)."""
    buffers: list[pickle.PickleBuffer] = []
    header = pickle.dumps(value, protocol=5, buffer_callback=buffers.append)
    raws = [buffer.raw() for buffer in buffers]
    path = os.path.join(folder, f"{uuid.uuid4().hex}.pkl")
    try:
        with open(path, "xb") as handle:
            handle.write(np.array([len(raws) + 1, len(header), *(raw.nbytes for raw in raws)], dtype="<u8").tobytes())
            handle.write(header)
            for raw in raws:
                handle.write(raw)
    except OSError:
        with contextlib.suppress(OSError):
            os.remove(path)  # a file cut short by a full disk
        raise
    return path


def _read_handoff(path: str) -> Any:
    """The value :func:`_write_handoff` wrote to ``path``; each buffer read into memory of its own, so that
    an array the caller keeps holds only its own bytes."""
    with open(path, "rb") as handle:
        count = int(np.frombuffer(handle.read(8), dtype="<u8")[0])
        sizes = np.frombuffer(handle.read(8 * count), dtype="<u8").tolist()
        header = handle.read(sizes[0])
        buffers = []
        for size in sizes[1:]:
            buffer = bytearray(size)
            if handle.readinto(buffer) != size:
                raise OSError(f"{path}: a partial's file ends early")
            buffers.append(buffer)
    return pickle.loads(header, buffers=buffers)


def _pick(partials: list[_Packed], position: int) -> _Packed:
    return partials[position]


def _merge_partials(held: _Stages, position: int, last: bool, *partials: _Packed) -> _Packed:
    """Merge ``partials``; a merge of the ``last`` level packs its result for the driver (see :class:`_Packed`)."""
    return _Packed(held.steps[position].merge([p.value() for p in partials]), held.handoff if last else None)


class _KeyShare:
    """A partition's share of a GroupByKey step: its key rows cut into pieces by a hash of the key (equal
    keys, one piece), so that each bucket's task fetches only its piece, and its side partial, merged
    once (a merge of one compacts it: the driver's merge of all of them then only interleaves) and
    pickled apart (into the round's ``folder`` where there is one), so that the driver fetches it while
    the other partitions are read."""

    def __init__(self, partial: KeyPartial, buckets: int, fold: Fold | None = None, folder: str | None = None) -> None:
        self.pieces = _split_keys(partial.keys, max(buckets, 1))
        side = partial.side
        self.side = None if side is None else _Packed(fold.merge([side]) if fold is not None else side, folder)


def _piece(partials: list[Any], position: int, bucket: int) -> pa.Table:
    return partials[position].pieces[bucket]


def _arrived(piece: pa.Table) -> pa.Table:
    """A piece, on the worker this task runs on: Dask fetches it there as soon as it exists."""
    return piece


class _PlacedPieces:
    """Sends each finished partition's pieces of every grouping to the worker that will group their
    bucket, while the other partitions are read: with two workers, half of the key rows move between
    them, and moved at the end of the round they kept the workers waiting (0.4-0.5 s a round)."""

    def __init__(self, client: Any, buckets: list[int]) -> None:
        self.client = client
        self._homes = sorted(client.scheduler_info()["workers"])
        self._held: dict[int, list[list[Any]]] = {p: [[] for _ in range(b)] for p, b in enumerate(buckets) if b}

    def home(self, bucket: int) -> str | None:
        """The worker that groups ``bucket``."""
        return self._homes[bucket % len(self._homes)] if self._homes else None

    def place(self, part: Any, only: int | None = None, at: int | None = None) -> None:
        """Send the pieces of the finished partition ``part`` (the steps' partials, or with ``at`` the
        partials of the one step ``only``, at that index) to their buckets' workers."""
        for position, held in self._held.items():
            if only is not None and position != only:
                continue
            for bucket, pieces in enumerate(held):
                piece = self.client.submit(_piece, part, position if at is None else at, bucket, pure=False,
                                           priority=SIDE_PRIORITY)
                home = self.home(bucket)
                pieces.append(self.client.submit(_arrived, piece, pure=False, priority=SIDE_PRIORITY,
                                                 workers=[home] if home else None, allow_other_workers=True))

    def of(self, position: int, bucket: int | None = None) -> list[Any]:
        """The placed pieces of the step at ``position``: of one bucket, or of every bucket."""
        held = self._held.get(position, [])
        return list(held[bucket]) if bucket is not None else [p for pieces in held for p in pieces]

    def futures(self) -> list[Any]:
        return [p for held in self._held.values() for pieces in held for p in pieces]


def _side_of(partials: list[Any], position: int) -> _Packed | None:
    return partials[position].side


class _SideGatherer:
    """Fetches the side partials of a round's GroupByKey steps to the driver as each partition finishes,
    in a thread of its own: the driver needs them whole (e.g. every content's signature), and receiving
    and unpickling them while the other partitions are read takes them off the end of the round, where
    the workers would otherwise wait (about 3 s of 20 on every prepared corpus, two workers)."""

    def __init__(self, client: Any, positions: list[int]) -> None:
        self.client, self.positions = client, positions
        self._pool = ThreadPoolExecutor(max_workers=1) if positions else None
        self._read: dict[int, list[Any]] = {position: [] for position in positions}
        self._pending: list[Any] = []

    def fetch(self, part: Any) -> None:
        """Send for the side partials of the finished partition ``part`` (run before its worker's next shard)."""
        for position in self.positions:
            side = self.client.submit(_side_of, part, position, pure=False, priority=SIDE_PRIORITY)
            self._pending.append(side)
            self._read[position].append(cast(ThreadPoolExecutor, self._pool).submit(self._receive, side))

    @staticmethod
    def _receive(side: Any) -> Any:
        packed = side.result()
        side.release()
        if packed is None:
            return None
        value = packed.value()
        packed.discard()
        return value

    def values(self, position: int) -> list[Any]:
        """The side partials of the step at ``position``, every partition's (waits for those still arriving)."""
        return [read.result() for read in self._read.get(position, [])]

    def close(self) -> None:
        # cancelled first: a thread waiting on a side whose worker is gone then ends instead of waiting
        self.client.cancel(self._pending)
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


def _split_keys(keys: pa.Table, buckets: int) -> list[pa.Table]:
    """A partition's key rows cut into ``buckets`` tables by a hash of the key: equal keys, one bucket."""
    if buckets == 1 or not keys.num_rows:
        return [keys] + [keys.slice(0, 0)] * (buckets - 1)
    bucket = (_key_hashes(keys.column("key")) % np.uint64(buckets)).astype(np.int64)
    order = np.argsort(bucket, kind="stable")
    bounds = np.searchsorted(bucket[order], np.arange(buckets + 1))
    ordered = keys.take(pa.array(order))
    return [ordered.slice(int(a), int(b - a)) for a, b in zip(bounds[:-1], bounds[1:])]


def _key_hashes(key: pa.ChunkedArray) -> np.ndarray:
    """A well-mixed 64-bit hash of each key (integer keys directly, any other type through pandas)."""
    from dokumi.text.tokens import fmix64

    if pa.types.is_integer(key.type):
        return fmix64(key.to_numpy().astype(np.uint64))
    import pandas as pd

    return pd.util.hash_array(key.to_numpy(zero_copy_only=False))


def _key_frame(share: _KeyShare) -> Any:
    return _pandas(pa.concat_tables(share.pieces))


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


def _group_bucket(handoff: str | None, *pieces: pa.Table) -> Any:
    """One bucket's rows from every partition, grouped by key; for the driver, packed into the round's
    ``handoff`` folder where there is one."""
    groups = shared_key_groups(pa.concat_tables(pieces))
    return groups if handoff is None else _Packed(groups, handoff)


def _results_as_completed(futures: list[Any], inputs: Sequence[Any] = ()) -> Iterator[pa.Table]:
    """Each future's result as it arrives, releasing it on the cluster once read; ``inputs`` (the
    futures the results were computed from) are released once the first result is in."""
    from distributed import as_completed

    for future in as_completed(futures):
        result = future.result()
        if isinstance(result, _Packed):  # groups handed over through a file
            packed, result = result, result.value()
            packed.discard()
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


def _score_task(pipeline_file: str, index: int, shard: Shard, staging: str, score_options: dict,
                scan_id: str | None = None) -> ShardResult:
    """Score one shard into a folder of this attempt's own, then rename each file into place.

    A retry after a dead worker writes the same file names and replaces them,
    so no record is written twice; a dead attempt's folder is never renamed.
    """
    staging_dir = Path(staging)
    attempt = staging_dir / PRIVATE_DIRS[0] / uuid.uuid4().hex
    # the batches this worker kept in pass 1, if any
    corpus = _worker_corpora.pop((scan_id, index), None) if scan_id is not None else None
    result = score_shard(_load_pipeline(pipeline_file), index, shard, attempt, lambda records: None,
                         batches=corpus.cached(0) if corpus is not None else None, **score_options)
    published = []
    for output in result.outputs:
        source = Path(output["path"])
        target = staging_dir / source.relative_to(attempt)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(source, target)
        published.append({**output, "path": target})
    result.outputs = published
    shutil.rmtree(attempt, ignore_errors=True)
    return hash_outputs(result)


__all__ = ["DaskEngine"]
