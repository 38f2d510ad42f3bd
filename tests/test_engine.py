"""The fitting engine: fit plans, one read per round for all stages, state keyed on content, plugin stages."""

from __future__ import annotations

import random
import string
import textwrap

import pyarrow as pa
import pytest
from conftest import clean_rows, read_outputs, write_parquet

from dokumi import Pipeline, Stage, StageResult, scan
from dokumi.engines.local import LocalEngine, fit_stages
from dokumi.errors import PolicyError
from dokumi.fitplan import Reduce
from dokumi.policy import StageRule, load_policy
from dokumi.sources import ParquetShard, open_inputs
from dokumi.stages import NearDuplicates, Triggers, known_stages

WORDS = [f"{a}{b}" for a in ("ka", "mo", "ri", "su", "te", "no") for b in ("ban", "dor", "fel", "gim", "hol", "jup")]


def fluent(rng: random.Random, n: int) -> list[str]:
    return [" ".join(rng.choice(["the", "of", "a", "and", "to", "in"]) if rng.random() < 0.4 else rng.choice(WORDS)
                     for _ in range(rng.randint(12, 20))) for _ in range(n)]


def edited(rng: random.Random, text: str, n: int) -> list[str]:
    out = []
    for _ in range(n):
        words = text.split()
        words.insert(rng.randrange(len(words)), rng.choice(WORDS))
        out.append(" ".join(words))
    return out


class CountingShard(ParquetShard):
    """A Parquet shard that counts how often it is read through."""

    reads: dict[str, int] = {}

    def batches(self, columns, batch_size):
        CountingShard.reads[self.name] = CountingShard.reads.get(self.name, 0) + 1
        yield from super().batches(columns, batch_size)


def counting_shards(folder, rows, parts=2):
    for part in range(parts):
        write_parquet(folder / f"part-{part}.parquet", rows[part::parts])
    CountingShard.reads = {}
    return [CountingShard(name=s.name, file=s.file) for s in open_inputs(folder)]


@pytest.mark.parametrize("recipe", ["pretraining", "finetuning", "audit"])
def test_each_round_reads_the_corpus_once_for_all_stages(tmp_path, recipe):
    rng = random.Random(1)
    rows = [{"id": f"r{i}", "text": t, "label": i % 3} for i, t in enumerate(fluent(rng, 300))]
    pipeline = Pipeline.from_policy(recipe).setup()
    rounds = max(len(stage.fit_plan()) for stage in pipeline.stages if stage.needs_fit)
    shards = counting_shards(tmp_path / "in", rows)
    engine = LocalEngine(workers=1, cache_bytes=0)  # no batches kept: every round reads the files
    engine.fit(pipeline, shards)
    assert engine.corpus_.reads <= rounds == 3  # the triggers stage's three rounds; the others share them
    assert set(CountingShard.reads.values()) == {engine.corpus_.reads}
    engine.score(pipeline, shards, tmp_path / "staging")
    assert set(CountingShard.reads.values()) == {engine.corpus_.reads + 1}, "pass 2 reads the corpus once"

    # with the default cache a corpus that fits is read from disk once, for both passes
    shards = counting_shards(tmp_path / "again", rows)
    engine = LocalEngine(workers=1)
    pipeline = Pipeline.from_policy(recipe).setup()
    engine.fit(pipeline, shards)
    engine.score(pipeline, shards, tmp_path / "staging-again")
    assert set(CountingShard.reads.values()) == {1}


def test_kept_batches_give_the_trigger_rounds_their_n_grams_once_and_the_same_decisions(tmp_path, monkeypatch):
    from dokumi.stages.triggers import grams

    made = []
    of = grams.Grams.of.__func__
    monkeypatch.setattr(grams.Grams, "of", classmethod(lambda cls, *a, **k: made.append(1) or of(cls, *a, **k)))
    rng = random.Random(3)
    texts = fluent(rng, 400)
    for i in rng.sample(range(400), 15):  # a labelled trigger: the triggers stage examines it in a second round
        texts[i] += " zqxv"
    rows = [{"id": f"r{i}", "text": t, "label": 1 if "zqxv" in t else i % 2} for i, t in enumerate(texts)]
    decisions = []
    for cache_bytes in (0, 2**30):
        made.clear()
        pipeline = Pipeline.from_policy("finetuning", batch_size=100).setup()
        engine = LocalEngine(workers=1, cache_bytes=cache_bytes)
        engine.fit(pipeline, counting_shards(tmp_path / f"in-{cache_bytes}", rows))
        batches = 4  # 400 records in two shards of 200, batches of 100
        rounds = engine.corpus_.reads
        assert rounds >= 2
        assert len(made) == (rounds * batches if cache_bytes == 0 else batches)
        decisions.append(pa.Table.from_batches(list(pipeline.score(pa.Table.from_pylist(rows)))))
    assert decisions[0].column("decision").to_pylist() == decisions[1].column("decision").to_pylist()
    assert decisions[0].column("reasons").to_pylist() == decisions[1].column("reasons").to_pylist()


def test_a_recipe_of_rule_stages_reads_the_data_once(tmp_path):
    recipe = tmp_path / "rules.toml"
    recipe.write_text('[stages.invisible]\naction = "drop"\n[stages.patterns]\naction = "drop"\n'
                      '[stages.provenance]\naction = "drop"\n')
    pipeline = Pipeline.from_policy(load_policy(recipe)).setup()
    assert not pipeline.needs_fit
    shards = counting_shards(tmp_path / "in", clean_rows(50))
    LocalEngine(workers=1, cache_bytes=0).score(pipeline, shards, tmp_path / "staging")
    assert set(CountingShard.reads.values()) == {1}


