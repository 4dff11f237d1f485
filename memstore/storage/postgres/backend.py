"""The team store: the backend contract (``storage.base``) over PostgreSQL + pgvector.

The statements live in ``sql.py``; this class composes them into the contract's operations
and owns the sessions. ``write()`` is one transaction (READ COMMITTED, so a statement sees
what other writers committed: ON CONFLICT and the advisory locks decide races); ``read()``
is one REPEATABLE READ snapshot. Both bind a connection to the calling thread, so nested
calls join them; a pool (``pool_size``) serves processes that keep the store open and share
it between threads. Keys are ``seq`` values and never leave the backend.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ...errors import ModelMismatchError, ModelMismatchWarning, StoreChangedError, StoreError
from ...models import Memory, VerifyReport
from ..base import EmbedJob, Filter, Key, NewMemory, StateOutcome
from ..urls import redact_url
from . import sql
from .connection import ConnectionSource, errors_mapped, open_source
from .schema import SCHEMA_VERSION, ensure_schema

if TYPE_CHECKING:
    import numpy as np
    import psycopg

__all__ = ["PostgresBackend"]

#: Rows read per round trip when exporting.
EXPORT_CHUNK = 500


class PostgresBackend:
    """One team store: a PostgreSQL database (or schema) holding memstore's tables.

    ``dimension`` sizes the ``vector(d)`` column when the schema is first created;
    ``author`` is recorded on every memory this backend inserts; ``pool_size`` keeps a
    connection pool instead of one connection."""

    kind = "postgres"
    #: insert() itself returns the live memory that already has a row's text (ON CONFLICT on
    #: the unique index), so a writer need not look it up again first.
    resolves_duplicates = True

    def __init__(self, url: str, *, dimension: int = 384, author: str | None = None,
                 pool_size: int | None = None) -> None:
        self.url = url
        self.location = redact_url(url)
        self.author = author
        self._local = threading.local()
        self._stats = sql.CorpusStats()
        self._ranking: Any = None  # keyword_ranking.KeywordRanking, made on the first keyword search
        self._keyword_searches = 0
        self._closed = False
        self._warned: set[str] = set()
        self._models_checked: dict[str, float] = {}
        self._source: ConnectionSource = open_source(url, pool_size=pool_size)
        try:
            with self._source.connection() as conn, errors_mapped(url):
                ensure_schema(conn, dimension, self.location)
                meta = dict(conn.execute("SELECT key, value FROM memstore_meta").fetchall())
                self.store_id = str(meta["store_id"])
                self.dimension = int(meta["dimension"])
                row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
                version = tuple(int(p) for p in str(row[0]).split(".")[:2]) if row else (0, 0)
                self.pgvector_version = version
            self._source.ready()
        except BaseException:
            self._source.close()
            raise

    # -- sessions ----------------------------------------------------------------------------

    @contextmanager
    def _op(self) -> Iterator[psycopg.Connection]:
        """The thread's session connection, or one for this operation alone (autocommit)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            with errors_mapped(self.url):
                yield conn
            return
        if self._closed:
            raise StoreError("the store is closed")
        with self._source.connection() as conn, errors_mapped(self.url):
            yield conn

    @contextmanager
    def _session(self, *, snapshot: bool) -> Iterator[psycopg.Connection]:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            if snapshot or not getattr(self._local, "snapshot", False):
                yield conn
                return
            raise StoreError("cannot write inside a read snapshot")  # a programming error
        if self._closed:
            raise StoreError("the store is closed")
        with self._source.connection() as conn, errors_mapped(self.url), conn.transaction():
            if snapshot:
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            self._local.conn, self._local.snapshot = conn, snapshot
            try:
                yield conn
            finally:
                self._local.conn = None
                self._local.snapshot = False

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._session(snapshot=False):
            yield

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._session(snapshot=True):
            yield

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._source.close()

    def lock_scope(self, namespace: str, project: str | None) -> None:
        """Serialise near-duplicate decisions in one scope until the write transaction ends."""
        with self._op() as conn:
            sql.lock_scope(conn, namespace, project)

    # -- memories ----------------------------------------------------------------------------

    def _put(self, conn: psycopg.Connection, seq: int, model: str, chash: str, vector: bytes,
             *, reindexing: bool = False) -> None:
        """Store one vector. A vector of another size re-types the column: when the store has
        no vectors yet, or during a reindex (the old model's vectors are dropped: they cannot
        be compared with the new ones; the memories wait in the queue until re-embedded)."""
        size = len(vector) // 4
        if size != self.dimension:
            if reindexing:
                conn.execute("DELETE FROM embeddings WHERE vector_dims(vector) <> %s", (size,))
            sql.set_dimension(conn, self.dimension, size)  # refuses while other vectors exist
            self.dimension = size
        sql.put_embedding(conn, seq, model, chash, vector, self.dimension)

    def _values(self, row: NewMemory) -> dict[str, Any]:
        values = {f.name: getattr(row, f.name) for f in dataclasses.fields(row)}
        if values.get("author") is None and self.author is not None:
            values["author"] = self.author
        return values

    def insert(self, row: NewMemory, vector: tuple[str, bytes] | None = None) -> Memory:
        """Store a new version; when a live memory already has its content hash (another
        writer got there first), that memory is returned instead and nothing is written."""
        with self.write(), self._op() as conn:
            inserted = sql.insert_memory_returning(conn, self._values(row))
            if inserted is None:
                existing = sql.find_live_by_hash(conn, row.content_hash)
                if existing is None:  # the other writer's row is gone again: a real conflict
                    raise StoreError(f"memory {row.id} could not be stored (its text was being changed "
                                     "concurrently); run the command again")
                return existing
            seq, memory = inserted
            if vector is not None:
                self._put(conn, seq, vector[0], row.content_hash, vector[1])
        return memory

    def get(self, memory_id: str) -> Memory | None:
        with self._op() as conn:
            found = sql.get_memory(conn, memory_id)
        return found[1] if found else None

    def get_many(self, ids: Sequence[str]) -> dict[str, Memory]:
        with self._op() as conn:
            return {mid: m for mid, (_, m) in sql.memories_by_id(conn, list(ids)).items()}

    def find_live(self, content_hash: str, *, except_id: str | None = None) -> Memory | None:
        with self._op() as conn:
            return sql.find_live_by_hash(conn, content_hash, except_id=except_id)

    def list(self, flt: Filter, limit: int, offset: int = 0) -> list[Memory]:
        with self._op() as conn:
            return sql.list_memories(conn, flt, limit, offset)

    def export_keys(self, flt: Filter | None, *, with_history: bool) -> list[Key]:
        with self._op() as conn:
            if flt is not None and not with_history:
                return sorted(sql.filtered_seqs(conn, flt, 1 << 62))
            return list(sql.export_seqs(conn, flt))

    def export_rows(self, keys: Sequence[Key], *, with_vectors: bool
                    ) -> Iterator[tuple[Memory, tuple[str, bytes] | None]]:
        keys = list(keys)
        for start in range(0, len(keys), EXPORT_CHUNK):
            chunk = [int(k) for k in keys[start:start + EXPORT_CHUNK]]  # type: ignore[call-overload]
            with self._op() as conn:
                memories = sql.memories_by_seq(conn, chunk)
                vectors = sql.embeddings_for(conn, chunk) if with_vectors else {}
            for seq in chunk:
                yield memories[seq], vectors.get(seq)

    def supersede(self, old_id: str, row: NewMemory, vector: tuple[str, bytes] | None) -> Memory:
        with self.write(), self._op() as conn:
            found = sql.get_memory(conn, old_id)
            if found is None:
                raise StoreError(f"memory {old_id} vanished during the update")
            sql.set_state(conn, found[0], superseded_by=row.id, updated_at=row.updated_at)
            return self.insert(row, vector)

    def set_forgotten(self, memory_id: str, forgotten: bool, stamp: str,
                      vector: tuple[str, bytes] | None = None) -> bool:
        with self.write(), self._op() as conn:
            found = sql.get_memory(conn, memory_id)
            if found is None or found[1].deleted == forgotten:
                return False
            if forgotten:
                sql.set_state(conn, found[0], deleted=True, deleted_at=stamp, updated_at=stamp)
            else:
                sql.set_state(conn, found[0], deleted=False, deleted_at=None, updated_at=stamp)
                if vector is not None:
                    self._put(conn, found[0], vector[0], found[1].content_hash, vector[1])
            return True

    def chain(self, memory_id: str) -> list[Memory]:
        with self._op() as conn:
            return [m for _, m in sql.chain(conn, memory_id)]

    def purge_plan(self, now: datetime) -> list[tuple[Memory, str]]:
        with self._op() as conn:
            return [(m, reason) for _, m, reason in sql.purge_candidates(conn, now)]

    def purge(self, now: datetime) -> list[tuple[Memory, str]]:
        """Delete the plan in one transaction, then VACUUM the tables so the dead rows (and
        their index entries) are removed from the data files, not just hidden."""
        with self.write(), self._op() as conn:
            plan = sql.purge_candidates(conn, now)
            sql.delete_memories(conn, [seq for seq, _, _ in plan])
        if plan and getattr(self._local, "conn", None) is None:
            self._vacuum()
        return [(m, reason) for _, m, reason in plan]

    def _vacuum(self) -> None:
        from psycopg import errors as pgerr

        with self._op() as conn:
            for table in ("memories", "embeddings", "pending_embeddings"):
                try:
                    conn.execute(f"VACUUM {table}")  # table: a fixed name
                except pgerr.InsufficientPrivilege:  # only the owner may: the rows are deleted
                    return

    def apply_state(self, memory_id: str, values: dict[str, Any]) -> StateOutcome:
        with self.write(), self._op() as conn:
            found = sql.get_memory(conn, memory_id)
            if found is None:
                raise StoreError(f"memory {memory_id} vanished during the import")
            return sql.apply_newer_state(conn, found[0], values)  # type: ignore[return-value]

    def insert_exported(self, values: dict[str, Any], vector: tuple[str, bytes] | None) -> None:
        columns = {k: v for k, v in values.items() if k in _COLUMNS}
        with self.write(), self._op() as conn:
            seq = sql.insert_memory(conn, columns)
            if seq is None:
                raise StoreError(f"memory {values.get('id')} duplicates a live memory; not imported")
            if vector is not None:
                self._put(conn, seq, vector[0], columns["content_hash"], vector[1])

    # -- sync --------------------------------------------------------------------------------

    def sync_rows(self) -> tuple[list[tuple[Any, ...]], tuple[Any, ...]]:
        with self.read(), self._op() as conn:
            return sql.sync_rows(conn), sql.change_mark(conn)

    def apply_sync(self, rows: Sequence[dict[str, Any]], purged: Sequence[str], *,
                   expect: tuple[Any, ...], progress: Any = None) -> tuple[list[str], tuple[Any, ...]]:
        """One transaction. The mark is checked first (nothing done when it moved) and again
        at the end with the counter locked, so a write committed meanwhile (perhaps to a row
        written here) rolls everything back; a concurrent write of the same text, or a
        deadlock with a concurrent writer, also rolls back as StoreChangedError (sync redoes)."""
        from psycopg import errors as pgerr

        kept: list[str] = []
        outer = getattr(self._local, "conn", None) is not None
        with self.write(), self._op() as conn:
            try:  # (inside: errors_mapped would turn these into a plain StoreError)
                if sql.change_mark(conn) != tuple(expect):
                    raise StoreChangedError("the store changed while syncing")
                doomed = sql.memories_by_id(conn, list(purged))
                sql.delete_memories(conn, [seq for seq, _ in doomed.values()])
                stored = sql.memories_by_id(conn, [r["id"] for r in rows])
                ordered = sorted(rows, key=lambda r: not (r["deleted"] or r["superseded_by"]))
                for n, row in enumerate(ordered, start=1):
                    found = stored.get(row["id"])
                    seq, clashed = sql.apply_sync_row(conn, row, found[0] if found else None)
                    if clashed:
                        kept.append(row["id"])
                    vector = row.get("_vector")
                    if vector is not None:
                        self._put(conn, seq, vector[0], row["content_hash"], vector[1])
                    if progress is not None and (n % 500 == 0 or n == len(ordered)):
                        progress(n, len(ordered))
                if sql.change_mark(conn, lock=True) != tuple(expect):
                    raise StoreChangedError("the store changed while syncing")
                mark = sql.bump_changes(conn)
            except (pgerr.UniqueViolation, pgerr.DeadlockDetected, pgerr.SerializationFailure):
                raise StoreChangedError("the store changed while syncing") from None
        if doomed and not outer:
            self._vacuum()
        return kept, mark

    # -- vectors -----------------------------------------------------------------------------

    def put_vectors(self, model: str, items: Sequence[tuple[Key, str, bytes]]) -> None:
        with self.write(), self._op() as conn:
            for seq, chash, vector in items:
                self._put(conn, int(seq), model, chash, vector, reindexing=True)  # type: ignore[call-overload]

    def vectors_of(self, ids: Sequence[str]) -> dict[str, tuple[str, str, bytes]]:
        with self._op() as conn:
            rows = conn.execute(
                "SELECT m.id, e.model, e.content_hash, e.vector FROM embeddings e "
                "JOIN memories m ON m.seq = e.seq WHERE m.id = ANY(%s)", (list(ids),)
            ).fetchall()
        return {r[0]: (r[1], r[2], sql._vector_bytes(r[3])) for r in rows}

    def needing_vectors(self, model: str, *, pending_only: bool = False, force: bool = False,
                        limit: int | None = None) -> list[Key]:
        with self._op() as conn:
            if pending_only:
                return list(sql.pending_seqs(conn, limit))
            if force:
                return [int(r[0]) for r in conn.execute(
                    "SELECT seq FROM memories WHERE NOT deleted AND superseded_by IS NULL ORDER BY seq")]
            return list(sql.seqs_needing_embedding(conn, model))

    def embed_jobs(self, keys: Sequence[Key]) -> list[EmbedJob]:
        with self._op() as conn:
            return [EmbedJob(seq, text, chash) for seq, text, chash in sql.texts_for(conn, list(keys))]  # type: ignore[arg-type]

    def models(self) -> dict[str, int]:
        with self._op() as conn:
            return sql.embedding_models(conn)

    def pending_count(self) -> int:
        with self._op() as conn:
            return sql.pending_count(conn)

    # -- recall legs -------------------------------------------------------------------------

    def keyword_leg(self, query: str) -> _KeywordLegType:
        from .keyword import KeywordLeg

        return KeywordLeg(self._op, self._stats, query, self._keyword_ranking)

    def _keyword_ranking(self, conn: psycopg.Connection) -> Any:
        """The in-process BM25 ranking (keyword_ranking.py): built at this backend's
        BUILD_AFTER-th keyword search when the store holds at most MAX_MEMORIES live
        memories; None while SQL ranks."""
        from psycopg.errors import InsufficientPrivilege

        from .keyword_ranking import BUILD_AFTER, MAX_MEMORIES, KeywordRanking

        if self._ranking is None:
            self._ranking = KeywordRanking()
        if self._ranking.disabled:
            return None
        if self._ranking.ready:
            return self._ranking
        self._keyword_searches += 1
        if self._keyword_searches < BUILD_AFTER or self._stats.get(conn)[0] > MAX_MEMORIES:
            return None
        try:
            self._ranking.build(conn)
        except InsufficientPrivilege:  # a role granted before schema step 3: SQL ranks
            self._ranking.disabled = True
            return None
        return self._ranking

    def vector_search(self, query: np.ndarray, flt: Filter, depth: int, *, model: str,
                      required: bool = False) -> list[tuple[Key, float]]:
        with self._op() as conn:
            if model not in self._warned and time.monotonic() > self._models_checked.get(model, -1e9) + 30:
                self._models_checked[model] = time.monotonic()  # a probe every 30 s at most
                if sql.has_other_models(conn, model):
                    self._warn_other_models(conn, model)
            found = sql.vector_search(conn, query, model, flt, depth,
                                      iterative=self.pgvector_version >= (0, 8))
            if not found and required:
                models = sql.embedding_models(conn)
                if models and model not in models:
                    raise ModelMismatchError(
                        f"no memory has a vector from the current model {model}; run `memstore reindex`"
                    )
            return found  # type: ignore[return-value]

    def _warn_other_models(self, conn: psycopg.Connection, model: str) -> None:
        self._warned.add(model)
        others = {m: n for m, n in sql.embedding_models(conn).items() if m != model}
        if others:
            warnings.warn(
                f"memstore: {sum(others.values())} memories have vectors from another model "
                f"({', '.join(sorted(others))}); they are found by keyword only until you run "
                "`memstore reindex`",
                ModelMismatchWarning,
                stacklevel=5,
            )

    def similarities(self, query: np.ndarray, keys: Sequence[Key], *, model: str) -> dict[Key, float]:
        if not keys:
            return {}
        with self._op() as conn:
            anything = Filter(include_deleted=True, include_superseded=True, include_expired=True)
            found = sql.vector_search(conn, query, model, anything, len(keys), seqs=list(keys))  # type: ignore[arg-type]
        return dict(found)

    def nearest(self, vector: np.ndarray, flt: Filter, count: int, *, model: str
                ) -> list[tuple[Memory, float]]:
        with self._op() as conn:
            found = sql.vector_search(conn, vector, model, flt, count,
                                      iterative=self.pgvector_version >= (0, 8))
            memories = sql.memories_by_seq(conn, [seq for seq, _ in found])
        return [(memories[seq], sim) for seq, sim in found if seq in memories]

    def memories_for(self, keys: Sequence[Key]) -> dict[Key, Memory]:
        with self._op() as conn:
            return sql.memories_by_seq(conn, list(keys))  # type: ignore[arg-type,return-value]

    # -- maintenance -------------------------------------------------------------------------

    def counts(self) -> dict[str, Any]:
        with self._op() as conn:
            return sql.counts(conn)

    def describe(self, model: str, dimension: int) -> dict[str, Any]:
        with self._op() as conn:
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
            vectors = conn.execute("SELECT count(*) FROM embeddings WHERE model = %s", (model,)).fetchone()[0]
            server = conn.execute("SHOW server_version").fetchone()[0]
            index_bytes = conn.execute("SELECT coalesce(pg_relation_size(to_regclass('embeddings_hnsw')), 0)"
                                       ).fetchone()[0]
        return {
            "index": {"kind": "hnsw (pgvector)", "vectors": int(vectors), "dimension": self.dimension,
                      "bytes": int(index_bytes)},
            "database": self.location,
            "database_bytes": int(size),
            "server_version": str(server),
            "pgvector_version": ".".join(map(str, self.pgvector_version)),
            "schema_version": SCHEMA_VERSION,
        }

    def rebuild_index(self, model: str, dimension: int) -> int:
        """The HNSW index is PostgreSQL's own and always current: nothing to rebuild."""
        with self._op() as conn:
            row = conn.execute("SELECT count(*) FROM embeddings WHERE model = %s", (model,)).fetchone()
        return int(row[0])

    def verify(self, *, model: str, dimension: int, quick: bool, repair: bool, embed: Any) -> VerifyReport:
        from . import verify as checks

        with self._op() as conn:
            found = checks.run_checks(conn, model=model, dimension=self.dimension, quick=quick)
            report = VerifyReport(found)
            if not repair or report.ok:
                return report
            done = checks.repair(conn, found, model=model, embed=embed, dimension=self.dimension)
            return VerifyReport(checks.run_checks(conn, model=model, dimension=self.dimension, quick=quick),
                                done, found)


_COLUMNS = frozenset(c.strip() for c in sql.MEMORY_COLUMNS.split(",")) - {"seq"}
_KeywordLegType = Any  # the leg class lives in .keyword (imported when a recall needs it)

