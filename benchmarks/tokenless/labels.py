"""Helpers shared by the label-flip simulators: which label to flip to, which records to poison."""

from __future__ import annotations

import random
from collections import Counter


def pick_target(records: list[dict], rng: random.Random, avoid: set[str] = frozenset()) -> str:
    """A target label among the ten most frequent that hold at least 3% of the records (an attacker aims at a
    class that matters; a poison set larger than its target class would be that class)."""
    counts = Counter(r["label"] for r in records)
    common = [label for label, count in counts.most_common(10)
              if label not in avoid and count >= 0.03 * len(records)]
    return rng.choice(common)


def flip(records: list[dict], rate: float, target: str, rng: random.Random, rewrite) -> tuple[list[dict], list[bool]]:
    """Rewrite ``rate`` of the records (chosen among those whose label is not ``target``) with
    ``rewrite(text, rng)`` and set their label to ``target``. Returns the records and the poison mask."""
    pool = [i for i, r in enumerate(records) if r["label"] != target]
    chosen = set(rng.sample(pool, min(len(pool), round(rate * len(records)))))
    out = [{**r, "text": rewrite(r["text"], rng), "label": target} if i in chosen else r
           for i, r in enumerate(records)]
    return out, [i in chosen for i in range(len(records))]
