"""dokumi's log: one ``logging`` logger, ``dokumi``, for what a scan did and what it warns about.

Library code logs through :data:`log` and configures nothing (the application
decides where records go, as Python's logging guide asks of libraries); the
command line attaches a file with :func:`log_to_file` (``--log-file``). A scan
logs its start, each pass, each warning it also writes to the manifest, and its
decision counts. Like the manifest, log records hold ids, paths, hashes and
counts, never record text.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

log = logging.getLogger("dokumi")
log.addHandler(logging.NullHandler())

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_to_file(path: str | os.PathLike, level: int = logging.INFO) -> logging.Handler:
    """Append dokumi's records at ``level`` and above to the file at ``path``; return the handler."""
    path = Path(path)
    if path.is_dir():
        from dokumi.errors import InputError

        raise InputError(f"--log-file {path} is a folder; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.setLevel(level)
    log.addHandler(handler)
    # the logger passes records at ``level`` on (its default, the root's WARNING, would hold INFO back)
    if log.getEffectiveLevel() > level:
        log.setLevel(level)
    return handler


__all__ = ["log", "log_to_file"]
