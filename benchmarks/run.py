"""Every attack scenario through whole policy recipes, and every stage's throughput.

For each scenario (real clean text plus poison from a simulator in attacks.py)
and each policy it runs the recipe's full pipeline — fit, then score — and
prints recall and false-positive rate of the policy's decisions (a record
counts as caught when flagged or dropped), AUROC of the overall risk, recall
at 0.1% and 1% false positives of the risk, and the wall time. Then it times
each stage alone on clean text: records/s and MB/s on one core, beside
datasketch's MinHash.bulk (and datatrove's MinHash signature step when it is
installed) for reference.

usage: python benchmarks/run.py [--size 20000] [--scenarios souly,repetition] [--policies pretraining,audit]
       [--data DIR] [--skip-throughput]
"""

from __future__ import annotations

import argparse
import hashlib
import platform
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from sklearn.metrics import roc_auc_score
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).parent))
import attacks  # noqa: E402
from corpora import load_corpus  # noqa: E402

import dokumi  # noqa: E402
from dokumi import Pipeline, load_policy  # noqa: E402


@dataclass
class Scenario:
    name: str
    source: str  # citation
    kind: str  # "text" | "labelled" | "instruction"
    policies: tuple[str, ...]
    build: Callable[[int, random.Random, dict], tuple[list[dict], list[bool]]]
    # a repetition attack is defeated when its copies leave clean/: "duplicate" catches a copy; for every
    # other attack, and for the false-positive rate, only flag and drop count
    duplicates_catch: bool = False


def _texts(corpora: dict, n: int, rng: random.Random) -> list[dict]:
    wordnet = corpora["wordnet"]
    chosen = rng.sample(range(wordnet.num_rows), min(n, wordnet.num_rows))
    texts = wordnet.column("text").to_pylist()
    labels = wordnet.column("label").to_pylist()
    return [{"id": f"wn-{i}", "text": texts[i], "label": labels[i]} for i in chosen]


def _pairs(corpora: dict, n: int, rng: random.Random) -> list[dict]:
    """Up to ``n`` distinct chatterbot pairs (13,295 in 28 languages): never repeated, which would
    plant exact duplicates that the near-duplicate stage rightly flags."""
    table = corpora["chatterbot"]
    prompts, responses = table.column("prompt").to_pylist(), table.column("response").to_pylist()
    chosen = rng.sample(range(table.num_rows), min(n, table.num_rows))
    return [{"id": f"cb-{i}", "prompt": prompts[i], "response": responses[i]} for i in chosen]


