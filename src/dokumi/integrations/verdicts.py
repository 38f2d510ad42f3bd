"""Framework-neutral glue for the adapters: score a list of records with a fitted pipeline, in one batch.

An adapter turns its framework's documents into plain dicts keyed by the
pipeline's column names; this module builds the Arrow batch that
``Pipeline.score_batch`` takes, so the decisions are those of ``dokumi scan``
on the same records (fitted state is looked up by content, not position).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import pyarrow as pa

from dokumi.errors import InputError
from dokumi.pipeline import Pipeline
from dokumi.records import Batch

# the metadata keys an adapter writes beside each record
DECISION_KEY, REASONS_KEY, RISK_KEY = "dokumi_decision", "dokumi_reasons", "dokumi_risk"


@dataclass(frozen=True)
class Verdict:
    """One record's outcome: its decision, reason codes and risk in [0, 1]."""

    decision: str
    reasons: list[str]
    risk: float


def require_fitted(pipeline: Pipeline) -> Pipeline:
    """``pipeline`` if it can score records one batch at a time; a clear error if it needs fitting first."""
    if not isinstance(pipeline, Pipeline):
        raise TypeError(f"expected a dokumi Pipeline, got {type(pipeline).__name__}")
    if not pipeline.fitted_:
        raise InputError(
            "the pipeline's stages need corpus statistics: fit it before handing it to a framework, "
            "e.g. Pipeline.from_policy('pretraining').fit('shards/*.parquet')"
        )
    return pipeline


def role_columns(pipeline: Pipeline) -> dict[str, str]:
    """Role -> column name for every role the pipeline knows (text, id, label, source, ...)."""
    return {f.name: getattr(pipeline.columns, f.name) for f in fields(pipeline.columns)}


def score_arrow(pipeline: Pipeline, records: pa.RecordBatch | pa.Table, shard: str = "stream") -> pa.RecordBatch:
    """The scores batch (``id``, ``decision``, ``reasons``, ``risk``, ``<stage>_score``) of Arrow ``records``.

    ``records`` carry the pipeline's column names; they are scored together as one batch.
    """
    if isinstance(records, pa.Table):
        records = records.combine_chunks().to_batches()[0] if records.num_rows else \
            pa.RecordBatch.from_pylist([], schema=records.schema)
    batch = Batch(records=records, shard=shard, rows=pa.array(range(records.num_rows), type=pa.int64()),
                  columns=pipeline.columns)
    return pipeline.score_batch(batch)


def score_records(pipeline: Pipeline, records: list[dict[str, Any]], shard: str = "stream") -> list[Verdict]:
    """Decisions for ``records`` (dicts keyed by column name), scored together as one batch.

    The text and id columns are typed as strings; other columns keep the types Arrow infers.
    """
    if not records:
        return []
    columns = pipeline.columns
    names: list[str] = []
    for record in records:
        names.extend(name for name in record if name not in names)
    arrays = {}
    for name in names:
        values = [record.get(name) for record in records]
        string = name in (columns.text, columns.id, columns.prompt, columns.response)
        try:
            arrays[name] = pa.array(values, type=pa.string() if string else None)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise InputError(f"column {name!r}: values of mixed or unsupported types ({error})") from None
    scores = score_arrow(pipeline, pa.RecordBatch.from_pydict(arrays), shard)
    return [Verdict(decision, reasons, risk) for decision, reasons, risk in zip(
        scores.column("decision").to_pylist(), scores.column("reasons").to_pylist(),
        scores.column("risk").to_pylist())]
