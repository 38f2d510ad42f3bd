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

from dokumi.arrays import first_of_pairs, lookup, members
from dokumi.stages.triggers.grams import window_sums
from dokumi.stages.triggers.occurrences import Ragged
from dokumi.text.bigrams import SeenPairs, pair_hashes
from dokumi.text.scripts import LETTERED, NAMES, word_scripts
from dokumi.text.tokens import Tokens

WINDOW = 20  # words looked at on each side of a seam
# words after a seam whose fluency is judged: a payload runs on, a stretch of rare terms in real text is short
PAYLOAD_WINDOW = 50
MIN_SPAN = 3  # words needed after a seam to judge it
MIN_SPAN_CHARACTERS = 30  # an attribution ("-- Lao Tse, Tao Te Ching") is a short span, not a payload
MIN_FLUENCY_GAIN = 0.2  # the words before a gibberish seam hold this much more common words than those after
# a switch of vocabulary, judged again with the token's own records left out of the pair table: the words
# before hold this share of the corpus's most frequent words, those after at most a quarter of that share
FLUENT_COMMON_SHARE = 0.15
VOCABULARY_DROP = 0.25
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
               ordinary: np.ndarray, only: np.ndarray | None = None,
               vocabulary_switches: bool = False, switches: list | None = None,
               script_switches: list | None = None, fluency: tuple | None = None) -> tuple[SeamHits, np.ndarray]:
    """Every seam of a batch's words, and the histogram of after-window fluency over every position that
    has words on both sides (the corpus's baseline of what follows a word).

    Fluency is the share of a window's word pairs that recur in the corpus (``pairs``); ``common`` are
    the hashes of the corpus's most frequent words (never a trigger); ``ordinary`` an (n scripts,
    n scripts) boolean matrix of script pairs the corpus mixes anyway; ``only`` (sorted hashes), when
    given, restricts seams to those tokens. A switch of vocabulary is a position where the words after
    a token hold at most :data:`VOCABULARY_DROP` of the share of ``common`` words that the words before
    hold (at least :data:`FLUENT_COMMON_SHARE`): fluent text in another language, whose pairs may recur
    when the poison repeats it. With ``vocabulary_switches`` such a position is a seam too; given a
    ``switches`` list, one tuple is appended to it: each record's first switch per token (positions),
    the before-window's pair coverage, and the after-window's pair hashes (``(positions,
    PAYLOAD_WINDOW)``, 0 past the record's end), for a second look without the token's records. Given a
    ``script_switches`` list, the same for switches between scripts the corpus mixes anyway: each record's
    first such switch per token and its script pair (``s1 * len(NAMES) + s2``).
    """
    hashes, offsets = tokens.hashes, tokens.offsets
    n = len(hashes)
    empty = SeamHits(*(np.zeros(0, dtype=np.int64) for _ in range(5)))
    if not n:
        return empty, np.zeros(COVERAGE_BINS + 1, dtype=np.int64)
    owner = tokens.owner
    coverage, before_coverage, before_n, after_n, values, valid = fluency or fluency_of(tokens, pairs)
    _, _, after_chars, _ = window_sums(tokens.characters.astype(np.int64), offsets, owner, WINDOW)
    judged = (before_n >= MIN_SPAN) & (after_n >= MIN_SPAN)
    bins = np.minimum((coverage * COVERAGE_BINS).astype(np.int64), COVERAGE_BINS)
    histogram = np.bincount(bins[judged], minlength=COVERAGE_BINS + 1)
    uncommon = ~members(hashes, common)
    drop = _vocabulary_drop(tokens, common) if vocabulary_switches or switches is not None else None
    if switches is not None:
        assert drop is not None, "computed whenever switches are collected"
        at = np.flatnonzero(uncommon & judged & (after_chars >= MIN_SPAN_CHARACTERS) & drop)
        switches.append(_switch_windows(tokens, at, before_coverage, values, valid))
    windows = _ScriptWindows(tokens, owner)
    # the token belongs to the text before it: a payload's own words are not its trigger
    candidate = uncommon & (before_n > 0) & windows.of_the_text_before()
    if only is not None:
        candidate &= members(hashes, only)
    gibberish = candidate & judged & (after_chars >= MIN_SPAN_CHARACTERS) & (coverage <= gibberish_rate) & (
        before_coverage >= coverage + MIN_FLUENCY_GAIN)
    switch = candidate & windows.switches(ordinary)
    if script_switches is not None:
        pair = np.where(candidate, windows.ordinary_switches(ordinary), -1)
        at = np.flatnonzero(pair >= 0)
        at = at[first_of_pairs(owner[at], hashes[at])]
        script_switches.append((at, pair[at]))
    if vocabulary_switches:
        gibberish |= candidate & judged & (after_chars >= MIN_SPAN_CHARACTERS) & drop
    seam = gibberish | switch
    at = np.flatnonzero(seam)
    if not len(at):
        return empty, histogram
    # a record's first seam per token
    at = at[first_of_pairs(owner[at], hashes[at])]
    return SeamHits(owner[at], at, hashes[at], np.where(switch[at], SWITCH, GIBBERISH), bins[at]), histogram


