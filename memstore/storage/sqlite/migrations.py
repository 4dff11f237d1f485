"""The database schema, as an ordered list of small sqlite-utils migrations.

Each ``m00N_`` function moves the schema one step. They are applied on open,
each in its own transaction, recorded in ``_sqlite_migrations`` under the set
name ``memstore``. Never edit a released migration: add the next one.

``sqlite_utils`` is imported only when something is pending, so opening an
up-to-date store stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sqlite_utils import Database
    from sqlite_utils.migrations import Migrations

__all__ = ["MIGRATION_NAMES", "MIGRATION_SET", "build_migrations"]

MIGRATION_SET = "memstore"


def _execute_script(db: Database, script: str) -> None:
    """Run statements one by one: ``executescript`` would COMMIT the migration's transaction."""
    import sqlite3

    statement = ""
    for line in script.splitlines(keepends=True):
        statement += line
        if sqlite3.complete_statement(statement):
            db.execute(statement)
            statement = ""
    if statement.strip():
        raise ValueError(f"incomplete SQL statement in migration: {statement!r}")


def m001_initial(db: Database) -> None:
    """Memories, their tags, FTS5 index, embeddings, and the vector change log."""
    _execute_script(db,
        """
        CREATE TABLE meta (
            key TEXT PRIMARY KEY,
            value TEXT NOT NULL
        );
        INSERT INTO meta (key, value) VALUES ('store_id', lower(hex(randomblob(16))));

        CREATE TABLE memories (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            text TEXT NOT NULL,
            namespace TEXT NOT NULL,
            tags TEXT NOT NULL DEFAULT '[]',
            source TEXT,
            metadata TEXT NOT NULL DEFAULT '{}',
            content_hash TEXT NOT NULL,
            project TEXT,
            branch TEXT,
            created_at TEXT NOT NULL,
            updated_at TEXT NOT NULL,
            expires_at TEXT,
            deleted INTEGER NOT NULL DEFAULT 0,
            deleted_at TEXT,
            supersedes TEXT,
            superseded_by TEXT
        );
        CREATE UNIQUE INDEX memories_live_hash ON memories (content_hash)
            WHERE deleted = 0 AND superseded_by IS NULL;
        CREATE INDEX memories_created ON memories (created_at);
        CREATE INDEX memories_namespace ON memories (namespace, created_at);
        CREATE INDEX memories_project ON memories (project, created_at);

        CREATE TABLE memory_tags (
            tag TEXT NOT NULL,
            seq INTEGER NOT NULL REFERENCES memories (seq) ON DELETE CASCADE,
            PRIMARY KEY (tag, seq)
        ) WITHOUT ROWID;
        CREATE INDEX memory_tags_seq ON memory_tags (seq);

        CREATE VIRTUAL TABLE memories_fts USING fts5 (
            text, tags,
            content = 'memories', content_rowid = 'seq',
            tokenize = 'porter unicode61 remove_diacritics 2'
        );

        CREATE TABLE embeddings (
            seq INTEGER PRIMARY KEY REFERENCES memories (seq) ON DELETE CASCADE,
            model TEXT NOT NULL,
            content_hash TEXT NOT NULL,
            vector BLOB NOT NULL
        );
        CREATE INDEX embeddings_model ON embeddings (model);

        -- Every change that may alter what the vector index should hold for a memory.
        -- Index files record the last op they reflect and replay the rest on open.
        CREATE TABLE vector_log (
            op INTEGER PRIMARY KEY AUTOINCREMENT,
            seq INTEGER NOT NULL
        );

        CREATE TRIGGER memories_ai AFTER INSERT ON memories BEGIN
            INSERT INTO memories_fts (rowid, text, tags) VALUES (new.seq, new.text, new.tags);
            INSERT INTO memory_tags (tag, seq) SELECT DISTINCT value, new.seq FROM json_each(new.tags);
        END;
        CREATE TRIGGER memories_ad AFTER DELETE ON memories BEGIN
            INSERT INTO memories_fts (memories_fts, rowid, text, tags)
                VALUES ('delete', old.seq, old.text, old.tags);
            INSERT INTO vector_log (seq) VALUES (old.seq);
        END;
        CREATE TRIGGER memories_au_fts AFTER UPDATE OF text, tags ON memories BEGIN
            INSERT INTO memories_fts (memories_fts, rowid, text, tags)
                VALUES ('delete', old.seq, old.text, old.tags);
            INSERT INTO memories_fts (rowid, text, tags) VALUES (new.seq, new.text, new.tags);
        END;
        CREATE TRIGGER memories_au_tags AFTER UPDATE OF tags ON memories BEGIN
            DELETE FROM memory_tags WHERE seq = old.seq;
            INSERT INTO memory_tags (tag, seq) SELECT DISTINCT value, new.seq FROM json_each(new.tags);
        END;
        CREATE TRIGGER memories_au_live AFTER UPDATE OF deleted, superseded_by ON memories
            WHEN old.deleted IS NOT new.deleted OR old.superseded_by IS NOT new.superseded_by
        BEGIN
            INSERT INTO vector_log (seq) VALUES (new.seq);
        END;
        CREATE TRIGGER embeddings_ai AFTER INSERT ON embeddings BEGIN
            INSERT INTO vector_log (seq) VALUES (new.seq);
        END;
        CREATE TRIGGER embeddings_au AFTER UPDATE ON embeddings BEGIN
            INSERT INTO vector_log (seq) VALUES (new.seq);
        END;
        CREATE TRIGGER embeddings_ad AFTER DELETE ON embeddings BEGIN
            INSERT INTO vector_log (seq) VALUES (old.seq);
        END;
        """
    )


