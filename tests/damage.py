"""Damaging a store's database file the way a bad disk would, for the tests that check how
memstore reports it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest


def damage_page(home: Path, table: str, fill: bytes | None = None) -> bytes:
    """Overwrite one page in the middle of ``table`` (its header and schema stay intact) with
    ``fill`` repeated (default: a byte pattern); returns the damaged file's bytes. Skips the
    test when this SQLite has no ``dbstat`` table to find the page."""
    db = home / "memstore.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    try:
        pages = [r[0] for r in conn.execute("SELECT pageno FROM dbstat WHERE name = ?", (table,))]
    except sqlite3.OperationalError:
        pytest.skip("this SQLite has no dbstat table")
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    raw = bytearray(db.read_bytes())
    page = pages[len(pages) // 2]
    junk = fill * size if fill is not None else bytes((i * 37) % 256 for i in range(size))
    raw[(page - 1) * size : page * size] = junk
    db.write_bytes(bytes(raw))
    return bytes(raw)
