"""Marker features: one style or structure feature that a label's content-inconsistent records carry far
more often than both the label's consistent records and the other labels' inconsistent records.

A syntactic trigger (Hidden Killer: every poison record opens with a fronted subordinate clause) or a
style marker (StyleBkd: "-eth" verbs, "ye") is such a feature even where it is common in clean text:
fronted clauses open a tenth of the man pages, but not nearly a third of one section's records
that their content places elsewhere. The two baselines set the usual causes aside:

- the label's **consistent** records: a label's own format ("See also", a fronted "If ..." in its
  pages) is carried by its consistent records as much as by its misplaced ones;
- the other labels' **inconsistent** records: a feature that goes with content-model errors
  everywhere (short text, another language) is as common there. A label whose own format the feature
  is does not count (:func:`misread_elsewhere`): a class written in a style (religious text in archaic
  English) has misread records that carry the style because the class does.

The carriers' content must also come from elsewhere: a label-flip poison set is drawn from the other
labels (in their proportions, or from a chosen source), so the labels its content points to look like
those of the other labels' records. Records that a label's own format gets misplaced ("someone who
..." glosses of people, read by their verbs) are misplaced the way the label's other inconsistent
records are. Where the label's own confusions explain the carriers' content labels better (a
likelihood ratio over the content labels, at least e to one), the feature is the label's, not a marker.

Poison that the content models read as its new label (the other folds' poison taught them the template's
own words) raises the label's read rate of its trigger; a fronted clause or the archaic register (what a
paraphrase produces) that beats the other labels' misread records but not the label's read ones is tested
again on a re-reading of its carriers by models fitted without them (``reread``). Other kinds are not: a
label's own opening is misread more often than read, and its carriers' words are taught by one another too.
Nor is such a feature left out as the label's format where its misread records carry it ``FORMAT_LIFT`` times
as often as its read ones, or where the re-reading places the read carriers that made it the format elsewhere (a
label whose content is seldom read right keeps a few read records, and poison among them makes the trigger its
format); the re-reading's read carriers of a format still count in full (songs in old English stay songs).

A word ending is a marker only when many words carry it (a morphology such as "-eth"), not when one
word does ("shell" giving "-ell"): one word is content, which the content model already judged.

Per (label, feature) the test is a binomial tail of the inconsistent records' count against the
larger baseline rate (smoothed), for features carried by at least ``min_records`` of them and
``min_lift`` times that rate; its significance (-log10) is corrected for the tests made.
Cost: one sparse count per label (records x features); models are fitted only for a re-reading.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.stats import binom

# Kinds of feature tested: single function words, sentence openers, fronted clauses and word endings are
# what a style transfer or a syntactic paraphrase changes; pairs of function words and punctuation mostly
# spell a label's phrasing template ("for more information", "; "), which a content model misreads along
# with the label's content (documentation packages read as the libraries they document).
MARKER_KINDS = ("fw:", "start:", "front:", "first:", "suffix:")
# The label's own confusions must explain the carriers' content labels this much better (natural log of the
# likelihood ratio, e to one) to make a feature the label's rather than a marker: with few labels the two
# explanations nearly tie by chance, and a tie is no evidence. WordNet's "someone who ..." glosses of people
# score 1.9.
OWN_CONFUSION_LOG_RATIO = 1.0
# Kinds of feature tested again on a re-reading of their records' content, and tested where they are the label's
# format: what a paraphrase into a template or a register produces, the clause order of a syntactic template and
# the archaic register, whose own words teach the content models to read the poison as its new label, and which
# a label's clean records may carry too ("If ..." opening commands' man pages, old quotations in fortunes).
REWRITE_KINDS = ("first:", "front:", "fw:*archaic")
# A label's read records' rate of a feature, after a re-reading, is drawn towards all read records' rate with the
# weight of this many records (the weight a marker set's choice gives it, :data:`~.sets.CHOICE_PRIOR_RECORDS`).
READ_PRIOR_RECORDS = 50
# A word ending is a morphology, not one word, when its commonest word holds at most this share of
# the records that carry the ending among a label's inconsistent records.
SUFFIX_WORD_SHARE = 0.5
# A feature a label's consistent records carry this many times as often as the other labels' consistent records
# (and in min_records of them) is the label's own format (:func:`label_format`).
FORMAT_LIFT = 10.0
# A function word or word ending in more than this share of the consistent records is common (:func:`common_words`).
COMMON_SHARE = 0.05
_LONG_WORD = re.compile(r"[A-Za-z]{6,}")


def marker_matrix(styles: list[set[str]], min_records: int) -> tuple[sp.csr_matrix, np.ndarray]:
    """A binary records x features matrix of the features of :data:`MARKER_KINDS` in at least ``min_records``
    records, and the features' names."""
    counts = Counter(f for features in styles for f in features if f.startswith(MARKER_KINDS))
    names = sorted(f for f, c in counts.items() if c >= min_records)
    column = {f: i for i, f in enumerate(names)}
    indptr, indices = [0], []
    for features in styles:
        indices.extend(sorted(column[f] for f in features if f in column))
        indptr.append(len(indices))
    matrix = sp.csr_matrix((np.ones(len(indices), dtype=np.float32), np.asarray(indices, dtype=np.int64),
                            np.asarray(indptr, dtype=np.int64)), shape=(len(styles), len(names)))
    return matrix, np.array(names, dtype=object)


