"""report.html: rendered in a real headless Chromium, with no console errors and the right counts."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import PLUMBING, clean_rows, write_parquet

from dokumi import scan
from dokumi.cli import main
from dokumi.report import write_report

SECRET = "zero\u200bwidth secret text"


def chromium() -> str:
    path = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    if path is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI must provide Chromium for the report test (.ci/run installs Debian's chromium)")
        pytest.skip("no Chromium on this machine: install Debian's chromium package to run the report test")
    return path


@pytest.fixture
def scanned(tmp_path):
    rows = clean_rows(40)
    rows[5]["text"] = SECRET
    rows[9]["text"] = "bidi \u202eoverride\u202c here"
    rows[20]["text"] = None
    write_parquet(tmp_path / "a.parquet", rows)
    scan(tmp_path / "a.parquet", out=tmp_path / "out", policy=PLUMBING)
    return tmp_path / "out"


def render(path, browser_path: str, screenshot=None) -> tuple[str, dict, list[str]]:
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=browser_path,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run", "--disable-sync"],
        )
        page = browser.new_page()
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}"))
        page.goto(path.as_uri())
        counts = {
            "total": page.get_attribute("#total", "data-count"),
            "rows": page.eval_on_selector_all(
                "#decisions tr[class]", "rows => rows.map(r => [r.className, r.cells[1].dataset.count])"),
            "svgs": page.locator("svg").count(),
        }
        counts["thresholds"] = page.locator("svg line.threshold").count()
        counts["stages"] = page.eval_on_selector_all(
            "#stages tr", "rows => rows.slice(1).map(r => [r.cells[0].innerText, r.cells[1].innerText])")
        page.eval_on_selector_all("details", "ds => ds.forEach(d => d.open = true)")  # open every drill-down
        text = page.inner_text("body")
        if screenshot is not None:
            page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    return text, counts, errors


def test_report_loads_without_errors_and_shows_the_counts(scanned, tmp_path):
    browser_path = chromium()
    manifest = json.loads((scanned / "manifest.json").read_text())
    # the screenshot is the test's artefact: kept in DOKUMI_TEST_ARTEFACTS when CI names a folder for it
    artefacts = os.environ.get("DOKUMI_TEST_ARTEFACTS")
    screenshot = (Path(artefacts) if artefacts else tmp_path) / "report.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    text, counts, errors = render(scanned / "report.html", browser_path, screenshot)
    assert screenshot.stat().st_size > 10_000 and screenshot.read_bytes()[:4] == b"\x89PNG"
    assert errors == []
    assert counts["total"] == str(manifest["counts"]["records"]) == "40"
    assert dict(counts["rows"]) == {d: str(n) for d, n in manifest["counts"]["decisions"].items()}
    assert dict(counts["rows"]) == {"keep": "37", "duplicate": "0", "flag": "1", "drop": "2"}
    assert counts["svgs"] == len(manifest["stages"])
    assert "trigger:zero-width" in text and "doc-5" in text
    assert "secret" not in text, "the report must not show raw text unless asked"
    # a drill-down per reason names the records that carry it
    assert "trigger:zero-width" in text.split("Scores by stage")[0] and text.count("doc-5") >= 2
    # per stage: records it scored; dashed lines at every flag and drop point on the [0, 1] axis
    scores = pq.read_table(scanned / "scores")
    assert {stage: int(seen.replace(",", "")) for stage, seen in counts["stages"]} == {
        stage["name"]: scores.column(f"{stage['name']}_score").drop_null().length() for stage in manifest["stages"]}
    points = [v for stage in manifest["stages"] for v in (stage["rule"]["flag_threshold"], stage["rule"]["threshold"])
              if v is not None and 0 <= v <= 1]
    assert counts["thresholds"] == len(points) > 0


def test_report_with_text_shows_quarantined_text_only_when_asked(scanned):
    browser_path = chromium()
    assert main(["report", str(scanned), "--with-text"]) == 0
    text, _, errors = render(scanned / "report.html", browser_path)
    assert errors == []
    assert "secret text" in text
    # hidden characters shown as code points; the bidi override cannot reorder what follows it
    assert "zeroU+200Bwidth secret text" in text
    assert "bidi U+202EoverrideU+202C here" in text


def test_report_html_holds_counts_and_no_text_without_a_browser(scanned):
    page = (scanned / "report.html").read_text()
    assert "data-count='40'" in page
    assert "secret" not in page
    assert "<script" not in page
    write_report(scanned, with_text=True)
    assert "secret text" in (scanned / "report.html").read_text()


def test_findings_name_their_target():
    from dokumi.report import _target_text
    from dokumi.stages.triggers.findings import Trigger

    token = Trigger("token", "cf", 1, 0.9, 30, label="spam")
    response = Trigger("response", "james bond", 2, 0.8, 40, label=7, detail={"response_opening": "visit this"})
    assert token.target == "spam" and response.target == "visit this"
    assert Trigger("seam", "qz", 3, 0.9, 25).target is None
    response.private = True
    assert response.target is None  # --no-text: a response's words are text
    assert _target_text({"finding": "trigger:token=cf", "records": 30, "target": "spam"}) == "spam"


def test_digest_lists_first_examples_per_kind_and_counts_cluster_records(tmp_path):
    """Examples: the first REASON_EXAMPLES record ids per reason kind in reading order (files, rows,
    then a record's own reasons); clusters: records per cluster id over every file; top: highest risk
    first, ties in reading order."""
    import random

    import pyarrow as pa

    from dokumi.report import REASON_EXAMPLES, _digest_scores

    rng = random.Random(3)
    kinds = ["trigger:zero-width,count=2", "patterns:injection", "near-duplicate:cluster=c{},size=9",
             "provenance:hash-mismatch", "trigger:gibberish-after={}"]
    files, expected_examples, expected_clusters, rows_seen = [], {}, {}, []
    for shard in range(3):
        rows = []
        for row in range(40):
            reasons = [rng.choice(kinds).format(rng.randrange(4)) for _ in range(rng.randrange(4))]
            rows.append({"id": f"s{shard}-{row}", "shard": shard, "row": row, "reasons": reasons,
                         "decision": rng.choice(["keep", "flag", "drop", "duplicate"]),
                         "risk": rng.choice([0.1, 0.5, 0.9]), "triggers_score": rng.random()})
            for reason in reasons:  # the reference: a plain loop in reading order
                kind = reason.split("=")[0].split(",")[0]
                if reason.startswith("near-duplicate:cluster="):
                    kind, cluster = "near-duplicate", reason.split("=", 1)[1].split(",")[0]
                    expected_clusters[cluster] = expected_clusters.get(cluster, 0) + 1
                listed = expected_examples.setdefault(kind, [])
                if len(listed) < REASON_EXAMPLES:
                    listed.append(f"s{shard}-{row}")
        rows_seen += rows
        path = tmp_path / f"part-{shard}.parquet"
        pq.write_table(pa.Table.from_pylist(rows), path)
        files.append(path)
    digest = _digest_scores(files, ["triggers"])
    assert digest["examples"] == expected_examples
    assert dict(digest["clusters"]) == expected_clusters
    alarms = [r for r in rows_seen if r["decision"] in ("flag", "drop")]
    assert [r["id"] for r in digest["top"]] == [r["id"] for r in sorted(alarms, key=lambda r: -r["risk"])][:50]
    assert digest["histograms"]["triggers"].sum() == len(rows_seen)


@pytest.mark.parametrize("digest_rows", [10, 16_384])
def test_the_report_a_scan_writes_from_its_shards_digests_is_the_one_read_from_scores(tmp_path, monkeypatch,
                                                                                       digest_rows):
    """Scoring gathers each shard's digest as it writes the scores; joined in the files' name order they give
    the report that one pass over scores/ gives: top records (ties in reading order), clusters, examples.
    Batches are digested a few at a time (every 10 rows here) or all at the end of the shard."""
    monkeypatch.setattr("dokumi.report.DIGEST_ROWS", digest_rows)
    rows = []
    for i in range(90):
        text = f"note {i} about the weather in town number {i * 7} today"
        if i % 9 == 0:
            text = "the same repeated announcement about the spring fair on the green " + "again " * (i % 2)
        if i % 11 == 0:
            text = f"hidden\u200bmark in record {i}"
        rows.append({"id": f"r{i:03d}", "text": text})
    for shard in range(3):  # the shards' names sort otherwise than the order they are given in
        write_parquet(tmp_path / "in" / f"{'cab'[shard]}.parquet", rows[shard::3])
    out = tmp_path / "out"
    scan(sorted((tmp_path / "in").glob("*.parquet"), reverse=True), out=out, policy="pretraining", batch_size=7)
    written = (out / "report.html").read_text(encoding="utf-8")
    assert "near-duplicate" in written and "zero-width" in written.lower()
    again = write_report(out, manifest=json.loads((out / "manifest.json").read_text()), to=tmp_path / "again.html")
    assert again.read_text(encoding="utf-8") == written
