"""Parquet writers for scan outputs: one file per input shard, written incrementally.

Every file must read back with pyarrow and pandas. Parquet cannot hold a
struct without fields, and pyarrow refuses to open a file whose schema nests
about 100 levels deep (a list counts twice), so a column of either kind is
written as JSON text instead (:func:`parquet_safe`); other columns are
written as they came.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

COMPRESSION = "zstd"
# deepest column kept nested in Parquet output, in Parquet schema levels; pyarrow reads up to about 100
PARQUET_MAX_DEPTH = 64


def output_stem(index: int, shard_name: str) -> str:
    """A file-system-safe, order-preserving stem for a shard's outputs."""
    stem = re.sub(r"\.(parquet|pq|jsonl|ndjson|json|csv|tsv)(\.gz)?$", "", shard_name, flags=re.IGNORECASE)
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
        """Append ``records``; a schema the open part cannot take starts a new part file."""
        if records.num_rows == 0:
            return
        table = parquet_safe(records if isinstance(records, pa.Table) else pa.Table.from_batches([records]))
        if self._writer is not None and table.schema != self._schema:
            try:
                table = table.cast(self._schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
                self._close_part()
        if self._writer is None:
            self._open_part(table.schema)
        assert self._writer is not None, "a part is open"
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
        """Close the open part; return every part written as ``(path, rows)``."""
        self._close_part()
        return self.files


def added_column_names(existing: list[str], wanted: list[str]) -> list[str]:
    """Names for the columns dokumi adds beside a record's own (``reasons``, ``risk``, ...): each wanted name,
    else ``dokumi_<name>``, else ``dokumi_<name>_2``, ... the first that no input column (nor an earlier
    added one) uses. Compared without case, as Spark and SQL engines compare them."""
    taken = {name.casefold() for name in existing}
    chosen = []
    for name in wanted:
        candidates = [name, f"dokumi_{name}"]
        candidates += (f"dokumi_{name}_{n}" for n in range(2, len(taken) + 3))
        chosen.append(next(candidate for candidate in candidates if candidate.casefold() not in taken))
        taken.add(chosen[-1].casefold())
    return chosen


def added_field(name: str, role: str, kind: pa.DataType) -> pa.Field:
    """A column dokumi adds; its field metadata names its role, whatever name it had to take."""
    return pa.field(name, kind, metadata={"dokumi.column": role})


def parquet_safe(table: pa.Table) -> pa.Table:
    """``table`` with each column Parquet cannot store readably (:data:`PARQUET_MAX_DEPTH`, empty structs)
    as JSON text; the same table when there is none."""
    for index, column in enumerate(table.schema):
        if parquet_depth(column.type) > PARQUET_MAX_DEPTH or _has_empty_struct(column.type):
            values = table.column(index).to_pylist()
            text = pa.array([None if v is None else json.dumps(v, ensure_ascii=False, default=str) for v in values],
                            pa.string())
            table = table.set_column(index, pa.field(column.name, pa.string(), metadata=column.metadata), text)
    return table


def parquet_depth(kind: pa.DataType) -> int:
    """Levels of the Parquet schema for a column of ``kind``: 1 for a leaf, a struct adds 1, a list or map 2."""
    if pa.types.is_dictionary(kind):
        return parquet_depth(kind.value_type)
    if pa.types.is_struct(kind):
        return 1 + max((parquet_depth(kind.field(i).type) for i in range(kind.num_fields)), default=0)
    if pa.types.is_map(kind):
        return 2 + max(parquet_depth(kind.key_type), parquet_depth(kind.item_type))
    if _is_list(kind):
        return 2 + parquet_depth(kind.value_type)
    return 1


def _has_empty_struct(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        return _has_empty_struct(kind.value_type)
    if pa.types.is_struct(kind):
        return kind.num_fields == 0 or any(_has_empty_struct(kind.field(i).type) for i in range(kind.num_fields))
    if pa.types.is_map(kind):
        return _has_empty_struct(kind.key_type) or _has_empty_struct(kind.item_type)
    return _is_list(kind) and _has_empty_struct(kind.value_type)


def _is_list(kind: pa.DataType) -> bool:
    return (pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)
            or getattr(pa.types, "is_list_view", lambda _: False)(kind)
            or getattr(pa.types, "is_large_list_view", lambda _: False)(kind))


def file_sha256(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Lowercase hex SHA-256 of the file at ``path``, read in chunks of ``chunk_size`` bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()
