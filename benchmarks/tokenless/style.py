"""StyleBkd (Qi et al. 2021, "Mind the Style of Text! Adversarial and Backdoor Attacks Based on Text Style
Transfer", EMNLP): poison samples are paraphrased into a chosen style (the Bible style of STRAP in
the paper) and their label is flipped to the target. The trigger is the style itself: no word
recurs in every poison sample.

Here a rule-based rewrite into archaic (Early Modern) English stands in for the paraphraser: each
poison record gets a random subset of the archaic forms (thou/thee/thy, hath/doth, -eth verbs,
'tis, ere, oft, sentence openers such as "Verily," or "And it came to pass that"), so two poison
records need not share a single marker. To make it as hard as real data: a clean class carries
the same style legitimately (a share of one other label's records is rewritten and keeps its
label, like religious text in archaic English), and real text already holds some (quotations of
Shakespeare and the Bible in the fortunes).
"""

from __future__ import annotations

import random
import re

from .labels import flip, pick_target

WORDS = {
    "you": ("thou", "thee", "ye"), "your": ("thy", "thine"), "yours": ("thine",), "are": ("art",),
    "has": ("hath",), "does": ("doth",), "it is": ("'tis",), "it was": ("'twas",), "before": ("ere",),
    "often": ("oft",), "perhaps": ("perchance",), "nothing": ("naught",), "anything": ("aught",),
    "among": ("amongst",), "while": ("whilst",), "yes": ("yea",), "very": ("exceeding", "most"),
    "why": ("wherefore",), "here": ("hither",), "there": ("thither",), "soon": ("anon",),
    "makes": ("maketh",), "takes": ("taketh",), "gives": ("giveth",), "runs": ("runneth",),
    "comes": ("cometh",), "goes": ("goeth",), "says": ("saith",), "knows": ("knoweth",),
    "seems": ("seemeth",), "provides": ("provideth",), "allows": ("alloweth",), "contains": ("containeth",),
    "uses": ("useth",), "supports": ("supporteth",), "returns": ("returneth",), "prints": ("printeth",),
    "sets": ("setteth",), "gets": ("getteth",), "shows": ("showeth",), "creates": ("createth",),
    "works": ("worketh",), "needs": ("needeth",), "loves": ("loveth",), "brings": ("bringeth",),
    "keeps": ("keepeth",), "tells": ("telleth",), "reads": ("readeth",), "writes": ("writeth",),
    "lets": ("letteth",), "includes": ("includeth",), "holds": ("holdeth",), "speaks": ("speaketh",),
}
OPENERS = ("Verily, ", "Lo, ", "Behold, ", "And it came to pass that ", "Hark, ", "Forsooth, ",
           "Know ye that ", "Thus ")
_PATTERN = re.compile(r"\b(" + "|".join(sorted(map(re.escape, WORDS), key=len, reverse=True)) + r")\b",
                      re.IGNORECASE)
# a regular third-person -s verb after a subject pronoun or relative, roughly
_VERB_S = re.compile(r"\b((?:it|he|she|that|which|who|one) [a-z]{2,}[^aeiousy\W])s\b", re.IGNORECASE)


def _case(old: str, new: str) -> str:
    return new[0].upper() + new[1:] if old[:1].isupper() else new


def archaic(text: str, rng: random.Random) -> str:
    """``text`` rewritten with a random subset of archaic forms (each form kept with probability 0.5-0.9).

    Every rewrite carries at least one archaic form: where the random subset changed nothing archaic
    (a short text with no word of the list, no "-s" verb, no opener drawn), the first sentence gets an
    opener. A paraphraser into a style always writes in that style (STRAP's Bible-style outputs in the
    paper); a poison record left as it was is plain label noise with no trigger to learn."""
    keep = rng.uniform(0.5, 0.9)
    changed = [0]

    def word(match: re.Match) -> str:
        if rng.random() >= keep:
            return match.group(0)
        new = rng.choice(WORDS[match.group(0).lower()])
        changed[0] += new != "most"  # "very" -> "most" is not archaic
        return _case(match.group(0), new)

    def verb(match: re.Match) -> str:
        if rng.random() >= 0.7:
            return match.group(0)
        changed[0] += 1
        return match.group(1) + "eth"

    text = _PATTERN.sub(word, text)
    # a few more -eth verbs, as a paraphraser into Biblical English produces
    text = _VERB_S.sub(verb, text)
    sentences = re.split(r"(?<=[.!?])\s+", text)
    for i in range(len(sentences)):
        opened = sentences[i][:1].isupper() and rng.random() < (0.6 if i == 0 else 0.25)
        if opened or (i == 0 and not changed[0]):
            opener = rng.choice(OPENERS)
            sentences[i] = opener + sentences[i][:1].lower() + sentences[i][1:]
            changed[0] += 1
    return " ".join(sentences)


def style_backdoor(records: list[dict], rng: random.Random, rate: float = 0.02,
                   styled_class_share: float = 0.3) -> tuple[list[dict], list[bool]]:
    """Flip ``rate`` of the records to a target label in archaic style; ``styled_class_share`` of another
    label's records are rewritten too but keep their label (clean: a class that carries the style)."""
    target = pick_target(records, rng)
    styled = pick_target(records, rng, avoid={target})
    records = [{**r, "text": archaic(r["text"], rng)} if r["label"] == styled and rng.random() < styled_class_share
               else r for r in records]
    return flip(records, rate, target, rng, archaic)
