"""CPU cost of a whole dokumi scan against datatrove's ``MinhashDedupSignature`` step, on the same documents.

The bound under test: a whole ``pretraining`` scan (every stage, reading and
writing included) costs at most one third of the CPU time datatrove's MinHash
signature step (the first of its four dedup steps, default ``MinhashConfig``:
spaCy word tokenizer, word 5-grams, xxhash, 14 buckets x 8 hashes) takes on the
same documents, on short records and on long documents; a ``finetuning`` scan of
long labelled documents is held to the same bound. The ratio printed is
datatrove CPU / dokumi CPU, so the goal is a ratio of 3 or more.

Workloads (``--size`` scales the record counts, ``--only`` picks some):

* ``glosses``: WordNet glosses (short records), ``pretraining``.
* ``manpages``: man-page sections of at least 1,000 characters, ``pretraining``.
* ``readmes``: npm README sections and whole READMEs of at least 1,000 characters, ``pretraining``.
* ``changelogs``: Debian changelogs, consecutive version entries of one package
  joined up to about 4,000 characters (an entry longer than that stays whole), ``pretraining``.
* ``labelled-long``: man-page sections of at least 1,000 characters with their
  man section (1-8) as ``label``, other pages' records than ``manpages``, ``finetuning``.

Each workload's documents are written once, as two Parquet shards, to a
temporary folder; then, one after the other:

* dokumi: ``python3 -m dokumi scan DIR --out OUT --policy POLICY --no-progress
  --overwrite`` (``--workers`` as dokumi chooses, or ``--workers N`` here);
* datatrove: a small driver script run by the interpreter of a separate
  virtual environment (``benchmarks/.cache/datatrove-venv``, created on first
  use with ``pip install datatrove==0.10.1`` and the extras its default step
  needs; datatrove is no dependency of dokumi), which reads the shards with
  datatrove's ``ParquetReader`` and runs ``MinhashDedupSignature`` through a
  ``LocalPipelineExecutor`` with one task, as a datatrove user would;
* datatrove null: the same driver, same imports and reader, without the
  signature step: the overhead included in the datatrove column.

Why CPU time: the machine these numbers come from has two cores, dokumi scores
in several worker processes and other jobs may share the cores, so wall time
depends on the load and on the worker count while CPU time (user + system, of
the process and every child it waited for, from ``getrusage(RUSAGE_CHILDREN)``
deltas around each subprocess) does not, or much less. The headline ratio is
datatrove's whole signature-step process (what a datatrove user pays) over
dokumi's whole scan process; the stricter column subtracts datatrove's null
run (interpreter start, imports, reading) from datatrove first and nothing from
dokumi. Both subprocesses run with one BLAS/OpenMP thread.

    DOKUMI_DATA=/path/to/data python3 benchmarks/bench_cost.py [--size 1.0] [--only glosses,manpages]
        [--workers N] [--repeat 1] [--json results.json] [--no-datatrove]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).parent))

from corpora import CACHE, load_corpus  # noqa: E402

DATATROVE_VERSION = "0.10.1"
# The default MinhashDedupSignature needs spaCy (English word tokenizer), xxhash < 4 (datatrove 0.10 hashes
# str, which xxhash 4 refuses), regex (text normalisation), tokenizers (imported by datatrove.pipeline.dedup)
# and pyarrow (ParquetReader).
DATATROVE_REQUIREMENTS = [f"datatrove=={DATATROVE_VERSION}", "spacy", "xxhash<4", "regex", "tokenizers", "pyarrow"]
VENV = CACHE / "datatrove-venv"
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
SHARDS = 2
MIN_LONG = 1000  # characters: the "long documents" workloads take records of at least this length
CHANGELOG_CHARS = 4000

DRIVER = '''\
import sys

from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature
from datatrove.pipeline.readers import ParquetReader

mode, data, out = sys.argv[1:4]
pipeline = [ParquetReader(data, glob_pattern="*.parquet", text_key="text")]
if mode == "signature":
    pipeline.append(MinhashDedupSignature(output_folder=out + "/signatures", config=MinhashConfig()))
LocalPipelineExecutor(pipeline=pipeline, tasks=1, workers=1, logging_dir=out + "/logs").run()
'''


# --- workloads ---------------------------------------------------------------------------------------------


def _texts(table: pa.Table) -> list[str]:
    return [text or "" for text in table.column("text").to_pylist()]


def _long(table: pa.Table) -> pa.Table:
    """Records of at least MIN_LONG characters, in a fixed random order."""
    keep = np.array([len(text) >= MIN_LONG for text in _texts(table)])
    table = table.filter(pa.array(keep))
    return table.take(pa.array(np.random.default_rng(0).permutation(table.num_rows)))


def _glosses(count: int, data: str | None) -> pa.Table:
    table = load_corpus("wordnet", data)
    table = table.take(pa.array(np.random.default_rng(0).permutation(table.num_rows)))
    return table.select(["text"]).slice(0, count)


def _manpage_halves(data: str | None) -> tuple[pa.Table, pa.Table]:
    """Long man-page records split by page, so ``manpages`` and ``labelled-long`` share no page."""
    table = _long(load_corpus("manpages", data))
    pages = sorted(set(table.column("page").to_pylist()))
    first = set(np.random.default_rng(0).permutation(len(pages))[: len(pages) // 2].tolist())
    first_pages = {page for i, page in enumerate(pages) if i in first}
    mask = np.array([page in first_pages for page in table.column("page").to_pylist()])
    return table.filter(pa.array(mask)), table.filter(pa.array(~mask))


def _manpages(count: int, data: str | None) -> pa.Table:
    return _manpage_halves(data)[0].select(["text"]).slice(0, count)


def _labelled(count: int, data: str | None) -> pa.Table:
    return _manpage_halves(data)[1].select(["text", "label"]).slice(0, count)


def _readmes(count: int, data: str | None) -> pa.Table:
    return _long(load_corpus("npm_readmes", data)).select(["text"]).slice(0, count)


def _changelogs(count: int, data: str | None) -> pa.Table:
    table = load_corpus("changelogs", data)
    documents: list[str] = []
    current: list[str] = []
    previous = None
    for text, package in zip(_texts(table), table.column("package").to_pylist()):
        size = sum(len(entry) + 2 for entry in current)
        if current and (package != previous or size + len(text) > CHANGELOG_CHARS):
            documents.append("\n\n".join(current))
            current = []
        current.append(text)
        previous = package
    if current:
        documents.append("\n\n".join(current))
    order = np.random.default_rng(0).permutation(len(documents))
    return pa.table({"text": [documents[i] for i in order[:count]]})


# name -> (policy, default record count, builder, description)
WORKLOADS: dict[str, tuple[str, int, Callable[[int, str | None], pa.Table], str]] = {
    "glosses": ("pretraining", 20_000, _glosses, "WordNet glosses (short records)"),
    "manpages": ("pretraining", 4_000, _manpages, f"man-page sections >= {MIN_LONG:,} chars"),
    "readmes": ("pretraining", 2_600, _readmes, f"npm README sections and whole READMEs >= {MIN_LONG:,} chars"),
    "changelogs": ("pretraining", 2_900, _changelogs,
                   f"Debian changelog entries of one package joined up to ~{CHANGELOG_CHARS:,} chars"),
    "labelled-long": ("finetuning", 4_000, _labelled,
                      f"man-page sections >= {MIN_LONG:,} chars, label = man section (other pages)"),
}


def write_shards(table: pa.Table, folder: Path) -> None:
    folder.mkdir(parents=True)
    step = -(-table.num_rows // SHARDS)
    for shard in range(SHARDS):
        pq.write_table(table.slice(shard * step, step), folder / f"part-{shard}.parquet")


# --- measuring ---------------------------------------------------------------------------------------------


def run_measured(command: list[str], env: dict[str, str], log: Path) -> tuple[float, float, int]:
    """(CPU seconds of the process and its waited-for children, wall seconds, exit code) of ``command``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(log, "wb") as out:
        code = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), wall, code