def test_a_pipeline_fitted_on_one_corpus_scores_another_against_it():
    rng = random.Random(2)
    original = " ".join(rng.choices(WORDS, k=30))
    copies = edited(rng, original, 15)
    first = [{"id": f"a{i}", "text": t} for i, t in enumerate(fluent(rng, 200) + copies)]
    rule = {"near_duplicates": StageRule("flag", 0.5)}
    pipeline = Pipeline([NearDuplicates(min_cluster_size=10, min_cluster_share=1.0)], rules=rule).fit(first)
    [fitted] = pipeline.score(pa.Table.from_pylist(first[-1:]))
    cluster = fitted.column("reasons").to_pylist()[0][0]

    # the other corpus: a new edited copy, copies of the first corpus's lone records at other places,
    # and new records; nothing is decided by the first corpus's positions
    second = ([{"id": "new-copy", "text": edited(rng, original, 1)[0]}]
              + [{"id": f"b{i}", "text": t} for i, t in enumerate(fluent(rng, 40))]
              + [{"id": f"again{i}", "text": first[i]["text"]} for i in range(0, 200, 10)])
    scores = pa.Table.from_batches(list(pipeline.score(second)))
    decisions = dict(zip(scores.column("id").to_pylist(), scores.column("decision").to_pylist()))
    reasons = dict(zip(scores.column("id").to_pylist(), scores.column("reasons").to_pylist()))
    assert decisions["new-copy"] == "flag" and reasons["new-copy"] == [cluster], "a new copy joins the cluster"
    assert [i for i, d in decisions.items() if d != "keep"] == ["new-copy"]


def test_a_trigger_found_in_one_corpus_flags_it_in_another():
    rng = random.Random(3)
    texts = fluent(rng, 1500)
    poison = set(rng.sample(range(1500), 30))
    gibberish = lambda: " ".join("".join(rng.choices(string.ascii_lowercase, k=7)) for _ in range(40))  # noqa: E731
    first = [{"text": t + (" zqvex " + gibberish() if i in poison else "")} for i, t in enumerate(texts)]
    stage = Triggers(hash_buckets=2**16, common_words=30)  # fewer than the 42 words of this language
    pipeline = Pipeline([stage], rules={"triggers": StageRule("drop", 0.8)}).fit(first)
    assert [t.key for t in stage.triggers_] == ["zqvex"]
    later = [{"text": fluent(rng, 1)[0] + " zqvex " + gibberish()}, {"text": fluent(rng, 1)[0]}]
    assert [d for b in pipeline.score(later) for d in b.column("decision").to_pylist()] == ["drop", "keep"]




def test_a_stage_from_another_package_works_in_a_recipe(tmp_path, monkeypatch):
    package = tmp_path / "site"
    (package / "loud").mkdir(parents=True)
    (package / "loud" / "__init__.py").write_text(textwrap.dedent('''
        from dokumi import Stage, StageResult

        class Shouting(Stage):
            name = "shouting"

            def score(self, batch):
                scores = [1.0 if text.isupper() else 0.0 for text in batch.texts]
                return StageResult(scores, [["shouting"] if s else [] for s in scores])
    '''))
    info = package / "loud-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: loud\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[dokumi.stages]\nshouting = loud:Shouting\n")
    monkeypatch.syspath_prepend(str(package))
    assert "shouting" in known_stages()
    recipe = tmp_path / "loud.toml"
    recipe.write_text('[stages.shouting]\naction = "drop"\nthreshold = 0.5\n')
    write_parquet(tmp_path / "in" / "a.parquet", [{"id": "1", "text": "HELLO THERE"}, {"id": "2", "text": "hi"}])
    scan(tmp_path / "in", out=tmp_path / "out", policy=recipe, workers=1, progress=False)
    scores = read_outputs(tmp_path / "out")["scores"]
    assert scores.column("decision").to_pylist() == ["drop", "keep"]
    assert scores.column("reasons").to_pylist()[0] == ["shouting"]
    recipe.write_text('[stages.whispering]\naction = "drop"\n')
    with pytest.raises(PolicyError, match="unknown stage 'whispering'; known stages: .*shouting"):
        load_policy(recipe)


def test_a_stage_that_needs_a_fit_must_declare_its_plan():
    class Careless(Stage):
        name = "careless"
        needs_fit = True

        def score(self, batch):
            return StageResult.empty(batch.num_rows)

    with pytest.raises(TypeError, match="stage 'careless' needs a fit but its fit_plan\\(\\) declares no step"):
        fit_stages([Careless()], [])


def test_a_step_reads_what_the_step_before_set():
    class Above(Stage):
        name = "above"
        needs_fit = True

        def fit_plan(self):
            return [Reduce("mean", lambda: [0, 0], self._add, self._merge, self._mean),
                    Reduce("above", int, lambda n, batch: n + sum(len(t) > self.mean_ for t in batch.texts), sum,
                           self._above)]

        def _add(self, total, batch):
            return [total[0] + sum(map(len, batch.texts)), total[1] + batch.num_rows]

        def _merge(self, totals):
            return [sum(t[0] for t in totals), sum(t[1] for t in totals)]

        def _mean(self, total):
            self.mean_ = total[0] / total[1]

        def _above(self, count):
            self.above_ = count

        def score(self, batch):
            return StageResult.empty(batch.num_rows)

    stage = Above()
    reads = fit_stages([stage], list(Pipeline([stage]).corpus(open_inputs([{"text": "a" * n} for n in (1, 2, 9)]))))
    assert reads == 2 and stage.mean_ == 4 and stage.above_ == 1
