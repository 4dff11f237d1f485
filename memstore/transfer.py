"""Export and import through the backend; the line format itself is :mod:`memstore.exchange`.

An export is written from one read snapshot; an import of an export restores ids,
timestamps, history links and tombstones (importing it again changes nothing), taking only
*newer* states of versions already stored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from . import exchange
from .batch_embed import BATCH_SIZE, Embedding, Progress, as_bytes, progress_callback
from .errors import InvalidInputError, ModelError
from .identity import content_hash
from .models import ImportResult, Memory
from .notices import notify
from .storage.base import Backend, Filter
from .timeutil import format_ts
from .version import __version__

__all__ = ["export_jsonl", "import_export"]


def export_jsonl(backend: Backend, dest: str | os.PathLike[str] | IO[str], flt: Filter,
                 filters: dict[str, Any], *, current_only: bool, with_vectors: bool) -> int:
    """Write the memories ``flt`` picks (with their history unless ``current_only``) to
    ``dest``; returns how many memory lines were written."""
    with backend.read():  # one snapshot for the whole file
        keys = backend.export_keys(flt if filters or current_only else None, with_history=not current_only)
        with text_sink(dest) as out:
            head = exchange.header(len(keys), vectors=with_vectors, filters=filters, version=__version__)
            out.write(json.dumps(head, ensure_ascii=False) + "\n")
            for memory, vector in backend.export_rows(keys, with_vectors=with_vectors):
                record = exchange.encode_memory(memory, vector)
                if current_only:
                    record["supersedes"] = record["superseded_by"] = None
                out.write(json.dumps(record, ensure_ascii=False) + "\n")
    return len(keys)


def import_export(backend: Backend, embedding: Embedding, records: list[exchange.ExportRecord],
                  progress: Progress | bool | None, batch_size: int = BATCH_SIZE) -> ImportResult:
    """Restore export records: new ids are inserted as they were; known ids are left alone
    unless the file holds a newer state (forgotten/restored/superseded, by updated_at)."""
    seen: set[str] = set()
    for record in records:
        if record.id in seen:
            raise InvalidInputError(f"memory {record.id} appears twice in the export")
        seen.add(record.id)
        v = record.values
        v["content_hash"] = content_hash(v["text"], v["namespace"], v["project"])
    counts = {"created": 0, "unchanged": 0, "updated": 0, "merged": 0, "embedded": 0}
    conflicts: list[str] = []
    stored = backend.get_many([r.id for r in records])
    for record in records:
        if record.id in stored:
            _check_same_version(record, stored[record.id])
    callback = progress_callback(progress, len(records), "importing")
    try:
        for start in range(0, len(records), batch_size):
            chunk = records[start : start + batch_size]
            vectors = _import_vectors(embedding, [r for r in chunk if r.id not in stored])
            counts["embedded"] += len(vectors)
            with backend.write():
                for record in chunk:
                    if record.id in stored:
                        outcome = backend.apply_state(record.id, record.values)
                        if outcome == "conflict":
                            conflicts.append(record.id)
                            outcome = "unchanged"
                        counts[outcome] += 1
                    else:
                        counts["merged"] += _insert_record(backend, embedding, record, vectors.get(record.id))
                        counts["created"] += 1
            if callback:
                callback(min(start + batch_size, len(records)), len(records))
    finally:
        if callback is not None and hasattr(callback, "close"):
            callback.close()
    return ImportResult(format=exchange.FORMAT, read=len(records), conflicts=tuple(conflicts), **counts)


def _import_vectors(embedding: Embedding, fresh: list[exchange.ExportRecord]) -> dict[str, bytes]:
    """Vectors (current model) for new live records whose file vector is missing or from
    another model. Empty, with a notice, when the model cannot run."""
    model, dimension = embedding.model_id, embedding.dimension
    todo = [
        r for r in fresh
        if not r.values["deleted"] and r.values["superseded_by"] is None
        and not (r.vector_model == model and r.vector_dimension == dimension)
    ]
    if not todo:
        return {}
    try:
        matrix = embedding.embed([r.values["text"] for r in todo])
    except ModelError as exc:
        notify(f"imported without vectors ({exc}); run `memstore reindex` later")
        return {}
    return {r.id: as_bytes(v) for r, v in zip(todo, matrix, strict=True)}


def _insert_record(backend: Backend, embedding: Embedding, record: exchange.ExportRecord,
                   vector: bytes | None) -> int:
    """Insert one new export record (inside a write). Returns 1 when its text was already
    live under another id, so it was stored as superseded by that memory."""
    values = dict(record.values)
    merged = 0
    if not values["deleted"] and values["superseded_by"] is None:
        clash = backend.find_live(values["content_hash"])
        if clash is not None:
            values["superseded_by"] = clash.id
            merged = 1
    if vector is not None:
        stored: tuple[str, bytes] | None = (embedding.model_id, vector)
    elif record.vector is not None and record.vector_model is not None:
        stored = (record.vector_model, record.vector)
    else:
        stored = None
    backend.insert_exported(values, stored)
    return merged


def _check_same_version(record: exchange.ExportRecord, stored: Memory) -> None:
    """A version never changes in place: an imported id must carry the stored content."""
    v = record.values
    same = (
        v["text"] == stored.text
        and v["namespace"] == stored.namespace
        and json.loads(v["tags"]) == list(stored.tags)
        and json.loads(v["metadata"]) == stored.metadata
        and v["source"] == stored.source
        and v["project"] == stored.project
        and v["branch"] == stored.branch
        and v["created_at"] == format_ts(stored.created_at)
        and v["expires_at"] == (format_ts(stored.expires_at) if stored.expires_at else None)
    )
    if not same:
        raise InvalidInputError(
            f"memory {record.id} in the file differs from the stored memory with that id "
            "(a version never changes in place); nothing was imported"
        )


@contextmanager
def text_sink(dest: str | os.PathLike[str] | IO[str]) -> Iterator[IO[str]]:
    """A stream as it is, or a path written atomically (temp file, fsync, rename) on success."""
    if not isinstance(dest, (str, os.PathLike)):
        yield dest
        return
    import tempfile
    from pathlib import Path

    target = Path(dest)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise InvalidInputError(f"cannot write {target}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
