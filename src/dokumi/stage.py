"""The stage protocol: score records and say why; never decide.

A stage follows the scikit-learn estimator contract: ``__init__`` stores its
parameters and does no work; ``setup`` receives the pipeline's context (column
roles, batch size, side inputs already loaded and checked) before any data is
read; ``fit_plan`` (pass 1, only when ``needs_fit``) declares how corpus-level
state is learned (:mod:`dokumi.fitplan`), kept in attributes ending with ``_``;
``score`` maps one :class:`~dokumi.records.Batch` to a :class:`StageResult`
without changing that state. The policy turns scores into decisions.
"""

from __future__ import annotations

import abc
import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from dokumi.records import Batch, Columns

if TYPE_CHECKING:
    from dokumi.fitplan import Step

# The kinds of side input a stage may declare, and what ``StageContext.inputs`` then holds:
# "corpus": a :class:`dokumi.sideinputs.SideCorpus` (re-readable batches of checked shards);
# "state": a :class:`dokumi.sideinputs.SavedState` (an earlier scan's state folder of that stage);
# "hashes": a :class:`dokumi.sidecar.ExpectedHashes` (an earlier scan's record hashes, checked against its
#           manifest and signature; the public key that must have signed it is the "key" input <name>_key);
# "key": the path of a checked public key file (dokumi keygen).
SIDE_INPUT_KINDS = ("corpus", "state", "hashes", "key")


@dataclass(frozen=True)
class StageContext:
    """What the pipeline tells a stage before any data is read.

    ``inputs`` maps each side-input parameter the stage declares (and was given)
    to the loaded input; a stage never opens files itself.
    """

    columns: Columns = field(default_factory=Columns)
    batch_size: int = 1024
    inputs: Mapping[str, Any] = field(default_factory=dict)
    # the scan keeps no text (``--no-text``): findings are named by ids in reasons, summaries and state
    no_text: bool = False


@dataclass
class StageResult:
    """Per-record output of :meth:`Stage.score`.

    ``scores`` are floats in [0, 1], higher = more suspicious; ``reasons`` is
    one list of short machine-readable reason codes per record (empty when the
    stage found nothing). ``duplicate``, where a stage sets it, marks the records
    that are only redundant copies of a record kept elsewhere (no evidence of an
    attack: a recipe may give them the decision ``duplicate``).
    """

    scores: np.ndarray
    reasons: list[list[str]]
    duplicate: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64)
        if self.scores.ndim != 1 or len(self.reasons) != len(self.scores):
            raise ValueError(
                f"stage result has {self.scores.shape} scores and {len(self.reasons)} reason lists; "
                "expected one of each per record"
            )
        if len(self.scores) and (np.nanmin(self.scores) < 0 or np.nanmax(self.scores) > 1):
            raise ValueError("stage scores must lie in [0, 1]")
        if self.duplicate is not None:
            self.duplicate = np.asarray(self.duplicate, dtype=bool)
            if self.duplicate.shape != self.scores.shape:
                raise ValueError(f"stage result marks {self.duplicate.shape} duplicates for {len(self.scores)} records")

    @classmethod
    def empty(cls, n: int) -> StageResult:
        """A result for ``n`` records with score 0 and no reasons."""
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
    reads: tuple[str, ...] = ("content",)  # an instance may read more (embedding_anomaly's column embedder)
    # Parameters that name side inputs, and their kind (SIDE_INPUT_KINDS): the pipeline loads and checks
    # them before reading any data and hands them to setup(); `dokumi scan --protect` etc. set them.
    side_inputs: ClassVar[Mapping[str, str]] = {}
    # Bytes of fitted state per corpus record (0 for stateless stages); documented and benchmarked.
    state_bytes_per_record: ClassVar[float] = 0.0
    _context: StageContext | None = None

    def setup(self, context: StageContext) -> None:
        """Take the pipeline's context before any data is read (side inputs arrive loaded).

        Called once by the pipeline; a stage that needs its context overrides it and calls
        ``super().setup(context)``.
        """
        self._context = context

    @property
    def context(self) -> StageContext:
        """The context given to :meth:`setup` (a default one if the stage was never set up)."""
        return self._context or StageContext()

    @property
    def is_set_up(self) -> bool:
        """Whether :meth:`setup` handed the stage its context."""
        return self._context is not None

    def fit_plan(self) -> list[Step]:
        """The steps of pass 1, in order (:mod:`dokumi.fitplan`); empty when ``needs_fit`` is false."""
        return []

    def fit(self, batches: Iterable[Batch]) -> Stage:
        """Learn corpus-level state from ``batches``, by running :meth:`fit_plan` in this process.

        ``batches`` is read once per step (iterating it again re-reads the corpus).
        """
        from dokumi.engines.local import fit_stages

        fit_stages([self], batches)
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

    def set_params(self, **params: Any) -> Stage:
        """Change constructor parameters of an unfitted stage (scikit-learn's ``set_params``)."""
        accepted = set(inspect.signature(type(self).__init__).parameters) - {"self"}
        for key, value in params.items():
            if key not in accepted:
                raise ValueError(f"stage {self.name!r} has no parameter {key!r}; known: {', '.join(sorted(accepted))}")
            setattr(self, key, value)
        return self

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
