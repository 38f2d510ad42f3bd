"""Policy recipes: which stages run, their parameters, and when a score becomes a decision.

A recipe is a TOML file in ``filters/`` (see ``docs/policies.md``)::

    name = "pretraining"

    [records]
    null_content = "flag"        # keep | flag | drop a record with no text

    [stages.invisible]
    action = "drop"              # drop | flag | off (the score decides nothing)
    threshold = 0.5              # score at or above which the action applies
    flag_threshold = 0.2         # optional: scores from here up to threshold are flagged
    duplicates = "duplicate"     # optional: records the stage marks as redundant copies (near_duplicates)
    support = 0.25               # optional: a weak signal; it flags or drops only where another stage's
                                 # risk reaches this

Every other key of a stage table is a parameter of that stage's constructor.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from dokumi.decisions import SEVERITY
from dokumi.errors import PolicyError
from dokumi.records import Columns
from dokumi.stage import Stage
from dokumi.stages import REGISTRY, known_stages, plugin_stages, stage_class

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

ACTIONS = ("drop", "flag", "off")
RECORD_ACTIONS = ("keep", "flag", "drop")
DUPLICATE_ACTIONS = ("keep", "duplicate")
STAGE_RULE_KEYS = ("action", "threshold", "flag_threshold", "duplicates", "support")
TOP_LEVEL_KEYS = ("name", "description", "records", "columns", "privacy", "routing", "stages")
RECORD_KEYS = ("null_content", "max_text_bytes", "oversized")
PRIVACY_KEYS = ("no_text",)
ROUTING_KEYS = ("flag",)
# where records decided ``flag`` go: their own folder for a person to look at, or with the kept ones
FLAG_FOLDERS = ("flagged", "clean")


@dataclass(frozen=True)
class StageRule:
    """How one stage's score becomes a decision."""

    action: str = "flag"
    threshold: float = 0.5
    flag_threshold: float | None = None
    # what becomes of the records the stage marks as redundant copies (StageResult.duplicate)
    duplicates: str = "keep"
    # a weak signal (an outlier percentile): its flag or drop applies only where another stage's risk is at
    # least this; alone it decides nothing and its risk stays below the flag point (x 0.45). None: evidence.
    support: float | None = None

    def risk(self, scores: np.ndarray) -> np.ndarray:
        """Scores on the policy's scale, so that risk ranks records alike whichever stage found them.

        Stages calibrate differently (a percentile, a cluster size, a hash distance); the rule
        says what each score means: the flag point maps to 0.5, the drop point to 0.9, and the
        rest is linear in between (an "off" stage contributes nothing).
        """
        if self.action == "off":
            return np.zeros(len(scores))
        points = [(0.0, 0.0)]
        if self.flag_threshold is not None and self.flag_threshold < self.threshold:
            points.append((self.flag_threshold, 0.5))
        points.append((self.threshold, 0.9 if self.action == "drop" else 0.5))
        points.append((1.0, 1.0))
        merged: list[tuple[float, float]] = []
        for x, y in points:  # a threshold at 0 or 1 meets an end point: the higher risk wins
            if merged and x <= merged[-1][0]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], y))
            else:
                merged.append((x, y))
        xs, ys = zip(*merged)
        return np.interp(scores, xs, ys)

    def decide(self, scores: np.ndarray, duplicate: np.ndarray | None = None) -> np.ndarray:
        """Per-record severity (an index of :data:`DECISIONS`): keep, duplicate, flag or drop."""
        severity = np.zeros(len(scores), dtype=np.int8)
        if duplicate is not None and self.duplicates == "duplicate":
            severity[duplicate] = SEVERITY["duplicate"]
        if self.action == "off":
            return severity
        if self.flag_threshold is not None:
            severity[scores >= self.flag_threshold] = SEVERITY["flag"]
        severity[scores >= self.threshold] = SEVERITY["drop" if self.action == "drop" else "flag"]
        return severity


@dataclass(frozen=True)
class RecordRules:
    """Decisions about records as data, before any stage looks at them."""

    null_content: str = "flag"
    max_text_bytes: int = 10_000_000
    oversized: str = "flag"


@dataclass
class Policy:
    """A parsed recipe: stage instances, their rules, record rules and column names."""

    name: str
    stages: list[Stage] = field(default_factory=list)
    rules: dict[str, StageRule] = field(default_factory=dict)
    records: RecordRules = field(default_factory=RecordRules)
    columns: Columns = field(default_factory=Columns)
    description: str = ""
    source: str | None = None
    sha256: str | None = None
    # [privacy] no_text: quarantine keeps ids, hashes and reasons, never the records' text
    no_text: bool = False
    # [routing] flag: the folder records decided "flag" go to (dokumi.routing)
    flag_folder: str = "flagged"

    def rule(self, stage_name: str) -> StageRule:
        """The decision rule of stage ``stage_name`` (the default rule when the recipe sets none)."""
        return self.rules.get(stage_name, StageRule())

    def never_drops(self) -> bool:
        """Whether no stage and no record rule of this recipe can decide ``drop``."""
        return all(rule.action != "drop" for rule in self.rules.values()) and "drop" not in (
            self.records.null_content,
            self.records.oversized,
        )


