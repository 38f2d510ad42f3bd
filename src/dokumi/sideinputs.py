"""Side inputs: data a stage needs beside the corpus, loaded and checked before any corpus data is read.

A stage declares which of its parameters name side inputs, and of which kind
(``Stage.side_inputs``): ``"corpus"`` (records, e.g. ``protect``, ``reference``),
``"state"`` (an earlier scan's saved state of that stage, e.g. ``index``) or
``"hashes"`` (an earlier scan's record hashes, ``expect``). :func:`prepare`
loads each one that is set, fails with a one-line error when it is missing,
unreadable or lacks the columns the stage needs, and hands the loaded inputs
to the stage's ``setup``. Stages never open files themselves.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dokumi.errors import InputError
from dokumi.records import Batch, Columns
from dokumi.sources import Shard, open_inputs
from dokumi.stage import SIDE_INPUT_KINDS, Stage, StageContext


def flag_of(stage: Stage, parameter: str) -> str:
    """How a person set the input: the CLI shortcut and the recipe key."""
    return f"--{parameter} ({stage.name}.{parameter})"


@dataclass
class SideCorpus:
    """Records given beside the corpus (protected documents, a trusted reference): re-readable batches.

    Reading it raises a one-line error on an unreadable record (a protected document that
    cannot be read cannot be protected) and when it holds no record at all.
    """

    path: str
    label: str
    shards: list[Shard]
    columns: Columns
    batch_size: int

    def __iter__(self) -> Iterator[Batch]:
        records = 0
        for shard in self.shards:
            for batch in shard.batches(self.columns, self.batch_size):
                if batch.unreadable:
                    row = batch.unreadable[0]
                    raise InputError(f"{self.label} {shard.path or shard.name}: row {row.row} is unreadable "
                                     f"({row.reason})")
                records += batch.num_rows
                yield batch
        if not records:
            raise InputError(f"{self.label} {self.path}: holds no records")


@dataclass
class SavedState:
    """An earlier scan's saved state of one stage (``<scan>/state/<stage>/``), read through checked helpers."""

    path: str
    label: str
    folder: Path

    def read_json(self, name: str) -> dict[str, Any]:
        """The JSON object in file ``name`` of the saved state; ``InputError`` naming it otherwise."""
        try:
            value = json.loads((self.folder / name).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise InputError(f"{self.label} {self.path}: cannot read {name} ({error})") from None
        if not isinstance(value, dict):
            raise InputError(f"{self.label} {self.path}: {name} is not a JSON object")
        return value

    def read_array(self, name: str) -> np.ndarray:
        """The NumPy array in file ``name`` (no pickles); ``InputError`` naming it otherwise."""
        try:
            return np.load(self.folder / name, allow_pickle=False)
        except (OSError, ValueError) as error:
            raise InputError(f"{self.label} {self.path}: cannot read {name} ({error})") from None

    def read_table(self, name: str) -> pa.Table:
        """The Parquet table in file ``name``; ``InputError`` naming it otherwise."""
        try:
            return pq.read_table(self.folder / name)
        except (OSError, pa.ArrowInvalid) as error:
            raise InputError(f"{self.label} {self.path}: cannot read {name} ({error})") from None

    def exists(self, name: str) -> bool:
        """Whether the saved state holds a file ``name``."""
        return (self.folder / name).is_file()


def load_corpus(path: str, label: str, columns: Columns, batch_size: int) -> SideCorpus:
    """Checked shards of a side corpus: they exist, are readable, and carry the content columns."""
    try:
        shards = open_inputs(str(path))
    except InputError as error:
        raise InputError(f"{label}: {error}") from None
    for shard in shards:
        try:
            names = shard.schema_names()
        except InputError as error:
            raise InputError(f"{label}: {error}") from None
        if not columns.content_roles(names):
            raise InputError(
                f"{label} {shard.path or shard.name}: no column {columns.text!r} (nor {columns.prompt!r} + "
                f"{columns.response!r}); found: {', '.join(names) or 'no columns'}"
            )
    return SideCorpus(str(path), label, shards, columns, batch_size)


def load_state(path: str, label: str, stage_name: str) -> SavedState:
    """An earlier scan's state folder of ``stage_name``: the scan's output folder or the state folder itself."""
    folder = Path(path)
    if not folder.exists():
        raise InputError(f"{label} {path}: does not exist")
    if not (folder / "params.json").is_file() and (folder / "state" / stage_name / "params.json").is_file():
        folder = folder / "state" / stage_name
    if not (folder / "params.json").is_file():
        raise InputError(f"{label} {path}: not a scan folder nor a state/{stage_name}/ folder (no params.json)")
    return SavedState(str(path), label, folder)


def load_hashes(path: str, label: str) -> Any:
    """An earlier scan's record hashes (its manifest, folder or ``hashes/``)."""
    from dokumi.sidecar import ExpectedHashes

    if not Path(path).exists():
        raise InputError(f"{label} {path}: does not exist")
    return ExpectedHashes.load(path)


def load(kind: str, path: Any, label: str, stage_name: str, columns: Columns, batch_size: int) -> Any:
    """Load a side input of ``kind`` (``corpus``, ``state`` or ``hashes``) for stage ``stage_name``."""
    if kind == "corpus":
        return load_corpus(path, label, columns, batch_size)
    if kind == "state":
        return load_state(str(path), label, stage_name)
    if kind == "hashes":
        return load_hashes(str(path), label)
    raise ValueError(f"side input kind {kind!r} is not one of {', '.join(SIDE_INPUT_KINDS)}")


def prepare(stages: Iterable[Stage], columns: Columns, batch_size: int) -> None:
    """Load every stage's side inputs and call its ``setup``, once; before any corpus data is read."""
    for stage in stages:
        if stage.is_set_up:
            continue
        inputs = {}
        for parameter, kind in stage.side_inputs.items():
            path = getattr(stage, parameter, None)
            if path is not None:
                inputs[parameter] = load(kind, path, flag_of(stage, parameter), stage.name, columns, batch_size)
        stage.setup(StageContext(columns=columns, batch_size=batch_size, inputs=inputs))


__all__ = ["SavedState", "SideCorpus", "flag_of", "load", "prepare"]
