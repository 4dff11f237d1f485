"""The SQLite backend's vector index kept in step with the database.

The index (flat or HNSW, :mod:`.vector_index`) is a cache: SQLite's ``embeddings`` table is
the truth and the ``vector_log`` table (filled by triggers in the same transaction as the
row) says which memories changed since the op an index reflects. On first use the saved
index is loaded, caught up from the log, or rebuilt from SQLite when missing, stale,
foreign or damaged — with a notice, never silently wrong.
"""

from __future__ import annotations

import sqlite3
import warnings
from pathlib import Path
from typing import Literal

from ...errors import ModelMismatchWarning, StoreError
from ...notices import notify
from . import db
from .db import transaction
from .vector_index import NEWER, VectorIndex

__all__ = ["EXACT_INDEX_MAX", "FLAT_AGAIN_BELOW", "LOG_KEEP", "VectorCache"]

#: Up to this many vectors the index is a flat matrix searched exactly: faster than HNSW
#: in a fresh process (no usearch import, no graph) and within ~3 ms of it warm; above it,
#: HNSW. Measured by scripts/bench.py (docs/performance.md).
EXACT_INDEX_MAX = 20_000
#: An HNSW index turns flat again only below this, so a store at the edge does not flap.
FLAT_AGAIN_BELOW = EXACT_INDEX_MAX // 2
#: Vector-log ops kept behind a saved index, so processes holding a slightly older index in
#: memory catch up instead of rebuilding; the log is trimmed once twice that has piled up.
LOG_KEEP = 10_000


class VectorCache:
    """One model's index over one connection: loaded lazily, synced after every write."""

    def __init__(self, conn: sqlite3.Connection, store_id: str, directory: Path) -> None:
        self._conn = conn
        self._store_id = store_id
        self.directory = directory
        self.index: VectorIndex | None = None

    def synced(self, model_id: str, dimension: int) -> VectorIndex:
        """The index of ``model_id``, loaded or rebuilt on first use, caught up with the database."""
        if self.index is None or self.index.model_id != model_id:
            self.index = self._new_index(model_id, dimension)
            self._warn_other_models(model_id)
        self.sync()
        return self.index

    def _new_index(self, model_id: str, dimension: int) -> VectorIndex:
        """An index whose approximate (int8) graph rescores from this connection's vectors,
        read at search time in the caller's snapshot (a purged memory drops out; a forgotten
        one is left to the callers' liveness filter, as for any index result)."""
        conn = self._conn
        return VectorIndex(self.directory, model_id, dimension,
                           source=lambda seqs: db.stored_vectors(conn, model_id, seqs))

    def sync_if_loaded(self) -> None:
        """After a write: catch a loaded index up (an unloaded one catches up when first used)."""
        if self.index is not None:
            self.sync()

    def _warn_other_models(self, model_id: str) -> None:
        if not db.has_other_models(self._conn, model_id):
            return
        others = {m: n for m, n in db.embedding_models(self._conn).items() if m != model_id}
        if others:
            total = sum(others.values())
            warnings.warn(
                f"memstore: {total} memories have vectors from another model "
                f"({', '.join(sorted(others))}); they are found by keyword only until you run "
                "`memstore reindex`",
                ModelMismatchWarning,
                stacklevel=6,
            )

    def sync(self) -> None:
        index = self.index
        assert index is not None
        conn = self._conn
        with db.snapshot(conn):  # one read snapshot for head, floor and the changes
            look_again = self._catch_up(index)
        if look_again:  # the saved index is newer than our snapshot: take a fresh one
            with db.snapshot(conn):
                self._catch_up(index, last_try=True)
        if index_kind(len(index), index.kind) != index.kind:
            # grown past (or shrunk well below) EXACT_INDEX_MAX: rebuild as the other kind
            with db.snapshot(conn):
                self._rebuild_from_db(index, db.log_head(conn))
        if index.position - index.saved_position >= save_threshold(len(index)):
            self.save()

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
                notify(f"{problem}; rebuilt it from the database")
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
                             index_kind(count, index.kind))
        index.saved_position = -1
        return size

    def rebuild(self, model_id: str, dimension: int) -> int:
        """Rebuild the index from SQLite and save it over whatever is on disk."""
        if self.index is None or self.index.model_id != model_id:
            self.index = self._new_index(model_id, dimension)
        conn = self._conn
        with db.snapshot(conn):
            count = self._rebuild_from_db(self.index, db.log_head(conn))
        self.save(force=True)
        return count

    def save_if_moved(self) -> None:
        """On close: save when enough changed (small changes replay cheaply from the log)."""
        index = self.index
        if index is not None and index.position - index.saved_position >= save_threshold(len(index)):
            self.save()

    def save(self, *, force: bool = False) -> None:
        index = self.index
        if index is None or not index.loaded:
            return
        try:
            saved = index.save(self._store_id, force=force)
        except (OSError, TimeoutError) as exc:  # a cache: failing to save loses nothing
            notify(f"could not save the vector index ({exc})")
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


def index_kind(size: int, current: str | None = None) -> Literal["flat", "hnsw"]:
    """Flat (exact) up to EXACT_INDEX_MAX vectors, HNSW above; an HNSW index stays HNSW
    down to FLAT_AGAIN_BELOW."""
    if size > EXACT_INDEX_MAX or (current == "hnsw" and size >= FLAT_AGAIN_BELOW):
        return "hnsw"
    return "flat"


def save_threshold(size: int) -> int:
    """Ops to accumulate before rewriting the index file: small stores save at once."""
    return 1 if size <= 5000 else max(1, size // 200)
