"""``memstore verify``: check that everything derived from the memories agrees with them.

SQLite is the truth; the FTS5 index, the tag table, the embeddings and the usearch cache are
derived from it. The checks, in order:

- ``sqlite``   PRAGMA integrity_check (or quick_check): pages, b-trees, indexes, constraints.
- ``commits``  the commits recorded beside the file are all in it (a lost write-ahead log
               after a crash is noticed), see :mod:`.guard`.
- ``fts``      FTS5 'integrity-check' of memories_fts against the memories table, and of the
               CJK trigram index memories_cjk against the memories holding CJK text.
- ``rows``     every timestamp is in the form and range memstore writes (a bad one makes the
               memory unreadable), and every version chain is whole (``memstore.chains``).
- ``tags``     memory_tags rows == the tags JSON of every memory; tags/metadata are valid JSON.
- ``vectors``  every live memory has an embedding of the current model for its current text,
               of the right size, finite and of unit length, or waits in the embedding queue (deferred
               embedding: git hooks, ``embed=False``); no embedding without its memory.
- ``models``   embeddings made by another model (only ``memstore reindex`` replaces them).
- ``index``    the saved usearch index, after replaying the change log, holds exactly the
               live embeddings of the current model, with the same vectors.
- ``keywords`` the saved derived keyword index, caught up, equals a fresh build from FTS5's
               tables (no saved index is fine: it is built on first use).

A database that fails ``sqlite`` is reported and never modified: the other checks are skipped
and repair refuses. Otherwise repair rebuilds what SQLite can give back: FTS 'rebuild', the
tag table from the JSON, orphan and malformed embeddings dropped, missing ones embedded, the
index rebuilt and saved.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...chains import chain_problems
from ...models import Check, VerifyReport
from ...timeutil import valid_stored
from . import db
from .db import transaction
from .vector_index import COSINE_SLACK, NEWER, VectorIndex

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Check", "VerifyReport", "repair", "run_checks"]

#: Problems listed per check (the count is always given in full).
MAX_LISTED = 10
_CHUNK = 2048


@dataclass(frozen=True)
class Target:
    """What the checks look at: the connection, the model in use, the index directory."""

    conn: sqlite3.Connection
    store_id: str
    model_id: str
    dimension: int
    index_dir: Path


def _listed(items: Sequence[Any], describe: Callable[[Any], str]) -> tuple[str, ...]:
    shown = tuple(describe(i) for i in items[:MAX_LISTED])
    if len(items) > MAX_LISTED:
        shown += (f"… and {len(items) - MAX_LISTED} more",)
    return shown


# -- checks -----------------------------------------------------------------------------------


def check_sqlite(conn: sqlite3.Connection, *, quick: bool) -> Check:
    pragma = "quick_check" if quick else "integrity_check"
    try:
        # (Rows whose memory is gone are logical problems, found and repaired by the
        # tags and vectors checks; they are not damage to the file.)
        rows = [r[0] for r in conn.execute(f"PRAGMA {pragma}(100)")]
    except sqlite3.DatabaseError as exc:
        rows = [f"{pragma} could not run: {exc}"]
    if rows == ["ok"]:
        return Check("sqlite", True, f"PRAGMA {pragma}: ok")
    from .salvage import diagnose, salvage_connection

    problems = [r for r in rows if r != "ok"]
    tables = diagnose(conn)
    found = salvage_connection(conn)
    readable = len(found.memories)
    damaged = [line for line in tables if ": damaged" in line]
    summary = (f"the database file is damaged ({', '.join(d.split(':')[0] for d in damaged) or 'pages'}); "
               f"{readable:,} memories readable, {found.unreadable:,} rows lost; "
               "the database will not be modified")
    hint = ("`memstore export --salvage -o FILE` writes every readable memory; import FILE into a "
            "new store (`memstore --home NEW import FILE`), or restore memstore.db from a backup")
    return Check("sqlite", False, summary, (*tables, *_listed(problems, str), hint))


def check_commits(conn: sqlite3.Connection) -> Check:
    """The commits recorded outside the database against those it holds (a lost write-ahead
    log), and the damage marker: cleared once the file passes the integrity check."""
    from .guard import commits, lost_message

    guard = getattr(conn, "guard", None)
    if guard is None:
        return Check("commits", True, "no commit record kept for this connection")
    missing = guard.lost(conn)
    if missing:
        return Check("commits", False, lost_message(missing),
                     ("`memstore verify --repair` accepts the loss and allows writes again",))
    cleared = ""
    if guard.damaged() is not None:
        guard.clear()
        cleared = "; the damage mark was cleared (the file passes the integrity check now)"
    return Check("commits", True, f"all {commits(conn):,} recorded commits are in the database{cleared}")


def check_fts(conn: sqlite3.Connection) -> Check:
    count = conn.execute("SELECT count(*) FROM memories").fetchone()[0]
    for index in db.TEXT_INDEXES:  # the word index, and the CJK trigram index
        try:
            conn.execute(f"INSERT INTO {index} ({index}, rank) VALUES ('integrity-check', 1)")
        except sqlite3.DatabaseError as exc:
            return Check("fts", False, "the full-text index does not match the memories table",
                         (f"FTS5 integrity-check of {index}: {exc}",))
    return Check("fts", True, f"full-text index matches all {count:,} memories")


def check_rows(conn: sqlite3.Connection) -> Check:
    """Timestamps every reader can parse, and version chains without holes or loops.
    (Repair cannot guess the right values: these stay listed until fixed by hand or
    restored from an export.)"""
    bad_times: list[str] = []
    rows = conn.execute(
        "SELECT id, created_at, updated_at, expires_at, deleted_at FROM memories ORDER BY seq")
    while chunk := rows.fetchmany(_CHUNK):
        for mid, created, updated, expires, deleted_at in chunk:
            for name, value, required in (("created_at", created, True), ("updated_at", updated, True),
                                          ("expires_at", expires, False), ("deleted_at", deleted_at, False)):
                if (value is not None or required) and not valid_stored(value):
                    bad_times.append(f"memory {mid}: {name} {value!r} is not a valid timestamp")
    links = {mid: (sup, by) for mid, sup, by in conn.execute(
        "SELECT id, supersedes, superseded_by FROM memories "
        "WHERE supersedes IS NOT NULL OR superseded_by IS NOT NULL")}

    def exists(ids: Sequence[str] | set[str]) -> set[str]:
        wanted, found = list(ids), set()
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            found.update(r[0] for r in conn.execute(
                f"SELECT id FROM memories WHERE id IN ({', '.join('?' * len(chunk))})", chunk))
        return found

    broken = chain_problems(links, exists)
    if bad_times or broken:
        return Check("rows", False, f"{len(bad_times)} bad timestamps, {len(broken)} broken version links",
                     (*_listed(bad_times, str), *_listed(broken, str)))
    return Check("rows", True, f"timestamps valid; {len(links):,} versioned memories form whole chains")


_VALID_TAGS = "(CASE WHEN json_valid(m.tags) AND json_type(m.tags) = 'array' THEN m.tags ELSE '[]' END)"


def check_tags(conn: sqlite3.Connection) -> Check:
    bad_json = conn.execute(
        "SELECT id, tags_ok, meta_ok FROM (SELECT m.id, "
        "CASE WHEN json_valid(m.tags) THEN json_type(m.tags) = 'array' ELSE 0 END AS tags_ok, "
        "CASE WHEN json_valid(m.metadata) THEN json_type(m.metadata) = 'object' ELSE 0 END AS meta_ok "
        "FROM memories m) WHERE NOT tags_ok OR NOT meta_ok ORDER BY id"
    ).fetchall()
    missing = conn.execute(
        f"SELECT m.id, j.value FROM memories m, json_each({_VALID_TAGS}) j "
        "WHERE NOT EXISTS (SELECT 1 FROM memory_tags t WHERE t.seq = m.seq AND t.tag = j.value) "
        "ORDER BY m.seq"
    ).fetchall()
    extra = conn.execute(
        "SELECT coalesce(m.id, '#' || t.seq), t.tag FROM memory_tags t "
        "LEFT JOIN memories m ON m.seq = t.seq WHERE NOT EXISTS ("
        f"SELECT 1 FROM json_each({_VALID_TAGS}) j WHERE j.value = t.tag) ORDER BY t.seq"
    ).fetchall()
    problems: list[str] = []
    problems += _listed(bad_json, lambda r: f"memory {r[0]}: {'tags' if not r[1] else 'metadata'} "
                        "is not valid JSON of the right type (cannot be repaired automatically)")
    problems += _listed(missing, lambda r: f"memory {r[0]}: tag {r[1]!r} missing from the tag table")
    problems += _listed(extra, lambda r: f"memory {r[0]}: tag table has {r[1]!r}, its tags do not")
    if problems:
        return Check("tags", False, f"{len(bad_json)} memories with bad JSON, {len(missing)} tags "
                     f"missing from and {len(extra)} extra in the tag table", tuple(problems))
    rows = conn.execute("SELECT count(*) FROM memory_tags").fetchone()[0]
    return Check("tags", True, f"tag table ({rows:,} rows) matches the memories' tags")


@dataclass(frozen=True)
class VectorFindings:
    missing: list[int]  # live, no embedding, and not in the embedding queue
    queued: list[int]  # live, no embedding, waiting in the queue: deferred, not a problem
    stale_queue: list[int]  # queue entries of memories that have an embedding
    stale: list[int]  # live, current model, embedded from other text
    malformed: list[int]  # any model: wrong byte length or non-finite values
    orphans: list[int]  # embeddings whose memory is gone


def find_vector_problems(conn: sqlite3.Connection, model_id: str, dimension: int) -> VectorFindings:
    import numpy as np

    live = "m.deleted = 0 AND m.superseded_by IS NULL"
    no_vector = [r[0] for r in conn.execute(
        f"SELECT m.seq FROM memories m LEFT JOIN embeddings e ON e.seq = m.seq "
        f"WHERE {live} AND e.seq IS NULL ORDER BY m.seq")]
    try:
        queue = {r[0] for r in conn.execute("SELECT seq FROM pending_embeddings")}
        stale_queue = [r[0] for r in conn.execute(
            "SELECT p.seq FROM pending_embeddings p JOIN embeddings e ON e.seq = p.seq ORDER BY p.seq")]
    except sqlite3.OperationalError:  # a schema without the deferred-embedding queue
        queue, stale_queue = set(), []
    missing = [s for s in no_vector if s not in queue]
    queued = [s for s in no_vector if s in queue]
    stale = [r[0] for r in conn.execute(
        f"SELECT m.seq FROM memories m JOIN embeddings e ON e.seq = m.seq "
        f"WHERE {live} AND e.model = ? AND e.content_hash != m.content_hash ORDER BY m.seq",
        (model_id,))]
    orphans = [r[0] for r in conn.execute(
        "SELECT e.seq FROM embeddings e LEFT JOIN memories m ON m.seq = e.seq "
        "WHERE m.seq IS NULL ORDER BY e.seq")]
    malformed = [r[0] for r in conn.execute(
        "SELECT seq FROM embeddings WHERE model = ? AND length(vector) != ? ORDER BY seq",
        (model_id, dimension * 4))]
    malformed += [r[0] for r in conn.execute(
        "SELECT seq FROM embeddings WHERE model != ? AND (length(vector) % 4 != 0 OR length(vector) = 0) "
        "ORDER BY seq", (model_id,))]
    rows = conn.execute(
        "SELECT seq, vector FROM embeddings WHERE length(vector) = ? AND model = ? ORDER BY seq",
        (dimension * 4, model_id),
    )
    while True:
        chunk = rows.fetchmany(_CHUNK)
        if not chunk:
            break
        matrix = np.frombuffer(b"".join(r[1] for r in chunk), dtype="<f4").reshape(len(chunk), dimension)
        finite = np.isfinite(matrix).all(axis=1)
        with np.errstate(invalid="ignore", over="ignore"):
            unit = np.abs(np.linalg.norm(matrix.astype(np.float64), axis=1) - 1.0) <= COSINE_SLACK
        malformed += [chunk[i][0] for i in np.flatnonzero(~(finite & unit))]
    return VectorFindings(missing, queued, stale_queue, stale, sorted(set(malformed)), orphans)


def _ids(conn: sqlite3.Connection, seqs: Sequence[int]) -> dict[int, str]:
    found: dict[int, str] = {}
    for chunk in db.chunks(seqs):
        found.update(conn.execute(
            f"SELECT seq, id FROM memories WHERE seq IN ({db.marks(chunk)})", chunk))
    return found


def check_vectors(t: Target) -> Check:
    f = find_vector_problems(t.conn, t.model_id, t.dimension)
    ids = _ids(t.conn, [*f.missing[:MAX_LISTED], *f.stale[:MAX_LISTED], *f.malformed[:MAX_LISTED]])
    name = lambda seq: ids.get(seq, f"#{seq}")  # noqa: E731
    problems: list[str] = []
    problems += _listed(f.missing, lambda s: f"memory {name(s)} has no embedding and is not queued for one")
    problems += _listed(f.stale, lambda s: f"memory {name(s)}: embedding was made from older text")
    problems += _listed(f.malformed, lambda s: f"memory {name(s)}: embedding is malformed "
                        "(wrong size, not finite or not unit length)")
    if f.orphans:
        problems.append(f"{len(f.orphans)} embeddings belong to no memory")
    if f.stale_queue:
        problems.append(f"{len(f.stale_queue)} memories are queued for an embedding they already have")
    if problems:
        return Check("vectors", False, f"{len(f.missing)} missing, {len(f.stale)} stale, "
                     f"{len(f.malformed)} malformed, {len(f.orphans)} orphan embeddings",
                     tuple(problems))
    live = t.conn.execute(
        "SELECT count(*) FROM memories WHERE deleted = 0 AND superseded_by IS NULL").fetchone()[0]
    queued = (f"; {len(f.queued):,} wait in the embedding queue (the next recall or `memstore "
              "reindex` embeds them)") if f.queued else ""
    return Check("vectors", True, f"every embedding is well-formed; "
                 f"{live - len(f.queued):,} of {live:,} live memories embedded{queued}")


def check_models(t: Target) -> Check:
    models = db.embedding_models(t.conn)
    others = {m: n for m, n in models.items() if m != t.model_id}
    if others:
        listed = ", ".join(f"{n:,} by {m}" for m, n in sorted(others.items()))
        return Check("models", False, f"vectors from another model than {t.model_id}: {listed}",
                     (f"run `memstore reindex` to re-embed them with {t.model_id}",))
    current = models.get(t.model_id, 0)
    return Check("models", True, f"all {current:,} live vectors are from {t.model_id}")


def check_index(t: Target) -> Check:
    """Load the saved index as the next open would, replay the log, compare with SQLite."""
    conn = t.conn
    index = VectorIndex(t.index_dir, t.model_id, t.dimension)
    for last_try in (False, True):
        conn.execute("BEGIN")  # one snapshot for the log and the vectors
        try:
            head, floor = db.log_head(conn), db.log_floor(conn)
            problem = index.load(t.store_id, floor, head)
            if problem != NEWER or last_try:  # newer: saved since our snapshot; look again
                return _check_loaded(t, index, problem, head)
        finally:
            conn.execute("COMMIT")
    raise AssertionError("unreachable")


def _check_loaded(t: Target, index: VectorIndex, problem: str | None, head: int) -> Check:
    conn = t.conn
    if problem:
        return Check("index", False, "the saved vector index is unusable (it is rebuilt "
                     "automatically on next use)", (problem,))
    if not index.loaded:
        return Check("index", True, "no saved index yet (built on first recall)")
    replayed = head - index.position
    if replayed:
        touched, _ = db.changed_seqs(conn, index.position)
        index.apply(touched, dict(db.live_vectors(conn, t.model_id, touched)), head)
    problems = _compare_index(index, conn, t.model_id, t.dimension)
    if problems:
        return Check("index", False, "the saved vector index disagrees with the database", problems)
    note = f", after replaying {replayed:,} logged changes" if replayed else ""
    return Check("index", True, f"saved index holds exactly the {len(index):,} live vectors{note}")


def _compare_index(
    index: VectorIndex, conn: sqlite3.Connection, model_id: str, dimension: int
) -> tuple[str, ...]:
    import numpy as np

    in_index = set(index.keys())
    expected: set[int] = set()
    differ: list[int] = []
    rows = db.live_vectors(conn, model_id)
    while True:
        chunk = [r for _, r in zip(range(_CHUNK), rows, strict=False)]
        if not chunk:
            break
        good = [(seq, blob) for seq, blob in chunk if len(blob) == dimension * 4]
        expected.update(seq for seq, _ in good)
        keys = [seq for seq, _ in good if seq in in_index]
        if keys:
            stored = np.frombuffer(b"".join(b for s, b in good if s in in_index), dtype="<f4")
            stored = stored.reshape(len(keys), dimension)
            held = index.vectors(keys)
            close = np.isclose(held, stored, rtol=1e-5, atol=1e-6 + index.tolerance).all(axis=1)
            differ += [keys[i] for i in np.flatnonzero(~close)]
    problems: list[str] = []
    lacking = sorted(expected - in_index)
    extra = sorted(in_index - expected)
    if lacking:
        problems.append(f"{len(lacking)} live vectors are missing from the index")
    if extra:
        problems.append(f"{len(extra)} index entries have no live vector (forgotten or purged)")
    if differ:
        problems.append(f"{len(differ)} index vectors differ from the database")
    return tuple(problems)


def check_keywords(t: Target) -> Check:
    """Load the saved keyword index as the next recall would, catch it up, compare it with
    a fresh build from FTS5's tables. Skipped (ok) when none is saved."""
    from .keyword_index import NEWER as KEYWORDS_NEWER
    from .keyword_index import KeywordIndex

    conn = t.conn
    index = KeywordIndex(t.index_dir)
    for last_try in (False, True):
        conn.execute("BEGIN")  # one snapshot for the log, the rows and FTS5's tables
        try:
            head, floor = db.log_head(conn), db.log_floor(conn)
            problem = index.load(t.store_id, floor, head)
            if problem == KEYWORDS_NEWER and not last_try:
                continue
            if problem:
                return Check("keywords", False, "the saved keyword index is unusable (it is rebuilt "
                             "automatically on next use)", (problem,))
            if not index.loaded:
                return Check("keywords", True, "no saved keyword index (built on first use)")
            touched = [s for s, in conn.execute(
                "SELECT DISTINCT seq FROM vector_log WHERE op > ?", (index.position,))]
            problem = index.catch_up(conn, touched, head)
            problems = [problem] if problem else index.differences(conn)
            if problems:
                return Check("keywords", False, "the saved keyword index disagrees with the "
                             "full-text index", tuple(problems))
            return Check("keywords", True, f"saved keyword index matches the full-text index "
                         f"({index.docs:,} rows)")
        finally:
            conn.execute("COMMIT")
    raise AssertionError("unreachable")


