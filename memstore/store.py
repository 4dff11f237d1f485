"""MemoryStore: the facade users hold, over one backend and one embedder.

Every public method validates its input first (so bad input changes nothing), then
delegates: :mod:`.capture` writes memories and versions, :mod:`.recall` runs and fuses the
legs, :mod:`.transfer` exports and imports, :mod:`.batch_embed` embeds in batches; the
backend (:mod:`.storage`) does the storage. Notices are gathered per call
(:mod:`.notices`): ``CaptureResult.notices``, ``Hits.notices``, and ``store.notices`` —
those of this thread's calls since it opened.
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import IO, Any, TypeVar

from .author import author_name
from .batch_embed import BATCH_SIZE, Embedding, Progress
from .capture import Capture, TimeLike, TtlLike, clean_id
from .embedding.base import Embedder, ModelInfo
from .embedding.resolve import resolve_embedder
from .errors import InvalidInputError, ModelError, ModelMismatchWarning, NotFoundError
from .identity import content_hash
from .models import CaptureResult, ImportResult, Memory, PurgedMemory, PurgeResult, VerifyReport
from .notices import collecting, notify
from .recall import Hits, Mode
from .recall import recall as run_recall
from .settings import DB_FILENAME, Settings, home_dir, load_settings
from .storage import open_backend
from .storage.base import Backend, Filter
from .storage.urls import is_postgres_url
from .timeutil import format_ts, now, parse_time
from .validate import (
    clean_limit,
    clean_name,
    clean_namespaces,
    clean_offset,
    clean_query,
    clean_similarity,
    clean_tags,
)

__all__ = ["KEEP", "MemoryStore", "ModelMismatchWarning", "Progress", "open_store", "salvage_export"]

_F = TypeVar("_F", bound=Callable[..., Any])
#: Notices ``store.notices`` keeps per thread (the newest); each call's own are on its result.
NOTICES_KEPT = 1000


class _Keep:
    """Marker default: "leave this field as it is" (None already means "clear it")."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()


def _call(fn: _F) -> _F:
    """A public method: its notices are gathered and kept for this thread (``store.notices``)
    and, where the result has room for them (``Hits``), attached to the result."""

    @functools.wraps(fn)
    def wrapper(self: MemoryStore, *args: Any, **kwargs: Any) -> Any:
        with collecting() as notes:
            try:
                value = fn(self, *args, **kwargs)
            finally:
                kept = self._thread_notices()
                kept.extend(notes)
                del kept[:-NOTICES_KEPT]  # a long-running server must not grow it for ever
        if isinstance(value, Hits) and notes:
            value.notices = tuple(notes)
        return value

    return wrapper  # type: ignore[return-value]


