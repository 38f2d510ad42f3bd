"""The invisible stage: hidden characters flagged, their legitimate uses left alone."""

import pyarrow as pa
import pytest

from dokumi.errors import PolicyError
from dokumi.records import Batch
from dokumi.stages.invisible import InvisibleCharacters


def score(texts, **params):
    stage = InvisibleCharacters(**params)
    return stage.score(Batch(pa.record_batch({"text": texts}), "t", pa.array(range(len(texts)))))


def test_zero_width_inside_a_word_is_flagged_with_its_count():
    result = score(["pass\u200bword", "pa\u200bss\u200bword", "password"])
    assert result.reasons[0] == ["trigger:zero-width,count=1"]
    assert result.reasons[1] == ["trigger:zero-width,count=2"]
    assert result.scores[2] == 0 and result.reasons[2] == []
    # graded: two hidden characters weigh more than one
    assert 0.5 <= result.scores[0] < result.scores[1] <= 1.0


def test_bidi_override_is_flagged_even_in_right_to_left_text():
    result = score(["abc \u202edcba\u202c", "שלום \u202eabc"])
    assert all(s >= 0.9 for s in result.scores)
    assert result.reasons[0][0].startswith("trigger:bidi-control")


def test_byte_order_mark_only_at_text_start():
    result = score(["\ufeffhello", "hel\ufefflo"])
    assert result.scores[0] == 0
    assert result.scores[1] > 0


def test_persian_joiners_next_to_persian_letters_are_orthography():
    # ZWNJ between letters, before a space and after an Arabic comma, as Persian typing leaves them
    texts = ["می\u200cتونی", "همه میگن\u200c :)", "آره،\u200c من", "NASA\u200cمی"]
    assert list(score(texts).scores) == [0, 0, 0, 0]


def test_joiner_inside_a_latin_word_is_flagged():
    assert score(["tri\u200dgger"]).scores[0] > 0.5


def test_emoji_sequences_keep_their_joiners():
    family = "\U0001F468\u200d\U0001F469\u200d\U0001F467"
    assert score([f"our family {family} trip"]).scores[0] == 0


def test_japanese_and_accented_text_is_clean():
    result = score(["私はロボットです。Tシャツを買った", "café crème, Ångström, naïve"])
    assert list(result.scores) == [0, 0]


def test_max_count_bounds_the_count():
    result = score(["a\u200b" * 50], max_count=3)
    assert result.reasons[0] == ["trigger:zero-width,count=3"]


def test_invalid_parameters_are_named():
    with pytest.raises(ValueError, match="max_count"):
        InvisibleCharacters(max_count=0)
    with pytest.raises(PolicyError, match="not found"):
        InvisibleCharacters(rules="no-such-pack")
