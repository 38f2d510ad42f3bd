"""The decisions a scan gives records, by severity.

A record's decision is the most severe that any stage or record rule gives it:
``keep``; ``duplicate``, a redundant copy of a record kept elsewhere (no alarm:
it yields to any evidence of an attack, and goes to ``duplicates/`` rather than
``clean/``); ``flag``, kept for a person to look at; ``drop``, quarantined.
"""

DECISIONS = ("keep", "duplicate", "flag", "drop")
SEVERITY = {decision: level for level, decision in enumerate(DECISIONS)}
# the decisions that say a record may be poisoned
ALARMS = ("flag", "drop")

__all__ = ["ALARMS", "DECISIONS", "SEVERITY"]
