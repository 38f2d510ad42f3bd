"""Rule packs for the forms triggers take: mixed-script words, known trigger tokens, prompt injection.

Scripts come from the Unicode Character Database through the ``regex``
module's ``\\p{Script=...}`` property (Python's ``unicodedata`` has no Script
property). Each pack is a plain TOML file under ``filters/rules/``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import regex

from dokumi.arrays import distinct, members
from dokumi.errors import PolicyError
from dokumi.records import Batch
from dokumi.rulepacks import load_rule_pack
from dokumi.stage import Stage, StageResult
from dokumi.text.proximity import Near, sequence_pairs
from dokumi.text.tokens import word_hash, words_of

DEFAULT_PACKS = ("mixed_script", "trigger_tokens", "prompt_injection")
_WORD = regex.compile(r"\w+")
_LETTER = regex.compile(r"\p{L}")
_LATIN_LETTER = regex.compile(r"\p{Script=Latin}")
_SHORT_FORM_LENGTH = 32


@dataclass(frozen=True)
class Rule:
    """One compiled rule: a regex, its weight and the reason code of a match.

    The exact regex runs only on records that can match, found for a whole batch at once:
    ``words`` lists, per slot that must be filled, the hashes of the words that can fill it (the
    record must hold one word of every slot); else ``loose`` is an RE2 pattern (Arrow's vectorised
    regex) that matches wherever ``pattern`` does; with neither, every record is checked.
    """

    reason: str
    weight: float
    pattern: regex.Pattern
    loose: str | None = None
    # per slot, its alternatives, each the hashes of the words it is made of
    words: tuple[tuple[tuple[int, ...], ...], ...] | None = None
    # a sequence's neighbouring slots, whose words must come close in a record of ASCII text
    near: tuple[Near, ...] | None = None


@dataclass(frozen=True)
class ScriptMix:
    """Two scripts that must not meet inside one word."""

    name: str
    scripts: tuple[str, str]
    weight: float
    weight_other: float
    letters: tuple[regex.Pattern, regex.Pattern]


@dataclass(frozen=True)
class WholeWord:
    """A word written only in look-alike letters of another script inside Latin text."""

    name: str
    weight: float
    min_letters: int
    min_latin_share: float
    letters: regex.Pattern  # letters of the scripts whose look-alike words count


@dataclass(frozen=True)
class MixedScriptPack:
    mixes: tuple[ScriptMix, ...]
    lookalikes: frozenset[str]
    whole_word: WholeWord | None
    foreign: regex.Pattern  # any letter of a script named in a mix other than Latin
    foreign_re2: str | None  # the same, for the vectorised first pass (None: no foreign script)


class Patterns(Stage):
    """Score records that match rule packs: homoglyph words, known triggers, prompt injection.

    Parameters
    ----------
    packs:
        Rule packs to apply, each a built-in name under ``filters/rules/`` or a
        path (default: ``mixed_script``, ``trigger_tokens``, ``prompt_injection``).
        A pack's kind is read from its content: ``[[mix]]`` entries make a
        mixed-script pack, ``[[token]]`` a token pack, ``[[rule]]`` a rule pack.
    max_reasons:
        Reason codes kept per record (default 5), so that a record full of
        matches still gets a short explanation; the score counts them all.
    """

    name = "patterns"

    def __init__(self, packs: list[str] | tuple[str, ...] = DEFAULT_PACKS, max_reasons: int = 5) -> None:
        if isinstance(packs, str) or not all(isinstance(p, (str, Path)) for p in packs) or not packs:
            raise ValueError(f"packs = {packs!r} must be a non-empty list of rule pack names or paths")
        if isinstance(max_reasons, bool) or not isinstance(max_reasons, int) or max_reasons < 1:
            raise ValueError(f"max_reasons = {max_reasons!r} must be a positive integer")
        self.packs = [str(p) for p in packs]
        self.max_reasons = max_reasons
        self._rules: list[Rule] = []
        self._mixed: list[MixedScriptPack] = []
        for pack in self.packs:
            path, data = load_rule_pack(pack)
            if "mix" in data:
                self._mixed.append(_compile_mixed(path, data))
            elif "token" in data:
                self._rules += _compile_tokens(path, data)
            elif "rule" in data:
                self._rules += _compile_rules(path, data)
            else:
                raise PolicyError(f"{path}: a rule pack needs [[mix]], [[token]] or [[rule]] entries")
        self._rule_words = distinct(np.array(
            [word for rule in self._rules for slot in rule.words or () for phrase in slot for word in phrase],
            dtype=np.uint64))

    def candidates(self, batch: Batch) -> list[np.ndarray]:
        """For each rule, the positions of the records that may match it; then, for the mixed-script
        packs, those with a letter of a foreign script. The exact regexes run on those alone.

        Found for the whole batch from its shared words (one lookup of every word against the words
        the rules need) and, for rules without required words, RE2 passes (Arrow's vectorised regex).
        """
        n = batch.num_rows
        words = batch.words
        hit = np.flatnonzero(members(words.hashes, self._rule_words))
        hit_owner, hit_words = words.owner[hit], words.hashes[hit]
        array = None
        ascii_rows = unlike = None
        if any(rule.words is not None for rule in self._rules):
            array = _strings(batch)
            ascii_rows = _ascii_rows(array)
            unlike = np.zeros(n, dtype=bool)
            others = np.flatnonzero(~ascii_rows)
            if len(others):
                unlike[others] = _matches(array.take(pa.array(others)), _UNLIKE_WORDS, ignore_case=False)
        found = []
        for rule in self._rules:
            if rule.words is not None:
                holds = np.ones(n, dtype=bool)
                for slot in rule.words:
                    filled = np.zeros(n, dtype=bool)
                    for alternative in slot:  # every word of one alternative (a phrase) in the record
                        has = np.ones(n, dtype=bool)
                        for word in alternative:
                            has &= np.bincount(hit_owner[hit_words == word], minlength=n) > 0
                        filled |= has
                    holds &= filled
                if rule.near and holds.any() and ascii_rows is not None:
                    near = holds & ascii_rows
                    for pair in rule.near:  # every pair of neighbouring slots must come close
                        near &= pair.records(words, among=near)
                    holds &= near | ~ascii_rows
                if unlike is not None:
                    holds |= unlike
                found.append(np.flatnonzero(holds))
            elif rule.loose is not None:
                array = array if array is not None else _strings(batch)
                found.append(np.flatnonzero(_matches(array, rule.loose)))
            else:
                found.append(np.arange(n))
        foreign = np.zeros(0, dtype=np.int64)
        if self._mixed:
            # a mixed-script word has a non-ASCII letter: only such records are searched for one
            non_ascii = np.flatnonzero(np.bincount(words.owner[~words.ascii], minlength=n) > 0)
            if len(non_ascii):
                array = array if array is not None else _strings(batch)
                subset = array.take(pa.array(non_ascii))
                hits = np.zeros(len(non_ascii), dtype=bool)
                for pack in self._mixed:
                    hits |= _matches(subset, pack.foreign_re2) if pack.foreign_re2 else True
                foreign = non_ascii[hits]
        return found + [foreign]

    def score(self, batch: Batch) -> StageResult:
        n = batch.num_rows
        scores = np.zeros(n)
        reasons: list[list[str]] = [[] for _ in range(n)]
        if not n:
            return StageResult(scores, reasons)
        *by_rule, foreign = self.candidates(batch)
        found: dict[int, list[tuple[str, float]]] = {}
        checked = np.unique(np.concatenate([np.zeros(0, dtype=np.int64), foreign, *by_rule]))
        texts = dict(zip(checked.tolist(), _strings(batch).take(pa.array(checked)).to_pylist())) if len(checked) \
            else {}
        for rule, rows in zip(self._rules, by_rule):
            for i in rows.tolist():
                if rule.pattern.search(texts[i] or ""):
                    found.setdefault(i, []).append((rule.reason, rule.weight))
        for i in foreign.tolist():
            for pack in self._mixed:
                found.setdefault(i, []).extend(_mixed_script_words(texts[i] or "", pack))
        for i, hits in found.items():
            if hits:
                hits.sort(key=lambda item: -item[1])
                keep = float(np.prod([1.0 - weight for _, weight in hits]))
                # rounded so that one rule of weight w scores exactly w against a threshold of w
                scores[i] = round(1.0 - keep, 9)
                reasons[i] = [reason for reason, _ in hits[: self.max_reasons]]
        return StageResult(scores, reasons)

    def matches(self, text: str) -> list[tuple[str, float]]:
        """``(reason code, weight)`` of every rule ``text`` matches, strongest first."""
        found: list[tuple[str, float]] = []
        if not text.isascii():
            for pack in self._mixed:
                found += _mixed_script_words(text, pack)
        for rule in self._rules:
            match = rule.pattern.search(text)
            if match:
                found.append((rule.reason, rule.weight))
        return sorted(found, key=lambda item: -item[1])


def _mixed_script_words(text: str, pack: MixedScriptPack) -> list[tuple[str, float]]:
    if not pack.foreign.search(text):
        return []
    found: list[tuple[str, float]] = []
    seen: set[str] = set()
    latin_share: float | None = None
    for word in _WORD.findall(text):
        if word in seen or not pack.foreign.search(word):
            continue
        seen.add(word)
        hit = _mixed_word(word, pack)
        if hit is None and pack.whole_word is not None:
            if latin_share is None:
                letters = len(_LETTER.findall(text))
                latin_share = len(_LATIN_LETTER.findall(text)) / letters if letters else 0.0
            hit = _lookalike_word(word, pack, latin_share)
        if hit is not None:
            found.append(hit)
    return found


def _mixed_word(word: str, pack: MixedScriptPack) -> tuple[str, float] | None:
    for mix in pack.mixes:
        first, second = (letters.findall(word) for letters in mix.letters)
        if not first or not second:
            continue
        minority = first if len(first) < len(second) else second
        lookalike = all(char in pack.lookalikes for char in minority)
        weight = mix.weight if lookalike else mix.weight_other
        return f"trigger:mixed-script,rule={mix.name},word={short_form(word)}", weight
    return None


def _lookalike_word(word: str, pack: MixedScriptPack, latin_share: float) -> tuple[str, float] | None:
    rule = pack.whole_word
    assert rule is not None, "called only for a pack with a whole-word rule"
    letters = _LETTER.findall(word)
    if len(letters) < rule.min_letters or latin_share < rule.min_latin_share:
        return None
    if all(char in pack.lookalikes and rule.letters.match(char) for char in letters):
        return f"trigger:mixed-script,rule={rule.name},word={short_form(word)}", rule.weight
    return None


def short_form(word: str) -> str:
    """A word as ASCII a person can read: non-ASCII letters as ``[U+0430]``, cut to a bounded length."""
    out = "".join(char if char.isascii() else f"[U+{ord(char):04X}]" for char in word)
    return out if len(out) <= _SHORT_FORM_LENGTH else out[: _SHORT_FORM_LENGTH - 3] + "..."


def _weight(value: Any, where: str, key: str = "weight") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise PolicyError(f"{where}: {key} = {value!r} must be a number in (0, 1]")
    return float(value)


def _check_keys(entry: dict[str, Any], known: tuple[str, ...], where: str) -> None:
    unknown = sorted(set(entry) - set(known))
    if unknown:
        raise PolicyError(f"{where}: unknown key {unknown[0]!r}; known keys: {', '.join(known)}")


def _script_letters(script: str, where: str) -> regex.Pattern:
    try:
        return regex.compile(rf"\p{{Script={script}}}")
    except regex.error:
        raise PolicyError(f"{where}: {script!r} is not a Unicode script name (Latin, Cyrillic, Greek, ...)") from None


def _compile_mixed(path: Path, data: dict[str, Any]) -> MixedScriptPack:
    mixes = []
    foreign_scripts: set[str] = set()
    for index, entry in enumerate(data["mix"]):
        where = f"{path}: mix {index + 1}"
        _check_keys(entry, ("name", "scripts", "weight", "weight_other"), where)
        scripts = entry.get("scripts")
        if not isinstance(scripts, list) or len(scripts) != 2 or not all(isinstance(s, str) for s in scripts):
            raise PolicyError(f"{where}: scripts = {scripts!r} must name two Unicode scripts")
        letters = (_script_letters(scripts[0], where), _script_letters(scripts[1], where))
        weight = _weight(entry.get("weight"), where)
        weight_other = _weight(entry.get("weight_other", weight), where, "weight_other")
        mixes.append(ScriptMix(str(entry.get("name") or "-".join(scripts).lower()), tuple(scripts), weight,
                               weight_other, letters))
        foreign_scripts.update(s for s in scripts if s != "Latin")
    lookalikes = data.get("lookalikes", {})
    if not isinstance(lookalikes, dict) or not all(isinstance(v, str) for v in lookalikes.values()):
        raise PolicyError(f"{path}: [lookalikes] maps a script name to a string of letters")
    whole_word = None
    if "whole_word" in data:
        entry, where = data["whole_word"], f"{path}: [whole_word]"
        _check_keys(entry, ("name", "weight", "min_letters", "min_latin_share", "scripts"), where)
        scripts = entry.get("scripts", sorted(foreign_scripts))
        if not isinstance(scripts, list) or not all(isinstance(s, str) for s in scripts):
            raise PolicyError(f"{where}: scripts = {scripts!r} must be a list of Unicode script names")
        for script in scripts:
            _script_letters(script, where)
        min_letters = entry.get("min_letters", 3)
        share = entry.get("min_latin_share", 0.8)
        if isinstance(min_letters, bool) or not isinstance(min_letters, int) or min_letters < 1:
            raise PolicyError(f"{where}: min_letters = {min_letters!r} must be a positive integer")
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 <= share <= 1:
            raise PolicyError(f"{where}: min_latin_share = {share!r} must be a number in [0, 1]")
        letters = regex.compile("|".join(rf"\p{{Script={s}}}" for s in scripts) or r"(?!)")
        whole_word = WholeWord(str(entry.get("name", "lookalike-word")), _weight(entry.get("weight"), where),
                               min_letters, float(share), letters)
    foreign = regex.compile("|".join(rf"\p{{Script={s}}}" for s in sorted(foreign_scripts)) or r"(?!)")
    foreign_re2 = "|".join(rf"\p{{{s}}}" for s in sorted(foreign_scripts)) or None
    return MixedScriptPack(tuple(mixes), frozenset("".join(lookalikes.values())), whole_word, foreign,
                           foreign_re2)


def _compile_tokens(path: Path, data: dict[str, Any]) -> list[Rule]:
    rules = []
    for index, entry in enumerate(data["token"]):
        where = f"{path}: token {index + 1}"
        _check_keys(entry, ("name", "text", "weight", "case_sensitive", "source"), where)
        texts = entry.get("text")
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t for t in texts):
            raise PolicyError(f"{where}: text = {texts!r} must be a non-empty list of strings")
        flags = 0 if entry.get("case_sensitive", False) else regex.IGNORECASE
        weight = _weight(entry.get("weight"), where)
        for text in texts:
            pattern = regex.compile(rf"(?<![\w]){regex.escape(text)}(?![\w])", flags)
            rules.append(Rule(f"trigger:token={text}", weight, pattern, re.escape(text), _token_words(text)))
    return rules


def _compile_rules(path: Path, data: dict[str, Any]) -> list[Rule]:
    rules = []
    for index, entry in enumerate(data["rule"]):
        where = f"{path}: rule {index + 1}"
        _check_keys(entry, ("name", "weight", "sequence", "gap", "pattern"), where)
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise PolicyError(f"{where}: name must be a non-empty string")
        if ("sequence" in entry) == ("pattern" in entry):
            raise PolicyError(f"{where}: give either a sequence or a pattern")
        near = None
        if "pattern" in entry:
            try:
                pattern = regex.compile(entry["pattern"], regex.IGNORECASE)
            except regex.error as error:
                raise PolicyError(f"{where}: pattern is not a valid regular expression: {error}") from None
            # RE2's \w and \b are ASCII-only: such a pattern could miss what the exact one finds
            ascii_only = any(token in entry["pattern"] for token in ("\\w", "\\W", "\\b", "\\B"))
            loose = entry["pattern"] if not ascii_only and _re2_accepts(entry["pattern"]) else None
        else:
            gap = entry.get("gap", 3)
            if isinstance(gap, bool) or not isinstance(gap, int) or gap < 0:
                raise PolicyError(f"{where}: gap = {gap!r} must be a non-negative integer")
            exact = sequence_pattern(entry["sequence"], gap, where)
            pattern = regex.compile(exact, regex.IGNORECASE)
            loose = _unicode_words(exact.removeprefix(_NOT_AFTER_WORD).removesuffix(_NOT_BEFORE_WORD))
            loose = loose if _re2_accepts(loose) else None
            required = tuple(slot for slot in map(_slot_words, entry["sequence"]) if slot is not None)
            near = sequence_pairs(entry["sequence"], gap)
        rules.append(Rule(f"trigger:prompt-injection,rule={name}", _weight(entry.get("weight"), where), pattern,
                          loose, required if "pattern" not in entry and required else None,
                          near))
    return rules


def sequence_pattern(slots: Any, gap: int, where: str = "sequence") -> str:
    """A regex for ``slots`` in order, each a list of alternative words or phrases, ``gap`` words apart."""
    if not isinstance(slots, list) or not slots:
        raise PolicyError(f"{where}: sequence must be a non-empty list of slots")
    parts = []
    for slot in slots:
        if not isinstance(slot, list) or not slot or not all(isinstance(s, str) and s.strip() for s in slot):
            raise PolicyError(f"{where}: each slot of a sequence is a non-empty list of words or phrases")
        parts.append("(?:" + "|".join(_phrase(item) for item in slot) + ")")
    between = rf"(?:\W+\w+){{0,{gap}}}\W+"
    return _NOT_AFTER_WORD + between.join(parts) + _NOT_BEFORE_WORD


# Characters the rules' regexes and the shared words see differently, so that a record's words can miss
# a word the regex finds: other numbers (a superscript "²" is part of a word, not a \W), and the letters
# that match an ASCII letter when case is ignored (dotted capital I, long s, Kelvin sign). Records with
# one skip the word prefilter. (Checked on every code point with the regex module's tables.)
_UNLIKE_WORDS = r"[\p{No}\x{0130}\x{017F}\x{212A}]"
_NOT_AFTER_WORD = r"(?<!\w)"
_NOT_BEFORE_WORD = r"(?!\w)"


def _strings(batch: Batch) -> pa.Array:
    content = batch.content_array()
    array = content if isinstance(content, pa.Array) else pa.array(content, pa.large_string())
    return array.dictionary_decode() if pa.types.is_dictionary(array.type) else array


def _ascii_rows(array: pa.Array) -> np.ndarray:
    """Per record, whether its text is ASCII only (null texts count as ASCII: they hold no word)."""
    return pc.fill_null(pc.string_is_ascii(array), True).to_numpy(zero_copy_only=False)


def _matches(array: pa.Array, pattern: str, ignore_case: bool = True) -> np.ndarray:
    return pc.fill_null(pc.match_substring_regex(array, pattern, ignore_case=ignore_case), False).to_numpy(
        zero_copy_only=False)


def _slot_words(alternatives: list[str]) -> tuple[tuple[int, ...], ...] | None:
    """Each alternative of a slot as the hashes of the words a record must hold for it to fill the slot
    (a wildcard word requires nothing); None when some alternative requires no word at all."""
    found = []
    for item in alternatives:
        required = [word_hash(w.encode("utf-8")) for part in item.split() if not part.endswith("*")
                    for w in words_of(part)]
        if not required:
            return None
        found.append(tuple(required))
    return tuple(found)


def _token_words(text: str) -> tuple[tuple[tuple[int, ...], ...], ...] | None:
    """Every word of a trigger string, each a slot of its own; None for a string without words."""
    words = words_of(text)
    return tuple(((word_hash(w.encode("utf-8")),),) for w in words) or None


def _unicode_words(pattern: str) -> str:
    """``pattern`` with \\w and \\W spelled as Unicode classes: RE2's own are ASCII-only, the regex module's not."""
    return pattern.replace("\\W", "[^\\pL\\pM\\pN_]").replace("\\w", "[\\pL\\pM\\pN_]")


def _re2_accepts(pattern: str) -> bool:
    """Whether Arrow's RE2 engine compiles ``pattern`` (no lookarounds, no backreferences)."""
    try:
        pc.match_substring_regex(pa.array([""]), pattern)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return False
    return True


def _phrase(item: str) -> str:
    words = []
    for word in item.split():
        wildcard = word.endswith("*")
        word = regex.escape(word.rstrip("*"))
        words.append(word + (r"\w*" if wildcard else ""))
    return r"\s+".join(words)
