"""Label-inconsistent subpopulations: records whose content says another label, sharing a signature.

A label-flip backdoor (a style, a syntactic template, a pair of common words) works because the
poison's label is not what its content says but what its trigger says. :class:`LabelSignatures`
looks for exactly that shape, in two cross-fitted steps (each record is scored by models fitted
on the other folds, so a record never vouches for itself):

1. **Content.** A naive Bayes model of each record's content words says which label the content
   points to. A record whose label is not that one is *content-inconsistent*. Real corpora hold
   many such records: hard or mislabelled examples.
2. **A shared signature.** For every label ``y``, a logistic regression on named signature features
   (style and structure from :func:`~.words.signature_features`; pairs of mid-frequency content
   words that occur in the same record) learns to tell ``y``'s content-inconsistent records from
   every other record. Its out-of-fold probability for a record, divided by the share of such
   records (the *lift*), says how much the record's signature resembles *other* inconsistent
   records of its label. A style spread over many weak markers (thou, hath, -eth, "Verily,")
   adds up in the regression where no single marker would be significant.

A record is a finding when it is content-inconsistent and its lift is at least ``min_lift``. An
isolated hard example shares no signature with the rest (lift near 1); a class that legitimately
carries a style has consistent records with that style too, so the style does not single out its
inconsistent ones; a feature that goes with content-model errors everywhere (short text, another
language) is as common among every label's inconsistent records, which are negatives here.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction import FeatureHasher
from sklearn.linear_model import LogisticRegression
from sklearn.naive_bayes import ComplementNB

from dokumi.stages.subpopulations.words import content_words, signature_features

CONTENT_FEATURES = 2**18
# Pairs are formed among the first this many distinct mid-frequency words of a record (bounded cost).
MAX_PAIR_WORDS = 30
# A word is mid-frequency (a candidate half of a pair) between these shares of the records.
PAIR_WORD_SHARES = (0.002, 0.05)
MAX_PAIR_VOCABULARY = 3000
# A signature feature in more than this share of the records is left out.
MAX_FEATURE_SHARE = 0.1
# Signature features named as a finding's evidence.
EVIDENCE_FEATURES = 3


@dataclass
class LabelFinding:
    """One record's evidence: its lift, its label, the label its content points to (empty when unknown),
    its signature features that pull hardest towards its label's inconsistent records, and how many
    inconsistent records of its label reach ``min_lift`` (the subpopulation's size in the sample)."""

    lift: float
    label: str
    content_label: str
    features: tuple[str, ...]
    records: int


class LabelSignatures:
    """Content-inconsistent records whose signature resembles their label's other inconsistent records.

    Parameters: ``folds`` of the cross-fit (default 4); ``smoothing`` of the content model (additive,
    default 0.3); ``regularisation`` of the signature models (scikit-learn's ``C``, default 1);
    ``min_label_records``: a label with fewer records is neither modelled nor scored (default 20);
    ``min_cluster``: a signature feature must occur in this many records to be used, and a label needs
    this many inconsistent records to be modelled (default 5); ``min_lift``: the lift of a finding
    (default 4).
    """

    def __init__(self, folds: int = 4, smoothing: float = 0.3, regularisation: float = 1.0,
                 min_label_records: int = 20, min_cluster: int = 5, min_lift: float = 4.0) -> None:
        self.folds = folds
        self.smoothing = smoothing
        self.regularisation = regularisation
        self.min_label_records = min_label_records
        self.min_cluster = min_cluster
        self.min_lift = min_lift

    # features ---------------------------------------------------------------

    def _pairs(self, words: list[str]) -> list[str]:
        seen: dict[str, None] = {}
        for word in words:
            if word in self.pair_vocabulary_ and word not in seen:
                seen[word] = None
                if len(seen) == MAX_PAIR_WORDS:
                    break
        ordered = sorted(seen)
        return [f"pair:{a}+{b}" for i, a in enumerate(ordered) for b in ordered[i + 1:]]

    def _signature_matrix(self, texts: list[str], words: list[list[str]]) -> sp.csr_matrix:
        rows, columns = [], []
        for row, (text, record) in enumerate(zip(texts, words)):
            for feature in signature_features(text) | set(self._pairs(record)):
                column = self.vocabulary_.get(feature)
                if column is not None:
                    rows.append(row)
                    columns.append(column)
        return sp.csr_matrix((np.ones(len(rows), dtype=np.float64), (rows, columns)),
                             shape=(len(texts), len(self.vocabulary_)))

    @staticmethod
    def _content_matrix(words: list[list[str]]) -> sp.csr_matrix:
        content = FeatureHasher(CONTENT_FEATURES, input_type="string", alternate_sign=False).transform(words).tocsr()
        content.data = np.minimum(content.data, 1.0)
        return content

    # fit ----------------------------------------------------------------------

    def fit(self, texts: list[str], labels: list[str], keys: np.ndarray) -> list[LabelFinding | None]:
        """Fit on the sample and return each sample record's finding (None where there is none)."""
        counts = Counter(labels)
        self.labels_ = sorted(label for label, c in counts.items() if c >= self.min_label_records)
        self.skipped_: str | None = None
        self.models_: dict[str | None, tuple[np.ndarray, float]] = {}
        self.priors_: dict[str, float] = {}
        self.subpopulations_: dict[str, int] = {}
        findings: list[LabelFinding | None] = [None] * len(texts)
        if len(self.labels_) < 2:
            self.skipped_ = f"fewer than two labels with {self.min_label_records} records"
            return findings
        index = {label: i for i, label in enumerate(self.labels_)}
        y = np.array([index.get(label, -1) for label in labels])
        words = [content_words(text) for text in texts]
        fold = (np.asarray(keys, dtype=np.uint64) % np.uint64(self.folds)).astype(np.int64)
        content = self._content_matrix(words)
        predicted = self._cross_fitted_content(content, y, fold)
        inconsistent = (y >= 0) & (predicted >= 0) & (predicted != y)
        self._fit_vocabulary(texts, words)
        signature = self._signature_matrix(texts, words)
        lifts = np.zeros(len(texts))
        general = self._cross_fitted_logit(signature, inconsistent, y >= 0, fold, None)
        extended = sp.hstack([signature, sp.csr_matrix(general[:, None])]).tocsr()
        for label in range(len(self.labels_)):
            positive = inconsistent & (y == label)
            if positive.sum() < self.min_cluster or (~inconsistent & (y == label)).sum() < self.min_cluster:
                continue
            logits = self._cross_fitted_logit(extended, positive, y == label, fold, self.labels_[label])
            prior = positive.sum() / (y == label).sum()
            self.priors_[self.labels_[label]] = float(prior)
            lifts[positive] = np.exp(logits[positive]) / (prior / (1 - prior))
        flagged = inconsistent & (lifts >= self.min_lift)
        self.subpopulations_ = {self.labels_[label]: int(count) for label, count in
                                zip(*np.unique(y[flagged], return_counts=True))}
        for row in np.flatnonzero(flagged).tolist():
            findings[row] = LabelFinding(float(lifts[row]), labels[row], self.labels_[predicted[row]],
                                         self._evidence(signature[row], labels[row]),
                                         self.subpopulations_[labels[row]])
        return findings

    def _cross_fitted_content(self, content: sp.csr_matrix, y: np.ndarray, fold: np.ndarray) -> np.ndarray:
        """The label each record's content points to, by a model fitted on the other folds (-1: none).

        Complement naive Bayes on hashed words: a strong text classifier at a thousandth of a logistic
        regression's cost over dozens of labels. The folds' counts, summed, make the model that scores
        records outside the sample."""
        predicted = np.full(len(y), -1)
        modelled = np.flatnonzero(y >= 0)
        self.content_model_ = ComplementNB(alpha=self.smoothing).fit(content[modelled], y[modelled])
        for k in range(self.folds):
            train, held = modelled[fold[modelled] != k], modelled[fold[modelled] == k]
            if len(held) and len(np.unique(y[train])) >= 2:
                model = ComplementNB(alpha=self.smoothing).fit(content[train], y[train])
                predicted[held] = model.predict(content[held])
        return predicted

    def _fit_vocabulary(self, texts: list[str], words: list[list[str]]) -> None:
        n = len(texts)
        df = Counter(w for record in words for w in set(record))
        low, high = max(3, math.ceil(PAIR_WORD_SHARES[0] * n)), PAIR_WORD_SHARES[1] * n
        middle = sorted((w for w, c in df.items() if low <= c <= high), key=lambda w: (-df[w], w))
        self.pair_vocabulary_ = set(middle[:MAX_PAIR_VOCABULARY])
        self.vocabulary_ = {}
        features = Counter(f for text, record in zip(texts, words)
                           for f in signature_features(text) | set(self._pairs(record)))
        # a feature of most records (a full stop, "the") marks no subpopulation and only adds noise
        kept = sorted(f for f, c in features.items() if self.min_cluster <= c <= MAX_FEATURE_SHARE * n)
        self.vocabulary_ = {f: i for i, f in enumerate(kept)}
        self.feature_names_ = np.array(kept, dtype=object)

    def _cross_fitted_logit(self, features: sp.csr_matrix, positive: np.ndarray, rows: np.ndarray,
                            fold: np.ndarray, label: str | None) -> np.ndarray:
        """Out-of-fold log-odds that a record of ``rows`` is ``positive``, from its features (0 elsewhere).

        With ``label`` None, the model tells content-inconsistent records from consistent ones over every
        label: what goes with content-model errors anywhere. Per label, the same over that label's records,
        the general log-odds being one more feature; the folds' averaged model is kept for records outside
        the sample."""
        logits = np.zeros(len(positive))
        coef_sum, bias_sum, fitted = np.zeros(features.shape[1]), 0.0, 0
        for k in range(self.folds):
            train = rows & (fold != k)
            held = np.flatnonzero(rows & (fold == k))
            if positive[train].sum() < 2 or (~positive[train]).sum() < 2 or not len(held):
                continue
            model = LogisticRegression(C=self.regularisation, solver="liblinear")
            model.fit(features[train], positive[train])
            logits[held] = model.decision_function(features[held])
            coef_sum += model.coef_[0]
            bias_sum += float(model.intercept_[0])
            fitted += 1
        if fitted:
            self.models_[label] = (coef_sum / fitted, bias_sum / fitted)
        return logits

    def _evidence(self, row: sp.csr_matrix, label: str) -> tuple[str, ...]:
        """The record's signature features with the largest positive weights in its label's model."""
        coef = self.models_[label][0]
        columns = row.indices
        weights = coef[columns]
        order = np.argsort(-weights, kind="stable")[:EVIDENCE_FEATURES]
        return tuple(str(self.feature_names_[columns[i]]) for i in order.tolist() if weights[i] > 0)

    # records outside the sample ------------------------------------------------

    def apply(self, texts: list[str], labels: list[str]) -> list[LabelFinding | None]:
        """Findings for records the fit did not see, by the models fitted on the whole sample."""
        findings: list[LabelFinding | None] = [None] * len(texts)
        if not self.subpopulations_ or not texts:
            return findings
        words = [content_words(text) for text in texts]
        predicted = self.content_model_.predict(self._content_matrix(words))
        signature = self._signature_matrix(texts, words)
        coef, bias = self.models_[None]
        general = signature @ coef + bias
        for row, label in enumerate(labels):
            if label not in self.subpopulations_ or self.labels_[predicted[row]] == label:
                continue
            coef, bias = self.models_[label]
            logit = float((signature[row] @ coef[:-1])[0] + coef[-1] * general[row] + bias)
            prior = self.priors_[label]
            lift = math.exp(logit) / (prior / (1 - prior))
            if lift >= self.min_lift:
                findings[row] = LabelFinding(lift, label, self.labels_[predicted[row]],
                                             self._evidence(signature[row], label), self.subpopulations_[label])
        return findings


__all__ = ["LabelFinding", "LabelSignatures"]
