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
from .timeutil import check_range, format_ts, now
from .validate import clean_metadata, clean_name, clean_tags, clean_text

__all__ = [
    "FORMAT", "VERSION", "ExportRecord", "Lines", "check_count", "check_header", "decode_record",
    "encode_memory", "header", "is_header", "loads_line", "records", "unit_vector",
]

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
    #: the file carried a vector that was not a finite unit vector (dropped: re-embedded)
    vector_rejected: bool = False

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


#: Longest line read (characters): a memory at its limits, JSON-escaped, with a vector.
MAX_LINE_CHARS = 4 * 1024 * 1024


class Lines:
    """The non-blank lines of a JSON Lines source as ``(line number, text)``, readable more
    than once (import validates the whole file, then writes it) with memory bounded by the
    longest line: a path is reopened, a seekable stream rewound, any other stream copied to
    a temporary file on the first pass. Use as a context manager."""

    def __init__(self, source: str | os.PathLike[str] | IO[str]) -> None:
        self._source = source
        self._name = os.fspath(source) if isinstance(source, (str, os.PathLike)) else "input"
        self._start: int | None = None
        self._spool: IO[str] | None = None
        self._spooled = False
        if not isinstance(source, (str, os.PathLike)):
            try:
                if source.seekable():
                    self._start = source.tell()
            except (OSError, ValueError, AttributeError):
                self._start = None

    def __enter__(self) -> Lines:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._spool is not None:
            self._spool.close()

    def __iter__(self) -> Iterator[tuple[int, str]]:
        if isinstance(self._source, (str, os.PathLike)):
            try:
                fh = open(self._source, encoding="utf-8")  # noqa: SIM115 (closed by the with below)
            except OSError as exc:
                raise InvalidInputError(f"cannot read {self._name}: {exc.strerror}") from None
            with fh:
                yield from self._read(fh, None)
            return
        if self._start is not None:
            self._source.seek(self._start)
            yield from self._read(self._source, None)
            return
        if self._spooled:
            assert self._spool is not None
            self._spool.seek(0)
            yield from self._read(self._spool, None)
            return
        import tempfile

        self._spool = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115 (closed by __exit__)
        yield from self._read(self._source, self._spool)
        self._spooled = True

    def _read(self, fh: IO[str], copy: IO[str] | None) -> Iterator[tuple[int, str]]:
        number = 0
        while True:
            number += 1
            try:
                line = fh.readline(MAX_LINE_CHARS + 1)
            except UnicodeDecodeError as exc:
                raise InvalidInputError(
                    f"{self._name} is not valid UTF-8 ({exc.reason}) at line {number}"
                ) from None
            except OSError as exc:
                raise InvalidInputError(f"cannot read {self._name}: {exc.strerror}") from None
            if not line:
                return
            if len(line) > MAX_LINE_CHARS and not line.endswith("\n"):
                raise InvalidInputError(
                    f"line {number}: longer than {MAX_LINE_CHARS:,} characters (no memory is that long)"
                )
            if copy is not None:
                copy.write(line if line.endswith("\n") else line + "\n")
            if line.strip():
                yield number, line


def loads_line(line: str, number: int) -> Any:
    """One JSON value, or InvalidInputError naming the line (also for nesting so deep the
    decoder gives up)."""
    try:
        return json.loads(line)
    except ValueError as exc:
        raise InvalidInputError(f"line {number}: not valid JSON ({exc})") from None
    except RecursionError:
        raise InvalidInputError(f"line {number}: JSON nested too deeply") from None


def is_header(value: Any) -> bool:
    """Whether a decoded first line is an export header."""
    return isinstance(value, dict) and value.get("format") == FORMAT


def check_header(head: dict[str, Any]) -> int | None:
    """The memory count an export header announces (None: not given); refuses other versions."""
    version = head.get("version")
    if version != VERSION:
        raise InvalidInputError(
            f"this export has format version {version!r}; this memstore reads version {VERSION}"
        )
    count = head.get("count")
    return count if isinstance(count, int) and not isinstance(count, bool) else None


def check_count(announced: int | None, found: int) -> None:
    """A truncated or edited export is refused before anything is written."""
    if announced is not None and announced != found:
        raise InvalidInputError(
            f"the export header announces {announced} memories but the file holds {found}: "
            "it is truncated or was edited; nothing was imported"
        )


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
    return format_ts(check_range(parsed, field))


def _id_field(value: Any, field: str, *, required: bool) -> str | None:
    if value is None and not required:
        return None
    if (
        not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS
        or not all(ch.isprintable() and not ch.isspace() for ch in value)
    ):
        raise InvalidInputError(
            f"{field} must be a memory id (at most {MAX_ID_CHARS} printable characters, no spaces)"
        )
    return value


def _list_field(value: Any, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInputError(f"{field} must be a list of strings, not {type(value).__name__}")
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
        "tags": json.dumps(list(clean_tags(_list_field(obj.get("tags"), "tags"))), ensure_ascii=False),
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
    if not unit_vector(blob):  # a poisoned vector would outrank everything: re-embed instead
        return ExportRecord(values, vector_rejected=True)
    return ExportRecord(values, model, blob, dimension)


def unit_vector(blob: bytes) -> bool:
    """Whether little-endian float32 ``blob`` is finite and of unit length (as every
    embedder's vectors are, within float32 rounding)."""
    import numpy as np

    from .batch_embed import UNIT_SLACK

    vec = np.frombuffer(blob, dtype="<f4")
    if not np.isfinite(vec).all():
        return False
    return abs(float(np.linalg.norm(vec.astype(np.float64))) - 1.0) <= UNIT_SLACK


def records(lines: Iterable[tuple[int, str]]) -> Iterator[tuple[int, ExportRecord]]:
    """(line number, record) for every memory line of an export (the header line skipped),
    naming the line of the first bad one."""
    first = True
    for number, line in lines:
        obj = loads_line(line, number)
        if first:
            first = False
            if is_header(obj):
                continue
        try:
            yield number, decode_record(obj)
        except InvalidInputError as exc:
            raise InvalidInputError(f"line {number}: {exc}") from None
