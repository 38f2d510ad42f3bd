"""MinHash signatures of word n-gram shingles, vectorised across a whole batch.

Signatures are those of datasketch's ``MinHash`` (same permutations from
``numpy.random.RandomState(seed)``, same arithmetic, for both of its schemes):
a stored signature loads as ``datasketch.LeanMinHash(seed=..., hashvalues=...,
scheme=...)``. Only the base 32-bit hash of a shingle differs from datasketch's
SHA-1 default; it is :func:`shingle_hash32`, which datasketch accepts as
``hashfunc=``, so ``MinHash(hashfunc=shingle_hash32).update_batch(
hasher.shingles(text))`` reproduces ``hasher.signatures([text])[0]`` bit for bit.

Text to shingles, per batch and without a Python loop per word:

1. Normalise: lower case; every character that is not an ASCII letter, digit
   or underscore, nor a non-ASCII letter, mark or number, is a separator
   (so punctuation is stripped). Non-ASCII batches go through Arrow's
   ``utf8_lower`` and one RE2 replacement; ASCII batches through a byte table.
2. Words are maximal runs of word bytes. A word's hash is ``fmix64`` folded
   over its UTF-8 bytes in little-endian 8-byte chunks, starting from its
   length (see :func:`word_hash`); words of up to 8 bytes never collide.
3. A shingle is ``ngram`` consecutive words of one record (a record with fewer
   words is one shingle of all of them); its hash is ``fmix64`` of the words'
   hashes weighted by odd constants, and :func:`shingle_hash32` keeps the
   top 32 bits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

SCHEMES = ("affine32", "legacy")
HASHFUNC = "dokumi.minhash.shingle_hash32"

_MASK64 = (1 << 64) - 1
_MERSENNE = np.uint64((1 << 61) - 1)
_MAX32 = np.uint64((1 << 32) - 1)
# Bytes of each (permutation x shingle) block: it stays in a core's L2 cache.
_BLOCK_BYTES = 1 << 20
# Non-ASCII characters other than letters, marks and numbers become spaces (RE2 syntax).
_NON_ASCII_SEPARATORS = r"[^\x00-\x7f\pL\pM\pN]"


def _word_byte_table() -> tuple[np.ndarray, np.ndarray]:
    lower = np.arange(256, dtype=np.uint8)
    lower[ord("A"): ord("Z") + 1] += 32
    is_word = np.zeros(256, dtype=np.int8)
    for code in range(128):
        char = chr(code)
        is_word[code] = char.isascii() and (char.isalnum() or char == "_")
    is_word[128:] = 1  # bytes of non-ASCII characters left after the separator replacement
    return lower, is_word


_LOWER, _IS_WORD = _word_byte_table()
_LENGTH_MASKS = np.array([(1 << (8 * n)) - 1 for n in range(8)] + [_MASK64], dtype=np.uint64)


def fmix64(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer, in place on a uint64 array (wrapping arithmetic); returns it."""
    values ^= values >> np.uint64(33)
    values *= np.uint64(0xFF51AFD7ED558CCD)
    values ^= values >> np.uint64(33)
    values *= np.uint64(0xC4CEB9FE1A85EC53)
    values ^= values >> np.uint64(33)
    return values