def run_checks(t: Target, *, quick: bool = False) -> list[Check]:
    """Every check; only ``sqlite`` when the database itself is damaged."""
    first = check_sqlite(t.conn, quick=quick)
    guard = getattr(t.conn, "guard", None)
    if not first.ok:
        if guard is not None:  # every process refuses writes from now on
            guard.mark_damaged(first.summary)
        skipped = [Check(n, False, "skipped: the database is damaged", skipped=True)
                   for n in ("commits", "fts", "rows", "tags", "vectors", "models", "index", "keywords")]
        return [first, *skipped]
    checks = [first, check_commits(t.conn)]
    for fn in (lambda: check_fts(t.conn), lambda: check_rows(t.conn), lambda: check_tags(t.conn),
               lambda: check_vectors(t), lambda: check_models(t), lambda: check_index(t),
               lambda: check_keywords(t)):
        checks.append(fn())
    return checks


# -- repair -----------------------------------------------------------------------------------


def repair(
    t: Target,
    checks: list[Check],
    *,
    embed: Callable[[Sequence[str]], np.ndarray],
    rebuild_index: Callable[[], int],
    rebuild_keywords: Callable[[], int | None] | None = None,
) -> list[str]:
    """Fix what SQLite can give back; returns one line per action. Never called when the
    ``sqlite`` check failed."""
    failed = {c.name for c in checks if not c.ok}
    assert "sqlite" not in failed, "repair refuses a damaged database"
    conn = t.conn
    done: list[str] = []
    if "commits" in failed:  # first: the damage mark refuses the writes below
        from .guard import commits

        guard = conn.guard
        missing = guard.lost(conn)
        guard.record(commits(conn))
        guard.clear()
        done.append(f"accepted the loss of {missing} committed write(s); writes are allowed again")
    if "fts" in failed:
        with transaction(conn):
            for index in db.TEXT_INDEXES:
                conn.execute(f"INSERT INTO {index} ({index}) VALUES ('rebuild')")
        done.append("rebuilt the full-text index from the memories table")
    if "tags" in failed:
        with transaction(conn):
            before = conn.execute("SELECT count(*) FROM memory_tags").fetchone()[0]
            conn.execute("DELETE FROM memory_tags")
            conn.execute(
                f"INSERT INTO memory_tags (tag, seq) SELECT DISTINCT j.value, m.seq "
                f"FROM memories m, json_each({_VALID_TAGS}) j WHERE j.type = 'text'"
            )
            after = conn.execute("SELECT count(*) FROM memory_tags").fetchone()[0]
        done.append(f"rebuilt the tag table from the memories' tags ({before:,} → {after:,} rows)")
    if "vectors" in failed:
        done += _repair_vectors(t, embed)
    if failed & {"vectors", "index"}:
        count = rebuild_index()
        done.append(f"rebuilt and saved the vector index ({count:,} vectors)")
    if rebuild_keywords is not None and failed & {"fts", "keywords"}:
        rows = rebuild_keywords()
        if rows is not None:
            done.append(f"rebuilt and saved the keyword index ({rows:,} rows)")
    return done


