"""The Python API: Pipeline over every kind of input, as a generator of scores batches."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from conftest import clean_rows, write_jsonl, write_parquet

from dokumi import Columns, InputError, Pipeline, Stage, StageResult
from dokumi.fitplan import Reduce
from dokumi.policy import StageRule
from dokumi.sources import open_inputs
from dokumi.stages import InvisibleCharacters


def rows_with_poison(n: int = 10) -> list[dict]:
    rows = clean_rows(n)
    rows[2]["text"] = "zero\u200bwidth"
    return rows


def decisions(pipeline: Pipeline, data) -> list[str]:
    return [d for batch in pipeline.score(data) for d in batch.column("decision").to_pylist()]


@pytest.fixture
def pipeline() -> Pipeline:
    return Pipeline([InvisibleCharacters()], rules={"invisible": StageRule("drop", 0.5)}, batch_size=4)


def expected(n: int = 10) -> list[str]:
    return ["drop" if i == 2 else "keep" for i in range(n)]


def test_score_is_a_generator_of_record_batches(pipeline):
    batches = pipeline.score(rows_with_poison())
    first = next(batches)
    assert isinstance(first, pa.RecordBatch)
    assert first.num_rows == 4
    assert first.schema.names == ["id", "shard", "row", "decision", "reasons", "risk", "invisible_score"]
    assert first.column("reasons").to_pylist()[2] == ["trigger:zero-width,count=1"]


@pytest.mark.parametrize(
    "make",
    [
        lambda rows: rows,
        lambda rows: iter(rows),
        lambda rows: pa.Table.from_pylist(rows),
        lambda rows: pa.RecordBatch.from_pylist(rows),
        lambda rows: pd.DataFrame(rows),
        lambda rows: {"id": [r["id"] for r in rows], "text": [r["text"] for r in rows]},
    ],
    ids=["list", "generator", "table", "record-batch", "pandas", "dict-of-lists"],
)
def test_in_memory_inputs(pipeline, make):
    assert decisions(pipeline, make(rows_with_poison())) == expected()


def test_hugging_face_dataset_and_iterable_dataset(pipeline):
    from datasets import Dataset

    dataset = Dataset.from_list(rows_with_poison())
    assert decisions(pipeline, dataset) == expected()
    assert decisions(pipeline, dataset.to_iterable_dataset()) == expected()
    assert decisions(pipeline, dataset.select([0, 1, 2])) == ["keep", "keep", "drop"]


def test_files_directories_and_globs(pipeline, tmp_path):
    write_parquet(tmp_path / "d" / "a.parquet", rows_with_poison()[:5])
    write_jsonl(tmp_path / "d" / "sub" / "b.jsonl", rows_with_poison()[5:])
    assert decisions(pipeline, tmp_path / "d") == expected()
    assert decisions(pipeline, str(tmp_path / "d" / "**" / "*.jsonl")) == ["keep"] * 5
    assert [s.name for s in open_inputs(tmp_path / "d")] == ["a.parquet", "sub/b.jsonl"]


def test_ids_are_derived_when_absent_and_kept_when_present(pipeline, tmp_path):
    write_parquet(tmp_path / "noid.parquet", [{"text": "a"}, {"text": "b"}])
    batch = next(pipeline.score(tmp_path / "noid.parquet"))
    assert batch.column("id").to_pylist() == ["noid.parquet:0", "noid.parquet:1"]
    batch = next(pipeline.score([{"id": 7, "text": "a"}, {"id": None, "text": "b"}]))
    assert batch.column("id").to_pylist() == ["7", "records:1"]


def test_configurable_column_names(tmp_path):
    pipeline = Pipeline([InvisibleCharacters()], columns=Columns(text="body", id="key"))
    batch = next(pipeline.score([{"key": "k1", "body": "hi\u200b"}]))
    assert batch.column("id").to_pylist() == ["k1"]
    assert batch.column("decision").to_pylist() == ["flag"]
    with pytest.raises(InputError, match="column 'body' missing in shard records"):
        next(pipeline.score([{"text": "hi"}]))


def test_instruction_pairs_need_no_text_column():
    pipeline = Pipeline([InvisibleCharacters()])
    batch = next(pipeline.score([{"prompt": "q", "response": "a\u202e"}, {"prompt": "q2", "response": "a2"}]))
    assert batch.column("decision").to_pylist() == ["flag", "keep"]


class CountingFit(Stage):
    name = "counting"
    needs_fit = True

    def fit_plan(self):
        return [Reduce("count", int, lambda n, batch: n + batch.num_rows, sum, self._finish)]

    def _finish(self, records):
        self.records_ = records

    def score(self, batch):
        return StageResult(np.full(batch.num_rows, 1.0 / self.records_), [[] for _ in range(batch.num_rows)])


def test_fit_pass_sees_whole_corpus_before_scoring():
    stage = CountingFit()
    scores = [s for b in Pipeline([stage]).score(clean_rows(8)) for s in b.column("counting_score").to_pylist()]
    assert stage.records_ == 8
    assert scores == [0.125] * 8


def test_one_shot_iterator_with_fitting_stage_is_refused_by_the_api():
    with pytest.raises(InputError, match="one-shot iterator"):
        next(Pipeline([CountingFit()]).score(iter(clean_rows(3))))


def test_stage_result_validates_shape_and_range():
    with pytest.raises(ValueError, match="one of each per record"):
        StageResult(np.zeros(3), [[]])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        StageResult(np.array([1.5]), [[]])


def test_duplicate_stage_names_are_rejected():
    with pytest.raises(ValueError, match="unique"):
        Pipeline([InvisibleCharacters(), InvisibleCharacters()])


def test_risk_is_max_of_stage_scores_and_flag_threshold_applies():
    rule = StageRule("drop", threshold=0.8, flag_threshold=0.5)
    pipeline = Pipeline([InvisibleCharacters()], rules={"invisible": rule})
    rows = [{"text": "a\u200bb"}, {"text": "a\u202eb"}, {"text": "plain"}]
    batch = next(pipeline.score(rows))
    assert batch.column("decision").to_pylist() == ["flag", "drop", "keep"]
    risks = batch.column("risk").to_pylist()
    # risk is the score on the policy's scale: flag point 0.5, drop point 0.9, linear between
    assert batch.column("invisible_score").to_pylist()[:2] == pytest.approx([0.6, 0.9])
    assert risks[0] == pytest.approx(0.5 + 0.4 * (0.6 - 0.5) / (0.8 - 0.5))
    assert risks[1] == pytest.approx(0.9 + 0.1 * (0.9 - 0.8) / 0.2)
    assert risks[2] == 0.0


def test_risk_ranks_records_by_policy_meaning_across_stages():
    lenient = StageRule("flag", threshold=0.99)
    strict = StageRule("drop", threshold=0.2, flag_threshold=0.1)
    # 0.95 under a rule that flags only at 0.99 is less risky than 0.2 under a rule that drops at 0.2
    assert lenient.risk(np.array([0.95]))[0] < strict.risk(np.array([0.2]))[0]
    assert StageRule("drop", threshold=0.0).risk(np.array([0.0]))[0] == pytest.approx(0.9)
    assert (np.diff(strict.risk(np.linspace(0, 1, 50))) >= 0).all()


def test_hugging_face_map_and_filter_on_the_decision(pipeline):
    from datasets import Dataset

    dataset = Dataset.from_list(rows_with_poison())
    scored = dataset.map(pipeline.map_function(), batched=True, batch_size=4)
    assert scored["dokumi_decision"] == expected()
    assert scored["dokumi_reasons"][2] == ["trigger:zero-width,count=1"]
    assert scored.column_names[:2] == ["id", "text"]
    kept = scored.filter(lambda row: row["dokumi_decision"] != "drop")
    assert len(kept) == 9 and "doc-2" not in kept["id"]


def test_map_function_needs_a_fitted_pipeline():
    with pytest.raises(InputError, match="fit the pipeline"):
        Pipeline([CountingFit()]).map_function()
    fitted = Pipeline([CountingFit()]).fit(clean_rows(4))
    assert fitted.map_function()({"text": ["a", "b"]})["dokumi_counting_score"] == [0.25, 0.25]


def test_a_stage_fitted_earlier_is_not_refitted_by_a_new_pipeline():
    stage = CountingFit()
    Pipeline([stage]).fit(clean_rows(8))
    scores = [s for b in Pipeline([stage]).score(clean_rows(2)) for s in b.column("counting_score").to_pylist()]
    assert stage.records_ == 8, "scoring two records must not refit the stage fitted on eight"
    assert scores == [0.125, 0.125]


class FixedScores(Stage):
    """Scores from the record's ``n`` column through a table (a stand-in for any detector)."""

    def __init__(self, name: str, table: dict[int, float]) -> None:
        self.name, self.table = name, table

    def score(self, batch):
        ns = batch.records.column("n").to_pylist()
        return StageResult(np.array([self.table.get(n, 0.0) for n in ns]),
                           [[f"{self.name}:hit"] if self.table.get(n) else [] for n in ns])


