"""Shared helpers: tiny corpora written to tmp_path, and the accounting check every scan must pass."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

# Only the invisible-character stage: plumbing tests must not move with the built-in recipes.
PLUMBING = Path(__file__).parent / "policies" / "plumbing.toml"

CLEAN_TEXTS = [
    "a small domesticated carnivorous mammal with soft fur",
    "the act of moving quickly on foot",
    "an instrument for measuring temperature",
    "a large body of salt water partly enclosed by land",
    "expressing great happiness or joy",
    "学校へ行きます。今日は晴れです。",
    "café au lait with a croissant, très bien",
]


def write_parquet(path: Path, rows: list[dict], **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path, **kwargs)
    return path


def write_jsonl(path: Path, lines: list[dict | bytes | str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        for line in lines:
            if isinstance(line, dict):
                line = json.dumps(line, ensure_ascii=False)
            if isinstance(line, str):
                line = line.encode("utf-8")
            handle.write(line.rstrip(b"\n") + b"\n")
    return path


def clean_rows(n: int, prefix: str = "doc") -> list[dict]:
    return [{"id": f"{prefix}-{i}", "text": CLEAN_TEXTS[i % len(CLEAN_TEXTS)] + f" ({i})"} for i in range(n)]


def read_jsonl(path: Path) -> list[dict]:
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def read_dir(path: Path) -> pa.Table | None:
    """Every record file in a folder (Parquet, JSONL, JSONL.gz) as one table; None when there is none."""
    files = sorted(f for f in path.glob("*") if f.name.endswith((".parquet", ".jsonl", ".jsonl.gz")))
    if not files:
        return None
    tables = [pq.read_table(f) if f.suffix == ".parquet" else jsonl_table(read_jsonl(f)) for f in files]
    return pa.concat_tables(tables, promote_options="permissive")


def jsonl_table(rows: list[dict]) -> pa.Table:
    """JSONL records as a table; a field whose values Arrow cannot hold in one type is kept as JSON text."""
    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        names = list(dict.fromkeys(name for row in rows for name in row))
        columns = {}
        for name in names:
            values = [row.get(name) for row in rows]
            try:
                columns[name] = pa.array(values)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
                columns[name] = pa.array([None if v is None else json.dumps(v) for v in values])
        return pa.table(columns)


def read_outputs(out: Path) -> dict[str, pa.Table | None]:
    return {kind: read_dir(out / kind) for kind in ("clean", "flagged", "duplicates", "quarantine", "scores")}


def assert_accounted(out: Path, expected_records: int) -> dict[str, pa.Table | None]:
    """Every input record once in scores/, and once in the folder of its decision (the manifest's routing):
    clean/, flagged/, duplicates/ or quarantine/."""
    outputs = read_outputs(out)
    scores = outputs["scores"]
    assert scores is not None and scores.num_rows == expected_records
    keys = list(zip(scores.column("shard").to_pylist(), scores.column("row").to_pylist()))
    assert len(set(keys)) == expected_records, "a record appears twice in scores/"
    assert (out / "manifest.json").is_file()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["records"] == expected_records
    decisions = scores.column("decision").to_pylist()
    held = {kind: outputs[kind].num_rows if outputs[kind] is not None else 0
            for kind in ("clean", "flagged", "duplicates", "quarantine")}
    assert sum(held.values()) == expected_records
    expected = dict.fromkeys(held, 0)
    for decision, folder in manifest["routing"].items():
        expected[folder] += decisions.count(decision)
    assert held == expected, f"records per folder {held}, decisions routed {expected}"
    return outputs


@pytest.fixture
def no_leftovers():
    """Assert that a failed scan leaves neither its --out folder nor a hidden partial folder."""

    def check(out: Path) -> None:
        assert not out.exists()
        assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}.dokumi-")]

    return check
