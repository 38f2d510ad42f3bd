"""The stage's saved state: every record content it saw, to cluster a later scan's records with (``index``).

A scan writes ``state/near_duplicates/``:

* ``params.json``: format, signature parameters, bands and rows, records;
* ``signatures.npy``: one MinHash signature per distinct content (uint32);
* (``keys.npy``: their LSH band keys, in states of earlier versions; reused when the bands agree);
* ``contents.parquet``: per content, its 64-bit content key, how many records
  carried it, the lowest 64-bit key of their ids, the run (generation) that
  first saw it, and its cluster id (null when alone);
* ``words.npy`` (repetition mode; written by the stage, not read by ``index``): the word-set
  signatures of the clustered contents that copies of the fitted stage probe new records against.

No text: content keys are the first 8 bytes of the records' SHA-256.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dokumi.errors import InputError
from dokumi.lsh import band_keys
from dokumi.sideinputs import SavedState

STATE_FORMAT = "dokumi.near_duplicates.state/2"


@dataclass
class Index:
    """Distinct contents, ascending by key: signature, records carrying it, lowest id key, first run, cluster."""

    key: np.ndarray
    signature: np.ndarray
    count: np.ndarray
    id: np.ndarray
    generation: np.ndarray
    cluster: list[str | None]

    def __len__(self) -> int:
        return len(self.key)


def load_index(state: SavedState, params: dict[str, Any], bands: int, rows: int) -> tuple[Index, np.ndarray]:
    """An earlier scan's index and its band keys (computed again where it used other bands)."""
    saved = state.read_json("params.json")
    if saved.get("format") != STATE_FORMAT:
        raise InputError(f"{state.label} {state.path}: format {saved.get('format')!r}, expected {STATE_FORMAT!r} "
                         "(scan the earlier corpus again with this version)")
    for key, value in params.items():
        if saved.get(key) != value:
            raise InputError(f"{state.label} {state.path} was built with {key}={saved.get(key)!r}; "
                             f"this stage uses {value!r}")
    table = state.read_table("contents.parquet")
    signatures = state.read_array("signatures.npy")
    if len(signatures) != table.num_rows:
        raise InputError(f"{state.label} {state.path}: {len(signatures)} signatures for {table.num_rows} contents")
    index = Index(
        key=table.column("content").to_numpy().astype(np.uint64),
        signature=signatures.astype(np.uint32),
        count=table.column("records").to_numpy().astype(np.int64),
        id=table.column("id").to_numpy().astype(np.uint64),
        generation=table.column("generation").to_numpy().astype(np.int32),
        cluster=table.column("cluster").to_pylist(),
    )
    if len(index.key) > 1 and (np.diff(index.key.astype(np.uint64)) == 0).any():
        raise InputError(f"{state.label} {state.path}: contents.parquet repeats a content key")
    if (saved.get("bands"), saved.get("rows")) == (bands, rows) and state.exists("keys.npy"):
        keys = state.read_array("keys.npy").astype(np.uint64)
    else:
        keys = band_keys(index.signature, bands, rows)
    return index, keys


def save_index(directory: Path, index: Index, params: dict[str, Any], bands: int, rows: int) -> list[Path]:
    """Write the fitted index (signatures, contents, params) to ``directory``; return the files."""
    directory.mkdir(parents=True, exist_ok=True)
    # no band keys: a later run computes them from the signatures (0.8 s at 300,000 contents) where it
    # loads the index, instead of every scan writing them (296 bytes per content) on the off chance
    paths = [directory / "signatures.npy", directory / "contents.parquet", directory / "params.json"]
    np.save(paths[0], index.signature)
    pq.write_table(pa.table({
        "content": pa.array(index.key, pa.uint64()),
        "records": pa.array(index.count, pa.int64()),
        "id": pa.array(index.id, pa.uint64()),
        "generation": pa.array(index.generation, pa.int32()),
        "cluster": pa.array(index.cluster, pa.string()),
    }), paths[1])
    document = {"format": STATE_FORMAT, **params, "bands": bands, "rows": rows, "contents": len(index),
                "records": int(index.count.sum())}
    paths[2].write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return paths


__all__ = ["STATE_FORMAT", "Index", "load_index", "save_index"]
