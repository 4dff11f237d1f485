"""MemoryStore: the one orchestrator of capture and recall.

It owns one SQLite connection (the truth), one embedder (resolved lazily) and
one usearch index (a cache it keeps in step with SQLite through the vector
change log). Every public method validates its input first, so bad input
changes nothing.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import date, datetime
from typing import IO, TYPE_CHECKING, Any, Literal

from . import config, db
from .db import Filter, transaction
from .embedder import Embedder, ModelInfo, resolve_embedder
from .errors import (
    InvalidInputError,
    ModelError,
    ModelMismatchError,
    NotFoundError,
    StoreError,
    StoreNotWritableError,
)
from .identity import content_hash, new_id
from .models import CaptureResult, Hit, Memory
from .search import RRF_K, fts_match, keyword_terms, rrf
from .settings import Settings, load_settings
from .timeutil import format_ts, now, parse_time
from .validate import (
    clean_limit,
    clean_metadata,
    clean_name,
    clean_namespaces,
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
#: progress(done, total) callback used by bulk operations
Progress = Callable[[int, int], None]

#: Results each recall leg contributes to fusion (at least ``limit``).
LEG_DEPTH = 50
#: Below this many candidates a filtered vector search is exact over the candidates.
EXACT_FILTER_MAX = 5000
#: Below this many vectors the whole index is searched exactly.
EXACT_INDEX_MAX = 2000
#: Default texts per embedding batch in bulk capture and reindex.
BATCH_SIZE = 256


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
        self._closed = False
        #: one-line notices about repairs done on the way (index rebuilt, …)
        self.notices: list[str] = []

    def _prepare_home(self) -> None:
        try:
            self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreNotWritableError(f"cannot create store directory {self.home}: {exc}") from exc
        if not self.home.is_dir():
            raise StoreError(f"store path {self.home} is not a directory")
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
                if self._index is not None and self._index.position > self._index.saved_position:
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
            self._embedder = resolve_embedder(self._model_dir, self.settings.get("embedder"))
        return self._embedder

    def model_info(self) -> ModelInfo:
        """Which model this store embeds with, where it came from, its dimension."""
        emb = self.embedder
        info = getattr(emb, "info", None)
        if not isinstance(info, ModelInfo):
            return ModelInfo(emb.model_id, emb.dimension, type(emb).__name__, "injected")
        return replace(info, source="injected") if self._embedder_injected else info

    def _embed(self, texts: Sequence[str]) -> np.ndarray:
        import numpy as np

        vectors = np.asarray(self.embedder.embed(list(texts)), dtype=np.float32)
        expected = (len(texts), self.embedder.dimension)
        if vectors.shape != expected:
            raise ModelError(f"embedder returned shape {vectors.shape}, expected {expected}")
        return vectors

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
        redact: bool = True,
    ) -> dict[str, Any]:
        text = clean_text(text)
        meta = clean_metadata(metadata)
        redacted: tuple[str, ...] = ()
        if redact:  # before hashing and embedding: a secret never reaches SQLite, FTS or vectors
            text, meta, redacted = _redact_secrets(text, meta)
        ns = clean_name(namespace, "namespace") or self.settings.get(
            "default_namespace", config.DEFAULT_NAMESPACE
        )
        project = clean_name(project, "project")
        expires = parse_time(expires_at, field="expires_at") if expires_at is not None else None
        stamp = format_ts(now())
        return {
            "id": new_id(),
            "text": text,
            "namespace": ns,
            "tags": json.dumps(list(clean_tags(tags)), ensure_ascii=False),
            "source": clean_name(source, "source"),
            "metadata": json.dumps(meta, ensure_ascii=False),
            "content_hash": content_hash(text, ns, project),
            "project": project,
            "branch": clean_name(branch, "branch"),
            "created_at": stamp,
            "updated_at": stamp,
            "expires_at": format_ts(expires) if expires else None,
            "_redacted": redacted,  # popped before insert
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
        redact: bool | None = None,
    ) -> CaptureResult:
        """Store one memory, embedded, in one transaction, and return it.

        The same text (after whitespace/Unicode normalisation) in the same namespace
        and project returns the existing memory with ``created=False``. Secrets in the
        text and metadata values are replaced by ``[REDACTED:<kind>]`` first (listed in
        ``result.redacted``) unless ``redact=False`` (default: the ``redact`` setting).
        """
        row = self._prepare(
            text, namespace=namespace, tags=tags, metadata=metadata, source=source,
            project=project, branch=branch, expires_at=expires_at, redact=self._redacting(redact),
        )
        redacted = row.pop("_redacted")
        return _with_redactions(self._capture_rows([row])[0], redacted)

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
        redact: bool | None = None,
    ) -> list[CaptureResult]:
        """Store many memories, embedded in batches; one transaction per batch.

        Items are texts or mappings with ``text`` and optionally ``namespace``, ``tags``,
        ``metadata``, ``source``, ``project``, ``branch``, ``expires_at``. Every item is
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
        allowed = {"text", "namespace", "tags", "metadata", "source", "project", "branch", "expires_at"}
        for position, item in enumerate(items):
            try:
                if isinstance(item, (str, bytes)):
                    fields: dict[str, Any] = {"text": item}
                elif isinstance(item, Mapping):
                    unknown = set(item) - allowed
                    if unknown:
                        raise InvalidInputError(f"unknown field(s) {', '.join(sorted(unknown))}")
                    if "text" not in item:
                        raise InvalidInputError("missing field 'text'")
                    fields = dict(item)
                else:
                    raise InvalidInputError(f"expected a string or a mapping, not {type(item).__name__}")
                fields.setdefault("namespace", namespace)
                fields.setdefault("tags", tags)
                rows.append(self._prepare(**fields, redact=redact))
            except InvalidInputError as exc:
                raise InvalidInputError(f"item {position}: {exc}") from None
        redacted = [row.pop("_redacted") for row in rows]
        callback = _progress_callback(progress, len(rows), "capturing")
        results: list[CaptureResult] = []
        try:
            for start in range(0, len(rows), batch_size):
                results.extend(self._capture_rows(rows[start : start + batch_size], sync=False))
                if callback:
                    callback(len(results), len(rows))
        finally:
            if callback is not None and hasattr(callback, "close"):
                callback.close()
            with self._lock:
                if self._index is not None:
                    self._sync_index()
        return [_with_redactions(r, k) for r, k in zip(results, redacted, strict=True)]

    def _capture_rows(self, rows: list[dict[str, Any]], sync: bool = True) -> list[CaptureResult]:
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
            if fresh:
                try:
                    vectors = self._embed([rows[i]["text"] for i in fresh])
                except ModelError as exc:
                    notices = (f"stored without a vector ({exc}); run `memstore reindex` later",)
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
    ) -> list[CaptureResult]:
        """Capture every line of a JSON Lines file: objects with ``text`` (+ optional fields,
        as :meth:`capture_many`) or bare JSON strings. The whole file is checked first."""
        if isinstance(source, (str, os.PathLike)):
            try:
                with open(source, encoding="utf-8") as fh:
                    lines = fh.read().splitlines()
            except UnicodeDecodeError as exc:
                raise InvalidInputError(f"{source} is not valid UTF-8 ({exc.reason})") from None
            except OSError as exc:
                raise InvalidInputError(f"cannot read {source}: {exc.strerror}") from None
        else:
            lines = source.read().splitlines()
        items: list[Any] = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                items.append(json.loads(line))
            except ValueError as exc:
                raise InvalidInputError(f"line {number}: not valid JSON ({exc})") from None
            if not isinstance(items[-1], (str, dict)):
                raise InvalidInputError(f"line {number}: expected an object or a string")
        return self.capture_many(items, namespace=namespace, progress=progress, redact=redact)

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
    ) -> list[Memory]:
        """Memories newest first, filtered like recall. ``deleted=True`` lists forgotten ones."""
        flt = self._filter(namespace, tags, since, until)
        flt.only_deleted = deleted
        limit = clean_limit(limit, maximum=100_000)
        if isinstance(offset, bool) or not isinstance(offset, int) or offset < 0:
            raise InvalidInputError("offset must be a non-negative integer")
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
    ) -> list[Hit]:
        """Memories most relevant to ``query``, best first.

        ``mode`` is ``hybrid`` (keyword and vector legs fused with RRF, k=60),
        ``keyword`` (FTS5 bm25 only) or ``semantic`` (cosine only). Filters apply to
        both legs. Each Hit carries the fused score and the per-leg evidence.
        """
        query = clean_query(query)
        limit = clean_limit(limit)
        if mode not in MODES:
            raise InvalidInputError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        flt = self._filter(namespace, tags, since, until)
        depth = max(limit, LEG_DEPTH)
        with self._lock:
            self._check_open()
            keyword: list[tuple[int, float]] = []
            vector: list[tuple[int, float]] = []
            if mode in ("hybrid", "keyword"):
                keyword = self._keyword_leg(query, flt, depth)
            if mode in ("hybrid", "semantic"):
                vector = self._vector_leg(query, flt, depth, required=mode == "semantic")
            fused = rrf([[s for s, _ in keyword], [s for s, _ in vector]], k=RRF_K)[:limit]
            kw_rank = {s: (r, score) for r, (s, score) in enumerate(keyword, start=1)}
            vec_rank = {s: (r, sim) for r, (s, sim) in enumerate(vector, start=1)}
            memories = db.memories_by_seq(self._conn, [s for s, _ in fused])
        hits = []
        for seq, score in fused:
            if seq not in memories:
                continue
            kw = kw_rank.get(seq)
            vec = vec_rank.get(seq)
            hits.append(
                Hit(
                    memory=memories[seq],
                    score=score,
                    keyword_rank=kw[0] if kw else None,
                    vector_rank=vec[0] if vec else None,
                    similarity=vec[1] if vec else None,
                    bm25=kw[1] if kw else None,
                )
            )
        return hits

    def _keyword_leg(self, query: str, flt: Filter, depth: int) -> list[tuple[int, float]]:
        match = fts_match(keyword_terms(query))
        if match is None:
            return []
        return db.keyword_search(self._conn, match, flt, depth)

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
                return self._exact_over(qvec, candidates, depth)
        exact = len(index) <= EXACT_INDEX_MAX
        count = min(len(index), depth * 2)
        while True:
            found = index.search(qvec, count, exact=exact)
            passing = db.seqs_passing(self._conn, flt, [s for s, _ in found])
            kept = [(s, sim) for s, sim in found if s in passing]
            if len(kept) >= depth or count >= len(index):
                return _by_similarity(kept)[:depth]
            count = min(len(index), count * 4)

    def _query_vector(self, query: str) -> np.ndarray:
        import numpy as np

        vec = np.asarray(self.embedder.embed_query(query), dtype=np.float32)
        if vec.shape != (self.embedder.dimension,):
            raise ModelError(f"embedder returned a query vector of shape {vec.shape}")
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
        sims = matrix @ qvec
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
            index.rebuild(db.live_vectors(conn, index.model_id), head)
            index.saved_position = -1
            return False
        touched, _ = db.changed_seqs(conn, index.position)
        current = dict(db.live_vectors(conn, index.model_id, touched))
        index.apply(touched, current, head)
        return False

    def _save_index(self, *, force: bool = False) -> None:
        index = self._index
        if index is None or not index.loaded:
            return
        try:
            index.save(self._store_id, force=force)
        except (OSError, TimeoutError) as exc:  # a cache: failing to save loses nothing
            self.notices.append(f"could not save the vector index ({exc})")

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

    def purge(self, *, dry_run: bool = False) -> int:
        """Delete forgotten memories for good (rows, FTS entries, vectors). Returns how many
        were (or, with ``dry_run``, would be) deleted."""
        with self._lock:
            self._check_open()
            if dry_run:
                return int(self._conn.execute(
                    "SELECT count(*) FROM memories WHERE deleted = 1"
                ).fetchone()[0])
            with transaction(self._conn):
                cursor = self._conn.execute("DELETE FROM memories WHERE deleted = 1")
                purged = cursor.rowcount
            if self._index is not None:
                self._sync_index()
            return purged

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
            callback = _progress_callback(progress, len(seqs), "embedding")
            done = 0
            try:
                for start in range(0, len(seqs), BATCH_SIZE):
                    batch = db.texts_for(self._conn, seqs[start : start + BATCH_SIZE])
                    vectors = self._embed([text for _, text, _ in batch])
                    with transaction(self._conn):
                        for (seq, _text, chash), vec in zip(batch, vectors, strict=True):
                            db.put_embedding(self._conn, seq, model, chash, vec.astype("<f4").tobytes())
                    done += len(seqs[start : start + BATCH_SIZE])
                    if callback:
                        callback(done, len(seqs))
            finally:
                if callback is not None and hasattr(callback, "close"):
                    callback.close()
            count = self._rebuild_index()
            return {"embedded": done, "indexed": count, "model": model}

    def _rebuild_index(self) -> int:
        """Rebuild the vector index from SQLite and save it over whatever is on disk."""
        model = self.embedder.model_id
        index = self._index or VectorIndex(self.index_dir, model, self.embedder.dimension)
        self._index = index
        self._conn.execute("BEGIN")
        try:
            count = index.rebuild(db.live_vectors(self._conn, model), db.log_head(self._conn))
        finally:
            self._conn.execute("COMMIT")
        index.saved_position = -1
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
            data["model"] = self.model_info().to_dict()
            index = VectorIndex(self.index_dir, model_id, self.embedder.dimension)
            state = index.read_state()
            data["index"] = {
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


def _result(memory: Memory, *, created: bool, notices: tuple[str, ...] = ()) -> CaptureResult:
    fields = {name: getattr(memory, name) for name in Memory.__dataclass_fields__}
    return CaptureResult(**fields, created=created, notices=notices)


def _redact_secrets(text: str, meta: dict[str, Any]) -> tuple[str, dict[str, Any], tuple[str, ...]]:
    from .redact import redact_fields

    return redact_fields(text, meta)


def _with_redactions(result: CaptureResult, kinds: tuple[str, ...]) -> CaptureResult:
    if not kinds:
        return result
    from .redact import notice

    return replace(result, redacted=kinds, notices=(*result.notices, notice(kinds)))


def _by_similarity(found: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Best first; equal similarities (to float32 precision) in insertion order, so results
    do not depend on how the index happened to be built."""
    return sorted(found, key=lambda item: (-round(item[1], 5), item[0]))


def _clean_id(memory_id: Any) -> str:
    if not isinstance(memory_id, str) or not memory_id.strip():
        raise InvalidInputError("memory id must be a non-empty string")
    return memory_id.strip()


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

