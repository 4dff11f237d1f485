"""The limits memstore enforces on input: refused beyond them, never truncated."""

from __future__ import annotations

__all__ = ["MAX_METADATA_BYTES", "MAX_NAME_CHARS", "MAX_QUERY_BYTES", "MAX_TAGS", "MAX_TEXT_BYTES"]

#: Longest memory text accepted, in UTF-8 bytes. Longer text is refused, never truncated.
MAX_TEXT_BYTES = 64 * 1024
#: Longest recall query accepted, in UTF-8 bytes.
MAX_QUERY_BYTES = 8 * 1024
#: Longest namespace, tag, source or project name, in characters.
MAX_NAME_CHARS = 128
#: Most tags on one memory.
MAX_TAGS = 64
#: Largest metadata object, as compact JSON in UTF-8 bytes.
MAX_METADATA_BYTES = 16 * 1024
