"""Memory text is hostile: make it safe to print to a terminal.

Commit messages and agent output can carry escape sequences (CSI, OSC, a C1 control such
as U+009B) that a terminal would obey — clear the screen, set the title, forge lines — and
bidirectional overrides that make text read differently than it is. :func:`escape` turns
each into a visible ``\\x1b``/``\\u202e`` form; newlines and tabs stay. The CLI and the
renderer pass every human-readable line through it; JSON keeps the exact text (with the
same characters written as ``\\u`` escapes, see :func:`escape_json`).
"""

from __future__ import annotations

import re

__all__ = ["escape", "escape_json"]

# C0 controls but tab and newline, DEL, C1 controls, bidi embeddings/overrides/isolates,
# line/paragraph separators.
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2028\u2029\u2066-\u2069]")
_UNSAFE_ALL = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2028\u2029\u2066-\u2069]")


def _visible(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str, *, newlines: bool = True) -> str:
    """``text`` with every character a terminal would act on shown as an escape. With
    ``newlines=False`` newlines and tabs are escaped too (for one-line fields)."""
    return (_UNSAFE if newlines else _UNSAFE_ALL).sub(_visible, text)


def escape_json(encoded: str) -> str:
    """JSON text (from ``json.dumps(..., ensure_ascii=False)``) with the characters JSON may
    leave raw but a terminal acts on (C1 controls, DEL, bidi controls) written as ``\\uXXXX``:
    the same JSON value, safe to print."""
    return _UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", encoded)
