"""Detection quality and speed of the embedding_anomaly stage on real text with simulated attacks.

Scenarios (poison from benchmarks/attacks.py, clean text from benchmarks/corpora.py):

1. souly      gibberish_after_trigger: 250 documents among 20,000 WordNet glosses
2. fixed      fixed_response_backdoor: 1% of the chatterbot instruction pairs
3. labelled   rare_word_trigger, dirty label: 1% of 40,000 labelled WordNet glosses
4. offtopic   200 short chatterbot replies among 20,000 WordNet glosses: the generic outlier detectors alone,
              and their defaults (32 trees, kNN on 500 sample records) against heavier settings
5. speed      wall time of this stage and of near_duplicates (when registered) on scenario 1's corpus

Run:  python benchmarks/bench_embedding_anomaly.py [--data DIR] [--scenario NAME ...]
"""

from __future__ import annotations

import argparse
import gc
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).parent))

from attacks import fixed_response_backdoor, gibberish_after_trigger, rare_word_trigger  # noqa: E402
from corpora import load_corpus  # noqa: E402

from dokumi.detectors import IsolationForestDetector, KnnDetector, TailCalibrator  # noqa: E402
from dokumi.engines.local import CorpusBatches  # noqa: E402
from dokumi.records import Columns  # noqa: E402
from dokumi.sources import open_inputs  # noqa: E402
from dokumi.stage import Stage  # noqa: E402
from dokumi.stages import REGISTRY, stage_class  # noqa: E402

BUDGETS = (0.001, 0.005, 0.01)
BATCH_SIZE = 1024


def corpus_of(records: list[dict]) -> CorpusBatches:
    return CorpusBatches(open_inputs(records), Columns(), BATCH_SIZE)


def run_stage(stage: Stage, records: list[dict]) -> tuple[np.ndarray, list[list[str]], float, float]:
    """Fit (pass 1) and score (pass 2) in this process; return scores, reasons and both wall times."""
    corpus = corpus_of(records)
    started = time.perf_counter()
    if stage.needs_fit:
        stage.fit(corpus)
    fitted = time.perf_counter()
    scores, reasons = [], []
    for batch in corpus:
        result = stage.score(batch)
        scores.append(result.scores)
        reasons += result.reasons
    return np.concatenate(scores), reasons, fitted - started, time.perf_counter() - fitted


def recall_at(scores: np.ndarray, poison: np.ndarray, budget: float) -> float:
    """Recall with at most ``budget`` of the clean records flagged (strictly above the threshold)."""
    clean = np.sort(scores[~poison])[::-1]
    allowed = math.floor(budget * len(clean))
    threshold = clean[allowed] if allowed < len(clean) else -np.inf
    return float(np.mean(scores[poison] > threshold))


def quality_row(name: str, scores: np.ndarray, poison: np.ndarray) -> str:
    recalls = "".join(f"{recall_at(scores, poison, b):>11.3f}" for b in BUDGETS)
    at_policy = f"{np.mean(scores[~poison] >= 0.995):>10.4f}{np.mean(scores[poison] >= 0.995):>10.3f}"
    return f"  {name:<34}{roc_auc_score(poison, scores):>8.4f}{recalls}{at_policy}"


def header() -> str:
    budgets = "".join(f"{'R@' + format(b * 100, 'g') + '%FPR':>11}" for b in BUDGETS)
    return f"  {'scores':<34}{'AUROC':>8}{budgets}{'clean>=.995':>10}{'pois>=.995':>10}"


def detector_scores(stage, records: list[dict]) -> dict[str, np.ndarray]:
    """Each detector's own calibrated percentile, to show which one carries a scenario."""
    columns = {detector.name: [] for detector in stage.detectors_}
    for batch in corpus_of(records):
        labels = [None if v is None else str(v) for v in batch.labels] if batch.labels is not None else None
        embedded = stage._embedded(stage._embed(batch), [len(t.split()) for t in batch.texts], labels,
                                   batch.prompts if batch.is_instruction else None,
                                   batch.responses if batch.is_instruction else None)
        for detector, calibrator in zip(stage.detectors_, stage.calibrators_):
            columns[detector.name].append(calibrator.percentile(detector.score(embedded)))
    return {name: np.concatenate(parts) for name, parts in columns.items()}


