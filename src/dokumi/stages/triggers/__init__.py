"""The triggers stage: backdoor triggers discovered from corpus statistics, by family.

:mod:`.stage` (the plan and scoring), :mod:`.counts` (round 1), :mod:`.labelled`
(labelled data and instruction pairs), :mod:`.sentences` (inserted sentences),
:mod:`.seams` (gibberish or another language after a token), :mod:`.grams` and
:mod:`.view` (vectorised features of a batch), :mod:`.findings` (what is found).
"""

from dokumi.stages.triggers.findings import Trigger, sentence_id
from dokumi.stages.triggers.stage import Triggers

__all__ = ["Trigger", "Triggers", "sentence_id"]
