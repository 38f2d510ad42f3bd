"""Read input shards as bounded-size batches.

Inputs are Parquet, JSONL or CSV/TSV files (given as files, directories or globs),
Hugging Face ``datasets`` objects, Arrow tables, pandas DataFrames, or
iterables of dicts. Each becomes a :class:`Shard` that yields
:class:`~dokumi.records.Batch` objects of at most ``batch_size`` rows.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dokumi import remote
from dokumi.errors import InputError
from dokumi.inputfiles import CSV_SUFFIXES, JSONL_SUFFIXES, PARQUET_SUFFIXES, find_files
from dokumi.jsonlines import (
    BOM,
    StreamError,
    field_label,
    lone_surrogate_at,
    open_chunks,
    parse_record,
    refuse_utf16,
    split_lines,
)
from dokumi.records import Batch, Columns, UnreadableRow

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
        size = remote.size(self.file)
        if size == 0:
            raise InputError(f"shard {self.name}: empty file (0 bytes), not a Parquet file")
        try:
            return pq.ParquetFile(remote.open_random_access(self.file))
        except (pa.ArrowInvalid, OSError) as error:
            raise InputError(f"shard {self.name}: corrupt or not a Parquet file ({error})") from None

    def schema_names(self) -> list[str]:
        return unique_columns(self._open().schema_arrow.names, self.name)

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
    """JSON Lines (:mod:`dokumi.jsonlines`). A line that cannot be a record becomes an unreadable row,
    quarantined with a reason naming what was wrong and where; a compressed stream that breaks is read
    up to the break, and the error is noted on the shard's last batch."""

    file: str = ""

    @property
    def path(self) -> str:
        """The JSON Lines file."""
        return self.file

    def _lines(self, errors: list[str]) -> Iterator[tuple[bytes, bool]]:
        """``(line, cut)`` for each line, a byte order mark dropped. A break in the stream ends the lines and
        goes to ``errors``; ``cut`` marks the last line when the break came before its end."""
        previous: bytes | None = None
        try:
            for line in split_lines(open_chunks(self.file)):
                if previous is None:
                    refuse_utf16(line, f"shard {self.name}")
                    line = line.removeprefix(BOM)
                else:
                    yield previous, False
                previous = line
        except StreamError as error:
            errors.append(str(error))
        if previous is not None:
            yield previous, bool(errors) and not previous.endswith((b"\n", b"\r"))

    def schema_names(self) -> list[str]:
        names: dict[str, None] = {}
        for seen, (line, _) in enumerate(self._lines([])):
            value, _ = parse_record(line)
            if value is not None:
                names.update(dict.fromkeys(value))
            if seen >= 100:
                break
        return list(names)

    def batches(self, columns: Columns, batch_size: int) -> Iterator[Batch]:
        """Parsed lines as batches; a line that is not a JSON object becomes an unreadable row."""
        readable: list[tuple[int, dict[str, Any], bytes]] = []
        unreadable: list[UnreadableRow] = []
        errors: list[str] = []
        strings = _string_names(columns)
        row = -1
        for row, (line, cut) in enumerate(self._lines(errors)):
            if not line.strip():
                continue
            parsed, reason = parse_record(line, strings)
            if reason:
                # a line the break cut short is kept raw in the quarantine, never guessed at
                unreadable.append(UnreadableRow(self.name, row, "unreadable:truncated" if cut else reason,
                                                bytes(line)))
            else:
                assert parsed is not None, "a line without a reason parsed"
                readable.append((row, parsed, bytes(line)))
            if len(readable) + len(unreadable) >= batch_size:
                yield self._batch(readable, unreadable, columns)
                readable, unreadable = [], []
        notes = [f"shard {self.name}: reading stopped after line {row + 1:,} ({errors[0]}); "
                 f"the lines before were scanned"] if errors else []
        if readable or unreadable or notes:
            yield self._batch(readable, unreadable, columns, notes)

    def _batch(
        self, readable: list[tuple[int, dict[str, Any], bytes]], unreadable: list[UnreadableRow], columns: Columns,
        notes: list[str] | None = None,
    ) -> Batch:
        strings = _string_names(columns)
        try:
            records = records_from_pylist([value for _, value, _ in readable], where=f"shard {self.name}",
                                          string_columns=strings)
        except (pa.ArrowException, ValueError, TypeError, RecursionError):
            # a value no check foresaw: find the records Arrow cannot take, quarantine them, keep the rest
            readable, unreadable = _set_aside_unconvertible(self.name, readable, unreadable, strings)
            records = records_from_pylist([value for _, value, _ in readable], where=f"shard {self.name}",
                                          string_columns=strings)
        return Batch(
            records=records,
            shard=self.name,
            rows=pa.array([row for row, _, _ in readable], type=pa.int64()),
            columns=columns,
            unreadable=sorted(unreadable, key=lambda item: item.row),
            notes=notes or [],
            raw=[line for _, _, line in readable],
        )


