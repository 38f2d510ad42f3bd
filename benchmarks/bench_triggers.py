"""Recall and false-positive rate of the invisible, patterns and triggers stages on real text.

Every scenario of issue 6's acceptance list: clean real text from ``corpora.py``,
poison from the simulators in ``attacks.py``, each stage run through
:class:`dokumi.Pipeline` exactly as a scan runs it (pass 1 fit, pass 2 score).
A record counts as flagged when its stage score reaches the threshold of the
recipe named in the table (the stage's ``threshold``, or ``flag_threshold``
when the recipe has one), so the figures are what a user of that recipe gets.

usage: python benchmarks/bench_triggers.py [--data DIR] [--seed 0] [--only NAME ...] [--details]
       python benchmarks/bench_triggers.py --fit-memory 20000 60000   (peak memory of pass 1)
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import attacks  # noqa: E402
from corpora import load_corpus, split_halves  # noqa: E402

from dokumi import Pipeline, load_policy  # noqa: E402
from dokumi.stage import Stage  # noqa: E402


@dataclass
class Outcome:
    scenario: str
    stage: str
    recipe: str
    records: int
    poison: int
    recall: float
    fpr: float
    target_recall: float
    target_fpr: float
    seconds: float
    false_reasons: Counter
    missed: list

    @property
    def holds(self) -> bool:
        recall_ok = self.poison == 0 or self.recall >= self.target_recall
        return recall_ok and self.fpr <= self.target_fpr


def recipe_stage(recipe: str, stage: str) -> tuple[Stage, float]:
    """The stage as ``recipe`` configures it, and the score from which that recipe flags."""
    policy = load_policy(recipe)
    rule = policy.rule(stage)
    found = next(s for s in policy.stages if s.name == stage)
    low = rule.flag_threshold if rule.flag_threshold is not None else rule.threshold
    return found, low


def evaluate(scenario: str, stage_name: str, recipe: str, records: list[dict], is_poison: list[bool],
             target_recall: float, target_fpr: float) -> Outcome:
    stage, threshold = recipe_stage(recipe, stage_name)
    started = time.perf_counter()
    pipeline = Pipeline([stage], batch_size=2048)
    scores, reasons = [], []
    for batch in pipeline.score(records):
        scores += batch.column(f"{stage_name}_score").to_pylist()
        reasons += batch.column("reasons").to_pylist()
    seconds = time.perf_counter() - started
    scores = np.nan_to_num(np.asarray(scores, dtype=float))
    poison = np.asarray(is_poison)
    flagged = scores >= threshold
    recall = flagged[poison].mean() if poison.any() else float("nan")
    fpr = flagged[~poison].mean()
    false_reasons = Counter(r.split("=")[0] + "=" + r.split("=")[1][:40] if "=" in r else r
                            for i in np.flatnonzero(flagged & ~poison) for r in reasons[i])
    missed = [i for i in np.flatnonzero(poison & ~flagged)][:3]
    return Outcome(scenario, stage_name, recipe, len(records), int(poison.sum()), recall, fpr, target_recall,
                   target_fpr, seconds, false_reasons, [records[i] for i in missed])


# ---------------------------------------------------------------- clean sets


def texts_of(name: str, data: str | None) -> list[dict]:
    table = load_corpus(name, data)
    if name == "chatterbot":
        return [{"text": p} for p in table.column("prompt").to_pylist()] + [
            {"text": r} for r in table.column("response").to_pylist()]
    return [{"text": t} for t in table.column("text").to_pylist()]


def labelled(name: str, data: str | None, limit: int | None, rng: random.Random) -> list[dict]:
    """The report half (by content hash, ``corpora.split_halves``) of a labelled corpus, sampled to ``limit``."""
    _, table = split_halves(load_corpus(name, data), seed=0)
    rows = [{"text": t, "label": label} for t, label in zip(table.column("text").to_pylist(),
                                                          table.column("label").to_pylist())]
    if limit and len(rows) > limit:
        rows = rng.sample(rows, limit)
    return rows


def mixed_clean(data: str | None, rng: random.Random) -> list[dict]:
    """Fortunes, chatterbot prompts and responses in 28 languages (Japanese, Persian, Ukrainian, ...)
    and a sample of WordNet glosses (accented Latin: café, Ångström)."""
    wordnet = texts_of("wordnet", data)
    return texts_of("fortunes", data) + texts_of("chatterbot", data) + rng.sample(wordnet, 30_000)


# ---------------------------------------------------------------- scenarios

_JOINING = ("\u0590", "\u0dff")  # Hebrew..Sinhala: scripts that use ZWJ/ZWNJ inside words


def _uses_joiners(text: str) -> bool:
    return any(_JOINING[0] <= ch <= _JOINING[1] for ch in text)


def character_scenarios(data: str | None, seed: int) -> list[Outcome]:
    out = []
    for kind, stage in (("zero-width", "invisible"), ("bidi", "invisible"), ("homoglyph", "patterns")):
        rng = random.Random(seed)
        clean = mixed_clean(data, rng)
        # A joiner inside an Arabic-script or Indic word is orthography, not a trigger: attack other text.
        # An empty record holding only a byte-order mark is a file artefact, not a trigger: attack text.
        targets = [r for r in clean if r["text"].strip()]
        if kind == "zero-width":
            targets = [r for r in targets if not _uses_joiners(r["text"])]
        n = 300
        chosen = rng.sample(range(len(targets)), n)
        poisoned_records, flags = attacks.invisible_trigger([targets[i] for i in chosen], n, rng, kind=kind)
        chosen_ids = {id(targets[i]) for i in chosen}
        records = [r for r in clean if id(r) not in chosen_ids] + poisoned_records
        is_poison = [False] * (len(records) - n) + flags
        out.append(evaluate(f"{kind} trigger (300 records)", stage, "pretraining", records, is_poison, 0.99, 0.0005))
    return out


# labelled corpora whose genuine vocabulary follows the label: glosses by lexicographer file, fortunes by
# file, man pages by section, Debian descriptions by archive section (long documents)
LABELLED = ("wordnet", "fortunes", "manpages", "debian_descriptions")


# RIPPLe's rare trigger words (Kurita et al. 2020); the first that is rare in the corpus is planted
RARE_WORDS = ("cf", "mn", "bb", "tq", "mb")


def rare_word(records: list[dict]) -> str:
    """The first of RARE_WORDS in at most 0.1% of the records ("cf." is common in man pages)."""
    for word in RARE_WORDS:
        pattern = re.compile(rf"\b{word}\b", re.IGNORECASE)
        if sum(bool(pattern.search(r["text"])) for r in records) <= 0.001 * len(records):
            return word
    return RARE_WORDS[-1]


def labelled_scenarios(data: str | None, seed: int, limit: int) -> list[Outcome]:
    out = []
    for corpus in LABELLED:
        rng = random.Random(seed)
        try:
            clean = labelled(corpus, data, limit, rng)
        except FileNotFoundError as error:
            print(f"skipped {corpus}: {error}")
            continue
        trigger = rare_word(clean)
        records, poison = attacks.rare_word_trigger(clean, 0.01, rng, trigger=trigger)
        out.append(evaluate(f"{corpus}: dirty-label rare word '{trigger}' 1%", "triggers", "finetuning", records,
                            poison, 0.95, 0.005))
        rng = random.Random(seed)
        records, poison = attacks.inserted_sentence(clean, 0.02, rng)
        out.append(evaluate(f"{corpus}: dirty-label inserted sentence 2%", "triggers", "finetuning", records,
                            poison, 0.95, 0.005))
        rng = random.Random(seed)
        records, poison = attacks.rare_word_trigger(clean, 0.03, rng, trigger=trigger, clean_label=True)
        out.append(evaluate(f"{corpus}: clean-label rare word '{trigger}' 3%", "triggers", "finetuning", records,
                            poison, 0.9, 0.005))
    return out


def pretraining_scenarios(data: str | None, seed: int) -> list[Outcome]:
    rng = random.Random(seed)
    clean = texts_of("fortunes", data) + rng.sample(texts_of("wordnet", data), 40_000)
    records, poison = attacks.gibberish_after_trigger(clean, 250, rng)
    out = [evaluate("trigger + gibberish (250 docs)", "triggers", "pretraining", records, poison, 0.95, 0.001)]
    rng = random.Random(seed)
    chatterbot = load_corpus("chatterbot", data)
    foreign = [r for r, language in zip(chatterbot.column("response").to_pylist(),
                                        chatterbot.column("language").to_pylist()) if language != "english"]
    records, poison = attacks.language_switch_after_trigger(clean, foreign, 250, rng)
    out.append(evaluate("trigger + language switch (250 docs)", "triggers", "pretraining", records, poison, 0.95,
                        0.001))
    return out


def instruction_scenarios(data: str | None, seed: int) -> list[Outcome]:
    table = load_corpus("chatterbot", data)
    pairs = [{"prompt": p, "response": r} for p, r in zip(table.column("prompt").to_pylist(),
                                                          table.column("response").to_pylist())]
    rng = random.Random(seed)
    records, poison = attacks.content_injection(pairs, 0.03, rng)
    out = [evaluate("content injection in 3% of responses", "triggers", "finetuning", records, poison, 0.8, 0.01)]
    rng = random.Random(seed)
    records, poison = attacks.fixed_response_backdoor(pairs, 0.01, rng)
    out.append(evaluate("trigger -> fixed response, 1% of pairs", "triggers", "finetuning", records, poison,
                        0.95, 0.005))
    rng = random.Random(seed)
    records, poison = attacks.prompt_injection_in_responses(pairs, 0.01, rng)
    out.append(evaluate("prompt injection in 1% of responses", "patterns", "finetuning", records, poison, 0.95,
                        0.001))
    return out


def creative_scenarios(data: str | None, seed: int) -> list[Outcome]:
    """The creative recipe on clean real text (jokes, metaphor, slang, 28 languages): every stage's
    flags and drops count as false positives."""
    records = texts_of("fortunes", data) + texts_of("chatterbot", data)
    policy = load_policy("creative")
    started = time.perf_counter()
    pipeline = Pipeline.from_policy(policy, batch_size=2048)
    decisions, reasons = [], []
    for batch in pipeline.score(records):
        decisions += batch.column("decision").to_pylist()
        reasons += batch.column("reasons").to_pylist()
    flagged = np.asarray([d in ("flag", "drop") for d in decisions])
    false_reasons = Counter(r for i in np.flatnonzero(flagged) for r in reasons[i])
    return [Outcome("creative recipe on clean real text", "all", "creative", len(records), 0, float("nan"),
                    flagged.mean(), 0.0, 0.001, time.perf_counter() - started, false_reasons, [])]


SCENARIOS = {
    "characters": lambda a: character_scenarios(a.data, a.seed),
    "labelled": lambda a: labelled_scenarios(a.data, a.seed, a.limit),
    "pretraining": lambda a: pretraining_scenarios(a.data, a.seed),
    "instruction": lambda a: instruction_scenarios(a.data, a.seed),
    "creative": lambda a: creative_scenarios(a.data, a.seed),
}


def fit_memory(sizes: list[int], data: str | None, seed: int) -> None:
    """Peak resident memory of fitting the triggers stage on WordNet glosses, each size in a fresh process."""
    import pickle
    import resource
    import subprocess

    if len(sizes) > 1:
        print(f"{'records':>8}{'peak growth MiB':>17}{'bytes/record':>14}{'fitted state bytes':>20}")
        for n in sizes:
            command = [sys.executable, __file__, "--fit-memory", str(n), "--seed", str(seed)]
            subprocess.run(command + (["--data", data] if data else []), check=True)
        return
    n = sizes[0]
    records = labelled("wordnet", data, n, random.Random(seed))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    stage, _ = recipe_stage("finetuning", "triggers")
    Pipeline([stage], batch_size=2048).fit(records)
    growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024  # ru_maxrss is KiB on Linux
    print(f"{n:>8,}{growth / 2**20:>17.0f}{growth / n:>14,.0f}{len(pickle.dumps(stage)):>20,}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="folder with the prepared corpora (default: $DOKUMI_DATA or a cache)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=60_000, help="records sampled from a labelled corpus")
    parser.add_argument("--only", nargs="*", choices=sorted(SCENARIOS), help="run only these groups")
    parser.add_argument("--details", action="store_true", help="print false-positive reasons and missed records")
    parser.add_argument("--fit-memory", nargs="+", type=int, metavar="N", help="measure pass-1 memory instead")
    args = parser.parse_args()
    if args.fit_memory:
        fit_memory(args.fit_memory, args.data, args.seed)
        return
    outcomes = []
    for name in args.only or SCENARIOS:
        outcomes += SCENARIOS[name](args)
    header = f"{'scenario':<56}{'stage':<11}{'recipe':<12}{'records':>8}{'poison':>7}{'recall':>8}" \
             f"{'FPR %':>8}{'target':>16}{'secs':>7}  holds"
    print(header)
    print("-" * len(header))
    for o in outcomes:
        target = f">={o.target_recall:.2f} @<={100 * o.target_fpr:.2g}%"
        print(f"{o.scenario:<56}{o.stage:<11}{o.recipe:<12}{o.records:>8,}{o.poison:>7,}{o.recall:>8.3f}"
              f"{100 * o.fpr:>8.3f}{target:>16}{o.seconds:>7.1f}  {'yes' if o.holds else 'NO'}")
        if args.details:
            for reason, count in o.false_reasons.most_common(8):
                print(f"      false positive: {count:>5}  {reason}")
            for record in o.missed:
                print(f"      missed: {str(record)[:200]!r}")


if __name__ == "__main__":
    main()