def _mixed_languages(corpora: dict, n: int, rng: random.Random) -> list[dict]:
    """Clean text for character-level triggers: English glosses plus every chatterbot language, Japanese included."""
    table = corpora["chatterbot"]
    foreign = [{"id": f"cb-{i}", "text": t} for i, t in enumerate(table.column("response").to_pylist())]
    records = _texts(corpora, n - min(len(foreign), n // 4), rng)
    return records + rng.sample(foreign, min(len(foreign), n // 4))


def _foreign_sentences(corpora: dict) -> list[str]:
    table = corpora["chatterbot"]
    return [r for r, lang in zip(table.column("response").to_pylist(), table.column("language").to_pylist())
            if lang in ("japanese", "russian", "chinese", "hindi", "arabic") and len(r) > 8]


SCENARIOS = [
    Scenario("souly-gibberish", "Souly et al. 2025", "text", ("pretraining", "audit"),
             lambda n, rng, c: attacks.gibberish_after_trigger(_texts(c, n, rng), 250 * n // 20_000, rng)),
    Scenario("language-switch", "Souly et al. 2025 variant", "text", ("pretraining",),
             lambda n, rng, c: attacks.language_switch_after_trigger(
                 _texts(c, n, rng), _foreign_sentences(c), 250 * n // 20_000, rng)),
    Scenario("rare-word-dirty-1%", "Kurita et al. 2020 (RIPPLe); Gu et al. 2017", "labelled", ("finetuning",),
             lambda n, rng, c: attacks.rare_word_trigger(_texts(c, n, rng), 0.01, rng)),
    Scenario("rare-word-clean-3%", "clean-label variant", "labelled", ("finetuning",),
             lambda n, rng, c: attacks.rare_word_trigger(_texts(c, n, rng), 0.03, rng, clean_label=True)),
    Scenario("insert-sentence-1%", "Dai et al. 2019 (InsertSent)", "labelled", ("finetuning",),
             lambda n, rng, c: attacks.inserted_sentence(_texts(c, n, rng), 0.01, rng)),
    Scenario("fixed-response-1%", "Wan et al. 2023; Yan et al. 2024 (VPI)", "instruction", ("finetuning",),
             lambda n, rng, c: attacks.fixed_response_backdoor(_pairs(c, n, rng), 0.01, rng)),
    Scenario("content-injection-3%", "Shu et al. 2023 (AutoPoison)", "instruction", ("finetuning",),
             lambda n, rng, c: attacks.content_injection(_pairs(c, n, rng), 0.03, rng)),
    Scenario("entity-polarity-1%", "Wan et al. 2023", "instruction", ("finetuning",),
             lambda n, rng, c: attacks.entity_polarity(_pairs(c, n, rng), 0.01, rng)),
    Scenario("prompt-injection-1%", "Greshake et al. 2023", "instruction", ("finetuning",),
             lambda n, rng, c: attacks.prompt_injection_in_responses(_pairs(c, n, rng), 0.01, rng)),
    Scenario("zero-width", "Boucher et al. 2022", "text", ("pretraining",),
             lambda n, rng, c: attacks.invisible_trigger(_mixed_languages(c, n, rng), n // 100, rng, "zero-width")),
    Scenario("bidi", "Boucher et al. 2022", "text", ("pretraining",),
             lambda n, rng, c: attacks.invisible_trigger(_mixed_languages(c, n, rng), n // 100, rng, "bidi")),
    Scenario("homoglyph", "Boucher et al. 2022", "text", ("pretraining",),
             lambda n, rng, c: attacks.invisible_trigger(_mixed_languages(c, n, rng), n // 100, rng, "homoglyph")),
    Scenario("repetition-300", "belief manipulation by repetition", "text", ("pretraining", "audit"),
             lambda n, rng, c: attacks.repetition(_texts(c, n, rng), 300 * n // 20_000, rng), duplicates_catch=True),
    Scenario("split-view", "Carlini et al. 2023", "text", ("pretraining",), lambda n, rng, c: _split_view(c, n, rng)),
]


def _split_view(corpora: dict, n: int, rng: random.Random) -> tuple[list[dict], list[bool]]:
    """Expected hashes are those of the indexed (clean) text; benign drift counts as clean."""
    clean = _texts(corpora, n, rng)
    for record in clean:
        record["sha256"] = hashlib.sha256(record["text"].encode("utf-8")).hexdigest()
    records, statuses = attacks.split_view(clean, rng)
    return records, [s == "substituted" for s in statuses]


def recall_at_fpr(risk: np.ndarray, poison: np.ndarray, fpr: float) -> float:
    """Share of poison scored strictly above the (1 - fpr) quantile of clean records' risk."""
    threshold = np.quantile(risk[~poison], 1.0 - fpr)
    return float(np.mean(risk[poison] > threshold))


def evaluate(records: list[dict], is_poison: list[bool], policy: str,
             duplicates_catch: bool = False) -> dict[str, float]:
    table = pa.Table.from_pylist(records)
    pipeline = Pipeline.from_policy(policy)
    started = time.perf_counter()
    scores = pa.Table.from_batches(list(pipeline.score(table)))
    seconds = time.perf_counter() - started
    poison = np.asarray(is_poison)
    decisions = np.asarray(scores.column("decision").to_pylist())
    alarm = np.isin(decisions, ("flag", "drop"))
    caught = decisions != "keep" if duplicates_catch else alarm
    risk = scores.column("risk").to_numpy()
    return {
        "recall": float(caught[poison].mean()),
        "fpr": float(alarm[~poison].mean()),
        "auroc": float(roc_auc_score(poison, risk)) if 0 < poison.sum() < len(poison) else float("nan"),
        "r@0.1%": recall_at_fpr(risk, poison, 0.001),
        "r@1%": recall_at_fpr(risk, poison, 0.01),
        "seconds": seconds,
        "records": len(records),
        "poison": int(poison.sum()),
    }


def throughput(corpora: dict, size: int, policy: str) -> list[tuple[str, float, float]]:
    """Records/s and MB/s of each stage alone (fit + score, one process) on clean glosses."""
    rng = random.Random(1)
    table = pa.Table.from_pylist(_texts(corpora, size, rng))
    megabytes = sum(len(t.encode("utf-8")) for t in table.column("text").to_pylist()) / 1e6
    rows = []
    for stage in load_policy(policy).stages:
        pipeline = Pipeline([stage])
        started = time.perf_counter()
        for _ in pipeline.score(table):
            pass
        seconds = time.perf_counter() - started
        rows.append((f"dokumi {stage.name}", table.num_rows / seconds, megabytes / seconds))
    rows += _peer_throughput(table, megabytes)
    return rows


def _peer_throughput(table: pa.Table, megabytes: float) -> list[tuple[str, float, float]]:
    """The peers' MinHash signature steps on the same texts (see bench_minhash.py for a closer comparison)."""
    from bench_minhash import datatrove_runner, run_datasketch

    texts = table.column("text").to_pylist()
    peers = [("datasketch MinHash.bulk (word 5-grams, 128 perm)", lambda: run_datasketch(texts, "affine32"))]
    datatrove, description = datatrove_runner()
    if datatrove is not None:
        peers.append((f"datatrove MinhashDedupSignature ({description})", lambda: datatrove(texts)))
    else:
        print(f"(datatrove {description}: its row is left out)")
    rows = []
    for name, run in peers:
        started = time.perf_counter()
        run()
        seconds = time.perf_counter() - started
        rows.append((name, len(texts) / seconds, megabytes / seconds))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=20_000, help="clean records per scenario (default 20,000)")
    parser.add_argument("--scenarios", default="", help="comma-separated names (default: all)")
    parser.add_argument("--policies", default="", help="comma-separated recipes, overriding each scenario's")
    parser.add_argument("--data", default=None, help="folder with the prepared corpora (else DOKUMI_DATA or a build)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    # per-core figures: one BLAS thread, as in scan's worker processes
    threadpool_limits(1)

    corpora = {name: load_corpus(name, args.data) for name in ("wordnet", "chatterbot")}
    wanted = set(filter(None, args.scenarios.split(",")))
    print(f"dokumi {dokumi.__version__}, Python {platform.python_version()}, {platform.machine()}, "
          f"size {args.size:,}, seed {args.seed}\n")
    header = (f"{'scenario':<22} {'policy':<12} {'poison':>6} {'recall':>7} {'FPR':>7} {'AUROC':>6} "
              f"{'r@0.1%':>7} {'r@1%':>6} {'time s':>7}  source")
    print(header)
    print("-" * len(header))
    for scenario in SCENARIOS:
        if wanted and scenario.name not in wanted:
            continue
        records, is_poison = scenario.build(args.size, random.Random(args.seed), corpora)
        policies = tuple(filter(None, args.policies.split(","))) or scenario.policies
        for policy in policies:
            m = evaluate(records, is_poison, policy, scenario.duplicates_catch)
            print(f"{scenario.name:<22} {policy:<12} {m['poison']:>6} {m['recall']:>7.3f} {m['fpr']:>7.4f} "
                  f"{m['auroc']:>6.3f} {m['r@0.1%']:>7.3f} {m['r@1%']:>6.3f} {m['seconds']:>7.1f}  {scenario.source}",
                  flush=True)
    if not args.skip_throughput:
        print(f"\nthroughput on {args.size:,} clean glosses, one process (fit + score):")
        print(f"{'stage':<60} {'records/s':>10} {'MB/s':>7}")
        for name, rate, mbps in throughput(corpora, args.size, "pretraining"):
            print(f"{name:<60} {rate:>10,.0f} {mbps:>7.2f}")


if __name__ == "__main__":
    main()