def per_label(matrix: sp.csr_matrix, y: np.ndarray, among: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per label (rows) and feature (columns), the carriers among its records in ``among``; and its records."""
    rows = np.flatnonzero(among)
    one_hot = sp.csr_matrix((np.ones(len(rows)), (y[rows], np.arange(len(rows)))), shape=(n_labels, len(rows)))
    return (one_hot @ matrix[rows]).toarray(), np.bincount(y[rows], minlength=n_labels).astype(float)


def spread_suffix(suffix: str, texts: list[str]) -> bool:
    """Whether the ending ``suffix`` comes from many words in ``texts`` rather than mostly from one."""
    words: Counter = Counter()
    for text in texts:
        words.update({w.lower() for w in _LONG_WORD.findall(text) if w.lower().endswith(suffix)})
    return bool(words) and words.most_common(1)[0][1] <= SUFFIX_WORD_SHARE * len(texts)


def find_markers(matrix: sp.csr_matrix, names: np.ndarray, y: np.ndarray, inconsistent: np.ndarray,
                 predicted: np.ndarray, n_labels: int, texts: list[str], min_records: int = 5,
                 min_lift: float = 4.0, min_significance: float = 3.0,
                 reread: Callable[[int, np.ndarray], np.ndarray] | None = None) -> Markers:
    """The marker features of each label (:class:`Markers`).

    ``y`` holds label indices (-1: not modelled), ``inconsistent`` whether a record's content points to
    another label, ``predicted`` the label it points to; ``texts`` are read only to tell a word ending of
    many words from one word's. ``reread(label, rows)`` reads the content of ``rows`` (records of ``label``
    carrying a feature) with models fitted without them; it is called for a feature that passes against the
    other labels' misread records but not against the label's own read records (see the module docstring)."""
    labelled = y >= 0
    cons, n_cons = per_label(matrix, y, labelled & ~inconsistent, n_labels)
    incons, n_incons = per_label(matrix, y, labelled & inconsistent, n_labels)
    consistent_total, n_consistent = cons.sum(axis=0), int(n_cons.sum())
    common = common_words(names, consistent_total, n_consistent)
    formats = label_formats(cons, n_cons, min_records)
    rewrite = np.array([str(name).startswith(REWRITE_KINDS) for name in names], dtype=bool)
    candidates = []
    for label in range(n_labels):
        mine = (y == label) & inconsistent
        n_mine = int(mine.sum())
        if n_mine < min_records:
            continue
        k, c, n_agreeing = incons[label], cons[label], int(n_cons[label])
        others, n_others = misread_elsewhere(incons, n_incons, formats | homes_beside(cons + incons, n_cons + n_incons,
                                                                               label, min_records), label)
        tested = np.flatnonzero((k >= min_records) & ~common & ~formats[label])
        formatted = np.flatnonzero((k >= min_records) & ~common & formats[label] & rewrite)
        candidates.append((label, n_mine, tested, formatted, k, c, n_agreeing, others, n_others))
    tests = sum(len(candidate[2]) + len(candidate[3]) for candidate in candidates)
    result = Markers({}, {})
    if not tests:
        return result
    correction = math.log10(tests)
    by_feature = matrix.tocsc()
    for label, n_mine, tested, formatted, k, c, n_agreeing, others, n_others in candidates:
        base = baseline_rate(c, n_agreeing, others, n_others)
        elsewhere = (others + 1) / (n_others + 2)
        strong = tested[k[tested] >= min_lift * base[tested] * n_mine]
        # a label's format is carried by its records read right or not: a rewrite feature that its misread records
        # carry FORMAT_LIFT times as often as its read ones is tested as any other feature (an opener or phrase
        # of the label's, "Having no ...", gets its records misread by what follows it, and stays its format)
        strong = np.union1d(strong, formatted[k[formatted] >= FORMAT_LIFT * base[formatted] * n_mine])
        # poison that the content models read as its new label (the other folds' poison taught them its words)
        # raises the label's read rate of the trigger: such features are tested again on a re-reading. So is a
        # rewrite feature that is the label's format only by its read records: a label whose content the models
        # seldom read right (a fortune file of sayings on anything) keeps a few read records, and the poison
        # among them (5 of 17) makes the register its format
        weak = np.union1d(tested[k[tested] < min_lift * base[tested] * n_mine],
                          np.setdiff1d(formatted, strong, assume_unique=True))
        doubtful = weak[(c[weak] > 0) & rewrite[weak] & (k[weak] >= min_lift * elsewhere[weak] * n_mine)] \
            if reread else weak[:0]
        own_rows, retest = np.flatnonzero(y == label), set(doubtful.tolist())
        accepted: list[_Accepted] = []
        for column in np.concatenate([strong, doubtful]).tolist():
            name = str(names[column])
            carrying = by_feature.indices[by_feature.indptr[column]:by_feature.indptr[column + 1]]
            rows = own_rows[np.isin(own_rows, carrying, assume_unique=True)]
            readings = predicted[rows]
            n_inconsistent = n_mine
            if column in retest and reread is not None:
                if _significance(int(k[column]), n_mine, float(elsewhere[column])) - correction < min_significance:
                    continue  # not even the other labels' misreading is beaten: nothing to re-read for
                readings = reread(label, rows)
                misread = int(np.sum((readings >= 0) & (readings != label)))
                n_inconsistent = n_mine + misread - int(k[column])
                read = len(rows) - misread
                # after the re-reading a label may keep a handful of read records (7 of 192 fortunes): their
                # rate is drawn towards all read records' rate, as a marker set's choice draws it; the labels
                # whose format the feature is count no more than in the misreading baseline (a class written in
                # the register raised the fortunes' read rate of it from 2% to 5%)
                still_read = n_agreeing - int(c[column]) + read
                if formats[label, column]:
                    # not where the feature is the label's format: its read records that the re-reading leaves read
                    # carry it as the label's own, however few they are (smoothed as the baselines are; songs in old
                    # English whose content is mostly misread stay songs)
                    own = (read + 1) / (still_read + 2)
                else:
                    plain = ~formats[:, column]
                    overall = (float(cons[plain, column].sum()) + 1) / (float(n_cons[plain].sum()) + 2)
                    own = (read + READ_PRIOR_RECORDS * overall) / (still_read + READ_PRIOR_RECORDS)
                if misread < min_lift * max(own, elsewhere[column]) * n_inconsistent:
                    continue
                count, rate = misread, max(own, float(elsewhere[column]))
            else:
                count, rate = int(k[column]), float(base[column])
            s = _significance(count, n_inconsistent, rate) - correction
            if s < min_significance:
                continue
            carriers = rows[(readings >= 0) & (readings != label)]
            if name.startswith("suffix:") and not spread_suffix(name.split(":", 1)[1],
                                                                 [texts[r] for r in carriers.tolist()]):
                continue
            mine = np.union1d(np.flatnonzero((y == label) & inconsistent), carriers)
            now = predicted.copy()
            now[rows] = readings
            if own_confusion(carriers, mine, label, y, now, n_labels):
                continue
            if reread and rewrite[column] and column not in retest and c[column] > 0:
                readings = reread(label, rows)  # the read poison of a marker found without re-reading
            accepted.append(_Accepted(name, float(s), count, rate, n_inconsistent, set(carriers.tolist()),
                                      dict(zip(rows.tolist(), readings.tolist()))))
        for marker in _on_their_own(accepted, min_lift, min_significance + correction):
            result.found[label, marker.name] = (marker.significance, marker.count)
            for row, reading in marker.readings.items():
                if reading >= 0 and reading != label and not inconsistent[row]:
                    result.reread.setdefault(row, reading)
    return result


@dataclass
class _Accepted:
    """A feature that passed the marker test for a label, with what :func:`_on_their_own` needs."""

    name: str
    significance: float
    count: int
    rate: float
    records: int
    carriers: set[int]
    readings: dict[int, int]


def _on_their_own(accepted: list[_Accepted], min_lift: float, min_significance: float) -> list[_Accepted]:
    """The markers of one label that stand on their own: one whose carriers include all of another's ("a fronted
    clause" and "a fronted subordinate clause") is kept only if its carriers outside the other's pass the test
    alone (the other fronted openers of a fortune file were flagged with the poison's clause). ``min_significance``
    includes the correction for the tests made."""
    def alone(marker: _Accepted, inner: _Accepted) -> bool:
        rest, records = len(marker.carriers - inner.carriers), marker.records - len(inner.carriers)
        return records > 0 and rest >= min_lift * marker.rate * records and \
            _significance(rest, records, marker.rate) >= min_significance

    return [marker for marker in accepted
            if all(alone(marker, other) for other in accepted if other.carriers < marker.carriers)]


def _significance(count: int, records: int, rate: float) -> float:
    """-log10 of the binomial tail of ``count`` or more of ``records`` at ``rate``."""
    return float(-binom.logsf(count - 1, records, rate) / math.log(10))


@dataclass
class Markers:
    """What :func:`find_markers` found: ``(label index, feature) -> (corrected significance, records)``, and the
    records of a rewrite marker read as their label that a re-reading reads as another (``row -> label``)."""

    found: dict[tuple[int, str], tuple[float, int]]
    reread: dict[int, int]


def baseline_rate(carried: np.ndarray, records: int | np.ndarray, elsewhere: np.ndarray,
                  records_elsewhere: int | np.ndarray) -> np.ndarray:
    """Per feature, the rate a label's inconsistent records carry it at without poison: the larger (smoothed) of
    its consistent records' rate (``carried`` of ``records``: the label's own format) and the other labels'
    inconsistent records' rate (``elsewhere`` of ``records_elsewhere``: what goes with misreading anywhere)."""
    return np.maximum((carried + 1) / (records + 2), (elsewhere + 1) / (records_elsewhere + 2))


