"""MinHash signatures of word n-gram shingles, vectorised across a whole batch.

Signatures are those of datasketch's ``MinHash`` (same permutations from
``numpy.random.RandomState(seed)``, same arithmetic, for both of its schemes):
a stored signature loads as ``datasketch.LeanMinHash(seed=..., hashvalues=...,
scheme=...)``. Only the base 32-bit hash of a shingle differs from datasketch's
SHA-1 default; it is :func:`shingle_hash32`, which datasketch accepts as
``hashfunc=``, so ``MinHash(hashfunc=shingle_hash32).update_batch(
hasher.shingles(text))`` reproduces ``hasher.signatures([text])[0]`` bit for bit.

Text to shingles, per batch and without a Python loop per word:

1-2. Words and their 64-bit hashes come from :mod:`dokumi.text.tokens` (lower
   case, punctuation as separators, every Chinese or Japanese character a word
   of its own); a batch's words are computed once and shared by every stage.
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

from dokumi.text.tokens import (
    Tokens,
    fmix64,
    fmix64_int,
    position_weight,
    position_weights,
    word_hash,
    word_hashes,
)

SCHEMES = ("affine32", "legacy")
HASHFUNC = "dokumi.minhash.shingle_hash32"

_MERSENNE = np.uint64((1 << 61) - 1)
_MAX32 = np.uint64((1 << 32) - 1)
# Bytes of each (permutation x shingle) block: it stays in a core's L2 cache.
_BLOCK_BYTES = 1 << 20


def _fmix32(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer (datasketch's pre-mix for the affine32 scheme)."""
    values ^= values >> np.uint32(16)
    values *= np.uint32(0x85EBCA6B)
    values ^= values >> np.uint32(13)
    values *= np.uint32(0xC2B2AE35)
    values ^= values >> np.uint32(16)
    return values


def shingle_hash32(shingle: bytes) -> int:
    """The 32-bit hash of a shingle given as its words joined by single spaces (UTF-8).

    Pass it to datasketch as ``MinHash(hashfunc=shingle_hash32)`` together with
    :meth:`MinHasher.shingles` to reproduce dokumi's signatures.
    """
    total = 0
    for position, word in enumerate(shingle.split(b" ")):
        total = (total + word_hash(word) * position_weight(position)) & ((1 << 64) - 1)
    return fmix64_int(total) >> 32


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
        self._weights = np.array([position_weight(j) for j in range(ngram)], dtype=np.uint64)

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

    def signatures_of_words(self, tokens: Tokens) -> np.ndarray:
        """Signatures from words already hashed (``Batch.words``): the same as :meth:`signatures` of the texts."""
        return self._minhash(*self._shingles(tokens.hashes, tokens.offsets))

    def words(self, text: str) -> list[str]:
        """The normalised words of ``text``, as the shingles see them."""
        tokens = Tokens.of([text])
        return [tokens.word(i) for i in range(len(tokens.hashes))]

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


__all__ = ["HASHFUNC", "SCHEMES", "MinHasher", "datasketch_permutations", "fmix64", "position_weights",
           "shingle_hash32", "word_hash", "word_hashes"]
