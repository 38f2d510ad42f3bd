"""in-toto attestations of a scan: a DSSE envelope whose payload is an in-toto Statement v1.

``attest(out_dir, key)`` describes a finished scan folder:

- ``subject``: every file in the folder, by path relative to it, with its sha256;
- ``predicate`` (type :data:`PREDICATE_TYPE`): the screening result read from
  ``manifest.json``, i.e. the policy and its hash, each stage's class, version,
  parameters and rule, decision and reason counts, the Merkle root over the
  record hashes, and ``materials``: the resolved inputs with their sha256;
- signatures over DSSE's pre-authentication encoding (PAE) of the payload, one
  per algorithm of the key: ML-DSA-65, and Ed25519 beside it for a hybrid key.
  The Ed25519 signature is a plain DSSE signature, so any DSSE implementation
  verifies it with the public key from ``dokumi keygen --hybrid``
  (``PREFIX.ed25519.pem``).

The envelope holds no raw text: paths, hashes and counts only. Keys and the
signature primitives come from :mod:`dokumi.signing` (the ``sign`` extra).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dokumi.errors import InputError
from dokumi.manifest import read_manifest
from dokumi.outputs import file_sha256
from dokumi.signing import (
    ED25519,
    ML_DSA,
    SignatureError,
    _b64,
    _ed25519,
    _ml_dsa,
    _unb64,
    _verifies,
    fingerprint,
    read_key,
)

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
# a URN: dokumi has no web address of its own; docs/attestations.md describes the predicate
PREDICATE_TYPE = "urn:dokumi:predicate:screening:v1"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what each signature covers.

    ``"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body``, lengths as ASCII decimals of byte counts.
    """
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def key_id(algorithm: str, public_key_b64: str) -> str:
    """``<algorithm>:<sha256 of the raw public key>``: names the key and the algorithm of a signature."""
    return f"{algorithm}:{hashlib.sha256(_unb64(public_key_b64, f'{algorithm} public key')).hexdigest()}"


