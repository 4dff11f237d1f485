"""Raw SQL on a store's SQLite file, for tests that check or age what is stored on disk.

A second connection to ``store.db_path`` (the public path of the SQLite backend's file), not
the store's own connection: the test sees the file as any other process would.
"""

from __future__ import annotations

import sqlite3
from typing import Any


def raw(store: Any) -> sqlite3.Connection:
    """An autocommit connection to the store's database file."""
    assert store.db_path is not None, "a SQLite-backed store"
    conn = sqlite3.connect(store.db_path, isolation_level=None, timeout=30)
    return conn
