"""Read input shards as bounded-size batches.

Inputs are Parquet or JSONL files (given as files, directories or globs),
Hugging Face ``datasets`` objects, Arrow tables, pandas DataFrames, or
iterables of dicts. Each becomes a :class:`Shard` that yields
:class:`~dokumi.records.Batch` objects of at most ``batch_size`` rows.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dokumi.errors import InputError
from dokumi.records import Batch, Columns, UnreadableRow

PARQUET_SUFFIXES = (".parquet", ".pq")
JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz")
STRING_ROLES = ("text", "prompt", "response")


@dataclass
class Shard:
    """One unit of input, read in batches. ``name`` prefixes derived ids (``<name>:<row>``)."""

    name: str
    warnings: list[str] = field(default_factory=list, init=False)

    @property
    def path(self) -> str | None:
        """The file the shard reads, or None for in-memory data."""
        return None

    @property
    def reiterable(self) -> bool:
        """Whether the shard can be read more than once (a one-shot iterator cannot)."""
        return True

    def schema_names(self) -> list[str]:
        """Column names, read cheaply (metadata or the first record)."""
        raise InputError(f"shard {self.name}: schema unknown")

    def num_rows(self) -> int | None:
        """Rows in the shard when known without reading it, else None."""
        return None

    def schema(self) -> pa.Schema | None:
        """The Arrow schema where it is known before reading (Parquet, tables)."""
        return None

    def batches(self, columns: Columns, batch_size: int) -> Iterator[Batch]:
        """The shard's records as :class:`Batch` es of at most ``batch_size`` rows, with row numbers."""
        row = 0
        for records, unreadable in self._chunks(batch_size):
            rows = pa.array(range(row, row + records.num_rows), type=pa.int64())
            row += records.num_rows
            yield Batch(records=records, shard=self.name, rows=rows, columns=columns, unreadable=unreadable)

    def _chunks(self, batch_size: int) -> Iterator[tuple[pa.RecordBatch, list[UnreadableRow]]]:
        return iter(())


@dataclass
class ParquetShard(Shard):
    file: str = ""

    @property
    def path(self) -> str:
        """The Parquet file."""
        return self.file

    def _open(self) -> pq.ParquetFile:
        size = os.path.getsize(self.file)
        if size == 0:
            raise InputError(f"shard {self.name}: empty file (0 bytes), not a Parquet file")
        try:
            return pq.ParquetFile(self.file)
        except (pa.ArrowInvalid, OSError) as error:
            raise InputError(f"shard {self.name}: corrupt or not a Parquet file ({error})") from None

    def schema_names(self) -> list[str]:
        return self._open().schema_arrow.names

    def schema(self) -> pa.Schema:
        return self._open().schema_arrow

    def num_rows(self) -> int:
        """Rows in the file, from its footer."""
        return self._open().metadata.num_rows

    def _chunks(self, batch_size: int) -> Iterator[tuple[pa.RecordBatch, list[UnreadableRow]]]:
        parquet = self._open()
        row = 0
        try:
            for group in range(parquet.num_row_groups):
                for records in parquet.iter_batches(batch_size=batch_size, row_groups=[group]):
                    row += records.num_rows
                    yield records, []
        except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as error:
            raise InputError(
                f"shard {self.name}: corrupt Parquet data after row {row} (row group {group}): {error}"
            ) from None


@dataclass
class JsonlShard(Shard):
    """JSON Lines; a line that is not UTF-8, not JSON, or not an object becomes an unreadable row."""

    file: str = ""

    @property
    def path(self) -> str:
        """The JSON Lines file."""
        return self.file

    def _lines(self) -> Iterator[bytes]:
        opener = gzip.open if self.file.endswith(".gz") else open
        with opener(self.file, "rb") as handle:
            yield from handle

    def schema_names(self) -> list[str]:
        names: dict[str, None] = {}
        for seen, line in enumerate(self._lines()):
            try:
                value = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError):
                continue
            if isinstance(value, dict):
                names.update(dict.fromkeys(value))
            if seen >= 100:
                break
        return list(names)

    def batches(self, columns: Columns, batch_size: int) -> Iterator[Batch]:
        """Parsed lines as batches; a line that is not a JSON object becomes an unreadable row."""
        rows: list[int] = []
        values: list[dict[str, Any]] = []
        unreadable: list[UnreadableRow] = []
        for row, line in enumerate(self._lines()):
            if not line.strip():
                continue
            parsed, reason = _parse_json_line(line, columns)
            if reason:
                unreadable.append(UnreadableRow(self.name, row, reason, bytes(line)))
            else:
                assert parsed is not None, "a line without a reason parsed"
                rows.append(row)
                values.append(parsed)
            if len(values) + len(unreadable) >= batch_size:
                yield self._batch(values, rows, unreadable, columns)
                rows, values, unreadable = [], [], []
        if values or unreadable:
            yield self._batch(values, rows, unreadable, columns)

    def _batch(
        self, values: list[dict], rows: list[int], unreadable: list[UnreadableRow], columns: Columns
    ) -> Batch:
        records = records_from_pylist(values, where=f"shard {self.name}", string_columns=_string_names(columns))
        return Batch(
            records=records,
            shard=self.name,
            rows=pa.array(rows, type=pa.int64()),
            columns=columns,
            unreadable=unreadable,
        )


