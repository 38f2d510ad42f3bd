"""Record-hash verification speed against raw hashlib.sha256, and split-view grading on real text.

Table 1, one run per corpus: the provenance stage verifying every record's
SHA-256 against a ``sha256`` column (``Provenance().score`` on 1024-record
Arrow batches: hashing straight from the Arrow buffers, parsing the expected
hex, comparing), beside raw ``hashlib.sha256(record_bytes).digest()`` over the
same bytes (the UTF-8 text, or the canonical netstring pair for instruction
data), one call per record. ``fortune-pages`` joins eight fortunes per record
to show page-sized documents. The ratio is verification MB/s over raw MB/s
(target >= 0.5). Within the one run, raw and verified hashing alternate batch
by batch, each batch timed five times and the fastest kept, for both alike, so
that a moment of load on a shared machine does not decide the figure. It also
times the similarity sketch every scan writes to its record-hash sidecar.

Table 2: split-view poisoning (attacks.split_view: 0.5% substituted, 5%
benignly drifted) on real text, graded against sketches of the clean text as
the pretraining recipe does (drop from 0.5, flag from 0.2).

usage: python benchmarks/bench_hashing.py [--data DIR] [--size N]
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import platform
import random
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).parent))
import attacks  # noqa: E402
from corpora import load_corpus  # noqa: E402

from dokumi.hashing import pair_bytes, record_digests  # noqa: E402
from dokumi.records import Batch  # noqa: E402
from dokumi.sidecar import ExpectedHashes, id_keys, sketches  # noqa: E402
from dokumi.stages.provenance import Provenance  # noqa: E402

BATCH = 1024
REPEATS = 5


def batches(table: pa.Table) -> list[Batch]:
    row = 0
    out = []
    for records in table.to_batches(max_chunksize=BATCH):
        out.append(Batch(records=records, shard="bench", rows=pa.array(range(row, row + records.num_rows), pa.int64())))
        row += records.num_rows
    return out


def record_bytes(table: pa.Table) -> list[bytes]:
    if "text" in table.column_names:
        return [(t or "").encode("utf-8") for t in table.column("text").to_pylist()]
    return [pair_bytes(p or "", r or "") for p, r in zip(table.column("prompt").to_pylist(),
                                                         table.column("response").to_pylist())]


def throughput_row(name: str, table: pa.Table) -> tuple[str, int, float, float, float, float, float]:
    raw = record_bytes(table)
    table = table.append_column("sha256", pa.array([hashlib.sha256(b).hexdigest() for b in raw]))
    prepared = batches(table)
    stage = Provenance()
    size = sum(map(len, raw))

    # Raw and verified hashing alternate batch by batch, each timed REPEATS times keeping the fastest:
    # on a shared machine a preempted batch otherwise decides the figure. Both get the same treatment.
    raw_seconds = verify_seconds = 0.0
    gc.disable()  # as timeit does: a collection triggered by earlier garbage lands on whichever side runs
    for start, batch in zip(range(0, len(raw), BATCH), prepared):
        raw_times, verify_times = [], []
        for _ in range(REPEATS):
            began = time.perf_counter()
            for data in raw[start:start + BATCH]:
                hashlib.sha256(data).digest()
            middle = time.perf_counter()
            mismatches = int((stage.score(batch).scores > 0).sum())
            raw_times.append(middle - began)
            verify_times.append(time.perf_counter() - middle)
            if mismatches:
                raise AssertionError(f"{name}: {mismatches} records failed verification against their own hashes")
        raw_seconds += min(raw_times)
        verify_seconds += min(verify_times)
    gc.enable()

    texts = [t for batch in prepared[:8] for t in batch.texts]
    started = time.perf_counter()
    for i in range(0, len(texts), BATCH):
        sketches(texts[i:i + BATCH])
    sketch_rate = len(texts) / (time.perf_counter() - started)
    return (name, len(raw), size / len(raw), size / raw_seconds / 1e6, size / verify_seconds / 1e6,
            raw_seconds / verify_seconds, sketch_rate)


def split_view_row(name: str, table: pa.Table, rng: random.Random) -> tuple:
    clean = [{"id": f"{name}-{i}", "text": t} for i, t in enumerate(table.column("text").to_pylist()) if t]
    served, status = attacks.split_view(clean, rng)
    indexed = pa.table({"id": [r["id"] for r in clean], "text": [r["text"] for r in clean]})
    digests = np.concatenate([record_digests(b) for b in batches(indexed)])
    sketch_rows, counts = sketches(indexed.column("text").to_pylist())
    stage = Provenance()
    stage.expected_ = ExpectedHashes(id_keys(indexed.column("id").to_pylist()), digests, sketch_rows, counts, [])
    scores = np.concatenate([stage.score(b).scores for b in batches(pa.Table.from_pylist(served))])
    status = np.array(status)
    dropped, flagged = scores >= 0.5, (scores >= 0.2) & (scores < 0.5)

    def share(mask: np.ndarray, group: str) -> float:
        return 100 * mask[status == group].mean() if (status == group).any() else float("nan")

    return (name, len(clean), int((status == "substituted").sum()), share(dropped, "substituted"),
            int((status == "drifted").sum()), share(dropped, "drifted"), share(flagged, "drifted"),
            share(dropped | flagged, "same"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", help="folder with the prepared corpora (default: $DOKUMI_DATA or a local cache)")
    parser.add_argument("--size", type=int, default=50_000, help="records per corpus at most (default 50000)")
    args = parser.parse_args()
    corpora = {name: load_corpus(name, args.data) for name in ("wordnet", "fortunes", "chatterbot")}
    corpora = {name: table.slice(0, args.size) for name, table in corpora.items()}
    # web documents run to kilobytes: eight consecutive fortunes make a page-sized record
    fortunes = corpora["fortunes"].column("text").to_pylist()
    corpora["fortune-pages"] = pa.table({"text": ["\n\n".join(fortunes[i:i + 8]) for i in range(0, len(fortunes), 8)]})
    machine = platform.processor() or platform.machine()
    print(f"dokumi hash verification, one run, one core ({machine}, Python {platform.python_version()}); "
          f"each 1024-record batch timed {REPEATS} times, fastest kept, raw and verify alike\n")
    print(f"{'corpus':<12}{'records':>9}{'bytes/rec':>11}{'raw MB/s':>10}{'verify MB/s':>13}{'ratio':>7}"
          f"{'sketch rec/s':>14}")
    for name, table in corpora.items():
        row = throughput_row(name, table)
        print(f"{row[0]:<12}{row[1]:>9,}{row[2]:>11.0f}{row[3]:>10.0f}{row[4]:>13.0f}{row[5]:>7.2f}{row[6]:>14,.0f}")
    print("\nsplit-view poisoning (0.5% substituted, 5% drifted), graded against sketches of the clean text\n")
    print(f"{'corpus':<12}{'records':>9}{'subst.':>8}{'dropped':>9}{'drifted':>9}{'dropped':>9}{'flagged':>9}"
          f"{'same flagged':>14}")
    rng = random.Random(2023)
    for name in ("wordnet", "fortunes"):
        row = split_view_row(name, corpora[name], rng)
        print(f"{row[0]:<12}{row[1]:>9,}{row[2]:>8}{row[3]:>8.1f}%{row[4]:>9}{row[5]:>8.2f}%{row[6]:>8.1f}%"
              f"{row[7]:>13.2f}%")


if __name__ == "__main__":
    main()