def _fmix32(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer (datasketch's pre-mix for the affine32 scheme)."""
    values ^= values >> np.uint32(16)
    values *= np.uint32(0x85EBCA6B)
    values ^= values >> np.uint32(13)
    values *= np.uint32(0xC2B2AE35)
    values ^= values >> np.uint32(16)
    return values


def _fmix64_int(value: int) -> int:
    value ^= value >> 33
    value = (value * 0xFF51AFD7ED558CCD) & _MASK64
    value ^= value >> 33
    value = (value * 0xC4CEB9FE1A85EC53) & _MASK64
    return value ^ (value >> 33)


def _position_weight(position: int) -> int:
    """The odd multiplier of the word at ``position`` within a shingle."""
    return _fmix64_int(position + 1) | 1


def word_hash(word: bytes) -> int:
    """The 64-bit hash of one normalised word (UTF-8): ``fmix64(len + sum of chunk_c * weight_c)``.

    ``chunk_c`` is bytes ``8c .. 8c + 7`` read as a little-endian integer (zero-padded);
    ``weight_c`` is :func:`_position_weight`. This is the reference for the vectorised code.
    """
    total = len(word)
    for c, start in enumerate(range(0, len(word), 8)):
        total += int.from_bytes(word[start: start + 8], "little") * _position_weight(c)
    return _fmix64_int(total & _MASK64)


def shingle_hash32(shingle: bytes) -> int:
    """The 32-bit hash of a shingle given as its words joined by single spaces (UTF-8).

    Pass it to datasketch as ``MinHash(hashfunc=shingle_hash32)`` together with
    :meth:`MinHasher.shingles` to reproduce dokumi's signatures.
    """
    total = 0
    for position, word in enumerate(shingle.split(b" ")):
        total = (total + word_hash(word) * _position_weight(position)) & _MASK64
    return _fmix64_int(total) >> 32


def datasketch_permutations(num_perm: int, seed: int, scheme: str) -> tuple[np.ndarray, np.ndarray]:
    """The permutation parameters ``(a, b)`` that ``datasketch.MinHash(num_perm, seed, scheme=scheme)`` draws."""
    generator = np.random.RandomState(seed)
    if scheme == "legacy":
        pairs = [
            (generator.randint(1, _MERSENNE, dtype=np.uint64), generator.randint(0, _MERSENNE, dtype=np.uint64))
            for _ in range(num_perm)
        ]
        a, b = np.array(pairs, dtype=np.uint64).T
        return np.ascontiguousarray(a), np.ascontiguousarray(b)
    a = generator.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = generator.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


class MinHasher:
    """Computes datasketch-compatible MinHash signatures for batches of texts.

    Parameters
    ----------
    num_perm:
        Permutations, i.e. values per signature (default 128, datasketch's
        default): more gives finer similarity estimates and costs time and memory
        linearly.
    seed:
        Seed of the permutations (default 1, datasketch's default); signatures
        are comparable only under the same seed.
    ngram:
        Words per shingle (default 5): smaller catches heavier edits and also
        relates texts that merely share phrases.
    scheme:
        datasketch's permutation scheme: ``"affine32"`` (its default since 2.0:
        ``a*h + b mod 2^32`` after a 32-bit finalizer; unbiased and fastest) or
        ``"legacy"`` (``(a*h + b) mod (2^61 - 1)`` truncated to 32 bits; the only
        scheme of datasketch before 2.0).
    """

    def __init__(self, num_perm: int = 128, seed: int = 1, ngram: int = 5, scheme: str = "affine32") -> None:
        for name, value in (("num_perm", num_perm), ("ngram", ngram)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} = {value!r} must be a positive integer")
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
            raise ValueError(f"seed = {seed!r} must be an integer in [0, 2^32)")
        if scheme not in SCHEMES:
            raise ValueError(f"scheme = {scheme!r} is not one of {', '.join(SCHEMES)}")
        self.num_perm = num_perm
        self.seed = seed
        self.ngram = ngram
        self.scheme = scheme
        self._a, self._b = datasketch_permutations(num_perm, seed, scheme)
        self._weights = np.array([_position_weight(j) for j in range(ngram)], dtype=np.uint64)

    def params(self) -> dict[str, Any]:
        """Everything that determines a signature; two signatures compare only if these match."""
        return {"num_perm": self.num_perm, "seed": self.seed, "ngram": self.ngram, "scheme": self.scheme,
                "hashfunc": HASHFUNC}

    def signatures(self, texts: Sequence[str] | pa.Array | pa.ChunkedArray) -> np.ndarray:
        """One signature per text: a ``(len(texts), num_perm)`` uint32 array.

        A text without words gets datasketch's empty signature (every value 2^32 - 1).
        """
        hashes, offsets = self.shingle_hashes(texts)
        return self._minhash(hashes, offsets)

    def signatures_of_hashes(self, hashes32: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Signatures of texts given as 32-bit shingle hashes: text ``i`` owns ``hashes32[offsets[i]:offsets[i+1]]``.

        Equals ``datasketch.MinHash(hashfunc=int).update_batch(values)`` for each text's values.
        """
        return self._minhash(hashes32.astype(np.uint64) << np.uint64(32), offsets)

    def shingle_hashes(self, texts: Sequence[str] | pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
        """The 64-bit hashes of every text's shingles, concatenated, and the offsets of each text in them.

        Text ``i`` owns ``hashes[offsets[i]:offsets[i + 1]]``; ``hashes >> 32`` are the
        values :func:`shingle_hash32` gives.
        """
        return self._shingles(*word_hashes(texts))

    def words(self, text: str) -> list[str]:
        """The normalised words of ``text``, as the shingles see them."""
        data, offsets = _normalised_bytes([text])
        return [bytes(data[s:e]).decode("utf-8") for s, e in zip(*_word_spans(data, offsets))]

    def shingles(self, text: str) -> list[bytes]:
        """The shingles of ``text`` as datasketch input (words joined by spaces, UTF-8)."""
        words = self.words(text)
        if not words:
            return []
        if len(words) < self.ngram:
            return [" ".join(words).encode("utf-8")]
        return [" ".join(words[i: i + self.ngram]).encode("utf-8") for i in range(len(words) - self.ngram + 1)]

    def lean_minhash(self, signature: np.ndarray) -> Any:
        """``signature`` as a ``datasketch.LeanMinHash`` (datasketch >= 2.0)."""
        from datasketch import LeanMinHash

        return LeanMinHash(seed=self.seed, hashvalues=signature, scheme=self.scheme)

    def _shingles(self, word_hashes: np.ndarray, word_offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = self.ngram
        counts = np.diff(word_offsets)
        total = len(word_hashes)
        combined = word_hashes * self._weights[0]
        for j in range(1, min(n, total)):
            combined[: total - j] += word_hashes[j:] * self._weights[j]
        shingle_counts = np.where(counts >= n, counts - n + 1, np.minimum(counts, 1))
        shingle_offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(shingle_counts, out=shingle_offsets[1:])
        # global index of each text's first shingle word, repeated per shingle, plus the shingle's rank
        owner = np.repeat(np.arange(len(counts)), shingle_counts)
        starts = word_offsets[:-1][owner] + (np.arange(shingle_offsets[-1]) - shingle_offsets[:-1][owner])
        hashes = combined[starts]
        short = np.flatnonzero((counts > 0) & (counts < n))
        if len(short):
            # texts with fewer than ngram words: one shingle of all their words
            first = word_offsets[short]
            sums = np.zeros(len(short), dtype=np.uint64)
            for j in range(n - 1):
                present = counts[short] > j
                sums[present] += word_hashes[first[present] + j] * self._weights[j]
            hashes[shingle_offsets[short]] = sums
        return fmix64(hashes), shingle_offsets

    def _minhash(self, hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Apply the permutations and take each text's minimum, in cache-sized blocks of shingles."""
        n_texts = len(offsets) - 1
        signatures = np.full((self.num_perm, n_texts), _MAX32, dtype=np.uint32)
        hv = (hashes >> np.uint64(32)).astype(np.uint32 if self.scheme == "affine32" else np.uint64)
        if self.scheme == "affine32":
            _fmix32(hv)
        nonempty = np.flatnonzero(np.diff(offsets) > 0)
        if not len(nonempty):
            return signatures.T.copy()
        text_starts = offsets[nonempty]
        itemsize = 4 if self.scheme == "affine32" else 8
        block = max(64, _BLOCK_BYTES // (self.num_perm * itemsize))
        minima, segment_texts = [], []
        for begin in range(0, len(hv), block):
            end = min(begin + block, len(hv))
            inside = text_starts[(text_starts > begin) & (text_starts < end)]
            segments = np.concatenate(([begin], inside))
            minima.append(np.minimum.reduceat(self._permute(hv[begin:end]), segments - begin, axis=1))
            segment_texts.append(nonempty[np.searchsorted(text_starts, segments, side="right") - 1])
        owners = np.concatenate(segment_texts)
        first_segment = np.flatnonzero(np.diff(owners, prepend=-1))
        reduced = np.minimum.reduceat(np.concatenate(minima, axis=1), first_segment, axis=1)
        signatures[:, owners[first_segment]] = reduced
        return signatures.T.copy()

    def _permute(self, hv: np.ndarray) -> np.ndarray:
        """``(num_perm, len(hv))`` permuted hash values, exactly as datasketch computes them."""
        if self.scheme == "affine32":
            values = np.multiply.outer(self._a, hv)
            values += self._b[:, None]
            return values
        values = np.multiply.outer(self._a, hv)  # wraps mod 2^64, as datasketch's does
        values += self._b[:, None]
        # x mod (2^61 - 1) without a division: fold the top 3 bits onto the low 61 ...
        high = values >> np.uint64(61)
        values &= _MERSENNE
        values += high
        # ... then subtract the prime once where the fold reached it; only the low 32 bits are kept,
        # and those of (r - p) equal those of (r + 1) because 2^61 is a multiple of 2^32.
        np.add(values, np.uint64(1), out=high)
        high >>= np.uint64(61)
        values += high
        values &= _MAX32
        return values


def word_hashes(
    texts: Sequence[str] | pa.Array | pa.ChunkedArray, min_chars: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """The :func:`word_hash` of every text's normalised words, in order and concatenated, and each text's offsets.

    Text ``i`` owns ``hashes[offsets[i]:offsets[i + 1]]`` (uint64); these are the words
    :meth:`MinHasher.words` returns, hashed without a Python loop per word, less those of
    fewer than ``min_chars`` characters (2 drops single letters, as scikit-learn's
    default token pattern does).
    """
    data, offsets = _normalised_bytes(texts)
    starts, ends = _word_spans(data, offsets)
    if min_chars > 1:
        lengths = ends - starts
        if len(data) and data.max() >= 0x80:
            # characters are the bytes that do not continue a UTF-8 sequence
            leading = np.zeros(len(data) + 1, dtype=np.int64)
            np.cumsum((data & 0xC0) != 0x80, out=leading[1:])
            lengths = leading[ends] - leading[starts]
        starts, ends = starts[lengths >= min_chars], ends[lengths >= min_chars]
    # a text's words are those starting inside its byte range
    return _word_hashes(data, starts, ends), np.searchsorted(starts, offsets)


def _normalised_bytes(texts: Sequence[str] | pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Lower-cased UTF-8 bytes of all texts, contiguous and followed by 8 zero bytes, and each text's offsets.

    Non-ASCII separators are turned into spaces here; ASCII ones are left to the byte table.
    """
    array = _as_large_strings(texts)
    data, offsets = _buffers(array)
    if len(data) and data.max() >= 0x80:
        array = pc.replace_substring_regex(pc.utf8_lower(array), _NON_ASCII_SEPARATORS, " ")
        data, offsets = _buffers(array)
    padded = np.zeros(len(data) + 8, dtype=np.uint8)
    np.take(_LOWER, data, out=padded[: len(data)])
    return padded, offsets


def _buffers(array: pa.LargeStringArray) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 bytes of a large-string array (zero-copy) and offsets into them starting at 0."""
    offsets = np.frombuffer(array.buffers()[1], dtype=np.int64)[array.offset: array.offset + len(array) + 1]
    raw = array.buffers()[2]
    data = np.frombuffer(raw, dtype=np.uint8) if raw is not None else np.zeros(0, dtype=np.uint8)
    return data[offsets[0]: offsets[-1]], offsets - offsets[0]


def _as_large_strings(texts: Sequence[str] | pa.Array | pa.ChunkedArray) -> pa.LargeStringArray:
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks()
    if not isinstance(texts, pa.Array):
        texts = pa.array(texts, type=pa.large_string())
    if texts.type != pa.large_string():
        texts = texts.cast(pa.large_string())
    if texts.null_count:
        texts = texts.fill_null("")
    return texts


def _word_spans(data: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) byte positions of every word in the padded ``data``.

    Texts are contiguous in ``data``, so a word ending one text and a word opening
    the next are split at the text boundary.
    """
    is_word = np.take(_IS_WORD, data)  # the zero padding is never a word byte
    change = np.diff(is_word, prepend=np.int8(0))
    starts = np.flatnonzero(change == 1)
    ends = np.flatnonzero(change == -1)
    inner = offsets[1:-1]
    inner = inner[(inner > 0) & (is_word[inner] == 1) & (is_word[inner - 1] == 1)]
    if len(inner):  # neither a start nor an end yet: insert, keeping both sorted
        starts = np.insert(starts, np.searchsorted(starts, inner), inner)
        ends = np.insert(ends, np.searchsorted(ends, inner), inner)
    return starts, ends


def _word_hashes(data: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """:func:`word_hash` of every word, from unaligned 8-byte loads of the padded ``data``."""
    lengths = (ends - starts).astype(np.int64)
    chunks = (lengths + 7) // 8
    chunk_offsets = np.zeros(len(chunks) + 1, dtype=np.int64)
    np.cumsum(chunks, out=chunk_offsets[1:])
    owner = np.repeat(np.arange(len(chunks)), chunks)
    index = np.arange(chunk_offsets[-1]) - chunk_offsets[:-1][owner]
    # a little-endian uint64 starting at every byte of data (the 8 padding bytes keep the last in bounds)
    loads = np.ndarray(shape=(max(len(data) - 7, 0),), dtype="<u8", buffer=data, strides=(1,))
    values = loads[starts[owner] + 8 * index]
    values &= _LENGTH_MASKS[np.minimum(lengths[owner] - 8 * index, 8)]
    values *= position_weights(int(chunks.max()) if len(chunks) else 0)[index]
    sums = np.add.reduceat(values, chunk_offsets[:-1]) if len(values) else np.zeros(0, dtype=np.uint64)
    sums += lengths.astype(np.uint64)
    return fmix64(sums)


def position_weights(count: int) -> np.ndarray:
    """The odd multipliers of positions ``0 .. count - 1`` (:func:`_position_weight`, vectorised)."""
    return fmix64(np.arange(1, count + 1, dtype=np.uint64)) | np.uint64(1)
