"""MinHash signatures: bit-exact with datasketch, batch-independent, normalised as documented."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest
from datasketch import LeanMinHash, MinHash

from dokumi.minhash import MinHasher, datasketch_permutations, shingle_hash32, word_hash, word_hashes

TEXTS = [
    "The quick brown fox jumps over the lazy dog, again and again!",
    "",
    "Hello world",
    "word",
    "a" * 30 + " bb cc dd ee ff gg " + "x" * 17,  # words of 30 and 17 bytes: several 8-byte chunks
    "Ünïcödé — “quoted” text: naïve café, 東京 は 大きい",
    "end",
    "start of text",
    "  ...  ",
    "x y z w v u t s r q p",
]


def _datasketch_signature(hasher: MinHasher, text: str) -> np.ndarray:
    minhash = MinHash(num_perm=hasher.num_perm, seed=hasher.seed, hashfunc=shingle_hash32, scheme=hasher.scheme)
    shingles = hasher.shingles(text)
    if shingles:
        minhash.update_batch(shingles)
    return minhash.hashvalues


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
def test_signatures_equal_datasketch_with_the_shingle_hashfunc(scheme):
    hasher = MinHasher(num_perm=64, seed=7, scheme=scheme)
    signatures = hasher.signatures(TEXTS)
    assert signatures.shape == (len(TEXTS), 64) and signatures.dtype == np.uint32
    for text, signature in zip(TEXTS, signatures):
        assert np.array_equal(signature, _datasketch_signature(hasher, text)), text


@pytest.mark.parametrize("scheme", ["affine32", "legacy"])
def test_permutations_are_datasketchs(scheme):
    a, b = datasketch_permutations(32, 3, scheme)
    reference = MinHash(num_perm=32, seed=3, scheme=scheme).permutations
    assert np.array_equal(a, np.asarray(reference[0])) and np.array_equal(b, np.asarray(reference[1]))


def test_long_texts_spanning_permutation_blocks_match_datasketch():
    rng = random.Random(1)
    vocabulary = [f"token{i}" for i in range(500)]
    long_text = " ".join(rng.choices(vocabulary, k=6000))  # more shingles than one block holds
    texts = ["short one here"] + [" ".join(rng.choices(vocabulary, k=rng.randint(1, 400))) for _ in range(40)]
    texts.insert(5, long_text)
    for scheme in ("affine32", "legacy"):
        hasher = MinHasher(num_perm=128, scheme=scheme)
        signatures = hasher.signatures(texts)
        for index in (0, 5, 6, len(texts) - 1):
            assert np.array_equal(signatures[index], _datasketch_signature(hasher, texts[index]))


def test_a_stored_signature_loads_as_lean_minhash():
    hasher = MinHasher()
    signature = hasher.signatures(["one two three four five six seven eight"])[0]
    lean = hasher.lean_minhash(signature)
    assert isinstance(lean, LeanMinHash)
    reference = LeanMinHash(seed=1, hashvalues=_datasketch_signature(hasher, "one two three four five six seven eight"),
                            scheme="affine32")
    assert lean.jaccard(reference) == 1.0
    # and a round trip through datasketch's byte format keeps the values
    buffer = bytearray(lean.bytesize())
    lean.serialize(buffer)
    assert np.array_equal(LeanMinHash.deserialize(buffer).hashvalues, signature)


def test_signatures_do_not_depend_on_how_texts_are_batched():
    hasher = MinHasher(num_perm=32)
    together = hasher.signatures(TEXTS)
    alone = np.concatenate([hasher.signatures([text]) for text in TEXTS])
    assert np.array_equal(together, alone)
    # words do not run from one text into the next when texts touch in the buffer
    assert np.array_equal(hasher.signatures(["end", "start"])[0], hasher.signatures(["end"])[0])


def test_arrow_input_with_nulls_equals_list_input():
    hasher = MinHasher(num_perm=16)
    arrow = pa.array(["alpha beta", None, "gamma"], type=pa.string())
    assert np.array_equal(hasher.signatures(arrow), hasher.signatures(["alpha beta", "", "gamma"]))
    chunked = pa.chunked_array([arrow.slice(0, 1), arrow.slice(1)])
    assert np.array_equal(hasher.signatures(chunked), hasher.signatures(arrow))


def test_a_text_without_words_gets_the_empty_signature():
    signatures = MinHasher(num_perm=8).signatures(["", " ,.;! ", "—"])
    assert (signatures == 0xFFFFFFFF).all()


def test_normalisation_lowercases_and_strips_punctuation():
    hasher = MinHasher()
    assert hasher.words("Hello, World! It's 2024_x café—naïve “ok”") == [
        "hello", "world", "it", "s", "2024_x", "café", "naïve", "ok"]
    assert hasher.signatures(["Hello, WORLD: it is me!"])[0].tolist() == hasher.signatures(
        ["hello world it is me"])[0].tolist()


def test_shingles_are_word_ngrams_and_short_texts_are_one_shingle():
    hasher = MinHasher(ngram=3)
    assert hasher.shingles("a b c d") == [b"a b c", b"b c d"]
    assert hasher.shingles("a b") == [b"a b"]
    assert hasher.shingles("") == []


def test_vectorised_shingle_hashes_equal_the_reference_hash():
    hasher = MinHasher(ngram=2)
    hashes, offsets = hasher.shingle_hashes(["alpha beta gamma", "x", "averyveryverylongword delta"])
    assert offsets.tolist() == [0, 2, 3, 4]
    expected = [b"alpha beta", b"beta gamma", b"x", b"averyveryverylongword delta"]
    assert (hashes >> np.uint64(32)).tolist() == [shingle_hash32(s) for s in expected]


def test_vectorised_word_hashes_equal_the_reference_hash_per_word():
    texts = ["Alpha, beta!", "", "Ünïcode wörds — and a_b", "averyveryverylongword", "...", "x y"]
    hashes, offsets = word_hashes(texts)
    hasher = MinHasher()
    expected = [[word_hash(w.encode("utf-8")) for w in hasher.words(text)] for text in texts]
    assert [len(e) for e in expected] == [2, 0, 4, 1, 0, 2]
    assert offsets.tolist() == np.cumsum([0] + [len(e) for e in expected]).tolist()
    assert [hashes[offsets[i]:offsets[i + 1]].tolist() for i in range(len(texts))] == expected


def test_word_hashes_drop_words_shorter_than_min_chars_counting_characters_not_bytes():
    texts = ["a bb c", "ц цц 中 éé é"]
    hashes, offsets = word_hashes(texts, min_chars=2)
    assert offsets.tolist() == [0, 1, 3]
    assert hashes.tolist() == [word_hash(w.encode("utf-8")) for w in ["bb", "цц", "éé"]]


def test_chinese_and_japanese_characters_are_words_of_their_own():
    # written without spaces: a clause is not one word, so shingles and statistics see its characters
    assert MinHasher().words("学校へ行きます。 ls -l 한국어 문장") == [
        "学", "校", "へ", "行", "き", "ま", "す", "ls", "l", "한국어", "문장"]
    assert word_hashes(["a bb c"], min_chars=2)[0].tolist() == [word_hash(b"bb")]  # ASCII-only path


def test_word_hash_separates_words_of_equal_prefix_and_different_length():
    words = [b"a", b"a\x00", b"abcdefgh", b"abcdefghi", b"abcdefgh" * 2, b"abcdefgh" * 2 + b"x"]
    assert len({word_hash(w) for w in words}) == len(words)


def test_estimated_similarity_tracks_jaccard():
    rng = random.Random(3)
    words = [f"w{i}" for i in range(5000)]
    base = rng.sample(words, 400)
    changed = base[:300] + rng.sample(words, 100)  # shares most 1-gram shingles with base
    hasher = MinHasher(num_perm=256, ngram=1)
    a, b = hasher.signatures([" ".join(base), " ".join(changed)])
    truth = len(set(base) & set(changed)) / len(set(base) | set(changed))
    assert abs((a == b).mean() - truth) < 0.1


@pytest.mark.parametrize("kwargs, name", [
    ({"num_perm": 0}, "num_perm"), ({"ngram": 0}, "ngram"), ({"seed": -1}, "seed"), ({"scheme": "sha1"}, "scheme"),
])
def test_invalid_parameters_are_named(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MinHasher(**kwargs)


def test_empty_texts_between_words_add_no_empty_word():
    # "x" ends one text and "é" opens the one after an empty text, with no separator between
    hashes, offsets = word_hashes(["a x", "", "é", "", "", "zz"])
    assert offsets.tolist() == [0, 2, 2, 3, 3, 3, 4]
    assert hashes.tolist() == [word_hash(w.encode("utf-8")) for w in ["a", "x", "é", "zz"]]


def test_the_words_of_one_ascii_text_are_those_of_a_batch():
    """``words_of`` reads ASCII text without a batch; it must split exactly as the batch tokeniser does."""
    import string

    from dokumi.text.tokens import Tokens, words_of

    rng = random.Random(3)
    alphabet = string.printable + "\x00\x7f"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(3000)]
    texts += ["API-Key_2 e.g. x", "tell  me", ""]
    tokens = Tokens.of(texts)
    for i, text in enumerate(texts):
        assert words_of(text) == [tokens.word(j) for j in range(tokens.offsets[i], tokens.offsets[i + 1])]
    assert words_of("API-Key_2 e.g.") == ["api", "key_2", "e", "g"]
