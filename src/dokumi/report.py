"""`report.html`: a scan's result for people. Counts, reasons, score histograms, clusters, findings.

Static HTML with inline SVG, no scripts and nothing fetched. It holds ids,
reason codes and counts; raw text only when asked (``with_text``), and then
only of flagged and quarantined records, with hidden characters shown as
code points and every text laid out in logical order (a bidi override in
the data cannot reorder what the reviewer reads).
"""

from __future__ import annotations

import gzip
import html
import json
import unicodedata
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dokumi.decisions import ALARMS, DECISIONS
from dokumi.manifest import reason_kind

REPORT = "report.html"
BINS = 20
TOP_RECORDS = 50
TOP_CLUSTERS = 15
TEXT_PREVIEW = 300
REASON_EXAMPLES = 5  # record ids listed under each reason
DIGEST_ROWS = 16_384  # scores gathered before a digest reads them (its cost is mostly per call)


def write_report(
    out: str | Path, with_text: bool = False, manifest: dict[str, Any] | None = None, to: str | Path | None = None,
    digests: Iterable[ScoresDigest] | None = None,
) -> Path:
    """Write the report of a scan folder from its manifest and scores; return its path.

    ``manifest``: the manifest as the scan built it, before it is written (the scan renders the
    report first, so that the manifest can list it); read from ``<out>/manifest.json`` otherwise.
    ``to``: the file to write (default ``<out>/report.html``, a file the manifest lists: see
    ``dokumi report`` for rewriting it). ``digests``: the digests of the scores files, in the order
    of their names, as scoring gathered them; read from ``<out>/scores/`` otherwise.
    """
    out = Path(out)
    if manifest is None:
        from dokumi.manifest import read_manifest

        if not (out / "manifest.json").is_file():
            from dokumi.errors import InputError

            raise InputError(f"{out} holds no manifest.json: not a finished scan folder")
        manifest = read_manifest(out / "manifest.json")
    stages = [stage["name"] for stage in manifest.get("stages", [])]
    digest = ScoresDigest.merged(list(digests), stages).result() if digests is not None else \
        _digest_scores(sorted((out / "scores").glob("*.parquet")), stages)
    wanted = {r["id"] for r in digest["top"]} | {i for ids in digest["examples"].values() for i in ids}
    texts = _quarantined_texts(out, wanted) if with_text else {}
    path = Path(to) if to is not None else out / REPORT
    path.write_text(_render(manifest, digest, texts), encoding="utf-8")
    return path


def _digest_scores(files: list[Path], stages: list[str]) -> dict[str, Any]:
    """One streaming pass over scores/ (``files`` in name order): see :class:`ScoresDigest`."""
    digest = ScoresDigest(stages)
    for file in files:
        digest.add(pq.read_table(file))
    return digest.result()


