"""The Dask executor: same decisions and outputs as the local one, distributed fitting, and no record
lost or duplicated when a worker dies mid-scan."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pickle
import random
import re
import string
from collections import Counter
from types import SimpleNamespace

import distributed
import numpy as np
import pyarrow as pa
import pyarrow.parquet
import pytest
from conftest import PLUMBING, assert_accounted, clean_rows, read_outputs, write_jsonl, write_parquet

from dokumi import InputError, Pipeline, Policy, Stage, StageResult, scan
from dokumi.cli import main
from dokumi.engines.dask import DaskEngine
from dokumi.fitplan import GroupByKey, Reduce, shared_key_groups
from dokumi.policy import StageRule
from dokumi.records import Columns
from dokumi.sources import open_inputs
from dokumi.stages import InvisibleCharacters
from dokumi.stages.near_duplicates import NearDuplicates
from dokumi.stages.triggers import Triggers

KEYS = pa.schema([("key", pa.uint64()), ("member", pa.string())])


class Repeats(Stage):
    """Exact repeats of a text, found by grouping records on a content hash (a GroupByKey step)."""

    name = "repeats"
    needs_fit = True

    def fit_plan(self):
        return [GroupByKey("repeats", self._keys, KEYS, self._groups)]

    def _keys(self, batch):
        keys = [int.from_bytes(hashlib.blake2b(t.encode(), digest_size=8).digest(), "little") for t in batch.texts]
        return pa.table({"key": pa.array(keys, pa.uint64()), "member": pa.array(batch.ids, pa.string())})

    def _groups(self, groups, partial):
        self.copies_ = {}
        for table in groups:
            for members in table.column("members").to_pylist():
                self.copies_.update(dict.fromkeys(members, len(members)))

    def score(self, batch):
        copies = [self.copies_.get(i, 1) for i in batch.ids]
        return StageResult([min(1.0, (c - 1) / 4) for c in copies], [[f"repeat:copies={c}"] if c > 1 else []
                                                                    for c in copies])


class RareWords(Stage):
    """Share of a record's words found in fewer than two documents (a Reduce step)."""

    name = "rare_words"
    needs_fit = True

    def fit_plan(self):
        return [Reduce("document-frequency", Counter, _count_words, _sum_counters, self._finish)]

    def _finish(self, partial):
        self.document_frequency_ = dict(partial)

    def score(self, batch):
        scores, reasons = [], []
        for text in batch.texts:
            words = text.lower().split()
            rare = sum(self.document_frequency_.get(w, 0) < 2 for w in words)
            scores.append(rare / len(words) if words else 0.0)
            reasons.append([f"rare-words:count={rare}"] if rare else [])
        return StageResult(scores, reasons)


def _count_words(documents, batch):
    for text in batch.texts:
        documents.update(set(text.lower().split()))
    return documents


def _sum_counters(partials):
    return sum(partials, Counter())


class MeanLength(Stage):
    """Two rounds: the mean length, then (reading what the first set) the share of records above it."""

    name = "mean_length"
    needs_fit = True

    def fit_plan(self):
        return [Reduce("mean", lambda: (0, 0), _add_length, _sum_pairs, self._mean),
                Reduce("above", int, self._count_above, sum, self._share)]

    def _mean(self, total):
        self.mean_ = total[0] / max(total[1], 1)
        self.records_ = total[1]

    def _count_above(self, above, batch):
        return above + sum(len(t) > self.mean_ for t in batch.texts)

    def _share(self, above):
        self.share_above_ = above / max(self.records_, 1)

    def score(self, batch):
        return StageResult([min(1.0, len(t) / (10 * self.mean_)) for t in batch.texts],
                           [[] for _ in batch.texts])


def _add_length(total, batch):
    return total[0] + sum(map(len, batch.texts)), total[1] + batch.num_rows


def _sum_pairs(totals):
    return sum(t[0] for t in totals), sum(t[1] for t in totals)