SIDE_INPUT_FLAGS = ("reference", "protect", "index", "expect")


def with_side_inputs(policy: Policy, values: dict[str, Any]) -> Policy:
    """``policy`` with each given side input (``{"protect": path, ...}``; None: not given) set on the
    stages that declare it (``Stage.side_inputs``), as ``dokumi scan --protect`` and the like do.

    ``expect`` adds a provenance stage when the recipe has none (drop from 0.5, flag drift from 0.2);
    any other side input that no stage of the recipe takes is an error.
    """
    given = {name: str(value) for name, value in values.items() if value is not None}
    if not given:
        return policy
    if "expect" in given and not any("expect" in stage.side_inputs for stage in policy.stages):
        from dokumi.stages.provenance import with_expectation

        policy = with_expectation(policy, given["expect"])
    for name, value in given.items():
        takers = [stage for stage in policy.stages if name in stage.side_inputs]
        if not takers:
            raise PolicyError(f"--{name}: policy {policy.name!r} runs no stage that takes it "
                              f"(stages: {', '.join(stage.name for stage in policy.stages) or 'none'})")
        for stage in takers:
            stage.set_params(**{name: value})
    return policy


def builtin_policy_dir() -> Path:
    """Where the recipes shipped with dokumi live (inside the wheel, or the source checkout)."""
    packaged = resources.files("dokumi") / "filters"
    if packaged.is_dir():
        return Path(str(packaged))
    return Path(__file__).resolve().parents[2] / "filters"


def builtin_policies() -> list[str]:
    """Names of the built-in recipes, sorted."""
    return sorted(p.stem for p in builtin_policy_dir().glob("*.toml"))


def load_policy(
    policy: str | os.PathLike | Policy | None = "pretraining", overrides: dict[str, Any] | None = None
) -> Policy:
    """Load a recipe by built-in name (``"pretraining"``) or by path; a Policy passes through.

    ``overrides`` maps ``"<stage>.<key>"`` (or ``"records.<key>"``) to a value that
    replaces the recipe's, as ``dokumi scan --set`` does.
    """
    if isinstance(policy, Policy):
        if overrides:
            raise PolicyError("overrides apply to a recipe file or name, not to a parsed Policy")
        return policy
    if policy is None:
        policy = "pretraining"
    path = Path(policy)
    if not path.suffix and not path.exists():
        path = builtin_policy_dir() / f"{policy}.toml"
        if not path.exists():
            raise PolicyError(
                f"no policy named {str(policy)!r}; built-in policies: {', '.join(builtin_policies())} "
                "(or give a path to a .toml recipe)"
            )
    if not path.is_file():
        raise PolicyError(f"policy file {str(path)!r} does not exist")
    raw = path.read_bytes()
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise PolicyError(f"{path}: not valid TOML: {error}") from None
    for key, value in (overrides or {}).items():
        _apply_override(data, key, value)
    parsed = parse_policy(data, where=str(path), default_name=path.stem)
    parsed.source = str(path)
    parsed.sha256 = hashlib.sha256(raw).hexdigest()
    return parsed


def parse_policy(data: dict[str, Any], where: str = "policy", default_name: str = "custom") -> Policy:
    """Build a :class:`Policy` from a parsed recipe, naming ``where`` and the key in every error."""
    _reject_unknown(data, TOP_LEVEL_KEYS, where, "top level")
    columns = Columns.from_mapping(_table(data, "columns", where), where=f"{where}: [columns]")
    records = _parse_records(_table(data, "records", where), where)
    no_text = _parse_privacy(_table(data, "privacy", where), where)
    flag_folder = _parse_routing(_table(data, "routing", where), where)
    stages: list[Stage] = []
    rules: dict[str, StageRule] = {}
    for stage_name, table in _table(data, "stages", where).items():
        section = f"[stages.{stage_name}]"
        if not isinstance(table, dict):
            raise PolicyError(f"{where}: {section} must be a table")
        if stage_name not in REGISTRY and stage_name not in plugin_stages():
            raise PolicyError(
                f"{where}: {section}: unknown stage {stage_name!r}; known stages: {', '.join(known_stages())}"
            )
        rule = _parse_rule(table, where, section)
        if rule.action == "off" and rule.duplicates == "keep":
            continue  # the stage would decide nothing: it does not run
        params = {k: v for k, v in table.items() if k not in STAGE_RULE_KEYS}
        stages.append(_build_stage(stage_name, params, where, section))
        rules[stage_name] = rule
    return Policy(
        name=str(data.get("name", default_name)),
        description=str(data.get("description", "")),
        stages=stages,
        rules=rules,
        records=records,
        columns=columns,
        no_text=no_text,
        flag_folder=flag_folder,
    )


