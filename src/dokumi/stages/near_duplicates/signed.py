"""Signing records: content keys, MinHash signatures and LSH band-key rows, keyed on content.

A record is known by its content key (:attr:`dokumi.records.Batch.content_keys`),
never by shard and row: identical records share one entry (a *node*) that
counts how many records carry it, so the clusters are the same however the
corpus is split or ordered.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from dokumi.minhash import MinHasher
from dokumi.records import Batch
from dokumi.text.sampling import stable_hash

EMPTY = np.uint32(0xFFFFFFFF)
# A key row's member, 12 bytes: the record's content key and the band the key belongs to.
MEMBER = np.dtype([("content", "<u8"), ("band", "<u4")])
KEY_SCHEMA = pa.schema([("key", pa.uint64()), ("member", pa.binary(MEMBER.itemsize))])
NO_ID = np.uint64(0xFFFFFFFFFFFFFFFF)


def sign(hasher: MinHasher, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
    """The positions of the records that have words, and their signatures (from the batch's shared words)."""
    if not batch.num_rows:
        return np.zeros(0, dtype=np.int64), np.zeros((0, hasher.num_perm), dtype=np.uint32)
    signatures = hasher.signatures_of_words(batch.words)
    with_words = np.flatnonzero(batch.words.counts > 0)
    return with_words, signatures[with_words]


def id_keys(ids: list[str]) -> np.ndarray:
    """A 64-bit key per record id: which of several identical records a dedup keeps (the lowest)."""
    return np.fromiter((stable_hash(i) for i in ids), dtype=np.uint64, count=len(ids))


def key_rows(content: np.ndarray, keys: np.ndarray) -> pa.Table:
    """One row per (record, band): the band key, and the record's content key with the band."""
    bands = keys.shape[1] if keys.ndim == 2 else 0
    members: np.ndarray = np.empty((len(content), bands), dtype=MEMBER)
    members["content"] = content[:, None]
    members["band"] = np.arange(bands, dtype=np.uint32)[None, :]
    members = members.ravel()
    binary = pa.FixedSizeBinaryArray.from_buffers(KEY_SCHEMA.field("member").type, len(members),
                                                  [None, pa.py_buffer(members.view(np.uint8))])
    return pa.table([pa.array(keys.ravel(), pa.uint64()), binary], schema=KEY_SCHEMA)


def member_arrays(groups: pa.Table) -> Iterator[tuple[pa.ListArray, np.ndarray, np.ndarray]]:
    """Each chunk of a table of shared-key groups, with its members' content keys and bands (views, no copy)."""
    for chunk in groups.column("members").chunks:
        flat = chunk.flatten()
        data = np.frombuffer(flat.buffers()[1], dtype=MEMBER)[flat.offset: flat.offset + len(flat)]
        yield chunk, data["content"], data["band"]


def _combined(keys: list[np.ndarray]) -> bool:
    """Whether a partial's key blocks are one block of strictly ascending keys: one entry per content already."""
    return len(keys) == 1 and not (keys[0][1:] <= keys[0][:-1]).any()


@dataclass
class Signed:
    """One partition's signed records, by content: a fold's partial.

    Chunks are appended per batch and combined (one entry per content) when merged,
    so folding costs no sort per batch.
    """

    keys: list[np.ndarray] = field(default_factory=list)
    signatures: list[np.ndarray] = field(default_factory=list)
    counts: list[np.ndarray] = field(default_factory=list)
    ids: list[np.ndarray] = field(default_factory=list)
    records: int = 0

    def add(self, content: np.ndarray, signatures: np.ndarray, ids: np.ndarray, records: int) -> None:
        """Add one batch's content keys, signatures and ids (``records`` records read)."""
        self.keys.append(content)
        self.signatures.append(signatures)
        self.counts.append(np.ones(len(content), dtype=np.int64))
        self.ids.append(ids)
        self.records += records

    def combined(self, num_perm: int) -> Signed:
        """One entry per content key, ascending: its signature, its number of records and its lowest id key.

        Consumes this partial: each chunk of signatures is released once copied, so the peak is one
        copy of the signatures, not two.
        """
        if not self.keys:
            return Signed([np.zeros(0, np.uint64)], [np.zeros((0, num_perm), np.uint32)], [np.zeros(0, np.int64)],
                          [np.zeros(0, np.uint64)], self.records)
        if _combined(self.keys):
            # a merge's result: sorting 300,000 contents again and copying their signatures cost the driver 0.5 s
            return Signed(self.keys, self.signatures, self.counts, self.ids, self.records)
        keys = np.concatenate(self.keys)
        counts = np.concatenate(self.counts)
        ids = np.concatenate(self.ids)
        order = np.lexsort((ids, keys))  # by key, then id: the first of each key has the lowest id
        keys, counts, ids = keys[order], counts[order], ids[order]
        first = np.concatenate(([0], np.flatnonzero(keys[1:] != keys[:-1]) + 1)) if len(keys) else \
            np.zeros(0, dtype=np.int64)
        rows = order[first]
        signatures = np.empty((len(rows), num_perm), dtype=np.uint32)  # pages are taken as rows are copied
        begin = 0
        chunks, self.signatures = self.signatures, []
        while chunks:
            chunk = chunks.pop(0)
            inside = np.flatnonzero((rows >= begin) & (rows < begin + len(chunk)))
            signatures[inside] = chunk[rows[inside] - begin]
            begin += len(chunk)
            del chunk
        return Signed([keys[first]], [signatures], [np.add.reduceat(counts, first) if len(first) else counts[:0]],
                      [ids[first]], self.records)

    @classmethod
    def merged(cls, parts: list[Signed], num_perm: int) -> Signed:
        """One partial from the partials of several workers."""
        out = cls()
        for part in parts:
            out.keys += part.keys
            out.signatures += part.signatures
            out.counts += part.counts
            out.ids += part.ids
            out.records += part.records
        return out.combined(num_perm)

    @property
    def key(self) -> np.ndarray:
        """The content keys of a combined partial (its one chunk)."""
        return self.keys[0]

    @property
    def signature(self) -> np.ndarray:
        """The MinHash signatures of a combined partial (its one chunk)."""
        return self.signatures[0]

    @property
    def count(self) -> np.ndarray:
        """Records per content of a combined partial (its one chunk)."""
        return self.counts[0]

    @property
    def id(self) -> np.ndarray:
        """The lowest record-id key per content of a combined partial (its one chunk)."""
        return self.ids[0]


@dataclass
class KeyedRows:
    """One fixed-width row (e.g. a word-set MinHash) per content key, gathered in blocks: a partial that
    pickles as a few arrays (a dict of one small array per key took seconds to move between Dask
    workers at 170,000 keys) and merges into one block per distinct key. Identical contents give identical rows, so
    which copy of a repeated key is kept does not matter."""

    keys: list[np.ndarray] = field(default_factory=list)
    rows: list[np.ndarray] = field(default_factory=list)

    def add(self, keys: np.ndarray, rows: np.ndarray) -> None:
        """Gather ``rows[i]`` for ``keys[i]``."""
        if len(keys):
            self.keys.append(np.asarray(keys, dtype=np.uint64))
            self.rows.append(rows)

    @classmethod
    def merged(cls, parts: list[KeyedRows]) -> KeyedRows:
        """The rows of all ``parts``, one per distinct key, ascending. Each merge sorts (on the workers of a
        tree of merges), so the last merge, on the driver, only interleaves a few sorted runs."""
        out = cls()
        for part in parts:
            out.keys += part.keys
            out.rows += part.rows
        if out.keys:
            keys, rows = out._distinct()
            out.keys, out.rows = [keys], [rows]
        return out

    def table(self, width: int) -> tuple[np.ndarray, np.ndarray]:
        """The distinct keys (ascending) and each one's row (``width`` 32-bit values where there is none)."""
        if not self.keys:
            return np.zeros(0, dtype=np.uint64), np.zeros((0, width), dtype=np.uint32)
        return self._distinct()

    def _distinct(self) -> tuple[np.ndarray, np.ndarray]:
        if _combined(self.keys):
            return self.keys[0], self.rows[0]
        keys, rows = np.concatenate(self.keys), np.concatenate(self.rows)
        order = np.argsort(keys, kind="stable")  # a merge of sorted runs where the parts were merged
        keys = keys[order]
        first = np.ones(len(keys), dtype=bool)
        first[1:] = keys[1:] != keys[:-1]
        return keys[first], rows[order[first]]


__all__ = ["EMPTY", "KEY_SCHEMA", "MEMBER", "NO_ID", "KeyedRows", "Signed", "id_keys", "key_rows", "member_arrays",
           "sign"]
