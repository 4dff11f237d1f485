"""Input checks: everything a caller passes is checked here before anything is written.

Each function returns the cleaned value or raises InvalidInputError with a
message that names the field and the limit.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Mapping
from typing import Any

from . import limits
from .errors import InvalidInputError

__all__ = ["clean_metadata", "clean_name", "clean_namespaces", "clean_query", "clean_tags", "clean_text"]


def _has_control(value: str, allow_newlines: bool) -> bool:
    for ch in value:
        if ch in "\n\t\r" and allow_newlines:
            continue
        if unicodedata.category(ch) in ("Cc", "Cs"):
            return True
    return False


def clean_text(text: Any, *, field: str = "text", limit: int = limits.MAX_TEXT_BYTES) -> str:
    """Memory text: a non-blank str without NUL, at most ``limit`` UTF-8 bytes. Kept whole."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InvalidInputError(
                f"{field} is not valid UTF-8 ({exc.reason} at byte {exc.start})"
            ) from None
    if not isinstance(text, str):
        raise InvalidInputError(f"{field} must be a string, not {type(text).__name__}")
    if "\x00" in text:
        raise InvalidInputError(f"{field} contains a NUL byte")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInputError(f"{field} contains unpaired surrogates (not valid Unicode)") from None
    if not text.strip():
        raise InvalidInputError(f"{field} is empty")
    if size > limit:
        raise InvalidInputError(
            f"{field} is {size:,} bytes; the limit is {limit:,} bytes (split it into several memories)"
        )
    return text


def clean_query(query: Any) -> str:
    """A recall query: like text, with a smaller limit."""
    return clean_text(query, field="query", limit=limits.MAX_QUERY_BYTES)


def clean_name(value: Any, field: str, *, allow_none: bool = True) -> str | None:
    """A namespace, tag, source, project or branch: non-blank, one line, no control chars."""
    if value is None:
        if allow_none:
            return None
        raise InvalidInputError(f"{field} is required")
    if not isinstance(value, str):
        raise InvalidInputError(f"{field} must be a string, not {type(value).__name__}")
    cleaned = unicodedata.normalize("NFC", value).strip()
    if not cleaned:
        raise InvalidInputError(f"{field} is empty")
    if len(cleaned) > limits.MAX_NAME_CHARS:
        raise InvalidInputError(f"{field} is longer than {limits.MAX_NAME_CHARS} characters")
    if _has_control(cleaned, allow_newlines=False):
        raise InvalidInputError(f"{field} {cleaned!r} contains control characters")
    return cleaned


def clean_namespaces(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """One namespace or several (for filters)."""
    if value is None:
        return ()
    values = [value] if isinstance(value, str) else list(value)
    return tuple(dict.fromkeys(clean_name(v, "namespace", allow_none=False) for v in values))  # type: ignore[misc]


def clean_tags(tags: str | Iterable[str] | None) -> tuple[str, ...]:
    """Tags: distinct, order kept, at most MAX_TAGS. A single string is one tag."""
    if tags is None:
        return ()
    values = [tags] if isinstance(tags, str) else list(tags)
    cleaned = tuple(dict.fromkeys(clean_name(t, "tag", allow_none=False) for t in values))
    if len(cleaned) > limits.MAX_TAGS:
        raise InvalidInputError(f"too many tags ({len(cleaned)}); the limit is {limits.MAX_TAGS}")
    return cleaned  # type: ignore[return-value]


def clean_metadata(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """A JSON object with string keys, at most MAX_METADATA_BYTES as JSON."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidInputError(f"metadata must be a mapping, not {type(metadata).__name__}")
    for key in metadata:
        if not isinstance(key, str):
            raise InvalidInputError(f"metadata keys must be strings, not {type(key).__name__}")
        if "\x00" in key:
            raise InvalidInputError("metadata key contains a NUL byte")
    try:
        encoded = json.dumps(dict(metadata), ensure_ascii=False, allow_nan=False)
        size = len(encoded.encode("utf-8"))
    except (TypeError, ValueError, UnicodeEncodeError) as exc:
        raise InvalidInputError(f"metadata is not JSON-serialisable: {exc}") from None
    if size > limits.MAX_METADATA_BYTES:
        raise InvalidInputError(
            f"metadata is {size:,} bytes as JSON; the limit is {limits.MAX_METADATA_BYTES:,}"
        )
    return json.loads(encoded)


def clean_limit(limit: Any, *, maximum: int = 1000) -> int:
    """A positive result count."""
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise InvalidInputError(f"limit must be an integer, not {type(limit).__name__}")
    if not 1 <= limit <= maximum:
        raise InvalidInputError(f"limit must be between 1 and {maximum}, not {limit}")
    return limit