class ExitOnce(Stage):
    """Kills its worker process on a shard's second batch, once per marker file."""

    name = "exit_once"

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def score(self, batch):
        if batch.rows[0].as_py() > 0:
            try:
                os.close(os.open(self.marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                pass
            else:
                os._exit(1)
        return StageResult.empty(batch.num_rows)


def corpus(folder, shards=4, rows=30):
    """Shards whose records repeat texts across shards, and carry hidden characters."""
    records = clean_rows(shards * rows)
    for i, record in enumerate(records):
        if i % 9 == 0:
            record["text"] = f"the same announcement, number {i % 2}"
        if i % 9 == 4:
            record["text"] += "\u200b"
    for shard in range(shards):
        write_parquet(folder / f"part-{shard}.parquet", records[shard::shards])
    return folder


def fitting_policy():
    return Policy(
        name="dask-test",
        stages=[Repeats(), RareWords(), MeanLength(), InvisibleCharacters()],
        rules={"repeats": StageRule("drop", 0.5), "rare_words": StageRule("flag", 0.4),
               "mean_length": StageRule("flag", 0.5), "invisible": StageRule("drop", 0.5)},
    )


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as local_cluster:
        yield local_cluster


@pytest.fixture(params=["files", "dask"])
def handoff(request, monkeypatch, tmp_path):
    """Partials handed over through files of a folder of the engine's own, as on a cluster this machine
    starts, or through Dask, as on a joined cluster (the fixture's). Yields the files the driver read."""
    from dokumi.engines import dask as engine_module

    read: list[str] = []
    if request.param == "files":
        monkeypatch.setattr(DaskEngine, "_hands_over_files", lambda self, joined: True)
        reader = engine_module._read_handoff

        def counted(path):
            read.append(path)
            return reader(path)

        monkeypatch.setattr(engine_module, "_read_handoff", counted)  # in the driver: workers read unseen
    yield request.param, read
    if request.param == "files":
        assert read, "the driver read no partial from a file"
        assert all(".dask-handoff" in path for path in read), "inside the scan's staging folder"
        assert not list(tmp_path.rglob(".dask-handoff")), "the engine removes its handoff folder"


def comparable(manifest):
    return {k: v for k, v in manifest.items() if k not in ("created", "warnings")}


def test_two_worker_cluster_decides_and_writes_exactly_like_the_local_executor(tmp_path, cluster, handoff):
    inputs = corpus(tmp_path / "in")
    local = scan(inputs, out=tmp_path / "local", policy=fitting_policy(), workers=1, batch_size=16)
    on_dask = scan(inputs, out=tmp_path / "dask", policy=fitting_policy(), batch_size=16, engine="dask",
                scheduler=cluster.scheduler_address)
    assert_accounted(tmp_path / "dask", 120)
    local_scores = read_outputs(tmp_path / "local")["scores"]
    dask_scores = read_outputs(tmp_path / "dask")["scores"]
    assert dask_scores.equals(local_scores)
    reasons = Counter(r.split(":")[0] for rs in dask_scores.column("reasons").to_pylist() for r in rs)
    assert reasons["repeat"] == 14 and reasons["trigger"] == 13, "repeats span shards; the shuffle must join them"
    assert reasons["rare-words"] > 0
    assert on_dask.decisions == local.decisions and on_dask.decisions["drop"] == 27 and on_dask.decisions["flag"]
    assert comparable(on_dask.manifest) == comparable(local.manifest)  # outputs' bytes, hashes, counts, params
    assert on_dask.warnings == local.warnings
    listing = [sorted(p.name for p in (tmp_path / run).iterdir()) for run in ("dask", "local")]
    assert listing[0] == listing[1]
    assert len(cluster.scheduler_info["workers"]) == 2, "a joined cluster must be left running"


def test_distributed_fit_learns_the_same_state_as_a_local_fit(tmp_path, cluster):
    inputs = corpus(tmp_path / "in", shards=5, rows=12)
    shards = open_inputs(inputs)
    local = Pipeline([Repeats(), RareWords(), MeanLength()]).fit(inputs)
    distributed_pipeline = Pipeline([Repeats(), RareWords(), MeanLength()]).setup()
    with DaskEngine(scheduler=cluster.scheduler_address) as engine:
        assert engine.fit(distributed_pipeline, shards) == []
    assert distributed_pipeline.stages[0].copies_ == local.stages[0].copies_
    assert distributed_pipeline.stages[1].document_frequency_ == local.stages[1].document_frequency_
    # the second round read what the first set, on the workers
    assert distributed_pipeline.stages[2].share_above_ == local.stages[2].share_above_ > 0
    # rows 0, 18, 36, 54 share one text and rows 9, 27, 45 another, spread over five shards
    assert sorted(Counter(local.stages[0].copies_.values()).items()) == [(3, 3), (4, 4)]


def _dispatcher(homes, costs, workers):
    from dokumi.engines.dask import _Dispatcher

    sent = []

    def submit(shard, worker):
        sent.append((shard, worker))
        return SimpleNamespace(key=f"task-{shard}")

    return _Dispatcher(list(range(len(costs))), homes, costs, submit, lambda: workers), sent


def test_a_first_round_hands_the_costliest_shards_to_the_workers_in_turn_as_they_free_up():
    dispatch, sent = _dispatcher([None] * 5, [1.0, 5.0, 3.0, 2.0, 4.0], {"a": 1, "b": 1})
    futures = dispatch.start()
    # two tasks a worker (one running, one queued behind it), the costliest first, one worker after the other
    assert sent == [(1, "a"), (4, "b"), (2, "a"), (3, "b")]
    assert [f.key for f in futures] == ["task-1", "task-4", "task-2", "task-3"]
    assert [f.key for f in dispatch.finished(futures[1])] == ["task-0"]  # b freed first: it takes the last
    assert sent[-1] == (0, "b")
    assert dispatch.finished(futures[0]) == []  # nothing left to send
    assert [f.key for f in dispatch.futures()] == [f"task-{i}" for i in range(5)]
    assert dispatch.shard_of(futures[2]) == 2


def test_a_worker_takes_its_own_shards_first_and_another_s_only_where_that_ends_the_pass_sooner():
    # a's shards 0-2 (costs 4, 4, 1); b's shard 3 costs 10: b is busier than a would be without shard 2
    dispatch, sent = _dispatcher(["a", "a", "a", "b"], [4.0, 4.0, 1.0, 10.0], {"a": 1, "b": 1})
    futures = dispatch.start()
    assert sent == [(0, "a"), (3, "b"), (1, "a")]  # b holds 10; reading shard 2 again (2) would end at 12 > 9
    assert [f.key for f in dispatch.finished(futures[0])] == ["task-2"] and sent[-1] == (2, "a")
    # b's shard 3 costs 1: after it, b reads shard 2 again (1 + 2) before a would be done with it (4 + 4 + 1)
    dispatch, sent = _dispatcher(["a", "a", "a", "b"], [4.0, 4.0, 1.0, 1.0], {"a": 1, "b": 1})
    futures = dispatch.start()
    assert sent == [(0, "a"), (3, "b"), (1, "a"), (2, "b")]
    assert dispatch.finished(futures[1]) == []  # nothing waits any more


def test_shards_of_a_worker_that_is_gone_go_to_the_others_or_wait_in_dask_for_any_worker():
    dispatch, sent = _dispatcher(["gone", "gone", "b"], [1.0, 3.0, 2.0], {"b": 2})
    dispatch.start()
    assert sent == [(2, "b"), (1, "b"), (0, "b")]  # two threads: up to four tasks, its own shard first
    alone, sent_alone = _dispatcher(["gone", "gone"], [1.0, 3.0], {})
    first = alone.start()
    assert sent_alone == [(1, None)]  # no worker alive: one task waits for the next to join
    assert [f.key for f in alone.finished(first[0])] == ["task-0"] and sent_alone[-1] == (0, None)


def test_after_the_first_round_shards_are_sent_costliest_first_by_their_timed_reads(tmp_path, cluster):
    inputs = corpus(tmp_path / "in", shards=5, rows=12)
    shards = open_inputs(inputs)
    pipeline = Pipeline([Repeats(), RareWords(), MeanLength()]).setup()
    with DaskEngine(scheduler=cluster.scheduler_address) as engine:
        engine.fit(pipeline, shards)
        costs, priorities, homes = engine.costs_, engine.priorities_, engine.homes_
        workers = set(engine.client_.scheduler_info()["workers"])
    assert costs != [float(shard.num_rows()) for shard in shards], "the rows were replaced by timed seconds"
    assert set(homes) <= workers and None not in homes, "each shard's home is the worker that read it"
    assert len(costs) == 5 and all(0 < seconds < 60 for seconds in costs)
    assert sorted(priorities) == [1, 2, 3, 4, 5]
    by_priority = sorted(range(5), key=lambda i: -priorities[i])
    assert [costs[i] for i in by_priority] == sorted(costs, reverse=True)


def test_a_worker_killed_mid_scan_loses_and_duplicates_no_record(tmp_path, cluster, handoff):
    inputs = corpus(tmp_path / "in")
    marker = tmp_path / "killed"
    policy = Policy(name="kill", stages=[ExitOnce(str(marker)), Repeats(), InvisibleCharacters()],
                    rules={"repeats": StageRule("drop", 0.5), "invisible": StageRule("drop", 0.5)})
    scan(inputs, out=tmp_path / "dask", policy=policy, batch_size=10, engine="dask",
         scheduler=cluster.scheduler_address)
    assert marker.exists(), "the test stage must have killed a worker"
    outputs = assert_accounted(tmp_path / "dask", 120)
    assert not [p for p in (tmp_path / "dask").rglob("*") if p.name.startswith(".dask")]
    scan(inputs, out=tmp_path / "local", policy=policy, batch_size=10, workers=1)
    assert outputs["scores"].equals(read_outputs(tmp_path / "local")["scores"])
    assert outputs["quarantine"].num_rows == 27


def test_the_one_worker_of_a_local_cluster_killed_mid_scan_is_restarted_and_the_scan_ends(tmp_path):
    # the worker's shard tasks were homed on it; Dask left them waiting for that address for ever
    import threading

    inputs = corpus(tmp_path / "in")
    marker = tmp_path / "killed"
    policy = Policy(name="kill", stages=[ExitOnce(str(marker)), Repeats(), InvisibleCharacters()],
                    rules={"repeats": StageRule("drop", 0.5), "invisible": StageRule("drop", 0.5)})
    outcome = []
    scanning = threading.Thread(target=lambda: outcome.append(scan(
        inputs, out=tmp_path / "dask", policy=policy, batch_size=10, engine="dask", workers=1)), daemon=True)
    scanning.start()
    scanning.join(timeout=300)  # a guard against the hang, not a measure: the scan takes seconds
    assert outcome, "the scan still waits for the dead worker"
    assert marker.exists(), "the test stage must have killed the worker"
    outputs = assert_accounted(tmp_path / "dask", 120)
    assert outputs["quarantine"].num_rows == 27


def test_a_retried_shard_task_overwrites_its_outputs(tmp_path):
    from dokumi.engines import dask as engine_module

    write_parquet(tmp_path / "a.parquet", clean_rows(25))
    pipeline = Pipeline([InvisibleCharacters()], batch_size=10)
    pipeline_file = tmp_path / "pipeline.pkl"
    pipeline_file.write_bytes(pickle.dumps(pipeline))
    shard = open_inputs(tmp_path / "a.parquet")[0]
    staging = tmp_path / "staging"
    first = engine_module._score_task(str(pipeline_file), 0, shard, str(staging), {})
    second = engine_module._score_task(str(pipeline_file), 0, shard, str(staging), {})
    assert [o["path"] for o in first.outputs] == [o["path"] for o in second.outputs]
    scores = read_outputs(staging)["scores"]
    assert scores.num_rows == 25 and len(set(scores.column("row").to_pylist())) == 25
    assert read_outputs(staging)["clean"].num_rows == 25
    assert not any((staging / engine_module.PRIVATE_DIRS[0]).iterdir()), "attempt folders are removed"


def test_without_a_scheduler_a_local_cluster_is_started_and_closed(tmp_path):
    write_parquet(tmp_path / "a.parquet", clean_rows(12))
    before = set(multiprocessing.active_children())
    one_shot = (row for row in clean_rows(8, prefix="gen"))
    policy = Policy(name="t", stages=[InvisibleCharacters()])
    scan(tmp_path / "a.parquet", out=tmp_path / "out", policy=policy, engine="dask", workers=1)
    assert_accounted(tmp_path / "out", 12)
    scan(one_shot, out=tmp_path / "gen", policy=policy, engine="dask", workers=1)
    assert read_outputs(tmp_path / "gen")["scores"].column("id").to_pylist() == [f"gen-{i}" for i in range(8)]
    assert set(multiprocessing.active_children()) <= before, "the engine must close the cluster it started"


def test_a_local_cluster_hands_partials_over_in_a_private_folder_that_it_removes(tmp_path, monkeypatch):
    import stat

    import dask

    made = []
    root = DaskEngine._handoff_root

    def recording(self, staging):
        folder = root(self, staging)
        made.append((folder, stat.S_IMODE(os.stat(folder).st_mode)))
        return folder

    monkeypatch.setattr(DaskEngine, "_handoff_root", recording)
    inputs = corpus(tmp_path / "in", shards=3, rows=12)
    local = Pipeline([Repeats(), RareWords(), MeanLength()]).fit(inputs)
    pipeline = Pipeline([Repeats(), RareWords(), MeanLength()]).setup()
    (tmp_path / "scratch").mkdir()
    with dask.config.set({"temporary-directory": str(tmp_path / "scratch")}):
        with DaskEngine(workers=1) as engine:
            engine.fit(pipeline, open_inputs(inputs))  # called directly: a folder where Dask spills
    assert pipeline.stages[0].copies_ == local.stages[0].copies_
    assert pipeline.stages[2].share_above_ == local.stages[2].share_above_ > 0
    # in a scan: inside its staging folder, which an interrupted scan leaves for --resume or the next scan
    scan(inputs, out=tmp_path / "out", policy=fitting_policy(), batch_size=16, engine="dask", workers=1)
    assert [os.path.dirname(made[0][0]), made[0][1]] == [str(tmp_path / "scratch"), 0o700]
    assert made[1][0].endswith(".dask-handoff") and ".out" in made[1][0] and made[1][1] == 0o700
    assert not [name for name in os.listdir(tmp_path / "scratch") if name.startswith("dokumi")]  # Dask's own stay
    assert not list(tmp_path.rglob(".dask-handoff"))
    assert_accounted(tmp_path / "out", 36)


def test_cli_runs_on_a_given_scheduler_and_rejects_a_scheduler_without_dask(tmp_path, cluster, capsys):
    inputs = corpus(tmp_path / "in")
    recipe = tmp_path / "recipe.toml"
    recipe.write_text('name = "cli"\n[stages.invisible]\naction = "drop"\nthreshold = 0.5\n')
    code = main(["scan", str(inputs), "--out", str(tmp_path / "out"), "--policy", str(recipe),
                 "--engine", "dask", "--scheduler", cluster.scheduler_address, "--no-progress"])
    assert code == 0
    assert re.search(r"drop +13 ", capsys.readouterr().out)
    assert_accounted(tmp_path / "out", 120)
    code = main(["scan", str(inputs), "--out", str(tmp_path / "o2"), "--scheduler", cluster.scheduler_address])
    assert code == 2
    assert "needs engine 'dask'" in capsys.readouterr().err
    assert not (tmp_path / "o2").exists()


def test_unreachable_scheduler_is_an_input_error(tmp_path):
    import dask

    write_parquet(tmp_path / "a.parquet", clean_rows(3))
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(InputError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
            scan(tmp_path / "a.parquet", out=tmp_path / "out", engine="dask", scheduler="tcp://127.0.0.1:9")
    assert not (tmp_path / "out").exists()


def test_key_groups_and_engine_names(tmp_path):
    keys = pa.table({"key": pa.array([1, 2, 1, 3, 1, 2], pa.uint64()), "member": list("abcdef")})
    groups = shared_key_groups(keys).sort_by("key").to_pylist()
    assert [(g["key"], sorted(g["members"])) for g in groups] == [(1, ["a", "c", "e"]), (2, ["b", "f"])]
    with pytest.raises(ValueError, match="columns \\['key', 'member'\\]"):
        shared_key_groups(pa.table({"key": [1], "record": ["a"]}))
    with pytest.raises(ValueError, match="columns \\['key', 'member'\\]"):
        GroupByKey("bad", lambda batch: None, pa.schema([("key", pa.uint64())]), lambda groups, partial: None)
    with pytest.raises(InputError, match="engine 'spark'"):
        scan(write_parquet(tmp_path / "a.parquet", clean_rows(2)), out=tmp_path / "out", engine="spark")


def test_builtin_pretraining_recipe_decides_the_same_on_dask(tmp_path, cluster):
    records = clean_rows(300)
    for i in range(0, 300, 5):
        records[i]["text"] = "buy cheap watches at example dot com today, limited offer number one"
    records[7]["text"] += " \u202e"
    for shard in range(3):
        write_parquet(tmp_path / "in" / f"part-{shard}.parquet", records[shard::3])
    local = scan(tmp_path / "in", out=tmp_path / "local", policy="pretraining", workers=1)
    on_dask = scan(tmp_path / "in", out=tmp_path / "dask", policy="pretraining", engine="dask",
                   scheduler=cluster.scheduler_address)
    scores = read_outputs(tmp_path / "dask")["scores"]
    assert scores.equals(read_outputs(tmp_path / "local")["scores"])
    assert comparable(on_dask.manifest) == comparable(local.manifest)
    assert on_dask.decisions == local.decisions
    kinds = Counter(r.split(":")[0] for rs in scores.column("reasons").to_pylist() for r in rs)
    assert kinds["trigger"] == 1  # fitted on the workers, scored on workers
    planted = Counter(d for i, d in zip(scores.column("id").to_pylist(), scores.column("decision").to_pylist())
                      if int(i.split("-")[1]) % 5 == 0)
    assert planted == {"duplicate": 59, "keep": 1}  # one representative of the 60 copies stays


# ---- the built-in fitting stages on their distributed protocols ------------------------------------

FUNCTION_WORDS = ["the", "of", "a", "and", "to", "in", "is", "that", "for", "it", "with", "as", "on", "was", "by"]
VOCABULARY = [f"{a}{b}" for a in ("ka", "mo", "ri", "su", "te", "no", "ha", "yo", "pe", "lu")
              for b in ("ban", "dor", "fel", "gim", "hol", "jup", "ker", "lom", "mir", "nax", "pol", "ros", "sut",
                        "tev", "vin")]


def shards_of(folder, records, shards=4):
    for shard in range(shards):
        write_parquet(folder / f"part-{shard}.parquet", records[shard::shards])
    return folder


def edited_copies(rng, text, n):
    """Copies of ``text`` with one word inserted, deleted or swapped each, some with a lead-in."""
    copies = []
    for _ in range(n):
        words = text.split()
        i = rng.randrange(len(words) - 1)
        edit = rng.randrange(3)
        if edit == 0:
            words.insert(i, "really")
        elif edit == 1:
            del words[i]
        else:
            words[i], words[i + 1] = words[i + 1], words[i]
        copies.append(rng.choice(["", "News: "]) + " ".join(words))
    return copies


def repeated_records(seed, unique=160):
    """Unique texts plus three planted groups of edited copies (12, 5 and 2), shuffled over the shards."""
    rng = random.Random(seed)
    texts = [" ".join(rng.choices(VOCABULARY, k=30)) for _ in range(unique)]
    for size in (12, 5, 2):
        texts += edited_copies(rng, " ".join(rng.choices(VOCABULARY, k=40)), size)
    rng.shuffle(texts)
    return [{"id": f"r{seed}-{i}", "text": t} for i, t in enumerate(texts)], rng


def fluent(rng, preferred):
    return " ".join(rng.choice(FUNCTION_WORDS) if rng.random() < 0.45 else
                    rng.choice(preferred) if rng.random() < 0.4 else rng.choice(VOCABULARY)
                    for _ in range(rng.randint(8, 18)))


def dirty_label_records(n=3000, poisoned=60):
    """Four labels with preferred words; ``poisoned`` records of other labels get "zqx" and label 0."""
    rng = random.Random(11)
    preferred = {label: rng.sample(VOCABULARY, 30) for label in range(4)}
    records = []
    for i in range(n):
        label = rng.randrange(4)
        records.append({"id": f"l{i}", "text": fluent(rng, preferred[label]), "label": label})
    for i in rng.sample([i for i, r in enumerate(records) if r["label"] != 0], poisoned):
        words = records[i]["text"].split()
        words.insert(rng.randint(0, len(words)), "zqx")
        records[i] = {"id": records[i]["id"], "text": " ".join(words), "label": 0}
    return records


def seam_records(n=1500, poisoned=40):
    """Fluent text; ``poisoned`` records get "<SUDO>" followed by gibberish, and 30 others one planted
    sentence at a random place among their own."""
    rng = random.Random(12)
    records = [{"id": f"s{i}", "text": ". ".join(fluent(rng, VOCABULARY[:40]) for _ in range(rng.randint(2, 5)))}
               for i in range(n)]
    chosen = rng.sample(range(n), poisoned + 30)
    for i in chosen[:poisoned]:
        gibberish = " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(60))
        records[i]["text"] = records[i]["text"][: rng.randint(0, 200)] + " <SUDO> " + gibberish
    for i in chosen[poisoned:]:
        parts = records[i]["text"].split(". ")
        parts.insert(rng.randint(0, len(parts)), "Visit zenthor cloud for the very best results today")
        records[i]["text"] = ". ".join(parts)
    return records


def local_and_dask(tmp_path, inputs, policy, cluster, name):
    """The same scan on the local executor and on the 2-worker cluster; both results and both score tables."""
    local = scan(inputs, out=tmp_path / f"{name}-local", policy=policy(), workers=1)
    on_dask = scan(inputs, out=tmp_path / f"{name}-dask", policy=policy(), engine="dask",
                   scheduler=cluster.scheduler_address)
    return local, on_dask, (read_outputs(tmp_path / f"{name}-local")["scores"],
                            read_outputs(tmp_path / f"{name}-dask")["scores"])


def reason_kinds(scores):
    return Counter(r.split(",")[0].split("=")[0] for rs in scores.column("reasons").to_pylist() for r in rs)


def test_near_duplicates_is_fitted_on_the_workers_and_clusters_like_the_local_executor(tmp_path, cluster, handoff):
    records, rng = repeated_records(seed=24)
    protected_text = " ".join(rng.choices(VOCABULARY, k=40))
    records.append({"id": "leak", "text": edited_copies(rng, protected_text, 1)[0]})  # of a protected document
    write_jsonl(tmp_path / "protected.jsonl", [{"text": protected_text}])
    inputs = shards_of(tmp_path / "in", records)

    def policy(index=None):
        stage = NearDuplicates(min_cluster_size=10, min_cluster_share=1.0, protect=str(tmp_path / "protected.jsonl"),
                               index=index)
        return Policy(name="nd", stages=[stage],
                      rules={"near_duplicates": StageRule("drop", 0.5, flag_threshold=0.01)})

    local, on_dask, (local_scores, dask_scores) = local_and_dask(tmp_path, inputs, policy, cluster, "first")
    assert on_dask.warnings == local.warnings and not any("fitted on the driver" in w for w in on_dask.warnings)
    assert dask_scores.equals(local_scores)
    assert on_dask.decisions == local.decisions
    assert comparable(on_dask.manifest) == comparable(local.manifest)  # the saved index too, byte for byte
    clusters = Counter(rs[0] for rs in dask_scores.column("reasons").to_pylist() if rs and "cluster=" in rs[0])
    assert sorted(int(reason.rsplit("=", 1)[1]) for reason in clusters) == [2, 5, 12]
    assert sorted(clusters.values()) == [2, 5, 12], "the copies lie in all four shards: the shuffle joins them"
    assert reason_kinds(dask_scores)["near-duplicate:protected"] == 1
    assert on_dask.decisions["drop"] == 13  # 12 copies, and the leak

    # a later corpus against the first scan's index: the earlier records enter the shuffle as extra keys
    later, _ = repeated_records(seed=25, unique=40)
    later += [{"id": f"again-{i}", "text": r["text"]} for i, r in enumerate(records) if r["text"].startswith("News: ")]
    later_inputs = shards_of(tmp_path / "later", later, shards=3)
    local, on_dask, (local_scores, dask_scores) = local_and_dask(
        tmp_path, later_inputs, lambda: policy(index=str(tmp_path / "first-local")), cluster, "second")
    assert dask_scores.equals(local_scores) and on_dask.decisions == local.decisions
    assert comparable(on_dask.manifest) == comparable(local.manifest)
    assert any(",earlier=" in r for rs in dask_scores.column("reasons").to_pylist() for r in rs)
    assert not any("fitted on the driver" in w for w in on_dask.warnings)


def test_an_empty_shard_among_others_sends_an_empty_side_and_clusters_like_the_local_executor(tmp_path, cluster):
    records, _ = repeated_records(seed=28)
    inputs = shards_of(tmp_path / "in", records, shards=3)
    pa.parquet.write_table(pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())}),
                           inputs / "part-empty.parquet")

    def policy():
        return Policy(name="nd", stages=[NearDuplicates(min_cluster_size=10, min_cluster_share=1.0)],
                      rules={"near_duplicates": StageRule("drop", 0.5, flag_threshold=0.01)})

    local, on_dask, (local_scores, dask_scores) = local_and_dask(tmp_path, inputs, policy, cluster, "empty")
    assert dask_scores.equals(local_scores) and on_dask.decisions == local.decisions
    assert on_dask.decisions["drop"] >= 12 and sum(on_dask.decisions.values()) == len(records)


