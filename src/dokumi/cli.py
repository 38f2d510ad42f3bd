"""The `dokumi` command line."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from dokumi.errors import DokumiError


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    # A terminated scan cleans up its partial output like an interrupted one.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return args.run(args)
    except DokumiError as error:
        print(f"dokumi: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if getattr(args, "resume", False):
            print("dokumi: interrupted; the work done so far is kept: run the same command again to continue",
                  file=sys.stderr)
        else:
            print("dokumi: interrupted; no output was written", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keep interpreter shutdown quiet
        return 0


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _parser() -> argparse.ArgumentParser:
    from dokumi import __version__

    parser = argparse.ArgumentParser(prog="dokumi", description="Screen LLM training data for poisoning.")
    parser.add_argument("--version", action="version", version=f"dokumi {__version__}")
    commands = parser.add_subparsers(dest="command")

    scan = commands.add_parser("scan", help="score and filter Parquet or JSONL shards")
    scan.add_argument("inputs", nargs="+", metavar="INPUT", help="files, directories or globs (quote globs)")
    scan.add_argument("--out", required=True,
                      help="output folder (clean/, duplicates/, quarantine/, scores/, manifest.json)")
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
                      help="earlier scan (manifest, folder or hashes/) whose record hashes the provenance stage checks")
    scan.add_argument("--no-text", action="store_true", default=None,
                      help="quarantine keeps ids, hashes and reasons, never text (also [privacy] no_text)")
    scan.add_argument("--sign-key", metavar="KEY", help="sign the manifest with this secret key (dokumi keygen)")
    scan.set_defaults(run=_run_scan)

    verify = commands.add_parser("verify", help="re-check data, outputs and signature against a manifest")
    verify.add_argument("manifest", metavar="MANIFEST", help="manifest.json or the scan folder holding it")
    verify.add_argument("--data", metavar="DIR", help="folder holding the input shards, if they moved")
    verify.add_argument("--key", metavar="PUB", help="trusted public key: the manifest must be signed by it")
    verify.add_argument("--proof", metavar="FILE",
                        help="check an inclusion proof (dokumi prove) against the manifest instead; needs no data")
    verify.set_defaults(run=_run_verify)

    prove = commands.add_parser("prove", help="print a proof that a record is in a scanned corpus")
    prove.add_argument("manifest", metavar="MANIFEST", help="manifest.json or the scan folder holding it")
    prove.add_argument("record_id", metavar="RECORD_ID", help="the record's id (the id column or <shard>:<row>)")
    prove.set_defaults(run=_run_prove)

    keygen = commands.add_parser("keygen", help="create a manifest-signing key pair (ML-DSA-65)")
    keygen.add_argument("--out", required=True, metavar="PREFIX", help="writes PREFIX.key (secret) and PREFIX.pub")
    keygen.add_argument("--hybrid", action="store_true", help="add an Ed25519 key: both signatures must verify")
    keygen.add_argument("--force", action="store_true", help="replace existing key files")
    keygen.set_defaults(run=_run_keygen)

    sign = commands.add_parser("sign", help="sign a manifest after the scan (writes manifest.json.sig)")
    sign.add_argument("manifest", metavar="MANIFEST", help="manifest.json or the scan folder holding it")
    sign.add_argument("--key", required=True, metavar="KEY", help="secret key file from dokumi keygen")
    sign.set_defaults(run=_run_sign)

    report = commands.add_parser("report", help="(re)write report.html for a scan folder")
    report.add_argument("out", metavar="OUT_DIR", help="a folder written by dokumi scan")
    report.add_argument("--with-text", action="store_true",
                        help="show the text of the riskiest quarantined records (off by default: privacy)")
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
        no_text=args.no_text,
        sign_key=args.sign_key,
        resume=args.resume,
    )
    print(result.summary())
    return 0


def _run_verify(args: argparse.Namespace) -> int:
    from dokumi.verify import verify

    if args.proof:
        return _check_proof(args)
    report = verify(args.manifest, data=args.data, key=args.key)
    print(report.text())
    return 0 if report.ok else 1


def _check_proof(args: argparse.Namespace) -> int:
    from dokumi.manifest import read_manifest
    from dokumi.signing import signature_path_for, verify_signature
    from dokumi.verify import check_proof, read_proof

    manifest_path = os.path.join(args.manifest, "manifest.json") if os.path.isdir(args.manifest) else args.manifest
    problems = check_proof(read_proof(args.proof), read_manifest(manifest_path))
    if signature_path_for(manifest_path).exists() or args.key:
        signature = verify_signature(manifest_path, trusted_key=args.key)
        print(f"signature: {'valid' if signature.valid else 'INVALID'}, signed by key {signature.fingerprint}")
        problems += signature.problems
    for problem in problems:
        print(f"MISMATCH {problem}")
    print("OK: the record is in the corpus of this manifest" if not problems else "FAILED")
    return 0 if not problems else 1


def _run_prove(args: argparse.Namespace) -> int:
    import json

    from dokumi.verify import prove

    print(json.dumps(prove(args.manifest, args.record_id), indent=2))
    return 0


def _run_keygen(args: argparse.Namespace) -> int:
    from dokumi.signing import read_key, write_keys

    secret, public = write_keys(args.out, hybrid=args.hybrid, overwrite=args.force)
    print(f"secret key: {secret} (keep it private)\npublic key: {public}\n"
          f"fingerprint: {read_key(public, 'public')['fingerprint']}")
    return 0


def _run_sign(args: argparse.Namespace) -> int:
    from dokumi.signing import read_key, sign_manifest

    manifest_path = os.path.join(args.manifest, "manifest.json") if os.path.isdir(args.manifest) else args.manifest
    signature = sign_manifest(manifest_path, args.key)
    print(f"signed {manifest_path} -> {signature} with key {read_key(args.key, 'secret')['fingerprint']}")
    return 0


def _run_report(args: argparse.Namespace) -> int:
    from dokumi.report import write_report

    print(write_report(args.out, with_text=args.with_text))
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