def _switch_windows(tokens: Tokens, at: np.ndarray, before_coverage: np.ndarray, values: np.ndarray,
                    valid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A record's first switch per token: its position, before-window coverage and after-window pairs."""
    if not len(at):
        return at, np.zeros(0), np.zeros((0, PAYLOAD_WINDOW), dtype=np.uint64)
    at = at[first_of_pairs(tokens.owner[at], tokens.hashes[at])]
    return at, before_coverage[at], _after_pairs(tokens, at, values, valid)


def _after_pairs(tokens: Tokens, at: np.ndarray, values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """The pair hashes of the :data:`PAYLOAD_WINDOW` words after each of ``at`` (0 past the record's end)."""
    index = at[:, None] + 1 + np.arange(PAYLOAD_WINDOW)[None, :]
    inside = index < tokens.offsets[1:][tokens.owner[at]][:, None]
    index = np.minimum(index, len(values) - 1)
    return np.where(inside & valid[index], values[index], np.uint64(0))


def windows_at(tokens: Tokens, positions: np.ndarray, pairs: SeenPairs,
               fluency: tuple | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``positions``: the before-window's share of recurring word pairs and the after-window's
    pair hashes (``(positions, PAYLOAD_WINDOW)``, 0 past the record's end), for a second look. ``fluency``:
    :func:`fluency_of` of the same words, when already computed."""
    if not len(positions):
        return np.zeros(0), np.zeros((0, PAYLOAD_WINDOW), dtype=np.uint64)
    _, before_coverage, _, _, values, valid = fluency or fluency_of(tokens, pairs)
    return before_coverage[positions], _after_pairs(tokens, positions, values, valid)


def recurring_after(after: np.ndarray, recurring: np.ndarray) -> tuple[np.ndarray, Ragged]:
    """After-windows' pair hashes (rows of :data:`PAYLOAD_WINDOW`, 0 past the record's end) as what a second
    look needs: each window's number of pairs, and per window the positions in ``recurring`` (the ascending
    hashes of the pairs that two or more sampled records hold) of its pairs found there. Only those can count
    as recurring, whoever else holds them; the second round's partial of every shared corpus was 226 MB of
    padded windows, and is 30 MB of these."""
    nonzero = after != 0
    sizes = nonzero.sum(axis=1).astype(np.uint8)
    found, where = lookup(recurring, after[nonzero])  # row by row
    rows = np.nonzero(nonzero)[0]
    lengths = np.bincount(rows[found], minlength=len(after)).astype(np.uint8)
    return sizes, Ragged.of(lengths, where[found].astype(np.uint32))


def _common_shares(tokens: Tokens, common: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per word: the share of the corpus's ``common`` words among the :data:`WINDOW` words before it and
    among the :data:`PAYLOAD_WINDOW` words after it (1 where nothing follows)."""
    frequent = members(tokens.hashes, common).astype(np.int64)
    before, before_n, after, after_n = window_sums(frequent, tokens.offsets, tokens.owner, WINDOW, PAYLOAD_WINDOW)
    n = len(frequent)
    return (np.divide(before, before_n, out=np.zeros(n), where=before_n > 0),
            np.divide(after, after_n, out=np.ones(n), where=after_n > 0))


def _vocabulary_drop(tokens: Tokens, common: np.ndarray) -> np.ndarray:
    """Per word: the words before it are fluent in the corpus's vocabulary and those after are not."""
    share_before, share_after = _common_shares(tokens, common)
    return (share_before >= FLUENT_COMMON_SHARE) & (share_after <= VOCABULARY_DROP * share_before)


def fluency_of(tokens: Tokens, pairs: SeenPairs) -> tuple[np.ndarray, ...]:
    """Per word: the share of recurring pairs among the word pairs after it (within :data:`PAYLOAD_WINDOW`
    words) and before it (within :data:`WINDOW`), how many words each side holds, and the hash of the pair
    it opens with whether it opens one."""
    offsets, owner = tokens.offsets, tokens.owner
    values, valid = pair_hashes(tokens)
    seen = pairs.seen(values, valid)
    seen_before, words_before, seen_after, words_after = window_sums(seen.astype(np.int64), offsets, owner, WINDOW,
                                                                     PAYLOAD_WINDOW)
    valid_before, _, valid_after, _ = window_sums(valid.astype(np.int64), offsets, owner, WINDOW, PAYLOAD_WINDOW)
    n = len(seen)
    after = np.divide(seen_after, valid_after, out=np.ones(n), where=valid_after > 0)
    before = np.divide(seen_before, valid_before, out=np.zeros(n), where=valid_before > 0)
    return after, before, words_before, words_after, values, valid


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
                if s1 != s2 and not ordinary[s1, s2]:
                    found |= self._switch(s1, s2)
        return found

    def ordinary_switches(self, ordinary: np.ndarray) -> np.ndarray:
        """Per word: the pair ``s1 * len(NAMES) + s2`` of a switch between scripts the corpus mixes anyway
        (-1 elsewhere); such a pair may be ordinary only because of the poison, judged on the driver."""
        pair = np.full(len(self.scripts), -1, dtype=np.int64)
        for s1 in self.present:
            for s2 in self.present:
                if s1 != s2 and ordinary[s1, s2]:
                    pair[self._switch(s1, s2) & (pair < 0)] = s1 * len(NAMES) + s2
        return pair

    def _switch(self, s1: int, s2: int) -> np.ndarray:
        return ((self.before[s1] >= 0.5) & (self.before_total >= 2) & (self.after[s2] >= 0.5)
                & (self.after_total >= MIN_SPAN) & (self.seen[s2] == 0))


def payload_after(tokens: Tokens, positions: np.ndarray, pairs: SeenPairs, gibberish_rate: float,
                  ordinary: np.ndarray, main_script: int, common: np.ndarray | None = None) -> np.ndarray:
    """Whether the words after each of ``positions`` carry a payload, for a trigger already discovered:
    twice as lenient as discovery (the token is known), and needing no text before it.

    A payload is gibberish (at most twice ``gibberish_rate`` of recurring word pairs), mostly in
    scripts that the corpus's main script does not mix with (several of them together count), or, given
    the corpus's ``common`` words, words of another vocabulary (at most half the before-window's share
    of them, or a tenth).
    """
    if not len(positions):
        return np.zeros(0, dtype=bool)
    owner, offsets = tokens.owner, tokens.offsets
    fluency, _, _, after_n, _, _ = fluency_of(tokens, pairs)
    _, _, after_chars, _ = window_sums(tokens.characters.astype(np.int64), offsets, owner, WINDOW)
    scripts = word_scripts(tokens).astype(np.int64)
    foreign_word = LETTERED[scripts] & ~ordinary[main_script, scripts]
    _, _, after_lettered, _ = window_sums(LETTERED[scripts].astype(np.int64), offsets, owner, WINDOW)
    _, _, after_foreign, _ = window_sums(foreign_word.astype(np.int64), offsets, owner, WINDOW)
    at = positions
    gibberish = (after_n[at] >= MIN_SPAN) & (after_chars[at] >= MIN_SPAN_CHARACTERS) & (
        fluency[at] <= 2 * gibberish_rate)
    foreign = (after_foreign[at] >= MIN_SPAN) & (after_foreign[at] >= 0.5 * after_lettered[at])
    if common is not None and len(common):
        # or words of another vocabulary: at most half the common-word share of the words before, and at most a
        # tenth whatever comes before (code, a table, nothing); the token is already known to be a trigger
        share_before, share_after = _common_shares(tokens, common)
        foreign |= (after_n[at] >= MIN_SPAN) & (after_chars[at] >= MIN_SPAN_CHARACTERS) & (
            share_after[at] <= np.maximum(0.5 * share_before[at], 0.1))
    return gibberish | foreign


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
    """A script switch as text, e.g. ``Latin->Cyrillic``."""
    return f"{NAMES[pair[0]]}->{NAMES[pair[1]]}"


__all__ = ["COVERAGE_BINS", "GIBBERISH", "KINDS", "SWITCH", "WINDOW", "SeamHits", "coverage_threshold",
           "find_seams", "fluency_of", "ordinary_pairs", "payload_after", "recurring_after", "script_names",
           "windows_at"]