def m002_pending_embeddings(db: Database) -> None:
    """The queue of memories stored without a vector (deferred embedding, or the model failed).

    Kept by triggers, so every way a memory gets in or out of the embeddings table keeps it
    right: a new memory is pending until its embedding is written in the same or a later
    transaction. Recall and the hook process drain it newest first.
    """
    _execute_script(db,
        """
        CREATE TABLE pending_embeddings (
            seq INTEGER PRIMARY KEY REFERENCES memories (seq) ON DELETE CASCADE
        );
        INSERT INTO pending_embeddings (seq)
            SELECT m.seq FROM memories m
            WHERE NOT EXISTS (SELECT 1 FROM embeddings e WHERE e.seq = m.seq);

        CREATE TRIGGER memories_ai_pending AFTER INSERT ON memories BEGIN
            INSERT INTO pending_embeddings (seq) VALUES (new.seq);
        END;
        CREATE TRIGGER embeddings_ai_pending AFTER INSERT ON embeddings BEGIN
            DELETE FROM pending_embeddings WHERE seq = new.seq;
        END;
        CREATE TRIGGER embeddings_ad_pending AFTER DELETE ON embeddings BEGIN
            INSERT OR IGNORE INTO pending_embeddings (seq)
                SELECT seq FROM memories WHERE seq = old.seq;
        END;
        """
    )


#: Which memories m003's triggers index: text with a CJK character. Frozen with the migration
#: (a test checks it equals ``search.CJK_GLOB``; changing the class needs a new migration).
CJK_GLOB_M003 = (
    "*[\u4e00-\u9fff\u3040-\u30ff\uac00-\ud7ff\u3400-\u4dbf\u1100-\u11ff\u2e80-\u2fdf"
    "\u3005-\u3007\u3100-\u31ff\ua960-\ua97f\uf900-\ufaff\uff66-\uff9f\U00020000-\U0003134f]*"
)


def _has_cjk_sql(column: str) -> str:
    """SQL true when ``column`` holds a CJK character. The byte-length test first: ASCII-only
    text (most text) is settled in ~2 µs, the character-class GLOB costs ~100 µs per 150
    characters and runs only on text with some non-ASCII character."""
    return f"(length(CAST({column} AS BLOB)) > length({column}) AND {column} GLOB '{CJK_GLOB_M003}')"


def m003_cjk_trigram_index(db: Database) -> None:
    """A trigram index of the memories that hold Chinese, Japanese or Korean text.

    The word index (unicode61) sees a run of CJK characters as one token, so a word inside
    it cannot be found. FTS5's trigram tokenizer indexes every 3-character window instead;
    recall consults it when the query has CJK characters. Only memories with CJK text are
    indexed (``CJK_GLOB_M003``, the same class as ``search.CJK_GLOB``), so English-only stores
    pay nothing. Kept by triggers like ``memories_fts``; filled from existing memories here.
    Its content table is the view ``memories_cjk_text`` (the CJK memories), not ``memories``.
    """
    new, old = _has_cjk_sql("new.text"), _has_cjk_sql("old.text")
    _execute_script(db,
        f"""
        -- The index's content is this view, so FTS5's 'rebuild' and 'integrity-check'
        -- (memstore verify) see exactly the memories the triggers index.
        CREATE VIEW memories_cjk_text AS
            SELECT seq, text FROM memories WHERE {_has_cjk_sql("text")};
        CREATE VIRTUAL TABLE memories_cjk USING fts5 (
            text,
            content = 'memories_cjk_text', content_rowid = 'seq',
            tokenize = 'trigram'
        );
        INSERT INTO memories_cjk (memories_cjk) VALUES ('rebuild');

        CREATE TRIGGER memories_ai_cjk AFTER INSERT ON memories WHEN {new} BEGIN
            INSERT INTO memories_cjk (rowid, text) VALUES (new.seq, new.text);
        END;
        CREATE TRIGGER memories_ad_cjk AFTER DELETE ON memories WHEN {old} BEGIN
            INSERT INTO memories_cjk (memories_cjk, rowid, text) VALUES ('delete', old.seq, old.text);
        END;
        CREATE TRIGGER memories_au_cjk AFTER UPDATE OF text ON memories BEGIN
            INSERT INTO memories_cjk (memories_cjk, rowid, text)
                SELECT 'delete', old.seq, old.text WHERE {old};
            INSERT INTO memories_cjk (rowid, text)
                SELECT new.seq, new.text WHERE {new};
        END;
        """
    )


def m004_author(db: Database) -> None:
    """Who captured each memory. Team stores (PostgreSQL) record it; SQLite keeps it so a
    memory moved between the two through export/import keeps its author."""
    _execute_script(db,
        """
        ALTER TABLE memories ADD COLUMN author TEXT;
        CREATE INDEX memories_author ON memories (author, created_at) WHERE author IS NOT NULL;
        """
    )


#: The migrations in order. Append only.
MIGRATIONS: list[Callable[[Any], None]] = [
    m001_initial, m002_pending_embeddings, m003_cjk_trigram_index, m004_author,
]
MIGRATION_NAMES: tuple[str, ...] = tuple(fn.__name__ for fn in MIGRATIONS)


def build_migrations() -> Migrations:
    """The sqlite-utils ``Migrations`` set holding every migration above."""
    from sqlite_utils.migrations import Migrations

    migrations = Migrations(MIGRATION_SET)
    for fn in MIGRATIONS:
        migrations()(fn)
    return migrations
