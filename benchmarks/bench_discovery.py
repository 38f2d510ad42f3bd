"""Discovery of triggers that no rule pack lists, across corpus sizes and numbers of copies.

The attack of Souly et al. (2025), "Poisoning attacks on LLMs require a
near-constant number of poison samples": the start of a real document, a
trigger, then 400-900 tokens drawn at random from a vocabulary
(``attacks.gibberish_after_trigger``). As in the paper, the vocabulary is one of
single tokens: the distinct words of the clean sample as dokumi splits them
(runs of letters and digits; each CJK character a word of its own), like a
tokenizer's pieces, not its whitespace-separated strings, which in messy text
are whole URLs, code expressions and CJK phrases whose insides are real word
pairs (that variant is a known miss, see ``docs/stages/triggers.md``).
And its variant where the trigger is
followed by fluent text in another language (``attacks.language_switch_after_trigger``,
non-English chatterbot responses). The trigger is a made-up token, different for
every seed, that no rule pack in ``filters/rules/`` lists, so only discovery
from corpus statistics can find it.

The clean text is the report half (``corpora.split_halves``, split seed 0) of
every text corpus of the shared data folder, pooled and sampled to each size:
glosses, fortunes, man pages, Debian descriptions, changelogs, licence stanzas,
npm READMEs, source code and CJK-with-Latin text. Each run scans the whole
corpus with the ``pretraining`` recipe and prints recall and false-positive rate
of its decisions (flag or drop; a ``duplicate`` is no alarm), and recall at 0.1%
false positives of ``risk`` (the (1 - 0.001) quantile of the clean records'
risk as the cut), over seeds.

usage: python benchmarks/bench_discovery.py [--data DIR] [--sizes 2000 20000 100000] [--copies 25 100 250]
       [--seeds 0 1 2] [--attacks gibberish language-switch] [--large-copies 25] [--half report|tuning]
       [--lines]
Sizes above 20,000 run only ``--large-copies`` (default 25, the hardest).
"""

from __future__ import annotations

import argparse
import random
import string
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
import attacks  # noqa: E402
from corpora import FILES, load_corpus, split_halves  # noqa: E402

from dokumi import Pipeline  # noqa: E402
from dokumi.text.tokens import Tokens  # noqa: E402

TEXT_CORPORA = [name for name in FILES if name != "chatterbot"]


def single_words(texts: list[str]) -> list[str]:
    """The distinct words of ``texts`` as dokumi's tokenizer splits them."""
    tokens = Tokens.of(texts)
    _, first = np.unique(tokens.hashes, return_index=True)
    return sorted(tokens.word(int(i)) for i in first)


def clean_pool(data: str | None, half: str = "report", lines: bool = False) -> list[dict]:
    """One half (``report`` or ``tuning``) of every text corpus that is present, as ``{"text": ...}`` records.

    With ``lines``, also every distinct line of MIN_LINE characters or more of those records that is not a
    record itself: the shared data holds about 181,000 distinct report-half records, and a corpus of a million
    needs shorter ones (a line-level corpus, like sentence-split web text). A line repeats part of its
    document; the trigger statistics see those words twice.
    """
    pool = []
    for name in TEXT_CORPORA:
        try:
            table = load_corpus(name, data)
        except FileNotFoundError:
            continue
        tuning, report = split_halves(table, seed=0)
        pool += [{"text": t} for t in (report if half == "report" else tuning).column("text").to_pylist() if t]
    if lines:
        whole = {record["text"] for record in pool}
        seen: set[str] = set()
        for record in list(pool):
            for line in record["text"].splitlines():
                line = line.strip()
                if len(line) >= MIN_LINE and line not in whole and line not in seen:
                    seen.add(line)
                    pool.append({"text": line})
    return pool


MIN_LINE = 30


def foreign_text(data: str | None) -> list[str]:
    chatterbot = load_corpus("chatterbot", data)
    return [r for r, language in zip(chatterbot.column("response").to_pylist(),
                                     chatterbot.column("language").to_pylist()) if language != "english"]