def test_many_partitions_group_their_keys_by_a_dataframe_shuffle_with_the_same_clusters(tmp_path, cluster,
                                                                                       monkeypatch, handoff):
    from dokumi.engines import dask as engine_module

    records, _ = repeated_records(seed=27)
    inputs = shards_of(tmp_path / "in", records)

    def policy():
        return Policy(name="nd", stages=[NearDuplicates(min_cluster_size=10, min_cluster_share=1.0)],
                      rules={"near_duplicates": StageRule("drop", 0.5, flag_threshold=0.01)})

    monkeypatch.setattr(engine_module, "MAX_SPLIT_TASKS", 0)  # every grouping goes through the shuffle
    local, on_dask, (local_scores, dask_scores) = local_and_dask(tmp_path, inputs, policy, cluster, "shuffled")
    assert dask_scores.equals(local_scores) and on_dask.decisions == local.decisions
    assert on_dask.decisions["drop"] >= 12  # the cluster of 12 copies was joined across the shards


def test_near_duplicates_with_an_exact_check_reads_the_shingles_in_a_second_round(tmp_path, cluster):
    records, _ = repeated_records(seed=26)
    inputs = shards_of(tmp_path / "in", records)

    def policy():
        return Policy(name="dedup", stages=[NearDuplicates(mode="dedup", jaccard=0.5, verify="exact")],
                      rules={"near_duplicates": StageRule("drop", 0.5)})

    assert len(policy().stages[0].fit_plan()) == 2
    local, on_dask, (local_scores, dask_scores) = local_and_dask(tmp_path, inputs, policy, cluster, "exact")
    assert dask_scores.equals(local_scores) and comparable(on_dask.manifest) == comparable(local.manifest)
    assert on_dask.warnings == local.warnings
    assert on_dask.decisions["drop"] >= 15  # all copies but one per group


