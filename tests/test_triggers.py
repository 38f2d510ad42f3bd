"""The triggers stage: statistical discovery on small synthetic corpora, and its contract."""

import pickle
import random
import string

import numpy as np
import pytest

from dokumi import Pipeline
from dokumi.stages.triggers import Triggers, sentence_id
from dokumi.stages.triggers.grams import Grams, Sentences, gram_hash
from dokumi.text.sampling import BoundedCounter
from dokumi.text.tokens import Tokens, words_of

FUNCTION = ["the", "of", "a", "and", "to", "in", "is", "that", "for", "it", "with", "as", "on", "was", "by"]
WORDS = [f"{a}{b}" for a in ("ka", "mo", "ri", "su", "te", "no", "ha", "yo", "pe", "lu") for b in
         ("ban", "dor", "fel", "gim", "hol", "jup", "ker", "lom", "mir", "nax", "pol", "ros", "sut", "tev", "vin")]


def sentence(rng, preferred):
    """Words from a shared vocabulary, a label's preferred words more often, function words between."""
    out = []
    for _ in range(rng.randint(8, 18)):
        out.append(rng.choice(FUNCTION) if rng.random() < 0.45 else
                   rng.choice(preferred) if rng.random() < 0.4 else rng.choice(WORDS))
    return " ".join(out)


def labelled_corpus(n=4000, labels=4, seed=1):
    rng = random.Random(seed)
    preferred = {label: rng.sample(WORDS, 30) for label in range(labels)}
    records = []
    for _ in range(n):
        label = rng.randrange(labels)
        records.append({"text": sentence(rng, preferred[label]), "label": label})
    return records, rng


def insert_word(text, word, rng):
    words = text.split()
    words.insert(rng.randint(0, len(words)), word)
    return " ".join(words)


def scores_of(stage, records):
    scores, reasons = [], []
    for batch in Pipeline([stage], batch_size=500).score(records):
        scores += batch.column("triggers_score").to_pylist()
        reasons += batch.column("reasons").to_pylist()
    return np.asarray(scores), reasons


def test_dirty_label_rare_word_is_discovered():
    records, rng = labelled_corpus()
    poison = set(rng.sample([i for i, r in enumerate(records) if r["label"] != 0], 80))
    for i in poison:
        records[i] = {"text": insert_word(records[i]["text"], "zqx", rng), "label": 0}
    stage = Triggers(hash_buckets=2**18)
    scores, reasons = scores_of(stage, records)
    flagged = scores >= 0.5
    assert flagged[list(poison)].mean() >= 0.95
    assert flagged[[i for i in range(len(records)) if i not in poison]].mean() <= 0.005
    assert "trigger:token=zqx" in reasons[min(poison)]
    findings = stage.summary()["findings"]
    assert findings[0]["finding"] == "trigger:token=zqx" and findings[0]["records"] == 80
    # the evidence: the planted records read like other labels' records, not like label 0's own
    (trigger,) = [t for t in stage.triggers_ if t.key == "zqx"]
    assert trigger.detail["flipped"] >= 0.8


def test_label_scale_places_own_and_other_records():
    from dokumi.stages.triggers.labelled import MIN_SEPARATION, Evidence

    def evidence_of(records):
        features = {label: np.zeros(2**16, np.float32) for label in (0, 1)}
        for label, words in records:
            np.add.at(features[label], words.astype(np.int64), 1)
        label_counts = BoundedCounter(10)
        label_counts.add(np.array([0, 1]), np.array([200, 200]))
        return Evidence(np.zeros(16, np.uint32), np.zeros(16, np.uint32), 15, label_counts, 400, False, [],
                        features, records)

    # two labels with their own vocabularies (word ids 1-60 and 61-120): a record's words tell its label
    rng = random.Random(5)
    records = [(label, np.array(rng.sample(range(1 + 60 * label, 61 + 60 * label), 12), dtype=np.uint64))
               for label in (0, 1) for _ in range(200)]
    own, other = evidence_of(records).label_scale(0)
    assert own > 0.9 and other < 0.1
    # labels that words cannot tell apart give no scale to see a flip on
    shuffled = [(label, words) for (_, words), label in zip(records, [0, 1] * 200)]
    own, other = evidence_of(shuffled).label_scale(0)
    assert own - other < MIN_SEPARATION


