"""MemoryStore: the one orchestrator of capture and recall.

It owns one SQLite connection (the truth), one embedder (resolved lazily) and
one usearch index (a cache it keeps in step with SQLite through the vector
change log). Every public method validates its input first, so bad input
changes nothing.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import date, datetime, timedelta
from typing import IO, TYPE_CHECKING, Any, Literal

from . import config, db, exchange
from .db import Filter, transaction
from .embedder import Embedder, ModelInfo, resolve_embedder
from .errors import (
    ConflictError,
    InvalidInputError,
    ModelError,
    ModelMismatchError,
    NotFoundError,
    StoreError,
    StoreNotWritableError,
)
from .identity import content_hash, new_id, states_other_numbers
from .keyword import KeywordLeg, KeywordMatch
from .models import CaptureResult, Hit, ImportResult, Memory, PurgedMemory, PurgeResult
from .search import LEG_DEPTH, fuse
from .settings import SETTINGS, Settings, load_settings
from .timeutil import add, format_ts, now, parse_duration, parse_time
from .validate import (
    clean_limit,
    clean_metadata,
    clean_name,
    clean_namespaces,
    clean_offset,
    clean_query,
    clean_tags,
    clean_text,
)
from .vectors import NEWER, VectorIndex

if TYPE_CHECKING:
    import numpy as np

    from .verify import VerifyReport

__all__ = ["MemoryStore", "ModelMismatchWarning", "Progress", "open_store"]

Mode = Literal["hybrid", "keyword", "semantic"]
MODES = ("hybrid", "keyword", "semantic")
TimeLike = str | datetime | date | None
TtlLike = str | timedelta | None
#: progress(done, total) callback used by bulk operations
Progress = Callable[[int, int], None]

#: Below this many candidates a filtered vector search is exact over the candidates.
EXACT_FILTER_MAX = 5000
#: Up to this many vectors the index is a flat matrix searched exactly: faster than HNSW
#: in a fresh process (no usearch import, no graph) and within ~3 ms of it warm; above it,
#: HNSW. Measured by scripts/bench.py (docs/performance.md).
EXACT_INDEX_MAX = 20_000
#: An HNSW index turns flat again only below this, so a store at the edge does not flap.
FLAT_AGAIN_BELOW = EXACT_INDEX_MAX // 2
#: Default texts per embedding batch in bulk capture and reindex.
BATCH_SIZE = 256
#: Nearest memories a capture is compared with when looking for a near-duplicate.
NEAR_DUPLICATE_CANDIDATES = 5

#: The fields a capture_many item (and a plain JSONL line) may carry.
_ITEM_FIELDS = frozenset({
    "text", "namespace", "tags", "metadata", "source", "project", "branch", "expires_at", "ttl",
    "created_at",
})


class _Keep:
    """Marker default: "leave this field as it is" (None already means "clear it")."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()
#: Pending (deferred) embeddings a recall computes before its vector leg, newest first.
RECALL_EMBED_PENDING = 16
#: Vector-log ops kept behind a saved index, so processes holding a slightly older index in
#: memory catch up instead of rebuilding; the log is trimmed once twice that has piled up.
LOG_KEEP = 10_000


class ModelMismatchWarning(UserWarning):
    """Some memories carry vectors from another model; they are left out of the vector leg."""


