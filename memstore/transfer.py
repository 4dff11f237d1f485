"""Export and import through the backend; the line format itself is :mod:`memstore.exchange`.

An export is written from one read snapshot; an import of an export restores ids,
timestamps, history links and tombstones (importing it again changes nothing), taking only
*newer* states of versions already stored.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from . import exchange
from .batch_embed import BATCH_SIZE, Embedding, Progress, as_bytes, progress_callback
from .capture import Capture
from .errors import InvalidInputError, ModelError
from .identity import content_hash
from .models import CaptureResult, ImportResult, Memory
from .notices import notify
from .storage.base import Backend, Filter
from .timeutil import format_ts
from .version import __version__

__all__ = ["export_jsonl", "export_memories", "import_export", "import_jsonl"]


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


def export_memories(memories: list[Memory], dest: str | os.PathLike[str] | IO[str],
                    filters: dict[str, Any]) -> int:
    """Write ``memories`` (already read, e.g. salvaged from a damaged file) as an export,
    without vectors; returns how many lines were written."""
    with text_sink(dest) as out:
        head = exchange.header(len(memories), vectors=False, filters=filters, version=__version__)
        out.write(json.dumps(head, ensure_ascii=False) + "\n")
        for memory in memories:
            out.write(json.dumps(exchange.encode_memory(memory), ensure_ascii=False) + "\n")
    return len(memories)


def import_jsonl(backend: Backend, embedding: Embedding, capture: Capture,
                 source: str | os.PathLike[str] | IO[str], *, namespace: str | None,
                 progress: Progress | bool | None, redact: bool | None,
                 batch_size: int = BATCH_SIZE) -> ImportResult:
    """Import an export or plain JSONL in two passes over the file: validate every line,
    then write in batches (see ``MemoryStore.import_jsonl``)."""
    redact = capture.redacting(redact)
    with exchange.Lines(source) as lines:
        checker: _ExportCheck | None = None
        plain = 0
        for number, line in lines:
            obj = exchange.loads_line(line, number)
            if checker is None and not plain and exchange.is_header(obj):
                if namespace is not None:
                    raise InvalidInputError(
                        "namespace applies to plain JSONL; an export keeps the namespaces it records"
                    )
                checker = _ExportCheck(backend, exchange.check_header(obj))
                continue
            if checker is not None:
                checker.add(number, obj)
                continue
            _check_plain(capture, number, obj, namespace, redact)
            plain += 1
        if checker is not None:
            checker.finish()
            return import_export(backend, embedding, lines, checker, progress, batch_size)
        results = _import_plain(capture, lines, plain, namespace, redact, progress, batch_size)
    created = sum(r.created for r in results)
    return ImportResult(
        format="jsonl", read=len(results), created=created, unchanged=len(results) - created,
        results=tuple(results),
    )


def _check_plain(capture: Capture, number: int, item: Any, namespace: str | None, redact: bool) -> None:
    """Validate one line of plain JSONL as capture_many would (naming the line)."""
    if not isinstance(item, (str, dict)):
        raise InvalidInputError(f"line {number}: expected an object or a string")
    if isinstance(item, dict) and "id" in item and "created_at" in item:
        raise InvalidInputError(
            f"line {number}: this looks like a memstore export without its header line; "
            "export again (the header is needed to restore ids and history)"
        )
    try:
        capture.prepare_item(item, namespace=namespace, redact=redact)
    except InvalidInputError as exc:
        raise InvalidInputError(f"line {number}: {exc}") from None


def _import_plain(capture: Capture, lines: exchange.Lines, total: int, namespace: str | None,
                  redact: bool, progress: Progress | bool | None, batch_size: int) -> list[CaptureResult]:
    """The second pass of a plain import: capture the (already checked) lines in batches."""
    callback = progress_callback(progress, total, "importing")
    results: list[CaptureResult] = []
    batch: list[Any] = []
    try:
        for number, line in lines:
            batch.append(exchange.loads_line(line, number))
            if len(batch) >= 4 * batch_size:
                results += capture.capture_many(batch, namespace=namespace, redact=redact,
                                                batch_size=batch_size)
                batch = []
                if callback:
                    callback(len(results), total)
        if batch:
            results += capture.capture_many(batch, namespace=namespace, redact=redact, batch_size=batch_size)
        if callback:
            callback(len(results), total)
    finally:
        if callback is not None and hasattr(callback, "close"):
            callback.close()
    return results


class _ExportCheck:
    """The first pass of an export import: every line validated, ids distinct, each id
    already stored carrying the stored content, the header's count right and every version
    chain whole (:mod:`memstore.chains`), before anything is written. Keeps only the ids and
    their links: memory is bounded by the number of memories, not the file's size."""

    CHUNK = 200

    def __init__(self, backend: Backend, announced: int | None) -> None:
        self.backend = backend
        self.announced = announced
        self.links: dict[str, tuple[str | None, str | None]] = {}
        self.count = 0
        self.rejected = 0
        self._pending: list[exchange.ExportRecord] = []

    def add(self, number: int, obj: Any) -> None:
        try:
            record = exchange.decode_record(obj)
        except InvalidInputError as exc:
            raise InvalidInputError(f"line {number}: {exc}") from None
        if record.id in self.links:
            raise InvalidInputError(f"line {number}: memory {record.id} appears twice in the export")
        v = record.values
        self.links[record.id] = (v["supersedes"], v["superseded_by"])
        self.count += 1
        self.rejected += record.vector_rejected
        self._pending.append(record)
        if len(self._pending) >= self.CHUNK:
            self._check_stored()

    def _check_stored(self) -> None:
        stored = self.backend.get_many([r.id for r in self._pending])
        for record in self._pending:
            if record.id in stored:
                _check_same_version(record, stored[record.id])
        self._pending = []

    def finish(self) -> None:
        from .chains import chain_problems

        self._check_stored()
        exchange.check_count(self.announced, self.count)
        links = dict(self.links)
        outside = {t for pair in self.links.values() for t in pair if t is not None and t not in links}
        for mid, memory in self.backend.get_many(sorted(outside)).items():
            links[mid] = (memory.supersedes, memory.superseded_by)
        problems = chain_problems(links, lambda ids: set(), check=self.links)
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise InvalidInputError(
                f"the export's version history is inconsistent: {problems[0]}{more}; nothing was imported"
            )

    def replay(self, lines: exchange.Lines) -> Iterator[exchange.ExportRecord]:
        """The records again (second pass), each one as the first pass saw it."""
        seen = 0
        for number, record in exchange.records(lines):
            v = record.values
            if self.links.get(record.id) != (v["supersedes"], v["superseded_by"]):
                raise InvalidInputError(f"line {number}: the file changed while it was being imported")
            v["content_hash"] = content_hash(v["text"], v["namespace"], v["project"])
            seen += 1
            yield record
        if seen != self.count:
            raise InvalidInputError("the file changed while it was being imported")


