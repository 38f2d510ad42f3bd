"""What a scan returns, and the text the CLI prints about it."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dokumi.decisions import DECISIONS
from dokumi.display import printable
from dokumi.routing import RECORD_FOLDERS, routes
from dokumi.scoring import EXAMPLES_PER_SCAN, ShardResult

# the folders a scan may write, in the order the summary names them
OUTPUT_FOLDERS = (*RECORD_FOLDERS, "scores", "hashes", "state")


@dataclass
class ScanResult:
    """The outcome of a scan; ``summary()`` is what the CLI prints."""

    out: Path | str  # a str for an object-store URL
    policy: str
    shards: list[ShardResult]
    warnings: list[str]
    seconds: float
    manifest: dict[str, Any]
    # what the scan did about an earlier one's leftovers (resumed, restored, removed); not in the manifest
    notes: list[str] = field(default_factory=list)

    @property
    def records(self) -> int:
        """Records read, unreadable ones included."""
        return sum(s.records + s.unreadable for s in self.shards)

    @property
    def decisions(self) -> Counter:
        """Records per decision."""
        return sum((s.decisions for s in self.shards), Counter())

    @property
    def reasons(self) -> Counter:
        """Records per reason kind."""
        return sum((s.reasons for s in self.shards), Counter())

    def summary(self) -> str:
        """The table `dokumi scan` prints: decisions, reasons, findings, example records, warnings, outputs."""
        total = self.records
        rate = total / self.seconds if self.seconds > 0 else float("nan")
        lines = [
            f"dokumi scan: {total:,} records in {len(self.shards)} shard(s), policy '{self.policy}', "
            f"{self.seconds:.1f} s ({rate:,.0f} records/s)",
            "",
            f"  {'decision':<10}{'records':>10}{'share':>9}  written to",
        ]
        folders = self.manifest.get("routing") or routes()
        for decision in DECISIONS:
            count = self.decisions.get(decision, 0)
            share = 100 * count / total if total else 0.0
            lines.append(f"  {decision:<10}{count:>10,}{share:>8.2f}%  {folders[decision]}/")
        if self.reasons:
            lines += ["", f"  {'reason':<40}{'records':>10}"]
            lines += [f"  {reason:<40}{count:>10,}" for reason, count in self.reasons.most_common(12)]
        for stage in self.manifest.get("stages", []):
            findings = stage.get("summary", {}).get("findings", [])
            if findings:
                lines += ["", f"  {stage['name']} found ({len(findings)}):"]
                lines += [f"    {f['finding']:<46}{f['records']:>8,}" for f in findings[:10]]
        examples = [e for s in self.shards for e in s.examples][:EXAMPLES_PER_SCAN]
        if examples:
            lines += ["", f"  flagged and dropped records (first {len(examples)}):"]
            lines += [f"  {e['decision']:<5} {e['id']:<32} {', '.join(e['reasons'])}" for e in examples]
        for warning in self.warnings:
            lines.append(f"warning: {warning}")
        lines += [f"note: {note}" for note in self.notes]
        written = {entry["path"].split("/", 1)[0] for key in ("outputs", "state") for entry in self.manifest[key]}
        folders = " ".join(f"{name}/" for name in OUTPUT_FOLDERS
                           if ((self.out / name).is_dir() if isinstance(self.out, Path) else name in written))
        lines += ["", f"outputs in {self.out}/: {folders} manifest.json report.html"]
        # ids, reasons, findings and file names come from the data: none may break a line or drive the terminal
        return "\n".join(printable(line) for line in lines)


__all__ = ["ScanResult"]
