"""Connections to the team store, and the one place driver errors become memstore errors.

psycopg is imported here (lazily, by the functions that need it). A CLI call opens one
connection; a process that keeps the store open (the MCP server, a web page) asks for a
``psycopg_pool.ConnectionPool``. Connections run in autocommit mode: every write is an
explicit ``conn.transaction()`` block, so a statement never lingers in an open transaction.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from ...errors import MemstoreError, StoreError, StoreNotWritableError
from ..urls import redact_text, redact_url

if TYPE_CHECKING:
    import psycopg

__all__ = ["ConnectionSource", "errors_mapped", "open_source"]

CONNECT_TIMEOUT_S = 10
APPLICATION_NAME = "memstore"


def _first_line(exc: BaseException, url: str | None) -> str:
    text = str(exc).strip().splitlines()
    return redact_text(text[0] if text else type(exc).__name__, url)


@contextmanager
def errors_mapped(url: str | None, *, connecting: bool = False) -> Iterator[None]:
    """Turn a psycopg error inside the block into a one-line memstore error naming the server
    (password redacted) and what to do. Memstore's own errors pass through."""
    import psycopg
    from psycopg import errors as pgerr

    where = redact_url(url) if url else "the PostgreSQL server"
    try:
        yield
    except MemstoreError:
        raise
    except pgerr.InsufficientPrivilege as exc:
        raise StoreNotWritableError(
            f"PostgreSQL at {where} refused: {_first_line(exc, url)} — grant the role the privileges "
            "in docs/team-store.md (migrations need a role that may create tables)"
        ) from None
    except pgerr.ReadOnlySqlTransaction as exc:
        raise StoreNotWritableError(
            f"PostgreSQL at {where} is read-only ({_first_line(exc, url)}); point memstore at the primary"
        ) from None
    except psycopg.OperationalError as exc:
        if connecting:
            raise StoreError(
                f"cannot connect to PostgreSQL at {where}: {_first_line(exc, url)} — check the URL, "
                "that the server is running and that it accepts this user"
            ) from None
        raise StoreError(
            f"lost the connection to PostgreSQL at {where} ({_first_line(exc, url)}); the write was "
            "stored whole or not at all — run the command again (a capture that was stored is then "
            "reported as already stored)"
        ) from None
    except psycopg.ProgrammingError as exc:
        if connecting:
            raise StoreError(f"invalid PostgreSQL URL {where}: {_first_line(exc, url)}") from None
        raise
    except psycopg.DatabaseError as exc:
        raise StoreError(f"PostgreSQL at {where}: {_first_line(exc, url)}") from None


def _connect_kwargs() -> dict[str, Any]:
    return {
        "autocommit": True,
        "connect_timeout": CONNECT_TIMEOUT_S,
        "application_name": APPLICATION_NAME,
    }


def _configure(conn: psycopg.Connection) -> None:
    """Per-connection setup: pgvector's types (when the extension exists), UTC timestamps."""
    from .sql import EF_SEARCH

    conn.execute("SET TIME ZONE 'UTC'")
    # HNSW search settings for the whole session (one round trip per search, not four):
    # a candidate list of EF_SEARCH (≥ recall's leg depth), and pgvector 0.8's iterative
    # scan so a filter that drops candidates makes the scan go on instead of returning fewer.
    conn.execute(f"SET hnsw.ef_search = {EF_SEARCH}")
    conn.execute("SET hnsw.iterative_scan = relaxed_order")
    _register_vector(conn)


def _register_vector(conn: psycopg.Connection) -> None:
    import psycopg
    from pgvector.psycopg import register_vector

    with contextlib.suppress(psycopg.ProgrammingError):  # no extension yet (first open)
        register_vector(conn)


class ConnectionSource:
    """Hands out connections: one kept connection, or a pool for long-lived processes."""

    def __init__(self, url: str, *, pool_size: int | None = None) -> None:
        self.url = url
        self._conn: psycopg.Connection | None = None
        self._pool: Any = None
        self._pool_size = pool_size
        # One kept connection serves one operation at a time: threads sharing the store queue
        # here, so no statement ever runs inside another thread's transaction.
        self._lock = threading.RLock()
        with errors_mapped(url, connecting=True):
            import psycopg

            self._conn = psycopg.connect(url, **_connect_kwargs())
            _configure(self._conn)

    def ready(self) -> None:
        """The schema exists: register pgvector's types, and switch to the pool if one was
        asked for (its connections are configured when pgvector's types exist)."""
        if self._conn is not None:
            _register_vector(self._conn)
        if not self._pool_size or self._pool is not None:
            return
        from psycopg_pool import ConnectionPool

        with errors_mapped(self.url, connecting=True):
            pool = ConnectionPool(
                self.url, min_size=1, max_size=self._pool_size, kwargs=_connect_kwargs(),
                configure=_configure, open=False, name="memstore",
            )
            try:
                pool.open(wait=True, timeout=CONNECT_TIMEOUT_S)
            except Exception as exc:  # the pool wraps the driver's error in a timeout
                pool.close()
                import psycopg

                raise psycopg.OperationalError(_probe(self.url) or str(exc)) from None
        self._pool = pool
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A connection for one operation (the kept one, or one borrowed from the pool)."""
        if self._pool is not None:
            with self._pool.connection() as conn:
                yield conn
            return
        with self._lock:
            if self._conn is None:
                raise StoreError("the store is closed")
            if self._conn.closed or self._conn.broken:
                with errors_mapped(self.url, connecting=True):
                    import psycopg

                    self._conn = psycopg.connect(self.url, **_connect_kwargs())
                    _configure(self._conn)
            yield self._conn

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _probe(url: str) -> str | None:
    """The driver's own message for why ``url`` cannot be reached (pools only say "timeout")."""
    import psycopg

    try:
        psycopg.connect(url, **_connect_kwargs()).close()
    except psycopg.Error as exc:
        return str(exc)
    return None


def open_source(url: str, *, pool_size: int | None = None) -> ConnectionSource:
    """Connect to ``url`` (one connection, or a pool of ``pool_size``); one-line errors."""
    if not isinstance(url, str) or not url.strip():
        raise StoreError("a PostgreSQL URL is required (postgresql://user@host/database)")
    return ConnectionSource(url, pool_size=pool_size)