def _string_names(columns: Columns) -> list[str]:
    return [getattr(columns, role) for role in STRING_ROLES]


def _parse_json_line(line: bytes, columns: Columns) -> tuple[dict | None, str | None]:
    try:
        decoded = line.decode("utf-8")
    except UnicodeDecodeError as error:
        return None, f"unreadable:non-utf8,byte={error.start}"
    try:
        value = json.loads(decoded)
    except json.JSONDecodeError as error:
        return None, f"unreadable:invalid-json,col={error.colno}"
    if not isinstance(value, dict):
        return None, f"unreadable:not-an-object,type={type(value).__name__}"
    for name in _string_names(columns):
        if name in value and value[name] is not None and not isinstance(value[name], str):
            return None, f"unreadable:column={name},type={type(value[name]).__name__}"
    return value, None


def records_from_pylist(values: list[dict], where: str, string_columns: Iterable[str] = ()) -> pa.RecordBatch:
    """Arrow records from dicts; a column whose values mix types is kept as JSON text."""
    names: dict[str, None] = {}
    for value in values:
        names.update(dict.fromkeys(value))
    arrays, fields = [], []
    string_columns = set(string_columns)
    for name in names:
        column = [value.get(name) for value in values]
        try:
            array = pa.array(column, type=pa.string() if name in string_columns else None)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
            array = pa.array([None if v is None else json.dumps(v, ensure_ascii=False) for v in column])
        arrays.append(array)
        fields.append(pa.field(name, array.type))
    if not fields:
        return pa.RecordBatch.from_pylist([{}] * len(values)) if values else pa.record_batch([], schema=pa.schema([]))
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


@dataclass
class TableShard(Shard):
    """An in-memory Arrow table (also pandas DataFrames and dicts of lists)."""

    table: pa.Table = None  # always given (a default only because the base's fields have them)

    def schema_names(self) -> list[str]:
        return self.table.schema.names

    def schema(self) -> pa.Schema:
        return self.table.schema

    def num_rows(self) -> int:
        """Rows in the table."""
        return self.table.num_rows

    def _chunks(self, batch_size: int) -> Iterator[tuple[pa.RecordBatch, list[UnreadableRow]]]:
        for records in self.table.to_batches(max_chunksize=batch_size):
            yield records, []


@dataclass
class HuggingFaceShard(Shard):
    """A ``datasets.Dataset`` or ``datasets.IterableDataset``."""

    dataset: Any = None

    def _is_iterable(self) -> bool:
        return type(self.dataset).__name__ == "IterableDataset"

    def schema_names(self) -> list[str]:
        names = self.dataset.column_names
        if names is None:  # an IterableDataset with unresolved features
            first: Mapping[str, Any] = next(iter(self.dataset), {})
            names = list(first)
        return list(names)

    def num_rows(self) -> int | None:
        """Rows in the dataset, or None for an ``IterableDataset``."""
        return None if self._is_iterable() else len(self.dataset)

    def _chunks(self, batch_size: int) -> Iterator[tuple[pa.RecordBatch, list[UnreadableRow]]]:
        if self._is_iterable():
            for chunk in self.dataset.iter(batch_size=batch_size):
                yield pa.RecordBatch.from_pydict(chunk), []
            return
        for table in self.dataset.with_format("arrow").iter(batch_size=batch_size):
            for records in table.to_batches():
                yield records, []


