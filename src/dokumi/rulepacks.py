"""Find and read rule packs: the plain TOML files under ``filters/rules/``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from dokumi.errors import PolicyError
from dokumi.policy import builtin_policy_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib


def rule_pack_path(name_or_path: str | Path) -> Path:
    """A built-in pack by name (``"invisible"``) or a path to a TOML file."""
    path = Path(name_or_path)
    if path.suffix == ".toml" and path.is_file():
        return path
    builtin = builtin_policy_dir() / "rules" / f"{name_or_path}.toml"
    if builtin.is_file():
        return builtin
    raise PolicyError(f"rule pack {str(name_or_path)!r} not found (neither a file nor a built-in pack)")


def load_rule_pack(name_or_path: str | Path) -> tuple[Path, dict[str, Any]]:
    """The path and parsed TOML of a rule pack (a built-in name or a path); ``PolicyError`` when invalid."""
    path = rule_pack_path(name_or_path)
    try:
        return path, tomllib.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise PolicyError(f"{path}: not valid TOML: {error}") from None


def parse_codepoints(spec: str, where: str) -> range:
    """``"U+200B"`` or ``"U+202A..U+202E"`` as a range of code points."""
    try:
        first, _, last = spec.partition("..")
        start = int(first.strip().upper().removeprefix("U+"), 16)
        end = int(last.strip().upper().removeprefix("U+"), 16) if last else start
    except ValueError:
        raise PolicyError(f"{where}: {spec!r} is not a code point like 'U+200B' or a range 'U+202A..U+202E'") from None
    if not 0 <= start <= end <= 0x10FFFF:
        raise PolicyError(f"{where}: {spec!r} is not a valid code point range")
    return range(start, end + 1)
