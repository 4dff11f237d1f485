"""The embedded default backend: one SQLite file (the truth) plus the vector index cache.

One connection per store, guarded by a lock (one instance may be shared between threads);
several processes may open the same directory: writes are ``BEGIN IMMEDIATE`` transactions
queued on the busy timeout, and the vector cache catches up from the change log. Every
public method maps sqlite3 errors to memstore errors (:func:`db.mapped_errors`).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import ModelMismatchError, StoreError, StoreNotWritableError
from ...models import Memory, VerifyReport
from ...notices import notify
from ...settings import DB_FILENAME
from ...timeutil import format_ts
from ..base import SYNC_COLUMNS, EmbedJob, Filter, Key, KeywordMatch, NewMemory, StateOutcome
from . import db
from .db import transaction
from .guard import Guard
from .keyword import KeywordLeg as _SQLiteKeywordLeg
from .keyword_index import KeywordIndex, fts_totals
from .vector_cache import VectorCache

if TYPE_CHECKING:
    import numpy as np

__all__ = ["DB_FILENAME", "EXACT_FILTER_MAX", "KEYWORD_INDEX_MIN", "SQLiteBackend"]

#: Below this many candidates a filtered vector search is exact over the candidates.
EXACT_FILTER_MAX = 5000
#: From this many rows in the word index on, the keyword leg ranks with the derived keyword
#: index (below it FTS5's bm25 costs a millisecond or two: not worth a cache file).
KEYWORD_INDEX_MIN = 2000


class SQLiteBackend:
    """A store in one directory: ``memstore.db`` plus the ``index/`` cache."""

    #: insert() stores what it is given; the caller looks a text up under the write lock.
    resolves_duplicates = False

    def __init__(self, home: Path, *, keyword_index_min: int = KEYWORD_INDEX_MIN) -> None:
        self.home = Path(home)
        self.keyword_index_min = keyword_index_min
        self._keywords: KeywordIndex | None = None
        self._keywords_off = False
        #: notices of opening (a loose home made private), for the facade to pass on
        self.open_notices: list[str] = []
        writable = _prepare_home(self.home, self.open_notices)
        self.db_path = self.home / DB_FILENAME
        self.index_dir = self.home / "index"
        self.location = str(self.home)
        self._lock = threading.RLock()
        with db.mapped_errors(self.db_path):
            self._conn = db.connect(self.db_path, readonly=not writable)
            self.store_id = db.store_id(self._conn)
            self._conn.guard = Guard(self.db_path, self.store_id)
            lost = self._conn.guard.check_on_open(self._conn)
        if lost:
            self.open_notices.append(lost)
        self._cache = VectorCache(self._conn, self.store_id, self.index_dir)
        self._writing = False
        self._closed = False

    # -- sessions ----------------------------------------------------------------------------

    @contextmanager
    def _op(self) -> Iterator[Any]:
        with self._lock, db.mapped_errors(self.db_path, self._conn):
            if self._closed:
                raise StoreError("the store is closed")
            yield self._conn

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._op() as conn:
            if self._writing:
                yield
                return
            with transaction(conn):
                self._writing = True
                try:
                    yield
                finally:
                    self._writing = False
            self._cache.sync_if_loaded()

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._op() as conn, db.snapshot(conn):
            yield

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                with db.mapped_errors(self.db_path, self._conn):
                    self._cache.save_if_moved()
                    if self._keywords is not None:
                        self._keywords.save_if_moved(self.store_id)
            finally:
                self._conn.close()
                self._closed = True

    # -- memories ----------------------------------------------------------------------------

    def insert(self, row: NewMemory, vector: tuple[str, bytes] | None = None) -> Memory:
        with self.write():
            seq = db.insert_memory(self._conn, db.row_values(row))
            if vector is not None:
                db.put_embedding(self._conn, seq, vector[0], row.content_hash, vector[1])
            found = db.get_memory(self._conn, row.id)
        assert found is not None
        return found[1]

    def get(self, memory_id: str) -> Memory | None:
        with self._op() as conn:
            found = db.get_memory(conn, memory_id)
        return found[1] if found else None

    def get_many(self, ids: Sequence[str]) -> dict[str, Memory]:
        with self._op() as conn:
            return {mid: m for mid, (_, m) in db.memories_by_id(conn, list(ids)).items()}

    def find_live(self, content_hash: str, *, except_id: str | None = None) -> Memory | None:
        with self._op() as conn:
            if except_id is None:
                return db.find_live_by_hash(conn, content_hash)
            return db.find_live_by_hash_except(conn, content_hash, except_id)

    def list(self, flt: Filter, limit: int, offset: int = 0) -> list[Memory]:
        with self._op() as conn:
            return db.list_memories(conn, flt, limit, offset)

    def export_keys(self, flt: Filter | None, *, with_history: bool) -> list[Key]:
        """Keys to export, oldest first: every memory (``flt`` None), those passing ``flt``
        plus (``with_history``) every version linked to them."""
        with self._op() as conn:
            if flt is not None and not with_history:
                return sorted(db.filtered_seqs(conn, flt, 1 << 62))
            return list(db.export_seqs(conn, flt))

    def export_rows(self, keys: Sequence[Key], *, with_vectors: bool
                    ) -> Iterator[tuple[Memory, tuple[str, bytes] | None]]:
        for chunk in db.chunks(list(keys)):
            with self._op() as conn:
                memories = db.memories_by_seq(conn, chunk)
                vectors = db.embeddings_for(conn, chunk) if with_vectors else {}
            for seq in chunk:
                yield memories[seq], vectors.get(seq)

    def supersede(self, old_id: str, row: NewMemory, vector: tuple[str, bytes] | None) -> Memory:
        with self.write():
            found = db.get_memory(self._conn, old_id)
            if found is None:
                raise StoreError(f"memory {old_id} vanished during the update")
            db.mark_superseded(self._conn, found[0], row.id, row.updated_at)
            return self.insert(row, vector)

    def set_forgotten(self, memory_id: str, forgotten: bool, stamp: str,
                      vector: tuple[str, bytes] | None = None) -> bool:
        with self.write():
            found = db.get_memory(self._conn, memory_id)
            if found is None:
                return False
            changed = db.set_forgotten(self._conn, found[0], forgotten, stamp)
            if changed and vector is not None:
                db.put_embedding(self._conn, found[0], vector[0], found[1].content_hash, vector[1])
            return changed

    def chain(self, memory_id: str) -> list[Memory]:
        with self._op() as conn:
            return [m for _, m in db.chain(conn, memory_id)]

    def purge_plan(self, now: datetime) -> list[tuple[Memory, str]]:
        with self._op() as conn:
            return [(m, reason) for _, m, reason in db.purge_candidates(conn, now)]

    def purge(self, now: datetime) -> list[tuple[Memory, str]]:
        """Delete what :meth:`purge_plan` lists, in one transaction, with secure delete."""
        with self._op() as conn, db.secure_delete(conn), self.write():
            plan = db.purge_candidates(conn, now)
            db.delete_memories(conn, [seq for seq, _, _ in plan])
            if plan:
                db.compact_text_index(conn)
        return [(m, reason) for _, m, reason in plan]

    def apply_state(self, memory_id: str, values: dict[str, Any]) -> StateOutcome:
        with self.write():
            seq = db.seqs_of(self._conn, [memory_id]).get(memory_id)
            if seq is None:
                raise StoreError(f"memory {memory_id} vanished during the import")
            return db.apply_newer_state(self._conn, seq, values)  # type: ignore[return-value]

    def insert_exported(self, values: dict[str, Any], vector: tuple[str, bytes] | None) -> None:
        """Insert an export record's row as it was (ids, links, state) with its vector."""
        with self.write():
            seq = db.insert_memory(self._conn, values)
            if vector is not None:
                db.put_embedding(self._conn, seq, vector[0], values["content_hash"], vector[1])

    # -- sync --------------------------------------------------------------------------------

    def sync_rows(self) -> tuple[list[tuple[Any, ...]], tuple[Any, ...]]:
        with self.read(), self._op() as conn:
            mark = db.change_mark(conn)
            rows = conn.execute(
                f"SELECT {', '.join('m.' + c for c in SYNC_COLUMNS)}, e.model, e.vector "
                "FROM memories m LEFT JOIN embeddings e ON e.seq = m.seq "
                "AND m.deleted = 0 AND m.superseded_by IS NULL ORDER BY m.seq"
            ).fetchall()
        return rows, mark

    def apply_sync(self, rows: Sequence[dict[str, Any]], purged: Sequence[str], *,
                   expect: tuple[Any, ...], progress: Any = None) -> tuple[list[str], tuple[Any, ...]]:
        from ...errors import StoreChangedError

        kept: list[str] = []
        with self._op() as conn, db.secure_delete(conn), self.write():
            if db.change_mark(conn) != expect:
                raise StoreChangedError("the store changed while syncing")
            doomed = db.memories_by_id(conn, list(purged))
            db.delete_memories(conn, [seq for seq, _ in doomed.values()])
            stored = db.memories_by_id(conn, [r["id"] for r in rows])
            ordered = sorted(rows, key=lambda r: not (r["deleted"] or r["superseded_by"]))
            for n, row in enumerate(ordered, start=1):
                found = stored.get(row["id"])
                if db.apply_sync_row(conn, row, found[0] if found else None):
                    kept.append(row["id"])
                if progress is not None and (n % 500 == 0 or n == len(ordered)):
                    progress(n, len(ordered))
            if doomed:
                db.compact_text_index(conn)
            mark = db.change_mark(conn)
        return kept, mark

    # -- vectors -----------------------------------------------------------------------------

    def put_vectors(self, model: str, items: Sequence[tuple[Key, str, bytes]]) -> None:
        with self.write():
            for seq, chash, vector in items:
                db.put_embedding(self._conn, int(seq), model, chash, vector)  # type: ignore[call-overload]

    def vectors_of(self, ids: Sequence[str]) -> dict[str, tuple[str, str, bytes]]:
        with self._op() as conn:
            return db.embeddings_by_id(conn, list(ids))

    def needing_vectors(self, model: str, *, pending_only: bool = False, force: bool = False,
                        limit: int | None = None) -> list[Key]:
        with self._op() as conn:
            if pending_only:
                return list(db.pending_seqs(conn, limit))
            if force:
                return list(db.live_seqs(conn))
            return list(db.seqs_needing_embedding(conn, model))

    def embed_jobs(self, keys: Sequence[Key]) -> list[EmbedJob]:
        with self._op() as conn:
            return [EmbedJob(seq, text, chash) for seq, text, chash in db.texts_for(conn, list(keys))]

    def models(self) -> dict[str, int]:
        with self._op() as conn:
            return db.embedding_models(conn)

    def pending_count(self) -> int:
        with self._op() as conn:
            return db.pending_count(conn)

    # -- recall legs -------------------------------------------------------------------------

    def keyword_leg(self, query: str) -> _LockedKeywordLeg:
        with self._op():
            words = self._derived_keywords()
        return _LockedKeywordLeg(self, _SQLiteKeywordLeg(self._conn, query, words))

    def _passing(self, flt: Filter, seqs: Sequence[int]) -> set[int]:
        """The seqs passing ``flt``: from the keyword index's live state when it holds it and
        ``flt`` is the default (no SQL), else from SQLite."""
        words = self._keywords
        if words is not None and words.filters_live and flt.is_default():
            notice = words.sync(self._conn, self.store_id)  # (one statement when nothing changed)
            if notice:
                notify(notice)
            if words.filters_live:
                return words.passing(seqs, format_ts(flt.now))  # type: ignore[arg-type]
        return db.seqs_passing(self._conn, flt, seqs)

    def _derived_keywords(self) -> KeywordIndex | None:
        """The derived keyword index, caught up, where it pays: a word index of
        ``keyword_index_min`` rows or more, in a process that holds the index already or has
        numpy loaded (a one-shot keyword-only recall ranks faster with FTS5 than it imports
        numpy). None: FTS5 ranks."""
        words = self._keywords
        if words is None:
            if self._keywords_off or "numpy" not in sys.modules:
                return None
            if fts_totals(self._conn)[0] < self.keyword_index_min:
                return None
            words = self._keywords = KeywordIndex(self.index_dir)
        notice = words.sync(self._conn, self.store_id)
        if notice:
            notify(notice)
        if not words.loaded:  # cannot be derived here (see the notice): FTS5 from now on
            self._keywords, self._keywords_off = None, True
            return None
        return words

    def _rebuild_keywords(self) -> int | None:
        """Rebuild and save the keyword index (where one is used or saved); its row count."""
        words = KeywordIndex(self.index_dir)
        if self._keywords is None and not words.meta_path.exists() and (
            fts_totals(self._conn)[0] < self.keyword_index_min
        ):
            return None
        words.delete_files()
        notice = words.sync(self._conn, self.store_id)
        if notice or not words.loaded:
            notify(notice or "could not build the keyword index")
            return None
        self._keywords, self._keywords_off = words, False
        return words.docs

    def _sane(self, index: Any, model: str, dimension: int, search: Any) -> Any:
        """Run ``search(index)``; if the index answered a cosine outside [-1, 1] (vectors are
        unit length, so its file is damaged), rebuild it from SQLite with a notice and run the
        search again on the rebuilt one."""
        found = search(index)
        if not index.out_of_range:
            return found
        notify("the vector index returned impossible similarities (damaged); rebuilt it from the database")
        self._cache.rebuild(model, dimension)
        return search(self._cache.index)

    def vector_search(self, query: np.ndarray, flt: Filter, depth: int, *, model: str,
                      required: bool = False) -> list[tuple[Key, float]]:
        with self._op():
            index = self._cache.synced(model, int(query.shape[0]))
            return self._sane(index, model, int(query.shape[0]),
                              lambda idx: self._vector_search(idx, query, flt, depth, model, required))

    def _vector_search(self, index: Any, query: np.ndarray, flt: Filter, depth: int, model: str,
                       required: bool) -> list[tuple[Key, float]]:
        conn = self._conn
        if len(index) == 0:
            # (Another process may have added vectors since the index synced: only vectors of
            # other models and none of ours mean a model mismatch.)
            models = db.embedding_models(conn)
            if required and models and model not in models:
                raise ModelMismatchError(
                    f"no memory has a vector from the current model {model}; run `memstore reindex`"
                )
            return []
        if flt.is_selective():
            candidates = db.filtered_seqs(conn, flt, EXACT_FILTER_MAX)
            if len(candidates) <= EXACT_FILTER_MAX:
                return _by_similarity(index.search(query, depth * 2, among=candidates))[:depth]
        from .vector_cache import EXACT_INDEX_MAX

        exact = len(index) <= EXACT_INDEX_MAX
        count = min(len(index), depth * 2)
        while True:
            # Asked for every vector, search exactly: as cheap, and HNSW may miss some.
            found = index.search(query, count, exact=exact or count >= len(index))
            passing = self._passing(flt, [s for s, _ in found])
            kept = [(s, sim) for s, sim in found if s in passing]
            if len(kept) >= depth or count >= len(index):
                return _by_similarity(kept)[:depth]  # type: ignore[return-value]
            count = min(len(index), count * 4)

    def similarities(self, query: np.ndarray, keys: Sequence[Key], *, model: str) -> dict[Key, float]:
        with self._op():
            index = self._cache.index
            if index is None or index.model_id != model or not keys:
                return {}
            return dict(self._sane(index, model, int(query.shape[0]),  # type: ignore[arg-type]
                                   lambda idx: idx.search(query, len(keys), among=list(keys))))

    def nearest(self, vector: np.ndarray, flt: Filter, count: int, *, model: str
                ) -> list[tuple[Memory, float]]:
        """Exact over the filter's candidates (read from SQLite, so a capture need not load the
        index); HNSW, post-filtered, for candidate sets too big for that."""
        with self._op() as conn:
            candidates = db.filtered_seqs(conn, flt, EXACT_FILTER_MAX)
            if not candidates:
                return []
            if len(candidates) <= EXACT_FILTER_MAX:
                found = _exact_over(conn, vector, candidates, count, model)
            else:
                def search(index: Any) -> list[tuple[int, float]]:
                    size, found = min(len(index), 64), []
                    while size:
                        hits = index.search(vector, size, exact=size >= len(index))
                        passing = db.seqs_passing(conn, flt, [s for s, _ in hits])
                        found = _by_similarity([(s, sim) for s, sim in hits if s in passing])
                        if len(found) >= count or size >= len(index):
                            break
                        size = min(len(index), size * 8)
                    return found

                index = self._cache.synced(model, int(vector.shape[0]))
                found = self._sane(index, model, int(vector.shape[0]), search)
            found = found[:count]
            memories = db.memories_by_seq(conn, [seq for seq, _ in found])
        return [(memories[seq], sim) for seq, sim in found if seq in memories]

    def memories_for(self, keys: Sequence[Key]) -> dict[Key, Memory]:
        with self._op() as conn:
            return db.memories_by_seq(conn, keys)  # type: ignore[arg-type,return-value]

    # -- maintenance -------------------------------------------------------------------------

    def counts(self) -> dict[str, Any]:
        with self._op() as conn:
            return db.counts(conn)

    def describe(self, model: str, dimension: int) -> dict[str, Any]:
        from .vector_index import VectorIndex

        with self._op() as conn:
            index = VectorIndex(self.index_dir, model, dimension)
            state = index.read_state()
            head = db.log_head(conn)
        return {
            "index": {
                "kind": state.kind if state else None,
                "file": str(index.directory / state.file) if state else None,
                "vectors": state.count if state else 0,
                "reflects_op": state.position if state else None,
                "log_head": head,
                "bytes": state.size if state else 0,
            },
            "home": str(self.home),
            "database_bytes": sum(
                p.stat().st_size for p in self.home.glob(DB_FILENAME + "*") if p.is_file()
            ),
        }

    def sync_index(self, model: str, dimension: int) -> int:
        """Bring the vector index up to date now (load, catch up or rebuild) and save it, so
        the next recall does not pay for it; returns its size. (Optional beside the contract:
        a backend without a derived index has nothing to do.)"""
        with self._op():
            index = self._cache.synced(model, dimension)
            self._cache.save()
            return len(index)

    def rebuild_index(self, model: str, dimension: int) -> int:
        with self._op():
            count = self._cache.rebuild(model, dimension)
            self._rebuild_keywords()
            return count

    def verify(self, *, model: str, dimension: int, quick: bool, repair: bool, embed: Any) -> VerifyReport:
        from . import verify as checks

        with self._op() as conn:
            target = checks.Target(conn, self.store_id, model, dimension, self.index_dir)
            found = checks.run_checks(target, quick=quick)
            report = VerifyReport(found)
            if not repair or report.ok or not found[0].ok:
                return report
            done = checks.repair(target, found, embed=embed,
                                 rebuild_index=lambda: self._cache.rebuild(model, dimension),
                                 rebuild_keywords=self._rebuild_keywords)
            return VerifyReport(checks.run_checks(target, quick=quick), done, found)


