"""Engines run a scan's two passes: one interface, one module each (``local``, ``dask``).

An engine interprets stages' fit plans (:mod:`dokumi.fitplan`): it reads the
corpus once per round for all stages together, hands each batch to every
stage with a step in that round, merges the partials or groups the keys, and
lets each stage finish on the driver. Pass 2 scores each shard with
:func:`dokumi.scoring.score_shard`. Both engines give the same decisions.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dokumi.errors import InputError

if TYPE_CHECKING:
    from dokumi.pipeline import Pipeline
    from dokumi.scoring import ShardResult
    from dokumi.sources import Shard

ENGINES = ("local", "dask")


class Engine(abc.ABC):
    """Runs pass 1 (``fit``) and pass 2 (``score``) of a pipeline over shards; a context manager."""

    name = ""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    @abc.abstractmethod
    def fit(self, pipeline: Pipeline, shards: list[Shard], progress: bool | None = None,
            staging: Path | None = None) -> list[str]:
        """Run every stage's fit plan over ``shards``; return warnings for the scan's summary. ``staging``
        is the scan's staging folder, where an engine may keep temporary files of its own (in hidden
        folders it removes; an interrupted scan leaves them there for ``--resume`` or the next scan)."""

    @abc.abstractmethod
    def score(self, pipeline: Pipeline, shards: list[Shard], staging: Path, progress: bool | None = None,
              finished: Mapping[int, ShardResult] | None = None,
              on_result: Callable[[int, ShardResult], Any] | None = None, **options: Any) -> list[ShardResult]:
        """Score every shard into ``staging``; results in input order. ``options`` go to ``score_shard``.

        ``finished``: results of shards scored earlier (by index), not scored again. ``on_result`` is
        called in this process with each shard's index and result as soon as the shard is done.
        """


def make_engine(name: str, workers: int | None = None, scheduler: str | None = None,
                cache_mb: int | None = None) -> Engine:
    """The engine called ``name``: ``local`` (processes on this machine; ``cache_mb`` bounds the decoded
    batches it keeps between reads) or ``dask`` (a Dask cluster)."""
    if name not in ENGINES:
        raise InputError(f"engine {name!r} is not one of: {', '.join(ENGINES)}")
    if scheduler and name != "dask":
        raise InputError(f"a scheduler address ({scheduler}) needs engine 'dask', not {name!r}")
    if name == "dask":
        from dokumi.engines.dask import DaskEngine

        return DaskEngine(scheduler=scheduler, workers=None if scheduler else workers)
    from dokumi.engines.local import CACHE_BYTES, LocalEngine

    return LocalEngine(workers=workers, cache_bytes=CACHE_BYTES if cache_mb is None else cache_mb * 2**20)


__all__ = ["ENGINES", "Engine", "make_engine"]
