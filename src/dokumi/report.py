"""`report.html`: a scan's result for people. Counts, reasons, score histograms, clusters, findings.

Static HTML with inline SVG, no scripts and nothing fetched. It holds ids,
reason codes and counts; raw text only when asked (``with_text``), and then
only of quarantined records.
"""

from __future__ import annotations

import gzip
import html
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from dokumi.decisions import ALARMS, DECISIONS

REPORT = "report.html"
BINS = 20
TOP_RECORDS = 50
TOP_CLUSTERS = 15
TEXT_PREVIEW = 300


def write_report(
    out: str | Path, with_text: bool = False, manifest: dict[str, Any] | None = None, to: str | Path | None = None
) -> Path:
    """Write the report of a scan folder from its manifest and scores; return its path.

    ``manifest``: the manifest as the scan built it, before it is written (the scan renders the
    report first, so that the manifest can list it); read from ``<out>/manifest.json`` otherwise.
    ``to``: the file to write (default ``<out>/report.html``, a file the manifest lists: see
    ``dokumi report`` for rewriting it).
    """
    out = Path(out)
    if manifest is None:
        from dokumi.manifest import read_manifest

        if not (out / "manifest.json").is_file():
            from dokumi.errors import InputError

            raise InputError(f"{out} holds no manifest.json: not a finished scan folder")
        manifest = read_manifest(out / "manifest.json")
    stages = [stage["name"] for stage in manifest.get("stages", [])]
    digest = _digest_scores(sorted((out / "scores").glob("*.parquet")), stages)
    texts = _quarantined_texts(out, {r["id"] for r in digest["top"]}) if with_text else {}
    path = Path(to) if to is not None else out / REPORT
    path.write_text(_render(manifest, digest, texts), encoding="utf-8")
    return path


def _digest_scores(files: list[Path], stages: list[str]) -> dict[str, Any]:
    """One streaming pass over scores/: histograms, top records by risk, near-duplicate clusters."""
    edges = np.linspace(0.0, 1.0, BINS + 1)
    histograms = {stage: np.zeros(BINS, dtype=np.int64) for stage in stages}
    clusters: Counter = Counter()
    top: list[dict[str, Any]] = []
    for file in files:
        table = pq.read_table(file)
        for stage in stages:
            column = f"{stage}_score"
            if column in table.column_names:
                values = table.column(column).to_numpy(zero_copy_only=False)
                values = values[~np.isnan(values)]
                histograms[stage] += np.histogram(values, bins=edges)[0]
        decisions = table.column("decision").to_pylist()
        reasons = table.column("reasons").to_pylist()
        for record_reasons in reasons:
            for reason in record_reasons:
                if reason.startswith("near-duplicate:cluster="):
                    clusters[reason.split("=", 1)[1].split(",", 1)[0]] += 1
        risks = table.column("risk").to_pylist()
        candidates = [i for i, d in enumerate(decisions) if d in ALARMS]
        candidates.sort(key=lambda i: -risks[i])
        for i in candidates[:TOP_RECORDS]:
            top.append({"id": table.column("id")[i].as_py(), "shard": table.column("shard")[i].as_py(),
                        "row": table.column("row")[i].as_py(), "decision": decisions[i], "risk": risks[i],
                        "reasons": reasons[i]})
        top.sort(key=lambda r: -r["risk"])
        del top[TOP_RECORDS:]
    return {"histograms": histograms, "clusters": clusters.most_common(TOP_CLUSTERS), "top": top}


def _quarantined_texts(out: Path, ids: set[str]) -> dict[str, str]:
    """The text of records ``ids`` where quarantine/ or flagged/ holds them (Parquet or JSON Lines)."""
    texts: dict[str, str] = {}
    for folder in ("quarantine", "flagged"):
        for file in sorted((out / folder).glob("*")):
            if file.name.endswith(".unreadable.parquet"):
                continue
            for row in _records(file):
                columns = [c for c in ("text", "prompt", "response") if row.get(c) is not None]
                if str(row.get("id")) in ids and columns:
                    texts[str(row["id"])] = " | ".join(str(row[c]) for c in columns)
    return texts


def _records(file: Path) -> Iterator[dict[str, Any]]:
    """The id and content columns of a routed-records file, one record at a time for JSONL."""
    if file.suffix == ".parquet":
        names = [c for c in ("id", "text", "prompt", "response") if c in pq.read_schema(file).names]
        if "id" in names:
            yield from pq.read_table(file, columns=names).to_pylist()
    elif file.name.endswith((".jsonl", ".jsonl.gz")):
        opener = gzip.open if file.name.endswith(".gz") else open
        with opener(file, "rt", encoding="utf-8") as handle:
            yield from (json.loads(line) for line in handle if line.strip())