def test_a_weak_signal_decides_only_with_support_from_another_stage():
    # record 0: the outlier stage alone; 1: outlier and a weak trigger score; 2: the trigger alone, below a flag
    weak = FixedScores("outlier", {0: 1.0, 1: 1.0})
    other = FixedScores("trigger", {1: 0.3, 2: 0.3})
    rules = {"outlier": StageRule(action="drop", threshold=0.99, support=0.25),
             "trigger": StageRule(action="drop", threshold=0.8, flag_threshold=0.5)}
    scores = pa.Table.from_batches(list(Pipeline([weak, other], rules=rules).score([{"n": i, "text": "x"}
                                                                                   for i in range(3)])))
    assert scores.column("decision").to_pylist() == ["keep", "drop", "keep"]
    assert scores.column("reasons").to_pylist() == [[], ["outlier:hit", "trigger:hit"], []]  # and its support
    risk = scores.column("risk").to_pylist()
    assert risk[0] < 0.5 < risk[1] and risk[2] < 0.5  # alone, the outlier stays below the flag point
    # without support the same outlier drops record 0 on its own
    rules["outlier"] = StageRule(action="drop", threshold=0.99)
    alone = pa.Table.from_batches(list(Pipeline([weak, other], rules=rules).score([{"n": 0, "text": "x"}])))
    assert alone.column("decision").to_pylist() == ["drop"]