def _batches(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def import_export(backend: Backend, embedding: Embedding, lines: exchange.Lines, check: _ExportCheck,
                  progress: Progress | bool | None, batch_size: int = BATCH_SIZE) -> ImportResult:
    """The second pass of an export import (the first, :class:`_ExportCheck`, validated it
    all): new ids are inserted as they were; known ids are left alone unless the file holds a
    newer state (forgotten/restored/superseded, by updated_at). Each batch looks its ids up
    again inside the write, so concurrent imports of one file agree."""
    counts = {"created": 0, "unchanged": 0, "updated": 0, "merged": 0, "embedded": 0}
    conflicts: list[str] = []
    total = check.count
    if check.rejected:
        notify(f"{check.rejected} vectors in the file were not finite unit vectors; "
               "those memories were embedded again")
    callback = progress_callback(progress, total, "importing")
    done = 0
    try:
        for chunk in _batches(check.replay(lines), batch_size):
            known = backend.get_many([r.id for r in chunk])
            vectors = _import_vectors(embedding, [r for r in chunk if r.id not in known])
            counts["embedded"] += len(vectors)
            with backend.write():
                stored = backend.get_many([r.id for r in chunk])
                for record in chunk:
                    if record.id in stored:
                        _check_same_version(record, stored[record.id])
                        outcome = backend.apply_state(record.id, record.values)
                        if outcome == "conflict":
                            conflicts.append(record.id)
                            outcome = "unchanged"
                        counts[outcome] += 1
                    else:
                        counts["merged"] += _insert_record(backend, embedding, record, vectors.get(record.id))
                        counts["created"] += 1
            done += len(chunk)
            if callback:
                callback(done, total)
    finally:
        if callback is not None and hasattr(callback, "close"):
            callback.close()
    return ImportResult(format=exchange.FORMAT, read=total, conflicts=tuple(conflicts), **counts)


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
    if target.is_dir():
        raise InvalidInputError(f"cannot write {target}: it is a directory (give a file name)")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise InvalidInputError(f"cannot write {target}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise InvalidInputError(f"cannot write {target}: {exc.strerror}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