def subjects(out_dir: Path, leave_out: tuple[Path, ...] = ()) -> list[dict[str, Any]]:
    """Every regular file under ``out_dir`` (sorted by relative path) with its sha256, except ``leave_out``."""
    skipped = {path.resolve() for path in leave_out}
    found = []
    for path in sorted(out_dir.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.resolve() not in skipped:
            found.append({"name": path.relative_to(out_dir).as_posix(), "digest": {"sha256": file_sha256(path)}})
    return found


def screening_predicate(manifest: dict[str, Any], manifest_sha256: str, signer: dict[str, Any]) -> dict[str, Any]:
    """The predicate: the screening result from the manifest (hashes and counts, never text)."""
    tool = manifest.get("tool", {})
    version = tool.get("version")
    return {
        "tool": tool,
        "manifest": {"name": "manifest.json", "schema": manifest.get("schema"), "digest": {"sha256": manifest_sha256}},
        "policy": manifest.get("policy"),
        "columns": manifest.get("columns"),
        "stages": [
            {"name": stage.get("name"), "class": stage.get("class"), "version": version,
             "params": stage.get("params"), "rule": stage.get("rule")}
            for stage in manifest.get("stages", [])
        ],
        "records": manifest.get("records"),
        "counts": manifest.get("counts"),
        "merkle": {key: manifest.get("merkle", {}).get(key) for key in ("algorithm", "record_leaf", "shard_leaf",
                                                                        "root", "shards")},
        "materials": [
            {
                "name": entry.get("name"),
                "uri": entry.get("path"),
                "digest": {"sha256": entry.get("sha256")},
                "annotations": {"bytes": entry.get("bytes"), "records": entry.get("records"),
                                "merkleRoot": entry.get("merkle_root")},
            }
            for entry in manifest.get("inputs", [])
        ],
        "signer": signer,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def statement(out_dir: str | os.PathLike, signer: dict[str, Any], leave_out: tuple[Path, ...] = ()) -> dict[str, Any]:
    """The in-toto Statement v1 for the scan folder ``out_dir``."""
    out_dir = Path(out_dir)
    manifest_path = out_dir / "manifest.json"
    if not manifest_path.is_file():
        raise InputError(f"{out_dir}: no manifest.json; attest a folder written by dokumi scan")
    manifest = read_manifest(manifest_path)
    return {
        "_type": STATEMENT_TYPE,
        "subject": subjects(out_dir, leave_out),
        "predicateType": PREDICATE_TYPE,
        "predicate": screening_predicate(manifest, file_sha256(manifest_path), signer),
    }


def sign_envelope(payload: bytes, key: dict[str, Any], key_path: str) -> dict[str, Any]:
    """A DSSE envelope for ``payload`` with one signature per algorithm of the secret ``key`` document."""
    message = pae(PAYLOAD_TYPE, payload)
    secret, public = key["secret"], key["public"]
    signatures = [{"keyid": key_id(ML_DSA, public[ML_DSA]),
                   "sig": _b64(_ml_dsa().sign(_unb64(secret[ML_DSA], key_path), message))}]
    if ED25519 in secret:
        private = _ed25519().Ed25519PrivateKey.from_private_bytes(_unb64(secret[ED25519], key_path))
        signatures.insert(0, {"keyid": key_id(ED25519, public[ED25519]), "sig": _b64(private.sign(message))})
    return {"payloadType": PAYLOAD_TYPE, "payload": _b64(payload), "signatures": signatures}


def attest(out_dir: str | os.PathLike, key: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write the signed attestation of the scan folder ``out_dir`` to ``out``; return its path.

    ``key`` is a secret key file from ``dokumi keygen`` (``--hybrid`` adds the Ed25519 signature).
    When ``out`` lies inside ``out_dir`` it is not one of its own subjects.
    """
    out_dir, out = Path(out_dir), Path(out)
    if not out_dir.is_dir():
        raise InputError(f"{out_dir} is not a folder; give the folder a dokumi scan wrote")
    document = read_key(key, "secret")
    signer = {"fingerprint": fingerprint(document["public"]), "publicKey": document["public"]}
    payload = json.dumps(statement(out_dir, signer, leave_out=(out,)), indent=None, sort_keys=True,
                         separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    envelope = sign_envelope(payload, document, str(key))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(envelope, indent=2) + "\n", encoding="utf-8")
    return out


def ed25519_public_pem(public: dict[str, str]) -> bytes:
    """The Ed25519 half of a hybrid public key as a PEM SubjectPublicKeyInfo (what DSSE tools load)."""
    if ED25519 not in public:
        raise SignatureError("the key has no Ed25519 half; create one with dokumi keygen --hybrid")
    from cryptography.hazmat.primitives import serialization

    key = _ed25519().Ed25519PublicKey.from_public_bytes(_unb64(public[ED25519], "ed25519 public key"))
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def write_ed25519_pem(prefix: str | os.PathLike, public: dict[str, str]) -> Path:
    """Write ``<prefix>.ed25519.pem`` beside the key pair; return its path."""
    path = Path(f"{prefix}.ed25519.pem")
    path.write_bytes(ed25519_public_pem(public))
    return path


@dataclass
class AttestationCheck:
    """The outcome of checking an attestation against a scan folder as it is now."""

    valid: bool
    fingerprint: str | None = None
    algorithms: list[str] = field(default_factory=list)
    subjects: int = 0
    problems: list[str] = field(default_factory=list)

    def text(self) -> str:
        """A report for people: one line per problem, then OK or FAILED."""
        lines = [f"attestation: signed by key {self.fingerprint} ({', '.join(self.algorithms) or 'no algorithm'}), "
                 f"{self.subjects} subjects"]
        lines += [f"MISMATCH {problem}" for problem in self.problems]
        lines.append("OK: the folder is what the attestation describes" if self.valid else "FAILED")
        return "\n".join(lines)


def read_envelope(path: Path) -> tuple[dict[str, Any], bytes, dict[str, Any]]:
    """The envelope, its payload bytes and the statement; :class:`InputError` naming the file when malformed."""
    try:
        envelope = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"attestation {path} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not a JSON DSSE envelope ({error})") from None
    if not isinstance(envelope, dict) or envelope.get("payloadType") != PAYLOAD_TYPE:
        raise InputError(f"{path}: not a DSSE envelope with payloadType {PAYLOAD_TYPE}")
    if not isinstance(envelope.get("payload"), str) or not isinstance(envelope.get("signatures"), list):
        raise InputError(f"{path}: a DSSE envelope needs a base64 'payload' and a 'signatures' list")
    payload = _unb64(envelope["payload"], f"{path}: payload")
    try:
        statement = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: the payload is not JSON ({error})") from None
    if not isinstance(statement, dict) or statement.get("_type") != STATEMENT_TYPE \
            or statement.get("predicateType") != PREDICATE_TYPE:
        raise InputError(f"{path}: the payload is not an in-toto {STATEMENT_TYPE} with predicate {PREDICATE_TYPE}")
    return envelope, payload, statement


def verify_attestation(
    out_dir: str | os.PathLike,
    attestation: str | os.PathLike,
    trusted_key: str | os.PathLike | None = None,
) -> AttestationCheck:
    """Check the signatures of ``attestation`` and that ``out_dir`` holds exactly its subjects, unchanged.

    Every algorithm of the signing key must have a valid signature (both halves of a hybrid key). With
    ``trusted_key`` (a .pub or .key file) the signer must be that key; without it the check proves
    the folder is unchanged since the key with the reported fingerprint signed it.
    """
    out_dir, path = Path(out_dir), Path(attestation)
    if not out_dir.is_dir():
        raise InputError(f"{out_dir} is not a folder; give the scan folder the attestation describes")
    envelope, payload, statement = read_envelope(path)
    signer = statement.get("predicate", {}).get("signer", {})
    public = signer.get("publicKey") if isinstance(signer, dict) else None
    if not isinstance(public, dict) or ML_DSA not in public or set(public) - {ML_DSA, ED25519}:
        raise InputError(f"{path}: the predicate names no {ML_DSA} (and optional {ED25519}) signer key")
    check = AttestationCheck(True, fingerprint=fingerprint(public), algorithms=sorted(public))
    message = pae(envelope["payloadType"], payload)
    by_id = {s.get("keyid"): s.get("sig") for s in envelope["signatures"] if isinstance(s, dict)}
    for algorithm in sorted(public):
        signature = by_id.get(key_id(algorithm, public[algorithm]))
        if not isinstance(signature, str):
            check.problems.append(f"no {algorithm} signature by the signer's key")
        elif not _verifies(algorithm, _unb64(public[algorithm], f"{path}: {algorithm} key"), message,
                           _unb64(signature, f"{path}: {algorithm} signature")):
            check.problems.append(f"{algorithm} signature does not match the payload (edited after signing?)")
    if trusted_key is not None:
        trusted = fingerprint(read_key(trusted_key, "public")["public"])
        if trusted != check.fingerprint:
            check.problems.append(f"signed by {check.fingerprint}, not by the trusted key {trusted}")
    listed = {}
    for subject in statement.get("subject", []):
        digest = subject.get("digest") if isinstance(subject, dict) else None
        if not isinstance(digest, dict) or not isinstance(subject.get("name"), str):
            raise InputError(f"{path}: a subject needs a 'name' and a 'digest' object, got {subject!r:.80}")
        listed[subject["name"]] = digest.get("sha256")
    check.subjects = len(listed)
    present = {entry["name"]: entry["digest"]["sha256"] for entry in subjects(out_dir, leave_out=(path,))}
    for name, digest in listed.items():
        if name not in present:
            check.problems.append(f"{name}: listed in the attestation, missing from {out_dir}")
        elif present[name] != digest:
            check.problems.append(f"{name}: sha256 {present[name][:16]}... differs from the attested "
                                  f"{str(digest)[:16]}...")
    extra = sorted(set(present) - set(listed))
    check.problems += [f"{name}: in {out_dir} but not in the attestation" for name in extra]
    check.valid = not check.problems
    return check


__all__ = ["AttestationCheck", "attest", "ed25519_public_pem", "pae", "verify_attestation", "write_ed25519_pem"]