class _LockedKeywordLeg:
    """The SQLite keyword leg, run under the backend's lock with its errors mapped."""

    def __init__(self, backend: SQLiteBackend, leg: _SQLiteKeywordLeg) -> None:
        self._backend = backend
        self._leg = leg

    def search(self, flt: Filter, depth: int) -> list[KeywordMatch]:
        with self._backend._op():
            return self._leg.search(flt, depth)

    def evidence_for(self, keys: Iterable[Key]) -> dict[Key, KeywordMatch]:
        with self._backend._op():
            return self._leg.evidence_for(keys)  # type: ignore[arg-type]


def _prepare_home(home: Path, notices: list[str]) -> bool:
    """Create the home (0700) or check an existing one: ours, and private (tightened with a
    notice when it is open to others). Returns whether it is writable: a read-only home
    holding a store is opened for reading only."""
    from ...settings import secure_dir

    try:
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        if not (home / DB_FILENAME).is_file():
            raise StoreNotWritableError(f"cannot create store directory {home}: {exc}") from exc
    if not home.is_dir():
        raise StoreError(f"store path {home} is not a directory")
    try:
        fixed = secure_dir(home, "store directory")
    except StoreError:
        if os.access(home, os.W_OK):
            raise
        fixed = None  # a read-only home we cannot tighten: read it as it is
    if fixed:
        notices.append(fixed)
    db_file = home / DB_FILENAME
    if not os.access(home, os.W_OK | os.X_OK) or (db_file.exists() and not os.access(db_file, os.W_OK)):
        if db_file.is_file() and os.access(db_file, os.R_OK):
            notices.append(f"store directory {home} is read-only: opened for reading only")
            return False
        raise StoreNotWritableError(f"store directory {home} is not writable")
    return True


def _exact_over(conn: Any, query: np.ndarray, seqs: Sequence[int], count: int, model: str
                ) -> list[tuple[int, float]]:
    import numpy as np

    dimension = int(query.shape[0])
    size = dimension * 4
    rows = [r for r in db.live_vectors(conn, model, seqs) if len(r[1]) == size]
    if not rows:
        return []
    matrix = np.frombuffer(b"".join(r[1] for r in rows), dtype="<f4").reshape(len(rows), dimension)
    sims = np.nan_to_num(matrix @ query, nan=-1.0).clip(-1.0, 1.0)  # unit vectors: a cosine
    order = np.argsort(-sims, kind="stable")[: count * 2]
    return _by_similarity([(rows[i][0], float(sims[i])) for i in order])[:count]


def _by_similarity(found: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Best first; equal similarities (to float32 precision) in insertion order, so results
    do not depend on how the index happened to be built."""
    return sorted(found, key=lambda item: (-round(item[1], 5), item[0]))