def _render(manifest: dict[str, Any], digest: dict[str, Any], texts: dict[str, str]) -> str:
    counts = manifest["counts"]
    total = counts["records"]
    e = html.escape
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>dokumi scan report: {e(manifest['policy']['name'])}</title>",
        f"<style>{_CSS}</style></head><body>",
        "<h1>dokumi scan report</h1>",
        # no time stamp (manifest.json has it): the same scan gives the same report, byte for byte
        f"<p class='meta'>policy <b>{e(manifest['policy']['name'])}</b> · dokumi {e(manifest['tool']['version'])}"
        f" · corpus root <code>{e(manifest['merkle']['root'][:16])}…</code></p>",
        "<section><h2>Decisions</h2><table id='decisions'><tr><th>decision</th><th>records</th><th>share</th>"
        "<th>written to</th></tr>",
    ]
    folders = manifest.get("routing") or {}
    for decision in DECISIONS:
        count = counts["decisions"].get(decision, 0)
        share = 100 * count / total if total else 0.0
        folder = f"{e(folders[decision])}/" if decision in folders else ""
        parts.append(f"<tr class='{decision}'><td>{decision}</td><td data-count='{count}'>{count:,}</td>"
                     f"<td>{share:.2f}%</td><td class='folder'>{folder}</td></tr>")
    parts.append(f"<tr><td>total</td><td id='total' data-count='{total}'>{total:,}</td><td></td><td></td></tr>"
                 "</table>")
    parts.append(_table("Reasons", ["reason", "records"], sorted(counts["reasons"].items(), key=lambda kv: -kv[1]),
                        table_id="reasons"))
    parts.append("</section><section><h2>Scores by stage</h2><div class='grid'>")
    for stage, histogram in digest["histograms"].items():
        parts.append(f"<figure><figcaption>{e(stage)}_score <small>(records, log scale)</small></figcaption>"
                     f"{_histogram_svg(histogram)}</figure>")
    parts.append("</div></section>")
    if digest["clusters"]:
        parts.append(_table("Largest near-duplicate clusters", ["cluster", "records set apart or flagged"],
                            digest["clusters"], table_id="clusters"))
    findings = [(stage["name"], f["finding"], f["records"]) for stage in manifest.get("stages", [])
                for f in stage.get("summary", {}).get("findings", [])
                if isinstance(f, dict) and isinstance(f.get("finding"), str) and isinstance(f.get("records"), int)]
    if findings:
        parts.append(_table("Discovered triggers and findings", ["stage", "finding", "records"], findings,
                            table_id="findings"))
    rows = [(r["decision"], r["id"], f"{r['shard']}:{r['row']}", f"{r['risk']:.3f}", ", ".join(r["reasons"]))
            + ((texts.get(r["id"], "")[:TEXT_PREVIEW],) if texts else ()) for r in digest["top"]]
    header = ["decision", "id", "shard:row", "risk", "reasons"] + (["text"] if texts else [])
    parts.append(_table(f"Riskiest flagged and dropped records (top {TOP_RECORDS})", header, rows, table_id="top"))
    inputs = [(i.get("name") or i.get("path"), i.get("records", 0), i.get("bytes") or 0)
              for i in manifest.get("inputs", [])]
    parts.append(_table("Input shards", ["shard", "records", "bytes"], inputs, table_id="inputs"))
    if manifest.get("warnings"):
        parts.append("<section><h2>Warnings</h2><ul>")
        parts += [f"<li>{e(w)}</li>" for w in manifest["warnings"]]
        parts.append("</ul></section>")
    parts.append("<footer>No raw text is shown unless the report was made with --with-text.</footer></body></html>")
    return "\n".join(parts)


def _table(title: str, header: list[str], rows: list[tuple], table_id: str) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{e(f'{v:,}' if isinstance(v, int) else str(v))}</td>" for v in row) + "</tr>"
        for row in rows
    )
    empty = "" if rows else f"<tr><td colspan='{len(header)}'>none</td></tr>"
    return f"<section><h2>{e(title)}</h2><table id='{table_id}'><tr>{head}</tr>{body}{empty}</table></section>"


def _histogram_svg(counts: np.ndarray, width: int = 320, height: int = 120) -> str:
    """Bars on a log scale, so a handful of suspicious records stays visible beside thousands of clean ones."""
    heights = np.log1p(counts) / max(np.log1p(counts.max()), 1e-9) * (height - 20)
    bar = width / len(counts)
    bars = "".join(
        f"<rect x='{i * bar:.1f}' y='{height - 15 - h:.1f}' width='{bar - 1:.1f}' height='{h:.1f}'>"
        f"<title>{i / len(counts):.2f}–{(i + 1) / len(counts):.2f}: {int(c):,} records</title></rect>"
        for i, (c, h) in enumerate(zip(counts, heights))
    )
    axis = (f"<text x='0' y='{height - 2}'>0</text><text x='{width / 2 - 8:.0f}' y='{height - 2}'>0.5</text>"
            f"<text x='{width - 10}' y='{height - 2}'>1</text>")
    return (f"<svg viewBox='0 0 {width} {height}' width='{width}' height='{height}' role='img' "
            f"aria-label='histogram of scores'>{bars}{axis}</svg>")


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:70rem;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem}.meta{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.5rem 0 1.5rem;font-size:.9rem}
th,td{border-bottom:1px solid #ddd;padding:.25rem .6rem;text-align:left;vertical-align:top}
th{background:#f4f4f4}tr.drop td:first-child{color:#b00020;font-weight:bold}
tr.flag td:first-child{color:#a06000;font-weight:bold}
.grid{display:flex;flex-wrap:wrap;gap:1.5rem}figure{margin:0}figcaption{font-weight:bold;font-size:.9rem}
svg rect{fill:#4a7ab5}svg text{font-size:10px;fill:#555}footer{color:#777;font-size:.8rem;margin-top:2rem}
"""
