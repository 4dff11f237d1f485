"""The export file format: JSON Lines that carry memories between stores without loss.

An export is one header line, then one line per memory version, oldest first::

    {"format": "memstore-export", "version": 1, "exported_at": "…Z", "memstore": "0.1.0",
     "count": 2, "vectors": true, "filters": {"namespace": ["decisions"]}}
    {"id": "01J…", "text": "…", "namespace": "decisions", "tags": ["db"], "metadata": {},
     "source": null, "project": null, "branch": null, "created_at": "…Z", "updated_at": "…Z",
     "expires_at": null, "deleted": false, "deleted_at": null, "supersedes": null,
     "superseded_by": "01J…",
     "embedding": {"model": "all-MiniLM-L6-v2:…", "dimension": 384, "data": "<base64>"}}

``embedding`` is present only in exports made with vectors: ``data`` is the vector as
little-endian float32, base64-encoded (exactly the bytes SQLite holds). ``count`` lets
an import notice a truncated file. Content hashes are not exported: they are derived
from text, namespace and project and recomputed on import.

Files without the header are plain JSONL (objects with ``text`` and optional capture
fields, or bare JSON strings); those are captured as new memories.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import IO, Any

from .errors import InvalidInputError
from .models import Memory
from .timeutil import format_ts, now
from .validate import clean_metadata, clean_name, clean_tags, clean_text

__all__ = ["FORMAT", "VERSION", "ExportRecord", "encode_memory", "header", "read_lines", "parse"]

FORMAT = "memstore-export"
VERSION = 1
#: Every key of a memory line; ``embedding`` is optional.
RECORD_KEYS = frozenset(
    {
        "id", "text", "namespace", "tags", "metadata", "source", "project", "branch",
        "created_at", "updated_at", "expires_at", "deleted", "deleted_at", "supersedes",
        "superseded_by", "author",
    }
)
MAX_ID_CHARS = 128


@dataclass(frozen=True)
class ExportRecord:
    """One validated memory line: column values ready for the ``memories`` table (without
    ``content_hash``) and, optionally, the vector the file carried for it."""

    values: dict[str, Any]
    vector_model: str | None = None
    vector: bytes | None = None
    vector_dimension: int | None = None

    @property
    def id(self) -> str:
        return str(self.values["id"])


def header(count: int, *, vectors: bool, filters: Mapping[str, Any], version: str) -> dict[str, Any]:
    """The first line of an export."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "exported_at": format_ts(now()),
        "memstore": version,
        "count": count,
        "vectors": vectors,
        "filters": dict(filters),
    }


def _ts(value: datetime | None) -> str | None:
    return format_ts(value) if value is not None else None


def encode_memory(memory: Memory, embedding: tuple[str, bytes] | None = None) -> dict[str, Any]:
    """One memory line (timestamps in the database's exact form, so nothing is rounded)."""
    record: dict[str, Any] = {
        "id": memory.id,
        "text": memory.text,
        "namespace": memory.namespace,
        "tags": list(memory.tags),
        "metadata": memory.metadata,
        "source": memory.source,
        "project": memory.project,
        "branch": memory.branch,
        "created_at": _ts(memory.created_at),
        "updated_at": _ts(memory.updated_at),
        "expires_at": _ts(memory.expires_at),
        "deleted": memory.deleted,
        "deleted_at": _ts(memory.deleted_at),
        "supersedes": memory.supersedes,
        "superseded_by": memory.superseded_by,
    }
    if memory.author is not None:  # team stores record who captured (absent: nobody recorded)
        record["author"] = memory.author
    if embedding is not None:
        model, blob = embedding
        record["embedding"] = {
            "model": model,
            "dimension": len(blob) // 4,
            "data": base64.b64encode(blob).decode("ascii"),
        }
    return record


def read_lines(source: str | os.PathLike[str] | IO[str]) -> list[str]:
    """All lines of a UTF-8 file, a path or an open text stream."""
    if isinstance(source, (str, os.PathLike)):
        try:
            with open(source, encoding="utf-8") as fh:
                return fh.read().splitlines()
        except UnicodeDecodeError as exc:
            raise InvalidInputError(f"{source} is not valid UTF-8 ({exc.reason})") from None
        except OSError as exc:
            raise InvalidInputError(f"cannot read {source}: {exc.strerror}") from None
    return source.read().splitlines()


