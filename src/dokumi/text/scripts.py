"""Writing systems of words, vectorised: the script of each word's first character.

A language switch across scripts (English text, then Russian or Japanese) shows
as a change in the scripts of consecutive words; a corpus that mixes two
scripts everywhere (Japanese with English commands) shows it too, which is why
detectors compare a switch with how often the corpus itself mixes the two.
"""

from __future__ import annotations

import numpy as np

from dokumi.text.tokens import Tokens

NAMES = ("latin", "number", "cyrillic", "greek", "arabic", "hebrew", "indic", "thai", "hangul", "kana", "han",
         "other")
LATIN, NUMBER, CYRILLIC, GREEK, ARABIC, HEBREW, INDIC, THAI, HANGUL, KANA, HAN, OTHER = range(len(NAMES))
# scripts whose words carry a language (numbers and symbols belong to no side of a switch)
LETTERED = np.array([code not in (NUMBER, OTHER) for code in range(len(NAMES))])

# (first code point, script) of each range, ascending; a code point takes the script of the range it falls in
_RANGES = np.array([
    (0x0000, OTHER), (0x0030, NUMBER), (0x003A, OTHER), (0x0041, LATIN), (0x005B, OTHER), (0x0061, LATIN),
    (0x007B, OTHER), (0x00C0, LATIN), (0x0250, OTHER), (0x0370, GREEK), (0x0400, CYRILLIC), (0x0530, OTHER),
    (0x0590, HEBREW), (0x0600, ARABIC), (0x0900, INDIC), (0x0E00, THAI), (0x0E80, OTHER), (0x1100, HANGUL),
    (0x1200, OTHER), (0x1E00, LATIN), (0x1F00, GREEK), (0x2000, OTHER), (0x3040, KANA), (0x3100, OTHER),
    (0x3130, HANGUL), (0x3190, OTHER), (0x3400, HAN), (0x4DC0, OTHER), (0x4E00, HAN), (0xA000, OTHER),
    (0xAC00, HANGUL), (0xD7B0, OTHER), (0xF900, HAN), (0xFB00, OTHER), (0xFB1D, HEBREW), (0xFB50, ARABIC),
    (0xFE00, OTHER), (0xFE70, ARABIC), (0xFF00, OTHER), (0xFF21, LATIN), (0xFF3B, OTHER), (0xFF41, LATIN),
    (0xFF5B, OTHER), (0xFF66, KANA), (0xFFA0, OTHER), (0x20000, HAN), (0x30000, OTHER),
], dtype=np.int64)


def code_points(data: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """The code point of the UTF-8 character that begins at each of ``starts`` in ``data`` (padded by 3+ bytes)."""
    b0 = data[starts].astype(np.int64)
    b1 = data[np.minimum(starts + 1, len(data) - 1)].astype(np.int64) & 0x3F
    b2 = data[np.minimum(starts + 2, len(data) - 1)].astype(np.int64) & 0x3F
    b3 = data[np.minimum(starts + 3, len(data) - 1)].astype(np.int64) & 0x3F
    return np.select(
        [b0 < 0x80, b0 < 0xE0, b0 < 0xF0],
        [b0, ((b0 & 0x1F) << 6) | b1, ((b0 & 0x0F) << 12) | (b1 << 6) | b2],
        ((b0 & 0x07) << 18) | (b1 << 12) | (b2 << 6) | b3,
    )


def script_of(points: np.ndarray) -> np.ndarray:
    """The script code (an index into :data:`NAMES`) of each code point."""
    return _RANGES[np.searchsorted(_RANGES[:, 0], points, side="right") - 1, 1].astype(np.int8)


def word_scripts(tokens: Tokens) -> np.ndarray:
    """The script of each word of ``tokens``: that of its first character (int8 codes)."""
    if not len(tokens.hashes):
        return np.zeros(0, dtype=np.int8)
    return script_of(code_points(tokens.data, tokens.starts))


def text_scripts(text: str) -> np.ndarray:
    """The script of every character of one string."""
    return script_of(np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64))


def latin_share(text: str) -> float:
    """Share of the letters of ``text`` that are Latin (1.0 when it has no letters)."""
    scripts = text_scripts(text)
    lettered = LETTERED[scripts]
    return float((scripts[lettered] == LATIN).mean()) if lettered.any() else 1.0


__all__ = ["LATIN", "LETTERED", "NAMES", "NUMBER", "OTHER", "code_points", "latin_share", "script_of",
           "text_scripts", "word_scripts"]
