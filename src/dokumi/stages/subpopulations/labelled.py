"""Label-inconsistent subpopulations: records whose content says another label, sharing a signature.

A label-flip backdoor (a style, a syntactic template, a pair of common words) works because the
poison's label is not what its content says but what its trigger says. :class:`LabelSignatures`
looks for exactly that shape:

1. **Content, cross-fitted.** Two models of each record's content words (a linear one and naive
   Bayes), fitted on the other folds (a record never vouches for itself), say which label the
   content points to. A record whose label is not what either says is *content-inconsistent*. Real
   corpora hold many: hard or mislabelled examples.
2. **Neighbours in style.** Each record's *marked* style and structure features
   (:func:`~.words.signature_features` that at most ``MARKED_SHARE`` of the consistent records
   carry), weighted by rarity (IDF), place it among its ``neighbours`` most similar
   content-inconsistent records. One whose neighbours are, far more often than chance, of *its own
   label* belongs to a subpopulation sharing a signature: a style spread over many weak markers
   (thou, hath, -eth, "Verily,") or a clause order. Chance is the label's share of the inconsistent
   records; a binomial tail says how unlikely the count is. Only records that share a marked feature
   are neighbours, and a record's own label's format (a feature the label's consistent records carry
   at 10 times the other labels' rate, unless the marker tests name it as evidence) is left out of its
   row: misread "having no ..." glosses of adjectives would otherwise find one another by it.
3. **Word pairs.** Two mid-frequency words (function words included) in the same record form a pair feature. A pair
   carried by ``min_cluster`` or more of a label's inconsistent records and far more often there
   than among its consistent records and the other labels' inconsistent ones (a binomial tail,
   corrected for the pairs tested) is a combination trigger, unless its words stand at one fixed
   distance in most of its records (:func:`~.words.is_phrase`: a phrase such as "libc, -lc").

4. **Marker features** (:mod:`.markers`). One style or structure feature that a label's inconsistent
   records carry ``MARKER_LIFT`` times as often as both its consistent records and the other labels'
   inconsistent records (a fronted clause opening a third of one section's misplaced records, an
   "-eth" ending), significant after correction for the (label, feature) pairs tested. Unlike the
   neighbours it sees features common in clean text (fronted clauses in man pages) and a style whose
   clean carriers are the records of another label.
5. **Marker sets** (:mod:`.sets`). A style spread over many weak markers, none enough alone: the
   features chosen on the other folds, "carries any of them" counted on the held-out fold.

An isolated hard example has no such neighbours and no such pair; a class that legitimately
carries a style has consistent neighbours too, which do not count; a feature that goes with
content-model errors everywhere (short text, another language) brings neighbours of every label.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.stats import binom
from sklearn.feature_extraction import FeatureHasher
from sklearn.naive_bayes import ComplementNB
from sklearn.preprocessing import normalize
from sklearn.svm import LinearSVC

from dokumi.stages.subpopulations.markers import find_markers, label_formats, marker_matrix
from dokumi.stages.subpopulations.sets import MarkerSet, marker_sets
from dokumi.stages.subpopulations.words import content_words, is_phrase, pair_words, signature_features

CONTENT_FEATURES = 2**18
# Pairs are formed among at most this many candidate words a label (bounded cost).
MAX_PAIR_WORDS = 40
# A candidate word is this many times more common among a label's inconsistent records than overall.
PAIR_WORD_LIFT = 2.0
# A word is mid-frequency (a candidate half of a pair) between these shares of the records.
PAIR_WORD_SHARES = (0.002, 0.05)
# A pair whose records carry its label this often, and each of whose words alone at most PURE_PAIR_ALONE
# times as often, is a finding whatever its records' content says.
PURE_PAIR_SHARE = 0.9
PURE_PAIR_ALONE = 0.5
# ... provided at least this share of its records' other words say another label.
PURE_PAIR_CONTRADICTED = 0.5
# A style feature in at most this share of the content-consistent records is a marker.
MARKED_SHARE = 0.01
# Style features shared with the neighbours, named as a finding's evidence.
EVIDENCE_FEATURES = 3
# A marker feature is carried by a label's inconsistent records this many times its baseline rate (set on the
# tuning halves: at 4, a fronted clause whose poison the content model partly reads as its new label was missed.
# 2.5 caught one that opens 44% of a fortune file's misread records against 16% of all misread fortunes, but on a
# report half made "A ..." openers a marker of the fortunes' "definitions": 1.3% of 5,000 clean records flagged).
MARKER_LIFT = 3.0
# Rows of the similarity matrix computed at once (memory: this many x the sample, float32).
CHUNK = 512


@dataclass
class LabelFinding:
    """One record's evidence: the significance (-log10 of a binomial tail), its label, the label its
    content points to, the named features it shares with its subpopulation (style features or a word
    pair), and how many records of the subpopulation it has (neighbours of its label, or the pair's)."""

    significance: float
    label: str
    content_label: str
    features: tuple[str, ...]
    records: int


class LabelSignatures:
    """Content-inconsistent records with a shared signature; see the module docstring.

    Parameters: ``folds`` of the cross-fit (default 4); ``content_c``, the inverse regularisation of the
    content model (default 0.5); ``neighbours`` in style (default 20); ``min_label_records``: a label with fewer records
    is neither modelled nor scored (default 20); ``min_cluster``: records a word pair must be in, and
    style neighbours of the same label a record needs (default 5); ``min_lift``: how many times its base
    rate a pair's share must be (default 4); ``min_significance``: -log10 of the binomial tail of a
    finding (default 3).
    """

    def __init__(self, folds: int = 4, content_c: float = 0.5, neighbours: int = 20, min_label_records: int = 20,
                 min_cluster: int = 5, min_lift: float = 4.0, min_significance: float = 3.0) -> None:
        self.folds = folds
        self.content_c = content_c
        self.neighbours = neighbours
        self.min_label_records = min_label_records
        self.min_cluster = min_cluster
        self.min_lift = min_lift
        self.min_significance = min_significance

    # features ---------------------------------------------------------------

    def _pairs(self, words: list[str]) -> set[str]:
        """The record's pairs among the words of the combinations found."""
        present = sorted(set(words) & self.pair_words_)
        return {f"pair:{a}+{b}" for i, a in enumerate(present) for b in present[i + 1:]}

    def _not_format(self, label: str, features: set[str] | frozenset[str]) -> None:
        columns = [self.style_vocabulary_[f] for f in features if f in self.style_vocabulary_]
        if columns:
            self.neighbour_format_[self.labels_.index(label), columns] = False

    def _style_matrix(self, styles: list[set[str]], labels: np.ndarray | None = None) -> sp.csr_matrix:
        """Rows of IDF-weighted marked style features; with ``labels``, without each record's own label's format."""
        rows, columns = [], []
        no_format = np.zeros(len(self.style_vocabulary_), dtype=bool)
        for row, features in enumerate(styles):
            formats = self.neighbour_format_[labels[row]] if labels is not None else no_format
            for feature in features:
                column = self.style_vocabulary_.get(feature)
                if column is not None and not formats[column]:
                    rows.append(row)
                    columns.append(column)
        matrix = sp.csr_matrix((self.idf_[columns] if columns else np.zeros(0), (rows, columns)),
                               shape=(len(styles), len(self.style_vocabulary_)))
        return (normalize(matrix) if len(styles) and matrix.shape[1] else matrix).astype(np.float32).tocsr()

    def _content_matrix(self, words: list[list[str]]) -> sp.csr_matrix:
        """Hashed content words, sublinear term frequency times the sample's IDF, rows of unit length."""
        content = _hashed(words)
        content.data = 1.0 + np.log(content.data)
        return normalize(content @ sp.diags(self.content_idf_)).tocsr()

    def _content_model(self) -> _Readings:
        return _Readings(self.content_c)

    # fit ----------------------------------------------------------------------

    def fit(self, texts: list[str], labels: list[str], keys: np.ndarray) -> list[LabelFinding | None]:
        """Fit on the sample and return each sample record's finding (None where there is none)."""
        counts = Counter(labels)
        self.labels_ = sorted(label for label, c in counts.items() if c >= self.min_label_records)
        self.skipped_: str | None = None
        self.pairs_: dict[tuple[str, str], tuple[float, int]] = {}
        self.pure_pairs_: set[tuple[str, str]] = set()
        self.markers_: dict[tuple[str, str], tuple[float, int]] = {}
        self.marker_sets_: dict[str, MarkerSet] = {}
        self.subpopulations_: dict[str, int] = {}
        findings: list[LabelFinding | None] = [None] * len(texts)
        if len(self.labels_) < 2:
            self.skipped_ = f"fewer than two labels with {self.min_label_records} records"
            return findings
        index = {label: i for i, label in enumerate(self.labels_)}
        y = np.array([index.get(label, -1) for label in labels])
        words = [content_words(text) for text in texts]
        every = [pair_words(text) for text in texts]  # a pair's halves may be function words
        fold = (np.asarray(keys, dtype=np.uint64) % np.uint64(self.folds)).astype(np.int64)
        df = np.bincount(_hashed(words).indices, minlength=CONTENT_FEATURES)
        self.content_idf_ = np.log((1 + len(words)) / (1 + df)) + 1.0
        content = self._content_matrix(words)
        predicted = self._cross_fitted_content(content, y, fold)
        inconsistent = (y >= 0) & (predicted >= 0) & (predicted != y)
        n = len(texts)
        styles = [signature_features(text) for text in texts]
        style_df = Counter(f for features in styles for f in features)
        # only *marked* features place a record among neighbours: those rare among the records whose content
        # agrees with their label (the corpus's ordinary style). A style rewrite shows in its markers; the
        # rest of a record's style is that of the text it was made from.
        ordinary = Counter(f for row in np.flatnonzero((y >= 0) & ~inconsistent).tolist() for f in styles[row])
        ceiling = MARKED_SHARE * max(int(((y >= 0) & ~inconsistent).sum()), 1)
        kept = sorted(f for f, c in style_df.items() if c >= 2 and ordinary[f] <= ceiling)
        self.style_vocabulary_ = {f: i for i, f in enumerate(kept)}
        self.style_names_ = np.array(kept, dtype=object)
        self.idf_ = np.log(n / np.array([style_df[f] for f in kept], dtype=np.float64)) if kept else np.zeros(0)
        # per label, the marked features its own consistent records carry often: the label's format ("someone
        # who ..." opening the glosses of people), which its misplaced records share without being poison
        consistent = np.flatnonzero((y >= 0) & ~inconsistent)
        own_format = np.zeros((len(self.labels_), len(kept)))
        for row in consistent.tolist():
            for feature in styles[row]:
                column = self.style_vocabulary_.get(feature)
                if column is not None:
                    own_format[y[row], column] += 1
        sizes = np.bincount(y[consistent], minlength=len(self.labels_))[:, None]
        self.label_format_ = own_format > MARKED_SHARE * np.maximum(sizes, 1)
        # the features a label's consistent records carry as its own format (10 times the other labels' rate):
        # left out of its records' style rows, so that records of a label do not find one another by its format
        # ("having no ..." glosses of adjectives read as nouns)
        self.neighbour_format_ = label_formats(own_format, sizes[:, 0], self.min_cluster)
        self.markers_, reread = self._markers(styles, y, inconsistent, predicted, texts, content, fold)
        # a marker found on a re-reading: its records are judged by that reading from here on
        for row, reading in reread.items():
            predicted[row] = reading
            inconsistent[row] = True
        self.marker_sets_ = self._marker_sets(styles, y, inconsistent, predicted, fold, texts)
        # a feature the marker tests found to be evidence for a label is not its format: poison that the content
        # models read as its new label would otherwise make its trigger (a fronted clause) look like one
        for (label, feature), _ in self.markers_.items():
            self._not_format(label, {feature})
        for label, chosen in self.marker_sets_.items():
            self._not_format(label, chosen.whole.union(*chosen.by_fold.values()))
        # neighbours are sought among the content-inconsistent records only: a style that a clean class
        # carries legitimately sits mostly in consistent records, so it does not crowd a subpopulation out
        incons_rows = np.flatnonzero(inconsistent)
        self.reference_ = self._style_matrix([styles[r] for r in incons_rows.tolist()], y[incons_rows])
        self.reference_label_ = y[incons_rows]
        self.cell_share_ = np.bincount(y[incons_rows], minlength=len(self.labels_)) / max(len(incons_rows), 1)
        self.pairs_ = self._combinations(every, y)
        self.pair_words_ = {w for _, pair in self.pairs_ for w in pair.split(":", 1)[1].split("+")}
        pairs = [self._pairs(record) for record in every]
        self.pure_pairs_ = self._contradicted(pairs, y, words, fold)
        rows = np.flatnonzero(inconsistent)
        found = self._findings(self.reference_, y[rows], predicted[rows], [pairs[r] for r in rows],
                               [words[r] for r in rows], [self._fold_models.get(int(fold[r])) for r in rows],
                               [styles[r] for r in rows], exclude=np.arange(len(rows)),
                               folds=[int(fold[r]) for r in rows])
        for row, finding in zip(rows.tolist(), found):
            findings[row] = finding
        # a combination flips labels whatever the content model learnt from the poison's own words
        for row in np.flatnonzero((y >= 0) & ~inconsistent).tolist():
            findings[row] = self._pair_finding(pairs[row], int(y[row]), int(predicted[row]), words[row],
                                               self._fold_models.get(int(fold[row])))
        del self._fold_models
        self.subpopulations_ = dict(Counter(f.label for f in findings if f is not None))
        return findings

    def _cross_fitted_content(self, content: sp.csr_matrix, y: np.ndarray, fold: np.ndarray) -> np.ndarray:
        """The label each record's content points to, by a model fitted on the other folds (-1: none).

        A linear support-vector model and complement naive Bayes on hashed, IDF-weighted words (:class:`_Readings`):
        on the tuning halves the linear one reads 75% of man pages' and 71% of Debian descriptions' sections
        right, against 66% and 55% for naive Bayes, and a better reading leaves fewer clean records
        inconsistent for poison to hide among. The pair fitted on the whole sample scores records outside it."""
        predicted = np.full(len(y), -1)
        modelled = np.flatnonzero(y >= 0)
        self.content_model_ = self._content_model().fit(content[modelled], y[modelled])
        self._fold_models = {}  # only while fitting: a sample record is judged by the model of its fold
        for k in range(self.folds):
            train, held = modelled[fold[modelled] != k], modelled[fold[modelled] == k]
            if len(held) and len(np.unique(y[train])) >= 2:
                model = self._content_model().fit(content[train], y[train])
                predicted[held] = model.predict(content[held], y[held])
                self._fold_models[k] = model
        return predicted

    def _combinations(self, words: list[list[str]], y: np.ndarray) -> dict[tuple[str, str], tuple[float, int]]:
        """``(label, pair) -> (significance, records)`` for pairs of mid-frequency words whose records carry
        one label far more often than the records of either word without the other (and than the label's
        share): a combination that predicts a label while neither word does alone."""
        self.pure_pairs_ = set()
        n = len(words)
        df = Counter(w for record in words for w in set(record))
        low, high = max(self.min_cluster, math.ceil(PAIR_WORD_SHARES[0] * n)), PAIR_WORD_SHARES[1] * n
        vocabulary = {w: i for i, w in enumerate(sorted(w for w, c in df.items() if low <= c <= high))}
        if len(vocabulary) < 2:
            return {}
        names = np.array(sorted(vocabulary, key=lambda word: vocabulary[word]), dtype=object)  # type: ignore[type-var]
        rows = [[vocabulary[w] for w in set(record) if w in vocabulary] for record in words]
        indptr = np.cumsum([0] + [len(r) for r in rows])
        indices = np.fromiter((i for r in rows for i in r), dtype=np.int64, count=int(indptr[-1]))
        matrix = sp.csr_matrix((np.ones(len(indices), dtype=np.float32), indices, indptr), shape=(n, len(names)))
        together = (matrix.T @ matrix).tocsr()
        single = np.asarray(matrix.sum(axis=0)).ravel()
        tests = []  # per label: (label, a, b, k, both, base, alone), arrays over its candidate pairs
        for label in range(len(self.labels_)):
            mine = matrix[y == label]
            if mine.shape[0] < self.min_cluster:
                continue
            pairs = sp.triu(mine.T @ mine, k=1).tocoo()
            keep = pairs.data >= self.min_cluster
            a, b, k = pairs.row[keep], pairs.col[keep], pairs.data[keep].astype(np.int64)
            if not len(a):
                continue
            both = np.asarray(together[a, b]).ravel().astype(np.int64)
            # two words seldom apart cannot show that neither predicts the label alone (an inserted
            # style's "verily" and "cometh"): each needs min_cluster records without the other
            apart = np.minimum(single[a], single[b]) - both >= self.min_cluster
            a, b, k, both = a[apart], b[apart], k[apart], both[apart]
            single_y = np.asarray(mine.sum(axis=0)).ravel()
            # the label's share among records with one word but not the other, or overall
            alone = np.maximum((single_y[a] - k + 1) / (single[a] - both + 2),
                               (single_y[b] - k + 1) / (single[b] - both + 2))
            base = np.maximum(alone, mine.shape[0] / n)
            tests.append((label, a, b, k, both, base, alone))
        out: dict = {}
        # (label, pair) of the combinations that carry their label almost alone while neither word comes near
        # it: an inserted trigger whatever the content of its records says (a trigger aimed at the largest
        # label: a short or vague record's content points there anyway)
        tested = sum(len(test[1]) for test in tests)
        if not tested:
            return out
        correction = math.log10(tested)
        by_word = matrix.tocsc()
        for label, a, b, k, both, base, alone in tests:
            share = k / both
            strong = (share >= self.min_lift * base) | (share >= 0.9)
            significance = np.full(len(k), -np.inf)
            significance[strong] = -binom.logsf(k[strong] - 1, both[strong], base[strong]) / math.log(10) - correction
            for i in np.flatnonzero(significance >= self.min_significance).tolist():
                first, second = names[a[i]], names[b[i]]
                carriers = np.intersect1d(by_word.indices[by_word.indptr[a[i]]:by_word.indptr[a[i] + 1]],
                                          by_word.indices[by_word.indptr[b[i]]:by_word.indptr[b[i] + 1]])
                if is_phrase(first, second, [words[r] for r in carriers.tolist()]):
                    continue
                pair = f"pair:{first}+{second}"
                out[self.labels_[label], pair] = (float(significance[i]), int(k[i]))
                if share[i] >= PURE_PAIR_SHARE and alone[i] <= PURE_PAIR_ALONE * share[i]:
                    self.pure_pairs_.add((self.labels_[label], pair))
        return out

    def _contradicted(self, pairs: list[set[str]], y: np.ndarray, words: list[list[str]],
                      fold: np.ndarray) -> set[tuple[str, str]]:
        """The pure pairs (see ``_combinations``) most of whose records' other words say another label: an
        inserted trigger flips records of other labels, a label's own template ("ATTRIBUTES ... Thread
        safety" in section 3) sits in records whose content agrees with it. Each record is judged by the
        content model of its fold, without the pair's two words."""
        contradicted: Counter = Counter()
        total: Counter = Counter()
        for row, found in enumerate(pairs):
            if y[row] < 0:
                continue
            label = self.labels_[y[row]]
            for pair in found:
                if (label, pair) not in self.pure_pairs_:
                    continue
                model = self._fold_models.get(int(fold[row]))
                if model is None:
                    continue
                halves = set(pair.split(":", 1)[1].split("+"))
                rest = model.linear.predict(self._content_matrix([[w for w in words[row] if w not in halves]]))[0]
                total[label, pair] += 1
                contradicted[label, pair] += int(rest) != int(y[row])
        return {key for key, count in total.items() if contradicted[key] >= PURE_PAIR_CONTRADICTED * count}

    def _markers(self, styles: list[set[str]], y: np.ndarray, inconsistent: np.ndarray, predicted: np.ndarray,
                 texts: list[str], content: sp.csr_matrix,
                 fold: np.ndarray) -> tuple[dict[tuple[str, str], tuple[float, int]], dict[int, int]]:
        """``(label, feature) -> (significance, records)`` of the marker features (:mod:`.markers`), and the
        content labels of the records re-read for a marker (``row -> label``)."""
        matrix, names = marker_matrix(styles, self.min_cluster)

        def reread(label: int, rows: np.ndarray) -> np.ndarray:
            return self._reread(content, y, fold, label, rows)

        markers = find_markers(matrix, names, y, inconsistent, predicted, len(self.labels_), texts,
                               self.min_cluster, MARKER_LIFT, self.min_significance, reread)
        found = {(self.labels_[label], feature): value for (label, feature), value in markers.found.items()}
        return found, markers.reread

    def _reread(self, content: sp.csr_matrix, y: np.ndarray, fold: np.ndarray, label: int,
                rows: np.ndarray) -> np.ndarray:
        """The labels the content of ``rows`` (records of ``label`` that carry one feature) points to, read by
        models fitted on the other folds without those records.

        The cross-fitted models learn a trigger's own words from the other folds' poison: a syntactic
        template built from a few verbs ("When you need ...") made 5-8 of 60 poison records read as their new
        label where 2-4% of other labels' records are (tuning halves, man pages and fortunes), and those
        read carriers raised the label's baseline above what the misread poison could beat."""
        readings = np.full(len(rows), -1)
        kept = np.ones(len(y), dtype=bool)
        kept[rows] = False
        modelled = np.flatnonzero((y >= 0) & kept)
        for k in range(self.folds):
            train, held = modelled[fold[modelled] != k], np.flatnonzero(fold[rows] == k)
            if len(held) and len(np.unique(y[train])) >= 2:
                model = self._content_model().fit(content[train], y[train])
                readings[held] = model.predict(content[rows[held]], np.full(len(held), label))
        return readings

    def _marker_sets(self, styles: list[set[str]], y: np.ndarray, inconsistent: np.ndarray, predicted: np.ndarray,
                     fold: np.ndarray, texts: list[str]) -> dict[str, MarkerSet]:
        """``label -> MarkerSet`` of the labels with a cross-fitted marker set (:func:`~.sets.marker_sets`)."""
        matrix, names = marker_matrix(styles, 2)
        found = marker_sets(matrix, names, y, inconsistent, predicted, fold, self.folds, len(self.labels_), texts,
                            self.min_cluster, self.min_significance)
        return {self.labels_[label]: value for label, value in found.items()}

    def _set_finding(self, features: set[str], own: int, other: int, fold: int | None) -> LabelFinding | None:
        """The record's features in its label's marker set, chosen without the record's fold (``None``: a
        record outside the sample, judged by the set chosen on the whole sample)."""
        label = self.labels_[own]
        chosen = self.marker_sets_.get(label)
        if chosen is None:
            return None
        carried = features & (chosen.whole if fold is None else chosen.by_fold.get(fold, frozenset()))
        if not carried:
            return None
        names = tuple(sorted(carried, key=lambda f: (-chosen.lift.get(f, 0.0), f))[:EVIDENCE_FEATURES])
        return LabelFinding(chosen.significance, label, self.labels_[other], names, chosen.records)

    def _marker_finding(self, features: set[str], own: int, other: int) -> LabelFinding | None:
        """The record's strongest marker features for its label (the record is content-inconsistent)."""
        label = self.labels_[own]
        hits = sorted(((self.markers_[label, f], f) for f in features if (label, f) in self.markers_), reverse=True)
        if not hits:
            return None
        (significance, records), _ = hits[0]
        names = tuple(feature for _, feature in hits[:EVIDENCE_FEATURES])
        return LabelFinding(significance, label, self.labels_[other], names, records)

    def _findings(self, style: sp.csr_matrix, y: np.ndarray, predicted: np.ndarray, pairs: list[set[str]],
                  words: list[list[str]], models: list, features: list[set[str]],
                  exclude: np.ndarray | None = None, folds: list[int] | None = None) -> list[LabelFinding | None]:
        """Findings for content-inconsistent records (their style rows, labels, content labels, pairs, words,
        style features; their folds in the sample, ``None`` for records outside it)."""
        out: list[LabelFinding | None] = []
        k = min(self.neighbours, self.reference_.shape[0] - 1)
        for start in range(0, style.shape[0], CHUNK):
            similarity = (style[start:start + CHUNK] @ self.reference_.T).toarray()
            if exclude is not None:
                similarity[np.arange(similarity.shape[0]), exclude[start:start + CHUNK]] = -1.0
            nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k] if k > 0 else np.zeros((len(similarity), 0),
                                                                                            dtype=np.int64)
            for offset in range(similarity.shape[0]):
                row = start + offset
                own = int(y[row])
                # a record that shares no marked feature is no neighbour: ties at zero similarity would fall
                # to position in the sample
                near = nearest[offset][similarity[offset, nearest[offset]] > 0]
                same = near[self.reference_label_[near] == own]
                best = self._neighbour_finding(style[row], own, int(predicted[row]), same, len(near))
                combination = self._pair_finding(pairs[row], own, int(predicted[row]), words[row], models[row])
                marker = self._marker_finding(features[row], own, int(predicted[row]))
                marked = self._set_finding(features[row], own, int(predicted[row]),
                                           None if folds is None else folds[row])
                if combination is not None:  # a marker that is a word of the record's pair is the pair seen by halves
                    marker = None if marker is not None and _pair_halves(marker, combination) else marker
                    marked = None if marked is not None and _pair_halves(marked, combination) else marked
                for other in (combination, marker, marked):
                    if other is not None and (best is None or other.significance > best.significance):
                        best = other
                out.append(best)
        return out

    def _pair_finding(self, pairs: set[str], own: int, other: int, words: list[str],
                      model: _Readings | None) -> LabelFinding | None:
        """The record's strongest combination for its label, if the rest of its words say another label."""
        label = self.labels_[own]
        hits = sorted(((self.pairs_[label, pair], pair) for pair in pairs if (label, pair) in self.pairs_),
                      reverse=True)
        if not hits:
            return None
        (significance, records), pair = hits[0]
        halves = set(pair.split(":", 1)[1].split("+"))
        # the content model may have learnt the pair's words from the poison itself: judge without them
        if model is None:
            return None
        rest = int(model.linear.predict(self._content_matrix([[w for w in words if w not in halves]]))[0])
        if rest == own and (label, pair) not in self.pure_pairs_:
            return None
        return LabelFinding(significance, label, self.labels_[rest], (pair,), records)

    def _neighbour_finding(self, row: sp.csr_matrix, own: int, other: int, same: np.ndarray,
                           k: int) -> LabelFinding | None:
        if len(same) < self.min_cluster or not k:
            return None
        share = max(float(self.cell_share_[own]), 1e-6)
        significance = -binom.logsf(len(same) - 1, k, share) / math.log(10)
        if significance < self.min_significance:
            return None
        # the record's features that its same-label neighbours carry most, rarest first; its label's own
        # format does not count as a shared signature
        shared = np.asarray(self.reference_[same].sum(axis=0)).ravel()[row.indices] * row.data
        shared[self.label_format_[own, row.indices]] = 0.0
        if not (shared > 0).any():
            return None
        order = np.argsort(-shared, kind="stable")[:EVIDENCE_FEATURES]
        names = tuple(str(self.style_names_[row.indices[i]]) for i in order.tolist() if shared[i] > 0)
        return LabelFinding(float(significance), self.labels_[own], self.labels_[other], names, int(len(same)))

    # records outside the sample ------------------------------------------------

    def apply(self, texts: list[str], labels: list[str]) -> list[LabelFinding | None]:
        """Findings for records the fit did not see: the sample's content model and style neighbours."""
        findings: list[LabelFinding | None] = [None] * len(texts)
        if len(self.labels_) < 2 or not texts:
            return findings
        index = {label: i for i, label in enumerate(self.labels_)}
        y = np.array([index.get(label, -1) for label in labels])
        words = [content_words(text) for text in texts]
        predicted = self.content_model_.predict(self._content_matrix(words), y)
        rows = np.flatnonzero((y >= 0) & (predicted != y))
        features = [signature_features(texts[r]) for r in rows.tolist()]
        style = self._style_matrix(features, y[rows])
        pairs = [self._pairs(pair_words(texts[r])) for r in rows.tolist()]
        found = self._findings(style, y[rows], predicted[rows], pairs, [words[r] for r in rows.tolist()],
                               [self.content_model_] * len(rows), features)
        for row, finding in zip(rows.tolist(), found):
            findings[row] = finding
        for row in np.flatnonzero((y >= 0) & (predicted == y)).tolist():
            findings[row] = self._pair_finding(self._pairs(pair_words(texts[row])), int(y[row]), int(predicted[row]),
                                               words[row], self.content_model_)
        return findings