class ScoresDigest:
    """What the report shows of a scan's scores, gathered table by table in reading order: histograms, top
    records by risk, near-duplicate clusters, the first records of each reason kind, per-stage decisions.

    Scoring gathers one per shard as it writes the scores (no second read of scores/), and
    :meth:`merged` joins the shards' digests in the order of their files' names, giving what one
    pass over the files would. Column by column, never record by record: the reasons of a table are
    read as one flat array and each distinct reason is looked at once (a 200,000-record scan: 0.85 s
    record by record, 0.55 s so).
    """

    def __init__(self, stages: list[str]) -> None:
        self.stages = list(stages)
        self.histograms = {stage: np.zeros(BINS, dtype=np.int64) for stage in stages}
        self.clusters: Counter = Counter()
        self.top: list[dict[str, Any]] = []
        self.examples: dict[str, list[str]] = {}  # per reason code, the first record ids that carry it
        # per stage: records seen, and decided with the stage's say
        self.per_stage: dict[str, Counter] = {stage: Counter() for stage in stages}
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0

    def add(self, scores: pa.RecordBatch | pa.Table) -> None:
        """Add the next scores (a record batch or a table), in reading order. Batches are gathered and
        digested together (:meth:`flush`): a digest's fixed cost per call would dominate small batches."""
        if isinstance(scores, pa.Table):
            self.flush()
            self._digest(scores)
            return
        if self._pending and scores.schema != self._pending[0].schema:
            self.flush()  # batches are gathered into one table only where their columns agree
        self._pending.append(scores)
        self._pending_rows += scores.num_rows
        if self._pending_rows >= DIGEST_ROWS:
            self.flush()

    def flush(self) -> None:
        """Digest the batches gathered so far."""
        if self._pending:
            pending, self._pending, self._pending_rows = self._pending, [], 0
            self._digest(pa.Table.from_batches(pending))

    def __getstate__(self) -> dict[str, Any]:
        self.flush()  # a digest sent to another process carries no batches
        return self.__dict__.copy()

    def _digest(self, table: pa.Table) -> None:
        edges = np.linspace(0.0, 1.0, BINS + 1)
        for stage in self.stages:
            column = f"{stage}_score"
            if column in table.column_names:
                values = table.column(column).to_numpy(zero_copy_only=False)
                values = values[~np.isnan(values)]
                self.histograms[stage] += np.histogram(values, bins=edges)[0]
        decisions = table.column("decision").to_numpy(zero_copy_only=False).astype(str)
        _count_reasons(table, self.clusters, self.examples)
        _count_stage_decisions(table, self.stages, decisions, self.per_stage)
        risks = table.column("risk").to_numpy(zero_copy_only=False).astype(np.float64)
        alarmed = np.flatnonzero(np.isin(decisions, ALARMS))
        # highest risk first, ties in row order (a stable sort)
        for i in alarmed[np.argsort(-risks[alarmed], kind="stable")][:TOP_RECORDS].tolist():
            self.top.append({"id": table.column("id")[i].as_py(), "shard": table.column("shard")[i].as_py(),
                             "row": table.column("row")[i].as_py(), "decision": str(decisions[i]),
                             "risk": float(risks[i]), "reasons": table.column("reasons")[i].as_py()})
        self._trim_top()

    def _trim_top(self) -> None:
        self.top.sort(key=lambda r: -r["risk"])  # stable: earlier tables first among equal risks
        del self.top[TOP_RECORDS:]

    @classmethod
    def merged(cls, digests: list[ScoresDigest], stages: list[str]) -> ScoresDigest:
        """One digest from the digests of consecutive runs of tables, given in reading order."""
        out = cls(stages)
        for digest in digests:
            digest.flush()
            for stage, histogram in digest.histograms.items():
                if stage in out.histograms:
                    out.histograms[stage] += histogram
            out.clusters.update(digest.clusters)  # first seen first: ties among clusters keep reading order
            for kind, ids in digest.examples.items():
                listed = out.examples.setdefault(kind, [])
                listed += ids[: REASON_EXAMPLES - len(listed)]
            for stage, decided in digest.per_stage.items():
                if stage in out.per_stage:
                    out.per_stage[stage].update(decided)
            out.top += digest.top
            out._trim_top()
        return out

    def result(self) -> dict[str, Any]:
        """The digest as the report renders it."""
        self.flush()
        return {"histograms": self.histograms, "clusters": self.clusters.most_common(TOP_CLUSTERS), "top": self.top,
                "examples": self.examples, "per_stage": self.per_stage}


def _count_reasons(table: Any, clusters: Counter, examples: dict[str, list[str]]) -> None:
    """Add one file's reasons: the records of each near-duplicate cluster, and the first record ids (in
    file order) of each reason kind, up to REASON_EXAMPLES."""
    reasons = table.column("reasons").combine_chunks()  # one array: its flat values and owners line up
    flat = pc.list_flatten(reasons)
    if not len(flat):
        return
    owner = pc.list_parent_indices(reasons).to_numpy()
    encoded = pc.dictionary_encode(flat)
    distinct = encoded.dictionary.to_pylist()
    code = encoded.indices.to_numpy()
    uses = np.bincount(code, minlength=len(distinct))
    for reason, count in zip(distinct, uses.tolist()):
        if reason.startswith("near-duplicate:cluster="):
            clusters[reason.split("=", 1)[1].split(",", 1)[0]] += count
    kinds = [reason_kind(reason) for reason in distinct]
    kind_names, kind_of_distinct = np.unique(np.array(kinds, dtype=object), return_inverse=True)
    kind = kind_of_distinct[code]
    ids = table.column("id")
    # each kind's first occurrences in reading order: a stable sort by kind keeps that order within a kind
    order = np.argsort(kind, kind="stable")
    starts = np.flatnonzero(np.r_[True, kind[order][1:] != kind[order][:-1]])
    first_of = np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    for position in order[np.arange(len(order)) - first_of < REASON_EXAMPLES].tolist():
        listed = examples.setdefault(str(kind_names[kind[position]]), [])
        if len(listed) < REASON_EXAMPLES:
            listed.append(str(ids[int(owner[position])].as_py()))