@dataclass
class IterableShard(Shard):
    """An iterable of dicts. A list is re-readable; a generator can be read once."""

    items: Iterable[Mapping[str, Any]] = ()
    _peeked: list = field(default_factory=list, init=False, repr=False)

    @property
    def reiterable(self) -> bool:
        """True for a list or tuple; a generator can be read once only."""
        return isinstance(self.items, (list, tuple))

    def schema_names(self) -> list[str]:
        if isinstance(self.items, (list, tuple)):  # reiterable
            return list(self.items[0]) if self.items else []
        if not self._peeked:
            self.items = iter(self.items)
            self._peeked = [next(self.items, None)]
        first = self._peeked[0]
        return list(first) if first else []

    def batches(self, columns: Columns, batch_size: int) -> Iterator[Batch]:
        """The records as batches; an item that is not a mapping becomes an unreadable row."""
        items = iter(self.items) if self.reiterable else _chain(self._peeked, self.items)
        self._peeked = []
        chunk: list[dict] = []
        row = 0
        for item in items:
            if item is None:
                continue
            if not isinstance(item, Mapping):
                raise InputError(f"shard {self.name}: row {row + len(chunk)} is a {type(item).__name__}, not a dict")
            chunk.append(dict(item))
            if len(chunk) == batch_size:
                yield self._batch(chunk, row, columns)
                row += len(chunk)
                chunk = []
        if chunk:
            yield self._batch(chunk, row, columns)

    def _batch(self, chunk: list[dict], row: int, columns: Columns) -> Batch:
        records = records_from_pylist(chunk, where=f"shard {self.name}", string_columns=_string_names(columns))
        rows = pa.array(range(row, row + len(chunk)), type=pa.int64())
        return Batch(records=records, shard=self.name, rows=rows, columns=columns)


def _chain(first: list, rest: Iterable) -> Iterator:
    yield from first
    yield from rest


def open_inputs(inputs: Any) -> list[Shard]:
    """Shards for ``inputs``: a path, glob, directory, in-memory dataset, or a list of those.

    A list of dicts is one in-memory shard, not a list of inputs.
    """
    if isinstance(inputs, (str, os.PathLike)):
        return _file_shards([inputs])
    if _is_records_list(inputs):
        return [IterableShard(name="records", items=inputs)]
    if isinstance(inputs, (list, tuple)):
        if all(isinstance(item, (str, os.PathLike)) for item in inputs):
            return _file_shards(list(inputs))
        shards = []
        for index, item in enumerate(inputs):
            shards.extend(_object_shards(item, default_name=f"input-{index}"))
        return _unique_names(shards)
    return _object_shards(inputs, default_name="records")


def _is_records_list(inputs: Any) -> bool:
    return isinstance(inputs, (list, tuple)) and bool(inputs) and all(isinstance(i, Mapping) for i in inputs)


def _object_shards(obj: Any, default_name: str) -> list[Shard]:
    if isinstance(obj, (str, os.PathLike)):
        return _file_shards([obj])
    if isinstance(obj, pa.RecordBatch):
        obj = pa.Table.from_batches([obj])
    if isinstance(obj, pa.Table):
        return [TableShard(name=default_name, table=obj)]
    module = type(obj).__module__
    if module.startswith("pandas"):
        return [TableShard(name=default_name, table=pa.Table.from_pandas(obj, preserve_index=False))]
    if module.startswith("datasets"):
        if type(obj).__name__ in ("DatasetDict", "IterableDatasetDict"):
            return [HuggingFaceShard(name=split, dataset=ds) for split, ds in obj.items()]
        name = getattr(getattr(obj, "info", None), "dataset_name", None) or "dataset"
        return [HuggingFaceShard(name=name, dataset=obj)]
    if isinstance(obj, Mapping):
        return [TableShard(name=default_name, table=pa.table(dict(obj)))]
    if isinstance(obj, Iterable):
        return [IterableShard(name=default_name, items=obj)]
    raise InputError(f"cannot read input of type {type(obj).__name__}")


def _unique_names(shards: list[Shard]) -> list[Shard]:
    seen: dict[str, int] = {}
    for shard in shards:
        count = seen.get(shard.name, 0)
        seen[shard.name] = count + 1
        if count:
            shard.name = f"{shard.name}-{count}"
    return shards


