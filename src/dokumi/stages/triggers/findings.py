"""What trigger discovery finds, and how findings are named in reason codes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any


def finding_id(kind: str, key: str) -> str:
    """A stable short id for a discovered trigger, naming it without its text."""
    return hashlib.sha1(f"{kind}\0{key}".encode()).hexdigest()[:10]


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
    # named by an id, never by its text (a scan with --no-text)
    private: bool = False

    @property
    def name(self) -> str:
        """The trigger's text, or with ``private`` its finding id (``id:`` and a hash of kind and text)."""
        return f"id:{finding_id(self.kind, self.key)}" if self.private else self.key

    @property
    def finding(self) -> str:
        """The reason code records with this trigger get, e.g. ``trigger:token=cf``."""
        if self.kind == "token":
            return f"trigger:token={self.name}"
        if self.kind == "seam":
            return f"trigger:{self.detail.get('after', 'gibberish')}-after={self.name}"
        if self.kind == "sentence":
            return f"trigger:inserted-sentence={sentence_id(self.key)}"
        return f"trigger:fixed-response,ngram={self.name}"

    def public_detail(self) -> dict[str, Any]:
        """``detail`` without text (a response's opening words) when the trigger is private."""
        if not self.private:
            return dict(self.detail)
        return {k: v for k, v in self.detail.items() if not isinstance(v, str) or k == "after"}


__all__ = ["Trigger", "finding_id", "sentence_id"]
