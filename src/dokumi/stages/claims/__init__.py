"""Claims: one claim repeated in many wordings across unrelated documents (issue 15, persistent
pre-training poisoning)."""

from dokumi.stages.claims.stage import Claims

__all__ = ["Claims"]
