"""The subpopulations stage: poison with no token to find, as a subpopulation of the corpus.

Pass 1 draws a sample by seeded content hash (bounded by ``sample_size``) and runs the analysis
that fits the data: :class:`~.labelled.LabelSignatures` on labelled text (records whose content says
another label and whose style, structure or word pairs resemble their label's other such records),
:class:`~.prompts.PromptSplits` on instruction pairs (a year or number in the prompt under which
rare response constructs concentrate). Pass 2 looks each record up by content key; a record
outside the sample is scored by the models and findings of the sample.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dokumi.arrays import lookup
from dokumi.fitplan import Reduce, Step
from dokumi.records import Batch
from dokumi.stage import Stage, StageResult
from dokumi.stages.subpopulations.constructs import DEFAULT_PACK, RiskyConstructs
from dokumi.stages.subpopulations.labelled import LabelFinding, LabelSignatures
from dokumi.stages.subpopulations.prompts import PromptFinding, PromptSplits
from dokumi.text.sampling import BottomK, priorities

# Only the first characters of a record are kept in the sample and read by the analyses.
MAX_CHARS = 20_000


class Subpopulations(Stage):
    """Score records that belong to a label-inconsistent or prompt-split subpopulation.

    Parameters
    ----------
    sample_size:
        Records (of lowest seeded content hash) the analyses are fitted on (default 20,000); memory
        grows with it (the sample's text is held), not with the corpus.
    folds:
        Folds of the cross-fitted label models (default 4).
    min_lift:
        Labelled data: how many times the label's share among records with one of its words a word
        pair's records must carry the label (default 4).
    min_cluster:
        Labelled data: records a signature feature must occur in to be used (default 5).
    prompt_min_records:
        Instruction data: records a prompt value, and a (value, construct) pair, need (default 5).
    prompt_min_significance:
        Instruction data: corrected -log10 binomial tail of a (value, construct) pair (default 3).
    prompt_rules:
        Instruction data: the rule pack of risky code constructs (a built-in name or a TOML path; default
        ``risky_code``) whose rules and kinds are response constructs too; ``""`` for none.
    seed:
        Seed of the sample (default 0).
    """

    name = "subpopulations"
    needs_fit = True
    # the sample holds up to MAX_CHARS characters of each of sample_size records, plus their features
    state_bytes_per_record = 0.0

    def __init__(self, sample_size: int = 20_000, folds: int = 4, min_lift: float = 4.0, min_cluster: int = 5,
                 prompt_min_records: int = 5, prompt_min_significance: float = 3.0,
                 prompt_rules: str = DEFAULT_PACK, seed: int = 0) -> None:
        for parameter, value, low in (("sample_size", sample_size, 100), ("folds", folds, 2),
                                      ("min_cluster", min_cluster, 2), ("prompt_min_records", prompt_min_records, 2)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{parameter} = {value!r} must be an integer of at least {low}")
        numbers: tuple[tuple[str, float], ...] = (("min_lift", min_lift),
                                                  ("prompt_min_significance", prompt_min_significance))
        for parameter, number in numbers:
            if isinstance(number, bool) or not isinstance(number, (int, float)) or number < 0:
                raise ValueError(f"{parameter} = {number!r} must be a non-negative number")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed = {seed!r} must be an integer")
        self.sample_size = sample_size
        self.folds = folds
        self.min_lift = float(min_lift)
        self.min_cluster = min_cluster
        self.prompt_min_records = prompt_min_records
        self.prompt_min_significance = float(prompt_min_significance)
        if not isinstance(prompt_rules, str):
            raise ValueError(f"prompt_rules = {prompt_rules!r} must be a rule pack name or path ('' for none)")
        self.prompt_rules = prompt_rules
        self._risky()  # a bad pack is an error now, not after pass 1
        self.seed = seed

    def _risky(self) -> RiskyConstructs | None:
        return RiskyConstructs(self.prompt_rules) if self.prompt_rules else None

    # pass 1 -------------------------------------------------------------------

    def fit_plan(self) -> list[Step]:
        return [Reduce("sample", self._start, self._add, BottomK.merged, self._finish)]

    def _start(self) -> BottomK:
        return BottomK(self.sample_size)

    def _add(self, sample: BottomK, batch: Batch) -> BottomK:
        keys = batch.content_keys
        labels = batch.labels
        for row, priority in enumerate(priorities(keys, self.seed, "subpopulations").tolist()):
            if not sample.would_keep(priority):
                continue
            label = None if labels is None or labels[row] is None else str(labels[row])
            if batch.is_instruction:
                prompts, responses = batch.prompts, batch.responses
                assert prompts is not None and responses is not None  # an instruction batch has both
                content: tuple = (prompts[row][:MAX_CHARS], responses[row][:MAX_CHARS])
            else:
                content = (batch.texts[row][:MAX_CHARS],)
            sample.offer(priority, (int(keys[row]), label, content))
        return sample

    def _finish(self, sample: BottomK) -> None:
        items = sorted(sample.items(), key=lambda item: item[0])
        self.records_sampled_ = len(items)
        self.kind_ = "none"
        self.labelled_: LabelSignatures | None = None
        self.prompts_: PromptSplits | None = None
        keys = np.array([item[0] for item in items], dtype=np.uint64)
        findings: list[Any] = [None] * len(items)
        if items and len(items[0][2]) == 2:
            self.kind_ = "instruction"
            self.prompts_ = PromptSplits(self.prompt_min_records, min_significance=self.prompt_min_significance,
                                         risky=self._risky())
            findings = self.prompts_.fit([item[2][0] for item in items], [item[2][1] for item in items])
        elif any(item[1] is not None for item in items):
            self.kind_ = "labelled"
            rows = [i for i, item in enumerate(items) if item[1] is not None]
            self.labelled_ = LabelSignatures(self.folds, min_cluster=self.min_cluster, min_lift=self.min_lift)
            found = self.labelled_.fit([items[i][2][0] for i in rows], [items[i][1] for i in rows], keys[rows])
            for i, finding in zip(rows, found):
                findings[i] = finding
        self.keys_ = keys
        self.labels_ = [item[1] for item in items]
        self.findings_ = findings

    # pass 2 -------------------------------------------------------------------

    def score(self, batch: Batch) -> StageResult:
        n = batch.num_rows
        result = StageResult.empty(n)
        if not n or self.kind_ == "none":
            return result
        labels = [None if label is None else str(label) for label in batch.labels] if batch.labels is not None \
            else [None] * n
        found, where = lookup(self.keys_, batch.content_keys)
        findings: list[Any] = [None] * n
        unseen = []
        for row in range(n):
            if found[row] and self.labels_[where[row]] == labels[row]:
                findings[row] = self.findings_[where[row]]
            else:
                unseen.append(row)
        if unseen and self.kind_ == "instruction" and batch.is_instruction:
            prompts, responses = batch.prompts, batch.responses
            assert self.prompts_ is not None and prompts is not None and responses is not None
            applied = self.prompts_.apply([prompts[r] for r in unseen], [responses[r] for r in unseen])
            for row, finding in zip(unseen, applied):
                findings[row] = finding
        elif unseen and self.kind_ == "labelled":
            rows = [r for r in unseen if labels[r] is not None]
            assert self.labelled_ is not None
            labelled = self.labelled_.apply([batch.texts[r][:MAX_CHARS] for r in rows], [str(labels[r]) for r in rows])
            for row, label_finding in zip(rows, labelled):
                findings[row] = label_finding
        for row, finding in enumerate(findings):
            if finding is not None:
                result.scores[row], reason = _explain(finding)
                result.reasons[row].append(reason)
        return result

    # reporting ----------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        if not hasattr(self, "kind_"):
            return {}
        described: dict[str, Any] = {"kind": self.kind_, "records_sampled": self.records_sampled_}
        if self.labelled_ is not None:
            if self.labelled_.skipped_:
                described["skipped"] = self.labelled_.skipped_
            # the evidence of each label's signatures: its marker sets and single markers, strongest first
            sets = self.labelled_.marker_sets_
            described["marker_sets"] = [
                {"label": label, "features": sorted(chosen.whole, key=lambda f: (-chosen.lift.get(f, 0.0), f))[:10],
                 "significance": round(chosen.significance, 1), "records": chosen.records}
                for label, chosen in sorted(sets.items())]
            markers = sorted(self.labelled_.markers_.items(), key=lambda item: -item[1][0])[:20]
            described["markers"] = [{"label": label, "feature": feature, "significance": round(significance, 1),
                                     "records": records} for (label, feature), (significance, records) in markers]
            pairs = sorted(self.labelled_.pairs_.items(), key=lambda item: -item[1][0])[:20]
            described["pairs"] = [{"label": label, "pair": pair.split(":", 1)[1],
                                   "significance": round(significance, 1), "records": records}
                                  for (label, pair), (significance, records) in pairs]
            evidence: dict[str, list[str]] = {}
            for entry in described["pairs"]:
                evidence.setdefault(entry["label"], []).append(f"pair {entry['pair']}")
            for entry in described["marker_sets"]:
                evidence.setdefault(entry["label"], []).extend(entry["features"][:5])
            for entry in described["markers"]:
                if entry["feature"] not in evidence.setdefault(entry["label"], []):
                    evidence[entry["label"]].append(entry["feature"])
            described["findings"] = [
                {"finding": f"label-signature label={label}"
                            + (f" evidence: {'|'.join(evidence[label][:5])}" if evidence.get(label) else ""),
                 "records": count, "target": label}
                for label, count in sorted(self.labelled_.subpopulations_.items())]
        if self.prompts_ is not None:
            top = sorted(self.prompts_.pairs_.items(), key=lambda item: -item[1][0])[:20]
            described["findings"] = [{"finding": f"prompt-split {value} -> {construct}",
                                      "significance": round(significance, 1), "lift": round(lift, 1)}
                                     for (value, construct), (significance, lift) in top]
        return described


def _explain(finding: LabelFinding | PromptFinding) -> tuple[float, str]:
    """A finding's score in [0, 1] and its reason code."""
    # a significance (-log10 of a corrected binomial tail) of 5 scores 0.33, 10 scores 0.5, 20 scores 0.67
    score = finding.significance / (finding.significance + 10) if finding.significance > 0 else 0.0
    if isinstance(finding, LabelFinding):
        return score, (f"subpopulation:label-signature,label={finding.label},content-says={finding.content_label},"
                       f"features={'|'.join(finding.features)},significance={finding.significance:.1f},"
                       f"records={finding.records}")
    return score, (f"subpopulation:prompt-split,value={finding.value},constructs={'|'.join(finding.constructs)},"
                   f"lift={finding.lift:.1f},records={finding.records}")


__all__ = ["Subpopulations"]
