"""Lines of code and comments as templates, and the instances where one identifier binds a comment to code.

A *bound pair* is a comment line and a code line a few lines below it that share an identifier
(the *fill*). Its templates are the two lines with that identifier replaced by a slot (``§``):
the comment's words (lowercased, punctuation dropped) and the code line's tokens (numbers as
``0``, white space normalised). A trigger and payload that vary in one identifier (TrojanPuzzle)
are the same bound pair of templates in every poison record, each with another fill.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

SLOT = "§"
# code tokens: identifiers, numbers, string literals (one line), any other character
CODE_TOKEN = re.compile(r"""[A-Za-z_][A-Za-z0-9_]*|\d[\w.]*|"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`\n]*`|\S""")
WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|\d+")
IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
NUMBER = re.compile(r"\d")
# a comment that fills a whole line, by its opening marker; C preprocessor lines are code
LINE_COMMENT = re.compile(r"^\s*(//+|/\*+|\*+(?!/)|#+(?=\s)|--(?=\s)|;+|\"\"\"|''')")
PREPROCESSOR = re.compile(r"^\s*#\s*(include|define|undef|if|ifdef|ifndef|elif|else|endif|pragma|error|line)\b")
# a comment line that is code itself (a doc example: "/// let n = metrics.count(0);") is not prose about code
CODE_IN_COMMENT = re.compile(r";\s*$|\s=\s|[{}]|->|=>|::")
# longer lines are minified or generated data, not code a person reads
MAX_LINE = 400


@dataclass(frozen=True)
class Bound:
    """One comment line and one code line below it that share the identifier ``fill``."""

    comment: str  # the comment's template (its words, the fill as SLOT)
    code: str  # the code line's template (its tokens, the fill as SLOT)
    fill: str
    isolated: bool  # the fill occurs nowhere else in the record


def _comment_words(line: str) -> list[str]:
    return WORD.findall(line)


def _code_tokens(line: str) -> list[str]:
    return CODE_TOKEN.findall(line)


def split_lines(text: str) -> list[tuple[bool, str]]:
    """``(is_comment, line)`` for each line, a comment's line without its opening marker; lines inside a
    block comment or docstring are comments."""
    out: list[tuple[bool, str]] = []
    in_block: str | None = None
    for line in text.split("\n"):
        if in_block is not None:
            out.append((True, line.lstrip().lstrip("*")))
            if in_block in line:
                in_block = None
            continue
        match = LINE_COMMENT.match(line)
        if match is None or PREPROCESSOR.match(line):
            out.append((False, line))
            continue
        marker, rest = match.group(1), line[match.end():]
        out.append((True, rest))
        if marker.startswith("/*") and "*/" not in rest:
            in_block = "*/"
        elif marker in ('"""', "'''") and marker not in rest:
            in_block = marker
    return out


def bound_pairs(text: str, window: int = 6, min_comment_words: int = 3, min_code_tokens: int = 3,
                max_pairs: int = 256) -> list[Bound]:
    """Every bound pair of ``text``: a comment line, a code line at most ``window`` lines below it, and an
    identifier of 3 or more characters that both carry. The comment must keep ``min_comment_words``
    words and the code line ``min_code_tokens`` tokens besides the slot (a bare name binds nothing)."""
    lines = split_lines(text)
    code_tokens: dict[int, list[str]] = {}
    for i, (is_comment, line) in enumerate(lines):
        if not is_comment and len(line) <= MAX_LINE and line.strip():
            code_tokens[i] = _code_tokens(line)
    if not code_tokens:
        return []
    everywhere = Counter(IDENTIFIER.findall(text))
    out: list[Bound] = []
    for i, (is_comment, line) in enumerate(lines):
        if not is_comment or len(line) > MAX_LINE:
            continue
        if CODE_IN_COMMENT.search(line):
            continue
        words = _comment_words(line)
        names = {w for w in words if len(w) >= 3 and not w[0].isdigit()}
        if not names:
            continue
        comment_counts = Counter(w for w in words if w in names)
        for j in range(i + 1, min(len(lines), i + 1 + window)):
            tokens = code_tokens.get(j)
            if tokens is None:
                continue
            shared = names.intersection(tokens)
            for fill in sorted(shared):
                slots = sum(1 for t in tokens if t == fill)
                if len(tokens) - slots < min_code_tokens or len(words) - comment_counts[fill] < min_comment_words:
                    continue
                comment = " ".join(SLOT if w == fill else w.lower() for w in words)
                code = " ".join(SLOT if t == fill else ("0" if NUMBER.match(t) else t) for t in tokens)
                isolated = everywhere[fill] == comment_counts[fill] + slots
                out.append(Bound(comment, code, fill, isolated))
                if len(out) >= max_pairs:
                    return out
    return out
