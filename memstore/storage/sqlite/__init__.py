"""The embedded default backend: SQLite + FTS5 (the truth) and a flat/usearch vector cache."""

from .backend import DB_FILENAME, SQLiteBackend

__all__ = ["DB_FILENAME", "SQLiteBackend"]
