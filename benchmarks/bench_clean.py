"""False alarms of every built-in recipe on clean real text: the share of records each one flags or drops.

Every corpus of the shared data folder (see ``corpora.FILES``: glosses, fortunes,
conversation pairs, man pages, Debian descriptions, changelogs, copyright stanzas,
npm READMEs, source code, Japanese/Chinese/Korean mixed with Latin) is split by a
hash of each row's content into a tuning half and a report half
(``corpora.split_halves``, split seed 0). Thresholds are set on the tuning half
(``--half tuning``); the figures reported are the report half's (the default),
over several seeds: each seed scans a different sample of ``--limit`` records of
the half (all of it when smaller).

Per corpus and recipe it prints the share of records flagged, dropped and marked
``duplicate`` (a redundant copy: reported apart, it is no alarm), the share flagged
or dropped as mean and range over the seeds, and the reason codes behind the
alarms, most frequent first. Pair data (chatterbot) is scanned with the recipes
that read prompt and response; text corpora with the others.

usage: python benchmarks/bench_clean.py [--data DIR] [--half report|tuning] [--seeds 0 1 2] [--limit 20000]
       [--corpora NAME ...] [--recipes NAME ...]
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
from corpora import FILES, load_corpus, split_halves  # noqa: E402

from dokumi import Pipeline  # noqa: E402

TEXT_RECIPES = ("pretraining", "creative", "dedup", "audit")
PAIR_RECIPES = ("finetuning",)
ALARMS = ("flag", "drop")


def sample(table: pa.Table, limit: int, seed: int) -> pa.Table:
    if table.num_rows <= limit:
        return table
    rows = np.sort(np.random.default_rng(seed).choice(table.num_rows, limit, replace=False))
    return table.take(pa.array(rows))


def records_of(table: pa.Table) -> pa.Table:
    """The columns a recipe reads: text (with label where the corpus has one), or prompt and response."""
    if "text" in table.column_names:
        columns = {"text": table.column("text")}
        if "label" in table.column_names:
            columns["label"] = pa.array([str(v) for v in table.column("label").to_pylist()])
        return pa.table(columns)
    return table.select(["prompt", "response"])


def reason_codes(reasons: list[str]) -> set[str]:
    """``stage:kind`` of each reason (``trigger:gibberish-after=zqx,...`` -> ``trigger:gibberish-after``)."""
    return {reason.split("=")[0].split(",")[0] for reason in reasons}


def scan_once(table: pa.Table, recipe: str) -> dict:
    pipeline = Pipeline.from_policy(recipe)
    started = time.perf_counter()
    scored = pa.Table.from_batches(list(pipeline.score(table)))
    decisions = np.array(scored.column("decision").to_pylist())
    reasons = scored.column("reasons").to_pylist()
    causes: collections.Counter = collections.Counter()
    for row in np.flatnonzero(np.isin(decisions, ALARMS)).tolist():
        causes.update(reason_codes(reasons[row]))
    n = max(len(decisions), 1)
    return {"records": len(decisions), "flag": float(np.mean(decisions == "flag")) if len(decisions) else 0.0,
            "drop": float(np.sum(decisions == "drop") / n), "duplicate": float(np.sum(decisions == "duplicate") / n),
            "causes": causes, "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="folder of prepared corpora (default: $DOKUMI_DATA)")
    parser.add_argument("--half", choices=("report", "tuning"), default="report")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--limit", type=int, default=20_000, help="records per scan (a sample of the half)")
    parser.add_argument("--corpora", nargs="+", default=list(FILES))
    parser.add_argument("--recipes", nargs="+", default=list(TEXT_RECIPES + PAIR_RECIPES))
    args = parser.parse_args()

    print(f"# {args.half} halves (split seed 0), seeds {args.seeds}, at most {args.limit:,} records a scan")
    print(f"{'corpus':<22}{'recipe':<13}{'records':>9}{'flag %':>9}{'drop %':>9}{'dup %':>8}"
          f"{'alarm % mean [min-max]':>26}  top reasons")
    for name in args.corpora:
        try:
            corpus = load_corpus(name, args.data)
        except FileNotFoundError as error:
            print(f"{name:<22}(skipped: {error})")
            continue
        tuning, report = split_halves(corpus, seed=0)
        half = records_of(report if args.half == "report" else tuning)
        pairs = "text" not in half.column_names
        for recipe in args.recipes:
            if (recipe in PAIR_RECIPES) != pairs and not (recipe == "finetuning" and "label" in half.column_names):
                continue
            runs = [scan_once(sample(half, args.limit, seed), recipe) for seed in args.seeds]
            alarms = [100 * (r["flag"] + r["drop"]) for r in runs]
            causes = sum((r["causes"] for r in runs), collections.Counter())
            top = ", ".join(f"{code} {count / len(runs):.0f}" for code, count in causes.most_common(3))
            alarm = f"{np.mean(alarms):.3f} [{min(alarms):.3f}-{max(alarms):.3f}]"
            shares = {kind: 100 * np.mean([r[kind] for r in runs]) for kind in ("flag", "drop", "duplicate")}
            print(f"{name:<22}{recipe:<13}{runs[0]['records']:>9,}{shares['flag']:>9.3f}{shares['drop']:>9.3f}"
                  f"{shares['duplicate']:>8.2f}{alarm:>26}  {top}", flush=True)


if __name__ == "__main__":
    main()
