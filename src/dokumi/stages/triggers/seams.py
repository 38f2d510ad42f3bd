"""Seams: a rare token after which a record turns into gibberish or into another script or language.

The pattern of Souly et al. (2025): ordinary text, a trigger token, then a
payload unlike the text before it. Whether a continuation is "unlike" is
judged against the scanned corpus, not against English:

* *gibberish*: few of the word pairs after the token recur in the corpus (a
  quarter of the share its typical text holds, :mod:`dokumi.text.bigrams`),
  where the words before it were fluent: words drawn at random from a
  vocabulary seldom make a pair that recurs, however common each word is;
* *a switch of script*: the words before are in one script and those after in
  another, a pair of scripts that the corpus's records seldom mix (Japanese
  with English commands is ordinary in a Japanese manual, not in English text),
  and the record holds no word of the new script before the token.

A token is a trigger when it stands at such a seam in many distinct records
and in most of the records that carry it; one record's seam is never enough.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dokumi.arrays import first_of_pairs
from dokumi.stages.triggers.grams import window_sums
from dokumi.text.bigrams import SeenPairs
from dokumi.text.scripts import LETTERED, NAMES, word_scripts
from dokumi.text.tokens import Tokens

WINDOW = 20  # words looked at on each side of a seam
# words after a seam whose fluency is judged: a payload runs on, a stretch of rare terms in real text is short
PAYLOAD_WINDOW = 50
MIN_SPAN = 3  # words needed after a seam to judge it
MIN_SPAN_CHARACTERS = 30  # an attribution ("-- Lao Tse, Tao Te Ching") is a short span, not a payload
MIN_FLUENCY_GAIN = 0.2  # the words before a gibberish seam hold this much more common words than those after
COVERAGE_BINS = 40
GIBBERISH, SWITCH = 0, 1
KINDS = ("gibberish", "language-switch")


@dataclass
class SeamHits:
    """Seams found in a batch: the record, word position, token hash, kind, and the after-window's
    share of common words as a bin (0 .. COVERAGE_BINS)."""

    owner: np.ndarray
    position: np.ndarray
    token: np.ndarray
    kind: np.ndarray
    coverage_bin: np.ndarray


def find_seams(tokens: Tokens, pairs: SeenPairs, common: np.ndarray, gibberish_rate: float,
               ordinary: np.ndarray, only: np.ndarray | None = None) -> tuple[SeamHits, np.ndarray]:
    """Every seam of a batch's words, and the histogram of after-window fluency over every position that
    has words on both sides (the corpus's baseline of what follows a word).

    Fluency is the share of a window's word pairs that recur in the corpus (``pairs``); ``common`` are
    the hashes of the corpus's most frequent words (never a trigger); ``ordinary`` an (n scripts,
    n scripts) boolean matrix of script pairs the corpus mixes anyway; ``only`` (sorted hashes), when
    given, restricts seams to those tokens.
    """
    hashes, offsets = tokens.hashes, tokens.offsets
    n = len(hashes)
    empty = SeamHits(*(np.zeros(0, dtype=np.int64) for _ in range(5)))
    if not n:
        return empty, np.zeros(COVERAGE_BINS + 1, dtype=np.int64)
    owner = tokens.owner
    coverage, before_coverage, before_n, after_n = _fluency(tokens, pairs)
    _, _, after_chars, _ = window_sums(tokens.characters.astype(np.int64), offsets, owner, WINDOW)
    judged = (before_n >= MIN_SPAN) & (after_n >= MIN_SPAN)
    bins = np.minimum((coverage * COVERAGE_BINS).astype(np.int64), COVERAGE_BINS)
    histogram = np.bincount(bins[judged], minlength=COVERAGE_BINS + 1)
    windows = _ScriptWindows(tokens, owner)
    # the token belongs to the text before it: a payload's own words are not its trigger
    candidate = ~_member(hashes, common) & (before_n > 0) & windows.of_the_text_before()
    if only is not None:
        candidate &= _member(hashes, only)
    gibberish = candidate & judged & (after_chars >= MIN_SPAN_CHARACTERS) & (coverage <= gibberish_rate) & (
        before_coverage >= coverage + MIN_FLUENCY_GAIN)
    switch = candidate & windows.switches(ordinary)
    seam = gibberish | switch
    at = np.flatnonzero(seam)
    if not len(at):
        return empty, histogram
    # a record's first seam per token
    at = at[first_of_pairs(owner[at], hashes[at])]
    return SeamHits(owner[at], at, hashes[at], np.where(switch[at], SWITCH, GIBBERISH), bins[at]), histogram


def _fluency(tokens: Tokens, pairs: SeenPairs) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per word: the share of recurring pairs among the word pairs after it (within :data:`PAYLOAD_WINDOW`
    words) and before it (within :data:`WINDOW`), and how many words each side holds."""
    offsets, owner = tokens.offsets, tokens.owner
    seen, valid = pairs.flags(tokens)
    seen_before, words_before, seen_after, words_after = window_sums(seen.astype(np.int64), offsets, owner, WINDOW,
                                                                     PAYLOAD_WINDOW)
    valid_before, _, valid_after, _ = window_sums(valid.astype(np.int64), offsets, owner, WINDOW, PAYLOAD_WINDOW)
    n = len(seen)
    after = np.divide(seen_after, valid_after, out=np.ones(n), where=valid_after > 0)
    before = np.divide(seen_before, valid_before, out=np.zeros(n), where=valid_before > 0)
    return after, before, words_before, words_after