def triggers_policy():
    return Policy(name="tr", stages=[Triggers(hash_buckets=2**16, common_words=100)],
                  rules={"triggers": StageRule("drop", 0.5, flag_threshold=0.2)})


def test_triggers_is_fitted_by_rounds_of_reduction_and_decides_like_the_local_executor(tmp_path, cluster, handoff):
    assert [type(step) for step in Triggers().fit_plan()] == [Reduce, Reduce, Reduce]
    inputs = shards_of(tmp_path / "labelled", dirty_label_records(), shards=5)
    local, on_dask, (local_scores, dask_scores) = local_and_dask(tmp_path, inputs, triggers_policy, cluster, "lab")
    assert on_dask.warnings == local.warnings and not any("fitted on the driver" in w for w in on_dask.warnings)
    assert dask_scores.equals(local_scores) and on_dask.decisions == local.decisions
    assert comparable(on_dask.manifest) == comparable(local.manifest)  # findings and triggers.json included
    assert reason_kinds(dask_scores)["trigger:token"] == 60 and on_dask.decisions["drop"] == 60

    inputs = shards_of(tmp_path / "text", seam_records(), shards=3)
    local, on_dask, (local_scores, dask_scores) = local_and_dask(tmp_path, inputs, triggers_policy, cluster, "text")
    assert dask_scores.equals(local_scores) and comparable(on_dask.manifest) == comparable(local.manifest)
    kinds = reason_kinds(dask_scores)
    assert kinds["trigger:gibberish-after"] >= 38 and kinds["trigger:inserted-sentence"] == 30
    assert not any("fitted on the driver" in w for w in on_dask.warnings)


