"""in-toto attestations: a DSSE envelope that other DSSE implementations verify, and that catches any edit."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import shutil

import pytest
from conftest import PLUMBING, clean_rows, write_parquet
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from securesystemslib.dsse import Envelope
from securesystemslib.exceptions import VerificationError
from securesystemslib.signer import SSlibKey

from dokumi.cli import main
from dokumi.scan import scan


def spec_pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1's pre-authentication encoding, written from the specification (not dokumi's code)."""
    kind = payload_type.encode()
    return b" ".join([b"DSSEv1", str(len(kind)).encode(), kind, str(len(payload)).encode(), payload])


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    assert main(["keygen", "--hybrid", "--out", str(root / "hybrid")]) == 0
    assert main(["keygen", "--out", str(root / "plain")]) == 0
    return root


@pytest.fixture
def attested(tmp_path, keys):
    rows = clean_rows(30)
    rows[3]["text"] += "\u200b hidden"
    write_parquet(tmp_path / "data" / "a.parquet", rows)
    scan(tmp_path / "data", out=tmp_path / "out", policy=PLUMBING, workers=1, progress=False)
    envelope = tmp_path / "scan.intoto.json"
    assert main(["attest", str(tmp_path / "out"), "--key", str(keys / "hybrid.key"), "--out", str(envelope)]) == 0
    return tmp_path / "out", envelope


def payload_of(envelope_path) -> tuple[dict, bytes, dict]:
    envelope = json.loads(envelope_path.read_text())
    payload = base64.b64decode(envelope["payload"])
    return envelope, payload, json.loads(payload)


def test_keygen_hybrid_writes_an_ed25519_pem_only_for_hybrid_keys(keys):
    assert (keys / "hybrid.ed25519.pem").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    assert not (keys / "plain.ed25519.pem").exists()
    assert main(["keygen", "--hybrid", "--out", str(keys / "hybrid")]) == 2  # no silent replacement


def test_ed25519_signature_verifies_with_other_dsse_implementations(attested, keys):
    _, envelope_path = attested
    envelope, payload, _ = payload_of(envelope_path)
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    ed25519 = [s for s in envelope["signatures"] if s["keyid"].startswith("ed25519:")]
    assert len(ed25519) == 1 and any(s["keyid"].startswith("ml-dsa-65:") for s in envelope["signatures"])
    public = load_pem_public_key((keys / "hybrid.ed25519.pem").read_bytes())
    public.verify(base64.b64decode(ed25519[0]["sig"]), spec_pae(envelope["payloadType"], payload))
    with pytest.raises(InvalidSignature):
        public.verify(base64.b64decode(ed25519[0]["sig"]), spec_pae(envelope["payloadType"], payload + b" "))
    # securesystemslib's DSSE Envelope, with the PEM key under the signature's key id
    key = SSlibKey.from_crypto(public, keyid=ed25519[0]["keyid"])
    assert ed25519[0]["keyid"] in Envelope.from_dict(copy.deepcopy(envelope)).verify([key], 1)  # it edits its input
    forged = dict(copy.deepcopy(envelope), payload=base64.b64encode(payload.replace(b'"keep":', b'"keep":1')).decode())
    with pytest.raises(VerificationError):
        Envelope.from_dict(forged).verify([key], 1)


def test_statement_lists_every_output_the_inputs_and_the_screening_result(attested):
    out, envelope_path = attested
    _, _, statement = payload_of(envelope_path)
    manifest = json.loads((out / "manifest.json").read_text())
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    files = {p.relative_to(out).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in out.rglob("*") if p.is_file()}
    assert {s["name"]: s["digest"]["sha256"] for s in statement["subject"]} == files
    assert {"manifest.json", "report.html"} <= set(files) and any(name.startswith("clean/") for name in files)
    predicate = statement["predicate"]
    assert [(m["name"], m["digest"]["sha256"]) for m in predicate["materials"]] == \
        [(i["name"], i["sha256"]) for i in manifest["inputs"]]
    assert predicate["policy"]["sha256"] == manifest["policy"]["sha256"]
    assert predicate["counts"] == manifest["counts"] and predicate["counts"]["decisions"]["drop"] == 1
    assert predicate["merkle"]["root"] == manifest["merkle"]["root"]
    assert [(s["name"], s["params"], s["version"]) for s in predicate["stages"]] == \
        [(s["name"], s["params"], manifest["tool"]["version"]) for s in manifest["stages"]]
    assert "hidden" not in envelope_path.read_text()  # hashes and counts, never text


