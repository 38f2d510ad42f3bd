"""dokumi as a NeMo Curator stage: ``DokumiFilter(pipeline)`` scores and filters ``DocumentBatch`` tasks.

::

    from nemo_curator.pipeline import Pipeline as CuratorPipeline
    from nemo_curator.stages.text.io.reader import JsonlReader
    from nemo_curator.stages.text.io.writer import JsonlWriter
    from dokumi import Pipeline
    from dokumi.integrations.nemo_curator import DokumiFilter

    dokumi_pipeline = Pipeline.from_policy("pretraining").fit("shards/")
    curator = CuratorPipeline(name="screen", stages=[
        JsonlReader("shards/"), DokumiFilter(dokumi_pipeline), JsonlWriter("kept/")])
    curator.run()

The stage follows Curator's ``ProcessingStage[DocumentBatch, DocumentBatch]``
API: it declares the columns it reads (``inputs``) and adds (``outputs``),
scores each task's table as one batch with the fitted pipeline (so decisions
equal ``dokumi scan``'s on the same records), adds ``dokumi_decision``,
``dokumi_reasons`` and ``dokumi_risk`` columns, and removes the rows decided
``drop`` or ``duplicate`` (``remove=()`` only annotates, like Curator's
``Score``). Per-decision counts go to Curator's per-stage metrics. Needs NeMo
Curator (``pip install nemo-curator``; Linux).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

try:
    from nemo_curator.stages.base import ProcessingStage
    from nemo_curator.tasks import DocumentBatch
except ImportError as error:  # an optional dependency: say how to get it
    raise ImportError("dokumi.integrations.nemo_curator needs NeMo Curator: pip install nemo-curator") from error

from dokumi.decisions import DECISIONS
from dokumi.integrations.verdicts import DECISION_KEY, REASONS_KEY, RISK_KEY, require_fitted, score_arrow
from dokumi.pipeline import Pipeline

REMOVED = ("drop", "duplicate")


@dataclass
class DokumiFilter(ProcessingStage[DocumentBatch, DocumentBatch]):
    """A Curator stage that annotates each document with dokumi's decision and removes the rejected ones.

    ``pipeline``: a fitted :class:`dokumi.Pipeline` (its column names are the
    batch's: ``columns={"text": "content"}`` when the text is elsewhere).
    ``remove``: the decisions whose rows leave the batch (default ``drop`` and
    ``duplicate``; ``()`` keeps every row, annotated).
    """

    pipeline: Pipeline
    remove: tuple[str, ...] = REMOVED
    name: str = "dokumi"
    _ready: bool = field(default=False, init=False, repr=False)

    def __post_init__(self) -> None:
        require_fitted(self.pipeline)
        unknown = set(self.remove) - set(DECISIONS)
        if unknown:
            raise ValueError(f"remove: unknown decisions {sorted(unknown)}")
        self.remove = tuple(self.remove)

    def inputs(self) -> tuple[list[str], list[str]]:
        """The task attribute and the column the stage needs: the text column (other roles are optional)."""
        return ["data"], [self.pipeline.columns.text]

    def outputs(self) -> tuple[list[str], list[str]]:
        """The columns the stage adds."""
        return ["data"], [DECISION_KEY, REASONS_KEY, RISK_KEY]

    def setup(self, worker_metadata: Any = None) -> None:
        """Load the pipeline's side inputs once per worker."""
        self.pipeline.setup()
        self._ready = True

    def process(self, task: DocumentBatch) -> DocumentBatch | None:
        """Score the task's rows as one batch; return them annotated, without the removed ones."""
        if not self._ready:
            self.setup()
        table = task.to_pyarrow()
        scores = score_arrow(self.pipeline, table, shard=task.dataset_name or "curator")
        table = table.append_column(DECISION_KEY, scores.column("decision"))
        table = table.append_column(REASONS_KEY, scores.column("reasons"))
        table = table.append_column(RISK_KEY, scores.column("risk"))
        decisions = scores.column("decision")
        counts = {f"dokumi_{d}": float(pc.sum(pc.equal(decisions, d)).as_py() or 0) for d in DECISIONS}
        self._log_metrics(counts)
        if self.remove:
            table = table.filter(pc.invert(pc.is_in(decisions, value_set=pa.array(self.remove))))
        data: Any = table.to_pandas() if not isinstance(task.data, pa.Table) else table
        return DocumentBatch(dataset_name=task.dataset_name, data=data, _metadata=task._metadata,
                             _stage_perf=task._stage_perf)


__all__ = ["DokumiFilter"]
