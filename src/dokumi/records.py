"""Records as stages see them: column roles and a batch with decoded views.

A :class:`Batch` wraps one pyarrow RecordBatch read from a shard. The input
columns are kept untouched in ``batch.records``; stages read the decoded views
(``texts``, ``labels``, ...) which are computed once per batch and shared by
every stage.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from dokumi.text.tokens import Tokens

INSTRUCTION_SEPARATOR = "\n\n"
_T = TypeVar("_T")


@dataclass(frozen=True)
class Columns:
    """Names of the columns that play each role. Defaults follow DESIGN.md.

    ``text`` is required unless the data is instruction pairs (``prompt`` and
    ``response``); every other role is optional.
    """

    text: str = "text"
    id: str = "id"
    label: str = "label"
    prompt: str = "prompt"
    response: str = "response"
    sha256: str = "sha256"
    source: str = "source"
    url: str = "url"
    embedding: str = "embedding"

    @classmethod
    def from_mapping(cls, mapping: dict[str, str], where: str = "columns") -> Columns:
        """Columns from a dict of role to column name; ``ValueError`` naming ``where`` for an unknown role."""
        known = {f.name for f in fields(cls)}
        for key, value in mapping.items():
            if key not in known:
                raise ValueError(f"{where}: unknown column role {key!r}; known roles: {', '.join(sorted(known))}")
            if not isinstance(value, str) or not value:
                raise ValueError(f"{where}: column name for role {key!r} must be a non-empty string")
        return cls(**mapping)

    def content_roles(self, names: set[str] | list[str]) -> tuple[str, ...]:
        """The roles that carry the record's content in a schema with ``names``."""
        names = set(names)
        if self.text in names:
            return ("text",)
        if self.prompt in names and self.response in names:
            return ("prompt", "response")
        return ()


@dataclass(frozen=True)
class UnreadableRow:
    """A row that could not be parsed; it is quarantined, never dropped silently."""

    shard: str
    row: int
    reason: str
    raw: bytes | None = None
    # what ``row + 1`` counts, for people: JSONL lines, or CSV records (a quoted field may span lines)
    unit: str = "line"

    @property
    def id(self) -> str:
        """The row's id: ``<shard>:<row>``."""
        return f"{self.shard}:{self.row}"