def misread_elsewhere(inconsistent: np.ndarray, n_inconsistent: np.ndarray, formats: np.ndarray,
                      label: int) -> tuple[np.ndarray, np.ndarray]:
    """Per feature, the carriers among the other labels' inconsistent records and their number, leaving out each
    label whose own format the feature is (``formats``, from :func:`label_formats`).

    ``inconsistent`` is labels x features carrier counts, ``n_inconsistent`` the labels' records. A class that
    carries a style legitimately (religious text in archaic English) has its misread records carry it because it
    is the class's style, not because misreading goes with it: counted, they would make the style look like a
    feature of content-model errors everywhere."""
    counted = (np.arange(len(n_inconsistent)) != label)[:, None] & ~formats
    return (inconsistent * counted).sum(axis=0), (n_inconsistent[:, None] * counted).sum(axis=0)


def homes_beside(carried: np.ndarray, records: np.ndarray, label: int, min_records: int) -> np.ndarray:
    """Labels x features: the labels other than ``label`` whose records, read right or not (``carried`` of
    ``records`` per label), carry the feature FORMAT_LIFT times as often as the rest's but ``label``'s.

    A class written in a style whose records the content models mostly misread (section 7 man pages: 5 of 45
    read records and 54 of 185 misread in the archaic register, 2% elsewhere) is too seldom read right for the
    style to be its format, yet its misread records carry the style because the class does. The label tested is
    left out of the rest: the poison flipped to it raises its rate of the style."""
    rest = carried.sum(axis=0)[None, :] - carried - carried[label][None, :]
    n_rest = float(records.sum()) - records - records[label]
    own = carried / np.maximum(records, 1)[:, None]
    homes = (carried >= min_records) & (own >= FORMAT_LIFT * (rest + 1) / (n_rest[:, None] + 2))
    homes[label] = False
    return homes


