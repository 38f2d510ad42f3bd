"""Where each decision goes, and in which format.

``keep`` goes to ``clean/``, ``flag`` to ``flagged/`` (or to ``clean/`` where
the recipe says ``[routing] flag = "clean"``), ``duplicate`` to
``duplicates/`` and ``drop`` to ``quarantine/``. Records are written in their
input's format unless the scan asks for another: Parquet, or JSON Lines
(``.jsonl.gz`` when the input shard was compressed). A JSONL record read from
JSONL is written back as the line it was, so every field survives as it came.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from dokumi.inputfiles import JSONL_SUFFIXES
from dokumi.jsonlines import JsonlWriter, record_line, spliced_line
from dokumi.outputs import PartWriter, added_column_names, added_field
from dokumi.records import Batch, filter_records

OUTPUT_FORMATS = ("parquet", "jsonl")
# the folders records go to, in the order the summary names them
RECORD_FOLDERS = ("clean", "flagged", "duplicates", "quarantine")


def routes(flag_folder: str = "flagged") -> dict[str, str]:
    """The folder of each decision."""
    return {"keep": "clean", "duplicate": "duplicates", "flag": flag_folder, "drop": "quarantine"}


@dataclass(frozen=True)
class OutputFormat:
    """How a shard's routed records are written: ``parquet`` or ``jsonl`` (gzip-compressed or not)."""

    name: str = "parquet"
    compressed: bool = False

    @property
    def suffix(self) -> str:
        """The file name ending of this format's outputs."""
        return ".parquet" if self.name == "parquet" else ".jsonl.gz" if self.compressed else ".jsonl"


def output_format(path: str | None, requested: str | None = None) -> OutputFormat:
    """The format for the outputs of the shard read from ``path`` (None: an in-memory input): ``requested``
    where given, else the input's own; JSONL is compressed when the input file was."""
    if requested is not None and requested not in OUTPUT_FORMATS:
        from dokumi.errors import InputError

        raise InputError(f"output format {requested!r} is not one of: {', '.join(OUTPUT_FORMATS)}")
    lower = (path or "").lower()
    is_jsonl = lower.endswith(JSONL_SUFFIXES)
    name = requested or ("jsonl" if is_jsonl else "parquet")
    return OutputFormat(name, compressed=name == "jsonl" and lower.endswith(".gz"))


def added_columns(batch: Batch, added: dict[str, pa.Array]) -> list[tuple[str, str, pa.Array]]:
    """``(name, role, values)`` of the columns dokumi adds to the batch's records: ``added`` (by role), and
    the derived id first where the input has no id column; each under a name no input column uses."""
    columns = dict(added)
    wanted = list(added)
    if not batch.has("id"):
        columns = {"id": pa.array(batch.ids, pa.string()), **columns}
        wanted = [batch.columns.id, *wanted]
    names = added_column_names(batch.records.schema.names, wanted)
    return [(name, role, values) for name, (role, values) in zip(names, columns.items())]


class RecordWriter:
    """The records of one shard routed to one folder, in ``fmt``; ``close()`` lists ``(path, records)``."""

    def __init__(self, directory: Path, stem: str, fmt: OutputFormat) -> None:
        self.fmt = fmt
        if fmt.name == "parquet":
            self._parquet: PartWriter | None = PartWriter(directory, stem)
            self._jsonl: JsonlWriter | None = None
        else:
            self._parquet = None
            self._jsonl = JsonlWriter(directory / f"{stem}{fmt.suffix}", compressed=fmt.compressed)

    def write(self, batch: Batch, mask: pa.Array, added: dict[str, pa.Array] | None = None) -> None:
        """Write the records of ``batch`` where ``mask`` is true, with ``added`` columns (role: values)."""
        if not pc.any(mask).as_py():
            return
        extra = added_columns(batch, added) if added is not None else []
        if self._parquet is not None:
            records = batch.records
            for name, role, values in extra:
                records = records.append_column(added_field(name, role, values.type), values)
            self._parquet.write(filter_records(records, mask))
            return
        chosen = pc.indices_nonzero(pc.fill_null(mask, False)).to_pylist()
        extras = [(name, values.take(pa.array(chosen)).to_pylist()) for name, _, values in extra]
        if batch.raw is not None:
            lines = [spliced_line(batch.raw[i], [(name, values[k]) for name, values in extras])
                     for k, i in enumerate(chosen)]
        else:
            rows = filter_records(batch.records, mask).to_pylist()
            lines = [record_line({**row, **{name: values[k] for name, values in extras}})
                     for k, row in enumerate(rows)]
        assert self._jsonl is not None  # no Parquet writer: a JSONL one
        self._jsonl.write(lines)

    def close(self) -> list[tuple[Path, int]]:
        """Finish the output; the files written and their record counts."""
        if self._parquet is not None:
            return self._parquet.close()
        assert self._jsonl is not None
        return self._jsonl.close()


__all__ = ["OUTPUT_FORMATS", "RECORD_FOLDERS", "OutputFormat", "RecordWriter", "added_columns", "output_format",
           "routes"]