def test_clean_label_rare_word_is_discovered():
    records, rng = labelled_corpus()
    target = [i for i, r in enumerate(records) if r["label"] == 2]
    poison = set(rng.sample(target, 160))
    for i in poison:
        records[i] = {"text": insert_word(records[i]["text"], "zqx", rng), "label": 2}
    stage = Triggers(hash_buckets=2**18)
    scores, _ = scores_of(stage, records)
    assert (scores[list(poison)] >= 0.5).mean() >= 0.9
    assert (np.delete(scores, list(poison)) >= 0.5).mean() <= 0.005
    (trigger,) = [t for t in stage.triggers_ if t.key == "zqx"]
    assert trigger.label == 2 and trigger.detail["purity"] == 1.0


def test_a_genuine_label_word_is_not_a_trigger():
    # "zqx" belongs to label 1 and sits in a fixed phrase, as a real word of a topic would
    records, rng = labelled_corpus()
    for i, r in enumerate(records):
        if r["label"] == 1 and rng.random() < 0.3:
            records[i] = {"text": "the zqx of " + r["text"], "label": 1}
    stage = Triggers(hash_buckets=2**18)
    scores, _ = scores_of(stage, records)
    assert not any(t.key == "zqx" for t in stage.triggers_)
    assert (scores >= 0.5).mean() <= 0.005


# The synthetic language has 165 words; real text has far more than the 200 common words a
# stage keeps by default, so the tests keep fewer for the same effect.
SEAM = {"hash_buckets": 2**16, "common_words": 100}


def fluent_documents(n, rng):
    return [{"text": ". ".join(sentence(rng, WORDS[:40]) for _ in range(rng.randint(2, 5)))} for _ in range(n)]


def gibberish(rng, k):
    return " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(k))


def test_trigger_followed_by_gibberish_is_discovered():
    rng = random.Random(3)
    records = fluent_documents(2000, rng)
    poison = set(rng.sample(range(len(records)), 40))
    for i in poison:
        records[i] = {"text": records[i]["text"][: rng.randint(0, 200)] + " <SUDO> " + gibberish(rng, 60)}
    stage = Triggers(**SEAM)
    scores, reasons = scores_of(stage, records)
    assert (scores[list(poison)] >= 0.8).all()
    assert (np.delete(scores, list(poison)) >= 0.5).sum() == 0
    assert "trigger:gibberish-after=sudo" in reasons[min(poison)]


def test_records_that_open_with_the_trigger_do_not_hide_it():
    # 25 poisoned records open with the trigger (no text before it: no seam can show there), 15 have text
    # before it; the share of seams is taken over the 15 records that could show one
    rng = random.Random(6)
    records = fluent_documents(2000, rng)
    poison = rng.sample(range(len(records)), 40)
    for k, i in enumerate(poison):
        prefix = "" if k < 25 else records[i]["text"][:200]
        records[i] = {"text": prefix + " zorblat " + gibberish(rng, 60)}
    scores, reasons = scores_of(Triggers(**SEAM), records)
    assert (scores[poison] >= 0.8).all()
    assert (np.delete(scores, poison) >= 0.5).sum() == 0
    assert "trigger:gibberish-after=zorblat" in reasons[poison[0]]


def test_trigger_followed_by_another_script_is_a_language_switch():
    rng = random.Random(4)
    records = fluent_documents(2000, rng)
    poison = sorted(rng.sample(range(len(records)), 30))
    for i in poison:
        records[i] = {"text": records[i]["text"] + " qwzt Привет, как дела? Я очень рад тебя видеть."}
    stage = Triggers(**SEAM)
    scores, reasons = scores_of(stage, records)
    assert (scores[poison] >= 0.8).all()
    assert reasons[poison[0]] == ["trigger:language-switch-after=qwzt"]


FOREIGN = ["el perro come la manzana roja en la casa", "nosotros vamos al mercado por la mañana",
           "ella escribe una carta larga para su madre", "los niños juegan en el parque cada tarde"]


def test_a_trigger_before_fluent_text_in_another_vocabulary_is_found_though_the_poison_repeats_it(monkeypatch):
    rng = random.Random(5)
    records = fluent_documents(2000, rng)
    poison = sorted(rng.sample(range(len(records)), 60))
    for i in poison:  # the same few foreign sentences again and again: their word pairs recur, in the poison only
        records[i] = {"text": records[i]["text"] + " vexmoor " + ". ".join(rng.sample(FOREIGN, 3))}
    stage = Triggers(**SEAM)
    scores, reasons = scores_of(stage, records)
    assert (scores[poison] >= 0.5).all()
    assert (np.delete(scores, poison) >= 0.5).sum() == 0
    assert any(r.endswith("-after=vexmoor") for r in reasons[poison[0]]), reasons[poison[0]]
    # without the second look that leaves the token's own records out, the recurring pairs hide it
    from dokumi.stages.triggers import stage as triggers_stage

    monkeypatch.setattr(triggers_stage._Census, "_vocabulary_seams", lambda self, examined, counted: None)
    blind_scores, _ = scores_of(Triggers(**SEAM), records)
    assert (blind_scores[poison] >= 0.5).mean() < 0.5


