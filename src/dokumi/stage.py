"""The stage protocol: score records and say why; never decide.

A stage follows the scikit-learn estimator contract: ``__init__`` stores its
parameters and does no work; ``fit`` (pass 1, only when ``needs_fit``) learns
corpus-level state kept in attributes ending with ``_``; ``score`` maps one
:class:`~dokumi.records.Batch` to a :class:`StageResult` without changing that
state. The policy turns scores into decisions.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from dokumi.records import Batch


@dataclass
class StageResult:
    """Per-record output of :meth:`Stage.score`.

    ``scores`` are floats in [0, 1], higher = more suspicious; ``reasons`` is
    one list of short machine-readable reason codes per record (empty when the
    stage found nothing).
    """

    scores: np.ndarray
    reasons: list[list[str]]

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64)
        if self.scores.ndim != 1 or len(self.reasons) != len(self.scores):
            raise ValueError(
                f"stage result has {self.scores.shape} scores and {len(self.reasons)} reason lists; "
                "expected one of each per record"
            )
        if len(self.scores) and (np.nanmin(self.scores) < 0 or np.nanmax(self.scores) > 1):
            raise ValueError("stage scores must lie in [0, 1]")

    @classmethod
    def empty(cls, n: int) -> StageResult:
        return cls(np.zeros(n), [[] for _ in range(n)])


class Stage(abc.ABC):
    """Base class for stages. Subclasses set ``name`` and implement ``score``.

    ``name`` is stable: it names the policy section and the ``<name>_score``
    column. ``reads`` lists the column roles the stage needs (``"content"``
    means text, or prompt and response for instruction data); the pipeline
    checks them before reading any data.
    """

    name: ClassVar[str] = ""
    needs_fit: ClassVar[bool] = False
    reads: ClassVar[tuple[str, ...]] = ("content",)
    # Bytes of fitted state per corpus record (0 for stateless stages); documented and benchmarked.
    state_bytes_per_record: ClassVar[float] = 0.0

    def fit(self, batches: Iterable[Batch]) -> Stage:
        """Learn corpus-level state from ``batches`` (iterating again re-reads the corpus)."""
        return self

    @abc.abstractmethod
    def score(self, batch: Batch) -> StageResult:
        """Score every record of ``batch``; must not change fitted state."""

    def get_params(self) -> dict[str, Any]:
        """The constructor parameters, as recorded in the manifest."""
        signature = inspect.signature(type(self).__init__)
        return {
            name: _jsonable(getattr(self, name))
            for name in signature.parameters
            if name != "self" and hasattr(self, name)
        }

    def save_state(self, directory: Path) -> list[Path]:
        """Write fitted state a later run can reuse (e.g. an index); return the files written.

        ``dokumi scan`` calls this with ``<out>/state/<stage name>/`` after scoring.
        """
        return []

    def summary(self) -> dict[str, Any]:
        """Corpus-level findings worth reporting (e.g. discovered triggers). JSON-serialisable."""
        return {}

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return repr(value)
