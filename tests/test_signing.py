"""Manifest signatures: ML-DSA-65 alone or hybrid with Ed25519; any edit of a signed manifest is caught."""

from __future__ import annotations

import base64
import copy
import json
import stat

import pytest
from conftest import clean_rows, write_parquet

from dokumi.cli import main
from dokumi.scan import scan
from dokumi.signing import (
    SignatureError,
    canonical_json,
    read_key,
    sign_manifest,
    signature_path_for,
    verify_signature,
    write_keys,
)

RECIPE = 'name = "provenance-only"\n[stages.provenance]\naction = "drop"\nthreshold = 0.5\nflag_threshold = 0.2\n'


@pytest.fixture(scope="module")
def scanned(tmp_path_factory):
    root = tmp_path_factory.mktemp("signed")
    write_parquet(root / "data" / "a.parquet", clean_rows(30))
    (root / "recipe.toml").write_text(RECIPE)
    scan(root / "data", out=root / "out", policy=root / "recipe.toml", workers=1, progress=False)
    return root / "out" / "manifest.json"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    return {"plain": write_keys(root / "plain"), "hybrid": write_keys(root / "hybrid", hybrid=True)}


def leaf_paths(value, prefix=()):
    if isinstance(value, dict):
        for key, child in value.items():
            yield from leaf_paths(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from leaf_paths(child, prefix + (index,))
    else:
        yield prefix


def edited(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, (int, float)):
        return value + 1
    if value is None:
        return "x"
    return value + "x"


@pytest.mark.parametrize("kind", ["plain", "hybrid"])
def test_signed_manifest_verifies_and_names_the_key(scanned, keys, tmp_path, kind):
    manifest = tmp_path / "manifest.json"
    manifest.write_text(scanned.read_text())
    secret, public = keys[kind]
    sign_manifest(manifest, secret)
    check = verify_signature(manifest, trusted_key=public)
    assert check.valid, check.problems
    assert check.fingerprint == read_key(public, "public")["fingerprint"]
    assert check.algorithms == (["ed25519", "ml-dsa-65"] if kind == "hybrid" else ["ml-dsa-65"])


def test_editing_any_field_of_a_signed_manifest_fails(scanned, keys, tmp_path):
    manifest_path = tmp_path / "manifest.json"
    original = json.loads(scanned.read_text())
    manifest_path.write_text(json.dumps(original))
    secret, _ = keys["hybrid"]
    sign_manifest(manifest_path, secret)
    paths = list(leaf_paths(original))
    assert len(paths) > 60  # the walk reaches inputs, outputs, Merkle roots, stage params, counts
    for path in paths:
        document = copy.deepcopy(original)
        holder = document
        for key in path[:-1]:
            holder = holder[key]
        holder[path[-1]] = edited(holder[path[-1]])
        manifest_path.write_text(json.dumps(document))
        check = verify_signature(manifest_path)
        assert not check.valid, f"editing {path} went unnoticed"
        assert {"ed25519", "ml-dsa-65"} <= {p.split()[0] for p in check.problems}


def test_reformatting_a_signed_manifest_keeps_the_signature(scanned, keys, tmp_path):
    manifest_path = tmp_path / "manifest.json"
    manifest_path.write_text(scanned.read_text())
    sign_manifest(manifest_path, keys["plain"][0])
    manifest_path.write_text(json.dumps(json.loads(scanned.read_text()), indent=7, sort_keys=True))
    assert verify_signature(manifest_path).valid


def test_a_different_trusted_key_or_a_forged_signature_fails(scanned, keys, tmp_path):
    manifest_path = tmp_path / "manifest.json"
    manifest_path.write_text(scanned.read_text())
    sign_manifest(manifest_path, keys["plain"][0])
    wrong = verify_signature(manifest_path, trusted_key=keys["hybrid"][1])
    assert not wrong.valid and "not by the trusted key" in wrong.problems[0]

    signature_path = signature_path_for(manifest_path)
    document = json.loads(signature_path.read_text())
    # a forger swaps in their own key and signs an edited manifest: the fingerprint gives it away
    sign_manifest(manifest_path, keys["hybrid"][0])
    forged = verify_signature(manifest_path, trusted_key=keys["plain"][1])
    assert not forged.valid
    document["signatures"]["ml-dsa-65"] = document["signatures"]["ml-dsa-65"][:-8] + "AAAAAAA="
    signature_path.write_text(json.dumps(document))
    assert not verify_signature(manifest_path).valid


def test_hybrid_signature_fails_when_only_the_ed25519_half_is_broken(scanned, keys, tmp_path):
    manifest_path = tmp_path / "manifest.json"
    manifest_path.write_text(scanned.read_text())
    signature_path = sign_manifest(manifest_path, keys["hybrid"][0])
    document = json.loads(signature_path.read_text())
    copy_path = tmp_path / "copy.json"
    copy_path.write_text(scanned.read_text())
    other = json.loads(sign_manifest(copy_path, keys["hybrid"][0]).read_text())  # same key, same manifest
    assert other["signatures"]["ed25519"] == document["signatures"]["ed25519"]  # Ed25519 is deterministic
    broken = bytearray(base64.b64decode(document["signatures"]["ed25519"]))
    broken[0] ^= 1
    document["signatures"]["ed25519"] = base64.b64encode(bytes(broken)).decode()
    signature_path.write_text(json.dumps(document))
    check = verify_signature(manifest_path)
    assert not check.valid and check.problems == [
        "ed25519 signature does not match the manifest (edited after signing?)"]


def test_secret_key_file_is_private_and_a_public_key_cannot_sign(keys, scanned):
    secret, public = keys["plain"]
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert "secret" not in json.loads(public.read_text())
    with pytest.raises(SignatureError, match="public key cannot sign"):
        sign_manifest(scanned, public)


def test_existing_keys_are_not_overwritten_without_force(keys):
    secret, _ = keys["plain"]
    with pytest.raises(Exception, match="exists"):
        write_keys(str(secret)[: -len(".key")])


def test_canonical_json_sorts_keys_and_drops_spaces():
    assert canonical_json({"b": 1, "a": [1, "é"]}) == '{"a":[1,"é"],"b":1}'.encode()


def test_cli_keygen_sign_and_verify(tmp_path, scanned, capsys):
    out = scanned.parent
    assert main(["keygen", "--out", str(tmp_path / "k"), "--hybrid"]) == 0
    assert main(["sign", str(out), "--key", str(tmp_path / "k.key")]) == 0
    assert main(["verify", str(out), "--key", str(tmp_path / "k.pub")]) == 0
    printed = capsys.readouterr().out
    fingerprint = read_key(tmp_path / "k.pub", "public")["fingerprint"]
    assert f"signed by key {fingerprint}" in printed and "OK" in printed
    signature_path_for(scanned).unlink()