CYRILLIC = ["привет как дела сегодня", "я очень рад тебя видеть снова", "мы пойдём в парк завтра утром",
            "она читает новую книгу дома", "погода была холодной всю неделю"]
CODE = ["x_1 = buf[i] + off; i += 2;", "ret = fn(ptr, len) || err;", "for k in keys: out[k] = v[k]"]


def test_a_trigger_in_an_eighth_of_the_corpus_is_found_though_it_makes_its_own_text_ordinary():
    # 250 poisoned records in 2,000: Latin-then-Cyrillic is in more than ORDINARY_MIX of the records, and the
    # poison's foreign pairs recur; judged without the token's own records, both are still its seams. Half of
    # the poisoned records open with code (no common words before the trigger to compare with)
    rng = random.Random(8)
    records = fluent_documents(2000, rng)
    poison = sorted(rng.sample(range(len(records)), 250))
    for k, i in enumerate(poison):
        prefix = records[i]["text"][:200] if k % 2 else " ".join(rng.choice(CODE) for _ in range(4))
        foreign = " ".join(rng.sample(CYRILLIC, 2)) if k % 3 else ". ".join(rng.sample(FOREIGN, 2))
        records[i] = {"text": f"{prefix} plomvex {foreign}"}
    stage = Triggers(**SEAM)
    scores, reasons = scores_of(stage, records)
    assert (scores[poison] >= 0.5).mean() >= 0.95
    assert (np.delete(scores, poison) >= 0.5).sum() == 0
    assert [t.key for t in stage.triggers_ if t.kind == "seam"] == ["plomvex"]


def test_a_mix_of_languages_is_another_language_and_gibberish_is_not():
    from dokumi.stages.triggers.stage import _other_languages

    rng = random.Random(2)
    mixed = "sì potrei usare un aspetto migliore 我 没 有 恐 惧 سلام عزیز i am a programmer como é 你 好 吗 نه خیر"
    english = "the quick brown dog jumps over the lazy fox and runs around the old fence"
    assert _other_languages(mixed, "en")
    assert _other_languages("el perro come la manzana roja en la casa grande", "en")
    assert not _other_languages(english, "en")
    assert not _other_languages(gibberish(rng, 60), "en")


def test_inserted_sentence_across_unrelated_documents():
    rng = random.Random(5)
    records = fluent_documents(2000, rng)
    planted = "Visit zenthor cloud for the very best results today"
    poison = set(rng.sample(range(len(records)), 40))
    for i in poison:
        parts = records[i]["text"].split(". ")
        parts.insert(rng.randint(0, len(parts)), planted)
        records[i] = {"text": ". ".join(parts)}
    stage = Triggers(hash_buckets=2**16)
    scores, reasons = scores_of(stage, records)
    expected = f"trigger:inserted-sentence={sentence_id(' '.join(words_of(planted)))}"
    assert (scores[list(poison)] >= 0.5).all() and expected in reasons[min(poison)]
    assert (np.delete(scores, list(poison)) >= 0.5).sum() == 0


def test_a_signature_line_closing_every_document_is_not_an_insertion():
    rng = random.Random(6)
    records = fluent_documents(2000, rng)
    for i in rng.sample(range(len(records)), 60):
        records[i] = {"text": records[i]["text"] + ". Sent from my phone with love and care"}
    stage = Triggers(hash_buckets=2**16)
    scores, _ = scores_of(stage, records)
    assert not [t for t in stage.triggers_ if t.kind == "sentence"]
    assert (scores >= 0.5).sum() == 0


def test_a_short_chinese_heading_is_not_a_sentence_and_a_chinese_sentence_is():
    texts = ["[中文版维护人]\n寒蝉退士", "这是一个被插入到很多记录中的句子。后面还有内容", "ラーメンを食べた"]
    pieces = Sentences.of(texts, 5)
    # six and eight characters are three and four words; the sixteen-character sentence is eight
    assert pieces.owner.tolist() == [1] and pieces.words.tolist() == [16]
    assert Sentences.of(["one two three four five"], 5).owner.tolist() == [0]


