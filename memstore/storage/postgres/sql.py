"""Every SQL statement of the PostgreSQL backend (with ``schema.py``), as functions of a
connection: the backend class composes them into the contract's operations.

Rows are addressed by ``seq`` (the private key). What differs from SQLite:

- **Duplicates under concurrent writers**: :func:`insert_memory` is ``INSERT … ON CONFLICT
  DO NOTHING`` against the partial unique index of live current hashes; near-duplicate
  decisions run under :func:`lock_scope` (an advisory transaction lock per namespace and
  project), so two writers of nearly the same text cannot both miss each other.
- **Vectors**: a ``vector(d)`` column with an HNSW (cosine) index; a filter that leaves at
  most EXACT_FILTER_MAX rows is searched exactly over exactly those rows, a broader one
  through the index with pgvector ≥ 0.8's iterative scan (it walks on until enough rows
  pass the filter), so filters hold on the vector leg too.
- **Keyword leg**: a tsvector (trigger-kept, same statement as the row) with a GIN index,
  ranked by Okapi BM25 computed in SQL over the matching live memories
  (:func:`keyword_search`); CJK text through a pg_trgm index and substring counts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ...errors import ConflictError, StoreError
from ...models import Memory
from ...timeutil import parse_ts
from .filters import filter_sql
from .schema import TEXT_CONFIG

if TYPE_CHECKING:
    import numpy as np
    import psycopg

#: At most this many filtered rows, the vector leg compares with each of them exactly
#: instead of walking the HNSW graph (scripts/bench_postgres.py measures both).
EXACT_FILTER_MAX = 5000
#: HNSW candidate list: ≥ the leg depth (50); with iterative scans pgvector extends it on
#: demand. 64, the SQLite backend's usearch beam up to 200k vectors: at 100k memories the
#: scan took 3.8 ms against 5.6 ms with 100 (scripts/bench_postgres.py's store).
EF_SEARCH = 64
#: BM25 parameters (SQLite FTS5's defaults).
BM25_K1 = 1.2
BM25_B = 0.75
#: How long corpus statistics for BM25 (N, average length) are reused before re-reading.
STATS_TTL_S = 30.0
#: The columns that change over a version's life (everything else is fixed at capture).
STATE_COLUMNS = ("deleted", "deleted_at", "superseded_by", "updated_at")

MEMORY_COLUMNS = (
    "seq, id, text, namespace, tags, source, metadata, content_hash, project, branch, "
    "created_at, updated_at, expires_at, deleted, supersedes, superseded_by, deleted_at, author"
)
_LIVE = "NOT m.deleted AND m.superseded_by IS NULL"
_HAS_AUTHOR = "author" in getattr(Memory, "__dataclass_fields__", {})


def _prefixed(alias: str) -> str:
    return ", ".join(f"{alias}.{c.strip()}" for c in MEMORY_COLUMNS.split(","))


def row_to_memory(row: Sequence[Any]) -> Memory:
    """A ``SELECT MEMORY_COLUMNS`` row as a Memory (seq dropped; author kept when Memory has it)."""
    (
        _seq, id_, text, namespace, tags, source, metadata, chash, project, branch,
        created, updated, expires, deleted, supersedes, superseded_by, deleted_at, author,
    ) = row
    extra = {"author": author} if _HAS_AUTHOR else {}
    return Memory(
        id=id_, text=text, namespace=namespace, tags=tuple(tags), source=source,
        metadata=dict(metadata), content_hash=chash, created_at=created, updated_at=updated,
        project=project, branch=branch, expires_at=expires, deleted=bool(deleted),
        supersedes=supersedes, superseded_by=superseded_by, deleted_at=deleted_at, **extra,
    )


def _ts(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return parse_ts(str(value))


def _column_values(values: dict[str, Any]) -> dict[str, Any]:
    """A row as the store prepares it (SQLite encodings: JSON text, ISO strings, 0/1) in
    PostgreSQL's types. Keys starting with "_" are the caller's notes, not columns."""
    from psycopg.types.json import Json

    row = {k: v for k, v in values.items() if not k.startswith("_")}
    if isinstance(row.get("tags"), str):
        row["tags"] = json.loads(row["tags"])
    if "tags" in row:
        row["tags"] = list(row["tags"])
    if "metadata" in row:
        meta = row["metadata"]
        # The store's own JSON text when it has one (exactly what SQLite keeps), else encoded here.
        row["metadata"] = meta if isinstance(meta, str) else Json(dict(meta or {}), dumps=_dumps)
    for key in ("created_at", "updated_at", "expires_at", "deleted_at"):
        if key in row:
            row[key] = _ts(row[key])
    if "deleted" in row:
        row["deleted"] = bool(row["deleted"])
    return row


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, allow_nan=False)


def _vector(data: bytes | np.ndarray) -> Any:
    import numpy as np
    from pgvector import Vector

    if isinstance(data, (bytes, bytearray, memoryview)):
        data = np.frombuffer(bytes(data), dtype="<f4")
    return Vector(np.asarray(data, dtype=np.float32))


def _vector_bytes(value: Any) -> bytes:
    import numpy as np

    array = value.to_numpy() if hasattr(value, "to_numpy") else np.asarray(value)
    return np.asarray(array, dtype="<f4").tobytes()


def _like_pattern(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"

def lock_scope(conn: psycopg.Connection, namespace: str, project: str | None) -> None:
    """Serialise near-duplicate decisions in one namespace/project until the transaction ends
    (other scopes, and exact-duplicate captures, do not wait)."""
    key = "memstore:near-duplicates\x1f" + namespace + "\x1f" + (project or "")  # no NUL: PG text
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (key,))


def insert_memory(conn: psycopg.Connection, values: dict[str, Any]) -> int | None:
    """Insert one memory; its seq, or None when a live current memory already has its
    content hash (the unique index decides: no check-then-insert race)."""
    found = insert_memory_returning(conn, values)
    return found[0] if found else None


def insert_memory_returning(conn: psycopg.Connection, values: dict[str, Any]) -> tuple[int, Memory] | None:
    """:func:`insert_memory`, returning the stored row as well (no second round trip)."""
    row = _column_values(values)
    columns = ", ".join(row)  # keys are the store's column names, never user text
    placeholders = ", ".join(["%s"] * len(row))
    live = not row.get("deleted") and row.get("superseded_by") is None
    conflict = (
        " ON CONFLICT (content_hash) WHERE NOT deleted AND superseded_by IS NULL DO NOTHING"
        if live else ""
    )
    found = conn.execute(
        f"INSERT INTO memories ({columns}) VALUES ({placeholders}){conflict} RETURNING {MEMORY_COLUMNS}",
        list(row.values()),
    ).fetchone()
    return (int(found[0]), row_to_memory(found)) if found else None

def find_live_by_hash(conn: psycopg.Connection, chash: str, *, except_id: str | None = None
                      ) -> Memory | None:
    """The current, not forgotten memory with this content hash (other than ``except_id``)."""
    row = conn.execute(
        f"SELECT {MEMORY_COLUMNS} FROM memories WHERE content_hash = %s "
        "AND NOT deleted AND superseded_by IS NULL AND id IS DISTINCT FROM %s",
        (chash, except_id),
    ).fetchone()
    return row_to_memory(row) if row else None

def get_memory(conn: psycopg.Connection, memory_id: str) -> tuple[int, Memory] | None:
    row = conn.execute(f"SELECT {MEMORY_COLUMNS} FROM memories WHERE id = %s", (memory_id,)).fetchone()
    return (int(row[0]), row_to_memory(row)) if row else None

def memories_by_seq(conn: psycopg.Connection, seqs: Sequence[int]) -> dict[int, Memory]:
    rows = conn.execute(
        f"SELECT {MEMORY_COLUMNS} FROM memories WHERE seq = ANY(%s)", (list(seqs),)
    ).fetchall()
    return {int(r[0]): row_to_memory(r) for r in rows}

def memories_by_id(conn: psycopg.Connection, ids: Sequence[str]) -> dict[str, tuple[int, Memory]]:
    rows = conn.execute(
        f"SELECT {MEMORY_COLUMNS} FROM memories WHERE id = ANY(%s)", (list(ids),)
    ).fetchall()
    return {r[1]: (int(r[0]), row_to_memory(r)) for r in rows}

# Statements whose best plan depends on the filter's values (list_memories, filtered_seqs,
# keyword_search, cjk_search) run unprepared (``prepare=False``), so the server plans them
# for the values at hand: psycopg prepares a statement on its 5th run, and PostgreSQL's
# generic plan then ignores a filter's selectivity (a 1% namespace filter went from 3.5 ms
# to 70 ms at 100k memories). Fixed-shape statements stay prepared (no planning per call).


def list_memories(conn: psycopg.Connection, flt: Any, limit: int, offset: int = 0,
                  **extra: Any) -> list[Memory]:
    """Memories passing the filter, newest first."""
    where, params = filter_sql(flt, "m", **extra)
    rows = conn.execute(
        f"SELECT {_prefixed('m')} FROM memories m WHERE {where} "
        "ORDER BY m.created_at DESC, m.seq DESC LIMIT %s OFFSET %s",
        [*params, limit, offset], prepare=False,
    ).fetchall()
    return [row_to_memory(r) for r in rows]

def filtered_seqs(conn: psycopg.Connection, flt: Any, limit: int, **extra: Any) -> list[int]:
    """Seqs passing the filter, at most ``limit`` + 1 (so callers can tell it overflowed)."""
    where, params = filter_sql(flt, "m", **extra)
    rows = conn.execute(f"SELECT m.seq FROM memories m WHERE {where} LIMIT %s", [*params, limit + 1],
                        prepare=False)  # planned for these values (see above list_memories)
    return [int(r[0]) for r in rows]

def seqs_passing(conn: psycopg.Connection, flt: Any, seqs: Sequence[int], **extra: Any) -> set[int]:
    where, params = filter_sql(flt, "m", **extra)
    rows = conn.execute(
        f"SELECT m.seq FROM memories m WHERE m.seq = ANY(%s) AND {where}", [list(seqs), *params]
    )
    return {int(r[0]) for r in rows}

def set_state(conn: psycopg.Connection, seq: int, **state: Any) -> None:
    """Change a version's life-cycle columns (deleted, deleted_at, superseded_by, updated_at).
    Making a memory live again when another live memory has its text: ConflictError."""
    from psycopg import errors as pgerr

    allowed = {"deleted", "deleted_at", "superseded_by", "updated_at", "expires_at"}
    unknown = set(state) - allowed
    if unknown:
        raise ValueError(f"not state columns: {sorted(unknown)}")
    values = _column_values(state)
    sets = ", ".join(f"{k} = %s" for k in values)
    try:
        with conn.transaction():  # a savepoint: the caller's transaction survives a clash
            conn.execute(f"UPDATE memories SET {sets} WHERE seq = %s", [*values.values(), seq])
    except pgerr.UniqueViolation:
        raise ConflictError("another live memory has the same text") from None

# -- keyword leg ----------------------------------------------------------------------------

class CorpusStats:
    """(live memories, their mean indexed length) for BM25, re-read every STATS_TTL_S: exact
    values matter little to the ranking, and counting 100k rows per query would dominate it."""

    def __init__(self) -> None:
        self._read_at = -1e9
        self._values = (0.0, 0.0)

    def get(self, conn: psycopg.Connection) -> tuple[float, float]:
        if time.monotonic() - self._read_at > STATS_TTL_S:
            row = conn.execute(
                "SELECT count(*), coalesce(avg(doc_len), 0) FROM memories m WHERE " + _LIVE
            ).fetchone()
            self._values = (float(row[0]), float(row[1]))
            self._read_at = time.monotonic()
        return self._values


def keyword_search(
    conn: psycopg.Connection, terms: Sequence[str], flt: Any, limit: int,
    *, ranking: str = "bm25", stats: CorpusStats | None = None, **extra: Any,
) -> list[tuple[int, float]]:
    """(seq, score) of memories matching any of ``terms`` (stemmed like the index), best
    first, filter applied. The score is negated, as SQLite's ``bm25()`` (more negative
    is better), so ``terms.keyword_strength`` and the fusion use it unchanged. ``ranking``:
    ``bm25`` (Okapi BM25 over the matching live memories, FTS5's k1/b), or ``ts_rank_cd`` /
    ``ts_rank`` (PostgreSQL's own, length-normalised; measured against BM25 in
    docs/team-store.md)."""
    words = [t for t in terms if t]
    if not words:
        return []
    where, params = filter_sql(flt, "m", **extra)
    lexemes = "SELECT DISTINCT lexeme FROM unnest(%(words)s::text[]) w, " \
              f"unnest(tsvector_to_array(to_tsvector('{TEXT_CONFIG}', w))) AS lexeme"
    query = "SELECT coalesce(string_agg(quote_literal(lexeme), ' | '), '')::tsquery AS q FROM lex"
    named = {f"p{i}": v for i, v in enumerate(params)}
    where_named = where
    for i in range(len(params)):
        where_named = where_named.replace("%s", f"%(p{i})s", 1)
    args = {"words": words, "limit": limit, **named}
    if ranking in ("ts_rank_cd", "ts_rank"):
        rows = conn.execute(
            f"WITH lex AS ({lexemes}), q AS ({query}) "
            f"SELECT m.seq, {ranking}(m.tsv, (SELECT q FROM q), 1) AS score FROM memories m "
            f"WHERE m.tsv @@ (SELECT q FROM q) AND {where_named} "
            "ORDER BY score DESC, m.seq DESC LIMIT %(limit)s",
            args, prepare=False,
        ).fetchall()
        return [(int(r[0]), -float(r[1])) for r in rows]
    if ranking != "bm25":
        raise ValueError(f"unknown ranking {ranking!r}")
    n, avgdl = (stats or CorpusStats()).get(conn)
    args.update(n=max(n, 1.0), avgdl=max(avgdl, 1.0), k1=BM25_K1, b=BM25_B)
    rows = conn.execute(
        f"""
        WITH lex AS ({lexemes}), q AS ({query}),
        hits AS MATERIALIZED (
            SELECT m.seq, m.tsv, m.doc_len, ({where_named}) AS passes
            FROM memories m WHERE m.tsv @@ (SELECT q FROM q) AND {_LIVE}
        ),
        terms AS MATERIALIZED (SELECT lexeme, quote_literal(lexeme)::tsquery AS lq FROM lex),
        tf AS (
            SELECT h.seq, h.doc_len, h.passes, t.lexeme, memstore_tf(h.tsv, t.lq) AS tf
            FROM hits h JOIN terms t ON h.tsv @@ t.lq
        ),
        df AS (SELECT lexeme, count(*) AS df FROM tf GROUP BY lexeme)
        SELECT tf.seq, sum(
            ln(1 + (%(n)s - df.df + 0.5) / (df.df + 0.5))
            * tf.tf * (%(k1)s + 1)
            / (tf.tf + %(k1)s * (1 - %(b)s + %(b)s * tf.doc_len / %(avgdl)s))
        ) AS score
        FROM tf JOIN df USING (lexeme) WHERE tf.passes
        GROUP BY tf.seq ORDER BY score DESC, tf.seq DESC LIMIT %(limit)s
        """,
        args, prepare=False,
    ).fetchall()
    return [(int(r[0]), -float(r[1])) for r in rows]

def cjk_search(conn: psycopg.Connection, grams: Sequence[str], flt: Any, limit: int,
               seqs: Sequence[int] | None = None, *, indexed: bool = True, **extra: Any
               ) -> list[tuple[int, int]]:
    """(seq, how many of ``grams`` its text contains) for memories holding any, most first,
    newest first among equals, filter applied (only ``seqs`` when given). ``indexed``:
    search CJK memories through the trigram index (grams of 3+ characters); otherwise
    scan (1–2 character words no trigram can find)."""
    grams = [g for g in dict.fromkeys(grams) if g]
    if not grams or (seqs is not None and not seqs):
        return []
    where, params = filter_sql(flt, "m", **extra)
    restrict, restrict_params = "", []
    if seqs is not None:
        restrict, restrict_params = " AND m.seq = ANY(%s)", [list(seqs)]
    if indexed:
        rows = conn.execute(
            "SELECT m.seq, (SELECT count(*) FROM unnest(%s::text[]) g "
            "WHERE strpos(m.text, g) > 0) AS found "
            f"FROM memories m WHERE m.has_cjk AND m.text LIKE ANY(%s) AND {where}{restrict} "
            "ORDER BY found DESC, m.seq DESC LIMIT %s",
            [grams, [_like_pattern(g) for g in grams], *params, *restrict_params, limit], prepare=False,
        ).fetchall()
    else:
        rows = conn.execute(
            "SELECT * FROM (SELECT m.seq, (SELECT count(*) FROM unnest(%s::text[]) g "
            f"WHERE strpos(m.text, g) > 0) AS found FROM memories m WHERE {where}{restrict}) s "
            "WHERE found > 0 ORDER BY found DESC, seq DESC LIMIT %s",
            [grams, *params, *restrict_params, limit], prepare=False,
        ).fetchall()
    return [(int(r[0]), int(r[1])) for r in rows]

# -- vectors ----------------------------------------------------------------------------------

def put_embedding(conn: psycopg.Connection, seq: int, model: str, chash: str,
                  vector: bytes | np.ndarray, dimension: int) -> None:
    """Store (or replace) a memory's embedding (little-endian float32 bytes or an array)."""
    vec = _vector(vector)
    if len(vec.to_list()) != dimension:
        raise StoreError(
            f"a {len(vec.to_list())}-dimensional vector cannot be stored in this team store "
            f"(made for {dimension}); run `memstore reindex` with the store's model"
        )
    conn.execute(
        "INSERT INTO embeddings (seq, model, content_hash, vector) VALUES (%s, %s, %s, %s) "
        "ON CONFLICT (seq) DO UPDATE SET model = excluded.model, "
        "content_hash = excluded.content_hash, vector = excluded.vector",
        (seq, model, chash, vec),
    )

def vector_search(
    conn: psycopg.Connection, query: np.ndarray, model: str, flt: Any, limit: int,
    seqs: Sequence[int] | None = None, *, iterative: bool = True, **extra: Any,
) -> list[tuple[int, float]]:
    """(seq, cosine) of the ``limit`` nearest live memories embedded by ``model`` that pass
    ``flt`` (among ``seqs`` when given), nearest first.

    A filter leaving at most EXACT_FILTER_MAX memories (or given ``seqs``): exact
    distances over exactly those rows. Otherwise the HNSW index with pgvector ≥ 0.8's
    iterative scan, which keeps walking the graph until ``limit`` rows pass the filter."""
    qvec = _vector(query)
    where, params = filter_sql(flt, "m", **extra)
    if seqs is None and getattr(flt, "is_selective", lambda: True)():
        candidates = filtered_seqs(conn, flt, EXACT_FILTER_MAX, **extra)
        if len(candidates) <= EXACT_FILTER_MAX:
            seqs = candidates
    if seqs is not None:
        if not seqs:
            return []
        rows = conn.execute(
            "WITH c AS MATERIALIZED (SELECT e.seq, e.vector <=> %s AS d FROM embeddings e "
            f"JOIN memories m ON m.seq = e.seq WHERE e.seq = ANY(%s) AND e.model = %s AND {where}) "
            "SELECT seq, 1 - d FROM c ORDER BY d, seq LIMIT %s",
            [qvec, list(seqs), model, *params, limit],
        ).fetchall()
        return [(int(r[0]), float(r[1])) for r in rows]
    query_sql = (
        "WITH c AS MATERIALIZED (SELECT e.seq, e.vector <=> %s AS d FROM embeddings e "
        f"JOIN memories m ON m.seq = e.seq WHERE e.model = %s AND {where} "
        "ORDER BY e.vector <=> %s LIMIT %s) SELECT seq, 1 - d FROM c ORDER BY d, seq"
    )
    args = [qvec, model, *params, qvec, limit]
    if limit <= EF_SEARCH and iterative:  # the session settings (connection.configure) suffice
        rows = conn.execute(query_sql, args).fetchall()
    else:
        with conn.transaction():
            conn.execute(f"SET LOCAL hnsw.ef_search = {max(EF_SEARCH, int(limit))}")
            conn.execute(f"SET LOCAL hnsw.iterative_scan = {'relaxed_order' if iterative else 'off'}")
            rows = conn.execute(query_sql, args).fetchall()
    return [(int(r[0]), float(r[1])) for r in rows]

def live_vectors(conn: psycopg.Connection, model: str, seqs: Sequence[int] | None = None
                 ) -> Iterator[tuple[int, bytes]]:
    """(seq, float32 bytes) of live memories embedded by ``model``; all, or of ``seqs``."""
    base = (f"SELECT e.seq, e.vector FROM embeddings e JOIN memories m ON m.seq = e.seq "
            f"WHERE e.model = %s AND {_LIVE}")
    if seqs is None:
        cur = conn.execute(base + " ORDER BY e.seq", (model,))
    else:
        cur = conn.execute(base + " AND e.seq = ANY(%s)", (model, list(seqs)))
    for seq, vec in cur:
        yield int(seq), _vector_bytes(vec)

def embeddings_for(conn: psycopg.Connection, seqs: Sequence[int]) -> dict[int, tuple[str, bytes]]:
    rows = conn.execute(
        "SELECT seq, model, vector FROM embeddings WHERE seq = ANY(%s)", (list(seqs),)
    ).fetchall()
    return {int(r[0]): (r[1], _vector_bytes(r[2])) for r in rows}

def embedding_models(conn: psycopg.Connection) -> dict[str, int]:
    rows = conn.execute(
        f"SELECT e.model, count(*) FROM embeddings e JOIN memories m ON m.seq = e.seq "
        f"WHERE {_LIVE} GROUP BY e.model"
    )
    return {r[0]: int(r[1]) for r in rows}

def has_other_models(conn: psycopg.Connection, model: str) -> bool:
    row = conn.execute("SELECT 1 FROM embeddings WHERE model <> %s LIMIT 1", (model,)).fetchone()
    return row is not None

def has_current_vector(conn: psycopg.Connection, seq: int, model: str) -> bool:
    return conn.execute(
        "SELECT 1 FROM embeddings e JOIN memories m ON m.seq = e.seq "
        "WHERE e.seq = %s AND e.model = %s AND e.content_hash = m.content_hash", (seq, model)
    ).fetchone() is not None

def seqs_needing_embedding(conn: psycopg.Connection, model: str) -> list[int]:
    rows = conn.execute(
        "SELECT m.seq FROM memories m LEFT JOIN embeddings e ON e.seq = m.seq "
        f"WHERE {_LIVE} AND (e.seq IS NULL OR e.model <> %s OR e.content_hash <> m.content_hash) "
        "ORDER BY m.seq", (model,),
    )
    return [int(r[0]) for r in rows]

def pending_seqs(conn: psycopg.Connection, limit: int | None = None) -> list[int]:
    rows = conn.execute(
        f"SELECT p.seq FROM pending_embeddings p JOIN memories m ON m.seq = p.seq WHERE {_LIVE} "
        "ORDER BY p.seq DESC LIMIT %s", (limit,),
    )
    return [int(r[0]) for r in rows]

def pending_count(conn: psycopg.Connection) -> int:
    row = conn.execute(
        f"SELECT count(*) FROM pending_embeddings p JOIN memories m ON m.seq = p.seq WHERE {_LIVE}"
    ).fetchone()
    return int(row[0])

def texts_for(conn: psycopg.Connection, seqs: Sequence[int]) -> list[tuple[int, str, str]]:
    rows = conn.execute(
        "SELECT seq, text, content_hash FROM memories WHERE seq = ANY(%s)", (list(seqs),)
    ).fetchall()
    by_seq = {int(r[0]): (int(r[0]), r[1], r[2]) for r in rows}
    return [by_seq[s] for s in seqs if s in by_seq]

def set_dimension(conn: psycopg.Connection, old: int, dimension: int) -> None:
    """Re-type the vector column for a model of another size (reindex): only when no vector
    of the old size is left; the HNSW index is rebuilt. Call inside a transaction."""
    if conn.execute("SELECT 1 FROM embeddings WHERE vector_dims(vector) = %s LIMIT 1", (old,)).fetchone():
        raise StoreError(
            f"the team store holds {old}-dimensional vectors; a {dimension}-dimensional model "
            "needs `memstore reindex --force`"
        )
    conn.execute("DROP INDEX IF EXISTS embeddings_hnsw")
    conn.execute(f"ALTER TABLE embeddings ALTER COLUMN vector TYPE vector({int(dimension)})")
    conn.execute("CREATE INDEX embeddings_hnsw ON embeddings USING hnsw (vector vector_cosine_ops)")
    conn.execute("UPDATE memstore_meta SET value = %s WHERE key = 'dimension'", (str(int(dimension)),))


def drop_embeddings(conn: psycopg.Connection, model: str | None = None) -> int:
    """Delete vectors (of ``model``, or all): a forced reindex starts from none."""
    if model is None:
        return conn.execute("DELETE FROM embeddings").rowcount
    return conn.execute("DELETE FROM embeddings WHERE model = %s", (model,)).rowcount

# -- counts, history, purge, export ---------------------------------------------------------------

def counts(conn: psycopg.Connection) -> dict[str, Any]:
    live, deleted, superseded = conn.execute(
        "SELECT count(*) FILTER (WHERE NOT deleted AND superseded_by IS NULL), "
        "count(*) FILTER (WHERE deleted), "
        "count(*) FILTER (WHERE NOT deleted AND superseded_by IS NOT NULL) FROM memories"
    ).fetchone()
    namespaces = dict(conn.execute(
        "SELECT namespace, count(*) FROM memories WHERE NOT deleted AND superseded_by IS NULL "
        "GROUP BY namespace ORDER BY namespace"
    ).fetchall())
    authors = dict(conn.execute(
        "SELECT coalesce(author, ''), count(*) FROM memories WHERE NOT deleted AND superseded_by IS NULL "
        "GROUP BY 1 ORDER BY 1"
    ).fetchall())
    return {"memories": int(live), "forgotten": int(deleted), "superseded": int(superseded),
            "namespaces": {k: int(v) for k, v in namespaces.items()},
            "authors": {k: int(v) for k, v in authors.items()}}

def chain(conn: psycopg.Connection, memory_id: str, max_chain: int = 100_000
          ) -> list[tuple[int, Memory]]:
    """Every version linked to ``memory_id`` through supersedes/superseded_by, oldest first."""
    rows = conn.execute(
        f"""
        WITH RECURSIVE
          back(id, link, depth) AS (
            SELECT id, supersedes, 0 FROM memories WHERE id = %(id)s
            UNION ALL
            SELECT m.id, m.supersedes, b.depth - 1 FROM memories m JOIN back b ON m.id = b.link
            WHERE b.depth > -%(max)s
          ),
          fwd(id, link, depth) AS (
            SELECT id, superseded_by, 0 FROM memories WHERE id = %(id)s
            UNION ALL
            SELECT m.id, m.superseded_by, f.depth + 1 FROM memories m JOIN fwd f ON m.id = f.link
            WHERE f.depth < %(max)s
          ),
          versions AS (SELECT id, min(depth) AS depth FROM
                       (SELECT id, depth FROM back UNION SELECT id, depth FROM fwd) v GROUP BY id)
        SELECT {_prefixed("m")} FROM memories m JOIN versions v ON v.id = m.id ORDER BY v.depth, m.seq
        """,
        {"id": memory_id, "max": max_chain},
    ).fetchall()
    return [(int(r[0]), row_to_memory(r)) for r in rows]

def purge_candidates(conn: psycopg.Connection, now: datetime) -> list[tuple[int, Memory, str]]:
    """(seq, memory, reason) of what ``purge`` deletes: forgotten versions, expired current
    memories, and every older version of a forgotten or expired current one."""
    rows = conn.execute(
        f"""
        WITH RECURSIVE direct AS (
            SELECT seq, id, supersedes, superseded_by,
                   CASE WHEN deleted THEN 'forgotten' ELSE 'expired' END AS reason
            FROM memories WHERE deleted OR (superseded_by IS NULL AND expires_at IS NOT NULL
                                            AND expires_at <= %s)
        ),
        older(id) AS (
            SELECT supersedes FROM direct WHERE superseded_by IS NULL AND supersedes IS NOT NULL
            UNION
            SELECT m.supersedes FROM memories m JOIN older o ON m.id = o.id WHERE m.supersedes IS NOT NULL
        ),
        found AS (
            SELECT seq, reason FROM direct
            UNION ALL
            SELECT m.seq, 'history' FROM memories m JOIN older o ON o.id = m.id
            WHERE m.seq NOT IN (SELECT seq FROM direct)
        )
        SELECT {_prefixed("m")}, f.reason FROM memories m JOIN found f ON f.seq = m.seq ORDER BY m.seq
        """,
        (now,),
    ).fetchall()
    seen: dict[int, tuple[int, Memory, str]] = {}
    for r in rows:
        seen.setdefault(int(r[0]), (int(r[0]), row_to_memory(r[:-1]), r[-1]))
    return list(seen.values())

def delete_memories(conn: psycopg.Connection, seqs: Sequence[int]) -> int:
    """Delete rows for good (cascades remove vectors and the pending queue; the tsvector
    and trigram entries go with the row), then reconnect the version chains around the gap.
    Call inside :meth:`transaction`."""
    if not seqs:
        return 0
    links = {r[0]: (r[1], r[2]) for r in conn.execute(
        "SELECT id, supersedes, superseded_by FROM memories WHERE seq = ANY(%s)", (list(seqs),)
    )}
    deleted = conn.execute("DELETE FROM memories WHERE seq = ANY(%s)", (list(seqs),)).rowcount

    def survivor(link: str | None, step: int) -> str | None:
        seen = 0
        while link in links and seen <= len(links):
            link = links[link][step]
            seen += 1
        return link

    ids = list(links)
    for seq, older, newer in conn.execute(
        "SELECT seq, supersedes, superseded_by FROM memories "
        "WHERE supersedes = ANY(%s) OR superseded_by = ANY(%s)", (ids, ids)
    ).fetchall():
        if older in links:
            conn.execute("UPDATE memories SET supersedes = %s WHERE seq = %s", (survivor(older, 0), seq))
        if newer in links:
            target = survivor(newer, 1)
            if target is not None:  # never make an old version current by accident
                conn.execute("UPDATE memories SET superseded_by = %s WHERE seq = %s", (target, seq))
    return int(deleted)

def export_seqs(conn: psycopg.Connection, flt: Any | None, **extra: Any) -> list[int]:
    """Seqs to export: all (``flt`` None) or those passing it plus every linked version."""
    if flt is None:
        return [int(r[0]) for r in conn.execute("SELECT seq FROM memories ORDER BY seq")]
    where, params = filter_sql(flt, "m", **extra)
    rows = conn.execute(
        f"""
        WITH RECURSIVE linked(id) AS (
            SELECT m.id FROM memories m WHERE {where}
            UNION
            SELECT x.link FROM linked l JOIN memories m ON m.id = l.id,
                 LATERAL (VALUES (m.supersedes), (m.superseded_by)) AS x(link)
            WHERE x.link IS NOT NULL
        )
        SELECT m.seq FROM memories m JOIN linked l ON l.id = m.id ORDER BY m.seq
        """,
        params,
    )
    return [int(r[0]) for r in rows]


def apply_newer_state(conn: psycopg.Connection, seq: int, values: dict[str, Any]) -> str:
    """Take the forgotten/superseded state from ``values`` when its ``updated_at`` is newer.
    Returns ``updated``, ``unchanged`` or ``conflict`` (two live memories would share a text)."""
    stored = conn.execute(
        f"SELECT {', '.join(STATE_COLUMNS)} FROM memories WHERE seq = %s", (seq,)
    ).fetchone()
    wanted = _column_values({c: values[c] for c in STATE_COLUMNS})
    if wanted["updated_at"] <= stored[3] or (
        bool(stored[0]), stored[1], stored[2]
    ) == (wanted["deleted"], wanted["deleted_at"], wanted["superseded_by"]):
        return "unchanged"
    try:
        set_state(conn, seq, **wanted)
    except ConflictError:
        return "conflict"
    return "updated"

# -- sync ---------------------------------------------------------------------------------------

#: Columns a synced row may set (everything but seq and author).
SYNC_SET_COLUMNS = (
    "text", "namespace", "tags", "source", "metadata", "content_hash", "project", "branch",
    "created_at", "updated_at", "expires_at", "deleted", "deleted_at", "supersedes", "superseded_by",
)


def change_mark(conn: psycopg.Connection, *, lock: bool = False) -> tuple[Any, ...]:
    """The change counter (schema m002): moved by every committed write to memories, never
    decreasing. ``lock``: hold it until the transaction ends (no other write commits)."""
    row = conn.execute("SELECT n FROM memstore_changes" + (" FOR UPDATE" if lock else "")).fetchone()
    return (int(row[0]),)


def bump_changes(conn: psycopg.Connection) -> tuple[Any, ...]:
    """Move the counter now (once for this transaction: the commit trigger then skips it)."""
    conn.execute("SELECT set_config('memstore.changes_bumped', txid_current()::text, true)")
    row = conn.execute("UPDATE memstore_changes SET n = n + 1 RETURNING n").fetchone()
    return (int(row[0]),)


def sync_rows(conn: psycopg.Connection) -> list[tuple[Any, ...]]:
    """Every version in SYNC_COLUMNS order, in SQLite's encodings (JSON text tags and
    metadata, ISO timestamps, 0/1), then the (model, bytes) of live current ones."""
    from ...timeutil import format_ts
    from ..base import SYNC_COLUMNS

    columns = ", ".join("m.metadata::text" if c == "metadata" else "m." + c for c in SYNC_COLUMNS)
    stamps = [SYNC_COLUMNS.index(c) for c in ("created_at", "updated_at", "expires_at", "deleted_at")]
    tags, deleted = SYNC_COLUMNS.index("tags"), SYNC_COLUMNS.index("deleted")
    out = []
    for r in conn.execute(
        f"SELECT {columns}, e.model, e.vector FROM memories m LEFT JOIN embeddings e ON e.seq = m.seq "
        f"AND {_LIVE} ORDER BY m.seq"
    ):
        values = list(r)
        for i in stamps:
            if values[i] is not None:
                values[i] = format_ts(values[i])
        values[tags] = _dumps(list(values[tags]))
        values[deleted] = int(bool(values[deleted]))
        if values[-1] is not None:
            values[-1] = _vector_bytes(values[-1])
        out.append(tuple(values))
    return out


def apply_sync_row(conn: psycopg.Connection, row: dict[str, Any], seq: int | None) -> tuple[int, bool]:
    """Insert (``seq`` None) or overwrite one synced row, setting only the columns that differ.
    Returns its seq and True when its text was live here under another id (outside the synced
    rows), so it was kept superseded by that one. A live row another writer holds the text
    of meanwhile: StoreChangedError. Call inside a transaction."""
    from ...errors import StoreChangedError

    values = {k: v for k, v in row.items() if not k.startswith("_") and k in ("id", *SYNC_SET_COLUMNS)}
    kept = False
    if not values["deleted"] and values["superseded_by"] is None:
        clash = find_live_by_hash(conn, values["content_hash"], except_id=values["id"])
        if clash is not None:
            values["superseded_by"] = clash.id
            kept = True
    if seq is None:
        found = insert_memory(conn, values)
        if found is None:
            raise StoreChangedError("the store changed while syncing")
        return found, kept
    wanted = _column_values(values)
    current = dict(zip(SYNC_SET_COLUMNS, conn.execute(
        f"SELECT {', '.join('metadata::text' if c == 'metadata' else c for c in SYNC_SET_COLUMNS)} "
        "FROM memories WHERE seq = %s", (seq,)
    ).fetchone(), strict=True))
    current["tags"] = list(current["tags"])
    changed = {c: wanted[c] for c in SYNC_SET_COLUMNS if c in wanted and current[c] != wanted[c]}
    if "metadata" in changed:
        new = changed["metadata"]
        new = new if isinstance(new, str) else _dumps(new.obj)
        if json.loads(new) == json.loads(current["metadata"]):
            del changed["metadata"]
    if changed:
        conn.execute(f"UPDATE memories SET {', '.join(c + ' = %s' for c in changed)} WHERE seq = %s",
                     [*changed.values(), seq])
    return seq, kept
