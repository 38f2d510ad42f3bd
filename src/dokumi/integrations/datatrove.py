"""dokumi as a datatrove filter step: ``DokumiFilter(pipeline)`` between a reader and a writer.

::

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from dokumi import Pipeline
    from dokumi.integrations.datatrove import DokumiFilter

    pipeline = Pipeline.from_policy("pretraining").fit("shards/")
    LocalPipelineExecutor([
        JsonlReader("shards/"),
        DokumiFilter(pipeline, exclusion_writer=JsonlWriter("removed/")),
        JsonlWriter("kept/"),
    ]).run()

Records decided ``drop`` or ``duplicate`` are removed (and handed to the
exclusion writer, if any); the rest go on with ``dokumi_decision``,
``dokumi_reasons`` and ``dokumi_risk`` in ``doc.metadata``. Documents are
scored in batches of ``batch_size`` with the pipeline's fitted state, so the
decisions equal ``dokumi scan``'s on the same records. Needs ``pip install
'dokumi[datatrove]'``.
"""

from __future__ import annotations

from typing import Any

try:
    from datatrove.data import Document
    from datatrove.pipeline.filters.base_filter import BaseFilter
    from datatrove.pipeline.writers.disk_base import DiskWriter
except ImportError as error:  # an optional dependency: say how to get it
    raise ImportError("dokumi.integrations.datatrove needs datatrove: pip install 'dokumi[datatrove]'") from error

from dokumi.integrations.verdicts import DECISION_KEY, REASONS_KEY, RISK_KEY, require_fitted, score_records
from dokumi.pipeline import Pipeline

# the decisions that take a record out of the stream
REMOVED = ("drop", "duplicate")


class DokumiFilter(BaseFilter):
    """A datatrove filter that keeps or removes each document as a fitted dokumi pipeline decides.

    ``pipeline``: a :class:`dokumi.Pipeline`, fitted beforehand where its stages
    need corpus statistics. ``exclusion_writer``: a datatrove writer that
    receives removed documents (their ``filter_reason`` is the decision).
    ``batch_size`` (default: the pipeline's, 1024): documents scored together.
    ``remove``: the decisions that remove a document (default ``drop`` and
    ``duplicate``; add ``"flag"`` to hold flagged records back too).
    """

    name = "🧪 dokumi"

    def __init__(
        self,
        pipeline: Pipeline,
        exclusion_writer: DiskWriter | None = None,
        batch_size: int | None = None,
        remove: tuple[str, ...] = REMOVED,
    ) -> None:
        self.pipeline = require_fitted(pipeline)
        super().__init__(exclusion_writer=exclusion_writer, batch_size=batch_size or pipeline.batch_size)
        unknown = set(remove) - {"keep", "flag", "drop", "duplicate"}
        if unknown:
            raise ValueError(f"remove: unknown decisions {sorted(unknown)}")
        self.remove = tuple(remove)
        self._ready = False

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        """Keep (True) or remove (False, decision) one document; prefer batches (``filter_batch``)."""
        return self.filter_batch([doc])[0]

    def filter_batch(self, batch: list[Document]) -> list[bool | tuple[bool, str]]:
        """Score ``batch`` together; write the decision, reasons and risk into each document's metadata."""
        if not self._ready:  # side inputs load once per worker process, not at construction
            self.pipeline.setup()
            self._ready = True
        verdicts = score_records(self.pipeline, [self._record(doc) for doc in batch], shard="datatrove")
        results: list[bool | tuple[bool, str]] = []
        for doc, verdict in zip(batch, verdicts):
            doc.metadata[DECISION_KEY] = verdict.decision
            doc.metadata[REASONS_KEY] = verdict.reasons
            doc.metadata[RISK_KEY] = verdict.risk
            self.stat_update(f"dokumi_{verdict.decision}")
            results.append((False, verdict.decision) if verdict.decision in self.remove else True)
        return results

    def _record(self, doc: Document) -> dict[str, Any]:
        """The document as a record with dokumi's column names: text and id from the document, every other
        role (label, source, sha256, prompt/response, embedding, ...) from its metadata."""
        columns = self.pipeline.columns
        record: dict[str, Any] = {columns.text: doc.text, columns.id: doc.id}
        for role in ("label", "prompt", "response", "sha256", "source", "url", "embedding"):
            name = getattr(columns, role)
            if name in doc.metadata and name not in record:
                record[name] = doc.metadata[name]
        return record


__all__ = ["DokumiFilter"]