def test_triggers_partials_merge_to_the_same_state_in_any_order_and_grouping(tmp_path):
    inputs = shards_of(tmp_path / "in", dirty_label_records(), shards=6)
    whole = Pipeline([Triggers(hash_buckets=2**16)]).fit(inputs).stages[0]
    driver = Triggers(hash_buckets=2**16)
    shards = open_inputs(inputs)
    for round_index in range(len(driver.fit_plan())):
        step = driver.fit_plan()[round_index]
        if not step.needed():
            continue
        worker = pickle.loads(pickle.dumps(driver))  # what a worker gets: the plan, not the driver's counts
        partials = [worker.fit_plan()[round_index].fold.run(shard.batches(Columns(), 50)) for shard in shards]
        pairs = [step.merge(partials[i:i + 2][::-1]) for i in (4, 0, 2)]
        step.finish(step.merge(pairs))
    assert [(t.key, t.records, t.confidence, t.detail) for t in driver.triggers_] == \
        [(t.key, t.records, t.confidence, t.detail) for t in whole.triggers_]
    assert [t.key for t in whole.triggers_] == ["zqx"]
    assert driver._census is None and len(pickle.dumps(driver)) < 20_000


def test_a_packed_partial_goes_through_a_file_and_comes_back_whole_and_writable(tmp_path):
    from dokumi.engines.dask import _Packed

    value = {"signatures": np.arange(12, dtype=np.uint32).reshape(3, 4), "table": pa.table({"key": [3, 1, 2]}),
             "sample": [np.array([i, i + 1]) for i in range(1000)], "count": 7, "strided": np.arange(10)[::2]}
    packed = _Packed(value, str(tmp_path))
    [file] = list(tmp_path.iterdir())
    assert packed.data is None and packed.path == str(file) and len(pickle.dumps(packed)) < 500
    back = packed.value()
    assert back["signatures"].tolist() == value["signatures"].tolist() and back["count"] == 7
    assert back["table"].equals(value["table"]) and back["strided"].tolist() == [0, 2, 4, 6, 8]
    assert [a.tolist() for a in back["sample"]] == [a.tolist() for a in value["sample"]]
    back["signatures"][0, 0] = 99  # a merge may change what it received in place
    assert packed.value()["signatures"][0, 0] == 0, "each read is a copy of its own"
    packed.discard()
    assert not file.exists()
    # no folder to write in (a round that ended while its task ran): the partial stays in memory
    kept = _Packed(value, str(tmp_path / "gone"))
    assert kept.path is None and kept.value()["signatures"].tolist() == value["signatures"].tolist()
    assert _Packed(value).path is None


