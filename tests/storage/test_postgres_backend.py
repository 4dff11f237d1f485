"""The PostgreSQL backend against a real server: schema, duplicates, filters on both legs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from memstore.db import Filter
from memstore.errors import SchemaTooNewError
from memstore.identity import content_hash, new_id
from memstore.storage.postgres import open_backend
from memstore.timeutil import format_ts, now


def _row(text: str, namespace: str = "default", **extra):
    stamp = format_ts(now())
    values = {
        "id": new_id(), "text": text, "namespace": namespace, "tags": json.dumps(extra.pop("tags", [])),
        "source": None, "metadata": json.dumps(extra.pop("metadata", {})),
        "content_hash": content_hash(text, namespace, extra.get("project")),
        "created_at": stamp, "updated_at": stamp,
    }
    values.update(extra)
    return values


def _unit(seed: int, dim: int = 384) -> np.ndarray:
    vec = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return vec / np.linalg.norm(vec)


@pytest.fixture
def backend(postgres_url):
    b = open_backend(postgres_url)
    yield b
    b.close()


def test_schema_is_created_once_and_reopens(postgres_url):
    first = open_backend(postgres_url)
    second = open_backend(postgres_url)
    assert first.store_id == second.store_id
    assert first.dimension == 384
    first.close()
    second.close()


def test_newer_schema_is_refused_and_left_alone(postgres_url):
    import psycopg

    open_backend(postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("INSERT INTO memstore_schema (version, name) VALUES (99, 'm099_future')")
    with pytest.raises(SchemaTooNewError, match="version 99"):
        open_backend(postgres_url)


def test_same_text_in_same_scope_inserts_once(backend):
    with backend.transaction() as conn:
        first = backend.insert_memory(conn, _row("We chose PostgreSQL"))
        again = backend.insert_memory(conn, _row("We chose PostgreSQL"))
        other_scope = backend.insert_memory(conn, _row("We chose PostgreSQL", "decisions"))
    assert first is not None and again is None and other_scope is not None
    with backend.reading() as conn:
        found = backend.find_live_by_hash(conn, content_hash("We chose PostgreSQL", "default"))
    assert found is not None and found.text == "We chose PostgreSQL"


def test_a_failed_transaction_leaves_nothing(backend):
    with pytest.raises(RuntimeError), backend.transaction() as conn:
        backend.insert_memory(conn, _row("half a capture"))
        raise RuntimeError("crash")
    with backend.reading() as conn:
        assert backend.counts(conn)["memories"] == 0


def test_keyword_leg_ranks_stemmed_matches_and_holds_filters(backend):
    with backend.transaction() as conn:
        a = backend.insert_memory(conn, _row("Deploying the database migrations", tags=["ops"]))
        b = backend.insert_memory(conn, _row("We deploy on Fridays", "decisions"))
        backend.insert_memory(conn, _row("Lunch is at noon"))
    with backend.reading() as conn:
        for ranking in ("bm25", "ts_rank_cd"):
            hits = backend.keyword_search(conn, ["deploys", "database"], Filter(), 10, ranking=ranking)
            assert [seq for seq, _ in hits] == [a, b]
            assert hits[0][1] < hits[1][1] < 0  # negated, as SQLite's bm25()
        only = backend.keyword_search(conn, ["deploy"], Filter(namespaces=("decisions",)), 10)
        assert [seq for seq, _ in only] == [b]
        tagged = backend.keyword_search(conn, ["ops"], Filter(), 10)
        assert [seq for seq, _ in tagged] == [a]


def test_hostile_query_words_are_only_words(backend):
    with backend.transaction() as conn:
        seq = backend.insert_memory(conn, _row("it's a 'quoted' & (odd) | text: !x"))
    with backend.reading() as conn:
        hits = backend.keyword_search(conn, ["it's", "'", "&", "|", "!x", ":*", "quoted"], Filter(), 10)
    assert [s for s, _ in hits] == [seq]


def test_cjk_text_is_found_by_its_words(backend):
    with backend.transaction() as conn:
        seq = backend.insert_memory(conn, _row("東京の天気は晴れです"))
        backend.insert_memory(conn, _row("plain english"))
    with backend.reading() as conn:
        assert [s for s, _ in backend.cjk_search(conn, ["天気は", "晴れで"], Filter(), 10)] == [seq]
        assert [s for s, _ in backend.cjk_search(conn, ["天気"], Filter(), 10, indexed=False)] == [seq]


def test_vector_leg_holds_a_selective_filter(backend):
    model = "test-model"
    seqs = {}
    with backend.transaction() as conn:
        for i in range(60):
            ns = "rare" if i == 59 else "common"
            seq = backend.insert_memory(conn, _row(f"memory {i}", ns))
            backend.put_embedding(conn, seq, model, f"h{i}", _unit(i).astype("<f4").tobytes())
            seqs[i] = seq
    query = _unit(3)
    with backend.reading() as conn:
        top = backend.vector_search(conn, query, model, Filter(), 5)
        assert top[0][0] == seqs[3] and top[0][1] == pytest.approx(1.0, abs=1e-5)
        rare = backend.vector_search(conn, query, model, Filter(namespaces=("rare",)), 5)
        assert [s for s, _ in rare] == [seqs[59]]
        assert backend.pending_count(conn) == 0


def test_forgotten_memories_leave_both_legs_and_purge_removes_text(backend):
    with backend.transaction() as conn:
        seq = backend.insert_memory(conn, _row("the secret launch date"))
        backend.put_embedding(conn, seq, "m", "h", _unit(1))
    with backend.transaction() as conn:
        backend.set_state(conn, seq, deleted=True, deleted_at=format_ts(now()), updated_at=format_ts(now()))
    with backend.reading() as conn:
        assert backend.keyword_search(conn, ["launch"], Filter(), 5) == []
        assert backend.vector_search(conn, _unit(1), "m", Filter(), 5) == []
    with backend.transaction() as conn:
        plan = backend.purge_candidates(conn, now())
        assert [(s, r) for s, _, r in plan] == [(seq, "forgotten")]
        assert backend.delete_memories(conn, [seq]) == 1
    import psycopg

    with psycopg.connect(backend.url) as conn:
        assert conn.execute("SELECT count(*) FROM memories WHERE text LIKE '%launch%'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 0


def test_term_frequency_read_back_from_ts_rank_is_exact(backend):
    """BM25's tf comes from ts_rank (memstore_tf): exact for every count a tsvector holds."""
    with backend.reading() as conn:
        wrong = conn.execute(
            "SELECT n FROM generate_series(1, 300) n WHERE memstore_tf("
            "to_tsvector('memstore_text', repeat('word ', n) || 'end'), 'word'::tsquery) <> least(n, 255)"
        ).fetchall()
    assert wrong == []


def test_bm25_prefers_rare_terms_and_short_documents(backend):
    with backend.transaction() as conn:
        common = [backend.insert_memory(conn, _row(f"common filler {i}")) for i in range(20)]
        rare = backend.insert_memory(conn, _row("common zebra"))
        long = backend.insert_memory(conn, _row("zebra " + " ".join(f"pad{i}" for i in range(40))))
    with backend.reading() as conn:
        hits = backend.keyword_search(conn, ["common", "zebra"], Filter(), 30)
    assert [s for s, _ in hits[:2]] == [rare, long]
    assert set(common) <= {s for s, _ in hits}
