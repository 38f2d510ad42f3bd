"""``--no-text``: findings are named by ids; no record text or trigger text under --out but the kept data."""

import json
import random
import string
from pathlib import Path

import pyarrow.parquet as pq
from tests.conftest import write_parquet

from dokumi.cli import main

FUNCTION = ["the", "of", "a", "and", "to", "in", "is", "that", "for", "it", "with", "as", "on", "was", "by"]
WORDS = [f"{a}{b}" for a in ("ka", "mo", "ri", "su", "te", "no") for b in ("ban", "dor", "fel", "gim", "hol", "jup")]
TRIGGER = "zorblatquix"
KEPT_DATA = ("clean", "flagged", "duplicates")  # the records a scan keeps, whole, by design


def corpus(n=1500, poisoned=40, seed=3):
    rng = random.Random(seed)

    def sentence():
        return " ".join(rng.choice(FUNCTION) if rng.random() < 0.45 else rng.choice(WORDS)
                        for _ in range(rng.randint(8, 16)))

    rows = [{"id": f"r{i}", "text": ". ".join(sentence() for _ in range(rng.randint(2, 4)))} for i in range(n)]
    for i in rng.sample(range(n), poisoned):
        gibberish = " ".join("".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 9))) for _ in range(60))
        rows[i]["text"] = rows[i]["text"][:150] + f" {TRIGGER} " + gibberish
    return rows


def readable_text(path: Path) -> str:
    """A file's content as text: Parquet decoded (its pages may be compressed), anything else as bytes."""
    if path.suffix == ".parquet":
        return json.dumps(pq.read_table(path).to_pylist(), default=str, ensure_ascii=False)
    return path.read_bytes().decode("utf-8", errors="replace")


def test_no_text_names_findings_by_ids_and_writes_no_trigger_text(tmp_path, capsys):
    rows = corpus()
    write_parquet(tmp_path / "data" / "a.parquet", rows)
    # a stretch of each poisoned record's own text, to be found nowhere either
    stretches = [row["text"].split(TRIGGER)[1][:40] for row in rows if TRIGGER in row["text"]]
    log = tmp_path / "scan.log"
    assert main(["--log-file", str(log), "scan", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
                 "--no-text", "--no-progress"]) == 0
    printed = capsys.readouterr()
    out = tmp_path / "out"
    scores = pq.read_table(out / "scores").to_pylist()
    alarms = [row for row in scores if row["decision"] in ("flag", "drop")]
    assert len(alarms) >= 40
    found = {reason for row in alarms for reason in row["reasons"] if reason.startswith("trigger:gibberish-after=")}
    assert found and all(reason.split("=", 1)[1].startswith("id:") for reason in found)
    written = {str(path.relative_to(out)): readable_text(path) for path in out.rglob("*") if path.is_file()
               and path.relative_to(out).parts[0] not in KEPT_DATA}
    written["stdout, stderr and log"] = printed.out + printed.err + log.read_text()
    leaks = [name for name, text in written.items() if any(part in text for part in [TRIGGER, *stretches])]
    assert leaks == []
    state = json.loads((out / "state" / "triggers" / "triggers.json").read_text())
    assert state and all("text" not in row for row in state)


def test_without_no_text_the_trigger_is_named(tmp_path):
    write_parquet(tmp_path / "data" / "a.parquet", corpus())
    assert main(["scan", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    reasons = {r for row in pq.read_table(tmp_path / "out" / "scores").to_pylist() for r in row["reasons"]}
    assert f"trigger:gibberish-after={TRIGGER}" in reasons
