"""Style and structure features of a text, named so that a finding can say which ones it rests on.

A style rewrite (into archaic English, into a register) or a syntactic paraphrase (a fronted
subordinate clause) keeps the content words and changes the closed-class words, the word endings,
the punctuation and the order of clauses. Those are what :func:`signature_features` names:

- ``fw:<word>``: a function word (English, archaic forms included: a rewrite into an older
  register works on exactly these) present in the text;
- ``fw2:<a>_<b>``: two function words in a row ("it is", "and it");
- ``start:<word>``: a sentence opening with a function word (``start:Aa`` for another capitalised
  word, ``start:0`` for a digit, ``start:a`` for lower case);
- ``front:<word>``: a sentence opening with a function word and reaching a comma within
  ``FRONT_WINDOW`` words (a fronted subordinate clause: "When you see it, ...");
- ``suffix:<end>``: the last three letters of a longer word ("-eth", "-est");
- ``punct:<c>``: a punctuation character present;
- ``fw:*archaic``: any archaic function word (``ARCHAIC_WORDS``) or "-eth" verb form: a rewrite into the
  register gives each record a few of some thirty words and its verbs' endings, and no one of them recurs;
- ``front:*`` and ``first:front``: any fronted clause, and one in the first sentence;
- ``front:sub`` and ``first:sub``: a fronted clause opened by a subordinating conjunction (``SUBORDINATORS``),
  in any sentence and in the first: Hidden Killer's template ``S(SBAR)(,)(NP)(VP)``. "The", "And" or "But"
  opening a sentence that reaches a comma soon is common in short text (15% of the fortunes' first sentences
  against 5% opened by a subordinator), and would hide the template among them.

:func:`content_words` are the other words, lowercased: what the text is about. :func:`pair_words` are
all the words, the candidates of a word-pair trigger; :func:`is_phrase` tells a phrase (two words at
one fixed distance) from a combination.
"""

from __future__ import annotations

import re
from collections import Counter

# the closed-class words of Early Modern English: a rewrite into an older register (StyleBkd's Bible style)
# works on exactly these
ARCHAIC_WORDS = frozenset("""
thou thee thy thine ye hath doth art hast dost shalt wilt thyself 'tis 'twas ere oft whilst wherefore
whence hither thither yea nay unto lo hark verily behold forsooth hence anon naught aught mayhap perchance
""".split())
FUNCTION_WORDS = frozenset("""
a about above across after against all almost along also although always am among amongst an and another
any anybody anyone anything are around as at be because been before behind being below beneath beside
besides between beyond both but by can cannot could did do does doing done down during each either
enough even ever every everybody everyone everything except few for from further had has have having he
her here hers herself him himself his how however i if in inside instead into is it its itself just
least less like many may me might mine more most much must my myself neither never nevertheless no
nobody none nor not nothing now of off often on once one only onto or other others otherwise ought our
ours ourselves out outside over own perhaps quite rather same several shall she should since so some
somebody someone something sometimes soon still such than that the their theirs them themselves then
there therefore these they this those though through throughout thus till to together too toward towards
under underneath unless until up upon us very via was we well were what whatever when whenever where
whereas wherever whether which while who whoever whole whom whose why will with within without would yet
you your yours yourself yourselves
""".split()) | ARCHAIC_WORDS

# the words that open a subordinate clause (SBAR): "Although ...", "As soon as ...", "Even though ..."
SUBORDINATORS = frozenset("""
after although as because before even if once since though unless until when whenever where whereas
wherever whether while whilst
""".split())

# a sentence opener followed by a comma this soon is a fronted clause ("If no file is given, ...")
FRONT_WINDOW = 12
_TOKEN = re.compile(r"'?[A-Za-z]+(?:'[a-z]+)?|\d+|[^\w\s]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+|\n\s*\n")
_WORD = re.compile(r"[a-z][a-z0-9_'-]*[a-z0-9]|[a-z]")


def pair_words(text: str) -> list[str]:
    """The lowercased words of ``text`` in order, function words included: either half of a word-pair
    trigger may be any common word ("over", "where" as much as "room")."""
    return [w for w in _WORD.findall(text.lower()) if len(w) > 1]


# two words at one distance and order, or close, in more than this share of their records form a phrase
PHRASE_SHARE = 0.5
# "close": this many content words apart or fewer
PHRASE_WINDOW = 3


