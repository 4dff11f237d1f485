"""memstore verify: every derived structure checked against SQLite; --repair rebuilds them;
a damaged database is reported and never modified."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from damage import damage_page

import memstore
from memstore.cli import cli
from memstore.embedding import HashEmbedder
from memstore.storage.sqlite.vector_index import VectorIndex


def _open(home: Path):
    return memstore.open(home, embedder=HashEmbedder())


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "s"
    with _open(home) as s:
        s.capture_many([{"text": f"memory {i} about topic {i % 7}", "tags": ["all", f"t{i % 3}"]}
                        for i in range(60)])
        s.recall("topic", mode="semantic")  # saves an index
    return home


def _sql(home: Path, *statements: str) -> None:
    conn = sqlite3.connect(home / "memstore.db", isolation_level=None)
    for statement in statements:
        conn.execute(statement)
    conn.close()


def _failed(report) -> set[str]:
    return {c.name for c in report.checks if not c.ok}


def test_a_healthy_store_passes_every_check(home):
    with _open(home) as s:
        report = s.verify()
    assert report.ok
    assert [c.name for c in report.checks] == ["sqlite", "fts", "tags", "vectors", "models", "index"]
    assert report.found is None and report.repaired == []
    assert json.loads(json.dumps(report.to_dict()))["ok"] is True


def test_fts_and_tags_out_of_step_are_found_and_rebuilt(home):
    _sql(home, "DROP TRIGGER memories_au_fts", "DROP TRIGGER memories_au_tags",
         "UPDATE memories SET text = 'zebra crossing', tags = '[\"zz\"]' WHERE seq = 3")
    with _open(home) as s:
        report = s.verify()
        assert _failed(report) == {"fts", "tags"}
        tags = next(c for c in report.checks if c.name == "tags")
        assert any("'zz' missing" in p for p in tags.problems)
        fixed = s.verify(repair=True)
        assert fixed.ok, fixed.to_dict()
        assert _failed_names(fixed.found) == {"fts", "tags"}
        assert any("full-text" in a for a in fixed.repaired)
        assert [h.memory.text for h in s.recall("zebra", mode="keyword")] == ["zebra crossing"]
        assert [m.text for m in s.list(tags=["zz"])] == ["zebra crossing"]


def test_cjk_trigram_index_out_of_step_is_found_and_rebuilt(home):
    with _open(home) as s:
        s.capture("数据库迁移工具")
    _sql(home, "DROP TRIGGER memories_au_cjk",
         "UPDATE memories SET text = '会议纪要在知识库' WHERE text = '数据库迁移工具'")
    with _open(home) as s:
        report = s.verify()
        fts = next(c for c in report.checks if c.name == "fts")
        assert not fts.ok and "memories_cjk" in fts.problems[0]
        assert s.verify(repair=True).ok
        assert [h.memory.text for h in s.recall("知识库", mode="keyword")] == ["会议纪要在知识库"]
        assert s.recall("数据库迁移", mode="keyword") == []


def _failed_names(checks) -> set[str]:
    return {c.name for c in checks if not c.ok}


def test_missing_malformed_and_orphan_embeddings(home):
    _sql(home, "PRAGMA foreign_keys = OFF",
         "DELETE FROM embeddings WHERE seq IN (5, 6)",  # both queued again by a trigger
         "DELETE FROM pending_embeddings WHERE seq = 5",  # 5 is lost from the queue
         "UPDATE embeddings SET vector = x'00000000' WHERE seq = 7",
         "INSERT INTO pending_embeddings (seq) VALUES (8)",  # queued, yet embedded
         "INSERT INTO embeddings (seq, model, content_hash, vector) "
         "SELECT 9999, model, content_hash, vector FROM embeddings WHERE seq = 8")
    with _open(home) as s:
        report = s.verify()
        vectors = next(c for c in report.checks if c.name == "vectors")
        assert not vectors.ok
        assert vectors.summary == "1 missing, 0 stale, 1 malformed, 1 orphan embeddings"
        assert "1 memories are queued for an embedding they already have" in vectors.problems
        assert s.recall("memory 7", mode="semantic")  # a malformed row never crashes recall
        fixed = s.verify(repair=True)
        assert fixed.ok, fixed.to_dict()
        assert s.stats()["without_current_vector"] == 0


def test_memories_waiting_for_deferred_embedding_are_not_a_problem(home):
    with _open(home) as s:
        s.capture("captured by a git hook, embedded later", embed=False)
        report = s.verify()
        assert report.ok
        vectors = next(c for c in report.checks if c.name == "vectors")
        assert "60 of 61 live memories embedded; 1 wait in the embedding queue" in vectors.summary


def test_vectors_of_another_model_are_left_to_reindex(home):
    _sql(home, "UPDATE embeddings SET model = 'some-other-model' WHERE seq <= 4")
    with _open(home) as s:
        report = s.verify(repair=True)
        models = next(c for c in report.checks if c.name == "models")
        assert not models.ok and "4 by some-other-model" in models.summary
        assert "memstore reindex" in models.problems[0]
        s.reindex()
        assert s.verify().ok


@pytest.mark.parametrize("damage", ["zero", "truncate"])
def test_damaged_index_is_reported_and_repaired(home, damage):
    meta = next((home / "index").glob("*.json"))
    data = home / "index" / json.loads(meta.read_text())["file"]
    raw = data.read_bytes()
    data.write_bytes(b"\0" * len(raw) if damage == "zero" else raw[: len(raw) // 2])
    with _open(home) as s:
        report = s.verify()
        assert _failed(report) == {"index"}
        fixed = s.verify(repair=True)
        assert fixed.ok and any("vector index" in a for a in fixed.repaired)
    with _open(home) as s:
        s.recall("topic", mode="semantic")
        assert s.notices == []  # the repaired file is used as is


def test_index_with_wrong_contents_is_found(home):
    import numpy as np

    with _open(home) as s:
        s.recall("x", mode="semantic")
        store_id = s.backend.store_id
    index = VectorIndex(home / "index", HashEmbedder.model_id, HashEmbedder.dimension)
    state = index.read_state()
    rng = np.random.default_rng(0)
    wrong = [(seq, rng.random(HashEmbedder.dimension, dtype=np.float32).tobytes())
             for seq in range(1, 61)]
    index.rebuild(wrong[:-1] + [(10_000, wrong[-1][1])], state.position)
    assert index.save(store_id, force=True)
    with _open(home) as s:
        report = s.verify()
        index_check = next(c for c in report.checks if c.name == "index")
        assert not index_check.ok
        assert set(index_check.problems) == {
            "1 live vectors are missing from the index",
            "1 index entries have no live vector (forgotten or purged)",
            "59 index vectors differ from the database",
        }
        assert s.verify(repair=True).ok


def test_damaged_database_is_reported_and_never_modified(home):
    with _open(home) as s:  # more rows so the table spans several pages
        s.capture_many([f"padding memory number {i} " + "x" * 300 for i in range(200)])
        some_id = s.list(limit=1)[0].id
    damaged = damage_page(home, "memories", b"\xa5")
    with _open(home) as s:
        report = s.verify(repair=True)
        assert not report.ok and report.repaired == [] and report.found is None
        assert report.checks[0].name == "sqlite" and not report.checks[0].ok
        assert all(c.skipped for c in report.checks[1:])
        with pytest.raises(memstore.CorruptDatabaseError, match="damaged"):
            s.list(limit=1000)
        with pytest.raises(memstore.CorruptDatabaseError):
            s.capture("written after the damage was found")
        with pytest.raises(memstore.CorruptDatabaseError, match="will not write"):
            s.forget(some_id)
    assert (home / "memstore.db").read_bytes() == damaged


def test_cli_verify_exit_status_and_json(home):
    runner = CliRunner()
    ok = runner.invoke(cli, ["--home", str(home), "verify"], catch_exceptions=False)
    assert ok.exit_code == 0 and "all checks passed" in ok.stdout
    _sql(home, "DELETE FROM memory_tags WHERE seq = 1")
    bad = runner.invoke(cli, ["--home", str(home), "verify", "--json"], catch_exceptions=False)
    assert bad.exit_code == 1
    data = json.loads(bad.stdout)
    assert not data["ok"] and [c["name"] for c in data["checks"] if not c["ok"]] == ["tags"]
    fixed = runner.invoke(cli, ["--home", str(home), "verify", "--repair"], catch_exceptions=False)
    assert fixed.exit_code == 0
    assert "rebuilt the tag table" in fixed.stdout and "all checks passed" in fixed.stdout
    quick = runner.invoke(cli, ["--home", str(home), "verify", "--quick"], catch_exceptions=False)
    assert "PRAGMA quick_check: ok" in quick.stdout


def test_cli_prints_index_rebuild_notice_on_one_line(home):
    meta = next((home / "index").glob("*.json"))
    data = home / "index" / json.loads(meta.read_text())["file"]
    data.write_bytes(b"garbage\n" * 1000)
    result = CliRunner().invoke(cli, ["--home", str(home), "recall", "topic 3"], catch_exceptions=False)
    assert result.exit_code == 0
    notices = [line for line in result.stderr.splitlines() if line.startswith("memstore:")]
    assert len(notices) == 1 and "rebuilt it from the database" in notices[0]