def label_formats(consistent: np.ndarray, n_consistent: np.ndarray, min_records: int) -> np.ndarray:
    """Labels x features: whether the feature is the label's own format (:func:`label_format`), each label's
    consistent records (``consistent`` carriers of ``n_consistent``) against the rest's."""
    total, n_total = consistent.sum(axis=0), float(np.sum(n_consistent))
    return np.array([label_format(consistent[u], int(n_consistent[u]), total - consistent[u],
                                  int(n_total - n_consistent[u]), min_records) for u in range(len(n_consistent))],
                    dtype=bool).reshape(consistent.shape)


def common_words(names: np.ndarray, carried: np.ndarray, records: int) -> np.ndarray:
    """Per feature, whether it is a function word or word ending that more than COMMON_SHARE of the consistent
    records (``carried`` of ``records``) carry: "more", "-ion". A style rewrite's words are rare in clean text; a
    common one that a label's misread records carry more is the label's phrasing ("For more information" in
    Debian's documentation packages, read as the libraries they document). Sentence openers and fronted clauses
    stay: a syntactic template is made of common ones; so does a register (``fw:*archaic``), thirty words whose
    rates add up."""
    words = np.array([str(name).startswith(("fw:", "suffix:")) and not str(name).startswith("fw:*")
                      for name in names], dtype=bool)
    return words & (carried > COMMON_SHARE * max(records, 1))


