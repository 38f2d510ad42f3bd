"""Operating a scan safely: one scan per --out, nothing deleted that dokumi did not write, crashes that
leave a state the next run repairs, scoring processes that die with the scan, a full disk."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
from conftest import PLUMBING, assert_accounted, clean_rows, write_parquet

from dokumi import Policy, Stage, StageResult, scan
from dokumi.checkpoint import CHECKPOINT_DIR
from dokumi.cli import main
from dokumi.errors import DokumiError, InputError
from dokumi.outfolder import MARKER, OutFolder
from dokumi.policy import StageRule

SRC = str(Path(__file__).resolve().parents[1] / "src")


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".dokumi-" in p.name)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# 17: one scan at a time per --out


def test_a_second_scan_into_an_out_being_written_is_refused_at_once(tmp_path, capsys):
    write_parquet(tmp_path / "a.parquet", clean_rows(5))
    out = tmp_path / "out"
    with OutFolder(out):  # another scan holds the --out
        code = main(["scan", str(tmp_path / "a.parquet"), "--out", str(out), "--policy", str(PLUMBING)])
        assert code == 2
        assert f"being written by another dokumi scan (process {os.getpid()})" in one_line_error(capsys)
        assert not out.exists()
    assert main(["scan", str(tmp_path / "a.parquet"), "--out", str(out), "--policy", str(PLUMBING)]) == 0
    assert_accounted(out, 5)
    assert hidden(tmp_path) == []  # the lock file goes with the scan that held it


def test_the_lock_is_held_by_the_process_not_the_file_a_killed_holder_left(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from dokumi.outfolder import OutFolder
        with OutFolder({str(out)!r}):
            print("locked", flush=True)
            time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": SRC})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(InputError, match=f"process {holder.pid}"), OutFolder(out):
            pass
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / ".out.dokumi-lock").exists()  # left by the killed holder, but no longer locked
    with OutFolder(out):
        pass


# 18: --overwrite and --out that may not be replaced, refused before any data is read


def test_overwrite_refuses_a_folder_that_is_not_a_dokumi_scan_and_deletes_nothing(tmp_path, capsys):
    (tmp_path / "bad.parquet").write_bytes(b"not parquet: reading it would fail differently")
    mine = tmp_path / "mine"
    (mine / "sub").mkdir(parents=True)
    (mine / "thesis.tex").write_text("years of work")
    (mine / "sub" / "data.csv").write_text("a,b\n")
    code = main(["scan", str(tmp_path / "bad.parquet"), "--out", str(mine), "--overwrite"])
    assert code == 2
    message = one_line_error(capsys)
    assert "not a dokumi scan folder (it has no manifest.json); nothing was deleted" in message
    assert (mine / "thesis.tex").read_text() == "years of work" and (mine / "sub" / "data.csv").exists()
    assert hidden(tmp_path) == []
    # a manifest that is not dokumi's does not make it one
    (mine / "manifest.json").write_text(json.dumps({"name": "my manifest"}))
    assert main(["scan", str(tmp_path / "bad.parquet"), "--out", str(mine), "--overwrite"]) == 2
    assert "its manifest.json is not a dokumi manifest" in one_line_error(capsys)
    assert sorted(p.name for p in mine.iterdir()) == ["manifest.json", "sub", "thesis.tex"]


def test_out_that_is_or_holds_the_current_directory_is_refused_before_reading(tmp_path, monkeypatch, capsys):
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    for out in (".", str(tmp_path), ".."):
        if out == "..":
            monkeypatch.chdir(tmp_path / "sub")
        before = sorted(os.listdir(tmp_path))
        assert main(["scan", str(tmp_path / "bad.parquet"), "--out", out, "--overwrite"]) == 2
        assert "is the current directory or holds it" in one_line_error(capsys)
        assert sorted(os.listdir(tmp_path)) == before


def test_out_holding_an_input_is_refused_before_reading_and_nothing_is_deleted(tmp_path, capsys):
    write_parquet(tmp_path / "a.parquet", clean_rows(4))
    out = tmp_path / "out"
    scan(tmp_path / "a.parquet", out=out, policy=PLUMBING)
    files = sorted(p.relative_to(out) for p in out.rglob("*"))
    code = main(["scan", str(out / "clean"), "--out", str(out), "--overwrite", "--policy", str(PLUMBING)])
    assert code == 2
    assert "lies inside --out" in one_line_error(capsys)
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == files
    assert hidden(tmp_path) == []


# 19: crash leftovers


def test_a_staging_folder_left_by_a_crash_is_removed_by_the_next_scan(tmp_path):
    write_parquet(tmp_path / "a.parquet", clean_rows(4))
    out = tmp_path / "out"
    with OutFolder(out) as folder:  # a scan that died after creating its staging folder
        staging, earlier = folder.staging()
        (staging / "clean").mkdir()
        (staging / "clean" / "00000-a.parquet").write_bytes(b"half written")
    assert not earlier and hidden(tmp_path) == [".out.dokumi-partial"]
    result = scan(tmp_path / "a.parquet", out=out, policy=PLUMBING)
    assert any("removed the partial output of an interrupted scan" in note for note in result.notes)
    assert "note: removed the partial output" in result.summary()
    assert_accounted(out, 4)
    assert hidden(tmp_path) == []


def test_a_folder_in_the_staging_place_that_dokumi_did_not_write_is_kept(tmp_path):
    write_parquet(tmp_path / "a.parquet", clean_rows(4))
    squatter = tmp_path / ".out.dokumi-partial"
    squatter.mkdir()
    (squatter / "keep.txt").write_text("not dokumi's")
    with pytest.raises(InputError, match="was not written by dokumi"):
        scan(tmp_path / "a.parquet", out=tmp_path / "out", policy=PLUMBING)
    assert (squatter / "keep.txt").read_text() == "not dokumi's"
    assert not (squatter / MARKER).exists()


class CrashBetweenRenames(BaseException):
    pass


def test_a_crash_between_the_two_renames_is_finished_by_the_next_run(tmp_path, monkeypatch):
    import dokumi.outfolder

    write_parquet(tmp_path / "a.parquet", clean_rows(3))
    write_parquet(tmp_path / "b.parquet", clean_rows(7))
    out = tmp_path / "out"
    scan(tmp_path / "a.parquet", out=out, policy=PLUMBING)
    real_replace = os.replace

    def crash_before_the_second_rename(source, target):
        if Path(target) == out:
            raise CrashBetweenRenames
        real_replace(source, target)

    monkeypatch.setattr(dokumi.outfolder.os, "replace", crash_before_the_second_rename)
    with pytest.raises(CrashBetweenRenames):
        scan(tmp_path / "b.parquet", out=out, policy=PLUMBING, overwrite=True)
    monkeypatch.setattr(dokumi.outfolder.os, "replace", real_replace)
    assert not out.exists()
    assert hidden(tmp_path) == [".out.dokumi-old", ".out.dokumi-partial", ".out.dokumi-swap"]
    with OutFolder(out, private=(CHECKPOINT_DIR,)) as folder:  # what the next scan into this --out does first
        assert folder.notes == [f"finished publishing {out}: the scan that wrote it stopped between renames"]
    assert_accounted(out, 7)  # the complete scan that was being published
    assert not (out / MARKER).exists() and not (out / CHECKPOINT_DIR).exists()
    assert hidden(tmp_path) == []


def test_a_crash_after_the_new_scan_is_gone_restores_the_earlier_one(tmp_path):
    write_parquet(tmp_path / "a.parquet", clean_rows(3))
    out = tmp_path / "out"
    scan(tmp_path / "a.parquet", out=out, policy=PLUMBING)
    os.replace(out, tmp_path / ".out.dokumi-old")
    (tmp_path / ".out.dokumi-swap").write_text("{}")
    with OutFolder(out) as folder:
        assert "restored the earlier scan" in folder.notes[0]
    assert_accounted(out, 3)
    assert hidden(tmp_path) == []


class KillsItsProcess(Stage):
    """Kills the process scoring it (SIGKILL): every time, or only while ``marker`` does not exist."""

    name = "kills"

    def __init__(self, marker: str = "", always: bool = False) -> None:
        self.marker = marker
        self.always = always

    def score(self, batch):
        if "KILL" in batch.texts and (self.always or not os.path.exists(self.marker)):
            Path(self.marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        return StageResult.empty(batch.num_rows)


def killing_policy(marker: Path, always: bool) -> Policy:
    return Policy(name="kills", stages=[KillsItsProcess(str(marker), always)], rules={"kills": StageRule("drop")})


def test_a_killed_scoring_process_is_retried_without_losing_or_duplicating_a_record(tmp_path):
    rows = clean_rows(60)
    rows[45]["text"] = "KILL"
    write_parquet(tmp_path / "in" / "a.parquet", rows[:30], row_group_size=10)
    write_parquet(tmp_path / "in" / "b.parquet", rows[30:], row_group_size=10)
    out = tmp_path / "out"
    scan(tmp_path / "in", out=out, policy=killing_policy(tmp_path / "killed-once", always=False), workers=2,
         batch_size=10)
    assert (tmp_path / "killed-once").exists()  # a process did die
    outputs = assert_accounted(out, 60)
    assert sorted(outputs["scores"].column("id").to_pylist()) == sorted(r["id"] for r in rows)


def test_a_scoring_process_that_dies_again_ends_the_scan_with_one_line(tmp_path):
    rows = clean_rows(20)
    rows[15]["text"] = "KILL"
    write_parquet(tmp_path / "in" / "a.parquet", rows[:10])
    write_parquet(tmp_path / "in" / "b.parquet", rows[10:])
    with pytest.raises(DokumiError) as caught:
        scan(tmp_path / "in", out=tmp_path / "out", policy=killing_policy(tmp_path / "m", always=True), workers=2)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("a scoring process died (killed, or out of memory) while scoring 1 shard(s) (b.parquet)")
    assert not (tmp_path / "out").exists() and hidden(tmp_path) == []


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   OSError("Error writing bytes to file: No space left on device")])
def test_a_full_disk_ends_the_scan_with_one_line_and_no_partial_output(tmp_path, monkeypatch, capsys, error):
    import dokumi.outputs

    def full(self, records):
        raise error

    write_parquet(tmp_path / "a.parquet", clean_rows(5))
    monkeypatch.setattr(dokumi.outputs.PartWriter, "write", full)
    code = main(["scan", str(tmp_path / "a.parquet"), "--out", str(tmp_path / "out"), "--policy", str(PLUMBING),
                 "--workers", "1"])
    assert code == 2
    message = one_line_error(capsys)
    assert message.startswith("dokumi: error: no space left on the device while writing the scan next to")
    assert message.endswith("the partial output was removed")
    assert not (tmp_path / "out").exists() and hidden(tmp_path) == []


# 16: scoring processes die with the scan


def gone(pid: int, born: float) -> bool:
    try:
        process = psutil.Process(pid)
        return process.create_time() != born or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until_gone(processes: list[tuple[int, float]], seconds: float = 30.0) -> list[int]:
    """The processes still alive after ``seconds`` (an upper bound: the poll ends as soon as all are gone)."""
    deadline = time.monotonic() + seconds
    alive = processes
    while alive and time.monotonic() < deadline:
        alive = [(pid, born) for pid, born in alive if not gone(pid, born)]
        time.sleep(0.05)
    return [pid for pid, _ in alive]


# Runs `dokumi` with its checkpoint of each finished shard patched to write the process's children to a file
# and SIGKILL the process once AFTER shards are done (or, with AFTER=fit, once pass 1's first step is done).
KILLING_CLI = textwrap.dedent("""
    import json, os, signal, sys
    import psutil
    after, children_file = sys.argv[1], sys.argv[2]

    def die():
        children = [(p.pid, p.create_time()) for p in psutil.Process().children(recursive=True)]
        with open(children_file, "w") as handle:
            json.dump(children, handle)
        os.kill(os.getpid(), signal.SIGKILL)

    if after == "fit":
        from dokumi.engines import local
        finish = local.finish_locally
        def finish_then_die(*args):
            finish(*args)
            die()
        local.finish_locally = finish_then_die
    else:
        from dokumi.checkpoint import Checkpoint
        save, saved = Checkpoint.save_shard, []
        def save_then_die(self, index, result):
            save(self, index, result)
            saved.append(index)
            if len(saved) == int(after):
                die()
        Checkpoint.save_shard = save_then_die
    from dokumi.cli import main
    sys.exit(main(sys.argv[3:]))
