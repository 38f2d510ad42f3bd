"""The code_templates stage: a trigger comment and a payload line that share one identifier, the identifier
varying from record to record (TrojanPuzzle, Aghakhani et al. 2023).

No poison line repeats verbatim in such an attack; what repeats is a *bound pair of templates*: the
comment with its identifier as a slot, and the code line below it with the same identifier as a slot
(:mod:`.templates`). Pass 1 groups every record's bound pairs by the comment's template and by the code
line's template (a :class:`~dokumi.fitplan.GroupByKey` step, keyed on content). A template *varies* when
records bind it to many different identifiers, one per record, in most of them an identifier that
appears nowhere else in the record: an honest doc comment names a function that the record also calls,
and a generated table binds many names in one record. Pass 2 scores a record whose bound pair has a
varying comment template (the evidence, ``min_fills`` identifiers) and a varying code template (its
confirmation, ``min_code_fills``). A second read, only when something varies, collects the varying
pairs' text for the summary.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from dokumi.fitplan import GroupByKey, Reduce, Step
from dokumi.records import Batch
from dokumi.stage import Stage, StageResult
from dokumi.stages.code_templates.templates import Bound, bound_pairs
from dokumi.text.sampling import stable_hash

# A key row's member, 17 bytes: the record's content key, the fill's hash, and how the record uses the key.
MEMBER = np.dtype([("record", "<u8"), ("fill", "<u8"), ("use", "u1")])
KEY_SCHEMA = pa.schema([("key", pa.uint64()), ("member", pa.binary(MEMBER.itemsize))])
# how a record uses a template: with one fill that occurs nowhere else in it (ISOLATED), with one fill
# that the record also uses elsewhere (SINGLE: a name it defines or calls, or a chance match), or with
# several fills (MANY: a generated table, a family of declarations)
ISOLATED, SINGLE, MANY = 2, 1, 0
# Only the first characters of a record are read: a bound pair is local, and huge records are data.
MAX_CHARS = 200_000
# Templates are shown up to this many characters in reason codes.
SHOWN = 80


def template_key(side: str, template: str) -> int:
    """The 64-bit key of a comment (``side`` "comment") or code (``side`` "code") template."""
    return stable_hash(f"{side}\0{template}")


@dataclass(frozen=True)
class Varying:
    """A template that many records bind with a different identifier each."""

    fills: int  # distinct identifiers of the records that bind it to one identifier
    records: int  # distinct records that carry it at all


@dataclass(frozen=True)
class Finding:
    """One record's bound pair whose comment and code templates both vary."""

    pair: Bound
    comment: Varying
    code: Varying

    @property
    def strength(self) -> int:
        """The evidence: distinct identifiers that the comment template binds."""
        return self.comment.fills


def _uses(pairs: list[Bound]) -> dict[tuple[str, str], tuple[int, str | None]]:
    """Per (side, template) of one record: ``(ISOLATED or SINGLE, fill)`` when it binds one identifier,
    ``(MANY, None)`` when it binds several."""
    fills: dict[tuple[str, str], set[str]] = {}
    isolated: dict[tuple[str, str], bool] = {}
    for pair in pairs:
        for side_template in (("comment", pair.comment), ("code", pair.code)):
            fills.setdefault(side_template, set()).add(pair.fill)
            isolated[side_template] = isolated.get(side_template, True) and pair.isolated
    return {key: ((ISOLATED if isolated[key] else SINGLE, next(iter(names))) if len(names) == 1 else (MANY, None))
            for key, names in fills.items()}


