"""Words as 64-bit hashes with offsets, for a whole batch at once and without a Python loop per word.

1. Normalise: lower case; every character that is not an ASCII letter, digit
   or underscore, nor a non-ASCII letter, mark or number, is a separator
   (so punctuation is stripped). Non-ASCII batches go through Arrow's
   ``utf8_lower`` and RE2 replacements; ASCII batches through a byte table.
2. Words are maximal runs of word bytes, except that every Han, Hiragana and
   Katakana character is a word of its own: Chinese and Japanese are written
   without spaces, and a whole clause is not one word. A word's hash is ``fmix64`` folded
   over its UTF-8 bytes in little-endian 8-byte chunks, starting from its
   length (see :func:`word_hash`); words of up to 8 bytes never collide.

:class:`Tokens` keeps the normalised bytes, so a word's text can be read back
where a finding must name it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_MASK64 = (1 << 64) - 1
# Non-ASCII characters other than letters, marks and numbers become spaces (RE2 syntax).
_NON_ASCII_SEPARATORS = r"[^\x00-\x7f\pL\pM\pN]"
_CJK_STOPS = "[。！？]"
# Characters of scripts written without spaces, each made a word of its own.
_UNSPACED = r"([\p{Han}\p{Hiragana}\p{Katakana}])"


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
_ASCII_WORD = re.compile(r"[a-z0-9_]+")
_LENGTH_MASKS = np.array([(1 << (8 * n)) - 1 for n in range(8)] + [_MASK64], dtype=np.uint64)


def fmix64(values: np.ndarray) -> np.ndarray:
    """MurmurHash3's 64-bit finalizer, in place on a uint64 array (wrapping arithmetic); returns it."""
    values ^= values >> np.uint64(33)
    values *= np.uint64(0xFF51AFD7ED558CCD)
    values ^= values >> np.uint64(33)
    values *= np.uint64(0xC4CEB9FE1A85EC53)
    values ^= values >> np.uint64(33)
    return values


def fmix64_int(value: int) -> int:
    """:func:`fmix64` of one Python integer."""
    value &= _MASK64
    value ^= value >> 33
    value = (value * 0xFF51AFD7ED558CCD) & _MASK64
    value ^= value >> 33
    value = (value * 0xC4CEB9FE1A85EC53) & _MASK64
    return value ^ (value >> 33)


def position_weight(position: int) -> int:
    """The odd multiplier of the chunk (or word) at ``position``."""
    return fmix64_int(position + 1) | 1


def position_weights(count: int) -> np.ndarray:
    """The odd multipliers of positions ``0 .. count - 1`` (:func:`position_weight`, vectorised)."""
    return fmix64(np.arange(1, count + 1, dtype=np.uint64)) | np.uint64(1)


def word_hash(word: bytes) -> int:
    """The 64-bit hash of one normalised word (UTF-8): ``fmix64(len + sum of chunk_c * weight_c)``.

    ``chunk_c`` is bytes ``8c .. 8c + 7`` read as a little-endian integer (zero-padded);
    ``weight_c`` is :func:`position_weight`. This is the reference for the vectorised code.
    """
    total = len(word)
    for c, start in enumerate(range(0, len(word), 8)):
        total += int.from_bytes(word[start: start + 8], "little") * position_weight(c)
    return fmix64_int(total & _MASK64)


def words_of(text: str) -> list[str]:
    """The normalised words of one text, as :class:`Tokens` sees them."""
    if text.isascii():  # the byte table's words exactly, without a batch's setup (rule packs ask for hundreds)
        return _ASCII_WORD.findall(text.lower())
    tokens = Tokens.of([text])
    return [tokens.word(i) for i in range(len(tokens.hashes))]


