"""The provenance manifest: what went in, what came out, under which policy. Never raw text."""

from __future__ import annotations

import json
import os
import platform
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dokumi.outputs import file_sha256

if TYPE_CHECKING:
    from dokumi.pipeline import Pipeline
    from dokumi.policy import Policy
    from dokumi.scan import ShardResult

MANIFEST_SCHEMA = "dokumi.manifest/0.1"


def reason_kind(reason: str) -> str:
    """A reason code without its record-specific values, for counting.

    ``near-duplicate:cluster=12,size=40`` -> ``near-duplicate``;
    ``trigger:zero-width,count=3`` -> ``trigger:zero-width``; ``hash-mismatch`` stays.
    """
    head, equals, _ = reason.partition("=")
    if not equals:
        return reason
    cut = max(head.rfind(":"), head.rfind(","))
    return head[:cut] if cut > 0 else head


def build_manifest(
    policy: Policy,
    pipeline: Pipeline,
    results: list[ShardResult],
    empty_inputs: list[dict[str, Any]],
    warnings: list[str],
    out: Path,
) -> dict[str, Any]:
    from dokumi import __version__

    decisions: Counter = Counter()
    reasons: Counter = Counter()
    inputs = list(empty_inputs)
    outputs = []
    for result in results:
        decisions.update(result.decisions)
        reasons.update(result.reasons)
        inputs.append(
            {
                "path": _portable(result.path) if result.path else None,
                "name": result.shard,
                "bytes": result.input_bytes,
                "sha256": result.input_sha256,
                "records": result.records + result.unreadable,
                "unreadable": result.unreadable,
            }
        )
        for output in result.outputs:
            path = Path(output["path"])
            outputs.append(
                {
                    "kind": output["kind"],
                    "path": path.relative_to(out).as_posix(),
                    "bytes": path.stat().st_size,
                    "sha256": file_sha256(path),
                    "records": output["records"],
                    "input": result.shard,
                }
            )
    state_dir = out / "state"
    state = [
        {"path": path.relative_to(out).as_posix(), "bytes": path.stat().st_size, "sha256": file_sha256(path)}
        for path in sorted(state_dir.rglob("*")) if path.is_file()
    ] if state_dir.is_dir() else []
    return {
        "schema": MANIFEST_SCHEMA,
        "tool": {"name": "dokumi", "version": __version__, "python": platform.python_version()},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "policy": {"name": policy.name, "source": _portable(policy.source), "sha256": policy.sha256},
        "columns": vars(pipeline.columns),
        "stages": [
            {
                "name": stage.name,
                "class": f"{type(stage).__module__}.{type(stage).__qualname__}",
                "params": stage.get_params(),
                "rule": vars(pipeline.rule(stage.name)),
                "summary": stage.summary(),
            }
            for stage in pipeline.stages
        ],
        "records": {"null_content": policy.records.null_content, "max_text_bytes": policy.records.max_text_bytes,
                    "oversized": policy.records.oversized},
        "inputs": inputs,
        "outputs": outputs,
        "state": state,
        "counts": {
            "records": sum(decisions.values()),
            "decisions": {d: decisions.get(d, 0) for d in ("keep", "flag", "drop")},
            "reasons": dict(sorted(reasons.items())),
        },
        "warnings": warnings,
    }


def _portable(path: str | None) -> str | None:
    """Relative to the working directory when below it, so a manifest moves with its data."""
    if path is None:
        return None
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return Path(path).as_posix()
    return Path(path if relative.startswith("..") else relative).as_posix()


def write_manifest(manifest: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
