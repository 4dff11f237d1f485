"""Getting the memories out of a damaged database file, and saying which parts are damaged.

Both work on the file alone, opened read-only (``mode=ro``: nothing is written, not even the
WAL mode), so they run where ``memstore.open`` refuses. ``salvage`` reads every memory by
its rowid, one at a time, so a damaged page costs only the rows stored on it; the rowids to
try come from ``sqlite_sequence``, the table itself and each of its indexes, whichever can
still be read. Version links that point at a memory that could not be read are cut, so the
result imports as a consistent export (an older version whose successor was lost becomes
current again: it is the newest state still known).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import quote

from ...errors import CorruptDatabaseError, StoreError
from ...models import Memory
from . import db

__all__ = ["SalvageReport", "diagnose", "read_only", "salvage", "salvage_connection"]

#: The tables memstore keeps, in the order their damage matters to a user.
TABLES = ("memories", "memory_tags", "memories_fts", "embeddings", "vector_log", "meta")

#: Indexes of ``memories`` whose entries carry rowids (another way to find rows to read).
_ROWID_SOURCES = (
    "SELECT seq FROM sqlite_sequence WHERE name = 'memories'",
    "SELECT max(seq) FROM memories",
    "SELECT seq FROM memories",
    "SELECT seq FROM memories INDEXED BY memories_created",
    "SELECT seq FROM memories INDEXED BY memories_namespace",
    "SELECT seq FROM embeddings",
)


@dataclass
class SalvageReport:
    """What :func:`salvage` got out: the readable ``memories`` (oldest first), how many rows
    could not be read (``unreadable``, their rowids in ``lost``), and how many version links
    were cut because they pointed at a memory that was lost (``cut_links``)."""

    memories: list[Memory] = field(default_factory=list)
    unreadable: int = 0
    lost: list[int] = field(default_factory=list)
    cut_links: int = 0


@contextmanager
def read_only(path: Path) -> Iterator[sqlite3.Connection]:
    """The database file opened read-only, with no change to it or beside it."""
    if not path.is_file():
        raise StoreError(f"no database at {path}")
    try:
        conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {path} read-only: {exc}") from exc
    with closing(conn):
        yield conn


def _rowids(conn: sqlite3.Connection) -> set[int]:
    """Every rowid of ``memories`` that some readable structure knows of, and every rowid up
    to the highest one known (a damaged leaf page hides its rows from scans, not from
    lookups through an intact parent)."""
    found: set[int] = set()
    for query in _ROWID_SOURCES:
        try:
            for (seq,) in conn.execute(query):
                if isinstance(seq, int):
                    found.add(seq)
        except sqlite3.DatabaseError:
            continue  # read what it gave before the damaged page; the other sources fill in
    return set(range(1, max(found) + 1)) if found else set()


def salvage(path: Path) -> SalvageReport:
    """Read every memory that can still be read from the database file at ``path``."""
    with read_only(path) as conn:
        try:
            conn.execute("SELECT 1 FROM memories LIMIT 0")
        except sqlite3.DatabaseError as exc:
            raise CorruptDatabaseError(
                f"{path}: the memories table cannot be read at all ({exc}); nothing to salvage"
            ) from exc
        return salvage_connection(conn)


def salvage_connection(conn: sqlite3.Connection) -> SalvageReport:
    """:func:`salvage` over an open connection (which it only reads)."""
    report = SalvageReport()
    query = f"SELECT {db.MEMORY_COLUMNS} FROM memories WHERE seq = ?"
    for seq in sorted(_rowids(conn)):
        try:
            row = conn.execute(query, (seq,)).fetchone()
            if row is None:
                continue  # never used, or purged
            memory = db.row_to_memory(row)
            if not isinstance(memory.text, str) or not memory.text.strip():
                raise ValueError("no text")
        except (sqlite3.DatabaseError, ValueError, TypeError, json.JSONDecodeError):
            report.unreadable += 1
            report.lost.append(seq)
            continue
        report.memories.append(memory)
    known = {m.id for m in report.memories}
    for i, memory in enumerate(report.memories):
        cut = {}
        if memory.supersedes is not None and memory.supersedes not in known:
            cut["supersedes"] = None
        if memory.superseded_by is not None and memory.superseded_by not in known:
            cut["superseded_by"] = None
        if cut:
            report.cut_links += len(cut)
            report.memories[i] = replace(memory, **cut)
    return report


def diagnose(conn: sqlite3.Connection) -> list[str]:
    """One line per memstore table: readable, or what reading it ran into (and, for the
    memories table, how many rows could be read before the damage)."""
    lines = []
    for table in TABLES:
        rows = 0
        try:
            for _ in conn.execute(f"SELECT * FROM {table}"):  # noqa: S608 - names from TABLES
                rows += 1
        except sqlite3.DatabaseError as exc:
            where = f" after {rows:,} rows" if rows else ""
            lines.append(f"table {table}: damaged ({exc}{where})")
            continue
        lines.append(f"table {table}: readable ({rows:,} rows)")
    return lines