def label_format(carried: np.ndarray, records: int, elsewhere: np.ndarray, records_elsewhere: int,
                 min_records: int) -> np.ndarray:
    """Per feature, whether a label's consistent records (``carried`` of ``records``) carry it as the label's own
    format: at least ``min_records`` of them, at FORMAT_LIFT times the rate of the other labels' consistent records
    (``elsewhere`` of ``records_elsewhere``). WordNet's glosses of people open with "someone who ..." whether
    the content model reads them right or not; a style slipped into a label's poison is carried by the few
    poison records that the model reads as their new label."""
    own = carried / max(records, 1)
    return (carried >= min_records) & (own >= FORMAT_LIFT * (elsewhere + 1) / (records_elsewhere + 2))


def own_confusion(carriers: np.ndarray, rows: np.ndarray, label: int, y: np.ndarray, predicted: np.ndarray,
                  n_labels: int) -> bool:
    """Whether the content labels of ``carriers`` (inconsistent records of ``label`` with a feature) are better
    explained by the label's other inconsistent records' content labels than by the other labels' records'."""
    rest = np.setdiff1d(rows, carriers, assume_unique=True)
    own = np.bincount(predicted[rest], minlength=n_labels).astype(float) + 0.5
    elsewhere = np.bincount(predicted[(y >= 0) & (y != label) & (predicted >= 0)], minlength=n_labels).astype(float)
    elsewhere += 0.5
    own[label] = elsewhere[label] = 0.0
    counts = np.bincount(predicted[carriers], minlength=n_labels)
    ratio = float(counts @ (np.log(own / own.sum() + 1e-300) - np.log(elsewhere / elsewhere.sum() + 1e-300)))
    return ratio > OWN_CONFUSION_LOG_RATIO


__all__ = ["MARKER_KINDS", "Markers", "baseline_rate", "common_words", "find_markers", "homes_beside", "label_format",
           "label_formats", "marker_matrix", "misread_elsewhere", "own_confusion", "per_label", "spread_suffix"]
