"""The query-vector cache in a small SQLite file (``memstore.embedding.query_cache.QueryCache``).

It lives here because only ``memstore.storage.sqlite`` talks to SQLite.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from ... import settings
from ...embedding.query_cache import QUERY_CACHE_MAX, query_key

__all__ = ["QueryVectorCache"]


class QueryVectorCache:
    """Query vectors already computed, kept across processes in a small SQLite file.

    Keyed by xxh3_128 of model id + normalised query (no query text is stored), so a
    repeated query in a fresh process costs a lookup instead of a model load. It is only
    a cache: any error reading or writing it turns it off for this process, never fails
    a recall. Beyond ``max_entries`` the oldest entries are dropped.
    """

    def __init__(self, path: Path, max_entries: int = QUERY_CACHE_MAX) -> None:
        self.path = Path(path)
        self.max_entries = max_entries
        self._conn: sqlite3.Connection | None = None
        self._broken = False
        self._lock = threading.Lock()

    def _connect(self) -> sqlite3.Connection | None:
        if self._conn is None and not self._broken:
            try:
                settings.private_dir(self.path.parent)
                old_umask = os.umask(0o077)
                try:
                    conn = sqlite3.connect(str(self.path), timeout=0.5, isolation_level=None,
                                           check_same_thread=False)
                finally:
                    os.umask(old_umask)
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = OFF")  # a lost entry is recomputed
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS query_vectors "
                    "(n INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, vector BLOB NOT NULL)"
                )
                self._conn = conn
            except (sqlite3.Error, OSError):
                self._broken = True
        return self._conn

    def get(self, model_id: str, query: str) -> bytes | None:
        """The cached little-endian float32 vector bytes, or None."""
        with self._lock:
            conn = self._connect()
            if conn is None:
                return None
            try:
                row = conn.execute(
                    "SELECT vector FROM query_vectors WHERE key = ?", (query_key(model_id, query),)
                ).fetchone()
            except sqlite3.Error:
                self._broken, self._conn = True, None
                return None
            return bytes(row[0]) if row else None

    def put(self, model_id: str, query: str, vector: bytes) -> None:
        """Remember a vector (best effort)."""
        with self._lock:
            conn = self._connect()
            if conn is None:
                return
            try:
                cursor = conn.execute(
                    "INSERT OR REPLACE INTO query_vectors (key, vector) VALUES (?, ?)",
                    (query_key(model_id, query), vector),
                )
                n = cursor.lastrowid or 0
                if n % 100 == 0:
                    conn.execute("DELETE FROM query_vectors WHERE n <= ?", (n - self.max_entries,))
            except sqlite3.Error:
                self._broken, self._conn = True, None

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
