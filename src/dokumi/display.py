"""Text from the data made safe to print: it can neither break a line nor drive the terminal.

Record ids, reason codes, file and field names come from the data. Printed as
they are, a newline in an id forges a line of the summary and an ANSI escape
recolours or rewrites the screen. :func:`printable` escapes control and
format characters (``\\n``, ``ESC``, bidi overrides, line separators) and
keeps every other character, so ids in any script stay readable.
"""

from __future__ import annotations

import unicodedata

# control, format (bidi, zero-width), surrogate, private-use and unassigned code points, and line breaks
_HIDDEN = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))


def printable(text: str) -> str:
    """``text`` with every control or invisible format character written as a Python escape (``\\x1b``)."""
    if text.isprintable():
        return text
    return "".join(_escape(ch) if unicodedata.category(ch) in _HIDDEN else ch for ch in text)


def _escape(ch: str) -> str:
    code = ord(ch)
    if ch in "\n\r\t":
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}[ch]
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


__all__ = ["printable"]