def _set_aside_unconvertible(
    shard: str, readable: list[tuple[int, dict[str, Any], bytes]], unreadable: list[UnreadableRow],
    strings: list[str],
) -> tuple[list[tuple[int, dict[str, Any], bytes]], list[UnreadableRow]]:
    kept, unreadable = [], list(unreadable)
    for row, value, line in readable:
        try:
            records_from_pylist([value], where=f"shard {shard}", string_columns=strings)
        except (pa.ArrowException, ValueError, TypeError, RecursionError) as error:
            unreadable.append(UnreadableRow(shard, row, f"unreadable:unconvertible,error={type(error).__name__}",
                                            line))
            continue
        kept.append((row, value, line))
    return kept, unreadable


def unique_columns(names: list[str], shard: str) -> list[str]:
    """``names``, refused when one repeats: a column named twice cannot be told apart, in any output."""
    repeated = [(name, count) for name, count in Counter(names).items() if count > 1]
    if repeated:
        raise InputError(f"shard {shard}: column {repeated[0][0]!r} appears {repeated[0][1]} times")
    return names


def _string_names(columns: Columns) -> list[str]:
    return [getattr(columns, role) for role in STRING_ROLES]


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
class CsvShard(Shard):
    """CSV or TSV with a header row (``.csv``, ``.tsv``, either ``.gz``), every column read as text: CSV has
    no types, and guessing them would turn ``007`` into ``7``. Quoted fields may span lines. A row with the
    wrong number of fields, or a field that is not UTF-8, becomes an unreadable row; ``row`` counts records
    in the order they were read (readable ones of a block first), and the reason names the fault."""

    file: str = ""

    @property
    def path(self) -> str:
        return self.file

    @property
    def delimiter(self) -> str:
        """Tab for ``.tsv`` files, comma otherwise."""
        return "\t" if self.file.lower().removesuffix(".gz").endswith(".tsv") else ","

    def _reader(self, names: list[str] | None, invalid: list[Any] | None = None) -> Any:
        from pyarrow import csv

        def invalid_row(row: Any) -> str:
            assert invalid is not None  # the handler is given only with a list
            invalid.append(row)
            return "skip"

        parse = csv.ParseOptions(delimiter=self.delimiter, newlines_in_values=True,
                                 invalid_row_handler=invalid_row if invalid is not None else None)
        convert = csv.ConvertOptions(column_types=dict.fromkeys(names, pa.binary()) if names else None,
                                     strings_can_be_null=False, quoted_strings_can_be_null=False)
        try:
            return csv.open_csv(remote.input_stream(self.file), parse_options=parse,
                                convert_options=convert)
        except (pa.ArrowInvalid, OSError) as error:
            raise InputError(f"shard {self.name}: not a readable CSV file ({error})") from None

    def schema_names(self) -> list[str]:
        return unique_columns(self._reader(None, []).schema.names, self.name)

    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(name, pa.string()) for name in self.schema_names()])

    def batches(self, columns: Columns, batch_size: int) -> Iterator[Batch]:
        invalid: list[Any] = []
        reader = self._reader(self.schema_names(), invalid)
        row = 0
        while True:
            try:
                block = reader.read_next_batch()
            except StopIteration:
                block = None
            except pa.ArrowInvalid as error:
                raise InputError(f"shard {self.name}: unreadable CSV after record {row} ({error})") from None
            if block is not None:
                for part in pa.Table.from_batches([block]).to_batches(max_chunksize=batch_size):
                    records, unreadable = _text_columns(part, self.name, row)
                    set_aside = {item.row for item in unreadable}
                    rows = [r for r in range(row, row + part.num_rows) if r not in set_aside]
                    row += part.num_rows
                    yield Batch(records=records, shard=self.name, rows=pa.array(rows, pa.int64()),
                                columns=columns, unreadable=unreadable)
            if invalid:
                bad = [UnreadableRow(self.name, row + k,
                                     f"unreadable:csv-fields,expected={item.expected_columns},got={item.actual_columns}",
                                     item.text.encode("utf-8", "surrogateescape"), unit="record")
                       for k, item in enumerate(invalid)]
                row += len(bad)
                invalid.clear()
                yield Batch(records=pa.record_batch([], schema=pa.schema([])), shard=self.name,
                            rows=pa.array([], pa.int64()), columns=columns, unreadable=bad)
            if block is None:
                return