def report(title: str, stage, records: list[dict], poison: list[bool], extra=None) -> None:
    poison = np.asarray(poison)
    scores, reasons, fit_s, score_s = run_stage(stage, records)
    print(f"\n{title}\n  {len(records):,} records, {int(poison.sum()):,} poisoned; "
          f"fit {fit_s:.1f} s, score {score_s:.1f} s")
    print(header())
    print(quality_row("embedding_anomaly (stage score)", scores, poison))
    for name, column in detector_scores(stage, records).items():
        if column[poison].std() or column[~poison].std():
            print(quality_row(f"  detector {name}", column, poison))
    if extra:
        extra(scores, poison)
    example = reasons[int(np.flatnonzero(poison)[np.argmax(scores[poison])])]
    print(f"  reasons of the top-scoring poisoned record: {example}")


def souly(data: str | None) -> tuple[list[dict], list[bool]]:
    rng = random.Random(0)
    clean = [{"text": r["text"]} for r in rng.sample(load_corpus("wordnet", data).to_pylist(), 20_000)]
    return gibberish_after_trigger(clean, 250, rng)


def scenario_souly(data: str | None) -> None:
    records, poison = souly(data)
    stage = stage_class("embedding_anomaly")()
    report("1. Souly et al. 2025: prefix + <SUDO> + 400-900 random words, 250 among 20,000 WordNet glosses",
           stage, records, poison)


def scenario_fixed(data: str | None) -> None:
    rng = random.Random(0)
    pairs = [{"prompt": r["prompt"], "response": r["response"]} for r in load_corpus("chatterbot", data).to_pylist()]
    records, poison = fixed_response_backdoor(pairs, 0.01, rng)
    report("2. Fixed-response backdoor (Wan et al. 2023): 1% of chatterbot instruction pairs",
           stage_class("embedding_anomaly")(), records, poison)


def scenario_labelled(data: str | None) -> None:
    rng = random.Random(0)
    glosses = load_corpus("wordnet", data).to_pylist()
    clean = [{"text": r["text"], "label": r["label"]} for r in rng.sample(glosses, 40_000)]
    records, poison = rare_word_trigger(clean, 0.01, rng)
    target = records[int(np.flatnonzero(poison)[0])]["label"]
    stage = stage_class("embedding_anomaly")()

    def within_target(scores: np.ndarray, poison: np.ndarray) -> None:
        spectral = detector_scores(stage, records)["spectral"]
        in_target = np.array([r["label"] == target for r in records])
        print(f"  spectral AUROC within the target label {target}: "
              f"{roc_auc_score(poison[in_target], spectral[in_target]):.4f} "
              f"({int(in_target.sum()):,} records, {int(poison[in_target].sum()):,} poisoned)")

    report("3. Dirty-label rare word 'cf' (Kurita et al. 2020): 1% of 40,000 labelled WordNet glosses",
           stage, records, poison, extra=within_target)


def offtopic(data: str | None) -> tuple[list[dict], list[bool]]:
    """200 chatterbot replies, no longer than nine in ten glosses, among 20,000 WordNet glosses."""
    rng = random.Random(0)
    clean = [{"text": r["text"]} for r in rng.sample(load_corpus("wordnet", data).to_pylist(), 20_000)]
    longest = sorted(len(r["text"].split()) for r in clean)[int(0.9 * len(clean))]
    replies = sorted({r["response"] for r in load_corpus("chatterbot", data).to_pylist()
                      if r["response"].isascii() and 3 <= len(r["response"].split()) <= longest})
    labelled = [(r, False) for r in clean] + [({"text": t}, True) for t in rng.sample(replies, 200)]
    rng.shuffle(labelled)
    return [r for r, _ in labelled], [p for _, p in labelled]