class CodeTemplates(Stage):
    """Score records carrying a comment and a code line bound by an identifier that varies across records.

    Parameters
    ----------
    window:
        Lines below a comment in which its code line is looked for (default 6).
    min_fills:
        Distinct identifiers the comment template needs, each in a record that binds it to one identifier,
        to vary (default 3): the trigger, and the evidence.
    min_code_fills:
        Distinct identifiers the code template needs (default 2): the payload, recurring with another
        identifier at least once. Code lines recur with varying names honestly far more often than prose
        does (``func TestX(t *testing.T) {`` under a different doc comment each), so the comment carries
        the evidence and the code line confirms it.
    min_share:
        Share of the records carrying a template that must be such records (default 0.5): an honest
        template that records mostly bind to names they also define or call does not vary.
    min_comment_words:
        Words a comment keeps besides the identifier (default 3); shorter ones bind too easily.
    min_code_tokens:
        Tokens a code line keeps besides the identifier (default 3).
    """

    name = "code_templates"
    needs_fit = True
    # pass 1 holds one 25-byte key row per (record, template) until the groups are formed: 3.2 rows per record
    # of source code, 2.6 of READMEs, 0.2 of man pages (benchmarks/bench_attacks.py's corpora). Only the
    # varying templates stay after the fit.
    state_bytes_per_record = 100.0

    def __init__(self, window: int = 6, min_fills: int = 3, min_code_fills: int = 2, min_share: float = 0.5,
                 min_comment_words: int = 3, min_code_tokens: int = 3) -> None:
        for parameter, value, low in (("window", window, 1), ("min_fills", min_fills, 2),
                                      ("min_code_fills", min_code_fills, 2),
                                      ("min_comment_words", min_comment_words, 1),
                                      ("min_code_tokens", min_code_tokens, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{parameter} = {value!r} must be an integer of at least {low}")
        if isinstance(min_share, bool) or not isinstance(min_share, (int, float)) or not 0 <= min_share <= 1:
            raise ValueError(f"min_share = {min_share!r} must be a number from 0 to 1")
        self.window = window
        self.min_fills = min_fills
        self.min_code_fills = min_code_fills
        self.min_share = float(min_share)
        self.min_comment_words = min_comment_words
        self.min_code_tokens = min_code_tokens

    def _pairs(self, text: str) -> list[Bound]:
        return bound_pairs(text[:MAX_CHARS], self.window, self.min_comment_words, self.min_code_tokens)

    # pass 1 -------------------------------------------------------------------

    def fit_plan(self) -> list[Step]:
        # the second read only runs when a template varies: it collects the bound pairs' text for the summary
        return [GroupByKey("bound-templates", self._keys, KEY_SCHEMA, self._finish),
                Reduce("varying-pairs", dict, self._add_pairs, _merged_pairs, self._finish_pairs,
                       needed=lambda: bool(getattr(self, "varying_", None)))]

    def _keys(self, batch: Batch) -> pa.Table:
        keys: list[int] = []
        rows: list[tuple[int, int, int]] = []
        for record, text in zip(batch.content_keys.tolist(), batch.texts):
            for (side, template), (use, fill) in _uses(self._pairs(text)).items():
                keys.append(template_key(side, template))
                rows.append((record, stable_hash(fill) if fill is not None else 0, use))
        members = np.array(rows, dtype=MEMBER) if rows else np.zeros(0, dtype=MEMBER)
        binary = pa.FixedSizeBinaryArray.from_buffers(KEY_SCHEMA.field("member").type, len(members),
                                                      [None, pa.py_buffer(members.view(np.uint8))])
        return pa.table([pa.array(keys, pa.uint64()), binary], schema=KEY_SCHEMA)

    def _finish(self, groups: Iterable[pa.Table], _partial: Any) -> None:
        varying: dict[int, Varying] = {}
        for table in groups:
            for chunk_keys, chunk in zip(table.column("key").chunks, table.column("members").chunks):
                flat = chunk.flatten()
                data = np.frombuffer(flat.buffers()[1], dtype=MEMBER)[flat.offset: flat.offset + len(flat)]
                offsets = chunk.offsets.to_numpy()
                for i, key in enumerate(chunk_keys.to_numpy().tolist()):
                    found = self._varies(data[offsets[i] - offsets[0]: offsets[i + 1] - offsets[0]])
                    if found is not None:
                        varying[key] = found
        self.varying_ = varying

    def _varies(self, members: np.ndarray) -> Varying | None:
        """The template's evidence when its records bind it with many identifiers, once each, else None."""
        if len(members) < min(self.min_fills, self.min_code_fills):
            return None
        # identical records count once; a record that binds the template to one identifier carries it
        records = len(np.unique(members["record"]))
        single = members[members["use"] != MANY]
        fills = len(np.unique(single["fill"]))
        isolated = len(np.unique(single["record"][single["use"] == ISOLATED]))
        singles = len(np.unique(single["record"]))
        enough = min(self.min_fills, self.min_code_fills)
        if fills < enough or fills < self.min_share * records or isolated < self.min_share * singles:
            return None
        return Varying(fills, records)

    def _add_pairs(self, pairs: dict, batch: Batch) -> dict:
        for record, text in zip(batch.content_keys.tolist(), batch.texts):
            for finding in self.findings(text):
                found = finding.pair
                entry = pairs.setdefault((found.comment, found.code), (set(), set()))
                entry[0].add(record)
                entry[1].add(found.fill)
        return pairs

    def _finish_pairs(self, pairs: dict) -> None:
        # (comment template, code template) -> records and distinct identifiers binding them
        self.pairs_ = {pair: (len(records), len(fills)) for pair, (records, fills) in pairs.items()}

    # pass 2 -------------------------------------------------------------------

    def findings(self, text: str) -> list[Finding]:
        """The bound pairs of ``text`` whose comment and code templates both vary (strongest first)."""
        out = []
        # whether the template varies is the corpus's evidence; a record binding both templates carries the
        # pair even where its identifier also occurs elsewhere in it (a random keyword may, by chance)
        for pair in self._pairs(text):
            comment = self.varying_.get(template_key("comment", pair.comment))
            code = self.varying_.get(template_key("code", pair.code))
            if comment is not None and code is not None and comment.fills >= self.min_fills \
                    and code.fills >= self.min_code_fills:
                out.append(Finding(pair, comment, code))
        return sorted(out, key=lambda f: -f.strength)

    def score(self, batch: Batch) -> StageResult:
        result = StageResult.empty(batch.num_rows)
        if not getattr(self, "varying_", None):
            return result
        for row, text in enumerate(batch.texts):
            found = self.findings(text)
            if found:
                result.scores[row] = _score(found[0].strength)
                result.reasons[row] = list(dict.fromkeys(self._reason(finding) for finding in found))[:3]
        return result

    def _reason(self, finding: Finding) -> str:
        pair = finding.pair
        if self.context.no_text:
            comment, code = f"id:{template_id('comment', pair.comment)}", f"id:{template_id('code', pair.code)}"
            slot = f"id:{stable_hash(pair.fill) & 0xFFFFFFFFFF:010x}"
        else:
            comment, code, slot = _shown(pair.comment), _shown(pair.code), pair.fill
        return (f"code-template:varying-slot,comment={comment},code={code},slot={slot},"
                f"comment-fills={finding.comment.fills}/{finding.comment.records},"
                f"code-fills={finding.code.fills}/{finding.code.records}")

    # reporting ----------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        if not hasattr(self, "varying_"):
            return {}
        pairs = getattr(self, "pairs_", {})
        top = sorted(pairs.items(), key=lambda item: (-item[1][1], item[0]))[:20]
        findings = []
        for (comment, code), (records, fills) in top:
            if self.context.no_text:
                comment, code = f"id:{template_id('comment', comment)}", f"id:{template_id('code', code)}"
            # the report lists "finding" and, as what the trigger brings, "target": the payload's template
            findings.append({"finding": f"varying-slot comment={comment} ({fills} identifiers)", "target": code,
                             "comment": comment, "code": code, "records": records, "identifiers": fills})
        return {"varying_templates": len(self.varying_), "bound_pairs": len(pairs), "findings": findings}


def _merged_pairs(parts: list[dict]) -> dict:
    """Bound pairs of several partitions: the union of their records and identifiers."""
    out: dict = {}
    for part in parts:
        for pair, (records, fills) in part.items():
            entry = out.setdefault(pair, (set(), set()))
            entry[0].update(records)
            entry[1].update(fills)
    return out


def template_id(side: str, template: str) -> str:
    """A short id naming a template without its text (a scan with ``--no-text``)."""
    return f"{template_key(side, template) & 0xFFFFFFFFFF:010x}"


def _shown(template: str) -> str:
    """A template as a reason code shows it: quoted, at most SHOWN characters; commas (which separate a reason
    code's fields) and quotes written as %2C and %22."""
    text = template.replace("%", "%25").replace('"', "%22").replace(",", "%2C")
    return '"' + (text if len(text) <= SHOWN else text[: SHOWN - 1] + "…") + '"'


def _score(strength: int) -> float:
    # 3 distinct identifiers of the comment template score 0.5, 6 score 0.67, 12 score 0.8, 27 score 0.9
    return strength / (strength + 3)


__all__ = ["CodeTemplates", "Finding", "Varying", "template_key"]