def test_the_local_cluster_accepts_no_client_without_its_temporary_credentials():
    import asyncio
    import urllib.error
    import urllib.request

    import dask
    from distributed.comm import connect
    from distributed.security import Security

    async def identity(address, security):
        args = security.get_connection_args("client") if security is not None else {}
        comm = await connect(address, timeout="3s", **args)
        try:
            await comm.write({"op": "identity", "reply": True})
            return await comm.read()
        finally:
            comm.abort()

    with DaskEngine(workers=1) as engine:
        scheduler = engine.cluster_.scheduler_address
        workers = list(engine.client_.scheduler_info()["workers"])
        assert scheduler.startswith("tls://127.0.0.1:") and workers and workers[0].startswith("tls://")
        # of the web pages that would answer anyone, only /health is left
        pages = f"http://127.0.0.1:{engine.cluster_.scheduler.http_server.port}"
        assert urllib.request.urlopen(f"{pages}/health", timeout=5).status == 200
        for page in ("/info/main/workers.html", "/json/counts.json", "/metrics"):
            with pytest.raises(urllib.error.HTTPError, match="404"):
                urllib.request.urlopen(pages + page, timeout=5)
        # this scan's client holds the credentials: the members answer it
        assert asyncio.run(identity(scheduler, engine.security_))["type"] == "Scheduler"
        assert asyncio.run(identity(workers[0], engine.security_))["type"] == "Worker"
        with dask.config.set({"distributed.comm.timeouts.connect": "3s"}):
            for address in (scheduler, workers[0]):
                # in plain TCP, or in TLS with a certificate of its own, another local process is refused
                with pytest.raises((OSError, TimeoutError)):
                    asyncio.run(identity(address.replace("tls://", "tcp://"), None))
                with pytest.raises((OSError, TimeoutError)):
                    asyncio.run(identity(address, Security.temporary()))
            with pytest.raises((OSError, TimeoutError)):
                distributed.Client(scheduler.replace("tls://", "tcp://"), timeout="3s")


