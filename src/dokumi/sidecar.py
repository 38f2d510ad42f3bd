"""The record-hash sidecar: one row per record with its id, place, SHA-256 and a similarity sketch.

Every scan writes ``hashes/<shard>.parquet`` next to its manifest. It holds no
text: ``id``, ``shard``, ``row``, ``sha256`` (lowercase hex, see
:mod:`dokumi.hashing`), ``sketch`` and ``shingles``. A later scan reads it back
(``--expect``) to tell benign drift from substituted content.

The sketch is a MinHash (datasketch, ``affine32`` scheme, 64 permutations,
seed 1) over the distinct character 5-grams of the normalised text (NFKC,
case-folded, curly quotes made straight, runs of white space made one space),
each minimum kept to its low 16 bits (b-bit minwise hashing, Li and König
2010): 128 bytes per record. ``shingles`` is the number of distinct 5-grams,
which turns the Jaccard estimate into estimates of how much text was kept and
how much changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dokumi.errors import InputError
from dokumi.hashing import DIGEST_SIZE, from_hex, to_hex
from dokumi.minhash import MinHasher
from dokumi.records import Batch

SKETCH: dict[str, Any] = {
    "kind": "minhash",
    "library": "datasketch",
    "scheme": "affine32",
    "permutations": 64,
    "seed": 1,
    "bits": 16,
    "shingle": "char-5gram",
    "normalization": "nfkc-casefold-quotes-spaces/1",
}
PERMUTATIONS: int = SKETCH["permutations"]
SHINGLE_SIZE = 5
SKETCH_BYTES = PERMUTATIONS * 2
SIDECAR_DIR = "hashes"
SIDECAR_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("shard", pa.string()),
        pa.field("row", pa.int64()),
        pa.field("sha256", pa.string()),
        pa.field("sketch", pa.binary(SKETCH_BYTES)),
        pa.field("shingles", pa.uint32()),
    ],
    metadata={"dokumi.sketch": json.dumps(SKETCH, sort_keys=True)},
)

_QUOTES = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"', "\u00ab": '"', "\u00bb": '"', "\u2033": '"',
    }
)
_QUOTE_CHARACTERS = re.compile("[" + "".join(chr(c) for c in _QUOTES) + "]")
_POLYNOMIAL = np.uint64(0x100000001B3)
_hasher: MinHasher | None = None


def normalize(text: str) -> str:
    """The text as the sketch sees it: drift in case, quotes and white space disappears."""
    if text.isascii():  # NFKC, case folding and the quote table change nothing but the case of ASCII
        return " ".join(text.lower().split())
    text = unicodedata.normalize("NFKC", text).casefold()
    if _QUOTE_CHARACTERS.search(text):  # a dict translation is slow; most texts hold no curly quote
        text = text.translate(_QUOTES)
    # runs of white space made one space: str.split() cuts at exactly the characters the regular
    # expression \s matches (str.isspace()), three times faster than re.sub(r"\s+", " ", text).strip()
    return " ".join(text.split())


def _normalized_codes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The code points of every text's :func:`normalize` form, concatenated, and each form's length.

    Text by text: ``str.lower`` and ``str.split`` run in C, 2.5 times faster than the same on a batch's
    bytes with numpy (0.15 against 0.38 CPU-s for 17,000 man pages), whose temporaries are 8 bytes a
    character.
    """
    normalized = [normalize(text) for text in texts]
    lengths = np.fromiter(map(len, normalized), dtype=np.int64, count=len(normalized))
    joined = "".join(normalized)
    if joined.isascii():
        return np.frombuffer(joined.encode("ascii"), dtype=np.uint8).astype(np.uint64), lengths
    return np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64), lengths


