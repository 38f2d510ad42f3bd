"""The NeMo Curator adapter: a Curator stage over DocumentBatch tasks decides as `dokumi scan` does.

NeMo Curator needs Linux, Ray and (for most of its stages) CUDA; it is not in the test extra, so these tests run
where it is installed (pip install nemo-curator) and are skipped elsewhere.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import write_jsonl
from test_datatrove import corpus

from dokumi import InputError, Pipeline, scan

pytest.importorskip("nemo_curator.stages.base", reason="NeMo Curator is not installed")

from nemo_curator.stages.base import ProcessingStage  # noqa: E402
from nemo_curator.tasks import DocumentBatch  # noqa: E402

from dokumi.integrations.nemo_curator import DokumiFilter  # noqa: E402


def test_curator_stage_keeps_what_a_scan_keeps(tmp_path):
    rows = corpus()
    data = write_jsonl(tmp_path / "data" / "part-0.jsonl", rows)
    scan(str(data), out=tmp_path / "scan", policy="pretraining", progress=False)
    scores = {row["id"]: row for row in pq.read_table(tmp_path / "scan" / "scores").to_pylist()}
    stage = DokumiFilter(Pipeline.from_policy("pretraining").fit(str(data)))
    assert isinstance(stage, ProcessingStage)
    assert stage.inputs() == (["data"], ["text"])
    assert stage.outputs() == (["data"], ["dokumi_decision", "dokumi_reasons", "dokumi_risk"])
    kept = []
    for start in range(0, len(rows), 50):  # tasks of 50 rows, pandas and Arrow alternately
        chunk = rows[start:start + 50]
        table = pd.DataFrame(chunk) if start % 100 else pa.Table.from_pylist(chunk)
        out = stage.process(DocumentBatch(dataset_name="corpus", data=table))
        assert type(out.data) is type(table)
        kept += out.to_pyarrow().to_pylist()
        metrics = stage._consume_custom_metrics()
        assert sum(metrics.values()) == len(chunk)
    assert {row["id"] for row in kept} == {i for i, row in scores.items() if row["decision"] in ("keep", "flag")}
    for row in kept:
        assert row["dokumi_decision"] == scores[row["id"]]["decision"]
        assert list(row["dokumi_reasons"]) == scores[row["id"]]["reasons"]
        assert row["dokumi_risk"] == pytest.approx(scores[row["id"]]["risk"])
        assert row["source"] == "web"  # input columns pass through


def test_annotate_only_and_refusals():
    rows = corpus()
    pipeline = Pipeline.from_policy("pretraining").fit(rows)
    out = DokumiFilter(pipeline, remove=()).process(DocumentBatch(dataset_name="c", data=pa.Table.from_pylist(rows)))
    assert out.data.num_rows == len(rows)
    assert set(out.data.column("dokumi_decision").to_pylist()) == {"keep", "flag", "drop", "duplicate"}
    with pytest.raises(InputError, match="fit"):
        DokumiFilter(Pipeline.from_policy("pretraining"))
    with pytest.raises(ValueError, match="unknown decisions"):
        DokumiFilter(pipeline, remove=("maybe",))
