"""MinHash signature throughput on one core: dokumi vs datasketch ``MinHash.bulk`` vs datatrove.

Same documents, same run: 2,000-character documents cut from real text (fortunes
joined end to end). Every implementation starts from the raw strings, so shingling
is included everywhere:

* dokumi: ``MinHasher.signatures`` on batches of 1,024 texts (word 5-grams, 128
  permutations), for both datasketch schemes.
* datasketch: the usual user code, ``re.findall(r"\\w+", text.lower())`` word
  5-grams encoded to bytes, then ``MinHash.bulk`` (SHA-1 per shingle, 128
  permutations), for both schemes.
* datatrove: its default ``MinhashDedupSignature`` step (spaCy word tokenizer,
  xxhash 64-bit shingles, 14 buckets x 8 hashes = 112 permutations, signatures
  written to local files), when it is installed. Install it apart from dokumi,
  e.g. ``python -m venv --system-site-packages /tmp/dt && /tmp/dt/bin/pip install
  datatrove spacy 'xxhash<4'`` (datatrove 0.10 hashes ``str``, which xxhash 4
  refuses), and run this script with that interpreter.

The process is pinned to one CPU; each measurement is the best of ``--repeat``
runs, because the best run is the one least disturbed by other processes.

    DOKUMI_DATA=/path/to/data python benchmarks/bench_minhash.py [--docs 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from corpora import load_corpus  # noqa: E402

from dokumi.minhash import MinHasher  # noqa: E402

NUM_PERM = 128
NGRAM = 5
BATCH = 1024
WORD = re.compile(r"\w+")


def documents(count: int, chars: int, data: str | None) -> list[str]:
    """``count`` documents of exactly ``chars`` characters, cut from fortunes joined in a fixed random order."""
    texts = load_corpus("fortunes", data).column("text").to_pylist()
    order = np.random.default_rng(0).permutation(len(texts))
    joined = "\n".join(texts[i] for i in order)
    while len(joined) < count * chars:
        joined += "\n" + joined
    return [joined[i * chars: (i + 1) * chars] for i in range(count)]


def run_dokumi(docs: list[str], scheme: str) -> None:
    hasher = MinHasher(num_perm=NUM_PERM, ngram=NGRAM, scheme=scheme)
    for begin in range(0, len(docs), BATCH):
        hasher.signatures(docs[begin: begin + BATCH])


def run_datasketch(docs: list[str], scheme: str) -> None:
    from datasketch import MinHash

    def shingles(text: str) -> list[bytes]:
        words = WORD.findall(text.lower())
        return [" ".join(words[i: i + NGRAM]).encode("utf-8") for i in range(max(1, len(words) - NGRAM + 1))]

    MinHash.bulk([shingles(text) for text in docs], num_perm=NUM_PERM, scheme=scheme)


def datatrove_runner() -> tuple[Callable[[list[str]], None] | None, str]:
    try:
        from datatrove.data import Document
        from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
    except ImportError as error:
        return None, f"not installed ({error.name})"
    config = MinhashConfig()
    folder = tempfile.mkdtemp(prefix="bench-datatrove-")
    step = MinhashDedupSignature(output_folder=folder, config=config)

    def run(docs: list[str]) -> None:
        step.run(iter([Document(text=text, id=str(i)) for i, text in enumerate(docs)]), rank=0, world_size=1)

    hashes = config.num_buckets * config.hashes_per_bucket
    return run, f"default step: {config.num_buckets}x{config.hashes_per_bucket}={hashes} hashes, {config.hash_config}"


def best_seconds(run: Callable[[], None], repeat: int) -> float:
    run()  # warm-up: imports, spaCy's tokenizer, numpy buffers
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--chars", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--data", default=None, help="folder of the prepared corpora (default: $DOKUMI_DATA)")
    args = parser.parse_args()

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    docs = documents(args.docs, args.chars, args.data)
    megabytes = sum(len(d.encode("utf-8")) for d in docs) / 1e6

    rows: list[tuple[str, str, float]] = []
    for scheme in ("affine32", "legacy"):
        rows.append((f"dokumi MinHasher ({scheme})", f"{NUM_PERM} perms, word {NGRAM}-grams",
                     best_seconds(lambda s=scheme: run_dokumi(docs, s), args.repeat)))
        rows.append((f"datasketch MinHash.bulk ({scheme})", f"{NUM_PERM} perms, sha1, re.findall shingles",
                     best_seconds(lambda s=scheme: run_datasketch(docs, s), args.repeat)))
    datatrove, note = datatrove_runner()
    if datatrove is not None:
        rows.append(("datatrove MinhashDedupSignature", note, best_seconds(lambda: datatrove(docs), args.repeat)))

    import datasketch

    print(f"{len(docs):,} documents of {args.chars:,} characters ({megabytes:.1f} MB), one core, "
          f"best of {args.repeat}; Python {platform.python_version()}, numpy {np.__version__}, "
          f"datasketch {datasketch.__version__}")
    print(f"\n  {'implementation':<40}{'docs/s':>10}{'MB/s':>8}   notes")
    for name, detail, seconds in rows:
        print(f"  {name:<40}{len(docs) / seconds:>10,.0f}{megabytes / seconds:>8.2f}   {detail}")
    if datatrove is None:
        print(f"  {'datatrove MinhashDedupSignature':<40}{'-':>10}{'-':>8}   {note}")

    rate = {name: len(docs) / seconds for name, _, seconds in rows}
    print("\n  ratios (dokumi / other, same scheme where both have one)")
    for scheme in ("affine32", "legacy"):
        ours, theirs = rate[f"dokumi MinHasher ({scheme})"], rate[f"datasketch MinHash.bulk ({scheme})"]
        print(f"  dokumi {scheme:<9} vs datasketch MinHash.bulk {scheme:<9} {ours / theirs:6.1f}x   (target >= 4x)")
    if datatrove is not None:
        for scheme in ("affine32", "legacy"):
            ours = rate[f"dokumi MinHasher ({scheme})"]
            print(f"  dokumi {scheme:<9} vs datatrove default step          "
                  f"{ours / rate['datatrove MinhashDedupSignature']:6.1f}x   (target >= 30x)")


if __name__ == "__main__":
    main()
