"""The team store's schema, as versioned migrations recorded in the database itself.

``memstore_schema`` lists the applied steps. Opening a store checks it without DDL (a role
with only data privileges can use an up-to-date store); pending steps run in ONE transaction
under an advisory lock, so concurrent first opens migrate once and a failure (no pgvector,
no privilege) leaves nothing half-created. A step this memstore does not know means a newer
memstore wrote the database: SchemaTooNewError. Never edit a released step: add the next.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ...errors import SchemaTooNewError, StoreError
from ..terms import CJK_RANGES

if TYPE_CHECKING:
    import psycopg

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "ensure_schema", "schema_version"]

#: pg_advisory_xact_lock key serialising migrations ("memstore" in ASCII, as an int).
MIGRATION_LOCK = 0x6D656D73746F7265

#: The text search configuration every tsvector and tsquery uses: English snowball stemming
#: and no stopword list (like SQLite's porter/unicode61 index: the query drops stopwords).
TEXT_CONFIG = "memstore_text"
#: Transactions (change numbers) whose entries the change log keeps (schema m003).
CHANGE_LOG_KEEP = 100_000


@dataclass(frozen=True)
class SchemaContext:
    """What a migration needs to know about the store being created."""

    dimension: int


def _cjk_class() -> str:
    """CJK_RANGES as a PostgreSQL regex bracket expression (literal characters: UTF-8 server)."""
    return "[" + CJK_RANGES + "]"


def m001_initial(cur: psycopg.Cursor, ctx: SchemaContext) -> None:
    """Memories, tags, full text (tsvector + GIN, trigram GIN for CJK), embeddings (vector + HNSW)."""
    cur.execute(f"""
        CREATE TABLE memstore_meta (key text PRIMARY KEY, value text NOT NULL);
        INSERT INTO memstore_meta (key, value) VALUES
            ('store_id', md5(random()::text || clock_timestamp()::text)),
            ('dimension', '{int(ctx.dimension)}');

        CREATE TEXT SEARCH DICTIONARY memstore_stem (TEMPLATE = snowball, LANGUAGE = english);
        CREATE TEXT SEARCH CONFIGURATION {TEXT_CONFIG} (COPY = english);
        ALTER TEXT SEARCH CONFIGURATION {TEXT_CONFIG}
            ALTER MAPPING FOR asciiword, asciihword, hword_asciipart, word, hword, hword_part
            WITH memstore_stem;

        CREATE TABLE memories (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id text NOT NULL UNIQUE,
            text text NOT NULL,
            namespace text NOT NULL,
            tags text[] NOT NULL DEFAULT '{{}}',
            source text,
            -- json, not jsonb: kept as written (key order, number spelling, NUL escapes in strings),
            -- so every memory round-trips exactly as on SQLite.
            metadata json NOT NULL DEFAULT '{{}}',
            content_hash text NOT NULL,
            project text,
            branch text,
            author text,
            created_at timestamptz NOT NULL,
            updated_at timestamptz NOT NULL,
            expires_at timestamptz,
            deleted boolean NOT NULL DEFAULT false,
            deleted_at timestamptz,
            supersedes text,
            superseded_by text,
            tsv tsvector NOT NULL DEFAULT ''::tsvector,
            doc_len integer NOT NULL DEFAULT 0,
            has_cjk boolean NOT NULL DEFAULT false
        );
        CREATE UNIQUE INDEX memories_live_hash ON memories (content_hash)
            WHERE NOT deleted AND superseded_by IS NULL;
        CREATE INDEX memories_created ON memories (created_at);
        CREATE INDEX memories_namespace ON memories (namespace, created_at);
        CREATE INDEX memories_project ON memories (project, created_at);
        CREATE INDEX memories_author ON memories (author, created_at);
        CREATE INDEX memories_supersedes ON memories (supersedes) WHERE supersedes IS NOT NULL;
        CREATE INDEX memories_tags ON memories USING gin (tags);
        CREATE INDEX memories_tsv ON memories USING gin (tsv);
        CREATE INDEX memories_cjk ON memories USING gin (text gin_trgm_ops) WHERE has_cjk;

        -- The full-text columns are kept by this trigger in the same statement as the row.
        CREATE FUNCTION memstore_text_columns() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $fn$
        BEGIN
            NEW.tsv := to_tsvector('{TEXT_CONFIG}', NEW.text || ' ' || array_to_string(NEW.tags, ' '));
            NEW.doc_len := (SELECT coalesce(sum(coalesce(array_length(positions, 1), 1)), 0)
                            FROM unnest(NEW.tsv));
            NEW.has_cjk := NEW.text ~ '{_cjk_class()}';
            RETURN NEW;
        END
        $fn$;
        CREATE TRIGGER memories_text BEFORE INSERT OR UPDATE OF text, tags ON memories
            FOR EACH ROW EXECUTE FUNCTION memstore_text_columns();

        -- How often a lexeme occurs in a tsvector (its term frequency, for BM25), read back from
        -- ts_rank: for one unweighted lexeme and normalisation 0 it is 0.1·H2(tf)/(pi^2/6) with
        -- H2(n) = sum 1/k^2, k <= n, so tf = round(1/(pi^2/6 - H2) - 1/2), exact for every tf a
        -- tsvector can hold (1..255; tests/storage check it). ~50x cheaper than unnest(tsvector).
        CREATE FUNCTION memstore_tf(doc tsvector, lexeme tsquery) RETURNS integer
        LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
        RETURN greatest(1, round(1.0 / (pi() ^ 2 / 6 - ts_rank(doc, lexeme, 0)::float8 * 16.4493406685)
                                 - 0.5))::integer;

        CREATE TABLE embeddings (
            seq bigint PRIMARY KEY REFERENCES memories (seq) ON DELETE CASCADE,
            model text NOT NULL,
            content_hash text NOT NULL,
            vector vector({int(ctx.dimension)}) NOT NULL
        );
        CREATE INDEX embeddings_model ON embeddings (model);
        CREATE INDEX embeddings_hnsw ON embeddings USING hnsw (vector vector_cosine_ops);

        -- Live memories stored without a vector (deferred embedding, or the model failed).
        CREATE TABLE pending_embeddings (
            seq bigint PRIMARY KEY REFERENCES memories (seq) ON DELETE CASCADE
        );
        CREATE FUNCTION memstore_pending_add() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $fn$
        BEGIN
            IF TG_TABLE_NAME = 'memories' THEN
                INSERT INTO pending_embeddings (seq) VALUES (NEW.seq) ON CONFLICT DO NOTHING;
            ELSE
                INSERT INTO pending_embeddings (seq)
                    SELECT seq FROM memories WHERE seq = OLD.seq ON CONFLICT DO NOTHING;
            END IF;
            RETURN NULL;
        END
        $fn$;
        CREATE FUNCTION memstore_pending_done() RETURNS trigger LANGUAGE plpgsql
        SET search_path FROM CURRENT AS $fn$
        BEGIN
            DELETE FROM pending_embeddings WHERE seq = NEW.seq;
            RETURN NULL;
        END
        $fn$;
        CREATE TRIGGER memories_pending AFTER INSERT ON memories
            FOR EACH ROW EXECUTE FUNCTION memstore_pending_add();
        CREATE TRIGGER embeddings_pending_done AFTER INSERT ON embeddings
            FOR EACH ROW EXECUTE FUNCTION memstore_pending_done();
        CREATE TRIGGER embeddings_pending_again AFTER DELETE ON embeddings
            FOR EACH ROW EXECUTE FUNCTION memstore_pending_add();
    """)


def m002_change_counter(cur: psycopg.Cursor, ctx: SchemaContext) -> None:
    """The change counter sync checks (its change mark): bumped once by every transaction
    that inserts, updates or deletes memories, at commit (a deferred trigger: the counter row
    is locked only while committing, after everything else, so writers cannot deadlock on it).
    It never decreases; a restored older copy of the database has a lower one."""
    cur.execute("""
        CREATE TABLE memstore_changes (
            one boolean PRIMARY KEY DEFAULT true CHECK (one),
            n bigint NOT NULL
        );
        INSERT INTO memstore_changes (n) VALUES (0);
        -- SECURITY DEFINER: roles granted data privileges before this step can still write.
        CREATE FUNCTION memstore_bump_changes() RETURNS trigger LANGUAGE plpgsql
        SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
        BEGIN
            IF current_setting('memstore.changes_bumped', true) IS DISTINCT FROM txid_current()::text THEN
                PERFORM set_config('memstore.changes_bumped', txid_current()::text, true);
                UPDATE memstore_changes SET n = n + 1;
            END IF;
            RETURN NULL;
        END
        $fn$;
        CREATE CONSTRAINT TRIGGER memories_changed AFTER INSERT OR UPDATE OR DELETE ON memories
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION memstore_bump_changes();
    """)


def m003_change_log(cur: psycopg.Cursor, ctx: SchemaContext) -> None:
    """Which memories each committed transaction touched, under the change counter's number:
    what a process's in-memory keyword ranking (keyword_ranking.py) catches up from. The
    deferred trigger of m002 now also logs the row (the counter row is locked from the bump
    to the commit, so numbers follow commit order and a snapshot holding number n holds
    every change numbered up to n). Entries of transactions more than CHANGE_LOG_KEEP numbers
    old are dropped by later bumps; ``log_floor`` says below which numbers the log is
    incomplete (a reader older than it rebuilds)."""
    cur.execute(f"""
        CREATE TABLE memstore_change_log (
            n bigint NOT NULL,
            seq bigint NOT NULL,
            PRIMARY KEY (n, seq)
        );
        ALTER TABLE memstore_changes ADD COLUMN log_floor bigint;
        UPDATE memstore_changes SET log_floor = n;
        ALTER TABLE memstore_changes ALTER COLUMN log_floor SET NOT NULL;
        CREATE OR REPLACE FUNCTION memstore_bump_changes() RETURNS trigger LANGUAGE plpgsql
        SECURITY DEFINER SET search_path FROM CURRENT AS $fn$
        DECLARE
            mark bigint;
        BEGIN
            IF current_setting('memstore.changes_bumped', true) IS DISTINCT FROM txid_current()::text THEN
                PERFORM set_config('memstore.changes_bumped', txid_current()::text, true);
                UPDATE memstore_changes SET n = n + 1,
                    log_floor = greatest(log_floor, n + 1 - {CHANGE_LOG_KEEP})
                    RETURNING n INTO mark;
                DELETE FROM memstore_change_log WHERE n <= mark - {CHANGE_LOG_KEEP};
            ELSE
                SELECT n INTO mark FROM memstore_changes;
            END IF;
            INSERT INTO memstore_change_log (n, seq)
                VALUES (mark, CASE WHEN TG_OP = 'DELETE' THEN OLD.seq ELSE NEW.seq END)
                ON CONFLICT DO NOTHING;
            RETURN NULL;
        END
        $fn$;
    """)


#: The migrations in order, numbered from 1. Append only.
MIGRATIONS: list[Callable[[psycopg.Cursor, SchemaContext], None]] = [
    m001_initial, m002_change_counter, m003_change_log,
]
SCHEMA_VERSION = len(MIGRATIONS)
#: Extensions the schema needs (created by the first migration when permitted).
EXTENSIONS = ("vector", "pg_trgm")


def schema_version(conn: psycopg.Connection) -> int | None:
    """The newest applied step, or None when this database has no memstore schema yet."""
    found = conn.execute("SELECT to_regclass('memstore_schema') IS NOT NULL").fetchone()
    if not found or not found[0]:
        return None
    row = conn.execute("SELECT max(version) FROM memstore_schema").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def _check_not_newer(version: int | None, where: str) -> bool:
    """True when every step is applied; raises SchemaTooNewError for a newer schema."""
    if version is not None and version > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"{where} holds a memstore schema of version {version}, newer than this memstore's "
            f"{SCHEMA_VERSION}; upgrade memstore (pip install -U 'memstore[postgres]') to use it"
        )
    return version == SCHEMA_VERSION


def ensure_schema(conn: psycopg.Connection, dimension: int, where: str) -> bool:
    """Apply pending migrations (all in one transaction). Returns True when it migrated."""
    if _check_not_newer(schema_version(conn), where):
        return False
    encoding = conn.execute("SHOW server_encoding").fetchone()
    if encoding and str(encoding[0]).upper() not in ("UTF8", "UTF-8"):
        raise StoreError(
            f"{where} uses the {encoding[0]} encoding; memstore needs a UTF8 database "
            "(CREATE DATABASE … ENCODING 'UTF8')"
        )
    # A session lock taken before the transaction: the transaction then starts after another
    # process's migration committed and sees its tables (a lock taken inside it would leave
    # name lookups to a catalog cache from before the wait).
    conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
    try:
        return _migrate(conn, dimension, where)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))


def _migrate(conn: psycopg.Connection, dimension: int, where: str) -> bool:
    with conn.transaction():
        version = schema_version(conn)  # another process may have migrated meanwhile
        if _check_not_newer(version, where):
            return False
        with conn.cursor() as cur:
            _create_extensions(cur, where)
            cur.execute(
                "CREATE TABLE IF NOT EXISTS memstore_schema (version integer PRIMARY KEY, "
                "name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            _refuse_foreign_tables(cur, version, where)
            ctx = SchemaContext(dimension=dimension)
            for number, step in enumerate(MIGRATIONS, start=1):
                if version is not None and number <= version:
                    continue
                step(cur, ctx)
                cur.execute("INSERT INTO memstore_schema (version, name) VALUES (%s, %s)",
                            (number, step.__name__))
    return True


def _create_extensions(cur: psycopg.Cursor, where: str) -> None:
    from psycopg import errors as pgerr

    present = {row[0] for row in cur.execute("SELECT extname FROM pg_extension")}
    for name in EXTENSIONS:
        if name in present:
            continue
        available = cur.execute(
            "SELECT 1 FROM pg_available_extensions WHERE name = %s", (name,)
        ).fetchone()
        if not available:
            raise StoreError(
                f"the PostgreSQL server at {where} does not have the {name!r} extension installed; "
                f"install it on the server ({_INSTALL_HINT[name]}), then run memstore again"
            )
        try:
            cur.execute(f"CREATE EXTENSION IF NOT EXISTS {name}")  # name: one of EXTENSIONS
        except pgerr.InsufficientPrivilege:
            raise StoreError(
                f"this role may not create the {name!r} extension in {where}; ask the database "
                f"owner or a superuser to run: CREATE EXTENSION {name};  then run memstore again"
            ) from None


_INSTALL_HINT = {
    "vector": "pgvector 0.8 or newer: https://github.com/pgvector/pgvector",
    "pg_trgm": "it ships with PostgreSQL's contrib package",
}


def _refuse_foreign_tables(cur: psycopg.Cursor, version: int | None, where: str) -> None:
    """A first migration into a database that already has a ``memories`` table of someone
    else's: say so instead of failing halfway (nothing is created either way)."""
    if version:
        return
    clash = cur.execute(
        "SELECT c FROM unnest(ARRAY['memories', 'embeddings', 'pending_embeddings', 'memstore_meta', "
        "'memstore_changes', 'memstore_change_log']) c "
        "WHERE to_regclass(c) IS NOT NULL"
    ).fetchall()
    if clash:
        names = ", ".join(row[0] for row in clash)
        raise StoreError(
            f"{where} already has tables memstore did not create ({names}); use an empty database "
            "or schema for memstore (e.g. CREATE DATABASE memories)"
        )