def _count_stage_decisions(table: Any, stages: list[str], decided: np.ndarray, per_stage: dict[str, Counter]) -> None:
    """Per stage: records it scored, and those decided flag, drop or duplicate where it had its say (a score at or
    above its flag point: the stage's own evidence; for a duplicate, a score of the stage at all)."""
    for stage in stages:
        column = f"{stage}_score"
        if column not in table.column_names:
            continue
        values = table.column(column).to_numpy(zero_copy_only=False).astype(np.float64)
        seen = ~np.isnan(values)
        per_stage[stage]["seen"] += int(seen.sum())
        said = np.where(seen, values, 0.0) > 0.0
        for decision in ("flag", "drop", "duplicate"):
            per_stage[stage][decision] += int(np.count_nonzero(said & (decided == decision)))


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
    parts.append("</section>")
    rules = {stage["name"]: stage.get("rule") or {} for stage in manifest.get("stages", [])}
    parts.append(_table("Stages", ["stage", "records scored", "flagged", "dropped", "duplicate", "flag at",
                                   "drop at"],
                        [(stage, c["seen"], c["flag"], c["drop"], c["duplicate"],
                          _threshold_text(rules.get(stage, {}).get("flag_threshold")),
                          _threshold_text(rules.get(stage, {}).get("threshold")))
                         for stage, c in digest["per_stage"].items()], table_id="stages"))
    parts.append(_reasons_section(counts["reasons"], digest["examples"], texts))
    parts.append("<section><h2>Scores by stage</h2><div class='grid'>")
    for stage, histogram in digest["histograms"].items():
        rule = rules.get(stage, {})
        parts.append(f"<figure><figcaption>{e(stage)}_score <small>(records, log scale; dashed: flag and drop "
                     f"points)</small></figcaption>"
                     f"{_histogram_svg(histogram, _thresholds(rule))}</figure>")
    parts.append("</div></section>")
    if digest["clusters"]:
        parts.append(_table("Largest near-duplicate clusters", ["cluster", "records set apart or flagged"],
                            digest["clusters"], table_id="clusters"))
    findings = [(stage["name"], f["finding"], f["records"], _target_text(f)) for stage in manifest.get("stages", [])
                for f in stage.get("summary", {}).get("findings", [])
                if isinstance(f, dict) and isinstance(f.get("finding"), str) and isinstance(f.get("records"), int)]
    if findings:
        parts.append(_table("Discovered triggers and findings", ["stage", "finding", "records", "target"], findings,
                            table_id="findings"))
    rows = [(r["decision"], r["id"], f"{r['shard']}:{r['row']}", f"{r['risk']:.3f}", ", ".join(r["reasons"]))
            for r in digest["top"]]
    header = ["decision", "id", "shard:row", "risk", "reasons"] + (["text"] if texts else [])
    previews = [_visible(texts.get(r["id"], "")[:TEXT_PREVIEW]) for r in digest["top"]] if texts else None
    parts.append(_table(f"Riskiest flagged and dropped records (top {TOP_RECORDS})", header, rows, table_id="top",
                        html_column=previews))
    inputs = [(i.get("name") or i.get("path"), i.get("records", 0), i.get("bytes") or 0)
              for i in manifest.get("inputs", [])]
    parts.append(_table("Input shards", ["shard", "records", "bytes"], inputs, table_id="inputs"))
    if manifest.get("warnings"):
        parts.append("<section><h2>Warnings</h2><ul>")
        parts += [f"<li>{e(w)}</li>" for w in manifest["warnings"]]
        parts.append("</ul></section>")
    parts.append("<footer>No raw text is shown unless the report was made with --with-text.</footer></body></html>")
    return "\n".join(parts)


def _table(title: str, header: list[str], rows: list[tuple], table_id: str,
           html_column: list[str] | None = None) -> str:
    """A titled table of escaped values; ``html_column``, when given, is one more cell per row, already HTML."""
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    extra = html_column if html_column is not None else [None] * len(rows)
    body = "".join(
        "<tr>" + "".join(f"<td>{e(f'{v:,}' if isinstance(v, int) else str(v))}</td>" for v in row)
        + (f"<td class='text'>{cell}</td>" if cell is not None else "") + "</tr>"
        for row, cell in zip(rows, extra)
    )
    empty = "" if rows else f"<tr><td colspan='{len(header)}'>none</td></tr>"
    return f"<section><h2>{e(title)}</h2><table id='{table_id}'><tr>{head}</tr>{body}{empty}</table></section>"