def shingle_hashes(texts: list[str]) -> list[np.ndarray]:
    """The distinct 32-bit hashes of each text's normalised character 5-grams, for a whole batch at once.

    A text shorter than five characters is one shingle; an empty text has none.
    """
    codes, lengths = _normalized_codes(texts)
    # a text shorter than a shingle is hashed whole: pad its window with zeros
    short = (lengths > 0) & (lengths < SHINGLE_SIZE)
    if short.any():
        codes = np.insert(codes, np.repeat(np.cumsum(lengths)[short], SHINGLE_SIZE - lengths[short]), 0)
        lengths = np.where(short, SHINGLE_SIZE, lengths)
    ends = np.cumsum(lengths)
    windows = max(len(codes) - SHINGLE_SIZE + 1, 0)
    hashes = codes[:windows].copy()
    for shift in range(1, SHINGLE_SIZE):  # in place: the batch's arrays are 8 bytes a character
        hashes *= _POLYNOMIAL
        hashes += codes[shift:shift + windows]
    folded = hashes >> np.uint64(32)
    folded ^= hashes
    folded &= np.uint64(0xFFFFFFFF)
    # a window belongs to its text unless it starts in the text's last SHINGLE_SIZE - 1 characters
    inside = np.ones(len(codes), dtype=bool)
    for back in range(1, SHINGLE_SIZE):
        inside[ends[lengths >= SHINGLE_SIZE] - back] = False
    inside = inside[:windows]
    keys = np.repeat(np.arange(len(texts), dtype=np.uint64), lengths)[:windows][inside]
    keys <<= np.uint64(32)
    keys |= folded[inside]
    keys.sort()
    if len(keys):
        keys = keys[np.concatenate(([True], keys[1:] != keys[:-1]))]
    bounds = np.searchsorted(keys >> np.uint64(32), np.arange(len(texts) + 1, dtype=np.uint64))
    values = (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    return [values[bounds[i]:bounds[i + 1]] for i in range(len(texts))]


def sketches(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """MinHash sketches ``(n, 64) uint16`` and distinct-shingle counts ``(n,) uint32`` of ``texts``.

    The values are datasketch's (``MinHash(hashfunc=int)`` over the shingle hashes), computed
    for the whole batch at once by :class:`dokumi.minhash.MinHasher`.
    """
    shingles = shingle_hashes(texts)
    counts = np.fromiter(map(len, shingles), dtype=np.uint32, count=len(shingles))
    offsets = np.zeros(len(shingles) + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    values = np.concatenate(shingles) if shingles else np.zeros(0, dtype=np.uint32)
    signatures = _sketcher().signatures_of_hashes(values, offsets)
    return (signatures & 0xFFFF).astype(np.uint16), counts


def _sketcher() -> MinHasher:
    global _hasher
    if _hasher is None:
        _hasher = MinHasher(num_perm=PERMUTATIONS, seed=SKETCH["seed"], scheme=SKETCH["scheme"])
    return _hasher


@dataclass
class Resemblance:
    """How far a record moved from what was indexed, estimated from two sketches (all arrays of length n).

    ``jaccard``: estimated Jaccard similarity of the 5-gram sets; ``common``:
    estimated 5-grams in both; ``kept``: share of the smaller version found in
    the larger; ``changed``: estimated number of 5-grams added plus removed.
    """

    jaccard: np.ndarray
    common: np.ndarray
    kept: np.ndarray
    changed: np.ndarray


def resemblance(
    sketch_a: np.ndarray, shingles_a: np.ndarray, sketch_b: np.ndarray, shingles_b: np.ndarray
) -> Resemblance:
    """Compare sketches row by row (b-bit estimator: equal slots, corrected for chance 16-bit collisions)."""
    chance = 2.0 ** -SKETCH["bits"]
    equal = (sketch_a == sketch_b).mean(axis=1)
    jaccard = np.clip((equal - chance) / (1 - chance), 0.0, 1.0)
    size_a, size_b = shingles_a.astype(np.float64), shingles_b.astype(np.float64)
    both_empty = (size_a == 0) & (size_b == 0)
    jaccard = np.where(both_empty, 1.0, jaccard)
    common = np.minimum(jaccard * (size_a + size_b) / (1 + jaccard), np.minimum(size_a, size_b))
    smaller = np.minimum(size_a, size_b)
    kept = np.where(both_empty, 1.0, np.divide(common, smaller, out=np.zeros_like(common), where=smaller > 0))
    changed = np.maximum(size_a + size_b - 2 * common, 0.0)
    return Resemblance(jaccard=jaccard, common=common, kept=kept, changed=changed)


def sidecar_batch(batch: Batch, digests: np.ndarray, skip: np.ndarray | None = None) -> pa.RecordBatch:
    """The sidecar rows for one batch, given its record digests from :func:`dokumi.hashing.record_digests`.

    Records where ``skip`` is true (above the recipe's ``max_text_bytes``) get an empty sketch.
    """
    texts = batch.texts
    if skip is not None and skip.any():
        texts = ["" if skipped else text for text, skipped in zip(texts, skip.tolist())]
    sketch_rows, counts = sketches(texts)
    return pa.RecordBatch.from_arrays(
        [
            pa.array(batch.ids, type=pa.string()),
            pa.array([batch.shard] * batch.num_rows, type=pa.string()),
            batch.rows.cast(pa.int64()),
            to_hex(digests),
            _fixed_binary(sketch_rows),
            pa.array(counts, type=pa.uint32()),
        ],
        schema=SIDECAR_SCHEMA,
    )


def _sketch_parameters(stored: bytes) -> Any:
    from dokumi.documents import DocumentError, parse_json

    try:
        return parse_json(stored.decode("utf-8", "replace"))
    except DocumentError:
        return None


def _fixed_binary(rows: np.ndarray) -> pa.Array:
    data = pa.py_buffer(np.ascontiguousarray(rows, dtype="<u2").tobytes())
    return pa.Array.from_buffers(pa.binary(SKETCH_BYTES), len(rows), [None, data])


def read_sketches(column: pa.Array) -> np.ndarray:
    """A ``sketch`` column back as ``(n, 64) uint16``."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if len(column) == 0:
        return np.zeros((0, PERMUTATIONS), dtype=np.uint16)
    data = np.frombuffer(column.buffers()[1], dtype="<u2")
    start = column.offset * PERMUTATIONS
    return data[start:start + len(column) * PERMUTATIONS].reshape(-1, PERMUTATIONS).astype(np.uint16)


def id_keys(ids: list[str]) -> np.ndarray:
    """64-bit keys of record ids (BLAKE2b), for compact lookups."""
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(i.encode("utf-8"), digest_size=8).digest(), "little") for i in ids),
        dtype=np.uint64,
        count=len(ids),
    )


def sidecar_files(path: str | os.PathLike) -> list[Path]:
    """The sidecar files named by ``path``: a ``hashes/`` folder (or a folder holding one) or one file.

    These are taken as they are; an earlier scan's manifest, which vouches for its sidecars,
    is read by :func:`dokumi.sideinputs.load_hashes`.
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.parquet")) or sorted((path / SIDECAR_DIR).glob("*.parquet"))
        if not files:
            raise InputError(f"--expect {path}: no sidecar Parquet files found in the folder")
        return files
    if not path.is_file():
        raise InputError(f"--expect {path}: no such file or folder")
    return [path]


class ExpectedHashes:
    """Expected digests and sketches from sidecar files, looked up by record id.

    Memory: 8 (id key) + 32 (digest) + 128 (sketch) + 4 (shingle count) = 172
    bytes per indexed record, held in numpy arrays (compact to pickle).
    """

    def __init__(self, keys: np.ndarray, digests: np.ndarray, sketch_rows: np.ndarray, shingles: np.ndarray,
                 sources: list[dict[str, Any]]) -> None:
        order = np.argsort(keys, kind="stable")
        self.keys = keys[order]
        self.digests = digests[order]
        self.sketches = sketch_rows[order]
        self.shingles = shingles[order]
        self.sources = sources
        # what vouched for the sidecars: the earlier scan's manifest and signature (dokumi.sideinputs.load_hashes)
        self.origin: dict[str, Any] | None = None

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def load(cls, path: str | os.PathLike) -> ExpectedHashes:
        """The sidecar files of :func:`sidecar_files`, unchecked against any manifest."""
        return cls.read([(str(file), file, None) for file in sidecar_files(path)])

    @classmethod
    def read(cls, files: list[tuple[str, Any, str | None]]) -> ExpectedHashes:
        """Sidecars from ``(shown path, file or buffer for pyarrow, its sha256 or None)``; InputError naming the
        file when one is not a sidecar of this version."""
        keys, digests, sketch_rows, shingles, sources = [], [], [], [], []
        for shown, source, sha256 in files:
            try:
                table = pq.read_table(source, columns=["id", "sha256", "sketch", "shingles"])
            except (pa.ArrowException, OSError, KeyError) as error:
                raise InputError(f"--expect {shown}: not a record-hash sidecar ({error})") from None
            for name in table.column_names:
                if table.schema.field(name).type != SIDECAR_SCHEMA.field(name).type:
                    raise InputError(f"--expect {shown}: column {name!r} is {table.schema.field(name).type}, "
                                     f"not {SIDECAR_SCHEMA.field(name).type}")
            stored = (table.schema.metadata or {}).get(b"dokumi.sketch")
            if stored is None or _sketch_parameters(stored) != SKETCH:
                raise InputError(f"--expect {shown}: sketch parameters differ from this version's {SKETCH}")
            digest_rows, valid = from_hex(table.column("sha256").combine_chunks())
            if not valid.all():
                raise InputError(f"--expect {shown}: row {int(np.flatnonzero(~valid)[0])} has no valid sha256")
            if table.column("id").null_count or table.column("sketch").null_count:
                raise InputError(f"--expect {shown}: a row has no id or no sketch")
            keys.append(id_keys(table.column("id").to_pylist()))
            digests.append(digest_rows)
            sketch_rows.append(read_sketches(table.column("sketch")))
            shingles.append(table.column("shingles").fill_null(0).to_numpy())
            sources.append({"path": shown, "records": table.num_rows, "sha256": sha256})
        if not keys:
            return cls(np.zeros(0, np.uint64), np.zeros((0, DIGEST_SIZE), np.uint8),
                       np.zeros((0, PERMUTATIONS), np.uint16), np.zeros(0, np.uint32), [])
        return cls(np.concatenate(keys), np.concatenate(digests), np.concatenate(sketch_rows),
                   np.concatenate(shingles), sources)

    def lookup(self, ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """For each id, the ``[start, end)`` range of its entries (empty when the id is unknown)."""
        keys = id_keys(ids)
        return np.searchsorted(self.keys, keys, "left"), np.searchsorted(self.keys, keys, "right")