def _text_columns(part: pa.RecordBatch, shard: str, first_row: int) -> tuple[pa.RecordBatch, list[UnreadableRow]]:
    """The block's binary columns as strings; rows holding bytes that are not UTF-8 set aside as unreadable."""
    bad: dict[int, str] = {}
    for name, column in zip(part.schema.names, part.columns):
        try:
            column.cast(pa.string())
        except pa.ArrowInvalid:
            for index, value in enumerate(column.to_pylist()):
                try:
                    value.decode("utf-8")
                except UnicodeDecodeError as error:
                    bad.setdefault(index, f"unreadable:non-utf8,field={field_label(name)},byte={error.start}")
    keep = pa.array([index not in bad for index in range(part.num_rows)])
    kept = part.filter(keep) if bad else part
    records = pa.RecordBatch.from_arrays([column.cast(pa.string()) for column in kept.columns],
                                         names=kept.schema.names)
    unreadable = [UnreadableRow(shard, first_row + index, reason,
                                b",".join(part.column(c)[index].as_py() for c in range(part.num_columns)),
                                unit="record")
                  for index, reason in sorted(bad.items())]
    return records, unreadable


@dataclass
class TableShard(Shard):
    """An in-memory Arrow table (also pandas DataFrames and dicts of lists)."""

    table: pa.Table = None  # always given (a default only because the base's fields have them)

    def schema_names(self) -> list[str]:
        return unique_columns(self.table.schema.names, self.name)

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
        strings = _string_names(columns)
        try:
            records = records_from_pylist(chunk, where=f"shard {self.name}", string_columns=strings)
        except (pa.ArrowException, ValueError, TypeError, RecursionError) as error:
            # the caller's own objects: name the first that Arrow cannot hold, rather than guess
            for offset, item in enumerate(chunk):
                try:
                    records_from_pylist([item], where=f"shard {self.name}", string_columns=strings)
                except (pa.ArrowException, ValueError, TypeError, RecursionError) as item_error:
                    path = lone_surrogate_at(item)
                    detail = (f"field {path} holds a lone surrogate, which UTF-8 cannot encode" if path
                              else f"{type(item_error).__name__}: {item_error}")
                    raise InputError(f"shard {self.name}: row {row + offset}: {detail}") from None
            raise InputError(f"shard {self.name}: rows {row}-{row + len(chunk) - 1}: {error}") from None
        rows = pa.array(range(row, row + len(chunk)), type=pa.int64())
        return Batch(records=records, shard=self.name, rows=rows, columns=columns)


def _chain(first: list, rest: Iterable) -> Iterator:
    yield from first
    yield from rest