class MemoryStore:
    """A memory store: a directory (``memstore.db`` plus the ``index/`` cache) by default.

    Use :func:`memstore.open` to get one; close it (or use ``with``) to save caches. One
    instance may be shared between threads; several processes may open the same store.
    """

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        *,
        embedder: Embedder | None = None,
        model_dir: str | os.PathLike[str] | None = None,
        settings: Settings | None = None,
        backend: Backend | None = None,
        pool_size: int | None = None,
    ) -> None:
        explicit = os.fspath(home) if home is not None else None
        url = explicit if explicit is not None and is_postgres_url(explicit) else None
        if settings is None:
            settings = load_settings(
                {"home": os.fspath(home) if home and not url else None, "database_url": url,
                 "model_dir": os.fspath(model_dir) if model_dir else None}
            )
        self.settings = settings
        self.home = home_dir(settings.get("home"))
        if url is None and settings.get("database_url") and (
            settings.sources.get("database_url") == "argument"
            or (explicit is None and settings.sources.get("home") != "argument")
        ):  # a store directory given as an argument wins over a configured team store
            url = settings.get("database_url")
        if backend is None:
            backend = (open_backend(url, author=author_name(settings), pool_size=pool_size) if url
                       else open_backend(self.home))
        self.backend: Backend = backend
        self.db_path: Path | None = getattr(self.backend, "db_path", None)
        self.index_dir: Path | None = getattr(self.backend, "index_dir", None)
        self._embedder_injected = embedder is not None
        self._model_dir = settings.get("model_dir")
        self._embedding = Embedding(lambda: embedder or resolve_embedder(
            self._model_dir, self.settings.get("embedder"), self.settings.get("model"),
            query_worker_idle=self.settings.get("query_worker.idle_seconds"),
        ))
        self._capture = Capture(self.backend, self._embedding, settings)
        self._local = threading.local()
        self._thread_notices().extend(getattr(self.backend, "open_notices", ()))

    def _thread_notices(self) -> list[str]:
        notes = getattr(self._local, "notices", None)
        if notes is None:
            notes = self._local.notices = []
        return notes

    @property
    def notices(self) -> list[str]:
        """One-line notices of this thread's calls since the store opened (index rebuilt, …)."""
        return self._thread_notices()

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @_call
    def close(self) -> None:
        """Save caches and close the backend. Idempotent."""
        self.backend.close()

    # -- the model ---------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        """The embedder in use (resolved on first use)."""
        return self._embedding.embedder

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

    def start_query_worker(self) -> bool:
        """Start the query worker now if this store's embedder uses one and none runs (a
        session begins). True if one was started."""
        start = getattr(self.embedder, "start_query_worker", None)
        return bool(start()) if start is not None else False

    # -- capture -----------------------------------------------------------------------------

    @_call
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
        :meth:`update`): its namespace, project, branch, tags, metadata and source default to
        the old one's (``tags=[]``/``metadata={}`` clear them).
        ``created_at`` says when it happened (default: now). ``embed=False`` stores it at once
        without a vector (no model is loaded, no near-duplicate check): keyword recall finds it
        immediately, and it gets its vector from :meth:`embed_pending`, which every recall
        runs first for a bounded number.
        Secrets in the text and metadata values are replaced by ``[REDACTED:<kind>]`` first
        (listed in ``result.redacted``) unless ``redact=False`` (default: the ``redact`` setting).
        """
        return self._capture.capture(
            text, supersedes=supersedes, allow_duplicate=allow_duplicate, embed=embed,
            namespace=namespace, tags=tags, metadata=metadata, source=source, project=project,
            branch=branch, expires_at=expires_at, ttl=ttl, created_at=created_at, redact=redact,
        )

    @_call
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
        return self._capture.capture_many(
            items, namespace=namespace, tags=tags, batch_size=batch_size, progress=progress,
            embed=embed, redact=redact,
        )

    @_call
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
        the file's size. Once written, the vector index is brought up to date
        (``result.indexed``), so the first recall after a big import does not build it."""
        from .transfer import import_jsonl

        result = import_jsonl(self.backend, self._embedding, self._capture, source, namespace=namespace,
                              progress=progress, redact=redact,
                              batch_size=int(self.settings.get("batch_size")))
        if not (result.created or result.updated or result.merged):
            return result
        return replace(result, indexed=self._sync_index())

    def _sync_index(self) -> int | None:
        sync = getattr(self.backend, "sync_index", None)  # only backends with a derived index
        if sync is None:
            return None
        return int(sync(self._embedding.model_id, self._embedding.dimension))

    # -- read --------------------------------------------------------------------------------

    @_call
    def get(self, memory_id: str) -> Memory:
        """The memory with this id (forgotten and superseded ones included)."""
        found = self.backend.get(clean_id(memory_id))
        if found is None:
            raise NotFoundError(memory_id)
        return found

    @_call
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
        author: str | Iterable[str] | None = None,
    ) -> list[Memory]:
        """Memories newest first, filtered like recall. ``deleted=True`` lists forgotten ones,
        ``expired=True`` the expired ones that ``purge`` has not deleted yet. ``source``,
        ``metadata`` (string values, all must match) and ``author`` narrow it further."""
        flt = _scoped(self._filter(namespace, tags, since, until, author), project, branch)
        flt.only_deleted = deleted
        if expired:
            flt.include_expired = flt.only_expired = True
        if source is not None:
            flt.source = clean_name(source, "source")
        flt.metadata = _clean_meta_filter(metadata)
        limit = clean_limit(limit, maximum=100_000)
        return self.backend.list(flt, limit, clean_offset(offset))

    def _filter(self, namespace: str | Iterable[str] | None, tags: Iterable[str] | str | None,
                since: TimeLike, until: TimeLike, author: str | Iterable[str] | None = None) -> Filter:
        authors = [author] if isinstance(author, str) else list(author or ())
        return Filter(
            authors=tuple(dict.fromkeys(clean_name(a, "author", allow_none=False) for a in authors)),  # type: ignore[misc]
            namespaces=clean_namespaces(namespace),
            tags=clean_tags(tags),
            since=parse_time(since, field="since"),
            until=parse_time(until, field="until"),
            now=now(),
        )

    # -- recall ------------------------------------------------------------------------------

    @_call
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
        min_similarity: float | None = None,
        author: str | Iterable[str] | None = None,
    ) -> Hits:
        """Memories most relevant to ``query``, best first.

        ``mode`` is ``hybrid`` (keyword and vector legs fused by score, see
        ``memstore.recall.fuse``), ``keyword`` (full-text bm25 only) or ``semantic`` (cosine
        only). Filters apply to both legs. Each Hit carries the fused score and the per-leg
        evidence. ``project`` is one project or several (``None`` in the list means memories
        with no project; ``project=None`` means every project); ``branch`` keeps one branch's;
        ``author`` one captor's or several (team stores record who captured each memory).
        ``min_similarity`` (default: the ``recall.min_similarity`` setting; unset: none) leaves
        out hits whose cosine to the query is below it; it does not apply in keyword mode, nor
        to a keyword hit whose memory has no vector yet (nothing to measure).
        The result is a list (``Hits``) whose ``notices`` say what the call did on the way.
        """
        query = clean_query(query)
        limit = clean_limit(limit)
        floor = clean_similarity(
            min_similarity if min_similarity is not None else self.settings.get("recall.min_similarity")
        )
        flt = _scoped(self._filter(namespace, tags, since, until, author), project, branch)
        if mode in ("hybrid", "semantic"):
            self._embed_pending_before_recall()
        return run_recall(self.backend, self._embedding, query, limit, flt, mode, min_similarity=floor)

    def _embed_pending_before_recall(self) -> None:
        """Vectors for memories captured with deferred embedding, before a vector search.

        At most ``recall.embed_pending`` of them, newest first, so a backlog (a big
        ``import-git --no-embed``) costs each recall a bounded, small batch instead of a stall;
        the rest stay findable by keyword until a later recall, a hook or ``reindex``."""
        limit = int(self.settings.get("recall.embed_pending"))
        if limit <= 0:
            return
        try:
            self.embed_pending(limit)
        except ModelError as exc:
            from .notices import notify

            notify(f"could not embed pending memories ({exc})")

    @_call
    def embed_pending(self, limit: int | None = None, *, progress: Progress | bool | None = None) -> int:
        """Embed memories stored without a vector (``capture(..., embed=False)``, or the model
        failed at capture), newest first, at most ``limit`` (all when None). Returns how many."""
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise InvalidInputError("limit must be a non-negative integer or None")
        keys = self.backend.needing_vectors("", pending_only=True, limit=limit)
        if not keys:
            return 0
        return self._embedding.embed_keys(self.backend, keys, BATCH_SIZE, progress)

    # -- forget, restore, purge --------------------------------------------------------------

    @_call
    def forget(self, memory_id: str) -> Memory:
        """Tombstone a memory: hidden from recall and list until purged. Returns it."""
        memory_id = clean_id(memory_id)
        with self.backend.write():
            if self.backend.get(memory_id) is None:
                raise NotFoundError(memory_id)
            self.backend.set_forgotten(memory_id, True, format_ts(now()))
        return self.get(memory_id)

    @_call
    def restore(self, memory_id: str) -> Memory:
        """Undo :meth:`forget`: the memory is live again (with a vector, embedded if it lacks
        one). Restoring a memory that is not forgotten changes nothing. Raises ConflictError
        when the same text has been captured again since (``existing_id``)."""
        return self._capture.restore(memory_id)

    @_call
    def purge(self, *, dry_run: bool = False) -> PurgeResult:
        """Delete for good every forgotten memory, every expired one, and the older versions
        of those (a memory's history goes with it) — rows, full-text entries and vectors, so
        the text does not linger in free pages. A forgotten *old* version is removed alone and
        its chain reconnected around it. ``dry_run`` only says what would go."""
        plan = self.backend.purge_plan(now()) if dry_run else self.backend.purge(now())
        return PurgeResult(dry_run, tuple(PurgedMemory(m, reason) for m, reason in plan))

    # -- versions ----------------------------------------------------------------------------

    @_call
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
        if ttl is not None or expires_at is not KEEP:
            expiry: dict[str, Any] = {"expires_at": None if expires_at is KEEP else expires_at, "ttl": ttl}
        else:
            expiry = {}
        return self._capture.update(memory_id, text, tags=tags, metadata=metadata, source=source,
                                    expiry_fields=expiry, redact=redact)

    @_call
    def history(self, memory_id: str) -> list[Memory]:
        """Every version of the memory, oldest first (from any version's id). The current
        one is the version whose ``superseded_by`` is None."""
        versions = self.backend.chain(clean_id(memory_id))
        if not versions:
            raise NotFoundError(memory_id)
        return versions

    # -- export ------------------------------------------------------------------------------

    @_call
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
        from .transfer import export_jsonl

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
        return export_jsonl(self.backend, dest, flt, filters, current_only=current_only,
                            with_vectors=with_vectors)

    # -- maintenance -------------------------------------------------------------------------

    @_call
    def reindex(self, *, force: bool = False, progress: Progress | bool | None = None) -> dict[str, Any]:
        """Embed every memory that lacks a vector from the current model (all with ``force``),
        then rebuild the vector index from the stored vectors."""
        model = self._embedding.model_id
        keys = self.backend.needing_vectors(model, force=force)
        done = self._embedding.embed_keys(
            self.backend, keys, int(self.settings.get("batch_size")), progress
        )
        count = self.backend.rebuild_index(model, self._embedding.dimension)
        return {"embedded": done, "indexed": count, "model": model}

    @_call
    def verify(self, *, repair: bool = False, quick: bool = False) -> VerifyReport:
        """Check the database's integrity (quick_check with ``quick``), the full-text index,
        the tags, the embeddings, their models and any vector index against each other. With
        ``repair``, rebuild what the database can give back, then check again; a database
        failing its integrity check is never modified."""
        return self.backend.verify(model=self._embedding.model_id, dimension=self._embedding.dimension,
                                   quick=quick, repair=repair, embed=self._embedding.embed)

    # -- sync (memstore.sync merges; the backend reads and applies) -------------------------

    @_call
    def sync_snapshot(self) -> tuple[list[tuple[Any, ...]], tuple[Any, ...]]:
        """Every version as a sync row and a change mark (:meth:`Backend.sync_rows`): what a
        sync merges, and what :meth:`apply_sync_state` checks nothing moved since."""
        return self.backend.sync_rows()

    @_call
    def apply_sync_state(self, rows: Sequence[Mapping[str, Any]], purged: Iterable[str], *,
                         expect: tuple[Any, ...], progress: Progress | None = None) -> dict[str, Any]:
        """Bring the store to a merged sync state (:meth:`Backend.apply_sync`): ``rows`` are
        ``SYNC_COLUMNS`` values plus ``_vector`` (checked bytes of this store's model, or
        None); live current rows without a usable vector are embedded first. Returns
        ``embedded``, ``kept_local`` (ids kept superseded by the same text live here) and
        ``mark``, the change mark after the apply."""
        model = self._embedding.model_id
        ready = []
        for r in rows:
            row = dict(r)
            row["content_hash"] = content_hash(row["text"], row["namespace"], row["project"])
            blob = row.pop("_vector", None)
            row["_vector"] = (model, blob) if blob is not None else None
            ready.append(row)
        live = [r for r in ready if not r["deleted"] and r["superseded_by"] is None and r["_vector"] is None]
        have = self.backend.vectors_of([r["id"] for r in live])
        todo = [r for r in live if have.get(r["id"], (None, None))[:2] != (model, r["content_hash"])]
        if todo:
            try:
                matrix = self._embedding.embed([r["text"] for r in todo])
                for r, vector in zip(todo, matrix, strict=True):
                    r["_vector"] = (model, vector.astype("<f4").tobytes())
            except ModelError as exc:
                notify(f"synced without vectors ({exc}); run `memstore reindex` later")
        kept, mark = self.backend.apply_sync(ready, list(purged), expect=expect, progress=progress)
        return {"embedded": len(todo), "kept_local": kept, "mark": mark}

    @_call
    def stats(self) -> dict[str, Any]:
        """Counts, sizes, model and index state."""
        backend = self.backend
        model_id = self._embedding.model_id
        data = backend.counts()
        data["embeddings"] = backend.models()
        data["without_current_vector"] = len(backend.needing_vectors(model_id))
        data["pending_embeddings"] = backend.pending_count()
        data["model"] = self.model_info().to_dict()
        data.update(backend.describe(model_id, self._embedding.dimension))
        index = data.get("index")
        if isinstance(index, dict) and "vectors" in index:
            # the saved index as it is on disk: does it reflect every stored vector already?
            index["stored_vectors"] = data["embeddings"].get(model_id, 0)
            index["up_to_date"] = (index["stored_vectors"] == 0 and not index["vectors"]) or (
                index.get("reflects_op") == index.get("log_head"))
        return data


