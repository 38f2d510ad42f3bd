"""Parquet writers for scan outputs: one file per input shard, written incrementally."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

COMPRESSION = "zstd"


def output_stem(index: int, shard_name: str) -> str:
    """A file-system-safe, order-preserving stem for a shard's outputs."""
    stem = re.sub(r"\.(parquet|pq|jsonl|ndjson|json)(\.gz)?$", "", shard_name, flags=re.IGNORECASE)
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", stem.replace("/", "__")).strip("._") or "shard"
    return f"{index:05d}-{stem[:120]}"


class PartWriter:
    """Appends record batches to ``<stem>.parquet``; a batch whose schema cannot be
    cast to the open file's schema starts a new part (``<stem>.part1.parquet``, ...)."""

    def __init__(self, directory: Path, stem: str) -> None:
        self.directory = directory
        self.stem = stem
        self.files: list[tuple[Path, int]] = []
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._rows = 0

    def write(self, records: pa.RecordBatch | pa.Table) -> None:
        if records.num_rows == 0:
            return
        table = records if isinstance(records, pa.Table) else pa.Table.from_batches([records])
        if self._writer is not None and table.schema != self._schema:
            try:
                table = table.cast(self._schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
                self._close_part()
        if self._writer is None:
            self._open_part(table.schema)
        self._writer.write_table(table)
        self._rows += table.num_rows

    def _open_part(self, schema: pa.Schema) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        part = len(self.files)
        name = f"{self.stem}.parquet" if part == 0 else f"{self.stem}.part{part}.parquet"
        path = self.directory / name
        self._writer = pq.ParquetWriter(path, schema, compression=COMPRESSION)
        self._schema = schema
        self.files.append((path, 0))

    def _close_part(self) -> None:
        if self._writer is None:
            return
        self._writer.close()
        path, _ = self.files[-1]
        self.files[-1] = (path, self._rows)
        self._writer, self._schema, self._rows = None, None, 0

    def close(self) -> list[tuple[Path, int]]:
        self._close_part()
        return self.files


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
