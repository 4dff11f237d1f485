"""Opening databases: migrations, newer schemas, damaged files, permissions."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from damage import damage_page

import memstore
from memstore.embedding import HashEmbedder
from memstore.storage.sqlite.migrations import MIGRATION_NAMES


def _open(home: Path):
    return memstore.open(home, embedder=HashEmbedder())


def test_fresh_store_has_every_migration(tmp_path):
    with _open(tmp_path / "s"):
        pass
    conn = sqlite3.connect(tmp_path / "s" / "memstore.db")
    names = [r[0] for r in conn.execute("SELECT name FROM _sqlite_migrations ORDER BY id")]
    assert names == list(MIGRATION_NAMES)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_newer_schema_is_refused_untouched(tmp_path):
    home = tmp_path / "s"
    with _open(home) as s:
        s.capture("keep me")
    db = home / "memstore.db"
    conn = sqlite3.connect(db)
    conn.execute(
        "INSERT INTO _sqlite_migrations (migration_set, name, applied_at) "
        "VALUES ('memstore', 'm999_from_the_future', 'later')"
    )
    conn.commit()
    conn.close()
    with pytest.raises(memstore.SchemaTooNewError, match="newer memstore"):
        _open(home)


def test_corrupt_database_is_reported_and_never_overwritten(tmp_path):
    home = tmp_path / "s"
    home.mkdir()
    db = home / "memstore.db"
    garbage = b"this is not sqlite at all" * 400
    db.write_bytes(garbage)
    with pytest.raises(memstore.CorruptDatabaseError, match="left untouched"):
        _open(home)
    assert db.read_bytes() == garbage


def test_foreign_sqlite_file_is_refused(tmp_path):
    home = tmp_path / "s"
    home.mkdir()
    conn = sqlite3.connect(home / "memstore.db")
    conn.execute("CREATE TABLE customers (id INTEGER)")
    conn.commit()
    conn.close()
    with pytest.raises(memstore.StoreError, match="not a memstore store"):
        _open(home)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_directory(tmp_path):
    home = tmp_path / "ro"
    home.mkdir()
    home.chmod(0o500)
    try:
        with pytest.raises(memstore.StoreNotWritableError):
            _open(home)
    finally:
        home.chmod(0o700)


def test_unwritable_path_even_as_root(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(memstore.StoreError):
        _open(blocker / "store")


def test_concurrent_first_open(tmp_path):
    import subprocess
    import sys

    home = tmp_path / "race"
    code = (
        "import sys, memstore\n"
        "from memstore.embedding import HashEmbedder\n"
        "with memstore.open(sys.argv[1], embedder=HashEmbedder()) as s:\n"
        "    s.capture('from ' + sys.argv[2])\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code, str(home), str(i)], stderr=subprocess.PIPE)
        for i in range(4)
    ]
    for p in procs:
        _, err = p.communicate(timeout=60)
        assert p.returncode == 0, err.decode()
    with _open(home) as s:
        assert s.stats()["memories"] == 4


@pytest.mark.parametrize(
    "table", ["memories", "memories_fts_data", "embeddings", "memory_tags", "memories_live_hash"]
)
def test_damage_found_at_query_time_is_a_clear_error(tmp_path, table):
    home = tmp_path / "s"
    with _open(home) as s:
        s.capture_many([{"text": f"memory {i} about topic {i % 9} " + "words " * 40, "tags": [f"t{i % 4}"]}
                        for i in range(400)])
    damaged = damage_page(home, table)
    raised = []
    with _open(home) as s:
        reads = {
            "list": lambda: s.list(limit=1000),
            "keyword": lambda: s.recall("topic words", mode="keyword", limit=100),
            "semantic": lambda: s.recall("topic 3", mode="semantic", limit=100),
            "tags": lambda: s.list(tags=["t1"], limit=1000),
            "stats": s.stats,
        }
        for name, read in reads.items():
            try:
                read()
            except memstore.CorruptDatabaseError as exc:  # never a bare sqlite3 error
                assert "is damaged" in str(exc) and str(home) in str(exc)
                raised.append(name)
        if raised:
            with pytest.raises(memstore.CorruptDatabaseError):  # refused: nothing is written
                s.capture("a memory written after the damage was found")
    if raised:
        assert (home / "memstore.db").read_bytes() == damaged
    if table == "memories":
        assert raised
