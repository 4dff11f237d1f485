"""Where memories are kept: the backend contract (``base``) and its implementations.

``open_backend`` picks one from a location: a directory (SQLite, the default) or a
``postgresql://`` URL (the team store, ``memstore[postgres]``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import Backend
    from .sqlite.salvage import SalvageReport

__all__ = ["open_backend", "salvage"]


def open_backend(location: str | os.PathLike[str], *, author: str | None = None,
                 pool_size: int | None = None) -> Backend:
    """The backend for ``location``: a ``postgresql://`` URL for the team store (``author``
    recorded on its captures, a connection pool of ``pool_size`` for long-lived processes),
    else a store directory for SQLite."""
    from .urls import is_postgres_url

    if is_postgres_url(os.fspath(location)):
        from .postgres.backend import PostgresBackend

        return PostgresBackend(os.fspath(location), author=author, pool_size=pool_size)
    from .sqlite import SQLiteBackend

    return SQLiteBackend(Path(location))


def salvage(location: str | os.PathLike[str]) -> SalvageReport:
    """Every memory still readable from the (damaged) store at ``location``, read without
    opening it for use and without writing to it (SQLite: the file, read-only, row by row)."""
    from .sqlite import DB_FILENAME
    from .sqlite.salvage import salvage as salvage_file

    return salvage_file(Path(location) / DB_FILENAME)
