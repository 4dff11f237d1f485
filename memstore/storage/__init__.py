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

__all__ = ["open_backend"]


def open_backend(location: str | os.PathLike[str]) -> Backend:
    """The backend for ``location``: a store directory for SQLite."""
    from .sqlite import SQLiteBackend

    return SQLiteBackend(Path(location))
