"""`dokumi scan --resume`: an interrupted scan goes on where it stopped, with the same outputs."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import PLUMBING, assert_accounted, clean_rows, write_jsonl, write_parquet
from test_operations import run_killed, wait_until_gone

from dokumi import scan
from dokumi.checkpoint import CHECKPOINT_DIR, Checkpoint
from dokumi.cli import main
from dokumi.errors import InputError

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "corpus"


def five_shards(folder: Path) -> Path:
    """The example corpus (planted poison, copies, triggers) cut into five shards, one of them JSONL."""
    rows = [row for part in sorted(EXAMPLE.glob("*.parquet")) for row in pq.read_table(part).to_pylist()]
    step = -(-len(rows) // 5)
    for index in range(5):
        part = rows[index * step:(index + 1) * step]
        if index == 4:
            write_jsonl(folder / f"part-{index}.jsonl", part)
        else:
            write_parquet(folder / f"part-{index}.parquet", part, row_group_size=25)
    return folder


def files_of(out: Path) -> dict[str, bytes]:
    """Every file of a scan folder, the manifest's and report's creation time taken out."""
    files = {}
    for path in sorted(out.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            if path.name == "manifest.json":
                manifest = json.loads(data)
                assert manifest.pop("created")
                data = json.dumps(manifest, indent=2).encode()
            elif path.name == "report.html":
                data = re.sub(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+\-]\d\d:\d\d", b"<created>", data)
            files[path.relative_to(out).as_posix()] = data
    return files


def test_a_scan_killed_in_pass_1_and_again_in_pass_2_resumes_to_the_same_bytes(tmp_path, capsys):
    data = five_shards(tmp_path / "data")
    arguments = [str(data), "--workers", "2", "--batch-size", "50"]
    assert main(["scan", *arguments, "--out", str(tmp_path / "a" / "scan"), "--no-progress"]) == 0
    capsys.readouterr()
    out = tmp_path / "b" / "scan"
    staging = tmp_path / "b" / ".scan.dokumi-partial"
    checkpoints = staging / CHECKPOINT_DIR

    # killed (SIGKILL) in pass 1, after its first step: nothing fitted is kept
    killed = run_killed("fit", tmp_path / "children-1.json", [*arguments, "--out", str(out)])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (checkpoints / "key.json").is_file() and not (checkpoints / "fitted.json").exists()
    assert not out.exists()

    # resumed, and killed in pass 2 once two of the five shards are scored
    killed = run_killed("2", tmp_path / "children-2.json", [*arguments, "--out", str(out), "--resume"])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert (checkpoints / "fitted.json").is_file()
    assert len(list((checkpoints / "shards").glob("*.json"))) == 2
    children = [tuple(p) for p in json.loads((tmp_path / "children-2.json").read_text())]
    assert wait_until_gone(children) == []  # its scoring processes died with it
    assert not out.exists()

    # resumed to the end: the fitted state and the two shards are reused
    assert main(["scan", *arguments, "--out", str(out), "--resume", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "note: --resume: reused the fitted state of pass 1" in printed
    assert "note: --resume: reused the scores of 2 of 5 shard(s)" in printed
    expected = files_of(tmp_path / "a" / "scan")
    resumed = files_of(out)
    assert sorted(resumed) == sorted(expected)
    assert [name for name in expected if resumed[name] != expected[name]] == []
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["scan"]  # no partial folder, no lock left


def interrupted(tmp_path: Path, after: str = "1") -> tuple[Path, Path, Path]:
    """A plumbing scan of three shards killed after ``after`` shards: (inputs, out, staging)."""
    for name in "abc":
        write_parquet(tmp_path / "in" / f"{name}.parquet", clean_rows(30, prefix=name))
    out = tmp_path / "out"
    killed = run_killed(after, tmp_path / "children.json",
                        [str(tmp_path / "in"), "--out", str(out), "--policy", str(PLUMBING), "--workers", "1"])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    return tmp_path / "in", out, tmp_path / ".out.dokumi-partial"


def test_resume_refuses_other_inputs_and_a_fresh_run_discards_the_partial_work(tmp_path, capsys):
    inputs, out, staging = interrupted(tmp_path)
    write_parquet(inputs / "b.parquet", clean_rows(31, prefix="b"))  # changed since
    code = main(["scan", str(inputs), "--out", str(out), "--policy", str(PLUMBING), "--resume"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.endswith("used other input files; run without --resume to start again")
    assert (staging / CHECKPOINT_DIR / "shards" / "00000.json").is_file()  # kept for the user to decide
    assert main(["scan", str(inputs), "--out", str(out), "--policy", str(PLUMBING)]) == 0
    assert "note: removed the partial output of an interrupted scan" in capsys.readouterr().out
    assert_accounted(out, 91)
    assert not staging.exists()


def test_resume_refuses_another_recipe(tmp_path):
    inputs, out, _ = interrupted(tmp_path)
    with pytest.raises(InputError, match="used other policy, its parameters or side inputs"):
        scan(inputs, out=out, policy=PLUMBING, resume=True, batch_size=7)


def test_a_finished_shard_whose_outputs_changed_is_scored_again(tmp_path):
    inputs, out, staging = interrupted(tmp_path, after="2")
    reference = scan(inputs, out=tmp_path / "reference", policy=PLUMBING)
    [clean] = (staging / "clean").glob("00001-*.parquet")
    clean.write_bytes(clean.read_bytes()[:-10])  # truncated since
    result = scan(inputs, out=out, policy=PLUMBING, resume=True)
    assert "--resume: reused the scores of 1 of 3 shard(s)" in result.notes
    assert_accounted(out, 90)
    assert [o["sha256"] for o in result.manifest["outputs"]] == [o["sha256"] for o in reference.manifest["outputs"]]


def test_resume_without_an_interrupted_scan_runs_from_the_beginning(tmp_path):
    write_parquet(tmp_path / "a.parquet", clean_rows(5))
    result = scan(tmp_path / "a.parquet", out=tmp_path / "out", policy=PLUMBING, resume=True)
    assert_accounted(tmp_path / "out", 5)
    assert not [note for note in result.notes if "reused" in note]


def test_resume_needs_inputs_read_from_files(tmp_path):
    with pytest.raises(InputError, match="--resume needs every input read from local files"):
        scan(clean_rows(5), out=tmp_path / "out", policy=PLUMBING, resume=True)
    assert not (tmp_path / "out").exists()


def test_an_interrupted_resumable_scan_keeps_its_work(tmp_path):
    from test_scan import Interrupting

    from dokumi import Policy

    write_parquet(tmp_path / "a.parquet", clean_rows(30))
    policy = Policy(name="test", stages=[Interrupting()])
    with pytest.raises(KeyboardInterrupt):
        scan(tmp_path / "a.parquet", out=tmp_path / "out", policy=policy, batch_size=10, workers=1, resume=True)
    assert (tmp_path / ".out.dokumi-partial" / CHECKPOINT_DIR / "key.json").is_file()


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="file owners are checked where the system has them")
def test_fitted_state_that_others_could_have_written_is_not_loaded(tmp_path):
    from dokumi.stages import InvisibleCharacters

    staging = tmp_path / "staging"
    staging.mkdir()
    key = {"version": "1", "recipe": "r", "inputs": "i"}
    Checkpoint.open(staging, key, resume=False).save_fitted([InvisibleCharacters()], ["a warning"])
    stages, warnings = Checkpoint.open(staging, key, resume=True).load_fitted()
    assert isinstance(stages[0], InvisibleCharacters) and warnings == ["a warning"]
    for path, mode in ((staging / CHECKPOINT_DIR / "fitted.pkl", 0o620), (staging / CHECKPOINT_DIR, 0o770)):
        original = path.stat().st_mode
        path.chmod(mode)  # group-writable: someone else may have put it there
        checkpoint = Checkpoint.open(staging, key, resume=True) if path.is_file() else Checkpoint(staging, key)
        assert checkpoint.load_fitted() is None
        path.chmod(original)
    pickle_file = staging / CHECKPOINT_DIR / "fitted.pkl"
    pickle_file.write_bytes(pickle_file.read_bytes() + b"x")  # not what the record vouches for
    checkpoint = Checkpoint.open(staging, key, resume=True)
    assert checkpoint.load_fitted() is None
    assert checkpoint.notes == ["--resume: the fitted state kept did not match its record; fitted again"]