def parse(lines: Iterable[str]) -> tuple[dict[str, Any] | None, list[tuple[int, Any]]]:
    """(export header or None, [(line number, decoded JSON value)]) for the non-blank lines."""
    items: list[tuple[int, Any]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            items.append((number, json.loads(line)))
        except ValueError as exc:
            raise InvalidInputError(f"line {number}: not valid JSON ({exc})") from None
    if items and isinstance(items[0][1], dict) and items[0][1].get("format") == FORMAT:
        head = items.pop(0)[1]
        version = head.get("version")
        if version != VERSION:
            raise InvalidInputError(
                f"this export has format version {version!r}; this memstore reads version {VERSION}"
            )
        count = head.get("count")
        if isinstance(count, int) and count != len(items):
            raise InvalidInputError(
                f"the export header announces {count} memories but the file holds {len(items)}: "
                "it is truncated or was edited; nothing was imported"
            )
        return head, items
    return None, items


def _ts_field(value: Any, field: str, *, required: bool) -> str | None:
    if value is None:
        if required:
            raise InvalidInputError(f"missing {field}")
        return None
    if not isinstance(value, str):
        raise InvalidInputError(f"{field} must be an ISO 8601 string")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInputError(f"{field} {value!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise InvalidInputError(f"{field} {value!r} has no time zone")
    return format_ts(parsed)


def _id_field(value: Any, field: str, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > MAX_ID_CHARS or value != value.strip():
        raise InvalidInputError(f"{field} must be a memory id (a non-blank string without spaces)")
    return value


def decode_record(obj: Any) -> ExportRecord:
    """Validate one memory line of an export; raises InvalidInputError naming the bad field."""
    if not isinstance(obj, dict):
        raise InvalidInputError("expected a JSON object")
    unknown = set(obj) - RECORD_KEYS - {"embedding"}
    if unknown:
        raise InvalidInputError(f"unknown field(s) {', '.join(sorted(unknown))}")
    missing = {"id", "text", "namespace", "created_at"} - set(obj)
    if missing:
        raise InvalidInputError(f"missing field(s) {', '.join(sorted(missing))}")
    deleted = obj.get("deleted", False)
    if not isinstance(deleted, bool):
        raise InvalidInputError("deleted must be true or false")
    created = _ts_field(obj.get("created_at"), "created_at", required=True)
    values: dict[str, Any] = {
        "id": _id_field(obj.get("id"), "id", required=True),
        "text": clean_text(obj.get("text")),
        "namespace": clean_name(obj.get("namespace"), "namespace", allow_none=False),
        "tags": json.dumps(list(clean_tags(obj.get("tags") or [])), ensure_ascii=False),
        "source": clean_name(obj.get("source"), "source"),
        "metadata": json.dumps(clean_metadata(obj.get("metadata") or {}), ensure_ascii=False),
        "project": clean_name(obj.get("project"), "project"),
        "branch": clean_name(obj.get("branch"), "branch"),
        "created_at": created,
        "updated_at": _ts_field(obj.get("updated_at"), "updated_at", required=False) or created,
        "expires_at": _ts_field(obj.get("expires_at"), "expires_at", required=False),
        "deleted": int(deleted),
        "deleted_at": _ts_field(obj.get("deleted_at"), "deleted_at", required=False),
        "supersedes": _id_field(obj.get("supersedes"), "supersedes", required=False),
        "superseded_by": _id_field(obj.get("superseded_by"), "superseded_by", required=False),
        "author": clean_name(obj.get("author"), "author"),
    }
    if values["superseded_by"] == values["id"] or values["supersedes"] == values["id"]:
        raise InvalidInputError("a memory cannot supersede itself")
    embedding = obj.get("embedding")
    if embedding is None:
        return ExportRecord(values)
    if not isinstance(embedding, dict) or not {"model", "dimension", "data"} <= set(embedding):
        raise InvalidInputError("embedding must be an object with model, dimension and data")
    model, dimension, data = embedding["model"], embedding["dimension"], embedding["data"]
    if not isinstance(model, str) or not model:
        raise InvalidInputError("embedding.model must be a non-empty string")
    if isinstance(dimension, bool) or not isinstance(dimension, int) or dimension < 1:
        raise InvalidInputError("embedding.dimension must be a positive integer")
    try:
        blob = base64.b64decode(data, validate=True) if isinstance(data, str) else None
    except (binascii.Error, ValueError):
        blob = None
    if blob is None or len(blob) != 4 * dimension:
        raise InvalidInputError(
            f"embedding.data must be base64 of {dimension} little-endian float32 values"
        )
    return ExportRecord(values, model, blob, dimension)


def records(items: Iterable[tuple[int, Any]]) -> Iterator[ExportRecord]:
    """Decode every memory line, naming the line of the first bad one."""
    for number, obj in items:
        try:
            yield decode_record(obj)
        except InvalidInputError as exc:
            raise InvalidInputError(f"line {number}: {exc}") from None