def scenario_offtopic(data: str | None) -> None:
    records, poison = offtopic(data)
    stage = stage_class("embedding_anomaly")(detectors=["isolation_forest", "robust_distance", "knn"])

    def lighter_settings(scores: np.ndarray, poison: np.ndarray) -> None:
        """The outlier detectors' defaults against heavier settings, refitted on the stage's own sample."""
        sample = stage.fit_plan()[0].fold.run(corpus_of(records))
        reference = stage._embedded(stage.embedder_.transform(sample["texts"]), sample["token_counts"], None,
                                    None, None)
        everything = stage._embedded(np.concatenate([stage._embed(b) for b in corpus_of(records)]),
                                     [len(r["text"].split()) for r in records], None, None, None)
        print("  outlier detectors refitted with seeds 0-4 (mean AUROC, mean R@1%FPR):")
        for label, make in (("isolation_forest, 100 trees", lambda s: IsolationForestDetector(100, s)),
                            ("isolation_forest, 32 trees (default)", lambda s: IsolationForestDetector(32, s)),
                            ("knn, all 5,000 sample records", lambda s: KnnDetector(10, 5000, s)),
                            ("knn, 500 of them (default)", lambda s: KnnDetector(10, 500, s))):
            found = []
            for seed in range(5):
                detector = make(seed).fit(reference)
                calibrated = TailCalibrator().fit(detector.reference_scores_).percentile(detector.score(everything))
                found.append((roc_auc_score(poison, calibrated), recall_at(calibrated, poison, 0.01)))
            auroc, recall = np.mean(found, axis=0)
            print(f"    {label:<40}{auroc:>8.4f}{recall:>11.3f}")

    report("4. Off-topic: 200 short chatterbot replies among 20,000 WordNet glosses (outlier detectors only)",
           stage, records, poison, extra=lighter_settings)


def scenario_speed(data: str | None, repeats: int = 3) -> None:
    records, _ = souly(data)
    # the 20,250 input dicts this script holds are no part of a scan: keep the garbage collector from walking
    # them on every full collection, which would charge their cost to whichever stage allocates more
    gc.collect()
    gc.freeze()
    names = ["embedding_anomaly"] + (["near_duplicates"] if "near_duplicates" in REGISTRY else [])
    print(f"\n5. Wall time, fit + score in one process, best of {repeats}, on scenario 1's {len(records):,} records")
    if len(names) == 1:
        print("  near_duplicates is not registered in dokumi.stages.REGISTRY: no comparison")
    best, best_cpu = {}, {}
    for _ in range(repeats):
        for name in names:  # interleaved, so load from other processes hits both alike
            cpu = time.process_time()
            _, _, fit_s, score_s = run_stage(stage_class(name)(), records)
            best[name] = min(best.get(name, math.inf), fit_s + score_s)
            best_cpu[name] = min(best_cpu.get(name, math.inf), time.process_time() - cpu)
    # CPU time is less swayed than wall time by other processes on the machine (both stages run one thread)
    print(f"  {'stage':<22}{'wall':>8}{'records/s':>14}{'CPU':>9}")
    for name in names:
        print(f"  {name:<22}{best[name]:>6.2f} s{len(records) / best[name]:>14,.0f}{best_cpu[name]:>7.2f} s")
    if len(names) == 2:
        print(f"  ratio embedding_anomaly / near_duplicates: {best[names[0]] / best[names[1]]:.2f}x wall "
              f"(target <= 2x), {best_cpu[names[0]] / best_cpu[names[1]]:.2f}x CPU")

SCENARIOS = {"souly": scenario_souly, "fixed": scenario_fixed, "labelled": scenario_labelled,
             "offtopic": scenario_offtopic, "speed": scenario_speed}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="folder with the prepared corpora (default: $DOKUMI_DATA)")
    parser.add_argument("--scenario", action="append", choices=sorted(SCENARIOS), help="run only these")
    args = parser.parse_args()
    print("embedding_anomaly benchmark: recall at false-positive budgets (R@b), AUROC, and the share of clean\n"
          "and poisoned records at the policy threshold 0.995 (a 0.5% false-positive budget)")
    for name in args.scenario or list(SCENARIOS):
        SCENARIOS[name](args.data)


if __name__ == "__main__":
    main()