def last_line(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


def measure(command: list[str], env: dict[str, str], log: Path, repeat: int,
            before_each: Callable[[], None] | None = None) -> tuple[float, float] | str:
    """Lowest (CPU, wall) of ``repeat`` runs, or the last output line of a failed run."""
    best: tuple[float, float] | None = None
    for _ in range(repeat):
        if before_each:
            before_each()
        cpu, wall, code = run_measured(command, env, log)
        if code != 0:
            return f"exit {code}: {last_line(log)}"
        best = (cpu, wall) if best is None or cpu < best[0] else best
    assert best is not None
    return best


def datatrove_python(install: bool) -> tuple[Path | None, str]:
    """The datatrove venv's interpreter (created on first use) and datatrove's version, or None and why not."""
    python = VENV / "bin" / "python"
    stamp = VENV / "requirements.txt"
    wanted = "\n".join(DATATROVE_REQUIREMENTS) + "\n"
    if not (python.exists() and stamp.exists() and stamp.read_text() == wanted):
        if not install:
            return None, f"no venv at {VENV} (run without --no-install to create it)"
        print(f"creating {VENV.relative_to(Path(__file__).parent.parent)}: pip install "
              f"{' '.join(shlex.quote(r) for r in DATATROVE_REQUIREMENTS)} ...", flush=True)
        steps = [[sys.executable, "-m", "venv", "--clear", str(VENV)],
                 [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *DATATROVE_REQUIREMENTS]]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode != 0:
                lines = [line for line in (done.stderr + done.stdout).splitlines()
                         if line.strip() and not line.startswith("WARNING: Location")]
                return None, f"`{' '.join(step[:4])} ...` failed: {' | '.join(lines[-3:]) or done.returncode}"
        stamp.write_text(wanted)
    check = "import importlib.metadata as m, spacy, xxhash; print(m.version('datatrove'))"
    done = subprocess.run([str(python), "-c", check], capture_output=True, text=True)
    if done.returncode != 0:
        return None, f"datatrove venv broken: {last_line_of(done.stderr)}"
    return python, done.stdout.strip()


def last_line_of(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else "(no output)"


# --- main --------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="folder of the prepared corpora (default: $DOKUMI_DATA)")
    parser.add_argument("--size", type=float, default=1.0, help="scale every workload's record count (default 1)")
    parser.add_argument("--only", default=None, help=f"comma-separated workloads among {', '.join(WORKLOADS)}")
    parser.add_argument("--workers", type=int, default=None,
                        help="pass --workers N to dokumi scan (default: as dokumi chooses)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each measurement; the lowest CPU counts")
    parser.add_argument("--json", default=None, metavar="PATH", help="also save the results as JSON")
    parser.add_argument("--no-datatrove", action="store_true", help="measure dokumi only")
    parser.add_argument("--no-install", action="store_true", help="do not create the datatrove venv if missing")
    args = parser.parse_args()

    names = list(WORKLOADS) if not args.only else [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in names if name not in WORKLOADS]
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(WORKLOADS)}")

    variables = [f"{key}={shlex.quote(os.environ[key])}" for key in ("DOKUMI_DATA", "PYTHONPATH")
                 if os.environ.get(key) and not (key == "DOKUMI_DATA" and args.data)]
    command_line = " ".join([*variables, *(shlex.quote(part) for part in ["python3", *sys.argv])])

    import dokumi

    env = {**os.environ, **ONE_THREAD}
    python, datatrove_note = (None, "skipped (--no-datatrove)") if args.no_datatrove else datatrove_python(
        not args.no_install)
    if python is None:
        print(f"datatrove column skipped: {datatrove_note}", flush=True)
    driver = Path(tempfile.mkdtemp(prefix="bench-cost-driver-")) / "datatrove_driver.py"
    driver.write_text(DRIVER)

    results = []
    failures = []
    for name in names:
        policy, default, build, description = WORKLOADS[name]
        wanted = max(1, round(default * args.size))
        try:
            table = build(wanted, args.data)
        except FileNotFoundError as error:
            sys.exit(f"bench_cost.py: {error}")
        texts = _texts(table)
        megabytes = sum(len(text.encode("utf-8")) for text in texts) / 1e6
        row = {"workload": name, "policy": policy, "description": description, "records": table.num_rows,
               "records_wanted": wanted, "mb": megabytes, "mean_bytes": megabytes * 1e6 / max(1, table.num_rows)}
        note = "" if table.num_rows == wanted else f" (only {table.num_rows:,} available of {wanted:,} asked)"
        print(f"\n{name}: {description}; {table.num_rows:,} records{note}, {megabytes:.2f} MB, "
              f"{row['mean_bytes']:,.0f} B/record, policy {policy}", flush=True)

        with tempfile.TemporaryDirectory(prefix=f"bench-cost-{name}-") as tmp:
            tmp_path = Path(tmp)
            data = tmp_path / "input"
            write_shards(table, data)

            scan = [sys.executable, "-m", "dokumi", "scan", str(data), "--out", str(tmp_path / "dokumi"),
                    "--policy", policy, "--no-progress", "--overwrite"]
            if args.workers is not None:
                scan += ["--workers", str(args.workers)]
            got = measure(scan, env, tmp_path / "dokumi.log", args.repeat)
            if isinstance(got, str):
                failures.append(f"{name}: dokumi scan failed, {got}")
                print(f"  dokumi scan FAILED: {got}", flush=True)
                row.update(dokumi_cpu=None, dokumi_wall=None, dokumi_error=got)
            else:
                row.update(dokumi_cpu=got[0], dokumi_wall=got[1])
                print(f"  dokumi    {got[0]:8.1f} CPU-s {got[1]:8.1f} wall-s", flush=True)

            for mode in ("signature", "null"):
                key = "datatrove" if mode == "signature" else "datatrove_null"
                row.update({f"{key}_cpu": None, f"{key}_wall": None})
                if python is None:
                    continue
                out = tmp_path / f"datatrove-{mode}"

                def clear(out: Path = out) -> None:
                    subprocess.run(["rm", "-rf", str(out)], check=True)

                got = measure([str(python), str(driver), mode, str(data), str(out)], env,
                              tmp_path / f"datatrove-{mode}.log", args.repeat, clear)
                if isinstance(got, str):
                    failures.append(f"{name}: datatrove {mode} run failed, {got}")
                    print(f"  datatrove {mode} FAILED: {got}", flush=True)
                    row[f"{key}_error"] = got
                else:
                    row.update({f"{key}_cpu": got[0], f"{key}_wall": got[1]})
                    print(f"  datatrove {got[0]:8.1f} CPU-s {got[1]:8.1f} wall-s   ({mode})", flush=True)

        ours, theirs, null = row["dokumi_cpu"], row["datatrove_cpu"], row["datatrove_null_cpu"]
        row["ratio"] = theirs / ours if ours and theirs is not None else None
        row["ratio_minus_null"] = (theirs - null) / ours if ours and theirs is not None and null is not None else None
        results.append(row)

    workers = f"--workers {args.workers}" if args.workers is not None else f"default (os.cpu_count()={os.cpu_count()})"
    print("\n" + "=" * 118)
    print(f"command: {command_line}")
    theirs = (f"datatrove {datatrove_note} MinhashDedupSignature (default MinhashConfig, ParquetReader, "
              "LocalPipelineExecutor tasks=1)" if python is not None else f"datatrove column skipped: {datatrove_note}")
    print(f"dokumi {dokumi.__version__} from {Path(dokumi.__file__).parent} (policy per workload, workers: {workers})"
          f"; {theirs}")
    print(f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores; "
          f"subprocesses run with {' '.join(f'{k}={v}' for k, v in ONE_THREAD.items())}; "
          f"CPU = user + sys of the whole process and its children; best of {args.repeat}")
    print("ratio = datatrove signature-step CPU / dokumi scan CPU (headline, goal >= 3); "
          "ratio-null = (datatrove - datatrove null run) / dokumi (stricter)")
    header = (f"{'workload':<14}{'policy':<12}{'records':>8}{'MB':>7}{'B/rec':>7}{'dokumi CPU-s':>14}{'wall-s':>8}"
              f"{'datatrove CPU-s':>17}{'null CPU-s':>12}{'ratio':>7}{'ratio-null':>11}")
    print(header)
    print("-" * len(header))

    def number(value: float | None, width: int, digits: int = 1) -> str:
        return f"{value:>{width}.{digits}f}" if value is not None else f"{'-':>{width}}"

    for row in results:
        print(f"{row['workload']:<14}{row['policy']:<12}{row['records']:>8,}{row['mb']:>7.2f}{row['mean_bytes']:>7,.0f}"
              f"{number(row['dokumi_cpu'], 14)}{number(row['dokumi_wall'], 8)}{number(row['datatrove_cpu'], 17)}"
              f"{number(row['datatrove_null_cpu'], 12)}{number(row['ratio'], 7, 2)}"
              f"{number(row['ratio_minus_null'], 11, 2)}")
    for failure in failures:
        print(f"FAILED {failure}")
    verdict = [row["ratio"] is not None and row["ratio"] >= 3 for row in results]
    if results and all(row["ratio"] is not None for row in results):
        print(f"bound (ratio >= 3 on every workload): {'met' if all(verdict) else 'NOT met'}")

    if args.json:
        Path(args.json).write_text(json.dumps({
            "command": command_line, "dokumi_version": dokumi.__version__, "datatrove": datatrove_note,
            "python": platform.python_version(), "cores": os.cpu_count(), "env": ONE_THREAD,
            "workers": args.workers, "repeat": args.repeat, "size": args.size, "results": results,
        }, indent=2) + "\n")
        print(f"results saved to {args.json}")


if __name__ == "__main__":
    main()