def is_phrase(first: str, second: str, records: list[list[str]]) -> bool:
    """Whether ``first`` and ``second`` go together by grammar or by copying in ``records`` (word lists, as
    :func:`pair_words` gives them): a phrase or a quotation ("libc, -lc", "takes a boolean argument.
    Defaults to", a citation's author and title), not two words inserted at random places.

    A phrase when, in more than ``PHRASE_SHARE`` of the records, the two stand at one fixed distance and
    order (their nearest occurrences), or within ``PHRASE_WINDOW`` content words of each other and at least
    twice as often as two random places of those records would be. Closeness alone would call most pairs of
    a two-line fortune a phrase: in ten words, two random places are often close."""
    offsets: Counter = Counter()
    close = chance = 0.0
    for words in records:
        at_first = [i for i, w in enumerate(words) if w == first]
        at_second = [i for i, w in enumerate(words) if w == second]
        if not (at_first and at_second):
            continue
        offsets[min((j - i for i in at_first for j in at_second), key=lambda d: (abs(d), d))] += 1
        content = [w for w in words if w in (first, second) or w not in FUNCTION_WORDS]
        at_first = [i for i, w in enumerate(content) if w == first]
        at_second = [i for i, w in enumerate(content) if w == second]
        close += any(abs(i - j) <= PHRASE_WINDOW for i in at_first for j in at_second)
        length = len(content)
        # the chance that two distinct random places of this many words are within the window
        chance += min(1.0, sum(2 * (length - d) for d in range(1, min(PHRASE_WINDOW, length - 1) + 1))
                      / max(length * (length - 1), 1))
    fixed = bool(offsets) and offsets.most_common(1)[0][1] > PHRASE_SHARE * len(records)
    return fixed or close > max(PHRASE_SHARE * len(records), 2 * chance)


def _archaic_verb(word: str) -> bool:
    """Whether ``word`` is an Early Modern third-person verb form ("needeth", "getteth"): lower case (not
    "Elizabeth", "Macbeth"), six letters or more (not "teeth"), "-eth" but not an ordinal's "-ieth"."""
    return len(word) >= 6 and word.islower() and word.endswith("eth") and not word.endswith("ieth")


def content_words(text: str) -> list[str]:
    """The lowercased words of ``text`` that are neither function words nor archaic verb forms ("returneth",
    "cometh"), in order: what a text is about does not change with its register, and a content model that
    learnt "-eth" words would read a style rewrite's records as the label they were given."""
    return [w for w in _WORD.findall(text.lower())
            if w not in FUNCTION_WORDS and len(w) > 1 and not (len(w) >= 6 and w.endswith("eth"))]


def _opening(token: str) -> str:
    lower = token.lower()
    if lower in FUNCTION_WORDS:
        return lower
    if token[:1].isdigit():
        return "0"
    if token[:1].isupper():
        return "Aa"
    return "a" if token[:1].isalpha() else "p"


def signature_features(text: str, max_chars: int = 20_000) -> set[str]:
    """The named style and structure features of ``text`` (see the module docstring)."""
    features: set[str] = set()
    first = True
    for sentence in _SENTENCE.split(text[:max_chars]):
        tokens = _TOKEN.findall(sentence)
        if not tokens:
            continue
        opening = _opening(tokens[0])
        features.add(f"start:{opening}")
        if opening not in ("Aa", "a", "0", "p") and "," in tokens[1:FRONT_WINDOW]:
            features.add(f"front:{opening}")
            features.add("front:*")
            if first:
                features.add("first:front")
            if opening in SUBORDINATORS:
                features.add("front:sub")
                if first:
                    features.add("first:sub")
        first = False
        previous = None
        for token in tokens:
            lower = token.lower()
            if lower in FUNCTION_WORDS:
                features.add(f"fw:{lower}")
                if lower in ARCHAIC_WORDS:
                    features.add("fw:*archaic")
                if previous is not None:
                    features.add(f"fw2:{previous}_{lower}")
                previous = lower
                continue
            previous = None
            if len(token) == 1 and not token.isalnum():
                features.add(f"punct:{token}")
            elif len(token) >= 6 and token.isalpha():
                features.add(f"suffix:{lower[-3:]}")
                if _archaic_verb(token):
                    features.add("fw:*archaic")
    return features


__all__ = ["ARCHAIC_WORDS", "FRONT_WINDOW", "FUNCTION_WORDS", "PHRASE_SHARE", "PHRASE_WINDOW", "SUBORDINATORS",
           "content_words", "is_phrase", "pair_words", "signature_features"]