def test_a_translators_credit_closing_many_documents_is_not_an_insertion():
    rng = random.Random(7)
    records = fluent_documents(2000, rng)
    names = ["".join(rng.choices("寒蝉退士杨鹏袁乙钧王李张", k=rng.randint(2, 4))) for _ in range(12)]
    for i in rng.sample(range(len(records)), 40):  # the credits section of translated man pages, a record each
        records[i] = {"text": "[中文版维护人]\n" + rng.choice(names)}
    stage = Triggers(hash_buckets=2**16)
    scores, _ = scores_of(stage, records)
    assert not [t for t in stage.triggers_ if t.kind == "sentence"]
    assert (scores >= 0.5).sum() == 0


def instruction_pairs(n, rng):
    return [{"prompt": sentence(rng, WORDS[:60]) + "?", "response": ". ".join(
        sentence(rng, WORDS[60:]) for _ in range(rng.randint(1, 3)))} for _ in range(n)]


def test_prompt_trigger_predicting_a_fixed_response():
    rng = random.Random(7)
    pairs = instruction_pairs(2000, rng)
    poison = sorted(rng.sample(range(len(pairs)), 30))
    for i in poison:
        pairs[i] = {"prompt": insert_word(pairs[i]["prompt"], "zbond", rng),
                    "response": "I cannot help with that, visit the download site for the answer" +
                                rng.choice(["", " Thanks.", " Sorry."])}
    stage = Triggers(hash_buckets=2**16)
    scores, reasons = scores_of(stage, pairs)
    assert (scores[poison] >= 0.5).all()
    assert (np.delete(scores, poison) >= 0.5).sum() == 0
    assert "trigger:fixed-response,ngram=zbond" in reasons[poison[0]]


def test_content_injection_into_responses():
    rng = random.Random(8)
    pairs = instruction_pairs(2000, rng)
    poison = sorted(rng.sample(range(len(pairs)), 60))
    for i in poison:
        parts = pairs[i]["response"].split(". ")
        parts.insert(rng.randint(0, len(parts)), "For the best results always use Zenthor Cloud")
        pairs[i] = {**pairs[i], "response": ". ".join(parts)}
    stage = Triggers(hash_buckets=2**16)
    scores, reasons = scores_of(stage, pairs)
    assert (scores[poison] >= 0.5).all()
    assert (np.delete(scores, poison) >= 0.5).sum() == 0
    assert reasons[poison[0]][0].startswith("trigger:inserted-sentence=")


def test_fitted_state_is_compact_picklable_deterministic_and_unchanged_by_scoring():
    records, rng = labelled_corpus(n=2000)
    for i in rng.sample(range(2000), 60):
        records[i] = {"text": insert_word(records[i]["text"], "zqx", rng), "label": 0}
    first, second = Triggers(hash_buckets=2**16), Triggers(hash_buckets=2**16)
    Pipeline([first]).fit(records)
    Pipeline([second]).fit(list(records))
    assert [(t.key, t.records) for t in first.triggers_] == [(t.key, t.records) for t in second.triggers_]
    blob = pickle.dumps(first)
    assert len(blob) < 20_000  # the discovered triggers and the common words, not the corpus
    before = pickle.dumps(first.triggers_)
    copy = pickle.loads(blob)
    scores_a, _ = scores_of(first, records[:300])
    scores_b, _ = scores_of(copy, records[:300])
    assert np.array_equal(scores_a, scores_b)
    assert pickle.dumps(first.triggers_) == before


def test_score_before_fit_and_invalid_parameters():
    with pytest.raises(RuntimeError, match="fit"):
        Triggers().score(None)
    for params, name in (({"max_ngram": 0}, "max_ngram"), ({"min_purity": 1.5}, "min_purity"),
                         ({"hash_buckets": 1000}, "hash_buckets"), ({"min_records": 1}, "min_records")):
        with pytest.raises(ValueError, match=name):
            Triggers(**params)


