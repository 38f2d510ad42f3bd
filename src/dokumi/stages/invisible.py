"""Invisible, zero-width and bidirectional control characters used as hidden triggers."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dokumi.errors import PolicyError
from dokumi.records import Batch
from dokumi.rulepacks import load_rule_pack, parse_codepoints
from dokumi.stage import Stage, StageResult

CONTEXTS = ("text-start", "emoji-sequence", "joining-script", "rtl-text", "after-cjk")

# Scripts whose orthography uses ZWJ/ZWNJ: Hebrew..Arabic Extended, Indic to Sinhala,
# Tibetan, Myanmar, Khmer, Mongolian, Arabic presentation forms.
_JOINING_RANGES = (
    (0x0590, 0x08FF), (0x0900, 0x0DFF), (0x0F00, 0x0FFF), (0x1000, 0x109F),
    (0x1780, 0x18AF), (0xA8E0, 0xA8FF), (0xFB1D, 0xFDFF), (0xFE70, 0xFEFC),
)
_RTL = re.compile("[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufefc]")
_EMOJI_RANGES = (
    (0x1F000, 0x1FAFF), (0x2600, 0x27BF), (0x2300, 0x23FF), (0x2B00, 0x2BFF),
    (0xFE0F, 0xFE0F), (0x20E3, 0x20E3), (0x1F3FB, 0x1F3FF),
)
_BLACK_FLAG = "\U0001F3F4"  # subdivision flags: black flag + tag letters + cancel tag
_TAGS = (0xE0000, 0xE007F)
_CJK_RANGES = ((0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3FFFF))


def _in(ranges: tuple[tuple[int, int], ...], char: str) -> bool:
    code = ord(char)
    return any(lo <= code <= hi for lo, hi in ranges)


@dataclass(frozen=True)
class CharacterGroup:
    name: str
    weight: float
    codepoints: tuple[range, ...]
    allowed: tuple[str, ...]


class InvisibleCharacters(Stage):
    """Score records containing invisible or format characters from a rule pack.

    Parameters
    ----------
    rules:
        Name of a built-in rule pack under ``filters/rules/`` or a path to one
        (default ``"invisible"``).
    max_count:
        Occurrences counted per group and record (default 10); more add nothing,
        which keeps the score of a long document bounded by what it contains.
    """

    name = "invisible"

    def __init__(self, rules: str = "invisible", max_count: int = 10) -> None:
        if not isinstance(max_count, int) or max_count < 1:
            raise ValueError(f"max_count = {max_count!r} must be a positive integer")
        self.rules = rules
        self.max_count = max_count
        self._groups, self._pattern, self._group_of = _compile(rules)

    def score(self, batch: Batch) -> StageResult:
        scores = np.zeros(batch.num_rows)
        reasons: list[list[str]] = [[] for _ in range(batch.num_rows)]
        search = self._pattern.search
        for i, text in enumerate(batch.texts):
            if not search(text):
                continue
            counts = self._count(text)
            keep = 1.0
            for group, count in counts.items():
                keep *= (1.0 - group.weight) ** count
                reasons[i].append(f"trigger:{group.name},count={count}")
            scores[i] = 1.0 - keep
        return StageResult(scores, reasons)

    def _count(self, text: str) -> dict[CharacterGroup, int]:
        counts: dict[CharacterGroup, int] = {}
        has_rtl: bool | None = None
        for match in self._pattern.finditer(text):
            position = match.start()
            group = self._group_of[match.group()]
            if counts.get(group, 0) >= self.max_count:
                continue
            if "rtl-text" in group.allowed:
                if has_rtl is None:
                    has_rtl = bool(_RTL.search(text))
                if has_rtl:
                    continue
            if _allowed(text, position, group.allowed):
                continue
            counts[group] = counts.get(group, 0) + 1
        return counts


def _allowed(text: str, position: int, contexts: tuple[str, ...]) -> bool:
    before = text[position - 1] if position > 0 else ""
    after = text[position + 1] if position + 1 < len(text) else ""
    for context in contexts:
        if context == "text-start" and position == 0:
            return True
        if context == "emoji-sequence" and _in_emoji_sequence(text, position, before, after):
            return True
        # Persian and Indic typing puts joiners at letter edges (before a space, after a comma),
        # so one joining-script neighbour is enough; a joiner inside a Latin word has none.
        if context == "joining-script" and any(c and _in(_JOINING_RANGES, c) for c in (before, after)):
            return True
        if context == "after-cjk" and before and _in(_CJK_RANGES, before):
            return True
    return False


def _in_emoji_sequence(text: str, position: int, before: str, after: str) -> bool:
    if _in((_TAGS,), text[position]):
        start = position
        while start > 0 and _in((_TAGS,), text[start - 1]):
            start -= 1
        return start > 0 and text[start - 1] == _BLACK_FLAG
    return any(c and _in(_EMOJI_RANGES, c) for c in (before, after))


def _compile(rules: str | Path) -> tuple[list[CharacterGroup], re.Pattern[str], dict[str, CharacterGroup]]:
    path, data = load_rule_pack(rules)
    groups: list[CharacterGroup] = []
    group_of: dict[str, CharacterGroup] = {}
    for index, entry in enumerate(data.get("group", [])):
        where = f"{path}: group {index + 1}"
        unknown = set(entry) - {"name", "weight", "chars", "allowed"}
        if unknown:
            raise PolicyError(f"{where}: unknown key {sorted(unknown)[0]!r}; known keys: name, weight, chars, allowed")
        weight = entry.get("weight")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight <= 1:
            raise PolicyError(f"{where}: weight = {weight!r} must be a number in (0, 1]")
        allowed = tuple(entry.get("allowed", ()))
        for context in allowed:
            if context not in CONTEXTS:
                raise PolicyError(f"{where}: unknown context {context!r}; known: {', '.join(CONTEXTS)}")
        group = CharacterGroup(
            name=str(entry.get("name") or f"group-{index + 1}"),
            weight=float(weight),
            codepoints=tuple(parse_codepoints(spec, where) for spec in entry.get("chars", ())),
            allowed=allowed,
        )
        groups.append(group)
        for codepoints in group.codepoints:
            for code in codepoints:
                group_of.setdefault(chr(code), group)
    if not group_of:
        raise PolicyError(f"{path}: the rule pack lists no characters")
    pattern = re.compile("[" + "".join(_class_ranges(sorted(map(ord, group_of)))) + "]")
    return groups, pattern, group_of


def _class_ranges(codes: list[int]) -> list[str]:
    parts, start, prev = [], codes[0], codes[0]
    for code in codes[1:] + [None]:
        if code is not None and code == prev + 1:
            prev = code
            continue
        parts.append(re.escape(chr(start)) if start == prev else f"{re.escape(chr(start))}-{re.escape(chr(prev))}")
        if code is not None:
            start = prev = code
    return parts
