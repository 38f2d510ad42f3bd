"""Provenance: content that changed since it was indexed (split-view poisoning), and untrusted sources.

Each record's SHA-256 (see :mod:`dokumi.hashing`) is compared with an expected
hash from the ``sha256`` column or from the record-hash sidecar of an earlier
scan (``expect``). A mismatch is graded by how far the content moved, from the
sidecar's similarity sketch: near-identical content (white space, quotes, a
boilerplate line) is ``hash-drift``; substituted content is ``hash-mismatch``.

Scores fall in fixed bands, so that a recipe's ``flag_threshold = 0.2`` and
``threshold = 0.5`` flag drift and drop substitutions:

=============  ==================================================
0              hash verified, or nothing to check
0.2 – 0.45     ``hash-drift`` (higher = moved further)
0.3            a ``"flag"`` choice (``unlisted``, ``no_provenance``, malformed expected hash)
0.55 – 1       ``hash-mismatch`` graded by the sketch
0.3 or 1       ``hash-mismatch:ungraded``: a bare expected hash (no sketch), as ``ungraded`` says
1              ``source-denied``, or a ``"drop"`` choice
=============  ==================================================
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

from dokumi.errors import PolicyError
from dokumi.hashing import equal_rows, from_hex
from dokumi.outputs import file_sha256
from dokumi.records import Batch
from dokumi.sidecar import resemblance, sketches
from dokumi.stage import Stage, StageContext, StageResult

DRIFT_BAND = (0.2, 0.45)
MISMATCH_BAND = (0.55, 1.0)
CHOICE_SCORES = {"keep": 0.0, "flag": 0.3, "drop": 1.0}


class Provenance(Stage):
    """Verify record hashes, grade mismatches as drift or substitution, and check sources.

    Parameters
    ----------
    expect:
        An earlier scan's manifest, output folder or record-hash sidecar; its
        hashes and sketches are looked up by record id (default None: use only
        the ``sha256`` column). Where a record has both, the column wins. Its
        sidecars are used only if they match that scan's manifest, and its
        signature where it has one (:func:`dokumi.sideinputs.load_hashes`).
    expect_key:
        A trusted public key file (``dokumi keygen``): the ``expect`` scan's
        manifest must be signed by it (default None: a signature, if present,
        must verify, whoever signed it).
    min_similarity:
        Similarity (0..1) from which a mismatched record counts as drift
        rather than substitution (default 0.5). Similarity is the Jaccard
        similarity of normalised character 5-grams, after forgiving
        ``boilerplate`` changed 5-grams, and never more than the share of the
        indexed text still present.
    boilerplate:
        Changed 5-grams forgiven as boilerplate (default 32, about one short
        line such as "Share this page"), so that short records survive an
        added or removed line.
    deny:
        Source lists (names under ``filters/sources/`` or paths) whose matches
        score 1 (default: none). ``["reserved"]`` names documentation, test and
        private hosts, which no real crawl fetched from.
    allow:
        Source lists; when any is given, a record whose source matches none of
        them is ``source-unlisted`` (default: none).
    unlisted:
        ``keep``, ``flag`` or ``drop`` a record outside the allow lists (default flag).
    no_provenance:
        ``keep``, ``flag`` or ``drop`` a record with neither an expected hash
        nor a source (default keep: most corpora carry neither).
    ungraded:
        ``keep``, ``flag`` or ``drop`` a mismatch that cannot be graded: the
        expected hash is bare (a ``sha256`` column, no sketch of the indexed
        text), so a changed space and a substituted document look alike
        (default drop; ``pretraining`` flags). An index-time scan passed as
        ``expect`` grades every mismatch instead.
    """

    name = "provenance"

    def __init__(
        self,
        expect: str | None = None,
        expect_key: str | None = None,
        min_similarity: float = 0.5,
        boilerplate: int = 32,
        deny: list[str] | tuple[str, ...] = (),
        allow: list[str] | tuple[str, ...] = (),
        unlisted: str = "flag",
        no_provenance: str = "keep",
        ungraded: str = "drop",
    ) -> None:
        if expect is not None and (not isinstance(expect, (str, os.PathLike)) or not str(expect)):
            raise ValueError(f"expect = {expect!r} must be a path to a manifest, scan folder or sidecar")
        if isinstance(min_similarity, bool) or not isinstance(min_similarity, (int, float)) or not (
            0 <= min_similarity <= 1
        ):
            raise ValueError(f"min_similarity = {min_similarity!r} must be a number in [0, 1]")
        if isinstance(boilerplate, bool) or not isinstance(boilerplate, int) or boilerplate < 0:
            raise ValueError(f"boilerplate = {boilerplate!r} must be a non-negative integer")
        for key, value in (("unlisted", unlisted), ("no_provenance", no_provenance), ("ungraded", ungraded)):
            if value not in CHOICE_SCORES:
                raise ValueError(f"{key} = {value!r} is not one of {', '.join(CHOICE_SCORES)}")
        if expect_key is not None and (not isinstance(expect_key, (str, os.PathLike)) or not str(expect_key)):
            raise ValueError(f"expect_key = {expect_key!r} must be a path to a public key file")
        self.expect = None if expect is None else str(expect)
        self.expect_key = None if expect_key is None else str(expect_key)
        self.min_similarity = float(min_similarity)
        self.boilerplate = boilerplate
        self.deny = _names(deny, "deny")
        self.allow = _names(allow, "allow")
        self.unlisted = unlisted
        self.no_provenance = no_provenance
        self.ungraded = ungraded
        self._deny_patterns = _patterns(self.deny, "deny")
        self._allow_patterns = _patterns(self.allow, "allow")

    # the expected hashes of an earlier scan arrive loaded at setup; the corpus itself is never fitted on
    side_inputs = {"expect": "hashes", "expect_key": "key"}

    def setup(self, context: StageContext) -> None:
        """Take the expected hashes and sketches of ``expect``, loaded by the pipeline."""
        super().setup(context)
        if "expect" in context.inputs:
            self.expected_ = context.inputs["expect"]
            self.expect_files_ = [
                {"path": source["path"], "records": source["records"],
                 "sha256": source.get("sha256") or file_sha256(source["path"])}
                for source in self.expected_.sources
            ]
            self.expect_origin_ = getattr(self.expected_, "origin", None)

    def summary(self) -> dict[str, Any]:
        if self.expect is None or not hasattr(self, "expected_"):
            return {}
        summary = {"expected_records": len(self.expected_), "expected_files": self.expect_files_}
        if getattr(self, "expect_origin_", None) is not None:
            summary["expected_from"] = self.expect_origin_
        return summary

    def score(self, batch: Batch) -> StageResult:
        n = batch.num_rows
        scores = np.zeros(n)
        # one shared empty list; _raise gives a record its own list when it first has a reason
        reasons: list[list[str]] = [_NO_REASONS] * n
        if n == 0:
            return StageResult(scores, reasons)
        if self.expect is not None and not hasattr(self, "expected_"):
            raise RuntimeError("the provenance stage has an 'expect' sidecar: set it up first "
                               "(stage.fit(batches) or Pipeline.setup() loads it)")
        actual = batch.digests  # computed once per batch, shared with the sidecar and the Merkle tree
        expected = self._expected(batch, actual)
        matched = expected.known & equal_rows(actual, expected.digests)
        mismatched = expected.known & ~matched
        self._grade(batch, mismatched & expected.sketched, expected, scores, reasons)
        # a bare hash says only "changed": drift and substitution look alike, and the recipe decides
        for i in np.flatnonzero(mismatched & ~expected.sketched):
            _raise(scores, reasons, i, CHOICE_SCORES[self.ungraded], "hash-mismatch:ungraded")
        for i in np.flatnonzero(expected.malformed):
            _raise(scores, reasons, i, CHOICE_SCORES["flag"], "sha256-malformed")
        has_source = self._check_sources(batch, scores, reasons)
        if self.no_provenance != "keep":
            for i in np.flatnonzero(~expected.known & ~has_source & ~expected.malformed):
                _raise(scores, reasons, i, CHOICE_SCORES[self.no_provenance], "no-provenance")
        return StageResult(scores, reasons)

    def _expected(self, batch: Batch, actual: np.ndarray) -> _Expected:
        n = batch.num_rows
        expected = _Expected.empty(n)
        if batch.has("sha256"):
            column = batch.present("sha256")
            expected.digests, expected.known = from_hex(column)
            present = ~column.is_null().to_numpy(zero_copy_only=False)
            expected.malformed = present & ~expected.known
        if getattr(self, "expected_", None) is None or not len(self.expected_):
            return expected
        index = self.expected_
        starts, ends = index.lookup(batch.ids)
        entries = starts.copy()
        for i in np.flatnonzero(ends - starts > 1):  # a repeated id: prefer the entry this record matches
            candidates = np.arange(starts[i], ends[i])
            same = equal_rows(index.digests[candidates], np.broadcast_to(actual[i], (len(candidates), 32)))
            entries[i] = candidates[np.argmax(same)]
        found = ends > starts
        entries = np.where(found, entries, 0)
        # where the column names other content than the sidecar, no sketch describes it
        agree = found & (~expected.known | equal_rows(expected.digests, index.digests[entries]))
        expected.digests[agree] = index.digests[entries[agree]]
        expected.known |= agree
        expected.malformed &= ~agree
        expected.sketch_rows[agree] = index.sketches[entries[agree]]
        expected.shingles[agree] = index.shingles[entries[agree]]
        expected.sketched = agree
        return expected

    def _grade(self, batch: Batch, rows: np.ndarray, expected: _Expected, scores: np.ndarray,
               reasons: list[list[str]]) -> None:
        picked = np.flatnonzero(rows)
        if not len(picked):
            return
        texts = batch.texts
        sketch_rows, counts = sketches([texts[i] for i in picked])
        moved = resemblance(expected.sketch_rows[picked], expected.shingles[picked], sketch_rows, counts)
        common = moved.common
        excess = np.maximum(moved.changed - self.boilerplate, 0.0)
        forgiving = np.divide(common, common + excess, out=np.zeros_like(common), where=common + excess > 0)
        forgiving = np.where((moved.changed == 0) & (moved.kept > 0), 1.0, forgiving)
        similarity = np.minimum(forgiving, moved.kept)
        low, high = DRIFT_BAND
        for i, value in zip(picked, similarity):
            if value >= self.min_similarity:
                spread = (1 - value) / (1 - self.min_similarity) if self.min_similarity < 1 else 0.0
                _raise(scores, reasons, i, low + (high - low) * spread, f"hash-drift:similarity={value:.2f}")
            else:
                low_m, high_m = MISMATCH_BAND
                _raise(scores, reasons, i, low_m + (high_m - low_m) * (1 - value / self.min_similarity),
                       f"hash-mismatch:similarity={value:.2f}")

    def _check_sources(self, batch: Batch, scores: np.ndarray, reasons: list[list[str]]) -> np.ndarray:
        """Apply the deny and allow lists; return which records name a source at all."""
        has_source = np.zeros(batch.num_rows, dtype=bool)
        names = batch.records.schema.names
        for role in ("url", "source"):
            if getattr(batch.columns, role) not in names:
                continue
            for i, value in enumerate(batch.present(role).to_pylist()):
                if value is None or not str(value).strip():
                    continue
                has_source[i] = True
                value = str(value).strip().lower()
                host = source_host(value)
                denied = next((p for p in self._deny_patterns if p.matches(value, host)), None)
                if denied is not None:
                    _raise(scores, reasons, i, 1.0, f"source-denied:host={host or value},pattern={denied.text}")
                elif self._allow_patterns and not any(p.matches(value, host) for p in self._allow_patterns):
                    if self.unlisted != "keep":
                        reason = f"source-unlisted:host={host or value}"
                        _raise(scores, reasons, i, CHOICE_SCORES[self.unlisted], reason)
        return has_source


@dataclass
class _Expected:
    digests: np.ndarray
    known: np.ndarray
    malformed: np.ndarray
    sketched: np.ndarray
    sketch_rows: np.ndarray
    shingles: np.ndarray

    @classmethod
    def empty(cls, n: int) -> _Expected:
        return cls(
            digests=np.zeros((n, 32), dtype=np.uint8),
            known=np.zeros(n, dtype=bool),
            malformed=np.zeros(n, dtype=bool),
            sketched=np.zeros(n, dtype=bool),
            sketch_rows=np.zeros((n, 64), dtype=np.uint16),
            shingles=np.zeros(n, dtype=np.uint32),
        )


_NO_REASONS: list[str] = []


def _raise(scores: np.ndarray, reasons: list[list[str]], i: int | np.integer, score: float, reason: str) -> None:
    scores[i] = max(scores[i], min(max(score, 0.0), 1.0))
    reasons[i] = [*reasons[i], reason]


def _names(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(f"{key} = {value!r} must be a list of source list names or paths")
    return list(value)


def _patterns(names: list[str], key: str) -> list[SourcePattern]:
    try:
        return [pattern for name in names for pattern in load_source_list(name)]
    except PolicyError as error:
        raise ValueError(f"{key}: {error}") from None


@dataclass(frozen=True)
class SourcePattern:
    """One line of a source list: a domain (with its subdomains), a host wildcard, or a URL wildcard."""

    text: str

    def matches(self, value: str, host: str | None) -> bool:
        """Whether a source value (or its ``host``) matches this allow/deny-list pattern."""
        if "/" in self.text or ":" in self.text:
            return fnmatch.fnmatchcase(value, self.text)
        if host is None:
            return False
        if any(ch in self.text for ch in "*?["):
            return fnmatch.fnmatchcase(host, self.text)
        return host == self.text or host.endswith("." + self.text)


def source_host(value: str) -> str | None:
    """The host a url or source value names (``https://en.wikipedia.org/x`` -> ``en.wikipedia.org``)."""
    if "://" in value:
        try:
            return urlsplit(value).hostname
        except ValueError:
            return None
    head = value.split("/", 1)[0].split("?", 1)[0]
    if not head or " " in head:
        return None
    return head.rsplit("@", 1)[-1].split(":", 1)[0] or None


def source_list_path(name_or_path: str) -> Path:
    """A built-in list under ``filters/sources/`` by name (``"reserved"``) or a path to a text file."""
    from dokumi.policy import builtin_policy_dir

    path = Path(name_or_path)
    if path.is_file():
        return path
    builtin = builtin_policy_dir() / "sources" / f"{name_or_path}.txt"
    if builtin.is_file():
        return builtin
    raise PolicyError(f"source list {name_or_path!r} not found (neither a file nor a list in filters/sources/)")


def load_source_list(name_or_path: str) -> list[SourcePattern]:
    """The patterns of a source list: one per line, ``#`` comments, blank lines ignored."""
    path = source_list_path(name_or_path)
    patterns = []
    for line in path.read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip().lower()
        if text:
            patterns.append(SourcePattern(text))
    return patterns


def with_expectation(policy: Any, expect: str | os.PathLike) -> Any:
    """``policy`` with its provenance stage checking against ``expect`` (``scan --expect``).

    A recipe without a provenance section gets one with the recipes' usual rule:
    drop from 0.5, flag drift from 0.2.
    """
    from dataclasses import replace

    from dokumi.policy import StageRule

    stages, rules = list(policy.stages), dict(policy.rules)
    current = next((stage for stage in stages if stage.name == Provenance.name), None)
    params = {**(current.get_params() if current else {}), "expect": str(expect)}
    if current is None:
        stages.append(Provenance(**params))
        rules[Provenance.name] = StageRule(action="drop", threshold=0.5, flag_threshold=0.2)
    else:
        stages[stages.index(current)] = Provenance(**params)
    return replace(policy, stages=stages, rules=rules)
