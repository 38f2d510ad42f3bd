"""Detached manifest signatures: ML-DSA-65 (FIPS 204), optionally hybrid with Ed25519.

The signed message is ``b"dokumi.manifest-signature/1\\x00" + canonical JSON of
the manifest`` (keys sorted, no spaces, UTF-8), so re-indenting the file does not
break a signature but changing any field does. ML-DSA-65 signs it in pure mode
with an empty context; a hybrid key also signs it with Ed25519, and both must
verify. The signature lives beside the manifest in ``manifest.json.sig``
(JSON), with the public key and its fingerprint.

Needs the ``sign`` extra (``pip install 'dokumi[sign]'``: ``pqcrypto`` and,
for hybrid keys, ``cryptography``); both are imported only when used.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dokumi.documents import read_json, read_json_document
from dokumi.errors import DokumiError, InputError

MESSAGE_PREFIX = b"dokumi.manifest-signature/1\x00"
SIGNATURE_SCHEMA = "dokumi.signature/1"
KEY_SCHEMA = "dokumi.key/1"
ML_DSA = "ml-dsa-65"
ED25519 = "ed25519"
SIGNATURE_SUFFIX = ".sig"


class SignatureError(DokumiError):
    """A key or signature that cannot be used."""


def canonical_json(document: Any) -> bytes:
    """The bytes a signature covers: sorted keys, no insignificant space, UTF-8."""
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def signed_message(manifest: dict[str, Any]) -> bytes:
    """The bytes a manifest signature covers: the domain prefix and the manifest's canonical JSON."""
    return MESSAGE_PREFIX + canonical_json(manifest)


def _ml_dsa():
    try:
        from pqcrypto.sign import ml_dsa_65
    except ImportError:
        raise SignatureError("signing needs the 'pqcrypto' package: pip install 'dokumi[sign]'") from None
    return ml_dsa_65


def _ed25519():
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise SignatureError("Ed25519 (hybrid keys) needs 'cryptography': pip install 'dokumi[sign]'") from None
    return ed25519


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, where: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (ValueError, TypeError):
        raise SignatureError(f"{where}: not valid base64") from None


def fingerprint(public_keys: dict[str, str]) -> str:
    """``SHA256:<hex>`` over the canonical JSON of the public key material (algorithm -> base64)."""
    return "SHA256:" + hashlib.sha256(canonical_json(public_keys)).hexdigest()