def _repair_vectors(t: Target, embed: Callable[[Sequence[str]], np.ndarray]) -> list[str]:
    conn = t.conn
    f = find_vector_problems(conn, t.model_id, t.dimension)
    done: list[str] = []
    drop = sorted(set(f.malformed) | set(f.orphans))
    if drop:
        with transaction(conn):
            for chunk in db.chunks(drop):
                conn.execute(f"DELETE FROM embeddings WHERE seq IN ({db.marks(chunk)})", chunk)
        done.append(f"dropped {len(f.malformed)} malformed and {len(f.orphans)} orphan embeddings")
    if f.stale_queue:
        with transaction(conn):
            conn.execute("DELETE FROM pending_embeddings WHERE seq IN (SELECT seq FROM embeddings)")
        done.append(f"dropped {len(f.stale_queue)} stale entries from the embedding queue")
    # Malformed ones of the current model, missing and stale ones: embed with the current model.
    # (Good vectors of another model are left for `memstore reindex`.)
    redo = sorted(set(f.missing) | set(f.queued) | set(f.stale) | {
        s for s in f.malformed
        if conn.execute("SELECT 1 FROM memories WHERE seq = ? AND deleted = 0 AND superseded_by IS NULL",
                        (s,)).fetchone()
    })
    embedded = 0
    for start in range(0, len(redo), 256):
        batch = db.texts_for(conn, redo[start : start + 256])
        vectors = embed([text for _, text, _ in batch])
        with transaction(conn):
            for (seq, _text, chash), vec in zip(batch, vectors, strict=True):
                db.put_embedding(conn, seq, t.model_id, chash, vec.astype("<f4").tobytes())
        embedded += len(batch)
    if embedded:
        done.append(f"embedded {embedded} memories with {t.model_id}")
    return done