def _file_shards(specs: list[str | os.PathLike]) -> list[Shard]:
    files: list[str] = []
    for spec in specs:
        spec = os.fspath(spec)
        if os.path.isdir(spec):
            found = sorted(
                str(p) for p in Path(spec).rglob("*")
                if p.is_file() and _is_data_file(p.name)
                and not any(part.startswith(".") for part in p.relative_to(spec).parts)
            )
            if not found:
                raise InputError(f"directory {spec!r} holds no Parquet or JSONL files")
            files.extend(found)
        elif os.path.isfile(spec):
            files.append(spec)
        elif glob.has_magic(spec):
            matched = sorted(p for p in glob.glob(spec, recursive=True) if os.path.isfile(p))
            if not matched:
                raise InputError(f"no file matches {spec!r}")
            files.extend(matched)
        else:
            raise InputError(f"input {spec!r} does not exist")
    files = list(dict.fromkeys(os.path.normpath(f) for f in files))
    names = _shard_names(files)
    shards: list[Shard] = []
    for file, name in zip(files, names):
        lower = file.lower()
        if lower.endswith(PARQUET_SUFFIXES):
            shards.append(ParquetShard(name=name, file=file))
        elif lower.endswith(JSONL_SUFFIXES):
            shards.append(JsonlShard(name=name, file=file))
        else:
            raise InputError(f"shard {file}: unknown format; expected {', '.join(PARQUET_SUFFIXES + JSONL_SUFFIXES)}")
    return shards


def _is_data_file(name: str) -> bool:
    return name.lower().endswith(PARQUET_SUFFIXES + JSONL_SUFFIXES) and not name.startswith(".")


def _shard_names(files: list[str]) -> list[str]:
    """Names relative to the inputs' common folder: unique, short and stable across machines."""
    if len(files) == 1:
        return [os.path.basename(files[0])]
    root = os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files])
    return [os.path.relpath(os.path.abspath(f), root).replace(os.sep, "/") for f in files]


def usable_shards(shards: list[Shard]) -> tuple[list[Shard], list[str], list[dict[str, Any]]]:
    """Set aside 0-byte files (no records, so nothing to lose) with a warning and their manifest entry."""
    usable, warnings, empty = [], [], []
    for shard in shards:
        if shard.path is not None and os.path.getsize(shard.path) == 0:
            warnings.append(f"shard {shard.name} is empty (0 bytes): no records")
            empty.append({"path": shard.path, "name": shard.name, "bytes": 0,
                          "sha256": hashlib.sha256(b"").hexdigest(), "records": 0})
            continue
        usable.append(shard)
    if not usable and not empty:
        raise InputError("no input shards given")
    return usable, warnings, empty


def schema_warnings(shards: list[Shard]) -> list[str]:
    """Shards with different columns are scanned each with its own schema; say so."""
    first_names: list[str] | None = None
    first_shard = ""
    warnings = []
    for shard in shards:
        names = shard.schema_names()
        if first_names is None:
            first_names, first_shard = names, shard.name
            continue
        missing = [n for n in first_names if n not in names]
        extra = [n for n in names if n not in first_names]
        if missing or extra:
            detail = "; ".join(
                part for part in (
                    f"lacks {', '.join(missing)}" if missing else "",
                    f"adds {', '.join(extra)}" if extra else "",
                ) if part
            )
            warnings.append(
                f"mixed schemas: shard {shard.name} {detail} (compared with {first_shard}); "
                "each shard's outputs keep its own columns"
            )
    return warnings


def refuse_inputs_inside(shards: list[Shard], out: Path) -> None:
    """Scanning a folder that holds --out would read an earlier scan's outputs as input."""
    root = out.resolve()
    for shard in shards:
        if shard.path is not None and Path(shard.path).resolve().is_relative_to(root):
            raise InputError(f"input {shard.path} lies inside --out {out}; choose an --out outside the inputs")


def spill_one_shot(shards: list[Shard], columns: Columns, batch_size: int, directory: Path) -> list[Shard]:
    """Write every shard that can be read only once (a generator) to a Parquet file, so it can be re-read."""
    from dokumi.outputs import PartWriter, output_stem

    spilled: list[Shard] = []
    for index, shard in enumerate(shards):
        if shard.reiterable:
            spilled.append(shard)
            continue
        writer = PartWriter(directory, output_stem(index, shard.name))
        for batch in shard.batches(columns, batch_size):
            writer.write(batch.records)
        files = writer.close()
        if len(files) != 1:
            raise InputError(f"shard {shard.name}: records change their columns' types; cannot spill to one file")
        spilled.append(ParquetShard(name=shard.name, file=str(files[0][0])))
    return spilled