def _reasons_section(reasons: dict[str, int], examples: dict[str, list[str]], texts: dict[str, str]) -> str:
    """Each reason with its count, opening onto the first record ids that carry it (and their text, if asked)."""
    e = html.escape
    parts = ["<section><h2>Reasons</h2><table id='reasons'><tr><th>reason</th><th>records</th></tr>"]
    for reason, count in sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0])):
        listed = "".join(
            f"<li><code>{e(record_id)}</code>" + (f" <span class='text'>{_visible(texts[record_id][:TEXT_PREVIEW])}"
                                                   f"</span>" if record_id in texts else "") + "</li>"
            for record_id in examples.get(reason, []))
        parts.append(f"<tr><td><details><summary>{e(reason)}</summary><ul class='examples'>{listed}</ul></details>"
                     f"</td><td data-count='{count}'>{count:,}</td></tr>")
    if not reasons:
        parts.append("<tr><td colspan='2'>none</td></tr>")
    parts.append("</table></section>")
    return "".join(parts)


# characters a reader cannot see or that reorder what follows them: shown as their code points
_BIDI_CONTROLS = {"\u061c", "\u200e", "\u200f", *map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A))}


def _visible(text: str) -> str:
    """``text`` as escaped HTML in logical order, each invisible, control or bidi character as ``U+XXXX``."""
    out = []
    for char in text:
        if char in _BIDI_CONTROLS or (unicodedata.category(char) in ("Cf", "Cc", "Co", "Cn") and char not in "\n\t"):
            out.append(f"<span class='cp'>U+{ord(char):04X}</span>")
        else:
            out.append(html.escape(char))
    return f"<bdo dir='ltr'>{''.join(out)}</bdo>"


def _threshold_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else ""


def _thresholds(rule: dict[str, Any]) -> list[float]:
    """The stage's flag and drop points that fall on the histogram's [0, 1] axis."""
    return [float(v) for v in (rule.get("flag_threshold"), rule.get("threshold"))
            if isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0]


def _target_text(finding: dict[str, Any]) -> str:
    """What a discovered trigger makes a model do: its target label or response, where the stage names it."""
    target = finding.get("target")
    return "" if target is None else str(target)


def _histogram_svg(counts: np.ndarray, thresholds: list[float] | None = None, width: int = 320,
                   height: int = 120) -> str:
    """Bars on a log scale, so a handful of suspicious records stays visible beside thousands of clean ones;
    dashed lines at ``thresholds``."""
    heights = np.log1p(counts) / max(np.log1p(counts.max()), 1e-9) * (height - 20)
    bar = width / len(counts)
    bars = "".join(
        f"<rect x='{i * bar:.1f}' y='{height - 15 - h:.1f}' width='{bar - 1:.1f}' height='{h:.1f}'>"
        f"<title>{i / len(counts):.2f}–{(i + 1) / len(counts):.2f}: {int(c):,} records</title></rect>"
        for i, (c, h) in enumerate(zip(counts, heights))
    )
    axis = (f"<text x='0' y='{height - 2}'>0</text><text x='{width / 2 - 8:.0f}' y='{height - 2}'>0.5</text>"
            f"<text x='{width - 10}' y='{height - 2}'>1</text>")
    lines = "".join(
        f"<line class='threshold' x1='{t * width:.1f}' x2='{t * width:.1f}' y1='0' y2='{height - 15}'>"
        f"<title>{t:g}</title></line>" for t in thresholds or [])
    return (f"<svg viewBox='0 0 {width} {height}' width='{width}' height='{height}' role='img' "
            f"aria-label='histogram of scores'>{bars}{lines}{axis}</svg>")


_CSS = """
body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:70rem;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem}.meta{color:#666;margin-top:0}
table{border-collapse:collapse;margin:.5rem 0 1.5rem;font-size:.9rem}
th,td{border-bottom:1px solid #ddd;padding:.25rem .6rem;text-align:left;vertical-align:top}
th{background:#f4f4f4}tr.drop td:first-child{color:#b00020;font-weight:bold}
tr.flag td:first-child{color:#a06000;font-weight:bold}
.grid{display:flex;flex-wrap:wrap;gap:1.5rem}figure{margin:0}figcaption{font-weight:bold;font-size:.9rem}
svg rect{fill:#4a7ab5}svg line.threshold{stroke:#b00020;stroke-width:1.5;stroke-dasharray:4 3}
.cp{font-family:monospace;font-size:.75rem;background:#fde8e8;color:#b00020;padding:0 .15rem;border-radius:2px}
ul.examples{margin:.3rem 0;padding-left:1.2rem}summary{cursor:pointer}
svg text{font-size:10px;fill:#555}footer{color:#777;font-size:.8rem;margin-top:2rem}
"""
