"""What a store knows about itself outside its database file, for every process to honour.

- **A damage marker** (``memstore.db.damaged``): written by the first process that finds the
  file damaged (``verify``'s integrity check, or a query that reached a bad page). While it
  exists every process refuses to write — a write to a damaged b-tree can spread the damage —
  until a ``memstore verify`` finds the file sound again (restored from a backup, say).
- **A commit counter** (``memstore.db.commits``): each write transaction bumps the database's
  ``user_version`` and, once committed, the same number is written here. A write-ahead log
  lost, truncated or bit-flipped after a crash makes SQLite open an *older* state without a
  word; the database then holds fewer commits than this file says, which is said loudly on
  open and by ``verify`` (writes refused) until ``memstore verify --repair`` accepts the loss.

The file only ever trails the database (written after the commit), so a crash between the
two never raises a false alarm; concurrent writers may leave it a little behind (weaker
detection, never a false one).
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from pathlib import Path

__all__ = ["Guard"]


class Guard:
    """The marker and the counter of one database file."""

    def __init__(self, db_path: Path, store_id: str | None = None) -> None:
        self.db_path = Path(db_path)
        self.store_id = store_id
        self.marker = Path(f"{db_path}.damaged")
        self.counter = Path(f"{db_path}.commits")

    # -- the damage marker ---------------------------------------------------------------------

    def damaged(self) -> str | None:
        """Why the store was marked damaged, or None."""
        try:
            return self.marker.read_text(encoding="utf-8", errors="replace").strip() or "damaged"
        except FileNotFoundError:
            return None
        except OSError:
            return "damaged (the marker is unreadable)"

    def mark_damaged(self, reason: str) -> None:
        """Record the damage for every process (best effort: a read-only home keeps none)."""
        with contextlib.suppress(OSError):
            _write_private(self.marker, " ".join(reason.split())[:500] + "\n")

    def clear(self) -> None:
        with contextlib.suppress(OSError):
            self.marker.unlink(missing_ok=True)

    # -- the commit counter --------------------------------------------------------------------

    def recorded(self) -> int | None:
        """Commits the file says this database has made (None: no record for this store)."""
        try:
            data = json.loads(self.counter.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("store_id") != self.store_id:
            return None
        commits = data.get("commits")
        return commits if isinstance(commits, int) and not isinstance(commits, bool) else None

    def record(self, commits: int) -> None:
        """After a commit: the database has made ``commits`` write transactions."""
        if self.store_id is None:
            return
        with contextlib.suppress(OSError):
            tmp = self.counter.with_name(f".{self.counter.name}.{os.getpid()}.tmp")
            _write_private(tmp, json.dumps({"store_id": self.store_id, "commits": commits}))
            os.replace(tmp, self.counter)

    def lost(self, conn: sqlite3.Connection) -> int:
        """How many recorded commits the database does not hold (0: none lost)."""
        recorded = self.recorded()
        if recorded is None:
            return 0
        return max(0, recorded - commits(conn))

    def check_on_open(self, conn: sqlite3.Connection) -> str | None:
        """On open: a lost write-ahead log becomes a damage mark and a loud notice."""
        missing = self.lost(conn)
        if not missing:
            if self.recorded() is None:
                self.record(commits(conn))
            return None
        reason = lost_message(missing)
        self.mark_damaged(reason)
        return reason


def commits(conn: sqlite3.Connection) -> int:
    """Write transactions the database has committed (its ``user_version``)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def bump(conn: sqlite3.Connection) -> int:
    """Inside a write transaction: count it; returns the new count."""
    count = commits(conn) + 1
    if count >= 2**31:  # user_version is a signed 32-bit integer: start again (and re-record)
        count = 1
    conn.execute(f"PRAGMA user_version = {count}")
    return count


def lost_message(missing: int) -> str:
    return (
        f"the database lost {missing} committed write(s): its write-ahead log was lost or damaged "
        "after a crash (memories written then are gone; restore them from a backup or an export); "
        "writes are refused until `memstore verify --repair` accepts the loss"
    )


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
