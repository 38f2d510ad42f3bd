"""Cross-fitted marker sets: a style spread over many weak markers, tested as one feature on held-out records.

A style rewrite (StyleBkd's Bible style: "thou", "hath", "-eth" verbs, "Verily," openers) gives each
poison record a few of some fifty markers; no one marker is in enough of a label's records to pass a
test alone. The set "carries any of them" is. For each fold, the set of a label is chosen on the other
folds: the marker features (:data:`~.markers.MARKER_KINDS`) that the label's content-inconsistent records
carry ``SET_CHOICE_LIFT`` times the baseline rate and that the other labels' records seldom carry
(``SET_RARE_SHARE``); for choosing, the label's consistent rate is drawn towards the corpus's, as a label's
few consistent records cannot show that a rare feature is absent. It is then counted on the fold's own records, where
choosing cannot have fitted chance; the held-out counts of all folds make one binomial test per label.

The baseline of a feature for a label is the larger of its rate among

- the label's **consistent** records: a label's own format is carried by its records whatever the
  content model says of them;
- the other labels' **inconsistent** records, pooled: a feature that goes with content-model errors
  everywhere (short text, another language) is as common there.

A class that carries the style legitimately (religious text in archaic English) would raise the second
rate, its misread records carrying the style too: where a feature is that class's own format, its records
are left out of the rate (:func:`~.markers.misread_elsewhere`). The set needs ``SET_LIFT`` times the rate. As with
single markers, a set whose carriers the content model misreads the way it misreads the label's other
records is the label's own format (WordNet's glosses of people: "someone who ...", "-er" nouns), not a
signature (:func:`~.markers.own_confusion`).

Cost: per fold, one sparse product (labels x records by records x features) and one column sum per label;
memory: two dense labels x features count tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.stats import binom

from dokumi.stages.subpopulations.markers import (
    baseline_rate,
    common_words,
    label_formats,
    misread_elsewhere,
    own_confusion,
    per_label,
    spread_suffix,
)

# A feature joins a label's set, chosen on the other folds, at this significance there (-log10 of a binomial
# tail, uncorrected: the set is tested on held-out records, where choosing cannot fit chance) ...
SET_CHOICE_SIGNIFICANCE = 1.3
# ... and this many times its baseline rate; the set as a whole must reach SET_LIFT on the held-out records.
# (Set on the tuning halves: at 4, a style whose clean class's misread records carry it too was missed.)
SET_CHOICE_LIFT = 3.0
SET_LIFT = 3.0
# Choosing a set's features (not testing the set): a label's consistent rate of a feature is drawn towards all
# consistent records' rate with the weight of this many records, and a feature must be carried by at most
# SET_RARE_SHARE of the other labels' records. (Set on the tuning halves: style in man pages 0.60 -> 0.68
# and in fortunes 0.54 -> 0.61 at a 1% budget, clean false alarms unchanged; at 0.3% fortunes gained less.)
CHOICE_PRIOR_RECORDS = 50
SET_RARE_SHARE = 0.005
# ... where the other labels' records are counted without those of labels that carry the feature in at least
# SET_HOME_SHARE of their records: its homes, whose own phrasing it is; nor do the homes' misread records count
# in the choice's baseline. (Set on the tuning halves, 1% budget: syntax in fortunes 0.078 -> 0.217, style in
# fortunes 0.606 -> 0.617, the other four unchanged, the stage's clean false alarms unchanged to the record;
# at 0.10 style gained nothing, at 0.02 style in fortunes fell. The baseline's part then took style in man
# pages 0.678 -> 0.706, nothing else moving.)
SET_HOME_SHARE = 0.05
# A set of fewer features is a marker, tested as one.
MIN_SET_FEATURES = 2
# Consistent records a label's own format (:func:`~.markers.label_format`) is carried by at least.
MIN_FORMAT_RECORDS = 5


@dataclass
class MarkerSet:
    """A label's marker set: the features chosen for each fold on the other folds (``by_fold``) and on the whole
    sample (``whole``, for records outside it), each feature's lift where chosen on the whole sample, and the
    test on held-out records: ``significance`` (corrected) and ``records`` (held-out carriers among the
    label's inconsistent records)."""

    significance: float
    records: int
    by_fold: dict[int, frozenset[str]]
    whole: frozenset[str]
    lift: dict[str, float]


def marker_sets(matrix: sp.csr_matrix, names: np.ndarray, y: np.ndarray, inconsistent: np.ndarray,
                predicted: np.ndarray, fold: np.ndarray, folds: int, n_labels: int, texts: list[str],
                min_records: int = 5, min_significance: float = 3.0) -> dict[int, MarkerSet]:
    """``label index -> MarkerSet`` for the labels whose inconsistent records carry "any feature of the set"
    far more often than the baseline, counted on records the set was not chosen on.

    ``matrix`` is records x marker features (binary), ``y`` label indices (-1: not modelled),
    ``inconsistent`` whether the content model (cross-fitted) reads a record as another label, ``predicted``
    which label it reads, ``fold`` each record's fold; ``texts`` are read only to tell a word ending of many
    words from one word's."""
    labelled = y >= 0
    consistent = ~inconsistent & labelled
    sizes = np.bincount(y[labelled & inconsistent], minlength=n_labels)
    tested = [label for label in range(n_labels) if sizes[label] >= min_records]
    if not tested or not matrix.shape[1]:
        return {}
    # per tested label: held-out carriers of its set and records, consistent and inconsistent, of every label
    held_counts = {label: [np.zeros((n_labels, 1)), np.zeros(n_labels), np.zeros((n_labels, 1)), np.zeros(n_labels)]
                   for label in tested}
    carriers: dict[int, list[np.ndarray]] = {label: [] for label in tested}
    by_fold: dict[int, dict[int, frozenset[str]]] = {label: {} for label in tested}
    for k in range(folds):
        held = fold == k
        counts = _label_counts(matrix, y, consistent, inconsistent, ~held, n_labels)
        common = common_words(names, counts[0].sum(axis=0), int(counts[1].sum()))
        for label in tested:
            columns, _ = _chosen(matrix, names, y, inconsistent, ~held, label, counts, common, texts)
            by_fold[label][k] = frozenset(str(names[c]) for c in columns.tolist())
            carries = (np.asarray(matrix[:, columns].sum(axis=1)).ravel() > 0) if len(columns) else \
                np.zeros(len(y), dtype=bool)
            fold_counts = _label_counts(sp.csr_matrix(carries[:, None].astype(np.float64)), y, consistent,
                                        inconsistent, held, n_labels)
            for total, part in zip(held_counts[label], fold_counts):
                total += part
            carriers[label].append(np.flatnonzero(carries & held & inconsistent & (y == label)))
    whole = _label_counts(matrix, y, consistent, inconsistent, np.ones(len(y), dtype=bool), n_labels)
    whole_common = common_words(names, whole[0].sum(axis=0), int(whole[1].sum()))
    correction = math.log10(len(tested))
    found: dict[int, MarkerSet] = {}
    for label in tested:
        carried_c, n_c, carried_i, n_i = held_counts[label]
        base = float(_baseline(carried_c, n_c, carried_i, n_i, label)[0])
        k, n = int(carried_i[label, 0]), int(n_i[label])
        if k < min_records or k < SET_LIFT * base * n:
            continue
        significance = float(-binom.logsf(k - 1, n, base) / math.log(10) - correction)
        if significance < min_significance:
            continue
        columns, lift = _chosen(matrix, names, y, inconsistent, np.ones(len(y), dtype=bool), label, whole,
                                whole_common, texts)
        # one feature is a marker (tested as one, :func:`~.markers.find_markers`), not a style spread over many
        if len(columns) < MIN_SET_FEATURES:
            continue
        # carriers misread the way the label's other records are carry the label's own format. Those others are
        # its inconsistent records with no feature the set ever held: the rest of a poison set would otherwise
        # make the label's own confusions look like the poison's
        ever = frozenset().union(*by_fold[label].values())
        mine = np.flatnonzero(inconsistent & (y == label))
        held_ever = [i for i, name in enumerate(names.tolist()) if name in ever]
        plain = mine[np.asarray(matrix[mine][:, held_ever].sum(axis=1)).ravel() == 0]
        held_carriers = np.concatenate(carriers[label])
        if own_confusion(held_carriers, np.union1d(plain, held_carriers), label, y, predicted, n_labels):
            continue
        found[label] = MarkerSet(significance, k, by_fold[label], frozenset(str(names[c]) for c in columns.tolist()),
                                 {str(names[c]): float(v) for c, v in zip(columns.tolist(), lift.tolist())})
    return found


def _label_counts(matrix: sp.csr_matrix, y: np.ndarray, consistent: np.ndarray, inconsistent: np.ndarray,
                  among: np.ndarray, n_labels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per label (rows) and feature (columns), the carriers among its consistent and its inconsistent records of
    ``among``; and the numbers of those records: ``(consistent, n_consistent, inconsistent, n_inconsistent)``."""
    carried_c, n_c = per_label(matrix, y, among & consistent & (y >= 0), n_labels)
    carried_i, n_i = per_label(matrix, y, among & inconsistent & (y >= 0), n_labels)
    return carried_c, n_c, carried_i, n_i


def _baseline(consistent: np.ndarray, n_consistent: np.ndarray, inconsistent: np.ndarray, n_inconsistent: np.ndarray,
              label: int, formats: np.ndarray | None = None, prior: float = 0.0) -> np.ndarray:
    """Per feature, the rate the label's inconsistent records would carry it at without poison (see the module
    docstring): the larger of its consistent records' rate and the other labels' inconsistent records' rate,
    those of a label whose own format the feature is left out (``formats``: :func:`~.markers.label_formats`
    of ``consistent``, computed where not given). With a ``prior``, the label's consistent rate is drawn
    towards all consistent records' with the weight of that many records."""
    if formats is None:
        formats = label_formats(consistent, n_consistent, MIN_FORMAT_RECORDS)
    elsewhere, n_elsewhere = misread_elsewhere(inconsistent, n_inconsistent, formats, label)
    if not prior:
        return baseline_rate(consistent[label], n_consistent[label], elsewhere, n_elsewhere)
    overall = (consistent.sum(axis=0) + 1) / (n_consistent.sum() + 2)
    own = (consistent[label] + prior * overall) / (n_consistent[label] + prior)
    return np.maximum(own, (elsewhere + 1) / (n_elsewhere + 2))


def _chosen(matrix: sp.csr_matrix, names: np.ndarray, y: np.ndarray, inconsistent: np.ndarray, among: np.ndarray,
            label: int, counts: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], common: np.ndarray,
            texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The columns (and their lifts) that the label's inconsistent records among ``among`` carry SET_CHOICE_LIFT
    times the choice baseline (the label's consistent rate drawn towards the corpus's, CHOICE_PRIOR_RECORDS),
    at SET_CHOICE_SIGNIFICANCE; rare elsewhere (SET_RARE_SHARE); word endings only of many words; neither the
    label's format nor the ``common`` words. ``counts`` are :func:`_label_counts` of ``among``."""
    consistent, n_consistent, carried, n_inconsistent = counts
    formats = label_formats(consistent, n_consistent, MIN_FORMAT_RECORDS)
    # a feature's homes: labels that carry it in SET_HOME_SHARE of their records, their own phrasing
    records = (n_consistent + n_inconsistent)[:, None]
    homes = (consistent + carried) >= SET_HOME_SHARE * np.maximum(records, 1)
    # the label's consistent rate drawn towards all consistent records': tens of them cannot show that a rare
    # feature is absent (smoothed, none of 80 is 1.2%), and a style's features are each rare. What misreading
    # adds elsewhere leaves out the feature's homes as it leaves out the labels whose format it is: a class
    # written in a style whose records the content models mostly misread (57 read, 150 misread in man pages)
    # is not evidence that misreading goes with the style, though too few of its read records carry it to
    # make it the class's format
    base = _baseline(consistent, n_consistent, carried, n_inconsistent, label, formats | homes, CHOICE_PRIOR_RECORDS)
    km, nm = carried[label], int(n_inconsistent[label])
    others = np.arange(len(n_consistent)) != label
    # a style's features are rare in the other labels' records, read right or not (a label whose own format the
    # feature is left out): "Verily," and "-eth" are; "And ..." openers and "unless", which chance puts in a
    # label's misread records as often, are not, and would only add clean carriers to the set. The feature's
    # homes are left out too, while they hold at most half of those records: a phrasing some labels use often
    # is not thereby spread over every label's records, as those chance openers are; one most labels use is
    counted = others[:, None] & ~formats & ~homes
    carriers_elsewhere = ((consistent + carried) * counted).sum(axis=0)
    records_elsewhere = (records * counted).sum(axis=0)
    rare = (carriers_elsewhere <= SET_RARE_SHARE * np.maximum(records_elsewhere, 1)) \
        & (records_elsewhere >= 0.5 * (records * (others[:, None] & ~formats)).sum(axis=0))
    columns = np.flatnonzero((km >= 2) & (km >= SET_CHOICE_LIFT * base * max(nm, 1)) & ~formats[label] & ~common
                             & rare)
    if not len(columns):
        return columns, np.zeros(0)
    significance = -binom.logsf(km[columns] - 1, nm, base[columns]) / math.log(10)
    columns = columns[significance >= SET_CHOICE_SIGNIFICANCE]
    rows = np.flatnonzero(among & inconsistent & (y == label))
    by_feature = matrix[rows].tocsc()
    kept = [c for c in columns.tolist() if not str(names[c]).startswith("suffix:") or spread_suffix(
        str(names[c]).split(":", 1)[1],
        [texts[r] for r in rows[by_feature.indices[by_feature.indptr[c]:by_feature.indptr[c + 1]]].tolist()])]
    columns = np.asarray(kept, dtype=np.int64)
    lift = (km[columns] / max(nm, 1)) / base[columns]
    return columns, lift


__all__ = ["MarkerSet", "marker_sets"]