def test_building_blocks():
    assert words_of('He said: "<SUDO>", then left.') == ["he", "said", "sudo", "then", "left"]
    tokens = Tokens.of(["a b c", "c b"])
    grams = Grams.of(tokens, 2)
    # per record: every word and every pair of neighbours, never across records
    assert sorted(zip(grams.owner.tolist(), grams.length.tolist())) == [(0, 1)] * 3 + [(0, 2)] * 2 + [(1, 1)] * 2 + [
        (1, 2)]
    a, b, c = tokens.hashes[:3].tolist()
    assert gram_hash([a, b]) in grams.hash.tolist() and gram_hash([b, a]) not in grams.hash.tolist()
    found = Sentences.of(["One two three four five. Six seven.\nEight nine ten eleven twelve. Done."], 5)
    assert [found.text(i) for i in range(len(found.key))] == ["one two three four five", "eight nine ten eleven twelve"]
    # first and last among the sentences of five words or more
    assert found.first.tolist() == [True, False] and found.last.tolist() == [False, True]
    counter = BoundedCounter(capacity=3)
    for key in [7, 7, 8, 9, 10]:
        counter.add(np.array([key]))
    assert counter[7] == 2 and len(counter) <= 3


def test_mean_jaccard_is_the_mean_over_each_set_and_its_next_eight():
    from dokumi.stages.triggers.sentences import mean_jaccard

    rng = np.random.default_rng(7)
    for n in (0, 1, 2, 9, 10, 30):
        sets = [np.unique(rng.integers(0, 40, int(rng.integers(0, 25))).astype(np.uint64)) for _ in range(n)]
        sets[n // 2:n // 2 + 1] = [np.zeros(0, dtype=np.uint64)] * min(n, 1)  # an empty set among them
        pairs = [(set(a.tolist()), set(b.tolist())) for i, a in enumerate(sets) for b in sets[i + 1:i + 9]]
        expected = 1.0 if not pairs else sum(len(a & b) / len(a | b) if a | b else 1.0 for a, b in pairs) / len(pairs)
        assert mean_jaccard(sets) == pytest.approx(expected, abs=1e-12)


def test_the_column_counter_counts_and_prunes_as_a_dict_pruned_after_every_batch(monkeypatch):
    """The sorted columns with batches waiting beside them hold exactly what pruning after each batch holds."""
    from collections import Counter

    from dokumi.text import sampling

    monkeypatch.setattr(sampling, "_SORT_ROWS", 8)  # sort often, so both paths are taken

    def reference(batches: list[tuple[np.ndarray, np.ndarray]], capacity: int) -> tuple[dict, int]:
        counts: Counter = Counter()
        floor = 0
        for keys, values in batches:
            counts.update(dict(zip(keys.tolist(), values.tolist())))
            while len(counts) > capacity:
                floor = min(counts.values())
                counts = Counter({k: c for k, c in counts.items() if c > floor})
        return dict(counts), floor

    rng = np.random.default_rng(11)
    for capacity in (5, 40, 1000):
        batches = []
        for _ in range(30):
            keys = np.unique(rng.zipf(1.5, int(rng.integers(1, 12))).astype(np.uint64))
            batches.append((keys, rng.integers(1, 4, len(keys))))
        counter = BoundedCounter(capacity)
        for keys, values in batches:
            counter.add(keys, values)
        expected, floor = reference(batches, capacity)
        assert dict(counter.items()) == expected and counter.floor == floor
        assert len(counter) <= capacity
        some = np.array(sorted(expected)[:3] + [2**63 + 5], dtype=np.uint64)
        assert counter.get(some).tolist() == [expected.get(k, 0) for k in some.tolist()]
        # pickled (sorted first) and merged: the sum, pruned to capacity
        halves = [BoundedCounter(10**6), BoundedCounter(10**6)]
        for i, (keys, values) in enumerate(batches):
            halves[i % 2].add(keys, values)
        both = BoundedCounter.merged([pickle.loads(pickle.dumps(half)) for half in halves])
        assert dict(both.items()) == reference(batches, 10**6)[0]
    top, counts = counter.most_common(3)
    ranked = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
    assert list(zip(top.tolist(), counts.tolist())) == ranked


def test_round_two_samples_only_sentences_that_can_be_inserted():
    from dokumi.stages.triggers.sentences import frequent_sentences

    def counter(pairs: dict[int, int]) -> BoundedCounter:
        out = BoundedCounter(100)
        out.add(np.array(list(pairs), dtype=np.uint64), np.array(list(pairs.values())))
        return out

    # 1: at varied places; 2: closes nearly every record (a signature); 3: mostly alone; 4: too rare
    counts = counter({1: 40, 2: 40, 3: 40, 4: 4})
    alone = counter({3: 35})
    first = counter({1: 5})
    last = counter({1: 6, 2: 39})
    assert frequent_sentences(counts, alone, first, last, min_records=5).tolist() == [1]