def _scoped(flt: Filter, project: str | Iterable[str | None] | None, branch: str | None) -> Filter:
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


def _clean_meta_filter(metadata: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    """Metadata equality filters as (key, value) pairs."""
    if metadata is None:
        return ()
    if not isinstance(metadata, Mapping):
        raise InvalidInputError(f"metadata filter must be a mapping, not {type(metadata).__name__}")
    pairs = []
    for key, value in metadata.items():
        if not isinstance(key, str) or not key or '"' in key or "\\" in key:
            raise InvalidInputError(f"metadata filter key {key!r} is not a plain name")
        if not isinstance(value, str):
            raise InvalidInputError(f"metadata filter value for {key!r} must be a string")
        pairs.append((key, value))
    return tuple(pairs)


def open_store(
    path: str | os.PathLike[str] | None = None,
    *,
    embedder: Embedder | None = None,
    model_dir: str | os.PathLike[str] | None = None,
    settings: Settings | None = None,
    pool_size: int | None = None,
) -> MemoryStore:
    """Open (creating if needed) the store in ``path`` (default: the ``home`` setting,
    i.e. $MEMSTORE_HOME, the config file, or the platform data directory); a
    ``postgresql://`` URL (or the ``database_url`` setting) opens a team store.

    ``embedder`` replaces the resolved model (e.g. a deterministic fake in tests);
    ``settings`` replaces the settings loaded from the config file and environment;
    ``pool_size`` keeps that many team-store connections for a long-lived, threaded process."""
    return MemoryStore(path, embedder=embedder, model_dir=model_dir, settings=settings, pool_size=pool_size)


def salvage_export(
    dest: str | os.PathLike[str] | IO[str],
    path: str | os.PathLike[str] | None = None,
    *,
    settings: Settings | None = None,
) -> dict[str, Any]:
    """Write every memory still readable from a damaged store (in ``path``, default the
    ``home`` setting) as an export to ``dest``, without opening the store for use and
    without writing to it. Returns ``{"exported", "unreadable", "cut_links", "database"}``.
    Version links to lost memories are cut (see :mod:`memstore.storage.sqlite.salvage`);
    vectors are left out (an import embeds)."""
    from .storage import salvage
    from .transfer import export_memories

    settings = settings if settings is not None else load_settings()
    home = home_dir(path if path is not None else settings.get("home"))
    database = home / DB_FILENAME
    report = salvage(home)
    filters = {"salvaged_from": str(database), "unreadable_rows": report.unreadable}
    count = export_memories(report.memories, dest, filters)
    return {"exported": count, "unreadable": report.unreadable, "cut_links": report.cut_links,
            "database": str(database)}