def _parse_privacy(table: dict[str, Any], where: str) -> bool:
    _reject_unknown(table, PRIVACY_KEYS, where, "[privacy]")
    no_text = table.get("no_text", False)
    if not isinstance(no_text, bool):
        raise PolicyError(f"{where}: [privacy]: no_text = {no_text!r} must be true or false")
    return no_text


def _parse_routing(table: dict[str, Any], where: str) -> str:
    _reject_unknown(table, ROUTING_KEYS, where, "[routing]")
    folder = table.get("flag", "flagged")
    if folder not in FLAG_FOLDERS:
        raise PolicyError(f"{where}: [routing]: flag = {folder!r} is not one of {', '.join(map(repr, FLAG_FOLDERS))}")
    return folder


def _apply_override(data: dict[str, Any], key: str, value: Any) -> None:
    section, dot, name = key.partition(".")
    if not dot or not section or not name:
        raise PolicyError(f"--set {key}: expected STAGE.KEY=VALUE, records.KEY=VALUE or routing.flag=VALUE")
    if section in ("records", "privacy", "routing"):
        data.setdefault(section, {})[name] = value
    else:
        data.setdefault("stages", {}).setdefault(section, {})[name] = value


def parse_override(spec: str) -> tuple[str, Any]:
    """``"near_duplicates.threshold=0.8"`` -> ``("near_duplicates.threshold", 0.8)``.

    The value is read as a TOML value (number, boolean, string in quotes, list);
    anything else is taken as a plain string.
    """
    key, equals, raw = spec.partition("=")
    if not equals:
        raise PolicyError(f"--set {spec!r}: expected STAGE.KEY=VALUE")
    try:
        value = tomllib.loads(f"value = {raw.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return key.strip(), value


def _table(data: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = data.get(key, {})
    if not isinstance(value, dict):
        raise PolicyError(f"{where}: '{key}' must be a table, got {type(value).__name__}")
    return value


def _reject_unknown(table: dict[str, Any], known: tuple[str, ...], where: str, section: str) -> None:
    for key in table:
        if key not in known:
            raise PolicyError(f"{where}: {section}: unknown key {key!r}; known keys: {', '.join(known)}")


def _parse_records(table: dict[str, Any], where: str) -> RecordRules:
    _reject_unknown(table, RECORD_KEYS, where, "[records]")
    for key in ("null_content", "oversized"):
        if key in table and table[key] not in RECORD_ACTIONS:
            raise PolicyError(
                f"{where}: [records]: {key} = {table[key]!r} is not one of {', '.join(RECORD_ACTIONS)}"
            )
    limit = table.get("max_text_bytes", RecordRules.max_text_bytes)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise PolicyError(f"{where}: [records]: max_text_bytes = {limit!r} must be a positive integer")
    return RecordRules(**table)


def _parse_rule(table: dict[str, Any], where: str, section: str) -> StageRule:
    action = table.get("action", "flag")
    if action not in ACTIONS:
        raise PolicyError(f"{where}: {section}: action = {action!r} is not one of {', '.join(ACTIONS)}")
    values: dict[str, float] = {}
    for key in ("threshold", "flag_threshold"):
        if key not in table:
            continue
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise PolicyError(f"{where}: {section}: {key} = {value!r} must be a number in [0, 1]")
        values[key] = float(value)
    duplicates = table.get("duplicates", "keep")
    if duplicates not in DUPLICATE_ACTIONS:
        raise PolicyError(f"{where}: {section}: duplicates = {duplicates!r} is not one of "
                          f"{', '.join(DUPLICATE_ACTIONS)}")
    support = table.get("support")
    if support is not None and (isinstance(support, bool) or not isinstance(support, (int, float))
                                or not 0 < support <= 1):
        raise PolicyError(f"{where}: {section}: support = {support!r} must be a number in (0, 1]")
    if support is not None:
        values["support"] = float(support)
    rule = StageRule(action=action, duplicates=duplicates, **values)
    if rule.flag_threshold is not None and rule.flag_threshold > rule.threshold:
        raise PolicyError(
            f"{where}: {section}: flag_threshold = {rule.flag_threshold} is above threshold = {rule.threshold}"
        )
    return rule


def _build_stage(stage_name: str, params: dict[str, Any], where: str, section: str) -> Stage:
    try:
        cls = stage_class(stage_name)
    except KeyError as error:
        raise PolicyError(f"{where}: {section}: {error.args[0]}") from None
    accepted = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    for key in params:
        if key not in accepted:
            known = ", ".join((*STAGE_RULE_KEYS, *accepted))
            raise PolicyError(f"{where}: {section}: unknown key {key!r}; known keys: {known}")
    try:
        return cls(**params)
    except (TypeError, ValueError) as error:
        raise PolicyError(f"{where}: {section}: {error}") from None
