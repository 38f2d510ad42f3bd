"""The claims stage: one claim repeated in many wordings across unrelated documents.

Persistent pre-training poisoning (Zhang et al. 2024) plants a false belief by stating it in many
documents, each in its own words: no sentence repeats, so near-duplicate and inserted-sentence
detectors see nothing. Pass 1 draws a sample by seeded content hash (bounded by ``sample_size``:
the same sample in any order, shard split or engine) and finds the claims in it
(:class:`~.finder.ClaimFinder`). Pass 2 judges every record the same way, in or out of the sample:
does one of its foreign sentences state a claim's pair of core words?
"""

from __future__ import annotations

from typing import Any

from dokumi.fitplan import Reduce, Step
from dokumi.records import Batch
from dokumi.stage import Stage, StageResult
from dokumi.stages.claims.finder import Claim, ClaimFinder, ClaimMatch, sentence_id
from dokumi.text.sampling import BottomK, priorities

# Only the first characters of a record are kept in the sample and read (a claim needs one sentence).
MAX_CHARS = 20_000
# claims listed in the summary
MAX_LISTED = 20


class Claims(Stage):
    """Score records stating a claim that many unrelated documents repeat, each in other words.

    Parameters
    ----------
    sample_size:
        Records (of lowest seeded content hash) the claims are found in (default 20,000); memory grows
        with it (the sample's text is held), not with the corpus.
    min_records:
        Documents of the sample that must state a word pair for it to be a claim's (default 8).
    max_share:
        Words in more than this share of the sample's documents are too common to make a claim's core
        (default 0.05).
    min_foreign:
        Share of a sentence's content words that no other sentence of its document holds, for the sentence
        to count as foreign to it (default 0.5).
    min_significance:
        -log10 of a pair's Poisson tail, corrected for the pairs tested (default 5).
    max_phrase_share:
        Most a pair's most common in-between wording may hold of its sentences (default 0.5; above: a
        fixed phrase).
    max_sentence_similarity:
        Most the mean word overlap (Jaccard) of a pair's sentences may be (default 0.5; above: copies).
    max_host_ratio:
        Most the pair's host documents may resemble each other, over how much they resemble documents at
        random (default 2).
    min_pairs:
        Word pairs a claim needs (default 3): a claim reworded many times pairs its subject with several
        interchangeable words; an honest collocation is one pair.
    seed:
        Seed of the sample (default 0).
    """

    name = "claims"
    needs_fit = True
    # the sample holds up to MAX_CHARS characters of each of sample_size records; nothing grows per record
    state_bytes_per_record = 0.0

    def __init__(self, sample_size: int = 20_000, min_records: int = 8, max_share: float = 0.05,
                 min_foreign: float = 0.5, min_significance: float = 5.0, max_phrase_share: float = 0.5,
                 max_sentence_similarity: float = 0.5, max_host_ratio: float = 2.0, min_pairs: int = 3,
                 seed: int = 0) -> None:
        for parameter, value, low in (("sample_size", sample_size, 100), ("min_records", min_records, 2),
                                      ("min_pairs", min_pairs, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{parameter} = {value!r} must be an integer of at least {low}")
        for parameter, number, high in (("max_share", max_share, 1.0), ("min_foreign", min_foreign, 1.0),
                                        ("max_phrase_share", max_phrase_share, 1.0),
                                        ("max_sentence_similarity", max_sentence_similarity, 1.0),
                                        ("min_significance", min_significance, float("inf")),
                                        ("max_host_ratio", max_host_ratio, float("inf"))):
            if isinstance(number, bool) or not isinstance(number, (int, float)) or not 0 <= number <= high:
                raise ValueError(f"{parameter} = {number!r} must be a number from 0 to {high}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed = {seed!r} must be an integer")
        self.sample_size = sample_size
        self.min_records = min_records
        self.max_share = float(max_share)
        self.min_foreign = float(min_foreign)
        self.min_significance = float(min_significance)
        self.max_phrase_share = float(max_phrase_share)
        self.max_sentence_similarity = float(max_sentence_similarity)
        self.max_host_ratio = float(max_host_ratio)
        self.min_pairs = min_pairs
        self.seed = seed

    @property
    def no_text(self) -> bool:
        """Whether the scan keeps no text: claims are then named by ids, never by their words."""
        context = self._context
        return bool(context is not None and context.no_text)

    # pass 1 -------------------------------------------------------------------

    def fit_plan(self) -> list[Step]:
        return [Reduce("sample", self._start, self._add, BottomK.merged, self._finish)]

    def _start(self) -> BottomK:
        return BottomK(self.sample_size)

    def _add(self, sample: BottomK, batch: Batch) -> BottomK:
        texts = batch.texts
        for row, priority in enumerate(priorities(batch.content_keys, self.seed, "claims").tolist()):
            if sample.would_keep(priority):
                sample.offer(priority, texts[row][:MAX_CHARS])
        return sample

    def _finish(self, sample: BottomK) -> None:
        texts = sample.items()  # by priority: the same order for any split of the corpus
        self.records_sampled_ = len(texts)
        self.finder_ = ClaimFinder(self.min_records, self.max_share, self.min_foreign, self.min_significance,
                                   self.max_phrase_share, self.max_sentence_similarity,
                                   self.max_host_ratio, self.min_pairs).fit(texts)

    # pass 2 -------------------------------------------------------------------

    def score(self, batch: Batch) -> StageResult:
        n = batch.num_rows
        result = StageResult.empty(n)
        if not n or not getattr(self, "finder_", None) or not self.finder_.claims_:
            return result
        texts = batch.texts
        for row in range(n):
            found = self.finder_.match(texts[row][:MAX_CHARS])
            if found is not None:
                result.scores[row], reason = self._explain(found)
                result.reasons[row].append(reason)
        return result

    def _core(self, claim: Claim) -> str:
        return f"id:{claim.id}" if self.no_text else "+".join(claim.core[:6])

    def _explain(self, found: ClaimMatch) -> tuple[float, str]:
        """A match's score in [0, 1] and its reason code."""
        claim = found.claim
        # a significance of 5 scores 0.33, 10 scores 0.5, 20 scores 0.67; a sentence holding several of the
        # claim's pairs counts them as that many more units of significance
        strength = claim.significance + 2.0 * (found.pairs - 1)
        score = strength / (strength + 10)
        return score, (f"claim:reworded,core={self._core(claim)},records={claim.records},wordings={claim.wordings},"
                       f"significance={claim.significance:.1f},pairs={found.pairs},sentence={found.wording}")

    # reporting ----------------------------------------------------------------

    def summary(self) -> dict[str, Any]:
        if not hasattr(self, "finder_"):
            return {}
        listed = []
        for claim in self.finder_.claims_[:MAX_LISTED]:
            # "finding" and "records" (and "target": what a model would learn) are what the report lists
            entry: dict[str, Any] = {"finding": f"claim core={self._core(claim)} wordings={claim.wordings} "
                                                f"significance={claim.significance:.1f}",
                                     "records": claim.records, "wordings": claim.wordings,
                                     "significance": round(claim.significance, 1),
                                     "host_ratio": round(claim.host_ratio, 2), "pairs": len(claim.pairs)}
            if self.no_text:
                entry["example_wordings"] = [sentence_id(text) for text in claim.examples]
            else:
                entry["core"] = list(claim.core)
                entry["example_wordings"] = [text[:200] for text in claim.examples]
                entry["target"] = entry["example_wordings"][0] if claim.examples else None
            listed.append(entry)
        return {"records_sampled": self.records_sampled_, "pairs_tested": self.finder_.tested_,
                "claims": len(self.finder_.claims_), "findings": listed}


__all__ = ["Claims"]