def generate_keys(hybrid: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """A new key pair as two JSON documents: ``(secret, public)``."""
    public_key, secret_key = _ml_dsa().keygen()
    public = {ML_DSA: _b64(public_key)}
    secret = {ML_DSA: _b64(secret_key)}
    if hybrid:
        from cryptography.hazmat.primitives import serialization

        private = _ed25519().Ed25519PrivateKey.generate()
        raw = serialization.Encoding.Raw
        secret[ED25519] = _b64(private.private_bytes(raw, serialization.PrivateFormat.Raw,
                                                     serialization.NoEncryption()))
        public[ED25519] = _b64(private.public_key().public_bytes(raw, serialization.PublicFormat.Raw))
    print_id = fingerprint(public)
    return (
        {"schema": KEY_SCHEMA, "kind": "secret", "fingerprint": print_id, "public": public, "secret": secret},
        {"schema": KEY_SCHEMA, "kind": "public", "fingerprint": print_id, "public": public},
    )


def write_keys(prefix: str | os.PathLike, hybrid: bool = False, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``<prefix>.key`` (secret, readable by the owner only) and ``<prefix>.pub``."""
    secret_path, public_path = Path(f"{prefix}.key"), Path(f"{prefix}.pub")
    for path in (secret_path, public_path):
        if path.exists() and not overwrite:
            raise InputError(f"{path} exists; pass --force to replace it")
    secret, public = generate_keys(hybrid)
    secret_path.parent.mkdir(parents=True, exist_ok=True)
    if secret_path.exists():
        secret_path.unlink()
    descriptor = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(secret, indent=2) + "\n")
    public_path.write_text(json.dumps(public, indent=2) + "\n", encoding="utf-8")
    return secret_path, public_path


def read_key(path: str | os.PathLike, kind: str) -> dict[str, Any]:
    """A key document of ``kind`` (``"secret"`` or ``"public"``); a secret key also serves as a public one."""
    path = Path(path)
    document = read_json_document(path, "key file", KEY_SCHEMA, error=SignatureError)
    if kind == "secret" and document.get("kind") != "secret":
        raise SignatureError(f"{path}: a public key cannot sign; give the .key file")
    public = document.get("public")
    if not _key_material(public):
        raise SignatureError(f"{path}: key must hold {ML_DSA!r} and optionally {ED25519!r}, each as base64 text")
    if kind == "secret" and (not _key_material(document.get("secret")) or set(document["secret"]) != set(public or {})):
        raise SignatureError(f"{path}: secret key must hold base64 text for the algorithms of its public key")
    return document


def _key_material(value: Any) -> bool:
    """A mapping ``{"ml-dsa-65": base64, ["ed25519": base64]}`` as keys and signature files hold."""
    return (isinstance(value, dict) and ML_DSA in value and not set(value) - {ML_DSA, ED25519}
            and all(isinstance(text, str) for text in value.values()))


def sign_manifest(manifest_path: str | os.PathLike, key_path: str | os.PathLike) -> Path:
    """Sign the manifest at ``manifest_path`` with the secret key file; write and return ``<manifest>.sig``."""
    from dokumi.manifest import read_manifest

    manifest_path = Path(manifest_path)
    key = read_key(key_path, "secret")
    message = signed_message(read_manifest(manifest_path))
    try:
        signatures = {ML_DSA: _b64(_ml_dsa().sign(_unb64(key["secret"][ML_DSA], str(key_path)), message))}
        if ED25519 in key["secret"]:
            secret = _unb64(key["secret"][ED25519], str(key_path))
            signatures[ED25519] = _b64(_ed25519().Ed25519PrivateKey.from_private_bytes(secret).sign(message))
    except ValueError as error:  # a secret key of the wrong length
        raise SignatureError(f"{key_path}: not a usable secret key ({error})") from None
    document = {
        "schema": SIGNATURE_SCHEMA,
        "manifest": manifest_path.name,
        "manifest_sha256": hashlib.sha256(message[len(MESSAGE_PREFIX):]).hexdigest(),
        "algorithms": sorted(signatures),
        "public_key": key["public"],
        "fingerprint": fingerprint(key["public"]),
        "signatures": signatures,
        "signed": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    signature_path = signature_path_for(manifest_path)
    signature_path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return signature_path


def signature_path_for(manifest_path: str | os.PathLike) -> Path:
    """Where the signature of ``manifest_path`` lives: ``<manifest>.sig`` beside it."""
    manifest_path = Path(manifest_path)
    return manifest_path.with_name(manifest_path.name + SIGNATURE_SUFFIX)


@dataclass
class SignatureCheck:
    """The outcome of checking a manifest's signature."""

    valid: bool
    fingerprint: str | None = None
    algorithms: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def verify_signature(
    manifest_path: str | os.PathLike,
    signature_path: str | os.PathLike | None = None,
    trusted_key: str | os.PathLike | None = None,
    manifest: dict[str, Any] | None = None,
) -> SignatureCheck:
    """Check every signature in the signature file against the manifest as it is now.

    ``manifest``: the manifest as already read (so that what is checked is what the caller
    uses); read from ``manifest_path`` when not given. With ``trusted_key`` (a .pub or .key
    file) the signing key must also be that key; without it the check proves the manifest
    is unchanged since the key with the reported fingerprint signed it. A malformed
    signature file is an invalid signature, never an exception; an unusable trusted key
    file raises :class:`SignatureError`.
    """
    manifest_path = Path(manifest_path)
    signature_path = Path(signature_path) if signature_path else signature_path_for(manifest_path)
    trusted = fingerprint(read_key(trusted_key, "public")["public"]) if trusted_key is not None else None
    if not signature_path.exists():
        return SignatureCheck(False, problems=[f"no signature file {signature_path.name}"])
    try:
        document = read_json(signature_path, "signature file", error=SignatureError)
    except SignatureError as error:
        return SignatureCheck(False, problems=[str(error)])
    shape = _signature_file_problem(document)
    if shape:
        return SignatureCheck(False, problems=[f"{signature_path.name}: not a {SIGNATURE_SCHEMA} signature file "
                                               f"({shape})"])
    public, signatures = document["public_key"], document["signatures"]
    check = SignatureCheck(True, fingerprint=fingerprint(public), algorithms=sorted(signatures))
    if set(signatures) != set(public):
        check.valid = False
        check.problems.append(f"signature must cover {ML_DSA} (and {ED25519} for a hybrid key), as the key does")
        return check
    if manifest is None:  # strictly parsed; its shape is the reader's business, its bytes are the signature's
        manifest = read_json(manifest_path, "manifest")
    message = signed_message(manifest)
    # the file's own claims must agree with what it carries: a file that says otherwise was edited
    claims = {"manifest_sha256": hashlib.sha256(message[len(MESSAGE_PREFIX):]).hexdigest(),
              "fingerprint": check.fingerprint, "algorithms": check.algorithms}
    for name, value in claims.items():
        if name in document and document[name] != value:
            check.valid = False
            check.problems.append(f"{signature_path.name}: its {name} is not the one of the manifest and key it "
                                  f"holds")
    for algorithm in sorted(signatures):
        where = f"{signature_path.name}: {algorithm}"
        try:
            verified = _verifies(algorithm, _unb64(public[algorithm], where), message,
                                 _unb64(signatures[algorithm], where))
        except SignatureError as error:
            check.valid = False
            check.problems.append(str(error))
            continue
        if not verified:
            check.valid = False
            check.problems.append(f"{algorithm} signature does not match the manifest (edited after signing?)")
    if trusted is not None and trusted != check.fingerprint:
        check.valid = False
        check.problems.append(f"signed by {check.fingerprint}, not by the trusted key {trusted}")
    return check


def _signature_file_problem(document: Any) -> str | None:
    if not isinstance(document, dict):
        return f"a JSON {type(document).__name__}, not an object"
    if document.get("schema") != SIGNATURE_SCHEMA:
        return f"its schema field is not {SIGNATURE_SCHEMA!r}"
    if not _key_material(document.get("public_key")):
        return f"public_key must map {ML_DSA} (and optionally {ED25519}) to base64 text"
    if not _key_material(document.get("signatures")):
        return f"signatures must map {ML_DSA} (and optionally {ED25519}) to base64 text"
    return None


def _verifies(algorithm: str, public_key: bytes, message: bytes, signature: bytes) -> bool:
    if algorithm == ML_DSA:
        try:
            _ml_dsa().verify(public_key, message, signature)
        except ValueError:  # pqcrypto's InvalidSignatureError is a ValueError, as are malformed keys
            return False
        return True
    from cryptography.exceptions import InvalidSignature

    try:
        _ed25519().Ed25519PublicKey.from_public_bytes(public_key).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