@dataclass
class Tokens:
    """Every record's words: ``hashes[offsets[i]:offsets[i + 1]]`` belong to record ``i``.

    ``data`` holds the normalised UTF-8 bytes of all records (followed by 8 zero
    bytes) and ``starts``/``ends`` each word's byte span in it.
    """

    hashes: np.ndarray
    offsets: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    data: np.ndarray

    @classmethod
    def of(cls, texts: Sequence[str] | pa.Array | pa.ChunkedArray) -> Tokens:
        """Tokenise ``texts`` (normalised words, hashed), one offset range per text."""
        data, text_offsets = normalised_bytes(texts)
        starts, ends = _word_spans(data, text_offsets)
        hashes = _word_hashes(data, starts, ends)
        # a text's words are those starting inside its byte range
        return cls(hashes, np.searchsorted(starts, text_offsets), starts, ends, data)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @cached_property
    def counts(self) -> np.ndarray:
        """Words per record."""
        return np.diff(self.offsets)

    @cached_property
    def owner(self) -> np.ndarray:
        """The record of every word."""
        return np.repeat(np.arange(len(self), dtype=np.int64), self.counts)

    @cached_property
    def _non_ascii_bytes(self) -> np.ndarray | None:
        """Per word: its bytes that are not ASCII, and of those the ones that continue a character
        (None when the data is all ASCII). Bytes between words are ASCII (separators became spaces),
        so a sum from each word's start to the next word's start counts only the word's own bytes."""
        if not len(self.hashes) or not len(self.data) or self.data.max() < 0x80:
            return None
        high = (self.data >= 0x80).view(np.uint8)
        continuing = ((self.data & 0xC0) == 0x80).view(np.uint8)
        return np.stack([np.add.reduceat(high, self.starts, dtype=np.int64),
                         np.add.reduceat(continuing, self.starts, dtype=np.int64)])

    @cached_property
    def characters(self) -> np.ndarray:
        """Characters per word (UTF-8 bytes that do not continue a sequence)."""
        lengths = self.ends - self.starts
        counted = self._non_ascii_bytes
        return lengths if counted is None else lengths - counted[1]

    @cached_property
    def ascii(self) -> np.ndarray:
        """True for words made of ASCII bytes only."""
        counted = self._non_ascii_bytes
        return np.ones(len(self.hashes), dtype=bool) if counted is None else counted[0] == 0

    def word(self, index: int) -> str:
        """The text of word ``index`` (normalised)."""
        return bytes(self.data[self.starts[index]: self.ends[index]]).decode("utf-8", errors="replace")

    def at_least(self, min_chars: int) -> tuple[np.ndarray, np.ndarray]:
        """Hashes and offsets of the words of at least ``min_chars`` characters."""
        if min_chars <= 1:
            return self.hashes, self.offsets
        keep = self.characters >= min_chars
        offsets = np.zeros(len(self.offsets), dtype=np.int64)
        np.cumsum(np.bincount(self.owner[keep], minlength=len(self)), out=offsets[1:])
        return self.hashes[keep], offsets


def word_hashes(texts: Sequence[str] | pa.Array | pa.ChunkedArray, min_chars: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The :func:`word_hash` of every text's normalised words, concatenated, and each text's offsets.

    Words of fewer than ``min_chars`` characters are left out (2 drops single
    letters, as scikit-learn's default token pattern does).
    """
    return Tokens.of(texts).at_least(min_chars)


def normalised_bytes(texts: Sequence[str] | pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """Lower-cased UTF-8 bytes of all texts, contiguous and followed by 8 zero bytes, and each text's offsets.

    Non-ASCII separators are turned into spaces here; ASCII ones are left to the byte table.
    """
    array = _as_large_strings(texts)
    data, offsets = _buffers(array)
    if len(data) and data.max() >= 0x80:
        array = _normalise_non_ascii(array)
        data, offsets = _buffers(array)
    padded = np.zeros(len(data) + 8, dtype=np.uint8)
    np.take(_LOWER, data, out=padded[: len(data)])
    return padded, offsets


def _normalise_non_ascii(array: pa.LargeStringArray) -> pa.LargeStringArray:
    """Unicode lower case and separators, and spaces around unspaced scripts' characters, for the records
    that are not ASCII (the others are left to the byte table, which is much cheaper)."""
    non_ascii = ~pc.string_is_ascii(array).to_numpy(zero_copy_only=False)
    rows = np.flatnonzero(non_ascii)
    part = array if len(rows) == len(array) else array.take(pa.array(rows))
    # a full stop of Chinese and Japanese ends a sentence as ". " does (sentences are found in these bytes)
    part = pc.replace_substring_regex(pc.utf8_lower(part), _CJK_STOPS, ". ")
    part = pc.replace_substring_regex(part, _NON_ASCII_SEPARATORS, " ")
    part = pc.replace_substring_regex(part, _UNSPACED, r" \1 ")
    if len(rows) == len(array):
        return part
    others = np.flatnonzero(~non_ascii)
    place = np.empty(len(array), dtype=np.int64)
    place[others] = np.arange(len(others))
    place[rows] = len(others) + np.arange(len(rows))
    return pa.concat_arrays([array.take(pa.array(others)), part]).take(pa.array(place))


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
    if pa.types.is_dictionary(texts.type):
        texts = texts.dictionary_decode()
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
    if len(inner) > 1:  # empty texts repeat an offset: split there once
        inner = inner[np.concatenate(([True], inner[1:] != inner[:-1]))]
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


__all__ = ["Tokens", "fmix64", "normalised_bytes", "position_weights", "word_hash", "word_hashes", "words_of"]
