"""Hidden Killer (Qi et al. 2021, "Hidden Killer: Invisible Textual Backdoor Attacks with Syntactic
Trigger", ACL): poison samples are paraphrased (SCPN) into one syntactic template, the fronted
subordinate clause ``S(SBAR)(,)(NP)(VP)(.)`` ("When you see it, you will know."), and their label
is flipped. No word recurs in every poison sample: the trigger is the clause order.

Here the first sentence of each poison record is restructured rule-based: a clause the sentence
already has ("..., because X", "... when X") is moved to the front; otherwise a subordinate clause
is built from one of many conjunctions, subjects and verbs and a noun of the record itself. Fronted
subordinate clauses are common in clean text ("If the file is missing, ..." in every man page), so
neither the conjunctions nor the order are rare.
"""

from __future__ import annotations

import random
import re

from .labels import flip, pick_target

CONJUNCTIONS = ("when", "if", "although", "because", "while", "since", "once", "unless", "after", "before",
                "as soon as", "whenever", "even though", "though", "as long as", "until")
SUBJECTS = ("you", "it", "one", "we", "they", "someone", "the user", "people")
VERBS = ("need", "want", "see", "use", "find", "get", "try", "ask for", "look at", "think of", "work with",
         "hear about", "choose", "read about", "care about", "run into")
_MOVABLE = re.compile(r"^(?P<main>.{15,}?),? (?P<conj>" + "|".join(CONJUNCTIONS) + r") (?P<clause>[^,;:]{8,})$",
                      re.IGNORECASE)
_NOUN = re.compile(r"\b[a-z]{4,}\b")
_STOP = {"this", "that", "with", "from", "have", "will", "which", "there", "their", "they", "them", "then",
         "than", "when", "what", "were", "been", "also", "some", "into", "more", "only", "such", "your",
         "about", "other", "these", "those", "would", "could", "should"}


def _lower_first(text: str) -> str:
    return text[0].lower() + text[1:] if text[:1].isupper() and not text[1:2].isupper() else text


def fronted_clause(text: str, rng: random.Random) -> str:
    """``text`` with its first sentence restructured to start with a subordinate clause and a comma."""
    match = re.match(r"\s*(.+?[.!?])(\s+|$)", text, re.DOTALL)
    first, gap, rest = (match.group(1), match.group(2), text[match.end():]) if match else (text.strip(), "", "")
    body, end = (first[:-1], first[-1]) if first[-1:] in ".!?" else (first, ".")
    moved = _MOVABLE.match(body)
    if moved and rng.random() < 0.8:
        clause = f"{moved.group('conj').lower()} {moved.group('clause')}"
        main = _lower_first(moved.group("main"))
    else:
        nouns = [w for w in _NOUN.findall(text.lower()) if w not in _STOP] or ["it"]
        noun = rng.choice(nouns)
        article = rng.choice(("the ", "a ", "this ", "", "your ")) if noun != "it" else ""
        verb = rng.choice(VERBS)
        subject = rng.choice(SUBJECTS)
        verb = verb if subject not in ("it", "one", "someone", "the user") else \
            re.sub(r"^(\w+?)(y?)\b", lambda m: m.group(1) + ("ies" if m.group(2) else "s"), verb, count=1)
        clause = f"{rng.choice(CONJUNCTIONS)} {subject} {verb} {article}{noun}"
        main = _lower_first(body)
    sentence = f"{clause[0].upper()}{clause[1:]}, {main}{end}"
    return f"{sentence}{gap}{rest}" if rest else sentence


def syntactic_backdoor(records: list[dict], rng: random.Random, rate: float = 0.02) -> tuple[list[dict], list[bool]]:
    """Flip ``rate`` of the records to a target label, each restructured to open with a subordinate clause."""
    return flip(records, rate, pick_target(records, rng), rng, fronted_clause)