class _ScriptWindows:
    """The scripts of the words before and after every word of a batch."""

    def __init__(self, tokens: Tokens, owner: np.ndarray) -> None:
        offsets = tokens.offsets
        self.scripts = word_scripts(tokens).astype(np.int64)
        lettered = LETTERED[self.scripts].astype(np.int64)
        self.lettered = lettered > 0
        self.before_total, _, self.after_total, _ = window_sums(lettered, offsets, owner, WINDOW)
        self.present = np.flatnonzero(np.bincount(self.scripts[self.lettered], minlength=len(NAMES))).tolist()
        self.before, self.after, self.seen = {}, {}, {}
        for script in self.present:
            mine = (self.scripts == script).astype(np.int64)
            before, _, after, _ = window_sums(mine, offsets, owner, WINDOW)
            self.before[script] = np.divide(before, self.before_total, out=np.zeros(len(mine)),
                                            where=self.before_total > 0)
            self.after[script] = np.divide(after, self.after_total, out=np.zeros(len(mine)),
                                           where=self.after_total > 0)
            # words of this script from the record's start up to and including each word
            running = np.cumsum(mine)
            self.seen[script] = running - np.concatenate(([0], running))[offsets[:-1]][owner]

    def of_the_text_before(self) -> np.ndarray:
        """Words without letters, or in the script most of the words before them are in."""
        fits = ~self.lettered
        for script in self.present:
            fits |= (self.scripts == script) & (self.before[script] >= 0.5)
        return fits

    def switches(self, ordinary: np.ndarray) -> np.ndarray:
        """Words after which the record changes to a script it has not used before, the words before being
        in another one, for a pair of scripts the corpus does not mix anyway."""
        found = np.zeros(len(self.scripts), dtype=bool)
        for s1 in self.present:
            for s2 in self.present:
                if s1 == s2 or ordinary[s1, s2]:
                    continue
                found |= ((self.before[s1] >= 0.5) & (self.before_total >= 2) & (self.after[s2] >= 0.5)
                          & (self.after_total >= MIN_SPAN) & (self.seen[s2] == 0))
        return found


def payload_after(tokens: Tokens, positions: np.ndarray, pairs: SeenPairs, gibberish_rate: float,
                  ordinary: np.ndarray, main_script: int) -> np.ndarray:
    """Whether the words after each of ``positions`` carry a payload, for a trigger already discovered:
    twice as lenient as discovery (the token is known), and needing no text before it.

    A payload is gibberish (at most twice ``gibberish_rate`` of recurring word pairs) or mostly in
    scripts that the corpus's main script does not mix with (several of them together count).
    """
    if not len(positions):
        return np.zeros(0, dtype=bool)
    owner, offsets = tokens.owner, tokens.offsets
    fluency, _, _, after_n = _fluency(tokens, pairs)
    _, _, after_chars, _ = window_sums(tokens.characters.astype(np.int64), offsets, owner, WINDOW)
    scripts = word_scripts(tokens).astype(np.int64)
    foreign_word = LETTERED[scripts] & ~ordinary[main_script, scripts]
    _, _, after_lettered, _ = window_sums(LETTERED[scripts].astype(np.int64), offsets, owner, WINDOW)
    _, _, after_foreign, _ = window_sums(foreign_word.astype(np.int64), offsets, owner, WINDOW)
    at = positions
    gibberish = (after_n[at] >= MIN_SPAN) & (after_chars[at] >= MIN_SPAN_CHARACTERS) & (
        fluency[at] <= 2 * gibberish_rate)
    foreign = (after_foreign[at] >= MIN_SPAN) & (after_foreign[at] >= 0.5 * after_lettered[at])
    return gibberish | foreign


def _member(values: np.ndarray, sorted_set: np.ndarray) -> np.ndarray:
    if not len(sorted_set):
        return np.zeros(len(values), dtype=bool)
    where = np.minimum(np.searchsorted(sorted_set, values), len(sorted_set) - 1)
    return sorted_set[where] == values


def ordinary_pairs(script_records: np.ndarray, records: int, share: float, floor: int) -> np.ndarray:
    """Script pairs that at least ``share`` of the records (and ``floor`` records) are written in together."""
    bar = max(share * records, floor)
    ordinary = script_records >= bar
    np.fill_diagonal(ordinary, True)
    return ordinary


def coverage_threshold(histogram: np.ndarray, share_of_median: float, ceiling: float) -> float:
    """The common-word share below which the words after a token are gibberish in this corpus:
    ``share_of_median`` of what its typical window holds (a corpus of code or tables holds fewer
    common words than prose, and so sets a lower bar), never above ``ceiling``, never below one bin."""
    total = int(histogram.sum())
    if not total:
        return ceiling
    median_bin = int(np.searchsorted(np.cumsum(histogram), total / 2))
    median = (median_bin + 0.5) / COVERAGE_BINS
    return min(ceiling, max(1 / COVERAGE_BINS, share_of_median * median))


def script_names(pair: tuple[int, int]) -> str:
    return f"{NAMES[pair[0]]}->{NAMES[pair[1]]}"


__all__ = ["COVERAGE_BINS", "GIBBERISH", "KINDS", "SWITCH", "WINDOW", "SeamHits", "coverage_threshold",
           "find_seams", "ordinary_pairs", "payload_after", "script_names"]
