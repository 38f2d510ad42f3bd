"""Run stages over batches: fit in pass 1 where needed, then score and decide in pass 2."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa

from dokumi.decisions import DECISIONS, SEVERITY
from dokumi.engines.local import CorpusBatches, fit_stages
from dokumi.errors import InputError
from dokumi.policy import Policy, RecordRules, StageRule, load_policy
from dokumi.records import Batch, Columns, UnreadableRow, is_text_type
from dokumi.sideinputs import prepare
from dokumi.sources import Shard, open_inputs
from dokumi.stage import Stage, StageResult

DEFAULT_BATCH_SIZE = 1024


class Pipeline:
    """Stages plus the policy that turns their scores into decisions.

    ``Pipeline([InvisibleCharacters()])`` uses each stage's default rule (flag at
    score 0.5); ``Pipeline.from_policy("pretraining")`` builds stages and rules
    from a recipe. ``score(data)`` is a generator of one scores RecordBatch per
    input batch (columns ``id``, ``shard``, ``row``, ``decision``, ``reasons``,
    ``risk`` and ``<stage>_score``).
    """

    def __init__(
        self,
        stages: list[Stage],
        rules: dict[str, StageRule] | None = None,
        records: RecordRules | None = None,
        columns: Columns | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        no_text: bool = False,
    ) -> None:
        names = [stage.name for stage in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique, got {names}")
        self.stages = list(stages)
        self.rules = dict(rules or {})
        self.records = records or RecordRules()
        self.columns = columns or Columns()
        self.batch_size = batch_size
        self.no_text = no_text  # findings named by ids, never by text (the recipe's [privacy] no_text)
        # stages fitted earlier (scikit-learn's convention: learned attributes end with "_") are kept
        self.fitted_ = all(not stage.needs_fit or is_fitted(stage) for stage in stages)

    @classmethod
    def from_policy(cls, policy: str | Policy = "pretraining", **kwargs: Any) -> Pipeline:
        """Stages and rules from a recipe (a built-in name, a path or a :class:`Policy`).

        ``columns`` may be a :class:`Columns` or a dict of role to column name (roles it leaves out keep
        the recipe's ``[columns]`` names, else the defaults); other keyword arguments go to :class:`Pipeline`.
        """
        policy = load_policy(policy)
        columns = kwargs.pop("columns", None)
        if isinstance(columns, dict):  # the roles named here; the recipe's [columns] (or defaults) for the rest
            Columns.from_mapping(columns)
            columns = replace(policy.columns, **columns)
        kwargs.setdefault("no_text", policy.no_text)
        return cls(policy.stages, rules=policy.rules, records=policy.records, columns=columns or policy.columns,
                   **kwargs)

    def setup(self) -> Pipeline:
        """Load and check every stage's side inputs and hand each stage its context; before any data is read."""
        prepare(self.stages, self.columns, self.batch_size, no_text=self.no_text)
        return self

    def corpus(self, shards: list[Shard]) -> CorpusBatches:
        """The re-readable batches a fit reads: records above the recipe's ``max_text_bytes`` left out."""
        return CorpusBatches(shards, self.columns, self.batch_size, self.records.max_text_bytes)

    @property
    def needs_fit(self) -> bool:
        """Whether any stage needs a fitting pass over the corpus."""
        return any(stage.needs_fit for stage in self.stages)

    def rule(self, stage_name: str) -> StageRule:
        """The decision rule of stage ``stage_name`` (the default rule when the recipe sets none)."""
        return self.rules.get(stage_name, StageRule())

    def check(self, shards: list[Shard]) -> None:
        """Fail before reading any data if a shard lacks a column some stage reads."""
        for shard in shards:
            names = shard.schema_names()
            content = self.columns.content_roles(names)
            if not content and names:
                c = self.columns
                raise InputError(
                    f"column {c.text!r} missing in shard {shard.name} (and no {c.prompt!r} + {c.response!r} pair); "
                    f"found: {', '.join(names)}; {_column_hint('text')}"
                )
            self._check_types(shard)
            for stage in self.stages:
                for role in stage.reads:
                    if role == "content" or not names:
                        continue
                    column = getattr(self.columns, role)
                    if column not in names:
                        raise InputError(
                            f"column {column!r} missing in shard {shard.name}, needed by stage {stage.name!r}; "
                            f"found: {', '.join(names)}; {_column_hint(role)}"
                        )

    def _check_types(self, shard: Shard) -> None:
        schema = shard.schema()
        if schema is None:
            return
        for role in ("text", "prompt", "response"):
            name = getattr(self.columns, role)
            if name in schema.names:
                kind = schema.field(name).type
                if not (is_text_type(kind) or pa.types.is_null(kind)):
                    raise InputError(f"column {name!r} in shard {shard.name} has type {kind}; expected string")

    def fit(self, data: Any) -> Pipeline:
        """Pass 1: fit every stage that needs corpus statistics on ``data``, reading it once per round.

        Later calls to :meth:`score` look fitted state up by each record's content, so
        the pipeline can score other data than it was fitted on.
        """
        self.setup()
        shards = open_inputs(data)
        self.check(shards)
        fit_stages(self.stages, self.corpus(shards), columns=self.columns, batch_size=self.batch_size)
        self.fitted_ = True
        return self

    def score(self, data: Any) -> Iterator[pa.RecordBatch]:
        """Pass 2 as a generator: one scores RecordBatch per input batch. Fits on ``data`` first if needed."""
        self.setup()
        shards = open_inputs(data)
        self.check(shards)
        if not self.fitted_:
            if not all(shard.reiterable for shard in shards):
                raise InputError(
                    "stages that need a fitting pass cannot read a one-shot iterator twice; "
                    "call fit() on a re-readable copy first, or pass a list, a table or files"
                )
            fit_stages(self.stages, self.corpus(shards), columns=self.columns, batch_size=self.batch_size)
            self.fitted_ = True
        for batch in CorpusBatches(shards, self.columns, self.batch_size):
            yield self.score_batch(batch)

    def map_function(self, prefix: str = "dokumi_") -> Callable[[Any], Any]:
        """A function for ``datasets.Dataset.map(..., batched=True)`` adding decision, risk and reasons.

        Fit first (``pipeline.fit(dataset)``) when a stage needs corpus statistics. Fitted state is
        looked up by each record's content, so any batch size and any number of processes give the
        same decisions as ``dokumi scan``. With ``num_proc`` > 1, map over
        ``dataset.with_format("arrow")`` (the function then returns typed Arrow columns).
        """
        if not self.fitted_:
            raise InputError("fit the pipeline on the dataset first: pipeline.fit(dataset)")
        self.setup()
        return _ColumnScorer(self, prefix)

    def score_batch(self, batch: Batch) -> pa.RecordBatch:
        """Scores and decisions for one batch, its unreadable rows appended as drops.

        Records above the recipe's ``max_text_bytes`` are routed by the record rules alone:
        no stage reads them (their stage scores are NaN).
        """
        n = batch.num_rows
        severity = np.zeros(n, dtype=np.int8)
        reasons: list[list[str]] = [[] for _ in range(n)]
        risk = np.zeros(n)
        stage_scores: dict[str, np.ndarray] = {}
        oversized = batch.content_bytes > self.records.max_text_bytes if n else np.zeros(0, dtype=bool)
        scored = np.flatnonzero(~oversized)
        inner = batch if len(scored) == n else batch.select(scored)
        judged = []
        for stage in self.stages:
            result = stage.score(inner) if len(scored) else StageResult.empty(0)
            if len(result.scores) != len(scored):
                raise RuntimeError(f"stage {stage.name!r} returned {len(result.scores)} scores "
                                   f"for {len(scored)} records")
            scores = np.nan_to_num(result.scores, nan=0.0)
            rule = self.rule(stage.name)
            judged.append((stage.name, rule, result, scores, rule.decide(scores, result.duplicate), rule.risk(scores)))
            column = np.full(n, np.nan)
            column[scored] = scores
            stage_scores[stage.name] = column
        # what the stages that are evidence on their own say: the support a weak signal needs
        evidence = np.zeros(len(scored))
        for _, rule, _, _, _, stage_risk in judged:
            if rule.support is None:
                np.maximum(evidence, stage_risk, out=evidence)
        supported = np.zeros(len(scored), dtype=bool)
        for _, rule, result, _, stage_severity, stage_risk in judged:
            if rule.support is not None:
                alone = evidence < rule.support
                alarm = stage_severity > SEVERITY["duplicate"]
                supported |= alarm & ~alone
                stage_severity = np.where(alone & alarm, SEVERITY["keep"], stage_severity).astype(np.int8)
                stage_risk = np.where(alone, UNSUPPORTED_RISK * stage_risk, stage_risk)
            for i in np.flatnonzero(stage_severity):
                reasons[scored[i]].extend(result.reasons[i])
            severity[scored] = np.maximum(severity[scored], stage_severity)
            risk[scored] = np.maximum(risk[scored], stage_risk)
        # a weak signal's alarm names its support too: the other stages' findings, below their own flag point
        for i in np.flatnonzero(supported).tolist():
            for _, rule, result, _, stage_severity, stage_risk in judged:
                if rule.support is None and stage_severity[i] <= SEVERITY["duplicate"] and stage_risk[i] > 0:
                    reasons[scored[i]].extend(r for r in result.reasons[i] if r not in reasons[scored[i]])
        self._apply_record_rules(batch, severity, reasons, oversized)
        table = scores_table(batch.ids, batch.shard, batch.rows, severity, reasons, risk, stage_scores)
        if batch.unreadable:
            table = pa.Table.from_batches(
                [table, unreadable_scores(batch.unreadable, [s.name for s in self.stages])]
            ).combine_chunks().to_batches()[0]
        return table

    def _apply_record_rules(self, batch: Batch, severity: np.ndarray, reasons: list[list[str]],
                            oversized: np.ndarray) -> None:
        rules = self.records
        level = SEVERITY
        if rules.null_content != "keep":
            for i in np.flatnonzero(batch.null_content):
                reasons[i].append("null-content")
                severity[i] = max(severity[i], level[rules.null_content])
        if rules.oversized != "keep":
            sizes = batch.content_bytes
            for i in np.flatnonzero(oversized).tolist():
                reasons[i].append(f"oversized:bytes={int(sizes[i])}")
                severity[i] = max(severity[i], level[rules.oversized])


def _column_hint(role: str) -> str:
    """How to name the column that plays ``role``, on the command line and in Python."""
    return f"if another column holds it, pass --column {role}=NAME (Python: columns={{{role!r}: 'NAME'}})"


def is_fitted(stage: Stage) -> bool:
    """Whether ``stage`` holds learned state: a public attribute whose name ends with ``_``."""
    return any(name.endswith("_") and not name.startswith("_") for name in vars(stage))


class _ColumnScorer:
    """Picklable, so ``Dataset.map(num_proc=N)`` can ship it to worker processes.

    Takes a batch as a dict of lists (the default format) and returns lists, or an Arrow table
    (``dataset.with_format("arrow")``) and returns an Arrow table whose columns keep their types. With
    ``num_proc`` > 1 use the Arrow format: from lists, ``datasets`` infers ``list<null>`` for a batch
    whose records have no reasons, and then cannot join it to another process's ``list<string>``.
    """

    def __init__(self, pipeline: Pipeline, prefix: str) -> None:
        self.pipeline, self.prefix = pipeline, prefix

    def __call__(self, columns: dict[str, list] | pa.Table) -> dict[str, Any] | pa.Table:
        table = columns if isinstance(columns, pa.Table) else None
        if table is not None:
            records = table.combine_chunks().to_batches()[0] if table.num_rows else \
                pa.RecordBatch.from_pydict(table.to_pydict())
        else:
            records = pa.RecordBatch.from_pydict(columns)
        rows = pa.array(range(records.num_rows), type=pa.int64())
        batch = Batch(records=records, shard="dataset", rows=rows, columns=self.pipeline.columns)
        scores = self.pipeline.score_batch(batch)
        names = ["decision", "risk", "reasons"] + [f"{stage.name}_score" for stage in self.pipeline.stages]
        if table is not None:  # its own columns, then dokumi's (datasets takes a returned table as the whole batch)
            for name in names:
                table = table.append_column(f"{self.prefix}{name}", scores.column(name))
            return table
        return {f"{self.prefix}{name}": scores.column(name).to_pylist() for name in names}


# the risk of a weak signal that no other stage supports: scaled below the flag point (0.5), order kept
UNSUPPORTED_RISK = 0.9 * 0.5

SCORES_BASE_FIELDS = [
    pa.field("id", pa.string()),
    pa.field("shard", pa.string()),
    pa.field("row", pa.int64()),
    pa.field("decision", pa.string()),
    pa.field("reasons", pa.list_(pa.string())),
    pa.field("risk", pa.float64()),
]


def scores_schema(stage_names: Iterable[str]) -> pa.Schema:
    """The Arrow schema of a scores batch for stages named ``stage_names``."""
    return pa.schema(SCORES_BASE_FIELDS + [pa.field(f"{name}_score", pa.float64()) for name in stage_names])


def scores_table(
    ids: list[str],
    shard: str,
    rows: pa.Array,
    severity: np.ndarray,
    reasons: list[list[str]],
    risk: np.ndarray,
    stage_scores: dict[str, np.ndarray],
) -> pa.RecordBatch:
    """One scores RecordBatch: ids, shard, rows, decisions from ``severity``, reasons, risk, stage scores."""
    n = len(ids)
    decisions = np.asarray(DECISIONS, dtype=object)[severity] if n else np.array([], dtype=object)
    arrays = [
        pa.array(ids, type=pa.string()),
        pa.array([shard] * n, type=pa.string()),
        rows.cast(pa.int64()),
        pa.array(decisions.tolist(), type=pa.string()),
        pa.array(reasons, type=pa.list_(pa.string())),
        pa.array(np.clip(risk, 0.0, 1.0), type=pa.float64()),
    ]
    arrays += [pa.array(scores, type=pa.float64()) for scores in stage_scores.values()]
    return pa.RecordBatch.from_arrays(arrays, schema=scores_schema(stage_scores))


def unreadable_scores(rows: list[UnreadableRow], stage_names: list[str]) -> pa.RecordBatch:
    """Unreadable rows are dropped with risk 1: nothing vouches for them."""
    n = len(rows)
    return scores_table(
        ids=[row.id for row in rows],
        shard=rows[0].shard,
        rows=pa.array([row.row for row in rows], type=pa.int64()),
        severity=np.full(n, SEVERITY["drop"], dtype=np.int8),
        reasons=[[row.reason] for row in rows],
        risk=np.ones(n),
        stage_scores={name: np.full(n, np.nan) for name in stage_names},
    )


def decisions_of(scores: pa.RecordBatch) -> list[str]:
    """The decision of each record in a scores batch, in order."""
    return scores.column("decision").to_pylist()


__all__ = ["Pipeline", "CorpusBatches", "scores_schema", "scores_table", "unreadable_scores", "decisions_of"]
