"""Peak memory of `dokumi scan` at N and 10×N records of the same shape.

Streaming means memory grows only by the stages' fitted state, not by the
data: this prints the peak resident memory of a scan at both sizes, the growth
per added record, and the documented budget (each stage's
``state_bytes_per_record`` plus the scan's own 16 bytes per record for
duplicate-id checks). The scans run with ``cache_mb=0``: the local engine's
cache of decoded batches is bounded on its own (512 MB by default) and would
otherwise show as growth until it is full.

usage: python benchmarks/bench_memory.py [--records 20000] [--policy pretraining] [--data DIR]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))
from corpora import load_corpus  # noqa: E402

from dokumi import load_policy  # noqa: E402

SCAN_BYTES_PER_RECORD = 16  # a 64-bit hash per id, held twice while checking for duplicate ids
SHARD_ROWS = 20_000


def write_corpus(texts: list[str], n: int, folder: Path, seed: int = 0) -> None:
    rng = random.Random(seed)
    folder.mkdir(parents=True)
    for start in range(0, n, SHARD_ROWS):
        rows = min(SHARD_ROWS, n - start)
        table = pa.table({
            "id": [f"doc-{start + i}" for i in range(rows)],
            "text": [rng.choice(texts) + f" ({start + i})" for i in range(rows)],
        })
        pq.write_table(table, folder / f"part-{start // SHARD_ROWS:05d}.parquet")


def peak_rss_of_scan(inputs: Path, out: Path, policy: str) -> int:
    """Peak resident bytes of a one-process scan, run in a fresh interpreter."""
    code = (
        "import resource, sys\n"
        "from dokumi import scan\n"
        f"scan({str(inputs)!r}, out={str(out)!r}, policy={policy!r}, workers=1, progress=False, cache_mb=0)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return int(result.stdout.strip().splitlines()[-1]) * 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20_000, help="N; the second run scans 10×N")
    parser.add_argument("--policy", default="pretraining")
    parser.add_argument("--data", default=None, help="folder with the prepared corpora (else DOKUMI_DATA or a build)")
    args = parser.parse_args()

    texts = load_corpus("wordnet", args.data).column("text").to_pylist()
    policy = load_policy(args.policy)
    budget = SCAN_BYTES_PER_RECORD + sum(stage.state_bytes_per_record for stage in policy.stages)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (args.records, 10 * args.records):
            folder = Path(tmp) / f"in-{n}"
            write_corpus(texts, n, folder)
            rows.append((n, peak_rss_of_scan(folder, Path(tmp) / f"out-{n}", args.policy)))
    (small_n, small), (large_n, large) = rows
    growth = (large - small) / (large_n - small_n)
    print(f"policy {args.policy}: stages {', '.join(s.name for s in policy.stages)}")
    print(f"{'records':>10} {'peak MiB':>10}")
    for n, peak in rows:
        print(f"{n:>10,} {peak / 2**20:>10.1f}")
    print(f"growth per added record: {growth:,.1f} bytes; documented state budget: {budget:,.1f} bytes/record")
    print("within budget" if growth <= budget else "OVER BUDGET")


if __name__ == "__main__":
    main()