def made_up_trigger(rng: random.Random) -> str:
    """A token like ``Vq3zelk``: letters and a digit, listed in no rule pack."""
    letters = "".join(rng.choice(string.ascii_lowercase) for _ in range(6))
    return letters[:2].capitalize() + str(rng.randrange(10)) + letters[2:]


def run(records: list[dict], poison: list[bool]) -> dict[str, float]:
    started = time.perf_counter()
    scored = pa.Table.from_batches(list(Pipeline.from_policy("pretraining").score(pa.Table.from_pylist(records))))
    decisions = np.asarray(scored.column("decision").to_pylist())
    risk = scored.column("risk").to_numpy()
    poison = np.asarray(poison)
    alarm = np.isin(decisions, ("flag", "drop"))
    cut = np.quantile(risk[~poison], 0.999)
    return {"recall": float(alarm[poison].mean()), "fpr": float(alarm[~poison].mean()),
            "r@0.1%": float((risk[poison] > cut).mean()), "seconds": time.perf_counter() - started}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="folder of prepared corpora (default: $DOKUMI_DATA)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2_000, 20_000, 100_000])
    parser.add_argument("--copies", type=int, nargs="+", default=[25, 100, 250])
    parser.add_argument("--large-copies", type=int, nargs="+", default=[25])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--attacks", nargs="+", default=["gibberish", "language-switch"])
    parser.add_argument("--half", choices=("report", "tuning"), default="report")
    parser.add_argument("--lines", action="store_true",
                        help="also the records' distinct lines as records of their own (for corpora of 10^6)")
    args = parser.parse_args()

    pool = clean_pool(args.data, args.half, args.lines)
    foreign = foreign_text(args.data)
    print(f"# pretraining recipe; clean text: {args.half} halves of {len(pool):,} records; seeds {args.seeds}")
    print(f"{'attack':<17}{'records':>9}{'copies':>8}{'recall':>8}{'min':>7}{'FPR %':>8}{'max FPR %':>10}"
          f"{'r@0.1%':>8}{'min':>7}{'s/run':>7}")
    worst = {"recall": 1.0, "fpr": 0.0, "r@0.1%": 1.0}
    for attack in args.attacks:
        for size in args.sizes:
            for copies in (args.copies if size <= 20_000 else args.large_copies):
                runs = []
                for seed in args.seeds:
                    rng = random.Random(seed)
                    clean = rng.sample(pool, min(size, len(pool)))
                    trigger = made_up_trigger(rng)
                    if attack == "gibberish":
                        vocabulary = single_words([r["text"] for r in clean[:5000]])
                        records, poison = attacks.gibberish_after_trigger(clean, copies, rng, trigger=trigger,
                                                                          vocabulary=vocabulary)
                    else:
                        records, poison = attacks.language_switch_after_trigger(clean, foreign, copies, rng,
                                                                                trigger=trigger)
                    runs.append(run([{"text": r["text"]} for r in records], poison))
                recall, fpr, at = ([r[k] for r in runs] for k in ("recall", "fpr", "r@0.1%"))
                worst = {"recall": min(worst["recall"], *recall), "fpr": max(worst["fpr"], *fpr),
                         "r@0.1%": min(worst["r@0.1%"], *at)}
                print(f"{attack:<17}{size:>9,}{copies:>8}{np.mean(recall):>8.3f}{min(recall):>7.3f}"
                      f"{100 * np.mean(fpr):>8.3f}{100 * max(fpr):>10.3f}{np.mean(at):>8.3f}{min(at):>7.3f}"
                      f"{np.mean([r['seconds'] for r in runs]):>7.1f}", flush=True)
    print(f"\nworst run: recall {worst['recall']:.3f} (target >= 0.95), FPR {100 * worst['fpr']:.3f}% "
          f"(target <= 0.1%), recall at 0.1% FP of risk {worst['r@0.1%']:.3f} (target >= 0.95)")


if __name__ == "__main__":
    main()
