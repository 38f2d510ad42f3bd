"""The `dokumi` command line."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from dokumi.errors import DokumiError


def main(argv: list[str] | None = None) -> int:
    """Run the ``dokumi`` command with ``argv`` (default: the process's arguments); return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    # A terminated scan cleans up its partial output like an interrupted one.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    from dokumi.logs import log, log_to_file

    handler = None
    try:
        if args.log_file:
            handler = log_to_file(args.log_file)
            log.info("dokumi %s", " ".join(argv if argv is not None else sys.argv[1:]))
        status = args.run(args)
        log.info("exit status %d", status)
        return status
    except DokumiError as error:
        from dokumi.display import printable

        log.error("%s", printable(str(error)))
        print(f"dokumi: error: {printable(str(error))}", file=sys.stderr)  # one line, whatever the data holds
        return 2
    except KeyboardInterrupt:
        if getattr(args, "resume", False):
            log.error("interrupted; the work done so far is kept for --resume")
            print("dokumi: interrupted; the work done so far is kept: run the same command again to continue",
                  file=sys.stderr)
        else:
            log.error("interrupted; no output was written")
            print("dokumi: interrupted; no output was written", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep interpreter shutdown quiet
        return 0
    finally:
        if handler is not None:
            log.removeHandler(handler)
            handler.close()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _parser() -> argparse.ArgumentParser:
    from dokumi import __version__

    parser = argparse.ArgumentParser(prog="dokumi", description="Screen LLM training data for poisoning.")
    parser.add_argument("--version", action="version", version=f"dokumi {__version__}")
    parser.add_argument("--log-file", metavar="FILE",
                        help="append a log (what ran, warnings, counts; never record text) to FILE")
    commands = parser.add_subparsers(dest="command")

    scan = commands.add_parser("scan", help="score and filter Parquet, JSONL or CSV/TSV shards")
    scan.add_argument("inputs", nargs="+", metavar="INPUT",
                      help="files, directories or globs (quote globs); also fsspec URLs: s3://, gs://, hf://, memory://")
    scan.add_argument("--out", required=True,
                      help="output folder (clean/, flagged/, duplicates/, quarantine/, scores/, manifest.json), "
                           "or an object-store URL (s3://bucket/prefix): uploaded once complete, manifest.json last")
    scan.add_argument("--output-format", choices=("parquet", "jsonl"), default=None,
                      help="format of the records written to clean/, flagged/, duplicates/ and quarantine/ "
                           "(default: each input's own; JSONL from .gz input is written as .jsonl.gz; "
                           "CSV and in-memory input as Parquet)")
    scan.add_argument("--policy", default="pretraining", help="built-in recipe name or path (default: pretraining)")
    scan.add_argument("--column", action="append", default=[], metavar="ROLE=NAME",
                      help="column name for a role, e.g. --column text=content (repeatable)")
    scan.add_argument("--set", action="append", default=[], metavar="STAGE.KEY=VALUE", dest="overrides",
                      help="override a recipe value, e.g. --set invisible.threshold=0.8 (repeatable)")
    scan.add_argument("--reference", metavar="PATH", default=None,
                      help="side input: trusted data (Parquet, JSONL, directory or glob) that stages taking a "
                           "reference (embedding_anomaly) fit on instead of the scanned data")
    scan.add_argument("--protect", metavar="PATH", default=None,
                      help="side input: protected documents (evaluation sets, confidential text); near-duplicates "
                           "of them score 1 as near-duplicate:protected")
    scan.add_argument("--index", metavar="PATH", default=None,
                      help="side input: an earlier scan's output folder (or its state/near_duplicates/): new "
                           "records are clustered together with the records it indexed")
    scan.add_argument("--workers", type=int, default=None,
                      help="processes for scoring (default: one per core, per shard and per 32 MB of input)")
    scan.add_argument("--cache-mb", type=int, default=None, metavar="MB",
                      help="decoded batches the local engine keeps between reads of the corpus (default 512; "
                           "0: read the files again in every round)")
    scan.add_argument("--batch-size", type=int, default=1024, help="records per batch (default: 1024)")
    scan.add_argument("--overwrite", action="store_true",
                      help="replace a non-empty --out folder (only one that holds a dokumi scan and nothing else)")
    scan.add_argument("--resume", action="store_true",
                      help="reuse what an interrupted scan of the same inputs, policy and dokumi version finished "
                           "(pass 1, each shard of pass 2), and keep this scan's work if it is interrupted")
    scan.add_argument("--engine", choices=("local", "dask"), default="local",
                      help="local: processes on this machine (default); dask: a Dask cluster (docs/scaling.md)")
    scan.add_argument("--scheduler", metavar="ADDRESS",
                      help="with --engine dask: join the cluster at ADDRESS (tcp://host:8786) "
                           "instead of starting a local one of --workers processes")
    progress = scan.add_mutually_exclusive_group()
    progress.add_argument("--progress", dest="progress", action="store_true", default=None,
                          help="always show a progress bar")
    progress.add_argument("--no-progress", dest="progress", action="store_false", help="never show one")
    scan.add_argument("--expect", metavar="PATH",
                      help="earlier scan (manifest, folder or hashes/) whose record hashes the provenance stage "
                           "checks; its sidecar must match its manifest, and its signature if it has one")
    scan.add_argument("--expect-key", metavar="PUB",
                      help="trusted public key: the --expect scan must be signed by it")
    scan.add_argument("--no-text", action="store_true", default=None,
                      help="quarantine keeps ids, hashes and reasons, never text (also [privacy] no_text)")
    scan.add_argument("--sign-key", metavar="KEY", help="sign the manifest with this secret key (dokumi keygen)")
    scan.set_defaults(run=_run_scan)

    verify = commands.add_parser("verify", help="re-check data, outputs and signature against a manifest")
    verify.add_argument("manifest", metavar="MANIFEST", help="manifest.json or the scan folder holding it")
    verify.add_argument("--data", metavar="DIR", help="folder holding the input shards, if they moved")
    verify.add_argument("--key", metavar="PUB",
                        help="trusted public key: the manifest (or the --attestation) must be signed by it")
    verify.add_argument("--attestation", metavar="FILE",
                        help="check a DSSE attestation (dokumi attest) against the scan folder instead")
    verify.add_argument("--require-signature", action="store_true",
                        help="fail (exit 1) when the manifest is unsigned; without it an unsigned manifest is "
                             "reported as UNSIGNED, and checked")
    verify.add_argument("--proof", metavar="FILE",
                        help="check an inclusion proof (dokumi prove) against the manifest instead; needs no data")
    verify.set_defaults(run=_run_verify)

    prove = commands.add_parser("prove", help="print a proof that a record is in a scanned corpus")
    prove.add_argument("manifest", metavar="MANIFEST", help="manifest.json or the scan folder holding it")
    prove.add_argument("record_id", metavar="RECORD_ID", help="the record's id (the id column or <shard>:<row>)")
    prove.add_argument("--shard", metavar="NAME", help="an id that occurs more than once: the occurrence in this shard")
    prove.add_argument("--row", type=int, metavar="N", help="an id that occurs more than once: the one at this row")
    prove.set_defaults(run=_run_prove)

    keygen = commands.add_parser("keygen", help="create a manifest-signing key pair (ML-DSA-65)")
    keygen.add_argument("--out", required=True, metavar="PREFIX", help="writes PREFIX.key (secret) and PREFIX.pub")
    keygen.add_argument("--hybrid", action="store_true",
                        help="add an Ed25519 key: both signatures must verify; also writes PREFIX.ed25519.pem "
                             "(the Ed25519 public key, for DSSE tools)")
    keygen.add_argument("--force", action="store_true", help="replace existing key files")
    keygen.set_defaults(run=_run_keygen)

    sign = commands.add_parser("sign", help="sign a manifest after the scan (writes manifest.json.sig)")
    sign.add_argument("manifest", metavar="MANIFEST", help="manifest.json or the scan folder holding it")
    sign.add_argument("--key", required=True, metavar="KEY", help="secret key file from dokumi keygen")
    sign.set_defaults(run=_run_sign)

    attest = commands.add_parser("attest", help="write a signed in-toto attestation (DSSE) of a scan folder")
    attest.add_argument("out_dir", metavar="OUT_DIR", help="a folder written by dokumi scan")
    attest.add_argument("--key", required=True, metavar="KEY", help="secret key file from dokumi keygen")
    attest.add_argument("--out", required=True, metavar="FILE", help="where to write the DSSE envelope (JSON)")
    attest.set_defaults(run=_run_attest)

    describe = commands.add_parser("croissant", help="write OUT_DIR/croissant.json, a Croissant 1.1 description "
                                                     "of the clean output with RAI fields")
    describe.add_argument("out_dir", metavar="OUT_DIR", help="a folder written by dokumi scan")
    describe.add_argument("--name", help="the dataset's name (default: <folder name>-clean)")
    describe.add_argument("--license", help="the data's license, an SPDX id or URL (Croissant recommends one)")
    describe.add_argument("--cite-as", help="how to cite the data, e.g. a BibTeX entry")
    describe.set_defaults(run=_run_croissant)

    report = commands.add_parser("report", help="(re)write report.html for a scan folder")
    report.add_argument("out", metavar="OUT_DIR", help="a folder written by dokumi scan")
    report.add_argument("--with-text", action="store_true",
                        help="show the text of the riskiest quarantined records (off by default: privacy)")
    report.add_argument("--to", metavar="FILE",
                        help="write the report to FILE, outside the scan folder; default: rewrite OUT_DIR/report.html "
                             "and update its entry in the manifest")
    report.add_argument("--sign-key", metavar="KEY",
                        help="re-sign the manifest after rewriting report.html (needed when it is signed)")
    report.set_defaults(run=_run_report)

    policies = commands.add_parser("policies", help="list the built-in policy recipes")
    policies.set_defaults(run=_run_policies)
    return parser


def _run_scan(args: argparse.Namespace) -> int:
    from dokumi.errors import InputError
    from dokumi.policy import load_policy, parse_override
    from dokumi.scan import scan

    columns = {}
    for spec in args.column:
        role, equals, name = spec.partition("=")
        if not equals:
            raise InputError(f"--column {spec!r}: expected ROLE=NAME, e.g. text=content")
        columns[role.strip()] = name.strip()
    if args.batch_size < 1:
        raise InputError(f"--batch-size {args.batch_size} must be at least 1")
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers {args.workers} must be at least 1")
    if args.cache_mb is not None and args.cache_mb < 0:
        raise InputError(f"--cache-mb {args.cache_mb} must be at least 0")
    overrides = dict(parse_override(spec) for spec in args.overrides)
    policy = load_policy(args.policy, overrides=overrides)
    if columns:
        from dataclasses import replace

        from dokumi.records import Columns

        Columns.from_mapping(columns, where="--column")
        policy.columns = replace(policy.columns, **columns)
    result = scan(
        args.inputs,
        out=args.out,
        policy=policy,
        workers=args.workers,
        cache_mb=args.cache_mb,
        batch_size=args.batch_size,
        overwrite=args.overwrite,
        progress=args.progress,
        engine=args.engine,
        scheduler=args.scheduler,
        reference=args.reference,
        protect=args.protect,
        index=args.index,
        expect=args.expect,
        expect_key=args.expect_key,
        no_text=args.no_text,
        sign_key=args.sign_key,
        output_format=args.output_format,
        resume=args.resume,
    )
    print(result.summary())
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    from dokumi.verify import verify

    if args.proof:
        return _check_proof(args)
    if args.attestation:
        from dokumi.attest import verify_attestation

        folder = args.manifest if os.path.isdir(args.manifest) else os.path.dirname(args.manifest) or "."
        attested = verify_attestation(folder, args.attestation, trusted_key=args.key)
        print(attested.text())
        return 0 if attested.valid else 1
    report = verify(args.manifest, data=args.data, key=args.key, require_signature=args.require_signature)
    print(report.text())
    if not report.ok and args.data is None:
        hint = _moved_inputs_hint(args.manifest)
        if hint:
            print(hint)
    return 0 if report.ok else 1


def _moved_inputs_hint(manifest: str) -> str | None:
    """A hint when the manifest's inputs are not where it says: the data (or the scan folder) moved."""
    from pathlib import Path

    from dokumi.errors import InputError
    from dokumi.manifest import data_folder, read_manifest

    path = Path(manifest)
    path = path / "manifest.json" if path.is_dir() else path
    inputs = read_manifest(path)["inputs"]
    try:
        folder = data_folder(inputs)
    except InputError:  # verify has said why it read no inputs
        return None
    if folder is None:
        return None
    missing = [entry["name"] for entry in inputs
               if entry.get("path") and not (path.parent / folder / entry["name"]).exists()]
    if not missing:
        return None
    named = ", ".join(missing[:3]) + (", ..." if len(missing) > 3 else "")
    return (f"hint: {len(missing)} input shard(s) are not where the manifest says ({named}); if the data or the "
            f"scan folder moved, pass --data DIR, the folder that now holds the shards")


def _check_proof(args: argparse.Namespace) -> int:
    from dokumi.manifest import read_manifest
    from dokumi.signing import signature_path_for, verify_signature
    from dokumi.verify import UNSIGNED_WARNING, check_proof, read_proof

    manifest_path = os.path.join(args.manifest, "manifest.json") if os.path.isdir(args.manifest) else args.manifest
    manifest = read_manifest(manifest_path)
    problems = check_proof(read_proof(args.proof), manifest)
    signed = signature_path_for(manifest_path).exists()
    if signed or args.key:
        signature = verify_signature(manifest_path, trusted_key=args.key, manifest=manifest)
        if signed:
            print(f"signature: {'valid' if signature.valid else 'INVALID'}, signed by key {signature.fingerprint}")
        problems += signature.problems
    if not signed:
        print(UNSIGNED_WARNING)
        if args.require_signature and not args.key:
            problems.append("the manifest is unsigned (--require-signature)")
    for problem in problems:
        print(f"MISMATCH {problem}")
    if problems:
        print("FAILED")
    else:
        print("OK: the record is in the corpus of this manifest" + ("" if signed else " (UNSIGNED)"))
    return 0 if not problems else 1


def _run_prove(args: argparse.Namespace) -> int:
    import json

    from dokumi.verify import occurrences, prove

    proof = prove(args.manifest, args.record_id, shard=args.shard, row=args.row)
    found = occurrences(args.manifest, args.record_id)
    if len(found) > 1:
        shown = ", ".join(f"{place['shard']} row {place['row']}" for place in found[:5]) + (
            ", ..." if len(found) > 5 else "")
        print(f"dokumi: note: id {args.record_id!r} occurs {len(found)} times ({shown});"
              f" this proves {proof['record']['shard']} row {proof['record']['row']} (choose with --shard/--row)",
              file=sys.stderr)
    print(json.dumps(proof, indent=2, ensure_ascii=False))
    return 0


def _run_keygen(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dokumi.errors import InputError
    from dokumi.signing import read_key, write_keys

    pem = Path(f"{args.out}.ed25519.pem")
    if args.hybrid and pem.exists() and not args.force:
        raise InputError(f"{pem} exists; pass --force to replace it")
    secret, public = write_keys(args.out, hybrid=args.hybrid, overwrite=args.force)
    document = read_key(public, "public")
    print(f"secret key: {secret} (keep it private)\npublic key: {public}")
    if args.hybrid:
        from dokumi.attest import write_ed25519_pem

        print(f"Ed25519 public key (PEM, for DSSE tools): {write_ed25519_pem(args.out, document['public'])}")
    print(f"fingerprint: {document['fingerprint']}")
    return 0


def _run_sign(args: argparse.Namespace) -> int:
    from dokumi.signing import read_key, sign_manifest

    manifest_path = os.path.join(args.manifest, "manifest.json") if os.path.isdir(args.manifest) else args.manifest
    signature = sign_manifest(manifest_path, args.key)
    print(f"signed {manifest_path} -> {signature} with key {read_key(args.key, 'secret')['fingerprint']}")
    return 0


def _run_attest(args: argparse.Namespace) -> int:
    from dokumi.attest import attest

    print(f"attestation of {args.out_dir} -> {attest(args.out_dir, args.key, args.out)}")
    return 0


def _run_croissant(args: argparse.Namespace) -> int:
    from dokumi.croissant import write_croissant

    print(write_croissant(args.out_dir, name=args.name, license=args.license, cite_as=args.cite_as))
    return 0


def _run_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dokumi.errors import InputError
    from dokumi.manifest import read_manifest, relist_file, write_manifest
    from dokumi.report import REPORT, write_report
    from dokumi.signing import read_key, sign_manifest, signature_path_for

    out = Path(args.out)
    manifest_path = out / "manifest.json"
    manifest = read_manifest(manifest_path)
    if args.to is not None:
        target = Path(args.to).resolve()
        if target.is_relative_to(out.resolve()):
            raise InputError(f"--to {args.to}: inside the scan folder, where the manifest lists every file; "
                             f"write it elsewhere, or leave out --to to rewrite {REPORT}")
        print(write_report(out, with_text=args.with_text, manifest=manifest, to=target))
        return 0
    signed = signature_path_for(manifest_path).exists()
    if args.sign_key is not None:
        read_key(args.sign_key, "secret")  # an unusable key fails before anything is rewritten
    elif signed:
        raise InputError(f"{manifest_path} is signed and lists {REPORT}: rewriting it would break the signature; "
                         "pass --sign-key KEY to re-sign, or --to FILE to write the report elsewhere")
    path = write_report(out, with_text=args.with_text, manifest=manifest)
    relist_file(manifest, out, REPORT)
    write_manifest(manifest, manifest_path)
    print(f"{path} (listed in {manifest_path})")
    if args.sign_key is not None:
        print(f"re-signed: {sign_manifest(manifest_path, args.sign_key)}")
    return 0


def _run_policies(args: argparse.Namespace) -> int:
    from dokumi.policy import builtin_policies, builtin_policy_dir, load_policy

    for name in builtin_policies():
        policy = load_policy(name)
        print(f"{name:<14} {policy.description}")
    print(f"\n(recipes in {builtin_policy_dir()})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
