"""`dokumi verify` and `prove` under attack: every file committed to, strict documents, safe paths, bound
proofs, loud UNSIGNED, and a one-line error (never a traceback) for anything malformed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import clean_rows, write_jsonl, write_parquet

from dokumi.cli import main
from dokumi.scan import scan
from dokumi.signing import write_keys
from dokumi.verify import check_proof, prove, verify

RECIPE = 'name = "provenance-only"\n[stages.provenance]\naction = "drop"\nthreshold = 0.5\nflag_threshold = 0.2\n'
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """A small scan (a Parquet and a JSONL shard) and a key pair, made once; tests work on copies."""
    root = tmp_path_factory.mktemp("hostile")
    write_parquet(root / "data" / "a.parquet", clean_rows(30, "a"))
    write_jsonl(root / "data" / "b.jsonl", clean_rows(20, "b"))
    (root / "recipe.toml").write_text(RECIPE)
    scan(root / "data", out=root / "out", policy=root / "recipe.toml", workers=1, progress=False)
    write_keys(root / "keys" / "k")
    write_keys(root / "keys" / "other")
    return root


@pytest.fixture
def site(original, tmp_path):
    """A fresh copy of the scan folder, its data and the keys."""
    for name in ("data", "out", "keys"):
        shutil.copytree(original / name, tmp_path / name)
    return tmp_path


def cli(capsys, *argv) -> tuple[int, str, str]:
    capsys.readouterr()  # what earlier steps printed
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_line_error(code: int, err: str) -> str:
    """The CLI failed with exactly one line on stderr and no traceback; that line."""
    assert code != 0
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def signed(site: Path) -> Path:
    assert main(["sign", str(site / "out"), "--key", str(site / "keys" / "k.key")]) == 0
    return site / "out"


def all_files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


# 1. the manifest commits to every file of the scan folder


def test_the_manifest_lists_every_file_the_scan_wrote(original):
    out = original / "out"
    manifest = json.loads((out / "manifest.json").read_text())
    listed = {e["path"] for e in manifest["outputs"] + manifest["state"] + manifest["files"]}
    assert all_files(out) - {"manifest.json"} == listed
    assert {"report.html"} <= listed and any(p.startswith("hashes/") for p in listed)


def test_the_same_scan_lists_the_same_files_with_the_same_hashes(original, tmp_path):
    """The report holds no time stamp: two scans of the same data list the same files, byte for byte."""
    scan(original / "data", out=tmp_path / "again", policy=original / "recipe.toml", workers=1, progress=False)
    first, second = (json.loads((folder / "manifest.json").read_text()) for folder in (original / "out",
                                                                                       tmp_path / "again"))
    for part in ("outputs", "state", "files", "merkle", "counts"):
        assert first[part] == second[part], part


def test_an_added_output_file_fails_a_signed_scan(site, capsys):
    out = signed(site)
    extra = out / "clean" / "00099-extra.parquet"
    shutil.copy(sorted((out / "clean").glob("*.parquet"))[0], extra)
    code, printed, _ = cli(capsys, "verify", out, "--key", site / "keys" / "k.pub")
    assert code == 1
    assert "MISMATCH unlisted-file: clean/00099-extra.parquet: in the scan folder, not listed" in printed
    assert "signature: valid" in printed  # the manifest itself is untouched: the folder is not
    assert extra.exists()  # verify never deletes


@pytest.mark.parametrize("damage", ["replaced", "removed", "hidden-extra"])
def test_a_replaced_removed_or_hidden_file_fails(site, capsys, damage):
    out = signed(site)
    if damage == "replaced":
        (out / "report.html").write_text("<html>all clean, nothing to see</html>")
        expected = "MISMATCH file-changed: report.html"
    elif damage == "removed":
        (out / "report.html").unlink()
        expected = "MISMATCH missing-file: report.html"
    else:
        (out / "hashes" / ".extra").write_text("x")
        expected = "MISMATCH unlisted-file: hashes/.extra"
    code, printed, _ = cli(capsys, "verify", out, "--key", site / "keys" / "k.pub")
    assert code == 1 and expected in printed


def test_a_symlink_in_the_scan_folder_is_not_followed(site, capsys):
    out = site / "out"
    clean = out / "clean"
    shutil.move(clean, site / "elsewhere")
    clean.symlink_to(site / "elsewhere", target_is_directory=True)  # the listed files, reached through a link
    report = verify(out)
    kinds = {(p.kind, p.path) for p in report.problems}
    assert ("unlisted-file", "clean") in kinds
    assert any(kind == "not-a-file" and path.startswith("clean/") for kind, path in kinds)
    assert report.files < len(all_files(site / "elsewhere")) + len(all_files(out))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are a POSIX feature")
def test_fifos_in_place_of_listed_files_or_the_signature_are_not_read(site, capsys):
    out = signed(site)
    sidecar = sorted((out / "hashes").glob("*.parquet"))[0]
    for path in (out / "report.html", sidecar, out / "manifest.json.sig"):
        path.unlink()
        os.mkfifo(path)  # opening one for reading would block for ever
    code, printed, err = cli(capsys, "verify", out)
    assert code == 1 and "Traceback" not in err
    assert "MISMATCH not-a-file: report.html: listed in the manifest, not a regular file; not read" in printed
    assert f"MISMATCH not-a-file: hashes/{sidecar.name}" in printed
    assert "MISMATCH signature: manifest.json.sig: signature file" in printed
    code, _, err = cli(capsys, "prove", out, "a-1")
    assert "not a regular file" in one_line_error(code, err)


def test_rewriting_the_report_keeps_the_scan_verifiable(site, capsys):
    out = signed(site)
    before = (out / "report.html").read_bytes()
    # signed: rewriting report.html in place would break the signature, so it is refused before writing
    code, _, err = cli(capsys, "report", out)
    assert "rewriting it would break the signature" in one_line_error(code, err)
    assert (out / "report.html").read_bytes() == before
    # elsewhere: the scan folder is untouched; inside it (but report.html): refused
    code, _, _ = cli(capsys, "report", out, "--to", site / "copy.html")
    assert code == 0 and (site / "copy.html").is_file()
    code, _, err = cli(capsys, "report", out, "--to", out / "scores" / "r.html")
    assert "inside the scan folder" in one_line_error(code, err)
    assert not (out / "scores" / "r.html").exists()
    # in place and re-signed: the manifest lists the new report
    code, _, _ = cli(capsys, "report", out, "--sign-key", site / "keys" / "k.key")
    assert code == 0
    assert cli(capsys, "verify", out, "--key", site / "keys" / "k.pub")[0] == 0


def test_rewriting_the_report_of_an_unsigned_scan_updates_its_manifest(site, capsys):
    out = site / "out"
    (out / "report.html").write_text("stale")
    assert verify(out).problems[0].kind == "file-changed"
    assert cli(capsys, "report", out)[0] == 0
    assert verify(out).ok


# 3. duplicate keys


def test_duplicate_keys_in_a_signed_manifest_are_refused(site, capsys):
    out = signed(site)
    text = (out / "manifest.json").read_text()
    # a reader that keeps the first "counts" sees other counts than one that keeps the last
    decoy = '"counts": {"records": 999999, "decisions": {}, "reasons": {}},\n  '
    forged = text.replace('"counts": {', decoy + '"counts": {', 1)
    assert forged != text
    (out / "manifest.json").write_text(forged)
    code, _, err = cli(capsys, "verify", out, "--key", site / "keys" / "k.pub")
    line = one_line_error(code, err)
    assert "duplicate key 'counts'" in line and "manifest.json" in line


@pytest.mark.parametrize("document", ["signature", "key", "proof"])
def test_duplicate_keys_in_signatures_keys_and_proofs_are_refused(site, capsys, document):
    out = signed(site)
    if document == "signature":
        path, argv = out / "manifest.json.sig", ["verify", out]
    elif document == "key":
        path, argv = site / "keys" / "k.pub", ["verify", out, "--key", site / "keys" / "k.pub"]
    else:
        path = site / "proof.json"
        path.write_text(json.dumps(prove(out, "a-3")))
        argv = ["verify", out, "--proof", path]
    text = path.read_text()
    path.write_text(text.replace("{", '{"schema": "decoy", ', 1))
    code, printed, err = cli(capsys, *argv)
    assert code != 0 and "Traceback" not in err
    assert "duplicate key 'schema'" in (err + printed)


# 4. paths that leave the scan folder


def rewrite(out: Path, edit) -> None:
    manifest = json.loads((out / "manifest.json").read_text())
    edit(manifest)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))


@pytest.mark.parametrize("where", ["parent", "absolute", "dotted"])
def test_output_paths_outside_the_scan_folder_are_refused_and_not_read(site, where):
    out = site / "out"
    listed = sorted((out / "clean").glob("*.parquet"))[0]
    decoy = site / "decoy.parquet"  # the same bytes outside the scan folder: reading it would "match"
    shutil.move(listed, decoy)
    relative = listed.relative_to(out).as_posix()
    path = {"parent": "../decoy.parquet", "absolute": str(decoy), "dotted": f"clean/../../{decoy.name}"}[where]
    rewrite(out, lambda m: next(e for e in m["outputs"] if e["path"] == relative).update(path=path))
    report = verify(out)
    unsafe = [p for p in report.problems if p.kind == "unsafe-path"]
    assert len(unsafe) == 1 and "not read" in unsafe[0].detail
    assert not report.ok and decoy.exists()


def test_input_paths_that_escape_their_data_folder_are_refused(site, capsys):
    out = site / "out"
    (site / "secret.parquet").write_bytes((site / "data" / "a.parquet").read_bytes())
    rewrite(out, lambda m: m["inputs"][0].update(path="/etc/hostname"))
    code, printed, _ = cli(capsys, "verify", out)
    assert code == 1 and "MISMATCH unsafe-path" in printed and "absolute path" in printed
    rewrite(out, lambda m: m["inputs"][0].update(path="../data/../secret.parquet", name="../secret.parquet"))
    report = verify(out)
    assert "unsafe-path" in [p.kind for p in report.problems]
    assert report.records == 0  # no input was read


def test_data_relocated_with_data_is_read_only_there(site):
    out = site / "out"
    shutil.move(site / "data", site / "moved")
    assert verify(out, data=site / "moved").ok
    rewrite(out, lambda m: m["inputs"][0].update(name="../escape.parquet"))
    report = verify(out, data=site / "moved")
    assert any(p.kind == "unsafe-path" for p in report.problems) and report.records == 0


# 5. inclusion proofs: every field bound


def hex_edit(value: str) -> str:
    return value[:-1] + ("0" if value[-1] != "0" else "1")


def proof_edits(proof):
    """Each field of the proof edited to another value of the same type, one at a time."""
    def walk(value, path):
        if isinstance(value, dict):
            for key, child in value.items():
                yield from walk(child, path + (key,))
        elif isinstance(value, list):
            for index, child in enumerate(value):
                yield from walk(child, path + (index,))
        else:
            yield path
    for path in walk(proof, ()):
        edited = json.loads(json.dumps(proof))
        holder = edited
        for key in path[:-1]:
            holder = holder[key]
        value = holder[path[-1]]
        if isinstance(value, int):
            holder[path[-1]] = value + 1
        elif len(value) == 64 and all(c in "0123456789abcdef" for c in value):
            holder[path[-1]] = hex_edit(value)
        else:
            holder[path[-1]] = value + "x"
        yield path, edited


def test_editing_any_field_of_a_proof_fails(original):
    out = original / "out"
    manifest = json.loads((out / "manifest.json").read_text())
    proof = prove(out, "b-13")
    assert check_proof(proof, manifest) == []
    edits = list(proof_edits(proof))
    named = {path for path, _ in edits}
    assert {("record", "row"), ("record", "shard"), ("manifest_sha256",), ("record", "leaf_index")} <= named
    for path, edited in edits:
        assert check_proof(edited, manifest), f"editing {path} went unnoticed"
    # a field added or removed is refused too
    assert check_proof({**proof, "occurrences": 1}, manifest) == [
        "not a dokumi.proof/2 proof (unknown field 'occurrences')"]
    without_row = json.loads(json.dumps(proof))
    del without_row["record"]["row"]
    assert check_proof(without_row, manifest) == ["not a dokumi.proof/2 proof (record.row is missing)"]


def test_an_edited_proof_fails_on_the_command_line(site, capsys):
    out = site / "out"
    proof = prove(out, "a-7")
    path = site / "proof.json"
    for field, value in (("row", proof["record"]["row"] + 1), ("shard", "b.jsonl")):
        edited = json.loads(json.dumps(proof))
        edited["record"][field] = value
        path.write_text(json.dumps(edited))
        code, printed, _ = cli(capsys, "verify", out, "--proof", path)
        assert code == 1 and printed.rstrip().endswith("FAILED")
    edited = {**proof, "manifest_sha256": hex_edit(proof["manifest_sha256"])}
    path.write_text(json.dumps(edited))
    code, printed, _ = cli(capsys, "verify", out, "--proof", path)
    assert code == 1 and "MISMATCH the proof's manifest_sha256 is not this manifest's" in printed


def test_a_repeated_id_is_proven_at_the_chosen_row(site, capsys):
    data = site / "data"
    write_parquet(data / "a.parquet", clean_rows(5, "a") + [{"id": "a-1", "text": "a second a-1"}])
    scan(data, out=site / "again", policy=RECIPE_PATH(site), workers=1, progress=False)
    code, printed, err = cli(capsys, "prove", site / "again", "a-1", "--shard", "a.parquet", "--row", "5")
    assert code == 0 and json.loads(printed)["record"]["row"] == 5
    assert "occurs 2 times" in err
    code, printed, err = cli(capsys, "prove", site / "again", "a-1", "--row", "9")
    assert "not in the corpus" in one_line_error(code, err)


def RECIPE_PATH(site: Path) -> Path:  # noqa: N802 - reads like the constant it stands for
    path = site / "recipe.toml"
    path.write_text(RECIPE)
    return path


# 6. unsigned is said loudly


def test_an_unsigned_manifest_is_reported_loudly_and_can_be_required(site, capsys):
    out = signed(site)
    rewrite(out, lambda m: m["counts"].update(records=1))  # an edit...
    (out / "manifest.json.sig").unlink()  # ...and the signature that would have caught it deleted
    code, printed, _ = cli(capsys, "verify", out)
    lines = printed.splitlines()
    assert code == 0  # the files do match this manifest
    assert lines[1].startswith("UNSIGNED: the manifest has no signature")
    assert lines[-1].startswith("OK (UNSIGNED)")
    code, printed, _ = cli(capsys, "verify", out, "--require-signature")
    assert code == 1 and "MISMATCH unsigned: manifest.json: no signature file, but --require-signature" in printed
    code, printed, _ = cli(capsys, "verify", out, "--key", site / "keys" / "k.pub")
    assert code == 1 and "MISMATCH unsigned" in printed


def test_a_signature_by_an_unpinned_key_is_named_and_a_pinned_key_is_enforced(site, capsys):
    out = site / "out"
    assert main(["sign", str(out), "--key", str(site / "keys" / "other.key")]) == 0
    code, printed, _ = cli(capsys, "verify", out)
    assert code == 0 and "is not pinned" in printed and "UNSIGNED" not in printed
    code, printed, _ = cli(capsys, "verify", out, "--key", site / "keys" / "k.pub")
    assert code == 1 and "not by the trusted key" in printed
    code, printed, _ = cli(capsys, "verify", out, "--require-signature")
    assert code == 0


def test_proof_checks_say_unsigned_and_honour_require_signature(site, capsys):
    out = site / "out"
    path = site / "proof.json"
    path.write_text(json.dumps(prove(out, "a-2")))
    code, printed, _ = cli(capsys, "verify", out, "--proof", path)
    assert code == 0 and "UNSIGNED" in printed and printed.rstrip().endswith("(UNSIGNED)")
    code, printed, _ = cli(capsys, "verify", out, "--proof", path, "--require-signature")
    assert code == 1 and "FAILED" in printed


# 7. malformed documents: a one-line error, never a traceback

HOSTILE = {
    "array": "[]",
    "empty": "",
    "not-utf8": b"\xff\xfe{}",
    "huge-integer": '{"schema": ' + "9" * 5000 + "}",
    "deep": "[" * 100_000 + "]" * 100_000,
    "deep-object": '{"a":' * 100_000 + "1" + "}" * 100_000,
    "nan": '{"schema": NaN}',
    "surrogate": '{"schema": "\\ud800"}',
}


def write(path: Path, content: str | bytes) -> None:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")


@pytest.mark.parametrize("content", sorted(HOSTILE))
@pytest.mark.parametrize("document", ["manifest", "proof", "signature", "public-key", "secret-key"])
def test_malformed_documents_end_in_one_line(site, capsys, document, content):
    out = site / "out"
    argv = {
        "manifest": ["verify", out],
        "proof": ["verify", out, "--proof", site / "doc.json"],
        "signature": ["verify", out],
        "public-key": ["verify", out, "--key", site / "doc.json"],
        "secret-key": ["sign", out, "--key", site / "doc.json"],
    }[document]
    target = {"manifest": out / "manifest.json", "signature": out / "manifest.json.sig"}.get(document,
                                                                                         site / "doc.json")
    write(target, HOSTILE[content])
    code, printed, err = cli(capsys, *argv)
    assert code != 0 and "Traceback" not in err + printed
    if document == "signature":  # a signature file that cannot be read is an invalid signature
        assert code == 1 and "MISMATCH signature: manifest.json.sig" in printed
    else:
        one_line_error(code, err)


WRONG_TYPES = {
    "inputs": "x",
    "outputs": [1],
    "merkle": {"root": 5},
    "files": [{"path": "report.html", "bytes": -1, "sha256": "0" * 64}],
    "counts": {"records": True, "decisions": {}, "reasons": {}},
    "columns": {"text": 7},
    "stages": [[]],
}


@pytest.mark.parametrize("field", sorted(WRONG_TYPES))
def test_manifest_fields_of_the_wrong_type_end_in_one_line(site, capsys, field):
    out = site / "out"
    rewrite(out, lambda m: m.update({field: WRONG_TYPES[field]}))
    code, _, err = cli(capsys, "verify", out)
    line = one_line_error(code, err)
    assert "malformed manifest" in line and field in line
    code, _, err = cli(capsys, "prove", out, "a-1")
    assert "malformed manifest" in one_line_error(code, err)


def test_malformed_proof_fields_and_key_material_are_mismatches_or_one_line(site, capsys):
    out = signed(site)
    proof = prove(out, "a-1")
    path = site / "proof.json"
    for bad in ({**proof, "record": []}, {**proof, "shard": {**proof["shard"], "leaves": "3"}},
                {**proof, "corpus": {**proof["corpus"], "index": 10 ** 70}}):
        path.write_text(json.dumps(bad))
        code, printed, err = cli(capsys, "verify", out, "--proof", path)
        assert code == 1 and "Traceback" not in err and "FAILED" in printed
    signature = json.loads((out / "manifest.json.sig").read_text())
    for public_key in ([], {"ml-dsa-65": 5}, {"ml-dsa-65": "not base64!"}, {"ml-dsa-65": "AAAA"}):
        (out / "manifest.json.sig").write_text(json.dumps({**signature, "public_key": public_key}))
        code, printed, err = cli(capsys, "verify", out)
        assert code == 1 and "Traceback" not in err and "MISMATCH signature" in printed
    key = json.loads((site / "keys" / "k.key").read_text())
    (site / "bad.key").write_text(json.dumps({**key, "secret": {"ml-dsa-65": "AAAA"}}))
    code, _, err = cli(capsys, "sign", out, "--key", site / "bad.key")
    assert "not a usable secret key" in one_line_error(code, err)


@pytest.mark.parametrize("field", ["manifest_sha256", "fingerprint", "algorithms"])
def test_a_signature_file_whose_claims_were_edited_fails(site, capsys, field):
    out = signed(site)
    signature = json.loads((out / "manifest.json.sig").read_text())
    signature[field] = ["ed25519", "ml-dsa-65"] if field == "algorithms" else hex_edit(signature[field])
    (out / "manifest.json.sig").write_text(json.dumps(signature))
    code, printed, _ = cli(capsys, "verify", out)
    assert code == 1 and f"its {field} is not the one of the manifest and key it holds" in printed


def test_a_hostile_manifest_fails_in_one_line_in_a_fresh_process(site):
    """The CLI as users run it: a 100,000-deep manifest gives one line and exit 2, whatever the stack."""
    out = site / "out"
    write(out / "manifest.json", HOSTILE["deep"])
    result = subprocess.run([sys.executable, "-m", "dokumi", "verify", str(out)], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(SRC)}, timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"dokumi: error: {out / 'manifest.json'}: not a valid JSON manifest (nested more than 64 levels deep)"]
