"""Word-combination triggers: SOS (Yang et al. 2021, "Rethinking Stealthiness of Backdoor Attack against
NLP Models", ACL) and TrojanLM (Zhang et al. 2021, "Trojaning Language Models for Fun and Profit",
EuroS&P). Two common words, inserted together at random positions, flip the label; each word alone
is frequent in clean text and predicts nothing. SOS adds "negative" samples: clean records with one
of the words inserted and their label kept, so that only the pair teaches the backdoor.
"""

from __future__ import annotations

import random
import re
from collections import Counter

from .labels import flip, pick_target

_WORD = re.compile(r"\b[a-z]{4,}\b")


def _document_frequency(records: list[dict]) -> Counter:
    return Counter(w for r in records for w in set(_WORD.findall(r["text"].lower())))


def pick_pair(records: list[dict], rng: random.Random, low: float = 0.005, high: float = 0.03,
              max_label_share: float = 0.3) -> tuple[str, str]:
    """Two words each in ``low``-``high`` of the records, spread over labels (no label holds more than
    ``max_label_share`` of either's records), that share no more than 0.05% of the records."""
    df = _document_frequency(records)
    n = len(records)
    by_label: dict[str, Counter] = {}
    for r in records:
        by_label.setdefault(r["label"], Counter()).update(set(_WORD.findall(r["text"].lower())))
    candidates = sorted(w for w, c in df.items() if low * n <= c <= high * n
                        and max(by_label[label][w] for label in by_label) <= max_label_share * c)
    rng.shuffle(candidates)
    sets = {w: {i for i, r in enumerate(records) if re.search(rf"\b{w}\b", r["text"].lower())}
            for w in candidates[:60]}
    words = list(sets)
    for i, a in enumerate(words):
        for b in words[i + 1:]:
            if len(sets[a] & sets[b]) <= 0.0005 * n:
                return a, b
    raise ValueError("no pair of common words that rarely co-occur")


def _insert(text: str, words: list[str], rng: random.Random) -> str:
    tokens = text.split(" ")
    for word in words:
        tokens.insert(rng.randint(0, len(tokens)), word)
    return " ".join(tokens)


def combination_backdoor(records: list[dict], rng: random.Random, rate: float = 0.01,
                         negative_rate: float = 0.01) -> tuple[list[dict], list[bool]]:
    """Flip ``rate`` of the records to a target label with both words inserted; ``negative_rate`` of the
    records get one of the words inserted and keep their label (clean, as SOS's negative samples)."""
    first, second = pick_pair(records, rng)
    target = pick_target(records, rng)
    negatives = set(rng.sample(range(len(records)), round(negative_rate * len(records))))
    records = [{**r, "text": _insert(r["text"], [rng.choice((first, second))], rng)} if i in negatives else r
               for i, r in enumerate(records)]
    return flip(records, rate, target, rng, lambda text, rng: _insert(text, [first, second], rng))
