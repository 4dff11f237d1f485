"""The team store: memstore on PostgreSQL + pgvector (``pip install 'memstore[postgres]'``).

Only this package imports psycopg, psycopg_pool and pgvector, and only when a store on a
``postgresql://`` URL is opened.
"""

from __future__ import annotations

from ..urls import is_postgres_url, redact_url

__all__ = ["PostgresBackend", "is_postgres_url", "open_backend", "redact_url"]


def open_backend(url: str, *, dimension: int = 384, author: str | None = None,
                 pool_size: int | None = None):  # noqa: ANN201 - PostgresBackend, imported lazily
    """Connect to the team store at ``url``, creating or upgrading its schema."""
    from .backend import PostgresBackend

    return PostgresBackend(url, dimension=dimension, author=author, pool_size=pool_size)


def __getattr__(name: str):  # noqa: ANN202 - lazy: psycopg loads only when a backend is made
    if name == "PostgresBackend":
        from .backend import PostgresBackend

        return PostgresBackend
    raise AttributeError(name)
