"""``memstore verify`` on the team store: what can drift in PostgreSQL, checked (and repaired).

- **schema**: the migration steps, the extensions, and the indexes that carry invariants
  (the unique index of live hashes, HNSW, GIN) exist and are valid (a failed concurrent
  index build leaves an invalid one that silently stops enforcing or serving); the triggers
  that keep the full text, the pending queue and the change counter/log exist and are enabled.
- **fts**: every row's tsvector, length and CJK flag equal what the trigger computes from
  its text and tags now (repair: recompute them).
- **vectors**: live memories without a current vector of the model (missing, or made from
  an older text), vectors of the wrong size, the queue of memories waiting for one (repair:
  embed them with the current model; fix the queue).
- **models**: vectors from another model than the one in use (fixed by ``memstore reindex``).
- **links**: version links that point at no memory, and live hashes held twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ...models import Check
from . import sql
from .schema import EXTENSIONS, SCHEMA_VERSION, TEXT_CONFIG, schema_version

if TYPE_CHECKING:
    import numpy as np
    import psycopg

__all__ = ["repair", "run_checks"]

_INDEXES = ("memories_live_hash", "memories_tsv", "memories_cjk", "embeddings_hnsw")
#: Triggers that keep derived columns, the pending queue and the change counter/log in step
#: with the rows (a disabled one silently stops sync marks and processes' keyword rankings).
_TRIGGERS = ("memories_text", "memories_pending", "embeddings_pending_done", "embeddings_pending_again",
             "memories_changed")
_FTS_DRIFT = (
    f"tsv IS DISTINCT FROM to_tsvector('{TEXT_CONFIG}', text || ' ' || array_to_string(tags, ' '))"
)


def _schema(conn: psycopg.Connection) -> Check:
    problems = []
    version = schema_version(conn)
    if version != SCHEMA_VERSION:
        problems.append(f"schema version {version}, expected {SCHEMA_VERSION}")
    present = {r[0] for r in conn.execute("SELECT extname FROM pg_extension")}
    problems += [f"extension {name} is missing" for name in EXTENSIONS if name not in present]
    valid = dict(conn.execute(
        "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = ANY(%s) AND pg_table_is_visible(c.oid)", (list(_INDEXES),)
    ).fetchall())
    for name in _INDEXES:
        if name not in valid:
            problems.append(f"index {name} is missing")
        elif not valid[name]:
            problems.append(f"index {name} is invalid (REINDEX INDEX {name})")
    enabled = {r[0]: (r[1], r[2]) for r in conn.execute(
        "SELECT t.tgname, c.relname, t.tgenabled <> 'D' FROM pg_trigger t "
        "JOIN pg_class c ON c.oid = t.tgrelid WHERE t.tgname = ANY(%s) AND pg_table_is_visible(c.oid)",
        (list(_TRIGGERS),),
    )}
    for name in _TRIGGERS:
        if name not in enabled:
            problems.append(f"trigger {name} is missing")
        elif not enabled[name][1]:
            table = enabled[name][0]
            problems.append(f"trigger {name} is disabled (ALTER TABLE {table} ENABLE TRIGGER {name})")
    if problems:
        return Check("schema", False, f"{len(problems)} schema problem(s)", tuple(problems))
    return Check("schema", True, f"schema v{version}, extensions, indexes and triggers valid")


def _fts(conn: psycopg.Connection, quick: bool) -> Check:
    total = conn.execute("SELECT count(*) FROM memories").fetchone()[0]
    if quick:
        return Check("fts", True, "skipped (quick)", skipped=True)
    drift = conn.execute(
        f"SELECT id FROM memories WHERE {_FTS_DRIFT} OR has_cjk IS DISTINCT FROM "
        "(text ~ (SELECT '[' || %s || ']')) ORDER BY seq LIMIT 1000", (_cjk(),)
    ).fetchall()
    if drift:
        return Check("fts", False, f"{len(drift)} memories whose full-text entry differs from their text",
                     tuple(f"memory {r[0]}: full-text entry out of date" for r in drift[:20]))
    return Check("fts", True, f"full-text entries match all {int(total):,} memories")


def _cjk() -> str:
    from ..terms import CJK_RANGES

    return CJK_RANGES


def _vector_problems(conn: psycopg.Connection, model: str, dimension: int) -> dict[str, list[int]]:
    live = "NOT m.deleted AND m.superseded_by IS NULL"
    missing = [r[0] for r in conn.execute(
        f"SELECT m.seq FROM memories m LEFT JOIN embeddings e ON e.seq = m.seq WHERE {live} "
        "AND e.seq IS NULL AND NOT EXISTS (SELECT 1 FROM pending_embeddings p WHERE p.seq = m.seq)")]
    queued = [r[0] for r in conn.execute(
        f"SELECT p.seq FROM pending_embeddings p JOIN memories m ON m.seq = p.seq WHERE {live}")]
    stale = [r[0] for r in conn.execute(
        f"SELECT m.seq FROM memories m JOIN embeddings e ON e.seq = m.seq WHERE {live} "
        "AND e.model = %s AND e.content_hash <> m.content_hash", (model,))]
    stale_queue = [r[0] for r in conn.execute(
        "SELECT p.seq FROM pending_embeddings p JOIN embeddings e ON e.seq = p.seq")]
    malformed = [r[0] for r in conn.execute(
        "SELECT seq FROM embeddings WHERE vector_dims(vector) <> %s", (dimension,))]
    return {"missing": missing, "queued": queued, "stale": stale, "stale_queue": stale_queue,
            "malformed": malformed}


def _vectors(conn: psycopg.Connection, model: str, dimension: int) -> Check:
    f = _vector_problems(conn, model, dimension)
    if f["missing"] or f["stale"] or f["stale_queue"] or f["malformed"]:
        return Check("vectors", False,
                     f"{len(f['missing'])} missing, {len(f['stale'])} stale, {len(f['malformed'])} malformed "
                     f"vectors; {len(f['stale_queue'])} stale queue entries (repair embeds them)",
                     tuple(f"memory seq {s}: {kind}" for kind in ("missing", "stale", "malformed")
                           for s in f[kind][:10]))
    note = f"; {len(f['queued'])} waiting for their first vector" if f["queued"] else ""
    return Check("vectors", True, f"every live memory has a current vector or is queued{note}")


def _models(conn: psycopg.Connection, model: str) -> Check:
    models = sql.embedding_models(conn)
    other = {m: n for m, n in models.items() if m != model}
    if other:
        listed = ", ".join(f"{m} ({n})" for m, n in sorted(other.items()))
        return Check("models", False, f"vectors from another model than {model}: {listed}",
                     ("run `memstore reindex` to embed them with the current model",))
    return Check("models", True, f"all {models.get(model, 0):,} live vectors are from {model}")


def _links(conn: psycopg.Connection) -> Check:
    dangling = conn.execute(
        "SELECT m.id FROM memories m WHERE (m.supersedes IS NOT NULL AND NOT EXISTS "
        "(SELECT 1 FROM memories o WHERE o.id = m.supersedes)) OR (m.superseded_by IS NOT NULL AND "
        "NOT EXISTS (SELECT 1 FROM memories n WHERE n.id = m.superseded_by)) LIMIT 100"
    ).fetchall()
    twice = conn.execute(
        "SELECT content_hash FROM memories WHERE NOT deleted AND superseded_by IS NULL "
        "GROUP BY content_hash HAVING count(*) > 1 LIMIT 100"
    ).fetchall()
    if dangling or twice:
        return Check("links", False, f"{len(dangling)} dangling version links, {len(twice)} live duplicates",
                     tuple([f"memory {r[0]}: links to a missing version" for r in dangling[:10]]
                           + [f"content hash {r[0]} is live twice" for r in twice[:10]]))
    return Check("links", True, "version links resolve; no live text is stored twice")


def run_checks(conn: psycopg.Connection, *, model: str, dimension: int, quick: bool = False) -> list[Check]:
    return [_schema(conn), _fts(conn, quick), _vectors(conn, model, dimension), _models(conn, model),
            _links(conn)]


def repair(conn: psycopg.Connection, found: Sequence[Check], *, model: str, dimension: int,
           embed: Callable[[Sequence[str]], np.ndarray] | Any) -> list[str]:
    """Fix what can be fixed from the memories themselves; returns what was done."""
    done: list[str] = []
    failed = {c.name for c in found if not c.ok}
    if "fts" in failed:
        with conn.transaction():
            n = conn.execute(
                f"UPDATE memories SET text = text WHERE {_FTS_DRIFT} OR "
                "has_cjk IS DISTINCT FROM (text ~ (SELECT '[' || %s || ']'))", (_cjk(),)
            ).rowcount
        done.append(f"recomputed the full-text entries of {n} memories")
    if "vectors" in failed:
        f = _vector_problems(conn, model, dimension)
        with conn.transaction():
            if f["malformed"]:
                conn.execute("DELETE FROM embeddings WHERE seq = ANY(%s)", (f["malformed"],))
            if f["stale_queue"]:
                conn.execute("DELETE FROM pending_embeddings WHERE seq IN (SELECT seq FROM embeddings)")
        if f["malformed"] or f["stale_queue"]:
            done.append(f"dropped {len(f['malformed'])} malformed vectors and {len(f['stale_queue'])} "
                        "stale queue entries")
        redo = sorted(set(f["missing"]) | set(f["stale"]) | set(f["queued"]) | set(f["malformed"]))
        embedded = 0
        for start in range(0, len(redo), 256):
            batch = sql.texts_for(conn, redo[start:start + 256])
            vectors = embed([text for _, text, _ in batch])
            with conn.transaction():
                for (seq, _text, chash), vec in zip(batch, vectors, strict=True):
                    sql.put_embedding(conn, seq, model, chash, vec.astype("<f4").tobytes(), dimension)
            embedded += len(batch)
        if embedded:
            done.append(f"embedded {embedded} memories with {model}")
    return done
