"""Repetition poisoning among real documents: does the near_duplicates stage find the copies?

The acceptance scenario of issue 4: 300 lightly edited copies of one document
(``attacks.repetition``: words inserted, deleted and swapped, different lead-ins)
hidden among 20,000 real documents (WordNet glosses; fortunes has 14,396, all of
them are used). A record counts as removed when the policy's decision is not
``keep``: ``duplicate`` (set apart as a redundant copy, out of ``clean/``), ``flag``
or ``drop``. Under the recipe a copy is a ``duplicate`` and one representative of the
cluster stays; the original document the copies were made from stays in the
corpus and belongs to their cluster.

The first table runs the ``pretraining`` recipe's near_duplicates settings on
several seeds and two corpora; the second shows what other settings trade. The
last measures the memory of pass 1 (peak resident memory, in a fresh process per size)
and of the state sent to workers (a pickled copy of the fitted stage: ``to workers`` once the state is
saved, as a scan sends it; ``unsaved`` as ``Pipeline.fit`` alone leaves it, the probe's signatures included),
per record, and extrapolates to one million records.

    DOKUMI_DATA=/path/to/data python benchmarks/bench_near_duplicates.py [--seeds 5] [--memory 25000 100000]
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from attacks import repetition  # noqa: E402
from corpora import load_corpus  # noqa: E402

from dokumi.engines.local import CorpusBatches  # noqa: E402
from dokumi.pipeline import Pipeline  # noqa: E402
from dokumi.policy import StageRule, load_policy  # noqa: E402
from dokumi.records import Columns  # noqa: E402
from dokumi.sources import open_inputs  # noqa: E402
from dokumi.stages.near_duplicates import NearDuplicates  # noqa: E402

CLEAN = 20_000
COPIES = 300


def clean_documents(corpus: str, data: str | None, count: int = CLEAN) -> list[dict]:
    texts = load_corpus(corpus, data).column("text").to_pylist()
    random.Random(0).shuffle(texts)
    return [{"text": t} for t in texts[:count]]


def run(records: list[dict], stage: NearDuplicates, rule: StageRule) -> tuple[np.ndarray, float, NearDuplicates]:
    start = time.perf_counter()
    batches = list(Pipeline([stage], rules={stage.name: rule}).score(records))
    seconds = time.perf_counter() - start
    decisions = np.concatenate([np.array(b.column("decision").to_pylist()) for b in batches])
    return decisions != "keep", seconds, stage


def recipe_stage() -> tuple[dict, StageRule]:
    policy = load_policy("pretraining")
    stage = next(s for s in policy.stages if s.name == "near_duplicates")
    return stage.get_params(), policy.rules["near_duplicates"]


def detection(seeds: int, data: str | None) -> None:
    params, rule = recipe_stage()
    print(f"pretraining recipe: {params['mode']} mode, jaccard={params['jaccard']}, ngram={params['ngram']}, "
          f"min_cluster_size={params['min_cluster_size']}, duplicate_jaccard={params['duplicate_jaccard']}; "
          f"action {rule.action}, duplicates {rule.duplicates}")
    print(f"\n  {COPIES} edited copies among real documents\n")
    print(f"  {'corpus':<10}{'documents':>10}{'seed':>5}{'copies removed':>16}{'others removed':>16}{'share':>9}"
          f"{'largest cluster':>17}{'seconds':>9}")
    worst_recall, worst_share = 1.0, 0.0
    for corpus in ("wordnet", "fortunes"):
        clean = clean_documents(corpus, data)
        for seed in range(1, seeds + 1):
            records, is_copy = repetition(clean, COPIES, random.Random(seed))
            is_copy = np.array(is_copy)
            flagged, seconds, stage = run(records, NearDuplicates(**params), rule)
            recall, others = flagged[is_copy].mean(), int(flagged[~is_copy].sum())
            share = others / len(clean)
            worst_recall, worst_share = min(worst_recall, recall), max(worst_share, share)
            print(f"  {corpus:<10}{len(clean):>10,}{seed:>5}{recall:>15.1%} {others:>15,}{share:>9.3%}"
                  f"{int(stage.cluster_sizes_.max(initial=0)):>17,}{seconds:>9.1f}")
    print(f"\n  worst case: {worst_recall:.1%} of copies removed (target: all but one), {worst_share:.3%} of other "
          f"records removed (honest near-copies of a sibling)")


def tradeoffs(data: str | None) -> None:
    print("\n  other settings (wordnet, seed 1): what each trades\n")
    print(f"  {'setting':<44}{'copies flagged':>16}{'others flagged':>16}")
    clean = clean_documents("wordnet", data)
    records, is_copy = repetition(clean, COPIES, random.Random(1))
    is_copy = np.array(is_copy)
    flag = StageRule(action="flag", threshold=0.5)
    for label, kwargs in (
        ("recipe (jaccard 0.3, min_cluster_size 50)", {}),
        ("min_cluster_size 20", {"min_cluster_size": 20}),
        ("jaccard 0.5", {"jaccard": 0.5}),
        ("jaccard 0.5, verify exact", {"jaccard": 0.5, "verify": "exact"}),
        ("ngram 3", {"ngram": 3}),
    ):
        params = {**recipe_stage()[0], **kwargs}
        flagged, _, _ = run(records, NearDuplicates(**params), flag)
        print(f"  {label:<44}{flagged[is_copy].mean():>15.1%} {int(flagged[~is_copy].sum()):>15,}")


def memory(sizes: list[int], data: str | None) -> None:
    print("\n  memory (recipe settings; wordnet glosses, repeated with a counter where more are needed;")
    print("  peak resident memory growth of the fit, each size in a fresh process)\n")
    print(f"  {'records':>10}{'fit peak':>12}{'per record':>12}{'index kept':>12}{'per record':>12}"
          f"{'to workers':>12}{'unsaved':>12}{'seconds':>9}")
    peaks = []
    for size in sizes:
        command = [sys.executable, __file__, "--memory-of", str(size)] + (["--data", data] if data else [])
        measured = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
        peak, kept = measured["peak"], measured["kept"]
        peaks.append(peak)
        print(f"  {size:>10,}{peak / 2**20:>10.0f}MB{peak / size:>11,.0f}B{kept / 2**20:>10.0f}MB"
              f"{kept / size:>11,.0f}B{measured['shipped'] / 2**10:>10,.0f}KB{measured['unsaved'] / 2**10:>10,.0f}KB"
              f"{measured['seconds']:>9.1f}")
    # fixed buffers (blocks of pairs and keys) plus a cost per record: a line through the measurements
    per_record, fixed = np.polyfit(sizes, peaks, 1) if len(sizes) > 1 else (peaks[0] / sizes[0], 0.0)
    print(f"\n  fit peak ~ {fixed / 2**20:.0f} MB + {per_record:,.0f} bytes per record: one million records "
          f"need about {(fixed + per_record * 1_000_000) / 2**30:.2f} GiB")


def memory_of(size: int, data: str | None) -> None:
    """One fit of ``size`` records in this process; prints its peak memory growth and sizes as JSON.

    Resident memory, not tracemalloc: the fit's key table and groups live in Arrow's allocator,
    which tracemalloc does not see.
    """
    texts = load_corpus("wordnet", data).column("text").to_pylist()
    records = [{"text": f"{texts[i % len(texts)]} {i // len(texts)}"} for i in range(size)]
    batches = CorpusBatches(open_inputs(records), Columns(), 1024)
    list(batches)  # read once, so that the reader's own buffers are not counted
    stage = NearDuplicates(**recipe_stage()[0])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    stage.fit(batches)
    seconds = time.perf_counter() - start
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024  # KiB on Linux
    index = stage.index_
    kept = sum(array.nbytes for array in (index.key, index.signature, index.count, index.id, index.generation))
    unsaved = len(pickle.dumps(stage))
    with tempfile.TemporaryDirectory() as folder:
        stage.save_state(Path(folder))
        shipped = len(pickle.dumps(stage))
    print(json.dumps({"peak": peak, "kept": kept, "shipped": shipped, "unsaved": unsaved, "seconds": seconds}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5, help="attack seeds per corpus (0: memory only)")
    parser.add_argument("--memory", type=int, nargs="*", default=[25_000, 100_000, 200_000],
                        help="corpus sizes for the memory measurement")
    parser.add_argument("--data", default=None, help="folder of the prepared corpora (default: $DOKUMI_DATA)")
    parser.add_argument("--memory-of", type=int, help=argparse.SUPPRESS)  # one measurement, in a child process
    args = parser.parse_args()
    if args.memory_of:
        memory_of(args.memory_of, args.data)
        return
    if args.seeds:
        detection(args.seeds, args.data)
        tradeoffs(args.data)
    if args.memory:
        memory(args.memory, args.data)


if __name__ == "__main__":
    main()