""")


def run_killed(after: str, children_file: Path, arguments: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", KILLING_CLI, after, str(children_file), "scan", *arguments,
                           "--no-progress"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": SRC})


def test_scoring_processes_die_with_a_scan_killed_in_pass_2(tmp_path):
    for name in "abc":
        write_parquet(tmp_path / "in" / f"{name}.parquet", clean_rows(200, prefix=name), row_group_size=20)
    children = tmp_path / "children.json"
    killed = run_killed("1", children, [str(tmp_path / "in"), "--out", str(tmp_path / "out"), "--workers", "2",
                                        "--policy", str(PLUMBING), "--batch-size", "20"])
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    processes = [tuple(p) for p in json.loads(children.read_text())]
    assert len(processes) >= 2  # the scoring processes (and multiprocessing's helper) were running
    assert wait_until_gone(processes) == []


def test_without_the_kernel_s_help_a_scoring_process_notices_its_parent_died(tmp_path):
    """The portable fallback of die_with_parent (no PR_SET_PDEATHSIG): a thread watching the parent."""
    grandchild = textwrap.dedent("""
        import os, sys, time
        from dokumi.engines.local import die_with_parent
        sys.platform = "portable"  # as where the kernel cannot be asked
        die_with_parent(os.getppid())
        print(os.getpid(), flush=True)
        time.sleep(600)
    """)
    parent = textwrap.dedent(f"""
        import subprocess, sys
        child = subprocess.Popen([sys.executable, "-c", {grandchild!r}], stdout=sys.stdout)
        child.wait()  # killed before: were the child to die early, the test would not wait for nothing
    """)
    middle = subprocess.Popen([sys.executable, "-c", parent], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": SRC})
    pid = int(middle.stdout.readline())
    born = psutil.Process(pid).create_time()
    assert not gone(pid, born)
    middle.kill()
    middle.wait()
    assert wait_until_gone([(pid, born)]) == []


def test_a_process_whose_parent_is_already_gone_exits_at_once():
    code = subprocess.run([sys.executable, "-c", "from dokumi.engines.local import die_with_parent\n"
                           "die_with_parent(-1)\nprint('still alive')"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": SRC}, timeout=60)
    assert code.returncode == 1 and "still alive" not in code.stdout


def test_a_full_disk_when_sealing_the_finished_scan_keeps_the_earlier_one(tmp_path, monkeypatch, capsys):
    import dokumi.outfolder

    write_parquet(tmp_path / "a.parquet", clean_rows(3))
    out = tmp_path / "out"
    scan(tmp_path / "a.parquet", out=out, policy=PLUMBING)
    before = (out / "manifest.json").read_text()

    def full(path, text):
        Path(path).write_text(text[:1])
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(dokumi.outfolder, "_write_synced", full)
    code = main(["scan", str(tmp_path / "a.parquet"), "--out", str(out), "--policy", str(PLUMBING), "--overwrite"])
    assert code == 2
    assert "no space left on the device" in one_line_error(capsys)
    assert (out / "manifest.json").read_text() == before
    assert hidden(tmp_path) == []
