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


def open_backend(location: str | os.PathLike[str]) -> Backend:
    """The backend for ``location``: a store directory for SQLite."""
    from .sqlite import SQLiteBackend

    return SQLiteBackend(Path(location))


def salvage(location: str | os.PathLike[str]) -> SalvageReport:
    """Every memory still readable from the (damaged) store at ``location``, read without
    opening it for use and without writing to it (SQLite: the file, read-only, row by row)."""
    from .sqlite import DB_FILENAME
    from .sqlite.salvage import salvage as salvage_file

    return salvage_file(Path(location) / DB_FILENAME)