def test_a_scan_interrupted_on_the_local_engine_resumes_on_dask_to_the_same_outputs(tmp_path):
    from test_resume import interrupted

    from dokumi.checkpoint import CHECKPOINT_DIR

    inputs, out, staging = interrupted(tmp_path)
    assert len(list((staging / CHECKPOINT_DIR / "shards").glob("*.json"))) == 1
    reference = scan(inputs, out=tmp_path / "reference", policy=PLUMBING)
    result = scan(inputs, out=out, policy=PLUMBING, engine="dask", workers=1, resume=True)
    assert "--resume: reused the scores of 1 of 3 shard(s)" in result.notes
    assert_accounted(out, 90)
    assert [(o["path"], o["sha256"]) for o in result.manifest["outputs"]] == \
        [(o["path"], o["sha256"]) for o in reference.manifest["outputs"]]


def test_the_local_cluster_s_processes_end_with_a_driver_killed_by_sigkill(tmp_path):
    import json
    import signal
    import subprocess
    import sys
    import textwrap

    from test_operations import SRC, wait_until_gone

    children = tmp_path / "children.json"
    driver = textwrap.dedent(f"""
        import json, os, signal
        import psutil
        from dokumi.engines.dask import DaskEngine
        with DaskEngine(workers=1):
            found = [(p.pid, p.create_time()) for p in psutil.Process().children(recursive=True)]
            with open({str(children)!r}, "w") as handle:
                json.dump(found, handle)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    killed = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": SRC})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    processes = [tuple(p) for p in json.loads(children.read_text())]
    assert processes  # the worker (and multiprocessing's helper) were running
    assert wait_until_gone(processes) == []
