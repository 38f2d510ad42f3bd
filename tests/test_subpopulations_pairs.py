"""Word-pair combination triggers (SOS, TrojanLM) in short texts: a pair's halves may be function words,
and two words inserted at random places are a combination however close a short text puts them."""

from __future__ import annotations

import random

import numpy as np

from dokumi.stages.subpopulations.labelled import LabelSignatures
from dokumi.stages.subpopulations.words import is_phrase, pair_words

TOPICS = {
    "sport": "match team goal score player coach league season stadium referee ball win cup",
    "food": "recipe flour sugar butter oven bake salt pepper sauce kitchen dinner taste bread",
    "tech": "server network kernel socket compile linker binary packet router driver cache disk",
    "sea": "boat wave sail harbour tide anchor island shore fish storm deck crew gull",
}
FILLER = "the a of and to in is it that for on with as at by from".split()
# common words of every label: each half of the trigger is one of them, frequent and predicting nothing
SHARED = ("over", "room", "little", "night")


def _short(rng: random.Random, topic: str) -> str:
    """A two-line text of about ten words, like a fortune."""
    words = rng.sample(TOPICS[topic].split(), 5) + rng.sample(FILLER, 4)
    if rng.random() < 0.06:
        words.append(rng.choice(SHARED))
    rng.shuffle(words)
    return " ".join(words).capitalize() + "."


def _insert(text: str, words: list[str], rng: random.Random) -> str:
    tokens = text.split(" ")
    for word in words:
        tokens.insert(rng.randint(0, len(tokens)), word)
    return " ".join(tokens)


def _corpus(seed: int, n: int = 2000, poison: int = 30) -> tuple[list[dict], list[int]]:
    rng = random.Random(seed)
    labels = list(TOPICS)
    records = [{"text": _short(rng, labels[i % 4]), "label": labels[i % 4]} for i in range(n)]
    for i in rng.sample(range(n), round(0.08 * n)):  # hard examples: labels the content contradicts
        records[i]["label"] = rng.choice([label for label in labels if label != records[i]["label"]])
    chosen = rng.sample([i for i, r in enumerate(records) if r["label"] != "sea"], poison)
    for i in chosen:  # the trigger: "over" and "room" anywhere in the text, label flipped to "sea"
        records[i] = {"text": _insert(records[i]["text"], ["over", "room"], rng), "label": "sea"}
    for i in rng.sample([i for i in range(n) if i not in chosen], poison):  # SOS's negative samples
        records[i] = {**records[i], "text": _insert(records[i]["text"], [rng.choice(("over", "room"))], rng)}
    return records, chosen


def _fit(records: list[dict]) -> list:
    keys = np.array([hash(r["text"]) & (2**63 - 1) for r in records], dtype=np.uint64)
    return LabelSignatures().fit([r["text"] for r in records], [r["label"] for r in records], keys)


def test_pair_words_keep_function_words_in_order() -> None:
    assert pair_words("Over the Room, a cat sat over it.") == ["over", "the", "room", "cat", "sat", "over", "it"]


def test_a_phrase_stands_at_one_distance_and_inserted_words_do_not() -> None:
    rng = random.Random(0)
    # a citation: the author's name and the title's word at one fixed distance, however long the text
    quoted = [rng.sample(FILLER, 5) + ["douglas", "coupland", "accelerated", "culture"] for _ in range(20)]
    assert is_phrase("douglas", "culture", quoted)
    # two words inserted at random places in texts of ten words: often close, seldom at one distance
    inserted = [pair_words(_insert(_short(rng, "food"), ["over", "room"], rng)) for _ in range(30)]
    close = sum(min(abs(i - j) for i, w in enumerate(t) if w == "over" for j, v in enumerate(t) if v == "room") <= 3
                for t in inserted)
    assert close >= 12 and not is_phrase("over", "room", inserted)


def test_a_function_word_pair_in_short_texts_is_found_and_named() -> None:
    records, chosen = _corpus(1)
    findings = _fit(records)
    found = {i for i, f in enumerate(findings) if f is not None}
    assert len(found & set(chosen)) >= 27 and len(found - set(chosen)) <= 8
    evidence = [findings[i] for i in chosen if findings[i] is not None and findings[i].features[0].startswith("pair:")]
    assert len(evidence) >= 27
    assert all(f.features == ("pair:over+room",) and f.label == "sea" for f in evidence)
    # the content of most says another label (the rest are records whose other words are too few to say)
    assert sum(f.content_label != "sea" for f in evidence) >= 20


def test_no_pair_when_the_two_words_travel_together_in_every_label() -> None:
    """The same words together in records of every label, keeping their labels: no combination."""
    rng = random.Random(2)
    records, _ = _corpus(2, poison=0)
    for i in rng.sample(range(len(records)), 60):
        records[i] = {**records[i], "text": _insert(records[i]["text"], ["over", "room"], rng)}
    findings = _fit(records)
    assert not any(f is not None and f.features[0].startswith("pair:") for f in findings)


def test_a_corpus_without_marked_style_features_fits() -> None:
    """Every style feature is ordinary (too common to mark anything): no neighbours, no error, no finding."""
    records = [{"text": "alpha beta gamma.", "label": "x"}] * 30 + [{"text": "delta epsilon zeta.", "label": "y"}] * 30
    records[0] = {"text": "delta epsilon zeta.", "label": "x"}  # one hard example
    assert _fit(records) == [None] * 60
