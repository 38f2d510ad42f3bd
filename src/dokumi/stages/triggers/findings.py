"""What trigger discovery finds, and how findings are named in reason codes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


def sentence_id(sentence: str) -> str:
    """A stable short id for a normalised sentence: reason codes and manifests name it without its text."""
    return hashlib.sha1(sentence.encode("utf-8")).hexdigest()[:10]


@dataclass
class Trigger:
    """One discovered trigger: its kind, its text (``key``) and hash, how sure, and how many records carry it.

    ``kind``: ``token`` (labelled data), ``response`` (a prompt n-gram predicting one response),
    ``sentence`` (inserted into unrelated records) or ``seam`` (text turns into gibberish or another
    language after it).
    """

    kind: str
    key: str
    hash: int
    confidence: float
    records: int
    label: Any = None
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def finding(self) -> str:
        """The reason code records with this trigger get, e.g. ``trigger:token=cf``."""
        if self.kind == "token":
            return f"trigger:token={self.key}"
        if self.kind == "seam":
            return f"trigger:{self.detail.get('after', 'gibberish')}-after={self.key}"
        if self.kind == "sentence":
            return f"trigger:inserted-sentence={sentence_id(self.key)}"
        return f"trigger:fixed-response,ngram={self.key}"


__all__ = ["Trigger", "sentence_id"]