@dataclass
class Batch:
    """One batch of records from one shard.

    ``records`` holds the input columns untouched, plus an ``id`` column when
    the input had none (derived as ``<shard>:<row>``). ``rows`` are the
    0-based row numbers of the records in their shard. ``unreadable`` lists
    rows of the same stretch of the shard that could not be parsed; ``notes``
    say what went wrong with the shard itself there (a compressed stream that
    breaks), for the scan's warnings. ``raw`` holds each record's line where
    the input is JSON Lines.
    """

    records: pa.RecordBatch
    shard: str
    rows: pa.Array
    columns: Columns = field(default_factory=Columns)
    unreadable: list[UnreadableRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # JSONL: each record's line as read, so that JSONL outputs give every field back as it came
    raw: list[bytes] | None = None

    @property
    def num_rows(self) -> int:
        """Records in the batch (unreadable rows not counted)."""
        return self.records.num_rows

    def select(self, rows: np.ndarray) -> Batch:
        """The records at positions ``rows`` (ascending) as a batch of their own; unreadable rows stay out."""
        indices = pa.array(np.asarray(rows, dtype=np.int64))
        raw = [self.raw[i] for i in indices.to_pylist()] if self.raw is not None else None
        return Batch(records=take_records(self.records, indices), shard=self.shard, rows=self.rows.take(indices),
                     columns=self.columns, raw=raw)

    def derived(self, key: Hashable, compute: Callable[[], _T]) -> _T:
        """``compute()``, kept on the batch under ``key`` when the batch keeps what is derived from it.

        A stage reads a batch once per fit round; an engine that keeps the decoded batches of a corpus
        between rounds, and has room for what stages derive from them too, marks them
        (:meth:`keep_derived`), so that what a stage derives from a batch (the n-grams and sentences of
        the trigger statistics) is computed once per scan, not once per round. Elsewhere ``compute()``
        runs every time. ``key`` must name everything ``compute`` depends on besides the batch.
        """
        memo = self.__dict__.get("_derived")
        if memo is None:
            return compute()
        if key not in memo:
            memo[key] = compute()
        return memo[key]

    def keep_derived(self) -> None:
        """Keep what :meth:`derived` computes from now on (the engine has room for it)."""
        self.__dict__.setdefault("_derived", {})

    def forget_derived(self) -> None:
        """Drop what :meth:`derived` kept, and keep nothing more (the engine no longer keeps the batch)."""
        self.__dict__.pop("_derived", None)

    def has(self, role: str) -> bool:
        """Whether the batch carries the column playing ``role``."""
        return getattr(self.columns, role) in self.records.schema.names

    def column(self, role: str) -> pa.Array | None:
        """The column playing ``role``, or None when the batch has none; text kept as ``dictionary<string>``
        or ``string_view`` is read as plain strings, so every stage sees one kind of string array (``records``
        keeps the input's type)."""
        name = getattr(self.columns, role)
        if name not in self.records.schema.names:
            return None
        return plain_strings(self.records.column(name))

    def present(self, role: str) -> pa.Array:
        """The Arrow column playing ``role``, which the batch has (``KeyError`` otherwise)."""
        return self.records.column(getattr(self.columns, role))

    @property
    def is_instruction(self) -> bool:
        """Whether the records are instruction pairs (``prompt`` and ``response``, no ``text``)."""
        return not self.has("text") and self.has("prompt") and self.has("response")

    @cached_property
    def ids(self) -> list[str]:
        """Record ids: the ``id`` column where present and not null, else ``<shard>:<row>``."""
        rows = self.rows.to_pylist()
        column = self.column("id")
        if column is None:
            return [f"{self.shard}:{row}" for row in rows]
        return [
            str(value) if value is not None else f"{self.shard}:{row}"
            for value, row in zip(column.to_pylist(), rows)
        ]

    @cached_property
    def texts(self) -> list[str]:
        """The content of each record as one string ('' for null).

        Instruction pairs are joined as ``prompt + "\\n\\n" + response``.
        """
        if self.is_instruction:
            prompts, responses = self.prompts, self.responses
            assert prompts is not None and responses is not None, "instruction pairs have both"
            return [p + INSTRUCTION_SEPARATOR + r for p, r in zip(prompts, responses)]
        return _strings(self.column("text"), self.num_rows)

    @cached_property
    def prompts(self) -> list[str] | None:
        return _strings(self.column("prompt"), self.num_rows) if self.has("prompt") else None

    @cached_property
    def responses(self) -> list[str] | None:
        return _strings(self.column("response"), self.num_rows) if self.has("response") else None

    @cached_property
    def labels(self) -> list | None:
        return self.present("label").to_pylist() if self.has("label") else None

    @cached_property
    def digests(self) -> np.ndarray:
        """Each record's SHA-256 (:mod:`dokumi.hashing`), an ``(n, 32)`` uint8 array."""
        from dokumi.hashing import record_digests

        return record_digests(self)

    @cached_property
    def content_keys(self) -> np.ndarray:
        """A 64-bit key per record from its SHA-256: what fitted state is looked up by.

        Keyed on content, never on shard and row, so that the same record gets the
        same answer whichever container, batch or position it arrives in.
        """
        return np.ascontiguousarray(self.digests[:, :8]).view("<u8").ravel().copy()

    @cached_property
    def words(self) -> Tokens:
        """The records' words as hashes with offsets (:mod:`dokumi.text.tokens`), computed once per batch
        and shared by every stage (MinHash shingles, trigger statistics, the embedder)."""
        from dokumi.text.tokens import Tokens

        return Tokens.of(self.content_array())

    def content_array(self) -> pa.Array | list[str]:
        """The content as an Arrow string array where it is one column, else the joined strings."""
        if self.is_instruction or not self.has("text"):
            return self.texts
        column = self.column("text")
        return column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column

    @cached_property
    def content_bytes(self) -> np.ndarray:
        """UTF-8 bytes of each record's content (both halves of an instruction pair)."""
        if self.is_instruction:
            return _byte_lengths(self.column("prompt"), self.num_rows) + _byte_lengths(self.column("response"),
                                                                                     self.num_rows)
        return _byte_lengths(self.column("text"), self.num_rows)

    @cached_property
    def null_content(self) -> list[bool]:
        """True where the record has no content at all (null text, or null prompt and response)."""
        if self.is_instruction:
            prompts = self.present("prompt").is_null().to_pylist()
            responses = self.present("response").is_null().to_pylist()
            return [p and r for p, r in zip(prompts, responses)]
        text = self.column("text")
        if text is None:
            return [True] * self.num_rows
        return text.is_null().to_pylist()


def take_records(records: pa.RecordBatch, indices: pa.Array) -> pa.RecordBatch:
    """``records.take(indices)``, also for view columns (``string_view``), which Arrow cannot take from yet:
    those pass through their large equivalent and come back as views."""
    try:
        return records.take(indices)
    except pa.ArrowNotImplementedError:
        plain = pa.schema([field.with_type(_without_views(field.type)) for field in records.schema],
                          metadata=records.schema.metadata)
        return records.cast(plain).take(indices).cast(records.schema)


def filter_records(records: pa.RecordBatch, mask: pa.Array) -> pa.RecordBatch:
    """``records.filter(mask)``, view columns included (:func:`take_records`)."""
    return take_records(records, pc.indices_nonzero(pc.fill_null(mask, False)))


def _without_views(kind: pa.DataType) -> pa.DataType:
    if _is_string_view(kind):
        return pa.large_string()
    if getattr(pa.types, "is_binary_view", lambda _: False)(kind):
        return pa.large_binary()
    if pa.types.is_struct(kind):
        return pa.struct([kind.field(i).with_type(_without_views(kind.field(i).type)) for i in range(kind.num_fields)])
    if pa.types.is_map(kind):
        return pa.map_(_without_views(kind.key_type), _without_views(kind.item_type))
    if pa.types.is_large_list(kind):
        return pa.large_list(kind.value_field.with_type(_without_views(kind.value_type)))
    if pa.types.is_list(kind):
        return pa.list_(kind.value_field.with_type(_without_views(kind.value_type)))
    return kind


def is_text_type(kind: pa.DataType) -> bool:
    """Whether a column of ``kind`` holds text dokumi reads: string, large_string, string_view or a
    dictionary of those."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or _is_string_view(kind)


def plain_strings(array: pa.Array) -> pa.Array:
    """``array`` as string or large_string when it is a dictionary of strings or a string_view; else as is."""
    kind = array.type
    if pa.types.is_dictionary(kind) and is_text_type(kind.value_type):
        return plain_strings(array.cast(kind.value_type))
    if _is_string_view(kind):
        return array.cast(pa.large_string())
    return array


def _is_string_view(kind: pa.DataType) -> bool:
    return getattr(pa.types, "is_string_view", lambda _: False)(kind)  # pyarrow 16 added string_view


def _byte_lengths(array: pa.Array | None, length: int) -> np.ndarray:
    if array is None:
        return np.zeros(length, dtype=np.int64)
    if not (pa.types.is_string(array.type) or pa.types.is_large_string(array.type)):
        return np.zeros(length, dtype=np.int64)
    return pc.fill_null(pc.binary_length(array), 0).to_numpy(zero_copy_only=False).astype(np.int64)


def _strings(array: pa.Array | None, length: int) -> list[str]:
    if array is None:
        return [""] * length
    return [value if value is not None else "" for value in array.to_pylist()]
