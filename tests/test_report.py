"""report.html: rendered in a real headless Chromium, with no console errors and the right counts."""

from __future__ import annotations

import json
import os
import shutil

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


def render(path, browser_path: str) -> tuple[str, dict, list[str]]:
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
        text = page.inner_text("body")
        browser.close()
    return text, counts, errors


def test_report_loads_without_errors_and_shows_the_counts(scanned):
    browser_path = chromium()
    manifest = json.loads((scanned / "manifest.json").read_text())
    text, counts, errors = render(scanned / "report.html", browser_path)
    assert errors == []
    assert counts["total"] == str(manifest["counts"]["records"]) == "40"
    assert dict(counts["rows"]) == {d: str(n) for d, n in manifest["counts"]["decisions"].items()}
    assert dict(counts["rows"]) == {"keep": "37", "duplicate": "0", "flag": "1", "drop": "2"}
    assert counts["svgs"] == len(manifest["stages"])
    assert "trigger:zero-width" in text and "doc-5" in text
    assert "secret" not in text, "the report must not show raw text unless asked"


def test_report_with_text_shows_quarantined_text_only_when_asked(scanned):
    browser_path = chromium()
    assert main(["report", str(scanned), "--with-text"]) == 0
    text, _, errors = render(scanned / "report.html", browser_path)
    assert errors == []
    assert "secret text" in text


def test_report_html_holds_counts_and_no_text_without_a_browser(scanned):
    page = (scanned / "report.html").read_text()
    assert "data-count='40'" in page
    assert "secret" not in page
    assert "<script" not in page
    write_report(scanned, with_text=True)
    assert "secret text" in (scanned / "report.html").read_text()
