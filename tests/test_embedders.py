"""Embedders: the built-in hashing/TF-IDF/SVD embedder, lexical vectors, precomputed and optional models."""

from __future__ import annotations

import pickle
import random
import sys

import numpy as np
import pytest

from dokumi.embedders import (
    ColumnEmbedder,
    HashingSvdEmbedder,
    LexicalVectors,
    SentenceTransformerEmbedder,
    make_embedder,
)

TOPICS = {
    "sea": "ocean wave salt tide harbour ship sailor anchor coral reef fish boat".split(),
    "music": "violin melody chord rhythm orchestra piano concert tempo singer song note drum".split(),
    "law": "court judge statute contract plaintiff verdict appeal lawyer trial evidence clause jury".split(),
}


def topic_texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    names = sorted(TOPICS)
    return [" ".join(rng.choices(TOPICS[names[i % 3]], k=rng.randint(6, 12))) for i in range(n)]


def test_lexical_vectors_are_unit_norm_and_match_identical_texts_only():
    texts = topic_texts(60)
    lexical = LexicalVectors().fit(texts)
    vectors = lexical.transform([texts[0], texts[0], texts[1], "zyzzyva quokka"])
    norms = np.sqrt(np.asarray(vectors.multiply(vectors).sum(axis=1)).ravel())
    assert np.allclose(norms, 1.0, atol=1e-5)
    cosine = (vectors @ vectors.T).toarray()
    assert cosine[0, 1] == pytest.approx(1.0, abs=1e-5)
    assert cosine[0, 2] < 0.9
    # words never seen in the sample still count, with the weight of the rarest words
    assert cosine[3, 3] == pytest.approx(1.0, abs=1e-5)
    assert cosine[3, 0] == pytest.approx(0.0)


def test_lexical_vectors_ignore_case_punctuation_and_single_letters():
    lexical = LexicalVectors().fit(topic_texts(60) + ["Salt water", "a b c"])
    vectors = lexical.transform(["Salt, WATER!", "salt water", "a salt water b", "salt salt water", "x y z"])
    cosine = (vectors @ vectors.T).toarray()
    assert cosine[0, 1] == pytest.approx(1.0, abs=1e-5)
    assert cosine[0, 2] == pytest.approx(1.0, abs=1e-5)  # single letters are not words
    assert 0.5 < cosine[0, 3] < 0.99  # a repeated word counts, sublinearly
    assert vectors[4].nnz == 0


def test_lexical_vectors_send_no_lookup_table_to_workers():
    lexical = LexicalVectors().fit(topic_texts(200))
    restored = pickle.loads(pickle.dumps(lexical))
    # the table from 2^20 hashed features to positions (4 MB) is rebuilt after unpickling, not pickled
    assert len(pickle.dumps(lexical)) < 100_000
    texts = topic_texts(20, seed=1) + ["zyzzyva quokka"]
    assert (restored.transform(texts) != lexical.transform(texts)).nnz == 0


def test_hashing_embedder_is_deterministic_and_places_topics_together():
    texts = topic_texts(300)
    first = HashingSvdEmbedder(dimensions=16, seed=3).fit(texts).transform(texts)
    second = HashingSvdEmbedder(dimensions=16, seed=3).fit(texts).transform(texts)
    assert first.dtype == np.float32 and first.shape == (300, 16)
    assert np.array_equal(first, second)
    unit = first / np.linalg.norm(first, axis=1, keepdims=True)
    cosine = unit @ unit.T
    same_topic = cosine[0, 3]  # texts 0 and 3 share a topic, 0 and 1 do not
    assert same_topic > cosine[0, 1] + 0.3


def test_hashing_embedder_state_is_bounded_and_pickles_to_the_same_vectors():
    texts = topic_texts(200)
    embedder = HashingSvdEmbedder(dimensions=8, max_features=10).fit(texts)
    assert embedder.components_.shape == (8, 10)
    restored = pickle.loads(pickle.dumps(embedder))
    assert np.array_equal(restored.transform(texts[:5]), embedder.transform(texts[:5]))
    described = embedder.describe()
    assert described["name"] == "hashing" and described["fitted_dimensions"] == 8
    assert described["vocabulary_features"] == 10


def test_hashing_embedder_fit_transform_equals_fit_then_transform():
    texts = topic_texts(300)
    embedder = HashingSvdEmbedder(dimensions=16)
    together = embedder.fit_transform(texts)
    assert np.allclose(together, embedder.transform(texts), atol=1e-5)
    assert not np.allclose(together, 0)


def test_hashing_embedder_with_fewer_words_than_dimensions_reduces_its_rank():
    embedder = HashingSvdEmbedder(dimensions=64).fit(["red apple", "red apple pie", "green apple pie"] * 3)
    vectors = embedder.transform(["red apple", "blue sky"])
    assert vectors.shape[1] == embedder.components_.shape[0] < 64
    assert not vectors[1].any()  # no known word: no position


def test_column_embedder_checks_sizes_and_values():
    embedder = ColumnEmbedder().fit([[0.0, 1.0, 2.0], [1.0, 1.0, 1.0]])
    assert embedder.transform([[3.0, 2.0, 1.0]]).shape == (1, 3)
    with pytest.raises(ValueError, match="expected 3"):
        embedder.transform([[1.0, 2.0]])
    with pytest.raises(ValueError, match="NaN"):
        embedder.transform([[1.0, float("nan"), 2.0]])
    with pytest.raises(ValueError, match="null or empty"):
        ColumnEmbedder().fit([[1.0], None])


def test_make_embedder_reads_the_spec():
    assert isinstance(make_embedder("hashing", dimensions=32), HashingSvdEmbedder)
    assert isinstance(make_embedder("column"), ColumnEmbedder)
    model = make_embedder("sentence-transformers:/models/minilm")
    assert isinstance(model, SentenceTransformerEmbedder) and model.model == "/models/minilm"
    for bad in ("word2vec", "sentence-transformers", "sentence-transformers:"):
        with pytest.raises(ValueError, match="embedder"):
            make_embedder(bad)


def test_sentence_transformers_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(ImportError, match=r"dokumi\[embeddings\]"):
        SentenceTransformerEmbedder("/models/minilm").fit(["text"])


def test_sentence_transformers_model_is_not_pickled():
    embedder = SentenceTransformerEmbedder("/models/minilm")
    embedder._model = object()
    assert pickle.loads(pickle.dumps(embedder))._model is None
