"""The near_duplicates stage: repetition screening and deduplication by MinHash LSH clusters.

Split by concern: :mod:`.signed` (content keys, signatures, band-key rows),
:mod:`.protected` (the protected set), :mod:`.index` (saved state for a later
scan's ``index``) and :mod:`.stage` (the plan, clustering and scoring).
"""

from dokumi.stages.near_duplicates.stage import NearDuplicates, repetition_score

__all__ = ["NearDuplicates", "repetition_score"]