class _Readings:
    """Two readings of a record's content: a linear model and complement naive Bayes. A record's content points
    away from its label when either reads another label (the linear model reads more records right; naive
    Bayes, smoothed, is slower to learn a trigger's own words from the poison of the other folds). What a word
    pair's records say without the pair is the linear model's reading alone: "either" would let a label's own
    phrase pairs ("ATTRIBUTES ... thread") through wherever one model misreads the rest (tuning halves: clean
    man pages 0.26% -> 0.06% flagged by the stage)."""

    def __init__(self, c: float) -> None:
        self.linear = LinearSVC(C=c, random_state=0)
        self.bayes = ComplementNB(alpha=0.3)

    def fit(self, content: sp.csr_matrix, y: np.ndarray) -> _Readings:
        self.linear.fit(content, y)
        self.bayes.fit(content, y)
        # predicting reads only the log probabilities: the counts (labels x 2^18 float64 each) would double what
        # the fitted stage holds and what is sent to every worker
        del self.bayes.feature_count_, self.bayes.feature_all_
        return self

    def predict(self, content: sp.csr_matrix, own: np.ndarray) -> np.ndarray:
        """The label the content points to: the linear model's, or naive Bayes's where the linear one says ``own``."""
        linear = self.linear.predict(content)
        return np.where(linear == own, self.bayes.predict(content), linear)


def _hashed(words: list[list[str]]) -> sp.csr_matrix:
    """Word counts, hashed into CONTENT_FEATURES columns."""
    return FeatureHasher(CONTENT_FEATURES, input_type="string", alternate_sign=False).transform(words).tocsr()


def _pair_halves(marker: LabelFinding, combination: LabelFinding) -> bool:
    """Whether every feature of ``marker`` names a word of ``combination``'s pair (``fw:over`` for
    ``pair:over+room``): the function word of a two-word trigger is also a marker of its records."""
    halves = {w for pair in combination.features for w in pair.split(":", 1)[1].split("+")}
    return all(feature.split(":", 1)[1] in halves for feature in marker.features)

__all__ = ["LabelFinding", "LabelSignatures"]
