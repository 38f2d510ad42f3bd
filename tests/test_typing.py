"""The package type-checks: `mypy` (configured in pyproject.toml) finds no error in src/dokumi."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_mypy_is_clean(tmp_path):
    pytest.importorskip("mypy", reason="mypy is in the test extra")
    checked = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path / "cache")], cwd=ROOT,
                             capture_output=True, text=True, timeout=900)
    assert checked.returncode == 0, checked.stdout[-4000:] + checked.stderr[-2000:]
    assert "Success: no issues found" in checked.stdout