def open_inputs(inputs: Any, notices: list[str] | None = None) -> list[Shard]:
    """Shards for ``inputs``: a path, glob, directory, in-memory dataset, or a list of those.

    A list of dicts is one in-memory shard, not a list of inputs. What a folder or glob held
    that is not read (other files, hidden entries, links to nothing, a file reached twice) is
    named in one-line ``notices`` (:mod:`dokumi.inputfiles`).
    """
    if isinstance(inputs, (str, os.PathLike)):
        return _file_shards([inputs], notices)
    if _is_records_list(inputs):
        return [IterableShard(name="records", items=inputs)]
    if isinstance(inputs, (list, tuple)):
        if all(isinstance(item, (str, os.PathLike)) for item in inputs):
            return _file_shards(list(inputs), notices)
        shards = []
        for index, item in enumerate(inputs):
            shards.extend(_object_shards(item, default_name=f"input-{index}", notices=notices))
        return _unique_names(shards)
    return _object_shards(inputs, default_name="records", notices=notices)


def _is_records_list(inputs: Any) -> bool:
    return isinstance(inputs, (list, tuple)) and bool(inputs) and all(isinstance(i, Mapping) for i in inputs)


def _object_shards(obj: Any, default_name: str, notices: list[str] | None = None) -> list[Shard]:
    if isinstance(obj, (str, os.PathLike)):
        return _file_shards([obj], notices)
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


def _file_shards(specs: list[str | os.PathLike], notices: list[str] | None = None) -> list[Shard]:
    specs = [remote.localize(spec) for spec in specs]
    if any(remote.is_url(spec) for spec in specs):  # object storage: listed through fsspec (dokumi.remote)
        files: list[str] = []
        found_notices: list[str] = []
        for spec in specs:
            found = remote.find_files([str(spec)]) if remote.is_url(spec) else find_files([spec])
            files, found_notices = files + found[0], found_notices + found[1]
        files = list(dict.fromkeys(files))
    else:
        files, found_notices = find_files(specs)
    if notices is not None:
        notices.extend(found_notices)
    names = _shard_names(files)
    shards: list[Shard] = []
    for file, name in zip(files, names):
        lower = file.lower()
        if lower.endswith(PARQUET_SUFFIXES):
            shards.append(ParquetShard(name=name, file=file))
        elif lower.endswith(JSONL_SUFFIXES):
            shards.append(JsonlShard(name=name, file=file))
        elif lower.endswith(CSV_SUFFIXES):
            shards.append(CsvShard(name=name, file=file))
        else:
            known = ", ".join(PARQUET_SUFFIXES + JSONL_SUFFIXES + CSV_SUFFIXES)
            raise InputError(f"shard {file}: unknown format; expected {known}")
    return shards


def _shard_names(files: list[str]) -> list[str]:
    """Names relative to the inputs' common folder: unique, short and stable across machines."""
    if any(remote.is_url(f) for f in files):
        return remote.shard_names(files)
    if len(files) == 1:
        return [os.path.basename(files[0])]
    root = os.path.commonpath([os.path.dirname(os.path.abspath(f)) for f in files])
    return [os.path.relpath(os.path.abspath(f), root).replace(os.sep, "/") for f in files]


def usable_shards(shards: list[Shard]) -> tuple[list[Shard], list[str], list[dict[str, Any]]]:
    """Set aside 0-byte files (no records, so nothing to lose) with a warning and their manifest entry."""
    usable, warnings, empty = [], [], []
    for shard in shards:
        if shard.path is not None and remote.size(shard.path) == 0:
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


def refuse_inputs_inside(shards: list[Shard], out: Path | str) -> None:
    """Scanning a folder that holds --out would read an earlier scan's outputs as input."""
    if remote.is_url(out):
        prefix = str(out).rstrip("/") + "/"
        for shard in shards:
            if shard.path is not None and shard.path.startswith(prefix):
                raise InputError(f"input {shard.path} lies inside --out {out}; choose an --out outside the inputs")
        return
    root = Path(out).resolve()
    for shard in shards:
        if shard.path is not None and remote.is_url(shard.path):
            continue
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