def test_verify_accepts_the_untouched_folder(attested, keys, capsys):
    out, envelope = attested
    assert main(["verify", str(out), "--attestation", str(envelope), "--key", str(keys / "hybrid.pub")]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["verify", str(out / "manifest.json"), "--attestation", str(envelope)]) == 0  # or its manifest


def test_verify_catches_an_edited_payload(attested, capsys):
    out, envelope_path = attested
    envelope, payload, statement = payload_of(envelope_path)
    statement["predicate"]["counts"]["decisions"]["drop"] = 0
    envelope["payload"] = base64.b64encode(json.dumps(statement).encode()).decode()
    envelope_path.write_text(json.dumps(envelope))
    assert main(["verify", str(out), "--attestation", str(envelope_path)]) == 1
    report = capsys.readouterr().out
    assert "ed25519 signature does not match" in report and "ml-dsa-65 signature does not match" in report


def test_verify_catches_an_edited_added_or_missing_subject_file(attested, capsys):
    out, envelope = attested
    clean = sorted((out / "clean").iterdir())[0]
    clean.write_bytes(clean.read_bytes() + b"\0")
    (out / "quarantine" / "extra.parquet").write_bytes(b"PAR1")
    shutil.rmtree(out / "scores")
    assert main(["verify", str(out), "--attestation", str(envelope)]) == 1
    report = capsys.readouterr().out
    assert f"{clean.relative_to(out).as_posix()}: sha256" in report
    assert "quarantine/extra.parquet: in" in report and "scores/" in report and "missing" in report


def test_verify_refuses_another_signer_and_checks_plain_keys(attested, keys, tmp_path, capsys):
    out, envelope = attested
    assert main(["verify", str(out), "--attestation", str(envelope), "--key", str(keys / "plain.pub")]) == 1
    assert "not by the trusted key" in capsys.readouterr().out
    plain = tmp_path / "plain.intoto.json"
    assert main(["attest", str(out), "--key", str(keys / "plain.key"), "--out", str(plain)]) == 0
    signatures = json.loads(plain.read_text())["signatures"]
    assert [s["keyid"].split(":")[0] for s in signatures] == ["ml-dsa-65"]
    assert main(["verify", str(out), "--attestation", str(plain), "--key", str(keys / "plain.pub")]) == 0


def test_a_stripped_hybrid_signature_fails(attested, capsys):
    out, envelope_path = attested
    envelope = json.loads(envelope_path.read_text())
    envelope["signatures"] = [s for s in envelope["signatures"] if not s["keyid"].startswith("ml-dsa-65:")]
    envelope_path.write_text(json.dumps(envelope))
    assert main(["verify", str(out), "--attestation", str(envelope_path)]) == 1
    assert "no ml-dsa-65 signature" in capsys.readouterr().out


def test_malformed_attestations_are_one_line_errors(attested, keys, tmp_path, capsys):
    out, _ = attested
    bad = tmp_path / "bad.json"
    for content in ("{not json", json.dumps({"payloadType": "text/plain", "payload": "", "signatures": []})):
        bad.write_text(content)
        assert main(["verify", str(out), "--attestation", str(bad)]) == 2
        error = capsys.readouterr().err
        assert error.startswith("dokumi: error:") and "bad.json" in error and error.count("\n") == 1
    assert main(["attest", str(tmp_path / "data"), "--key", str(keys / "plain.key"), "--out", str(bad)]) == 2
    assert "no manifest.json" in capsys.readouterr().err