@db.translate_errors
class MemoryStore:
    """A memory store in one directory: ``memstore.db`` plus the ``index/`` cache.

    Use :func:`memstore.open` to get one; close it (or use ``with``) to save the
    vector index. One instance may be shared between threads; several processes
    may open the same directory at once.
    """

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        *,
        embedder: Embedder | None = None,
        model_dir: str | os.PathLike[str] | None = None,
        settings: Settings | None = None,
    ) -> None:
        if settings is None:
            settings = load_settings(
                {"home": os.fspath(home) if home else None,
                 "model_dir": os.fspath(model_dir) if model_dir else None}
            )
        self.settings = settings
        self.home = config.home_dir(settings.get("home"))
        self._early_notices: list[str] = []
        self._prepare_home()
        self.db_path = self.home / config.DB_FILENAME
        self.index_dir = self.home / "index"
        self._conn = db.connect(self.db_path)
        self._store_id = db.store_id(self._conn)
        self._embedder = embedder
        self._embedder_injected = embedder is not None
        self._model_dir = settings.get("model_dir")
        self._index: VectorIndex | None = None
        self._lock = threading.RLock()
        self._last_query_vector: tuple[str, str, np.ndarray] | None = None
        self._closed = False
        #: one-line notices about repairs done on the way (index rebuilt, …)
        self.notices: list[str] = self._early_notices

    def _prepare_home(self) -> None:
        try:
            self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreNotWritableError(f"cannot create store directory {self.home}: {exc}") from exc
        if not self.home.is_dir():
            raise StoreError(f"store path {self.home} is not a directory")
        fixed = config.secure_dir(self.home, "store directory")
        if fixed:
            self._early_notices.append(fixed)
        if not os.access(self.home, os.W_OK | os.X_OK):
            raise StoreNotWritableError(f"store directory {self.home} is not writable")

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Save the vector index if it moved on, and close the database. Idempotent."""
        with self._lock:
            if self._closed:
                return
            try:
                index = self._index
                if index is not None and (  # as _sync_index: small changes replay cheaply
                    index.position - index.saved_position >= _save_threshold(len(index))
                ):
                    self._save_index()
            finally:
                self._conn.close()
                self._closed = True

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    # -- the model ---------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        """The embedder in use (resolved on first use)."""
        if self._embedder is None:
            self._embedder = resolve_embedder(
                self._model_dir, self.settings.get("embedder"), self.settings.get("model"),
                query_worker_idle=self.settings.get("query_worker.idle_seconds", 0),
            )
        return self._embedder

    def model_info(self) -> ModelInfo:
        """Which model this store embeds with, where it came from, its dimension."""
        emb = self.embedder
        info = getattr(emb, "info", None)
        if not isinstance(info, ModelInfo):
            return ModelInfo(emb.model_id, emb.dimension, type(emb).__name__, "injected")
        if self._embedder_injected:
            info = replace(info, source="injected")
        status = getattr(emb, "query_worker_status", None)
        return replace(info, query_worker=status()) if status is not None else info

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        import numpy as np

        vectors = np.asarray(self.embedder.embed(list(texts)), dtype=np.float32)
        expected = (len(texts), self.embedder.dimension)
        if vectors.shape != expected:
            raise ModelError(f"embedder returned shape {vectors.shape}, expected {expected}")
        return _unit_rows(vectors)

    # -- capture -----------------------------------------------------------------------------

    def _prepare(
        self,
        text: Any,
        *,
        namespace: str | None = None,
        tags: Iterable[str] | str | None = None,
        metadata: Mapping[str, Any] | None = None,
        source: str | None = None,
        project: str | None = None,
        branch: str | None = None,
        expires_at: TimeLike = None,
        ttl: TtlLike = None,
        created_at: TimeLike = None,
        redact: bool | None = None,
    ) -> dict[str, Any]:
        text = clean_text(text)
        meta = clean_metadata(metadata)
        names: dict[str, Any] = {
            "namespace": clean_name(namespace, "namespace") or clean_name(
                self.settings.get("default_namespace", config.DEFAULT_NAMESPACE),
                "namespace (setting default_namespace)", allow_none=False,
            ),
            "tags": clean_tags(tags),
            "source": clean_name(source, "source"),
            "project": clean_name(project, "project"),
            "branch": clean_name(branch, "branch"),
        }
        redacted: tuple[str, ...] = ()
        if self._redacting(redact):  # before hashing and embedding: no secret reaches SQLite
            text, meta, redacted = _redact_secrets(text, meta)
            names, in_names = _redact_names(names)
            redacted += in_names
        ns, project = names["namespace"], names["project"]
        expires = _expiry(expires_at, ttl)
        created = parse_time(created_at, field="created_at") if created_at is not None else None
        stamp = format_ts(now())
        return {
            "id": new_id(),
            "text": text,
            "namespace": ns,
            "tags": json.dumps(list(names["tags"]), ensure_ascii=False),
            "source": names["source"],
            "metadata": json.dumps(meta, ensure_ascii=False),
            "content_hash": content_hash(text, ns, project),
            "project": project,
            "branch": names["branch"],
            "created_at": format_ts(created) if created else stamp,
            "updated_at": stamp,
            "expires_at": format_ts(expires) if expires else None,
            "_redacted": redacted,  # not a column: db.insert_memory skips "_" keys
        }

    def capture(
        self,
        text: str,
        *,
        namespace: str | None = None,
        tags: Iterable[str] | str | None = None,
        metadata: Mapping[str, Any] | None = None,
        source: str | None = None,
        project: str | None = None,
        branch: str | None = None,
        expires_at: TimeLike = None,
        ttl: TtlLike = None,
        supersedes: str | None = None,
        allow_duplicate: bool = False,
        created_at: TimeLike = None,
        embed: bool = True,
        redact: bool | None = None,
    ) -> CaptureResult:
        """Store one memory, embedded, in one transaction, and return it.

        The same text (after whitespace/Unicode normalisation) in the same namespace
        and project returns the existing memory with ``created=False``. So does a
        *near*-duplicate — a live memory in the same namespace and project whose cosine
        similarity is at least the ``near_duplicate.threshold`` setting — flagged with
        ``near_duplicate_of`` and ``similarity``, unless ``allow_duplicate`` is true.

        ``ttl`` ("7d", a timedelta) or ``expires_at`` (a future time) make the memory
        expire: it leaves recall and list then, and ``purge`` deletes it.
        ``supersedes=ID`` stores the text as the new version of memory ID (like
        :meth:`update`): its namespace, project and branch default to the old one's.
        ``created_at`` says when it happened (default: now). ``embed=False`` stores it at once
        without a vector (no model is loaded, no near-duplicate check): keyword recall finds it
        immediately, and it gets its vector from :meth:`embed_pending`, which every recall
        runs first for a bounded number.
        Secrets in the text and metadata values are replaced by ``[REDACTED:<kind>]`` first
        (listed in ``result.redacted``) unless ``redact=False`` (default: the ``redact`` setting).
        """
        if supersedes is not None:
            old = self._current_version(_clean_id(supersedes))
            row = self._prepare(
                text, namespace=namespace or old.namespace, tags=tags, metadata=metadata,
                source=source, project=project if project is not None else old.project,
                branch=branch if branch is not None else old.branch, expires_at=expires_at, ttl=ttl,
                redact=redact,
            )
            return _with_redactions(self._write_version(old, row), row["_redacted"])
        row = self._prepare(
            text, namespace=namespace, tags=tags, metadata=metadata, source=source,
            project=project, branch=branch, expires_at=expires_at, ttl=ttl, created_at=created_at,
            redact=redact,
        )
        near = None if allow_duplicate else self._near_duplicate_threshold()
        return _with_redactions(self._capture_rows([row], near=near, embed=embed)[0], row["_redacted"])

    def _redacting(self, redact: bool | None) -> bool:
        if redact is None:
            return bool(self.settings.get("redact", True))
        if not isinstance(redact, bool):
            raise InvalidInputError(f"redact must be True, False or None, not {redact!r}")
        return redact

    def capture_many(
        self,
        items: Iterable[str | Mapping[str, Any]],
        *,
        namespace: str | None = None,
        tags: Iterable[str] | str | None = None,
        batch_size: int | None = None,
        progress: Progress | bool | None = None,
        embed: bool = True,
        redact: bool | None = None,
    ) -> list[CaptureResult]:
        """Store many memories, embedded in batches; one transaction per batch.

        Items are texts or mappings with ``text`` and optionally ``namespace``, ``tags``,
        ``metadata``, ``source``, ``project``, ``branch``, ``expires_at``, ``ttl``, ``created_at``.
        Only exact duplicates are folded (no near-duplicate check in bulk). ``embed=False``
        defers the vectors as in :meth:`capture`. Every item is
        checked before anything is written. ``namespace``/``tags`` are defaults for items
        that do not set them. ``progress`` is a ``(done, total)`` callback, or True for a
        progress bar on stderr. ``redact`` as in :meth:`capture`. Returns one result per
        item, in order.
        """
        if batch_size is None:
            batch_size = int(self.settings.get("batch_size", BATCH_SIZE))
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InvalidInputError("batch_size must be a positive integer")
        redact = self._redacting(redact)
        rows = []
        for position, item in enumerate(items):
            try:
                rows.append(self._item_row(item, namespace, tags, redact))
            except InvalidInputError as exc:
                raise InvalidInputError(f"item {position}: {exc}") from None
        redacted = [row["_redacted"] for row in rows]
        callback = _progress_callback(progress, len(rows), "capturing")
        results: list[CaptureResult] = []
        try:
            for start in range(0, len(rows), batch_size):
                results.extend(self._capture_rows(rows[start : start + batch_size], sync=False, embed=embed))
                if callback:
                    callback(len(results), len(rows))
        finally:
            if callback is not None and hasattr(callback, "close"):
                callback.close()
            with self._lock:
                if self._index is not None:
                    self._sync_index()
        return [_with_redactions(r, k) for r, k in zip(results, redacted, strict=True)]

    def _item_row(
        self, item: Any, namespace: str | None, tags: Iterable[str] | str | None, redact: bool
    ) -> dict[str, Any]:
        """One capture_many item (a text or a mapping of capture fields) as a checked row."""
        if isinstance(item, (str, bytes)):
            fields: dict[str, Any] = {"text": item}
        elif isinstance(item, Mapping):
            unknown = set(item) - _ITEM_FIELDS
            if unknown:
                raise InvalidInputError(f"unknown field(s) {', '.join(sorted(map(str, unknown)))}")
            if "text" not in item:
                raise InvalidInputError("missing field 'text'")
            fields = dict(item)
        else:
            raise InvalidInputError(f"expected a string or a mapping, not {type(item).__name__}")
        fields.setdefault("namespace", namespace)
        fields.setdefault("tags", tags)
        return self._prepare(**fields, redact=redact)

    def _capture_rows(
        self, rows: list[dict[str, Any]], sync: bool = True, *, near: float | None = None,
        embed: bool = True,
    ) -> list[CaptureResult]:
        with self._lock:
            self._check_open()
            results: dict[int, CaptureResult] = {}
            fresh: list[int] = []
            first_of: dict[str, int] = {}
            repeats: list[int] = []
            for i, row in enumerate(rows):
                existing = db.find_live_by_hash(self._conn, row["content_hash"])
                if existing is not None:
                    results[i] = _result(existing, created=False)
                elif row["content_hash"] in first_of:
                    repeats.append(i)
                else:
                    first_of[row["content_hash"]] = i
                    fresh.append(i)
            vectors = None
            notices: tuple[str, ...] = ()
            if fresh and embed:
                try:
                    vectors = self._embed([rows[i]["text"] for i in fresh])
                except ModelError as exc:
                    notices = (f"stored without a vector ({exc}); run `memstore reindex` later",)
            if near is not None and vectors is not None:
                fresh, vectors = self._skip_near_duplicates(rows, fresh, vectors, near, results)
            model = self.embedder.model_id if vectors is not None else None
            with transaction(self._conn):
                for n, i in enumerate(fresh):
                    row = rows[i]
                    again = db.find_live_by_hash(self._conn, row["content_hash"])
                    if again is not None:  # another process stored it since we looked
                        results[i] = _result(again, created=False)
                        continue
                    seq = db.insert_memory(self._conn, row)
                    if vectors is not None and model is not None:
                        db.put_embedding(
                            self._conn, seq, model, row["content_hash"], vectors[n].astype("<f4").tobytes()
                        )
                    found = db.get_memory(self._conn, row["id"])
                    assert found is not None
                    results[i] = _result(found[1], created=True, notices=notices)
            for i in repeats:
                results[i] = _result(results[first_of[rows[i]["content_hash"]]], created=False)
            if sync and self._index is not None:
                self._sync_index()
            return [results[i] for i in range(len(rows))]

    def import_jsonl(
        self,
        source: str | os.PathLike[str] | IO[str],
        *,
        namespace: str | None = None,
        progress: Progress | bool | None = None,
        redact: bool | None = None,
    ) -> ImportResult:
        """Import a JSON Lines file: a ``memstore export`` (restored losslessly: ids, timestamps,
        history links, tombstones; importing it again changes nothing) or plain JSONL (objects
        with ``text`` and optional fields as :meth:`capture_many`, or bare JSON strings,
        captured as new memories; ``namespace`` is their default; ``redact`` as in
        :meth:`capture` — an export is restored as it was).

        The whole file is checked before anything is written: a first pass reads it line by
        line and validates every line (and, for an export, the count, the ids and the version
        chains); a second pass writes it in batches. Memory stays bounded by a batch, whatever
        the file's size."""
        redact = self._redacting(redact)
        with exchange.Lines(source) as lines:
            head: dict[str, Any] | None = None
            checker: _ExportCheck | None = None
            plain = 0
            for number, line in lines:
                obj = exchange.loads_line(line, number)
                if checker is None and not plain and exchange.is_header(obj):
                    if namespace is not None:
                        raise InvalidInputError(
                            "namespace applies to plain JSONL; an export keeps the namespaces it records"
                        )
                    head = obj
                    checker = _ExportCheck(self, exchange.check_header(obj))
                    continue
                if checker is not None:
                    checker.add(number, obj)
                    continue
                self._plain_row(number, obj, namespace, redact)
                plain += 1
            if checker is not None:
                checker.finish()
                return self._import_export(lines, checker, progress)
            if head is None and not plain:
                return ImportResult(format="jsonl", read=0, created=0, unchanged=0)
            results = self._import_plain(lines, plain, namespace, redact, progress)
        created = sum(r.created for r in results)
        return ImportResult(
            format="jsonl", read=len(results), created=created, unchanged=len(results) - created,
            results=tuple(results),
        )

    def _plain_row(self, number: int, item: Any, namespace: str | None, redact: bool) -> dict[str, Any]:
        """Validate one line of plain JSONL as capture_many would (naming the line)."""
        if not isinstance(item, (str, dict)):
            raise InvalidInputError(f"line {number}: expected an object or a string")
        if isinstance(item, dict) and "id" in item and "created_at" in item:
            raise InvalidInputError(
                f"line {number}: this looks like a memstore export without its header line; "
                "export again (the header is needed to restore ids and history)"
            )
        try:
            return self._item_row(item, namespace, None, redact)
        except InvalidInputError as exc:
            raise InvalidInputError(f"line {number}: {exc}") from None

    def _import_plain(
        self, lines: exchange.Lines, total: int, namespace: str | None, redact: bool,
        progress: Progress | bool | None,
    ) -> list[CaptureResult]:
        """The second pass of a plain import: capture the (already checked) lines in batches."""
        callback = _progress_callback(progress, total, "importing")
        results: list[CaptureResult] = []
        batch: list[Any] = []
        chunk = 4 * int(self.settings.get("batch_size", BATCH_SIZE))
        try:
            for number, line in lines:
                batch.append(exchange.loads_line(line, number))
                if len(batch) >= chunk:
                    results += self.capture_many(batch, namespace=namespace, redact=redact)
                    batch = []
                    if callback:
                        callback(len(results), total)
            if batch:
                results += self.capture_many(batch, namespace=namespace, redact=redact)
            if callback:
                callback(len(results), total)
        finally:
            if callback is not None and hasattr(callback, "close"):
                callback.close()
        return results

    # -- read --------------------------------------------------------------------------------

    def get(self, memory_id: str) -> Memory:
        """The memory with this id (forgotten and superseded ones included)."""
        with self._lock:
            self._check_open()
            found = db.get_memory(self._conn, _clean_id(memory_id))
            if found is None:
                raise NotFoundError(memory_id)
            return found[1]

    def list(
        self,
        *,
        limit: int = 20,
        offset: int = 0,
        namespace: str | Iterable[str] | None = None,
        tags: Iterable[str] | str | None = None,
        since: TimeLike = None,
        until: TimeLike = None,
        deleted: bool = False,
        expired: bool = False,
        project: str | Iterable[str | None] | None = None,
        branch: str | None = None,
        source: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> list[Memory]:
        """Memories newest first, filtered like recall. ``deleted=True`` lists forgotten ones,
        ``expired=True`` the expired ones that ``purge`` has not deleted yet. ``source`` and
        ``metadata`` (string values, all must match) narrow it further."""
        flt = _scoped(self._filter(namespace, tags, since, until), project, branch)
        flt.only_deleted = deleted
        if expired:
            flt.include_expired = True
            flt.extra.append(
                ("({m}.expires_at IS NOT NULL AND {m}.expires_at <= ?)", [format_ts(flt.now or now())])
            )
        if source is not None:
            flt.extra.append(("{m}.source = ?", [clean_name(source, "source")]))
        for key, value in _clean_meta_filter(metadata):
            flt.extra.append(("json_extract({m}.metadata, ?) = ?", [key, value]))
        limit = clean_limit(limit, maximum=100_000)
        offset = clean_offset(offset)
        with self._lock:
            self._check_open()
            return db.list_memories(self._conn, flt, limit, offset)

    def _filter(
        self,
        namespace: str | Iterable[str] | None,
        tags: Iterable[str] | str | None,
        since: TimeLike,
        until: TimeLike,
    ) -> Filter:
        return Filter(
            namespaces=clean_namespaces(namespace),
            tags=clean_tags(tags),
            since=parse_time(since, field="since"),
            until=parse_time(until, field="until"),
            now=now(),
        )

    # -- recall ------------------------------------------------------------------------------

    def recall(
        self,
        query: str,
        limit: int = 10,
        *,
        namespace: str | Iterable[str] | None = None,
        tags: Iterable[str] | str | None = None,
        since: TimeLike = None,
        until: TimeLike = None,
        mode: Mode = "hybrid",
        project: str | Iterable[str | None] | None = None,
        branch: str | None = None,
    ) -> list[Hit]:
        """Memories most relevant to ``query``, best first.

        ``mode`` is ``hybrid`` (keyword and vector legs fused, see ``search.fuse``),
        ``keyword`` (FTS5 bm25 only) or ``semantic`` (cosine only). Filters apply to
        both legs. Each Hit carries the fused score and the per-leg evidence.
        ``project`` is one project or several (``None`` in the list means memories with no
        project; ``project=None`` means every project); ``branch`` keeps one branch's.
        """
        query = clean_query(query)
        limit = clean_limit(limit)
        if mode not in MODES:
            raise InvalidInputError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        flt = _scoped(self._filter(namespace, tags, since, until), project, branch)
        if mode != "keyword":
            self._embed_pending_before_recall()
        depth = max(limit, LEG_DEPTH)
        with self._lock:
            self._check_open()
            leg = KeywordLeg(self._conn, query)
            keyword: list[KeywordMatch] = []
            vector: list[tuple[int, float]] = []
            if mode in ("hybrid", "keyword"):
                keyword = leg.search(flt, depth)
            if mode in ("hybrid", "semantic"):
                vector = self._vector_leg(query, flt, depth, required=mode == "semantic")
            matches = {m.seq: m for m in keyword}
            similarity = dict(vector)
            if mode == "hybrid":  # both legs' evidence for every candidate either leg found
                matches.update(leg.evidence_for(s for s in similarity if s not in matches))
                if vector and self._index is not None:  # (the vector leg synced the index)
                    unseen = [m.seq for m in keyword if m.seq not in similarity]
                    similarity.update(
                        self._index.search(self._query_vector(query), len(unseen), among=unseen)
                    )
            fused = fuse(
                {seq: m.strength for seq, m in matches.items()},
                similarity,
                [m.seq for m in keyword] + [s for s, _ in vector],
            )[:limit]
            kw_rank = {m.seq: r for r, m in enumerate(keyword, start=1)}
            vec_rank = {s: r for r, (s, _) in enumerate(vector, start=1)}
            memories = db.memories_by_seq(self._conn, [s for s, _ in fused])
        hits = []
        for seq, score in fused:
            memory = memories.get(seq)
            if memory is None or memory.deleted or memory.superseded_by is not None:
                continue  # forgotten or updated by another process since the legs ran
            match = matches.get(seq)
            hits.append(
                Hit(
                    memory=memory,
                    score=score,
                    keyword_rank=kw_rank.get(seq),
                    vector_rank=vec_rank.get(seq),
                    similarity=similarity.get(seq),
                    bm25=match.bm25 if match else None,
                )
            )
        return hits

    def _embed_pending_before_recall(self) -> None:
        """Vectors for memories captured with deferred embedding, before a vector search.

        At most ``recall.embed_pending`` of them, newest first, so a backlog (a big
        ``import-git --no-embed``) costs each recall a bounded, small batch instead of a stall;
        the rest stay findable by keyword until a later recall, a hook or ``reindex``."""
        limit = int(self.settings.get("recall.embed_pending", RECALL_EMBED_PENDING))
        if limit <= 0:
            return
        try:
            self.embed_pending(limit)
        except ModelError as exc:
            self.notices.append(f"could not embed pending memories ({exc})")

    def embed_pending(self, limit: int | None = None, *, progress: Progress | bool | None = None) -> int:
        """Embed memories stored without a vector (``capture(..., embed=False)``, or the model
        failed at capture), newest first, at most ``limit`` (all when None). Returns how many."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise InvalidInputError("limit must be a non-negative integer or None")
        with self._lock:
            self._check_open()
            seqs = db.pending_seqs(self._conn, limit)
            if not seqs:
                return 0
            done = self._embed_seqs(seqs, BATCH_SIZE, progress)
            if self._index is not None:
                self._sync_index()
            return done

    def _embed_seqs(self, seqs: Sequence[int], batch_size: int, progress: Progress | bool | None) -> int:
        """Embed these memories' current text with the current model, one transaction per
        batch (a crash keeps the batches done), reporting progress. Returns how many."""
        model = self.embedder.model_id
        callback = _progress_callback(progress, len(seqs), "embedding")
        done = 0
        try:
            for start in range(0, len(seqs), batch_size):
                batch = db.texts_for(self._conn, seqs[start : start + batch_size])
                vectors = self._embed([text for _, text, _ in batch])
                with transaction(self._conn):
                    for (seq, _text, chash), vec in zip(batch, vectors, strict=True):
                        db.put_embedding(self._conn, seq, model, chash, vec.astype("<f4").tobytes())
                done += len(batch)
                if callback:
                    callback(done, len(seqs))
        finally:
            if callback is not None and hasattr(callback, "close"):
                callback.close()
        return done

    def _vector_leg(
        self, query: str, flt: Filter, depth: int, *, required: bool
    ) -> list[tuple[int, float]]:
        index = self._synced_index()
        if len(index) == 0:
            # (Another process may have added vectors since the index synced: only vectors of
            # other models and none of ours mean a model mismatch.)
            models = db.embedding_models(self._conn)
            if required and models and self.embedder.model_id not in models:
                raise ModelMismatchError(
                    f"no memory has a vector from the current model {self.embedder.model_id}; "
                    "run `memstore reindex`"
                )
            return []
        qvec = self._query_vector(query)
        if flt.is_selective():
            candidates = db.filtered_seqs(self._conn, flt, EXACT_FILTER_MAX)
            if len(candidates) <= EXACT_FILTER_MAX:
                return _by_similarity(index.search(qvec, depth * 2, among=candidates))[:depth]
        exact = len(index) <= EXACT_INDEX_MAX
        count = min(len(index), depth * 2)
        while True:
            # Asked for every vector, search exactly: as cheap, and HNSW may miss some.
            found = index.search(qvec, count, exact=exact or count >= len(index))
            passing = db.seqs_passing(self._conn, flt, [s for s, _ in found])
            kept = [(s, sim) for s, sim in found if s in passing]
            if len(kept) >= depth or count >= len(index):
                return _by_similarity(kept)[:depth]
            count = min(len(index), count * 4)

    def _query_vector(self, query: str) -> np.ndarray:
        import numpy as np

        memo = self._last_query_vector
        if memo is not None and memo[0] == query and memo[1] == self.embedder.model_id:
            return memo[2]  # recall asks twice: the vector leg, then filling in evidence
        vec = np.asarray(self.embedder.embed_query(query), dtype=np.float32)
        if vec.shape != (self.embedder.dimension,):
            raise ModelError(f"embedder returned a query vector of shape {vec.shape}")
        self._last_query_vector = (query, self.embedder.model_id, vec)
        return vec

    def _exact_over(self, qvec: np.ndarray, seqs: Sequence[int], depth: int) -> list[tuple[int, float]]:
        import numpy as np

        size = self.embedder.dimension * 4
        rows = [r for r in db.live_vectors(self._conn, self.embedder.model_id, seqs) if len(r[1]) == size]
        if not rows:
            return []
        matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(
            len(rows), self.embedder.dimension
        )
        sims = np.nan_to_num(matrix @ qvec, nan=-1.0).clip(-1.0, 1.0)
        order = np.argsort(-sims, kind="stable")[: depth * 2]
        return _by_similarity([(rows[i][0], float(sims[i])) for i in order])[:depth]

    # -- the vector index --------------------------------------------------------------------

    def _synced_index(self) -> VectorIndex:
        """The vector index, loaded or rebuilt on first use, caught up with the database."""
        if self._index is None:
            emb = self.embedder
            self._index = VectorIndex(self.index_dir, emb.model_id, emb.dimension)
            self._warn_other_models()
        self._sync_index()
        return self._index

    def _warn_other_models(self) -> None:
        if not db.has_other_models(self._conn, self.embedder.model_id):
            return
        models = db.embedding_models(self._conn)
        others = {m: n for m, n in models.items() if m != self.embedder.model_id}
        if others:
            total = sum(others.values())
            warnings.warn(
                f"memstore: {total} memories have vectors from another model "
                f"({', '.join(sorted(others))}); they are found by keyword only until you run "
                "`memstore reindex`",
                ModelMismatchWarning,
                stacklevel=4,
            )

    def _sync_index(self) -> None:
        index = self._index
        assert index is not None
        conn = self._conn
        conn.execute("BEGIN")  # one read snapshot for head, floor and the changes
        try:
            look_again = self._catch_up(index)
        finally:
            conn.execute("COMMIT")
        if look_again:  # the saved index is newer than our snapshot: take a fresh one
            conn.execute("BEGIN")
            try:
                self._catch_up(index, last_try=True)
            finally:
                conn.execute("COMMIT")
        if _index_kind(len(index), index.kind) != index.kind:
            # grown past (or shrunk well below) EXACT_INDEX_MAX: rebuild as the other kind
            conn.execute("BEGIN")
            try:
                self._rebuild_from_db(index, db.log_head(conn))
            finally:
                conn.execute("COMMIT")
        if index.position - index.saved_position >= _save_threshold(len(index)):
            self._save_index()

    def _catch_up(self, index: VectorIndex, *, last_try: bool = False) -> bool:
        """Bring the index to the log head of the current snapshot; True when the saved
        index turned out newer than the snapshot (the caller looks again)."""
        conn = self._conn
        head = db.log_head(conn)
        if index.position == head:
            return False
        floor = db.log_floor(conn)
        if not index.loaded:
            problem = index.load(self._store_id, floor, head)
            if problem == NEWER and not last_try:
                return True
            if problem:
                self.notices.append(f"{problem}; rebuilt it from the database")
            if index.loaded and index.position == head:
                return False
        if not index.loaded or not floor <= index.position <= head:
            self._rebuild_from_db(index, head)
            return False
        touched, _ = db.changed_seqs(conn, index.position)
        current = dict(db.live_vectors(conn, index.model_id, touched))
        index.apply(touched, current, head)
        return False

    def _rebuild_from_db(self, index: VectorIndex, head: int) -> int:
        """Rebuild ``index`` from SQLite as of ``head`` (the caller holds the read snapshot),
        flat or HNSW by size, and mark it unsaved."""
        count = db.embedding_models(self._conn).get(index.model_id, 0)
        size = index.rebuild(db.live_vectors(self._conn, index.model_id), head,
                             _index_kind(count, index.kind))
        index.saved_position = -1
        return size

    def _save_index(self, *, force: bool = False) -> None:
        index = self._index
        if index is None or not index.loaded:
            return
        try:
            saved = index.save(self._store_id, force=force)
        except (OSError, TimeoutError) as exc:  # a cache: failing to save loses nothing
            self.notices.append(f"could not save the vector index ({exc})")
            return
        if saved:
            self._trim_log(index.position)

    def _trim_log(self, saved: int) -> None:
        """Drop vector-log ops older than ``LOG_KEEP`` behind the index just saved at
        ``saved``: the log would otherwise grow by one row per change for ever. An index
        older than what is left is rebuilt from SQLite when next used (correct, slower).
        Skipped when another writer holds the database: the next save tries again."""
        upto = saved - LOG_KEEP
        if upto - db.log_floor(self._conn) < LOG_KEEP:
            return
        try:
            with transaction(self._conn):
                db.compact_log(self._conn, upto)
        except (sqlite3.Error, StoreError):  # busy, read-only, damaged: nothing is lost
            pass

    # -- forget, purge, reindex --------------------------------------------------------------

    def forget(self, memory_id: str) -> Memory:
        """Tombstone a memory: hidden from recall and list until purged. Returns it."""
        memory_id = _clean_id(memory_id)
        with self._lock:
            self._check_open()
            with transaction(self._conn):
                found = db.get_memory(self._conn, memory_id)
                if found is None:
                    raise NotFoundError(memory_id)
                stamp = format_ts(now())
                self._conn.execute(
                    "UPDATE memories SET deleted = 1, deleted_at = ?, updated_at = ? "
                    "WHERE seq = ? AND deleted = 0",
                    (stamp, stamp, found[0]),
                )
            if self._index is not None:
                self._sync_index()
            return self.get(memory_id)

    def restore(self, memory_id: str) -> Memory:
        """Undo :meth:`forget`: the memory is live again (with a vector, embedded if it lacks
        one). Restoring a memory that is not forgotten changes nothing. Raises ConflictError
        when the same text has been captured again since (``existing_id``)."""
        memory_id = _clean_id(memory_id)
        with self._lock:
            self._check_open()
            found = db.get_memory(self._conn, memory_id)
            if found is None:
                raise NotFoundError(memory_id)
            seq, memory = found
            if not memory.deleted:
                return memory
            vector = None
            if memory.is_current and not db.has_current_vector(self._conn, seq, self.embedder.model_id):
                try:
                    vector = self._embed([memory.text])[0]
                except ModelError as exc:
                    self.notices.append(f"restored without a vector ({exc}); run `memstore reindex` later")
            with transaction(self._conn):
                found = db.get_memory(self._conn, memory_id)
                if found is None:
                    raise NotFoundError(memory_id)
                seq, memory = found
                if not memory.deleted:
                    return memory
                if memory.is_current:
                    clash = db.find_live_by_hash_except(self._conn, memory.content_hash, memory_id)
                    if clash is not None:
                        raise ConflictError(
                            f"cannot restore {memory_id}: memory {clash.id} holds the same text in "
                            f"namespace {clash.namespace!r} now (forget that one first, or keep it)",
                            memory_id=memory_id, existing_id=clash.id,
                        )
                self._conn.execute(
                    "UPDATE memories SET deleted = 0, deleted_at = NULL, updated_at = ? WHERE seq = ?",
                    (format_ts(now()), seq),
                )
                if vector is not None:
                    db.put_embedding(
                        self._conn, seq, self.embedder.model_id, memory.content_hash,
                        vector.astype("<f4").tobytes(),
                    )
            if self._index is not None:
                self._sync_index()
            return self.get(memory_id)

    def purge(self, *, dry_run: bool = False) -> PurgeResult:
        """Delete for good every forgotten memory, every expired one, and the older versions
        of those (a memory's history goes with it) — rows, FTS entries and vectors, with
        SQLite's secure delete so the text does not linger in free pages. A forgotten *old*
        version is removed alone and its chain reconnected around it. ``dry_run`` only says
        what would go."""
        with self._lock:
            self._check_open()
            if dry_run:
                return PurgeResult(True, tuple(
                    PurgedMemory(m, reason) for _, m, reason in db.purge_candidates(self._conn, now())
                ))
            previous = self._conn.execute("PRAGMA secure_delete").fetchone()[0]
            self._conn.execute("PRAGMA secure_delete = ON")
            try:
                with transaction(self._conn):
                    plan = db.purge_candidates(self._conn, now())
                    db.delete_memories(self._conn, [seq for seq, _, _ in plan])
                    if plan:
                        db.compact_text_index(self._conn)
                if plan:
                    # Move the freed pages out of the WAL into the (zeroed) main file.
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            finally:
                self._conn.execute(f"PRAGMA secure_delete = {int(previous)}")
            if self._index is not None:
                self._sync_index()
            return PurgeResult(False, tuple(PurgedMemory(m, reason) for _, m, reason in plan))

    # -- versions ----------------------------------------------------------------------------

    def update(
        self,
        memory_id: str,
        text: str | None = None,
        *,
        tags: Iterable[str] | str | None = None,
        metadata: Mapping[str, Any] | None = None,
        source: str | None = None,
        expires_at: TimeLike = KEEP,
        ttl: TtlLike = None,
        redact: bool | None = None,
    ) -> CaptureResult:
        """Write a new version of a memory; the old one is kept as superseded (linked both
        ways, in one transaction) and drops out of recall and list. Secrets in the new text
        or metadata are redacted as in :meth:`capture` (what is copied is left as it was).

        Fields left as None are copied from the old version (``tags=[]``/``metadata={}``
        clear them; ``expires_at=None`` removes the expiry, ``ttl`` sets a new one). When
        nothing changes, the current version is returned with ``created=False``. Raises
        ConflictError for a forgotten or superseded memory, or when the new text is already
        live as another memory in the same scope (``existing_id``).
        """
        memory_id = _clean_id(memory_id)
        old = self._current_version(memory_id)
        if ttl is not None or expires_at is not KEEP:
            expiry: dict[str, Any] = {"expires_at": None if expires_at is KEEP else expires_at, "ttl": ttl}
        else:
            expiry = {}
        kinds: tuple[str, ...] = ()
        if self._redacting(redact) and (text is not None or metadata is not None):
            text, metadata, kinds = _redact_secrets(
                None if text is None else clean_text(text),
                None if metadata is None else clean_metadata(metadata),
            )
        if self._redacting(redact) and (tags is not None or source is not None):
            new_names, in_names = _redact_names({
                "tags": clean_tags(tags) if tags is not None else (),
                "source": clean_name(source, "source"),
            })
            kinds += in_names
            tags = new_names["tags"] if tags is not None else None
            source = new_names["source"]
        row = self._prepare(
            old.text if text is None else text,
            namespace=old.namespace,
            tags=old.tags if tags is None else tags,
            metadata=old.metadata if metadata is None else metadata,
            source=old.source if source is None else source,
            project=old.project,
            branch=old.branch,
            redact=False,
            **expiry,
        )
        if not expiry:
            row["expires_at"] = format_ts(old.expires_at) if old.expires_at else None
        unchanged = (
            row["text"] == old.text
            and row["tags"] == json.dumps(list(old.tags), ensure_ascii=False)
            and json.loads(row["metadata"]) == old.metadata
            and row["source"] == old.source
            and row["expires_at"] == (format_ts(old.expires_at) if old.expires_at else None)
        )
        if unchanged:
            return _result(old, created=False, notices=("nothing to change",))
        return _with_redactions(self._write_version(old, row), kinds)

    def history(self, memory_id: str) -> list[Memory]:
        """Every version of the memory, oldest first (from any version's id). The current
        one is the version whose ``superseded_by`` is None."""
        memory_id = _clean_id(memory_id)
        with self._lock:
            self._check_open()
            versions = db.chain(self._conn, memory_id)
        if not versions:
            raise NotFoundError(memory_id)
        return [memory for _, memory in versions]

    def _current_version(self, memory_id: str) -> Memory:
        """The memory, which must be live and current (not forgotten, not superseded)."""
        with self._lock:
            self._check_open()
            found = db.get_memory(self._conn, memory_id)
            if found is None:
                raise NotFoundError(memory_id)
            _check_current(found[1], self._conn)
            return found[1]

    def _write_version(self, old: Memory, row: dict[str, Any]) -> CaptureResult:
        """Insert ``row`` as the version after ``old``, in one transaction."""
        if row["expires_at"] is not None and row["expires_at"] <= format_ts(now()):
            raise ConflictError(
                f"memory {old.id} expired at {row['expires_at']}; give a new ttl or expires_at=None "
                "to update it", memory_id=old.id,
            )
        with self._lock:
            self._check_open()
            model = self.embedder.model_id
            vector: bytes | None = None
            notices: tuple[str, ...] = ()
            if row["content_hash"] == old.content_hash:
                found = db.get_memory(self._conn, old.id)
                stored = db.embeddings_for(self._conn, [found[0]]).get(found[0]) if found else None
                if stored is not None and stored[0] == model:
                    vector = stored[1]  # same text in the same scope: same vector
            if vector is None:
                try:
                    vector = self._embed([row["text"]])[0].astype("<f4").tobytes()
                except ModelError as exc:
                    notices = (f"stored without a vector ({exc}); run `memstore reindex` later",)
            with transaction(self._conn):
                found = db.get_memory(self._conn, old.id)
                if found is None:
                    raise NotFoundError(old.id)
                _check_current(found[1], self._conn)
                clash = db.find_live_by_hash_except(self._conn, row["content_hash"], old.id)
                if clash is not None:
                    raise ConflictError(
                        f"memory {clash.id} already holds this text in namespace {clash.namespace!r}; "
                        f"update or forget that one instead", memory_id=old.id, existing_id=clash.id,
                    )
                self._conn.execute(
                    "UPDATE memories SET superseded_by = ?, updated_at = ? WHERE seq = ?",
                    (row["id"], row["updated_at"], found[0]),
                )
                seq = db.insert_memory(self._conn, {**row, "supersedes": old.id})
                if vector is not None:
                    db.put_embedding(self._conn, seq, model, row["content_hash"], vector)
                created = db.get_memory(self._conn, row["id"])
                assert created is not None
            if self._index is not None:
                self._sync_index()
            return _result(created[1], created=True, notices=notices)

    # -- near-duplicates ---------------------------------------------------------------------

    def _near_duplicate_threshold(self) -> float:
        name = "near_duplicate.threshold"
        return float(self.settings.get(name, SETTINGS[name].default))

    def _skip_near_duplicates(
        self,
        rows: list[dict[str, Any]],
        fresh: list[int],
        vectors: np.ndarray,
        threshold: float,
        results: dict[int, CaptureResult],
    ) -> tuple[list[int], np.ndarray]:
        """Drop from ``fresh`` the rows that nearly duplicate a live memory of their scope,
        recording that memory as their result. Returns the rows (and vectors) still to store."""
        keep: list[int] = []
        for n, i in enumerate(fresh):
            found = self._near_duplicate(vectors[n], rows[i], threshold)
            if found is None:
                keep.append(n)
                continue
            memory, similarity = found
            results[i] = _result(
                memory, created=False, near_duplicate_of=memory.id, similarity=similarity,
                notices=(
                    f"not stored: near-duplicate of {memory.id} (cosine {similarity:.3f} >= "
                    f"{threshold:g}); if it corrects that memory, update it (or capture with "
                    "supersedes); to keep both, allow duplicates",
                ),
            )
        return [fresh[n] for n in keep], vectors[keep]

    def _near_duplicate(
        self, vector: np.ndarray, row: Mapping[str, Any], threshold: float
    ) -> tuple[Memory, float] | None:
        """The most similar live, unexpired memory of the row's namespace and project with
        cosine >= ``threshold`` that does not state other numbers (an embedding barely tells
        "at 2am" from "at 4am"). Exact over the scope's candidates; HNSW, post-filtered, for
        scopes too big for that."""
        flt = Filter(namespaces=(row["namespace"],), projects=(row["project"],), now=now())
        candidates = db.filtered_seqs(self._conn, flt, EXACT_FILTER_MAX)
        if not candidates:
            return None
        if len(candidates) <= EXACT_FILTER_MAX:
            found = self._exact_over(vector, candidates, NEAR_DUPLICATE_CANDIDATES)
        else:
            index = self._synced_index()
            count, found = min(len(index), 64), []
            while count:
                hits = index.search(vector, count, exact=count >= len(index))
                passing = db.seqs_passing(self._conn, flt, [s for s, _ in hits])
                found = _by_similarity([(s, sim) for s, sim in hits if s in passing])
                if len(found) >= NEAR_DUPLICATE_CANDIDATES or count >= len(index):
                    break
                count = min(len(index), count * 8)
        close = [(seq, sim) for seq, sim in found[:NEAR_DUPLICATE_CANDIDATES] if sim >= threshold]
        memories = db.memories_by_seq(self._conn, [seq for seq, _ in close])
        for seq, similarity in close:
            if not states_other_numbers(row["text"], memories[seq].text):
                return memories[seq], similarity
        return None

    # -- export ------------------------------------------------------------------------------

    def export_jsonl(
        self,
        dest: str | os.PathLike[str] | IO[str],
        *,
        namespace: str | Iterable[str] | None = None,
        tags: Iterable[str] | str | None = None,
        since: TimeLike = None,
        until: TimeLike = None,
        project: str | None = None,
        current_only: bool = False,
        with_vectors: bool = False,
    ) -> int:
        """Write memories as a lossless export (format in :mod:`memstore.exchange`) to a path
        (written atomically) or a text stream; returns how many memory lines were written.

        By default every version is exported: live, superseded, forgotten and expired, with
        their links. Filters pick memories as in :meth:`list` (over every version) and pull in
        the whole version chain of each one picked. ``current_only`` exports just the live,
        unexpired current versions, without history links. ``with_vectors`` adds each
        memory's stored vector, so an import with the same model need not re-embed."""
        flt = self._filter(namespace, tags, since, until)
        if project is not None:
            flt.projects = (clean_name(project, "project"),)
        if not current_only:
            flt.include_deleted = flt.include_superseded = flt.include_expired = True
        filters = {
            key: value for key, value in (
                ("namespace", list(flt.namespaces)), ("tags", list(flt.tags)),
                ("since", format_ts(flt.since) if flt.since else None),
                ("until", format_ts(flt.until) if flt.until else None),
                ("project", project), ("current_only", current_only),
            ) if value
        }
        from . import __version__

        with self._lock:
            self._check_open()
            self._conn.execute("BEGIN")  # one snapshot for the whole file
            try:
                if current_only:
                    seqs = sorted(db.filtered_seqs(self._conn, flt, 1 << 62))
                else:
                    seqs = db.export_seqs(self._conn, flt if filters else None)
                with _text_sink(dest) as out:
                    head = exchange.header(
                        len(seqs), vectors=with_vectors, filters=filters, version=__version__
                    )
                    out.write(json.dumps(head, ensure_ascii=False) + "\n")
                    for start in range(0, len(seqs), 500):
                        chunk = seqs[start : start + 500]
                        memories = db.memories_by_seq(self._conn, chunk)
                        vectors = db.embeddings_for(self._conn, chunk) if with_vectors else {}
                        for seq in chunk:
                            record = exchange.encode_memory(memories[seq], vectors.get(seq))
                            if current_only:
                                record["supersedes"] = record["superseded_by"] = None
                            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            finally:
                self._conn.execute("COMMIT")
        return len(seqs)

    def _import_export(
        self, lines: exchange.Lines, check: _ExportCheck, progress: Progress | bool | None
    ) -> ImportResult:
        """The second pass of an export import (the first, :class:`_ExportCheck`, validated it
        all): new ids are inserted as they were; known ids are left alone unless the file
        holds a newer state (forgotten/restored/superseded, by updated_at). Each batch looks
        the ids up again under the write lock, so concurrent imports of one file agree."""
        batch_size = int(self.settings.get("batch_size", BATCH_SIZE))
        counts = {"created": 0, "unchanged": 0, "updated": 0, "merged": 0, "embedded": 0}
        conflicts: list[str] = []
        total = check.count
        if check.rejected:
            self.notices.append(
                f"{check.rejected} vectors in the file were not finite unit vectors; "
                "those memories were embedded again"
            )
        with self._lock:
            self._check_open()
            callback = _progress_callback(progress, total, "importing")
            done = 0
            try:
                for chunk in _batches(check.replay(lines), batch_size):
                    known = db.memories_by_id(self._conn, [r.id for r in chunk])
                    vectors = self._import_vectors([r for r in chunk if r.id not in known])
                    counts["embedded"] += len(vectors)
                    with transaction(self._conn):
                        stored = db.memories_by_id(self._conn, [r.id for r in chunk])
                        for record in chunk:
                            if record.id in stored:
                                seq, memory = stored[record.id]
                                _check_same_version(record, memory)
                                outcome = db.apply_newer_state(self._conn, seq, record.values)
                                if outcome == "conflict":
                                    conflicts.append(record.id)
                                    outcome = "unchanged"
                                counts[outcome] += 1
                            else:
                                counts["merged"] += self._insert_record(record, vectors.get(record.id))
                                counts["created"] += 1
                    done += len(chunk)
                    if callback:
                        callback(done, total)
            finally:
                if callback is not None and hasattr(callback, "close"):
                    callback.close()
                if self._index is not None:
                    self._sync_index()
        return ImportResult(format=exchange.FORMAT, read=total, conflicts=tuple(conflicts), **counts)

    def _import_vectors(self, fresh: list[exchange.ExportRecord]) -> dict[str, bytes]:
        """Vectors (current model) for new live records whose file vector is missing or from
        another model. Empty, with a notice, when the model cannot run."""
        model, dimension = self.embedder.model_id, self.embedder.dimension
        todo = [
            r for r in fresh
            if not r.values["deleted"] and r.values["superseded_by"] is None
            and not (r.vector_model == model and r.vector_dimension == dimension)
        ]
        if not todo:
            return {}
        try:
            matrix = self._embed([r.values["text"] for r in todo])
        except ModelError as exc:
            self.notices.append(f"imported without vectors ({exc}); run `memstore reindex` later")
            return {}
        return {r.id: v.astype("<f4").tobytes() for r, v in zip(todo, matrix, strict=True)}

    def _insert_record(self, record: exchange.ExportRecord, vector: bytes | None) -> int:
        """Insert one new export record (inside a transaction). Returns 1 when its text was
        already live under another id, so it was stored as superseded by that memory."""
        values = dict(record.values)
        merged = 0
        if not values["deleted"] and values["superseded_by"] is None:
            clash = db.find_live_by_hash(self._conn, values["content_hash"])
            if clash is not None:
                values["superseded_by"] = clash.id
                merged = 1
        seq = db.insert_memory(self._conn, values)
        if vector is not None:
            db.put_embedding(self._conn, seq, self.embedder.model_id, values["content_hash"], vector)
        elif record.vector is not None and record.vector_model is not None:
            db.put_embedding(self._conn, seq, record.vector_model, values["content_hash"], record.vector)
        return merged

    def reindex(self, *, force: bool = False, progress: Progress | bool | None = None) -> dict[str, Any]:
        """Embed every memory that lacks a vector from the current model (all with ``force``),
        then rebuild the vector index from SQLite."""
        with self._lock:
            self._check_open()
            model = self.embedder.model_id
            if force:
                seqs = [r[0] for r in self._conn.execute(
                    "SELECT seq FROM memories WHERE deleted = 0 AND superseded_by IS NULL ORDER BY seq"
                )]
            else:
                seqs = db.seqs_needing_embedding(self._conn, model)
            done = self._embed_seqs(seqs, int(self.settings.get("batch_size", BATCH_SIZE)), progress)
            count = self._rebuild_index()
            return {"embedded": done, "indexed": count, "model": model}

    def _rebuild_index(self) -> int:
        """Rebuild the vector index from SQLite and save it over whatever is on disk."""
        model = self.embedder.model_id
        index = self._index or VectorIndex(self.index_dir, model, self.embedder.dimension)
        self._index = index
        self._conn.execute("BEGIN")
        try:
            count = self._rebuild_from_db(index, db.log_head(self._conn))
        finally:
            self._conn.execute("COMMIT")
        self._save_index(force=True)
        return count

    def verify(self, *, repair: bool = False, quick: bool = False) -> VerifyReport:
        """Check the database (PRAGMA integrity_check, or quick_check with ``quick``), the
        full-text index, the tag table, the embeddings, their models and the saved vector
        index against each other. With ``repair``, rebuild what SQLite can give back, then
        check again; a database failing integrity_check is never modified."""
        from . import verify as checks

        with self._lock:
            self._check_open()
            emb = self.embedder
            target = checks.Target(self._conn, self._store_id, emb.model_id, emb.dimension, self.index_dir)
            found = checks.run_checks(target, quick=quick)
            report = checks.VerifyReport(found)
            if not repair or report.ok or not found[0].ok:
                return report
            done = checks.repair(target, found, embed=self._embed, rebuild_index=self._rebuild_index)
            return checks.VerifyReport(checks.run_checks(target, quick=quick), done, found)

    # -- stats -------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Counts, sizes, model and index state."""
        with self._lock:
            self._check_open()
            data = db.counts(self._conn)
            models = db.embedding_models(self._conn)
            model_id = self.embedder.model_id
            data["embeddings"] = models
            data["without_current_vector"] = len(db.seqs_needing_embedding(self._conn, model_id))
            data["pending_embeddings"] = db.pending_count(self._conn)
            data["model"] = self.model_info().to_dict()
            index = VectorIndex(self.index_dir, model_id, self.embedder.dimension)
            state = index.read_state()
            data["index"] = {
                "kind": state.kind if state else None,
                "file": str(index.directory / state.file) if state else None,
                "vectors": state.count if state else 0,
                "reflects_op": state.position if state else None,
                "log_head": db.log_head(self._conn),
                "bytes": state.size if state else 0,
            }
            data["home"] = str(self.home)
            data["database_bytes"] = sum(
                p.stat().st_size for p in self.home.glob(config.DB_FILENAME + "*") if p.is_file()
            )
            return data


class _ExportCheck:
    """The first pass of an export import: every line validated, ids distinct, each id
    already stored carrying the stored content, the header's count right and every version
    chain whole (``memstore.chains``), before anything is written. Keeps only the ids and
    their links, so memory is bounded by the number of memories, not the file's size."""

    CHUNK = 200

    def __init__(self, store: MemoryStore, announced: int | None) -> None:
        self.store = store
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
        with self.store._lock:
            stored = db.memories_by_id(self.store._conn, [r.id for r in self._pending])
        for record in self._pending:
            if record.id in stored:
                _check_same_version(record, stored[record.id][1])
        self._pending = []

    def finish(self) -> None:
        from .chains import chain_problems

        self._check_stored()
        exchange.check_count(self.announced, self.count)
        links = dict(self.links)
        outside = {t for pair in self.links.values() for t in pair if t is not None and t not in links}
        with self.store._lock:
            for mid, (_seq, memory) in db.memories_by_id(self.store._conn, sorted(outside)).items():
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


def _scoped(
    flt: Filter, project: str | Iterable[str | None] | None, branch: str | None
) -> Filter:
    """Narrow a filter to projects (None in the list: memories without one) and a branch."""
    if project is not None:
        values = [project] if isinstance(project, str) else list(project)
        if not values:
            raise InvalidInputError("project must name at least one project (None: memories without one)")
        flt.projects = tuple(dict.fromkeys(
            None if v is None else clean_name(v, "project", allow_none=False) for v in values
        ))
    flt.branch = clean_name(branch, "branch")
    return flt


def _clean_meta_filter(metadata: Mapping[str, str] | None) -> list[tuple[str, str]]:
    """Metadata equality filters as (JSON path, value) pairs."""
    if metadata is None:
        return []
    if not isinstance(metadata, Mapping):
        raise InvalidInputError(f"metadata filter must be a mapping, not {type(metadata).__name__}")
    pairs = []
    for key, value in metadata.items():
        if not isinstance(key, str) or not key or '"' in key or "\\" in key:
            raise InvalidInputError(f"metadata filter key {key!r} is not a plain name")
        if not isinstance(value, str):
            raise InvalidInputError(f"metadata filter value for {key!r} must be a string")
        pairs.append((f'$."{key}"', value))
    return pairs


def _result(memory: Memory, *, created: bool, notices: tuple[str, ...] = (), **flags: Any) -> CaptureResult:
    fields = {name: getattr(memory, name) for name in Memory.__dataclass_fields__}
    return CaptureResult(**fields, created=created, notices=notices, **flags)


def _redact_secrets(text: Any, meta: Any) -> tuple[Any, Any, tuple[str, ...]]:
    """Text and metadata with secrets replaced, checked again against the limits: a marker can
    be longer than what it replaces, and a stored memory must always fit them (or it could
    not be imported from its own export, nor updated with the same text)."""
    from .redact import redact_fields

    new_text, new_meta, kinds = redact_fields(text, meta)
    if kinds:
        try:
            if new_text is not None:
                clean_text(new_text)
            if new_meta is not None:
                clean_metadata(new_meta)
        except InvalidInputError as exc:
            raise InvalidInputError(
                f"once its secrets are replaced by [REDACTED:…] markers, {exc} "
                "(or keep the secrets with redact=False / --no-redact)"
            ) from None
    return new_text, new_meta, kinds


def _redact_names(names: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """Namespace, tags, source, project, branch with secrets replaced, checked again."""
    from .redact import redact_names

    done, kinds = redact_names(names)
    if not kinds:
        return names, ()
    for name, value in done.items():
        if name == "tags":
            done[name] = clean_tags(value)
        else:
            done[name] = clean_name(value, name, allow_none=name != "namespace")
    return done, kinds


def _with_redactions(result: CaptureResult, kinds: tuple[str, ...]) -> CaptureResult:
    if not kinds:
        return result
    from .redact import notice

    return replace(result, redacted=kinds, notices=(*result.notices, notice(kinds)))


def _unit_rows(vectors: np.ndarray) -> np.ndarray:
    """The embedder's rows, which must be finite and non-zero, at unit length (cosine is a
    dot product only between unit vectors; a longer one would outrank everything)."""
    import numpy as np

    from .vectors import COSINE_SLACK

    if not np.isfinite(vectors).all():
        raise ModelError("embedder returned a vector that is not finite")
    norms = np.linalg.norm(vectors, axis=1)
    if (norms == 0).any():
        raise ModelError("embedder returned a zero vector")
    if (np.abs(norms - 1) > COSINE_SLACK).any():
        vectors = (vectors / norms[:, None]).astype(np.float32)
    return vectors


def _by_similarity(found: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Best first; equal similarities (to float32 precision) in insertion order, so results
    do not depend on how the index happened to be built."""
    return sorted(found, key=lambda item: (-round(item[1], 5), item[0]))


def _clean_id(memory_id: Any) -> str:
    if not isinstance(memory_id, str) or not memory_id.strip():
        raise InvalidInputError("memory id must be a non-empty string")
    return memory_id.strip()


def _index_kind(size: int, current: str | None = None) -> Literal["flat", "hnsw"]:
    """Flat (exact) up to EXACT_INDEX_MAX vectors, HNSW above; an HNSW index stays HNSW
    down to FLAT_AGAIN_BELOW."""
    if size > EXACT_INDEX_MAX or (current == "hnsw" and size >= FLAT_AGAIN_BELOW):
        return "hnsw"
    return "flat"


def _save_threshold(size: int) -> int:
    """Ops to accumulate before rewriting the index file: small stores save at once."""
    return 1 if size <= 5000 else max(1, size // 200)


def _progress_callback(progress: Progress | bool | None, total: int, label: str) -> Any:
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(total=total, desc=label, unit="memory", leave=False)

        def update(done: int, _total: int) -> None:
            bar.update(done - bar.n)

        update.close = bar.close  # type: ignore[attr-defined]
        return update
    return progress or None


def _expiry(expires_at: TimeLike, ttl: TtlLike) -> datetime | None:
    """When a new memory expires: ``ttl`` from now, or ``expires_at`` (which must be ahead)."""
    if ttl is not None and expires_at is not None:
        raise InvalidInputError("give expires_at or ttl, not both")
    if ttl is not None:
        if isinstance(ttl, timedelta):
            delta = ttl
        elif isinstance(ttl, str):
            delta = parse_duration(ttl)
        else:
            raise InvalidInputError(
                f"ttl must be a duration such as '7d' or a timedelta, not {type(ttl).__name__}"
            )
        if delta.total_seconds() <= 0:
            raise InvalidInputError("ttl must be positive")
        return add(now(), delta, "expiry (now + ttl)")
    if expires_at is None:
        return None
    if isinstance(expires_at, str):
        try:
            parse_duration(expires_at)
        except InvalidInputError:
            pass
        else:
            raise InvalidInputError(
                f"expires_at {expires_at!r} is a duration: use ttl={expires_at!r} for 'that long from now'"
            )
    when = parse_time(expires_at, field="expires_at")
    assert when is not None
    if when <= now():
        raise InvalidInputError(f"expires_at {format_ts(when)} is in the past")
    return when


def _check_current(memory: Memory, conn: Any) -> None:
    """Raise ConflictError unless the memory is live and current (update/supersede targets)."""
    if memory.deleted:
        raise ConflictError(
            f"memory {memory.id} is forgotten; restore it first (`memstore restore {memory.id}`)",
            memory_id=memory.id,
        )
    if memory.superseded_by is not None:
        versions = db.chain(conn, memory.id)
        head = next((m.id for _, m in reversed(versions) if m.superseded_by is None), memory.superseded_by)
        raise ConflictError(
            f"memory {memory.id} is an old version; the current version is {head}",
            memory_id=memory.id, existing_id=head,
        )


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
def _text_sink(dest: str | os.PathLike[str] | IO[str]) -> Iterator[IO[str]]:
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


def open_store(
    path: str | os.PathLike[str] | None = None,
    *,
    embedder: Embedder | None = None,
    model_dir: str | os.PathLike[str] | None = None,
    settings: Settings | None = None,
) -> MemoryStore:
    """Open (creating if needed) the store in ``path`` (default: the ``home`` setting,
    i.e. $MEMSTORE_HOME, the config file, or the platform data directory).

    ``embedder`` replaces the resolved model (e.g. a deterministic fake in tests);
    ``settings`` replaces the settings loaded from the config file and environment."""
    return MemoryStore(path, embedder=embedder, model_dir=model_dir, settings=settings)
