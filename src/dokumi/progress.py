"""Progress bars on a terminal; silence in CI and when output is redirected."""

from __future__ import annotations

import os
import sys
from typing import Any

from tqdm.auto import tqdm


def progress_enabled(stream: Any = None) -> bool:
    """Whether to draw a progress bar: ``stream`` (default stderr) is a terminal and not in CI."""
    stream = stream or sys.stderr
    in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    return not in_ci and hasattr(stream, "isatty") and stream.isatty()


def progress_bar(total: int | None, description: str, enabled: bool | None = None) -> tqdm:
    """A record counter; ``enabled=None`` decides from the terminal and the ``CI`` variable."""
    return tqdm(
        total=total,
        desc=description,
        unit="rec",
        unit_scale=True,
        disable=not (progress_enabled() if enabled is None else enabled),
        leave=False,
        dynamic_ncols=True,
    )
