"""Side inputs are checked before any data is read: an earlier scan's sidecars only as far as its manifest
and signature vouch for them (--expect, --expect-key), and protected or reference data that cannot be read
or lacks the text column end the scan in one line."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import clean_rows, write_jsonl, write_parquet

from dokumi.cli import main
from dokumi.errors import InputError
from dokumi.scan import scan
from dokumi.signing import read_key, write_keys

RECIPE = 'name = "provenance-only"\n[stages.provenance]\naction = "drop"\nthreshold = 0.5\nflag_threshold = 0.2\n'


@pytest.fixture(scope="module")
def earlier(tmp_path_factory):
    """An earlier scan signed with key k, another unrelated scan, and a key pair 'other'."""
    root = tmp_path_factory.mktemp("earlier")
    write_parquet(root / "data" / "a.parquet", clean_rows(30, "a"))
    write_parquet(root / "unrelated" / "a.parquet", [{"id": f"a-{i}", "text": f"other text {i}"} for i in range(30)])
    (root / "recipe.toml").write_text(RECIPE)
    write_keys(root / "keys" / "k")
    write_keys(root / "keys" / "other")
    for name in ("data", "unrelated"):
        scan(root / name, out=root / f"scan-{name}", policy=root / "recipe.toml", workers=1, progress=False,
             sign_key=root / "keys" / "k.key" if name == "data" else None)
    return root


@pytest.fixture
def site(earlier, tmp_path):
    for name in ("data", "unrelated", "keys", "scan-data", "scan-unrelated"):
        shutil.copytree(earlier / name, tmp_path / name)
    shutil.copy(earlier / "recipe.toml", tmp_path / "recipe.toml")
    return tmp_path


def run_scan(capsys, site: Path, *options) -> tuple[int, str]:
    """``dokumi scan data`` into ``site/out`` with ``options``: exit code and stderr."""
    capsys.readouterr()
    code = main(["scan", str(site / "data"), "--out", str(site / "out"), "--policy", str(site / "recipe.toml"),
                 "--workers", "1", "--no-progress", *map(str, options)])
    return code, capsys.readouterr().err


def refused(code: int, err: str, site: Path) -> str:
    """The scan failed with one line, no traceback, and wrote nothing."""
    assert code == 2 and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert not (site / "out").exists()
    assert not [p for p in site.iterdir() if ".dokumi-partial-" in p.name]
    return lines[0]


def sidecar(scan_folder: Path) -> Path:
    return sorted((scan_folder / "hashes").glob("*.parquet"))[0]


def summary_of(out: Path) -> dict:
    manifest = json.loads((out / "manifest.json").read_text())
    return next(s for s in manifest["stages"] if s["name"] == "provenance")["summary"]


# 2. --expect: the earlier scan's manifest and signature vouch for its sidecars


def test_a_signed_earlier_scan_with_its_pinned_key_is_used(site, capsys):
    code, err = run_scan(capsys, site, "--expect", site / "scan-data", "--expect-key", site / "keys" / "k.pub")
    assert code == 0, err
    origin = summary_of(site / "out")["expected_from"]
    assert origin["signed_by"] == read_key(site / "keys" / "k.pub", "public")["fingerprint"]
    assert origin["manifest"].endswith("manifest.json") and origin["trusted_key"].endswith("k.pub")
    assert summary_of(site / "out")["expected_records"] == 30


def test_a_swapped_sidecar_is_refused(site, capsys):
    shutil.copy(sidecar(site / "scan-unrelated"), sidecar(site / "scan-data"))
    for target in (site / "scan-data", site / "scan-data" / "manifest.json", site / "scan-data" / "hashes",
                   sidecar(site / "scan-data")):
        line = refused(*run_scan(capsys, site, "--expect", target), site)
        assert "its SHA-256 is not the one its manifest lists" in line and "refusing it" in line


def test_a_swapped_sidecar_with_a_rewritten_manifest_breaks_the_signature(site, capsys):
    earlier = site / "scan-data"
    shutil.copy(sidecar(site / "scan-unrelated"), sidecar(earlier))
    manifest = json.loads((earlier / "manifest.json").read_text())
    for entry in manifest["outputs"]:
        if entry["kind"] == "hashes":
            data = sidecar(earlier).read_bytes()
            entry.update(bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    (earlier / "manifest.json").write_text(json.dumps(manifest))
    line = refused(*run_scan(capsys, site, "--expect", earlier), site)
    assert "signature check failed" in line and "not trusted" in line
    # the forger deletes the signature too: only a pinned key catches that
    (earlier / "manifest.json.sig").unlink()
    line = refused(*run_scan(capsys, site, "--expect", earlier, "--expect-key", site / "keys" / "k.pub"), site)
    assert "not signed, but --expect-key requires a signature" in line


def test_a_scan_signed_by_another_key_is_refused_under_a_pinned_key(site, capsys):
    assert main(["sign", str(site / "scan-data"), "--key", str(site / "keys" / "other.key")]) == 0
    line = refused(*run_scan(capsys, site, "--expect", site / "scan-data", "--expect-key", site / "keys" / "k.pub"),
                   site)
    assert "not by the trusted key" in line


def test_a_sidecar_the_manifest_does_not_list_is_refused(site, capsys):
    planted = site / "scan-data" / "hashes" / "00001-planted.parquet"
    shutil.copy(sidecar(site / "scan-unrelated"), planted)
    line = refused(*run_scan(capsys, site, "--expect", site / "scan-data" / "hashes"), site)
    assert "00001-planted.parquet: not listed in the scan's manifest" in line


def test_an_unsigned_earlier_scan_is_used_and_recorded_as_unsigned(site, capsys):
    code, err = run_scan(capsys, site, "--expect", site / "scan-unrelated")
    assert code == 0, err
    assert summary_of(site / "out")["expected_from"]["signed_by"] is None


def test_expect_key_needs_an_earlier_manifest_and_expect(site, capsys):
    bare = site / "bare"
    bare.mkdir()
    shutil.copy(sidecar(site / "scan-data"), bare / "h.parquet")
    line = refused(*run_scan(capsys, site, "--expect", bare, "--expect-key", site / "keys" / "k.pub"), site)
    assert "no manifest.json vouches for these sidecars" in line
    line = refused(*run_scan(capsys, site, "--expect-key", site / "keys" / "k.pub"), site)
    assert "--expect-key (provenance.expect_key) is set, but --expect (provenance.expect) is not" in line
    line = refused(*run_scan(capsys, site, "--expect", site / "scan-data", "--expect-key", site / "nokey.pub"), site)
    assert "no such key file" in line


@pytest.mark.parametrize("damage", ["duplicate-key", "deep", "not-a-manifest"])
def test_a_malformed_earlier_manifest_is_refused_in_one_line(site, capsys, damage):
    path = site / "scan-unrelated" / "manifest.json"
    text = path.read_text()
    path.write_text({"duplicate-key": text.replace("{", '{"outputs": [],', 1), "deep": "[" * 100_000,
                     "not-a-manifest": "[]"}[damage])
    line = refused(*run_scan(capsys, site, "--expect", site / "scan-unrelated"), site)
    assert line.startswith("dokumi: error: --expect (provenance.expect): ") and "manifest.json" in line


# 15. protected and reference data, earlier indexes: unreadable or without the text column


def corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"PAR1 this is not really parquet PAR1")
    return path


@pytest.mark.parametrize("flag, policy", [("--protect", "pretraining"), ("--reference", "finetuning")])
@pytest.mark.parametrize("case", ["missing", "corrupt-parquet", "corrupt-gzip", "no-text-column", "empty-folder",
                                  "no-records"])
def test_unusable_protect_and_reference_data_fail_before_any_data_is_read(site, capsys, flag, policy, case):
    side = site / "side"
    if case == "corrupt-parquet":
        target = corrupt(side / "eval.parquet")
    elif case == "corrupt-gzip":
        side.mkdir()
        target = side / "eval.jsonl.gz"
        target.write_bytes(b"\x1f\x8b\x08\x00 truncated gzip")
    elif case == "no-text-column":
        target = write_parquet(side / "eval.parquet", [{"question": "what is this?", "answer": "a test"}])
    elif case == "empty-folder":
        side.mkdir()
        target = side
    elif case == "no-records":
        target = write_jsonl(side / "eval.jsonl", ["not json at all"])
    else:
        target = side / "missing.parquet"
    capsys.readouterr()
    code = main(["scan", str(site / "data"), "--out", str(site / "out"), "--policy", policy, "--workers", "1",
                 "--no-progress", flag, str(target)])
    line = refused(code, capsys.readouterr().err, site)
    assert line.startswith(f"dokumi: error: {flag} (")
    expected = {"missing": "does not exist", "corrupt-parquet": "corrupt or not a Parquet file",
                "corrupt-gzip": "not a readable gzip file", "no-text-column": "no column 'text'",
                "empty-folder": "holds no Parquet, JSONL or CSV files", "no-records": "no column 'text'"}[case]
    assert expected in line


def test_side_inputs_fail_before_the_corpus_is_read(site):
    read = []

    def corpus():
        read.append(1)
        yield {"id": "x", "text": "never read"}

    target = write_parquet(site / "side" / "eval.parquet", [{"question": "no text"}])
    with pytest.raises(InputError, match="no column 'text'"):
        scan(corpus(), out=site / "out", policy="pretraining", protect=target, workers=1, progress=False)
    assert not read and not (site / "out").exists()


@pytest.mark.parametrize("case", ["missing", "no-params", "duplicate-key", "not-json"])
def test_an_unusable_index_fails_in_one_line(site, capsys, case):
    index = site / "index"
    if case != "missing":
        (index / "state" / "near_duplicates").mkdir(parents=True)
    params = index / "state" / "near_duplicates" / "params.json"
    if case == "duplicate-key":
        params.write_text('{"schema": 1, "schema": 2}')
    elif case == "not-json":
        params.write_text("[" * 100_000 + "]" * 100_000)
    capsys.readouterr()
    code = main(["scan", str(site / "data"), "--out", str(site / "out"), "--policy", "pretraining", "--workers", "1",
                 "--no-progress", "--index", str(index)])
    line = refused(code, capsys.readouterr().err, site)
    assert line.startswith("dokumi: error: --index (near_duplicates.index)")
    expected = {"missing": "does not exist", "no-params": "no params.json", "duplicate-key": "duplicate key 'schema'",
                "not-json": "nested more than 64 levels deep"}[case]
    assert expected in line


def test_the_earlier_sidecar_read_is_the_one_checked(site, capsys):
    """The bytes hashed are the bytes parsed: the sidecar the scan uses is exactly the listed one."""
    code, err = run_scan(capsys, site, "--expect", sidecar(site / "scan-data"))
    assert code == 0, err
    files = summary_of(site / "out")["expected_files"]
    listed = {e["path"]: e["sha256"] for e in json.loads((site / "scan-data" / "manifest.json").read_text())["outputs"]}
    assert [f["sha256"] for f in files] == [listed[f"hashes/{sidecar(site / 'scan-data').name}"]]
    assert pq.read_table(sidecar(site / "scan-data")).num_rows == files[0]["records"]


@pytest.fixture
def indexed(site):
    """An earlier pretraining scan whose near-duplicate index a new scan can join (--index)."""
    scan(site / "data", out=site / "idx", policy="pretraining", workers=1, progress=False)
    return site / "idx"


def test_an_index_is_used_only_as_its_manifest_lists_it(site, capsys, indexed):
    state = indexed / "state" / "near_duplicates"
    args = ["scan", str(site / "unrelated"), "--out", str(site / "out"), "--policy", "pretraining", "--workers", "1",
            "--no-progress", "--index"]
    capsys.readouterr()
    assert main([*args, str(indexed)]) == 0
    shutil.rmtree(site / "out")
    signatures = state / "signatures.npy"
    original = signatures.read_bytes()
    signatures.write_bytes(original[:-8] + bytes(8))  # an index edited after the scan
    for target in (indexed, state):
        line = refused(main([*args, str(target)]), capsys.readouterr().err, site)
        assert "signatures.npy: its SHA-256 is not the one its manifest lists" in line
    signatures.write_bytes(original)
    (state / "extra.npy").write_bytes(b"planted")
    line = refused(main([*args, str(indexed)]), capsys.readouterr().err, site)
    assert "extra.npy: not listed in the scan's manifest" in line
