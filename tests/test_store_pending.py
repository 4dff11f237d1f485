"""MemoryStore: deferred embedding (the pending queue), commit dates, and project/branch scope."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone

import pytest

import memstore
from memstore.embedding import HashEmbedder
from memstore.errors import ModelError
from memstore.settings import load_settings


class CountingEmbedder(HashEmbedder):
    """The hash embedder, counting the texts it embeds; ``broken`` makes it fail like a bad model."""

    def __init__(self) -> None:
        super().__init__()
        self.embedded: list[str] = []
        self.broken = False

    def embed(self, texts):
        if self.broken:
            raise ModelError("model unavailable")
        self.embedded.extend(texts)
        return super().embed(texts)


def _open(tmp_path, embedder, **settings):
    return memstore.open(tmp_path / "s", embedder=embedder,
                         settings=load_settings({"home": str(tmp_path / "s"), **settings}))


def _pending(store) -> int:
    return store.stats()["pending_embeddings"]


def test_deferred_capture_stores_text_now_and_embeds_nothing(tmp_path):
    emb = CountingEmbedder()
    with _open(tmp_path, emb) as store:
        m = store.capture("Readers no longer block writers with WAL", embed=False)
        assert m.created and emb.embedded == []
        assert _pending(store) == 1
        assert store.stats()["without_current_vector"] == 1
        hits = store.recall("WAL writers", mode="keyword")
        assert [h.memory.id for h in hits] == [m.id]
        assert emb.embedded == []  # keyword recall never needs the model


def test_recall_embeds_pending_before_the_vector_leg(tmp_path):
    emb = CountingEmbedder()
    with _open(tmp_path, emb) as store:
        m = store.capture("Readers no longer block writers with WAL", embed=False)
        hit = store.recall("Readers no longer block writers with WAL", mode="semantic")[0]
        assert hit.memory.id == m.id and hit.similarity == pytest.approx(1.0, abs=1e-4)
        assert emb.embedded == [m.text]
        assert _pending(store) == 0


def test_recall_drains_a_bounded_batch_newest_first(tmp_path):
    emb = CountingEmbedder()
    with _open(tmp_path, emb, **{"recall.embed_pending": 3}) as store:
        store.capture_many([f"backlog note {i}" for i in range(10)], embed=False)
        assert _pending(store) == 10
        store.recall("backlog note")
        assert emb.embedded == ["backlog note 9", "backlog note 8", "backlog note 7"]
        assert _pending(store) == 7
        # keyword still finds every one of them meanwhile
        assert len(store.recall("backlog note", mode="keyword", limit=20)) == 10
        store.recall("backlog note", mode="keyword")
        assert _pending(store) == 7


def test_recall_can_leave_pending_alone(tmp_path):
    emb = CountingEmbedder()
    with _open(tmp_path, emb, **{"recall.embed_pending": 0}) as store:
        store.capture("kept for later", embed=False)
        store.recall("kept for later")
        assert emb.embedded == [] and _pending(store) == 1


def test_embed_pending_and_reindex_empty_the_queue(tmp_path):
    emb = CountingEmbedder()
    with _open(tmp_path, emb) as store:
        store.capture_many([f"item {i}" for i in range(5)], embed=False)
        assert store.embed_pending(2) == 2
        assert _pending(store) == 3
        assert store.embed_pending() == 3
        assert store.embed_pending() == 0
        store.capture("one more", embed=False)
        assert store.reindex()["embedded"] == 1
        assert _pending(store) == 0
        with pytest.raises(memstore.InvalidInputError):
            store.embed_pending(-1)


def test_a_failing_model_leaves_memories_pending_and_recall_working(tmp_path):
    emb = CountingEmbedder()
    with _open(tmp_path, emb) as store:
        emb.broken = True
        m = store.capture("stored while the model was away")
        assert m.notices and _pending(store) == 1
        hits = store.recall("stored while the model was away")
        assert [h.memory.id for h in hits] == [m.id]
        assert any("could not embed pending" in n for n in store.notices)
        emb.broken = False
        assert store.embed_pending() == 1 and _pending(store) == 0


def test_forgotten_pending_memories_are_not_embedded_and_purge_cleans_up(tmp_path):
    emb = CountingEmbedder()
    with _open(tmp_path, emb) as store:
        m = store.capture("soon forgotten", embed=False)
        store.capture("embedded normally")
        store.forget(m.id)
        assert _pending(store) == 0
        assert store.embed_pending() == 0
        assert len(store.purge().items) == 1
    conn = sqlite3.connect(tmp_path / "s" / "memstore.db")
    assert conn.execute("SELECT count(*) FROM pending_embeddings").fetchone()[0] == 0


def test_migration_queues_memories_stored_without_a_vector(tmp_path):
    """A store written before the queue existed: memories without a vector become pending."""
    emb = CountingEmbedder()
    with _open(tmp_path, emb) as store:
        store.capture("has a vector")
        emb.broken = True
        store.capture("has none")
    conn = sqlite3.connect(tmp_path / "s" / "memstore.db")
    with conn:
        conn.execute("DROP TRIGGER memories_ai_pending")
        conn.execute("DROP TRIGGER embeddings_ai_pending")
        conn.execute("DROP TRIGGER embeddings_ad_pending")
        conn.execute("DROP TABLE pending_embeddings")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm002_pending_embeddings'")
    conn.close()
    emb.broken = False
    with _open(tmp_path, emb) as store:
        assert _pending(store) == 1
        assert store.embed_pending() == 1


def test_created_at_records_when_it_happened(store):
    when = datetime(2021, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    m = store.capture("an old decision", created_at=when)
    assert m.created_at == when and m.updated_at > when
    assert [x.id for x in store.list(until="2022-01-01")] == [m.id]
    many = store.capture_many([{"text": "older still", "created_at": "2020-01-01"}])
    assert many[0].created_at.year == 2020
    with pytest.raises(memstore.InvalidInputError):
        store.capture("bad date", created_at="someday")


def test_project_scope_holds_on_both_legs(store):
    for i in range(30):
        store.capture(f"switched the cache to redis, step {i}", project="github.com/a/a", branch="main")
    b = store.capture("switched the cache to redis in B", project="github.com/b/b", branch="main")
    loose = store.capture("switched the cache to redis: a general note")
    for mode in ("hybrid", "keyword", "semantic"):
        hits = store.recall("switched the cache to redis", project=["github.com/a/a", None],
                            mode=mode, limit=50)
        ids = {h.memory.id for h in hits}
        assert b.id not in ids and loose.id in ids, mode
        assert {h.memory.project for h in hits} <= {"github.com/a/a", None}
        only_b = store.recall("switched the cache to redis", project="github.com/b/b", mode=mode)
        assert [h.memory.id for h in only_b] == [b.id], mode
    everything = store.recall("switched the cache to redis", limit=50)
    assert b.id in {h.memory.id for h in everything}
    unscoped = store.recall("switched the cache to redis", project=[None], mode="semantic")
    assert [h.memory.id for h in unscoped] == [loose.id]


def test_branch_scope(store):
    store.capture("feature flag rollout plan", project="p", branch="main")
    f = store.capture("feature flag rollout plan, the experiment", project="p", branch="exp")
    hits = store.recall("feature flag rollout", project="p", branch="exp", mode="semantic")
    assert [h.memory.id for h in hits] == [f.id]
    assert [m.id for m in store.list(branch="exp")] == [f.id]


def test_list_filters_by_source_and_metadata(store):
    a = store.capture("commit one", source="git", metadata={"commit": "abc"}, project="p")
    store.capture("commit two", source="git", metadata={"commit": "def"}, project="p")
    store.capture("a note", metadata={"commit": "abc"})
    assert [m.id for m in store.list(source="git", metadata={"commit": "abc"})] == [a.id]
    assert [m.id for m in store.list(project="p", metadata={"commit": "abc"})] == [a.id]
    store.forget(a.id)
    assert store.list(source="git", metadata={"commit": "abc"}) == []
    assert [m.id for m in store.list(source="git", metadata={"commit": "abc"}, deleted=True)] == [a.id]
    with pytest.raises(memstore.InvalidInputError):
        store.list(metadata={'we"ird': "x"})
    with pytest.raises(memstore.InvalidInputError):
        store.list(metadata={"commit": 3})
    with pytest.raises(memstore.InvalidInputError):
        store.list(project=[])
