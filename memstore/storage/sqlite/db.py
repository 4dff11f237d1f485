"""The SQLite side: connections, schema checks, and the SQL statements of the backend.

SQLite is the single source of truth. Writes happen in ``BEGIN IMMEDIATE``
transactions (one per capture or per batch) so concurrent writers queue on
the busy timeout instead of failing, and triggers keep FTS5, tags and the
vector change log in the same transaction as the row they describe.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from ...errors import CorruptDatabaseError, SchemaTooNewError, StoreError, StoreNotWritableError
from ...models import Memory
from ...timeutil import format_ts, parse_ts
from ..base import Filter
from .guard import Guard, bump
from .migrations import MIGRATION_NAMES, MIGRATION_SET, build_migrations

__all__ = [
    "MEMORY_COLUMNS",
    "connect",
    "mapped_errors",
    "transaction",
    "where",
]

BUSY_TIMEOUT_MS = 60_000

MEMORY_COLUMNS = (
    "seq, id, text, namespace, tags, source, metadata, content_hash, project, branch, "
    "created_at, updated_at, expires_at, deleted, supersedes, superseded_by, deleted_at, author"
)


def _prefixed(alias: str) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in MEMORY_COLUMNS.split(","))


class Connection(sqlite3.Connection):
    """An SQLite connection that remembers when a query found the file damaged: from then
    on :func:`transaction` refuses to write to it (reads of intact parts still work). Its
    ``guard`` (set by the backend) carries that knowledge to every other process, and counts
    commits outside the write-ahead log; ``readonly`` is set for a store opened read-only."""

    damaged = False
    readonly = False
    guard: Guard | None = None


def connect(path: Path, *, readonly: bool = False) -> sqlite3.Connection:
    """Open (creating if needed) the database, apply pending migrations, check it is ours.

    Nothing is changed before the file is known to be a memstore database (or new): a foreign
    SQLite file is refused as it was. ``readonly`` opens an existing store for reading only
    (a read-only home). Raises StoreNotWritableError, CorruptDatabaseError or
    SchemaTooNewError with a message that says what to do; a damaged file is never modified.
    """
    lock = Path(str(path) + ".migrate.lock")
    if lock.is_symlink():
        raise StoreError(f"{lock} is a symbolic link; memstore will not follow it (remove it)")
    existed = path.exists()
    if readonly:
        return _connect_readonly(path)
    if existed and not os.access(path, os.R_OK | os.W_OK):
        raise StoreNotWritableError(f"database {path} is not readable and writable by this user")
    try:
        old_umask = os.umask(0o077)
        try:
            conn = sqlite3.connect(
                str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                check_same_thread=False, factory=Connection,
            )
        finally:
            os.umask(old_umask)
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if existed:
            try:  # before the WAL switch (the first change): is the file ours at all?
                _check_applied(conn, path)
            except BaseException:
                conn.close()
                raise
        mode = _enable_wal(conn)
        if mode.lower() != "wal":
            raise StoreError(f"could not switch {path} to WAL mode (got {mode})")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
    except sqlite3.DatabaseError as exc:
        _raise_for(exc, path)
        raise
    try:
        _ensure_schema(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _connect_readonly(path: Path) -> sqlite3.Connection:
    """An existing, fully migrated store opened with SQLite's read-only mode: every write
    fails (see :func:`transaction`); reading works without write access to the directory."""
    from urllib.parse import quote

    if not path.exists():
        raise StoreNotWritableError(f"store directory {path.parent} is not writable and holds no database")
    conn = None
    try:
        conn = sqlite3.connect(
            f"file:{quote(str(path))}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None, check_same_thread=False, factory=Connection,
        )
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if not _check_applied(conn, path):
            raise StoreNotWritableError(
                f"{path} needs upgrading by this memstore, but its directory is read-only"
            )
    except sqlite3.DatabaseError as exc:
        if conn is not None:
            conn.close()
        _raise_for(exc, path)
        raise
    except BaseException:
        if conn is not None:
            conn.close()
        raise
    conn.readonly = True
    return conn


def _enable_wal(conn: sqlite3.Connection) -> str:
    """Switch to WAL. SQLite answers "database is locked" at once, without its busy handler,
    when several processes create the same database together: retry until the timeout."""
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            return str(conn.execute("PRAGMA journal_mode = WAL").fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _raise_for(exc: sqlite3.DatabaseError, path: Path | None, *, opening: bool = True) -> None:
    message = str(exc).lower()
    if "not a database" in message or "malformed" in message or "corrupt" in message:
        if opening:
            raise CorruptDatabaseError(
                f"{path} is not a readable memstore database ({exc}); it was left untouched — "
                "`memstore export --salvage` gets out what is still readable; restore it from a "
                "backup or move it aside to start a new store"
            ) from exc
        raise CorruptDatabaseError(
            f"database {path} is damaged ({exc}); memstore will not modify it — "
            "`memstore verify` shows what is damaged, `memstore export --salvage` gets out every "
            "readable memory; or restore it from a backup"
        ) from exc
    if "readonly" in message or "unable to open" in message or "read-only" in message:
        raise StoreNotWritableError(f"cannot write to {path}: {exc}") from exc
    raise StoreError(f"cannot use database {path}: {exc}") from exc


@contextmanager
def mapped_errors(path: Path | None, conn: sqlite3.Connection | None = None) -> Iterator[None]:
    """Turn an sqlite3 error into a MemstoreError naming the file — CorruptDatabaseError for
    damage SQLite only finds when a query reaches a bad page (the file header and schema can
    be intact); from then on ``conn`` refuses writes (see :func:`transaction`)."""
    try:
        yield
    except sqlite3.DatabaseError as exc:
        try:
            _raise_for(exc, path, opening=False)
        except CorruptDatabaseError as err:
            if isinstance(conn, Connection):
                conn.damaged = True
                if conn.guard is not None:  # every other process refuses writes too
                    conn.guard.mark_damaged(f"a query found the database damaged: {err}")
            raise


def _applied_migrations(conn: sqlite3.Connection) -> list[str]:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlite_migrations'"
    ).fetchone()
    if not exists:
        return []
    return [
        row[0]
        for row in conn.execute(
            "SELECT name FROM _sqlite_migrations WHERE migration_set = ? ORDER BY id",
            (MIGRATION_SET,),
        )
    ]


def _ensure_schema(conn: sqlite3.Connection, path: Path) -> None:
    try:
        if _check_applied(conn, path):
            return
        from filelock import FileLock

        # Concurrent first opens: one process migrates, the others wait and re-check.
        try:
            lock = FileLock(str(path) + ".migrate.lock", mode=0o600)
            lock.acquire()
        except OSError as exc:
            raise StoreError(f"cannot take the migration lock {path}.migrate.lock: {exc.strerror}") from None
        with lock:
            if _check_applied(conn, path):
                return
            from sqlite_utils import Database

            build_migrations().apply(Database(conn))
    except sqlite3.DatabaseError as exc:
        _raise_for(exc, path)
        raise


def _check_applied(conn: sqlite3.Connection, path: Path) -> bool:
    """True when every migration is applied; raises if the file is newer or not ours."""
    applied = _applied_migrations(conn)
    unknown = [name for name in applied if name not in MIGRATION_NAMES]
    if unknown:
        raise SchemaTooNewError(
            f"{path} was written by a newer memstore (schema step {unknown[-1]!r} is "
            "unknown to this version); upgrade memstore to open it"
        )
    if not applied and _has_foreign_tables(conn):
        raise StoreError(f"{path} is an SQLite database but not a memstore store")
    return len(applied) == len(MIGRATION_NAMES)


def _has_foreign_tables(conn: sqlite3.Connection) -> bool:
    rows = conn.execute(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
        "AND name != '_sqlite_migrations'"
    ).fetchall()
    return bool(rows)


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """``BEGIN IMMEDIATE`` … ``COMMIT``, rolled back on any exception (including KeyboardInterrupt).

    Refused for a store known to be damaged (by this connection, or by any process: the
    guard's marker) or opened read-only. Each commit is counted (see :mod:`.guard`)."""
    if getattr(conn, "readonly", False):
        raise StoreNotWritableError("the store is read-only (its directory or database file cannot be "
                                    "written): reading works, writing does not")
    if getattr(conn, "damaged", False):
        raise CorruptDatabaseError(
            "the database was found damaged earlier in this session; memstore will not write to it "
            "— `memstore verify` shows what is wrong"
        )
    guard = getattr(conn, "guard", None)
    reason = guard.damaged() if guard is not None else None
    if reason is not None:
        raise CorruptDatabaseError(
            f"the store is marked damaged ({reason}); memstore will not write to it until "
            "`memstore verify` passes"
        )
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        count = bump(conn) if guard is not None else None
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    if guard is not None and count is not None:
        guard.record(count)


@contextmanager
def snapshot(conn: sqlite3.Connection) -> Iterator[None]:
    """One read snapshot (deferred ``BEGIN`` … ``COMMIT``), or the caller's transaction when one
    is open."""
    if conn.in_transaction:
        yield
        return
    conn.execute("BEGIN")
    try:
        yield
    finally:
        if conn.in_transaction:
            conn.execute("COMMIT")


def store_id(conn: sqlite3.Connection) -> str:
    """A random id fixed when the store was created: index files name the store they belong to."""
    return conn.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()[0]


# ---------------------------------------------------------------------------------------------
# Rows and filters


def row_to_memory(row: Sequence[Any]) -> Memory:
    """A ``SELECT MEMORY_COLUMNS`` row as a Memory (seq is dropped)."""
    (
        _seq, id_, text, namespace, tags, source, metadata, chash, project, branch,
        created, updated, expires, deleted, supersedes, superseded_by, deleted_at, author,
    ) = row
    return Memory(
        id=id_,
        text=text,
        namespace=namespace,
        tags=tuple(json.loads(tags)),
        source=source,
        metadata=json.loads(metadata),
        content_hash=chash,
        created_at=parse_ts(created),
        updated_at=parse_ts(updated),
        project=project,
        branch=branch,
        expires_at=parse_ts(expires) if expires else None,
        deleted=bool(deleted),
        supersedes=supersedes,
        superseded_by=superseded_by,
        deleted_at=parse_ts(deleted_at) if deleted_at else None,
        author=author,
    )


def where(flt: Filter, alias: str = "m") -> tuple[str, list[Any]]:
    """A WHERE clause body over ``alias`` for the filter, and its parameters."""
    clauses: list[str] = []
    params: list[Any] = []
    if flt.only_deleted:
        clauses.append(f"{alias}.deleted = 1")
    elif not flt.include_deleted:
        clauses.append(f"{alias}.deleted = 0")
    if not flt.include_superseded:
        clauses.append(f"{alias}.superseded_by IS NULL")
    if not flt.include_expired and flt.now is not None:
        clauses.append(f"({alias}.expires_at IS NULL OR {alias}.expires_at > ?)")
        params.append(format_ts(flt.now))
    if flt.namespaces:
        clauses.append(f"{alias}.namespace IN ({', '.join('?' * len(flt.namespaces))})")
        params.extend(flt.namespaces)
    if flt.tags:
        clauses.append(
            f"{alias}.seq IN (SELECT seq FROM memory_tags WHERE tag IN "
            f"({', '.join('?' * len(flt.tags))}) GROUP BY seq HAVING count(*) = ?)"
        )
        params.extend(flt.tags)
        params.append(len(flt.tags))
    if flt.since is not None:
        clauses.append(f"{alias}.created_at >= ?")
        params.append(format_ts(flt.since))
    if flt.until is not None:
        clauses.append(f"{alias}.created_at < ?")
        params.append(format_ts(flt.until))
    if flt.projects is not None:
        named = [p for p in flt.projects if p is not None]
        parts = []
        if named:
            parts.append(f"{alias}.project IN ({', '.join('?' * len(named))})")
            params.extend(named)
        if None in flt.projects:
            parts.append(f"{alias}.project IS NULL")
        clauses.append("(" + " OR ".join(parts or ["0"]) + ")")
    if flt.branch is not None:
        clauses.append(f"{alias}.branch = ?")
        params.append(flt.branch)
    if flt.only_expired:
        clauses.append(f"({alias}.expires_at IS NOT NULL AND {alias}.expires_at <= ?)")
        params.append(format_ts(flt.now))
    if flt.source is not None:
        clauses.append(f"{alias}.source = ?")
        params.append(flt.source)
    if flt.authors:
        clauses.append(f"{alias}.author IN ({', '.join('?' * len(flt.authors))})")
        params.extend(flt.authors)
    for key, value in flt.metadata:
        clauses.append(f"json_extract({alias}.metadata, ?) = ?")
        params.extend((f'$."{key}"', value))
    return (" AND ".join(clauses) or "1"), params



# ---------------------------------------------------------------------------------------------
# Memories


def insert_memory(conn: sqlite3.Connection, values: dict[str, Any]) -> int:
    """Insert one memory row; returns its seq. Call inside :func:`transaction`. Keys starting
    with "_" are the caller's notes, not columns."""
    values = {k: v for k, v in values.items() if not k.startswith("_")}
    columns = ", ".join(values)
    placeholders = ", ".join("?" * len(values))
    cursor = conn.execute(
        f"INSERT INTO memories ({columns}) VALUES ({placeholders})", list(values.values())
    )
    return int(cursor.lastrowid or 0)


def find_live_by_hash(conn: sqlite3.Connection, chash: str) -> Memory | None:
    """The current, not forgotten memory with this content hash, if any."""
    row = conn.execute(
        f"SELECT {MEMORY_COLUMNS} FROM memories "
        "WHERE content_hash = ? AND deleted = 0 AND superseded_by IS NULL",
        (chash,),
    ).fetchone()
    return row_to_memory(row) if row else None


def get_memory(conn: sqlite3.Connection, memory_id: str) -> tuple[int, Memory] | None:
    """(seq, memory) for an id, forgotten and superseded ones included."""
    row = conn.execute(
        f"SELECT {MEMORY_COLUMNS} FROM memories WHERE id = ?", (memory_id,)
    ).fetchone()
    return (row[0], row_to_memory(row)) if row else None


def memories_by_seq(conn: sqlite3.Connection, seqs: Iterable[int]) -> dict[int, Memory]:
    """Memories for a set of seqs, keyed by seq."""
    seqs = list(seqs)
    found: dict[int, Memory] = {}
    for chunk in chunks(seqs):
        rows = conn.execute(
            f"SELECT {MEMORY_COLUMNS} FROM memories WHERE seq IN ({marks(chunk)})",
            chunk,
        )
        for row in rows:
            found[row[0]] = row_to_memory(row)
    return found


def list_memories(
    conn: sqlite3.Connection, flt: Filter, limit: int, offset: int = 0
) -> list[Memory]:
    """Memories passing the filter, newest first."""
    clause, params = where(flt, "m")
    rows = conn.execute(
        f"SELECT {_prefixed('m')} FROM memories m WHERE {clause} "
        "ORDER BY m.created_at DESC, m.seq DESC LIMIT ? OFFSET ?",
        [*params, limit, offset],
    )
    return [row_to_memory(row) for row in rows]


def filtered_seqs(conn: sqlite3.Connection, flt: Filter, limit: int) -> list[int]:
    """Seqs passing the filter, at most ``limit`` (+1 so callers can tell when it overflowed)."""
    clause, params = where(flt, "m")
    return [
        row[0]
        for row in conn.execute(
            f"SELECT m.seq FROM memories m WHERE {clause} LIMIT ?", [*params, limit + 1]
        )
    ]


def seqs_passing(conn: sqlite3.Connection, flt: Filter, seqs: Sequence[int]) -> set[int]:
    """The subset of ``seqs`` that passes the filter."""
    clause, params = where(flt, "m")
    passing: set[int] = set()
    for chunk in chunks(seqs):
        rows = conn.execute(
            f"SELECT m.seq FROM memories m WHERE m.seq IN ({marks(chunk)}) "
            f"AND {clause}",
            [*chunk, *params],
        )
        passing.update(row[0] for row in rows)
    return passing


#: The full-text indexes recall may search: words (porter/unicode61) and CJK trigrams.
TEXT_INDEXES = ("memories_fts", "memories_cjk")


def keyword_search(
    conn: sqlite3.Connection, match: str, flt: Filter, limit: int, index: str = "memories_fts",
    ranked: Ranking | None = None,
) -> list[tuple[int, float]]:
    """(seq, bm25) of memories matching an FTS5 expression, best first, filter applied.

    FTS5 computes bm25 for every match whatever the LIMIT, and joining each match to
    ``memories`` for the filter doubled that cost; so the full-text index ranks alone and
    only the best few are checked against the filter. When the filter drops too many of
    them (a narrow namespace, say), the joined query answers instead. ``ranked(n, flt)``,
    when given, is the derived keyword index's answer for the first ``n`` of FTS5's ranking
    and whether it applied ``flt`` itself (None: it cannot answer, FTS5 does)."""
    if index not in TEXT_INDEXES:
        raise ValueError(f"unknown text index {index!r}")
    if ranked is not None:
        found = _filtered_ranking(conn, ranked, flt, limit)
        if found is not None:
            return found
    fetch = limit * 2
    for _attempt in range(2):
        ranked = conn.execute(
            f"SELECT rowid, bm25({index}) AS rank FROM {index} WHERE {index} MATCH ? "
            "ORDER BY rank, rowid LIMIT ?",
            (match, fetch),
        ).fetchall()
        passing = seqs_passing(conn, flt, [row[0] for row in ranked])
        kept = [(row[0], float(row[1])) for row in ranked if row[0] in passing]
        if len(kept) >= limit or len(ranked) < fetch:
            return kept[:limit]
        fetch *= 8
    clause, params = where(flt, "m")
    rows = conn.execute(
        f"SELECT m.seq, bm25({index}) AS rank FROM {index} "
        f"JOIN memories m ON m.seq = {index}.rowid "
        f"WHERE {index} MATCH ? AND {clause} ORDER BY rank, m.seq LIMIT ?",
        [match, *params, limit],
    )
    return [(row[0], float(row[1])) for row in rows]


#: Bounds of the CJK substring scan: memories read (newest first), characters of each.
SCAN_ROWS = 5000
SCAN_CHARS = 1000

#: The derived keyword index's ranking: (first ``n`` rows, whether ``flt`` is applied) or None.
Ranking = Callable[[int, Filter], "tuple[list[tuple[int, float]], bool] | None"]


def _filtered_ranking(conn: sqlite3.Connection, ranked: Ranking, flt: Filter, limit: int
                      ) -> list[tuple[int, float]] | None:
    """The first ``limit`` of a ranking passing ``flt``, reading deeper until found or exhausted."""
    fetch, checked, kept = limit * 2, 0, []
    while True:
        answer = ranked(fetch, flt)
        if answer is None:
            return None
        rows, filtered = answer
        if filtered:
            return rows[:limit]
        fresh = rows[checked:]
        passing = seqs_passing(conn, flt, [seq for seq, _ in fresh])
        kept += [(seq, bm25) for seq, bm25 in fresh if seq in passing]
        checked = len(rows)
        if len(kept) >= limit or len(rows) < fetch:
            return kept[:limit]
        fetch *= 8


def substring_search(
    conn: sqlite3.Connection, substrings: Sequence[str], flt: Filter, limit: int,
    seqs: Sequence[int] | None = None,
) -> list[tuple[int, int]]:
    """(seq, how many of ``substrings`` its text contains) for memories containing any,
    most first, newest first among equals; filter applied; only ``seqs`` when given.

    A scan (no index can find 1–2 character CJK words): kept for what trigrams cannot do.
    Bounded, so a recall (an agent hook's above all) never pays for the whole store: the
    newest ``SCAN_ROWS`` memories passing the filter, the first ``SCAN_CHARS`` characters of
    each (longer words are still found through the trigram index)."""
    if not substrings:
        return []
    clause, params = where(flt, "m")
    count = " + ".join(f"(instr(substr(c.text, 1, {SCAN_CHARS}), ?) > 0)" for _ in substrings)
    restrict = ""
    if seqs is not None:
        if not seqs:
            return []
        restrict = f" AND m.seq IN ({', '.join('?' * len(seqs))})"
    rows = conn.execute(
        f"WITH c AS (SELECT m.seq, m.text FROM memories m WHERE {clause}{restrict} "
        f"ORDER BY m.seq DESC LIMIT {SCAN_ROWS}) "
        f"SELECT c.seq, {count} AS found FROM c WHERE found > 0 "
        "ORDER BY found DESC, c.seq DESC LIMIT ?",
        [*params, *(seqs or ()), *substrings, limit],
    )
    return [(row[0], int(row[1])) for row in rows]


# ---------------------------------------------------------------------------------------------
# Embeddings and the vector change log


def put_embedding(
    conn: sqlite3.Connection, seq: int, model: str, chash: str, vector: bytes
) -> None:
    """Store (or replace) a memory's embedding: little-endian float32 bytes."""
    conn.execute(
        "INSERT INTO embeddings (seq, model, content_hash, vector) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (seq) DO UPDATE SET model = excluded.model, "
        "content_hash = excluded.content_hash, vector = excluded.vector",
        (seq, model, chash, vector),
    )


def log_head(conn: sqlite3.Connection) -> int:
    """The newest vector_log op (0 when the log has never been written)."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'vector_log'").fetchone()
    return int(row[0]) if row else 0


def log_floor(conn: sqlite3.Connection) -> int:
    """Ops at or below this were compacted away: an index older than it must be rebuilt."""
    row = conn.execute("SELECT min(op) FROM vector_log").fetchone()
    if row[0] is not None:
        return int(row[0]) - 1
    return log_head(conn)


def compact_log(conn: sqlite3.Connection, upto: int) -> None:
    """Forget log ops up to ``upto`` (inclusive): only indexes newer than that stay catch-up-able."""
    conn.execute("DELETE FROM vector_log WHERE op <= ?", (upto,))


def changed_seqs(conn: sqlite3.Connection, after: int) -> tuple[list[int], int]:
    """Distinct seqs touched by ops after ``after``, and the head op they reach."""
    rows = conn.execute(
        "SELECT seq, max(op) FROM vector_log WHERE op > ? GROUP BY seq", (after,)
    ).fetchall()
    head = max((row[1] for row in rows), default=after)
    return [row[0] for row in rows], head


_LIVE = "m.deleted = 0 AND m.superseded_by IS NULL"


def live_vectors(
    conn: sqlite3.Connection, model: str, seqs: Sequence[int] | None = None
) -> Iterator[tuple[int, bytes]]:
    """(seq, vector bytes) of live memories embedded by ``model``; all of them, or of ``seqs``."""
    base = (
        "SELECT e.seq, e.vector FROM embeddings e JOIN memories m ON m.seq = e.seq "
        f"WHERE e.model = ? AND {_LIVE}"
    )
    if seqs is None:
        yield from conn.execute(base + " ORDER BY e.seq", (model,))
        return
    for chunk in chunks(seqs):
        yield from conn.execute(
            base + f" AND e.seq IN ({marks(chunk)})", [model, *chunk]
        )


def stored_vectors(conn: sqlite3.Connection, model: str, seqs: Sequence[int]) -> Iterator[tuple[int, bytes]]:
    """(seq, vector bytes) of those ``seqs`` embedded by ``model``, live or not (callers
    filter liveness as they do for any index result): what an int8 graph rescores its
    candidates from. Without live_vectors' join to ``memories``: 400 random lookups at 100k
    in 2.8 ms instead of 3.7."""
    for chunk in chunks(seqs):
        yield from conn.execute(
            f"SELECT seq, vector FROM embeddings WHERE model = ? AND seq IN ({marks(chunk)})", [model, *chunk]
        )


def embedding_models(conn: sqlite3.Connection) -> dict[str, int]:
    """How many live memories each model has embedded."""
    rows = conn.execute(
        "SELECT e.model, count(*) FROM embeddings e JOIN memories m ON m.seq = e.seq "
        f"WHERE {_LIVE} GROUP BY e.model"
    )
    return {row[0]: row[1] for row in rows}


def has_other_models(conn: sqlite3.Connection, model: str) -> bool:
    """Whether any embedding (live or not) is from a model other than ``model``: two index
    probes, where :func:`embedding_models` reads every row."""
    row = conn.execute(
        "SELECT 1 FROM embeddings WHERE model < ? OR model > ? LIMIT 1", (model, model)
    ).fetchone()
    return row is not None


def seqs_needing_embedding(conn: sqlite3.Connection, model: str) -> list[int]:
    """Live memories with no embedding by ``model`` (missing, other model, or stale text)."""
    rows = conn.execute(
        "SELECT m.seq FROM memories m LEFT JOIN embeddings e ON e.seq = m.seq "
        f"WHERE {_LIVE} AND (e.seq IS NULL OR e.model != ? OR e.content_hash != m.content_hash) "
        "ORDER BY m.seq",
        (model,),
    )
    return [row[0] for row in rows]


def pending_seqs(conn: sqlite3.Connection, limit: int | None = None) -> list[int]:
    """Live memories waiting for their first embedding, newest first (at most ``limit``)."""
    rows = conn.execute(
        "SELECT p.seq FROM pending_embeddings p JOIN memories m ON m.seq = p.seq "
        f"WHERE {_LIVE} ORDER BY p.seq DESC LIMIT ?",
        (-1 if limit is None else limit,),
    )
    return [row[0] for row in rows]


def pending_count(conn: sqlite3.Connection) -> int:
    """How many live memories wait for their first embedding."""
    return int(conn.execute(
        "SELECT count(*) FROM pending_embeddings p JOIN memories m ON m.seq = p.seq "
        f"WHERE {_LIVE}"
    ).fetchone()[0])


def texts_for(conn: sqlite3.Connection, seqs: Sequence[int]) -> list[tuple[int, str, str]]:
    """(seq, text, content_hash) for the given seqs, in the given order."""
    by_seq: dict[int, tuple[int, str, str]] = {}
    for chunk in chunks(seqs):
        for row in conn.execute(
            f"SELECT seq, text, content_hash FROM memories WHERE seq IN "
            f"({marks(chunk)})",
            chunk,
        ):
            by_seq[row[0]] = (row[0], row[1], row[2])
    return [by_seq[s] for s in seqs if s in by_seq]


def counts(conn: sqlite3.Connection) -> dict[str, Any]:
    """Totals for ``stats``."""
    live, deleted, superseded = conn.execute(
        "SELECT "
        "coalesce(sum(deleted = 0 AND superseded_by IS NULL), 0), "
        "coalesce(sum(deleted = 1), 0), "
        "coalesce(sum(deleted = 0 AND superseded_by IS NOT NULL), 0) FROM memories"
    ).fetchone()
    namespaces = dict(
        conn.execute(
            "SELECT namespace, count(*) FROM memories WHERE deleted = 0 AND superseded_by IS NULL "
            "GROUP BY namespace ORDER BY namespace"
        ).fetchall()
    )
    return {
        "memories": live,
        "forgotten": deleted,
        "superseded": superseded,
        "namespaces": namespaces,
    }


# ---------------------------------------------------------------------------------------------
# Version history, purge, export


#: Longest version chain followed (a guard against link cycles in damaged or hand-made data).
MAX_CHAIN = 100_000


def chain(conn: sqlite3.Connection, memory_id: str) -> list[tuple[int, Memory]]:
    """Every version linked to ``memory_id`` through supersedes/superseded_by, oldest first."""
    rows = conn.execute(
        f"""
        WITH RECURSIVE
          back(id, link, depth) AS (
            SELECT id, supersedes, 0 FROM memories WHERE id = :id
            UNION ALL
            SELECT m.id, m.supersedes, b.depth - 1 FROM memories m JOIN back b ON m.id = b.link
            WHERE b.depth > -{MAX_CHAIN}
          ),
          fwd(id, link, depth) AS (
            SELECT id, superseded_by, 0 FROM memories WHERE id = :id
            UNION ALL
            SELECT m.id, m.superseded_by, f.depth + 1 FROM memories m JOIN fwd f ON m.id = f.link
            WHERE f.depth < {MAX_CHAIN}
          ),
          versions(id, depth) AS (SELECT id, depth FROM back UNION SELECT id, depth FROM fwd)
        SELECT {_prefixed("m")}, min(v.depth) AS depth FROM memories m JOIN versions v ON v.id = m.id
        GROUP BY m.seq ORDER BY depth, m.seq
        """,
        {"id": memory_id},
    ).fetchall()
    found = [(row[0], row_to_memory(row[:-1])) for row in rows]
    return _with_side_versions(conn, found)


def _with_side_versions(
    conn: sqlite3.Connection, found: list[tuple[int, Memory]]
) -> list[tuple[int, Memory]]:
    """Add the versions superseded from outside the chain (a concurrent edit that lost in a
    sync, the same text captured elsewhere), each just before the version that superseded it."""
    if not found:
        return found
    ids = {m.id for _, m in found}
    for _ in range(MAX_CHAIN):
        rows = conn.execute(
            f"SELECT {MEMORY_COLUMNS} FROM memories WHERE superseded_by IN "
            "(SELECT value FROM json_each(?))",
            (json.dumps(sorted(ids)),),
        ).fetchall()
        extra = sorted((r for r in rows if r[1] not in ids), key=lambda r: (r[10], r[0]))
        if not extra:
            return found
        for row in extra:
            memory = row_to_memory(row)
            at = next(n for n, (_, m) in enumerate(found) if m.id == memory.superseded_by)
            found.insert(at, (row[0], memory))
            ids.add(memory.id)
    return found


def purge_candidates(conn: sqlite3.Connection, now: datetime) -> list[tuple[int, Memory, str]]:
    """(seq, memory, reason) of what ``purge`` deletes, oldest first: forgotten versions,
    expired current memories, and every older version of a forgotten or expired current one."""
    stamp = format_ts(now)
    direct = conn.execute(
        f"SELECT {MEMORY_COLUMNS}, CASE WHEN deleted = 1 THEN 'forgotten' ELSE 'expired' END "
        "FROM memories WHERE deleted = 1 OR (superseded_by IS NULL AND expires_at IS NOT NULL "
        "AND expires_at <= ?)",
        (stamp,),
    ).fetchall()
    found = {row[0]: (row[0], row_to_memory(row[:-1]), row[-1]) for row in direct}
    heads = [m.id for _, m, _ in found.values() if m.superseded_by is None]
    if heads:
        history = conn.execute(
            f"""
            WITH RECURSIVE older(id) AS (
              SELECT supersedes FROM memories
              WHERE id IN (SELECT value FROM json_each(?)) AND supersedes IS NOT NULL
              UNION
              SELECT m.supersedes FROM memories m JOIN older o ON m.id = o.id
              WHERE m.supersedes IS NOT NULL
            )
            SELECT {MEMORY_COLUMNS} FROM memories WHERE id IN (SELECT id FROM older)
            """,
            (json.dumps(heads),),
        ).fetchall()
        for row in history:
            found.setdefault(row[0], (row[0], row_to_memory(row), "history"))
    return [found[seq] for seq in sorted(found)]


def delete_memories(conn: sqlite3.Connection, seqs: Sequence[int]) -> int:
    """Delete rows for good (triggers and cascades remove FTS entries, tags and vectors), then
    reconnect the version chains they were part of around the gap. Call inside a transaction."""
    if not seqs:
        return 0
    doomed = json.dumps(list(seqs))
    links = {
        row[0]: (row[1], row[2])
        for row in conn.execute(
            "SELECT id, supersedes, superseded_by FROM memories "
            "WHERE seq IN (SELECT value FROM json_each(?))",
            (doomed,),
        )
    }
    deleted = conn.execute(
        "DELETE FROM memories WHERE seq IN (SELECT value FROM json_each(?))", (doomed,)
    ).rowcount

    def survivor(link: str | None, step: int) -> str | None:
        seen = 0
        while link in links and seen <= len(links):
            link = links[link][step]
            seen += 1
        return link

    ids = json.dumps(list(links))
    for seq, older, newer in conn.execute(
        "SELECT seq, supersedes, superseded_by FROM memories "
        "WHERE supersedes IN (SELECT value FROM json_each(?)) "
        "OR superseded_by IN (SELECT value FROM json_each(?))",
        (ids, ids),
    ).fetchall():
        if older in links:
            conn.execute("UPDATE memories SET supersedes = ? WHERE seq = ?", (survivor(older, 0), seq))
        if newer in links:
            target = survivor(newer, 1)
            if target is not None:  # never make an old version current by accident
                conn.execute("UPDATE memories SET superseded_by = ? WHERE seq = ?", (target, seq))
    return int(deleted)


def compact_text_index(conn: sqlite3.Connection) -> None:
    """Merge the FTS5 index into one segment so deleted text leaves no tokens behind."""
    for index in TEXT_INDEXES:
        conn.execute(f"INSERT INTO {index} ({index}) VALUES ('optimize')")


def export_seqs(conn: sqlite3.Connection, flt: Filter | None) -> list[int]:
    """Seqs to export: every memory (``flt`` None) or those passing ``flt`` plus every
    version linked to them, so exported history never points outside the file."""
    if flt is None:
        return [row[0] for row in conn.execute("SELECT seq FROM memories ORDER BY seq")]
    clause, params = where(flt, "m")
    rows = conn.execute(
        f"""
        WITH RECURSIVE
          picked(id) AS (SELECT m.id FROM memories m WHERE {clause}),
          linked(id) AS (
            SELECT id FROM picked
            UNION
            SELECT m.supersedes FROM memories m JOIN linked l ON m.id = l.id WHERE m.supersedes IS NOT NULL
            UNION
            SELECT m.superseded_by FROM memories m JOIN linked l ON m.id = l.id
            WHERE m.superseded_by IS NOT NULL
          )
        SELECT m.seq FROM memories m JOIN linked l ON l.id = m.id ORDER BY m.seq
        """,
        params,
    )
    return [row[0] for row in rows]


def embeddings_for(conn: sqlite3.Connection, seqs: Sequence[int]) -> dict[int, tuple[str, bytes]]:
    """seq → (model, vector bytes) for those of ``seqs`` that have an embedding."""
    found: dict[int, tuple[str, bytes]] = {}
    for chunk in chunks(seqs):
        for seq, model, vector in conn.execute(
            f"SELECT seq, model, vector FROM embeddings WHERE seq IN ({marks(chunk)})",
            chunk,
        ):
            found[seq] = (model, vector)
    return found


def find_live_by_hash_except(conn: sqlite3.Connection, chash: str, memory_id: str) -> Memory | None:
    """Like :func:`find_live_by_hash`, ignoring the memory ``memory_id`` itself."""
    row = conn.execute(
        f"SELECT {MEMORY_COLUMNS} FROM memories "
        "WHERE content_hash = ? AND deleted = 0 AND superseded_by IS NULL AND id != ?",
        (chash, memory_id),
    ).fetchone()
    return row_to_memory(row) if row else None


def memories_by_id(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, tuple[int, Memory]]:
    """id → (seq, memory) for those of ``ids`` that exist."""
    found: dict[str, tuple[int, Memory]] = {}
    for chunk in chunks(ids):
        for row in conn.execute(
            f"SELECT {MEMORY_COLUMNS} FROM memories WHERE id IN ({marks(chunk)})", chunk
        ):
            found[row[1]] = (row[0], row_to_memory(row))
    return found


def has_current_vector(conn: sqlite3.Connection, seq: int, model: str) -> bool:
    """True when the memory has a vector from ``model`` made from its current text."""
    row = conn.execute(
        "SELECT 1 FROM embeddings e JOIN memories m ON m.seq = e.seq "
        "WHERE e.seq = ? AND e.model = ? AND e.content_hash = m.content_hash",
        (seq, model),
    ).fetchone()
    return row is not None


#: The columns that change over a version's life (everything else is fixed at capture).
STATE_COLUMNS = ("deleted", "deleted_at", "superseded_by", "updated_at")


def apply_newer_state(conn: sqlite3.Connection, seq: int, values: dict[str, Any]) -> str:
    """Take the forgotten/superseded state from ``values`` if its ``updated_at`` is newer than
    the stored one. Returns ``updated``, ``unchanged`` or ``conflict`` (the newer state would
    make two live memories share a text). Call inside a transaction."""
    stored = conn.execute(
        f"SELECT {', '.join(STATE_COLUMNS)} FROM memories WHERE seq = ?", (seq,)
    ).fetchone()
    wanted = tuple(values[c] for c in STATE_COLUMNS)
    if values["updated_at"] <= stored[3] or tuple(stored[:3]) == wanted[:3]:
        return "unchanged"
    try:
        conn.execute(
            f"UPDATE memories SET {', '.join(c + ' = ?' for c in STATE_COLUMNS)} WHERE seq = ?",
            [*wanted, seq],
        )
    except sqlite3.IntegrityError:
        return "conflict"
    return "updated"


# ---------------------------------------------------------------------------------------------
# Statements the backend runs for the facade's operations


def chunks(items: Sequence[Any], size: int = 500) -> Iterator[list[Any]]:
    """``items`` in slices small enough for one ``IN (...)`` (SQLite caps bound parameters)."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def marks(values: Sequence[Any]) -> str:
    """``?, ?, …`` for an ``IN (...)`` over ``values``."""
    return ", ".join("?" * len(values))


def row_values(row: Any) -> dict[str, Any]:
    """A NewMemory as column values (tags and metadata as JSON text)."""
    values = {name: getattr(row, name) for name in row.__dataclass_fields__}
    values["tags"] = json.dumps(list(values["tags"]), ensure_ascii=False)
    values["metadata"] = json.dumps(values["metadata"], ensure_ascii=False)
    values["deleted"] = int(values["deleted"])
    return values


def mark_superseded(conn: sqlite3.Connection, seq: int, new_id: str, stamp: str) -> None:
    conn.execute("UPDATE memories SET superseded_by = ?, updated_at = ? WHERE seq = ?", (new_id, stamp, seq))


def set_forgotten(conn: sqlite3.Connection, seq: int, forgotten: bool, stamp: str) -> bool:
    """Tombstone or restore one row; False when it was already in that state."""
    if forgotten:
        cursor = conn.execute(
            "UPDATE memories SET deleted = 1, deleted_at = ?, updated_at = ? WHERE seq = ? AND deleted = 0",
            (stamp, stamp, seq),
        )
    else:
        cursor = conn.execute(
            "UPDATE memories SET deleted = 0, deleted_at = NULL, updated_at = ? "
            "WHERE seq = ? AND deleted = 1",
            (stamp, seq),
        )
    return cursor.rowcount > 0


def live_seqs(conn: sqlite3.Connection) -> list[int]:
    """Every live, current memory's seq, oldest first."""
    return [r[0] for r in conn.execute(
        "SELECT seq FROM memories WHERE deleted = 0 AND superseded_by IS NULL ORDER BY seq"
    )]


def seqs_of(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, int]:
    """id → seq for those of ``ids`` that exist."""
    found: dict[str, int] = {}
    for chunk in chunks(ids):
        found.update(conn.execute(f"SELECT id, seq FROM memories WHERE id IN ({marks(chunk)})", chunk))
    return found


@contextmanager
def secure_delete(conn: sqlite3.Connection) -> Iterator[None]:
    """SQLite's secure_delete for the block (deleted text is zeroed, not left in free pages),
    then the freed pages moved out of the WAL into the (zeroed) main file."""
    previous = conn.execute("PRAGMA secure_delete").fetchone()[0]
    conn.execute("PRAGMA secure_delete = ON")
    try:
        yield
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    finally:
        conn.execute(f"PRAGMA secure_delete = {int(previous)}")


def embeddings_by_id(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, tuple[str, str, bytes]]:
    """id → (model, content hash it was made from, vector bytes) for those that have one."""
    found: dict[str, tuple[str, str, bytes]] = {}
    for chunk in chunks(ids):
        for mid, model, chash, vector in conn.execute(
            "SELECT m.id, e.model, e.content_hash, e.vector FROM embeddings e "
            f"JOIN memories m ON m.seq = e.seq WHERE m.id IN ({marks(chunk)})",
            chunk,
        ):
            found[mid] = (model, chash, vector)
    return found


# ---------------------------------------------------------------------------------------------
# Sync


#: Columns a synced row may set (everything but seq).
SYNC_SET_COLUMNS = (
    "text", "namespace", "tags", "source", "metadata", "content_hash", "project", "branch",
    "created_at", "updated_at", "expires_at", "deleted", "deleted_at", "supersedes", "superseded_by",
)


def change_mark(conn: sqlite3.Connection) -> tuple[Any, ...]:
    """What changes with any capture, update, forget, restore or purge (sync's race check);
    last, AUTOINCREMENT's high-water mark, which never goes down (an older copy of the file
    put back has a lower one)."""
    return tuple(conn.execute(
        "SELECT count(*), coalesce(max(seq), 0), coalesce(max(updated_at), ''), "
        "coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'memories'), 0) FROM memories"
    ).fetchone())


def apply_sync_row(conn: sqlite3.Connection, row: dict[str, Any], seq: int | None) -> bool:
    """Insert (``seq`` None) or overwrite one synced row, setting only the columns that differ,
    with its vector. Returns True when its text was live here under another id (outside the
    synced rows), so it was kept superseded by that one. Call inside a transaction."""
    values = {k: v for k, v in row.items() if not k.startswith("_")}
    vector = row.get("_vector")
    kept = False
    if not values["deleted"] and values["superseded_by"] is None:
        clash = find_live_by_hash_except(conn, values["content_hash"], values["id"])
        if clash is not None:
            values["superseded_by"] = clash.id
            kept = True
    if seq is None:
        seq = insert_memory(conn, values)
    else:
        current = dict(zip(SYNC_SET_COLUMNS, conn.execute(
            f"SELECT {', '.join(SYNC_SET_COLUMNS)} FROM memories WHERE seq = ?", (seq,)
        ).fetchone(), strict=True))
        changed = {c: values[c] for c in SYNC_SET_COLUMNS if c in values and current[c] != values[c]}
        for column in ("tags", "metadata"):
            if column in changed and json.loads(changed[column]) == json.loads(current[column]):
                del changed[column]
        if changed:
            conn.execute(f"UPDATE memories SET {', '.join(c + ' = ?' for c in changed)} WHERE seq = ?",
                         [*changed.values(), seq])
    if vector is not None:
        put_embedding(conn, seq, vector[0], values["content_hash"], vector[1])
    return kept
