"""A memory's life after capture: update and history, forget/restore, expiry, purge."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlitefile import raw

import memstore
from memstore.timeutil import now


def ids(memories):
    return [m.id for m in memories]


def recalled(store, query, **kwargs):
    return {h.memory.id for h in store.recall(query, **kwargs)}


# -- update and history ----------------------------------------------------------------------


def test_update_writes_a_linked_version_and_hides_the_old(store):
    old = store.capture("The staging database is on db-3", namespace="ops", tags=["db"],
                        metadata={"ticket": "OPS-1"}, source="cli")
    new = store.update(old.id, "The staging database moved to db-7")
    assert new.created and new.id != old.id
    assert new.supersedes == old.id and new.superseded_by is None
    assert (new.namespace, new.tags, new.metadata, new.source) == ("ops", ("db",), {"ticket": "OPS-1"}, "cli")
    stale = store.get(old.id)
    assert stale.superseded_by == new.id and not stale.deleted
    for mode in ("hybrid", "keyword", "semantic"):
        assert recalled(store, "staging database db", mode=mode) == {new.id}, mode
    assert ids(store.list()) == [new.id]
    assert store.stats()["superseded"] == 1


def test_history_from_any_version(store):
    v1 = store.capture("Release train leaves on Tuesdays")
    v2 = store.update(v1.id, "Release train leaves on Wednesdays")
    v3 = store.update(v2.id, tags=["process"])
    for some in (v1, v2, v3):
        assert ids(store.history(some.id)) == [v1.id, v2.id, v3.id]
    assert store.history(v3.id)[-1].tags == ("process",)
    with pytest.raises(memstore.NotFoundError):
        store.history("01NOSUCHID")


class CountingEmbedder(memstore.HashEmbedder):
    def __init__(self):
        super().__init__()
        self.calls = []

    def embed(self, texts):
        self.calls.append(list(texts))
        return super().embed(texts)


def test_update_of_tags_only_reuses_the_vector(tmp_path):
    emb = CountingEmbedder()
    store = memstore.open(tmp_path / "counted", embedder=emb)
    m = store.capture("Use ruff for linting")
    emb.calls.clear()
    new = store.update(m.id, tags=["tooling"], metadata={"why": "fast"})
    assert emb.calls == []
    assert new.content_hash == m.content_hash
    assert recalled(store, "ruff linting", mode="semantic") == {new.id}
    store.close()


def test_update_fields_and_clearing(store):
    m = store.capture("note with extras", tags=["a", "b"], metadata={"k": 1}, ttl="7d")
    new = store.update(m.id, tags=[], metadata={})
    assert new.tags == () and new.metadata == {} and new.expires_at == m.expires_at
    newer = store.update(new.id, expires_at=None)
    assert newer.expires_at is None
    later = store.update(newer.id, ttl="2d")
    assert later.expires_at is not None and later.expires_at - now() > timedelta(days=1)


def test_update_with_no_change_writes_nothing(store):
    m = store.capture("stable fact", tags=["x"])
    same = store.update(m.id, "stable fact", tags=["x"])
    assert not same.created and same.id == m.id
    assert store.history(m.id) == [store.get(m.id)]


def test_update_of_forgotten_or_superseded_is_a_clear_error(store):
    m = store.capture("first wording")
    new = store.update(m.id, "second wording")
    with pytest.raises(memstore.ConflictError, match=f"current version is {new.id}") as info:
        store.update(m.id, "third wording")
    assert info.value.existing_id == new.id
    store.forget(new.id)
    with pytest.raises(memstore.ConflictError, match="forgotten; restore it first"):
        store.update(new.id, "third wording")
    with pytest.raises(memstore.NotFoundError):
        store.update("01NOSUCHID", "x")
    assert len(store.history(m.id)) == 2


def test_update_to_text_of_another_live_memory_is_refused(store):
    a = store.capture("We deploy with Ansible")
    b = store.capture("We deploy with Terraform")
    with pytest.raises(memstore.ConflictError, match=a.id) as info:
        store.update(b.id, "We  deploy with Ansible")
    assert info.value.existing_id == a.id
    assert store.get(b.id).superseded_by is None
    # the same text in another namespace is another memory: allowed
    c = store.capture("We deploy with Terraform", namespace="other")
    assert store.update(c.id, "We deploy with Ansible").created


def test_update_whitespace_only_change_keeps_dedup_working(store):
    m = store.capture("Tabs versus spaces: spaces")
    new = store.update(m.id, "Tabs versus  spaces: spaces")
    assert new.created and new.content_hash == m.content_hash
    again = store.capture("Tabs versus spaces: spaces")
    assert not again.created and again.id == new.id


def test_update_bad_input_changes_nothing(store):
    m = store.capture("some memory")
    for kwargs in ({"tags": [""]}, {"metadata": "x"}, {"ttl": "soon"}, {"text": ""}):
        with pytest.raises(memstore.InvalidInputError):
            store.update(m.id, **kwargs)
    assert store.history(m.id) == [store.get(m.id)]


def test_capture_supersedes(store):
    old = store.capture("Lunch is at noon", namespace="office", tags=["food"])
    new = store.capture("Lunch moved to 12:30", supersedes=old.id)
    assert new.created and new.supersedes == old.id
    assert new.namespace == "office" and new.tags == ()
    assert store.get(old.id).superseded_by == new.id
    assert ids(store.history(old.id)) == [old.id, new.id]
    with pytest.raises(memstore.ConflictError):
        store.capture("Lunch moved to 13:00", supersedes=old.id)


def test_update_survives_reopen_and_index_rebuild(tmp_path):
    with memstore.open(tmp_path / "s", embedder=memstore.HashEmbedder()) as s:
        m = s.capture("cache invalidation is hard")
        s.recall("cache", mode="semantic")
        new = s.update(m.id, "cache invalidation is very hard")
    with memstore.open(tmp_path / "s", embedder=memstore.HashEmbedder()) as s:
        assert recalled(s, "cache invalidation", mode="semantic") == {new.id}


# -- forget and restore ----------------------------------------------------------------------


def test_restore_undoes_forget(store):
    m = store.capture("restore me later")
    store.forget(m.id)
    assert recalled(store, "restore me later") == set()
    back = store.restore(m.id)
    assert not back.deleted and back.deleted_at is None
    for mode in ("hybrid", "keyword", "semantic"):
        assert recalled(store, "restore me later", mode=mode) == {m.id}
    assert store.restore(m.id) == back  # not forgotten: nothing to do


def test_restore_records_when_forgotten(store):
    m = store.capture("tombstone times")
    forgotten = store.forget(m.id)
    assert forgotten.deleted_at is not None
    assert store.list(deleted=True)[0].deleted_at == forgotten.deleted_at


def test_restore_conflicts_with_a_recaptured_text(store):
    m = store.capture("captured twice")
    store.forget(m.id)
    again = store.capture("captured twice")
    assert again.created
    with pytest.raises(memstore.ConflictError, match=again.id):
        store.restore(m.id)
    assert store.get(m.id).deleted
    with pytest.raises(memstore.NotFoundError):
        store.restore("01NOSUCHID")


def test_restore_embeds_a_memory_without_vector(store):
    m = store.capture("vectorless memory")
    raw(store).execute("DELETE FROM embeddings")
    store.forget(m.id)
    store.restore(m.id)
    assert store.stats()["without_current_vector"] == 0
    assert recalled(store, "vectorless memory", mode="semantic") == {m.id}


# -- expiry ----------------------------------------------------------------------------------


def expire(store, memory_id):
    """Move a memory's expiry into the past (time travel without sleeping)."""
    raw(store).execute(
        "UPDATE memories SET expires_at = '2000-01-01T00:00:00.000000Z' WHERE id = ?", (memory_id,)
    )


def test_ttl_and_expires_at(store):
    a = store.capture("short lived", ttl="7d")
    assert timedelta(days=6, hours=23) < a.expires_at - now() <= timedelta(days=7)
    b = store.capture("dated", expires_at="2999-01-01")
    assert b.expires_at.year == 2999
    c = store.capture("timedelta ttl", ttl=timedelta(hours=2))
    assert c.expires_at - now() <= timedelta(hours=2)
    assert store.get(a.id).expires_at == a.expires_at


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"ttl": "7d", "expires_at": "2999-01-01"}, "not both"),
        ({"ttl": "soon"}, "invalid duration"),
        ({"ttl": "0d"}, "positive"),
        ({"ttl": 7}, "duration"),
        ({"expires_at": "7d"}, "use ttl="),
        ({"expires_at": "2001-01-01"}, "in the past"),
        ({"expires_at": "yesterday"}, "in the past"),
    ],
)
def test_bad_expiry_is_refused(store, kwargs, message):
    with pytest.raises(memstore.InvalidInputError, match=message):
        store.capture("x", **kwargs)
    assert store.stats()["memories"] == 0


def test_expired_memories_leave_recall_and_list(store):
    gone = store.capture("ephemeral standup note", ttl="1d")
    kept = store.capture("permanent standup note")
    expire(store, gone.id)
    for mode in ("hybrid", "keyword", "semantic"):
        assert recalled(store, "standup note", mode=mode) == {kept.id}, mode
    assert ids(store.list()) == [kept.id]
    assert ids(store.list(expired=True)) == [gone.id]
    assert store.get(gone.id).expires_at is not None


def test_update_of_expired_memory_needs_a_new_expiry(store):
    m = store.capture("stale promo code", ttl="1d")
    expire(store, m.id)
    with pytest.raises(memstore.ConflictError, match="expired"):
        store.update(m.id, "fresh promo code")
    revived = store.update(m.id, "fresh promo code", expires_at=None)
    assert revived.expires_at is None and recalled(store, "promo code") == {revived.id}


# -- purge -----------------------------------------------------------------------------------


def test_purge_dry_run_lists_and_changes_nothing(store):
    a = store.capture("forgotten one")
    b = store.capture("expiring one", ttl="1d")
    store.capture("kept one")
    store.forget(a.id)
    expire(store, b.id)
    plan = store.purge(dry_run=True)
    assert plan.dry_run and {(i.memory.id, i.reason) for i in plan.items} == {
        (a.id, "forgotten"), (b.id, "expired"),
    }
    assert store.get(a.id) and store.get(b.id)
    done = store.purge()
    assert not done.dry_run and done.count == 2
    for memory_id in (a.id, b.id):
        with pytest.raises(memstore.NotFoundError):
            store.get(memory_id)
    assert store.stats()["memories"] == 1


def test_purge_removes_fts_rows_vectors_and_the_text_from_the_file(tmp_path):
    with memstore.open(tmp_path / "s", embedder=memstore.HashEmbedder()) as s:
        s.capture_many([f"filler memory number {i}" for i in range(50)])
        m = s.capture("the launch code is zebra-quokka-17")
        s.recall("zebra", mode="semantic")
        s.forget(m.id)
        s.purge()
        conn = raw(s)
        fts = "SELECT count(*) FROM memories_fts WHERE memories_fts MATCH 'quokka'"
        assert conn.execute(fts).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 50
        assert conn.execute("SELECT count(*) FROM memory_tags").fetchone()[0] == 0
        assert recalled(s, "zebra quokka launch code", mode="semantic").isdisjoint({m.id})
        conn.close()
    data = b"".join(p.read_bytes() for p in (tmp_path / "s").glob("memstore.db*"))
    assert b"quokka" not in data


def test_purge_takes_the_history_of_a_purged_memory(store):
    v1 = store.capture("draft one")
    v2 = store.update(v1.id, "draft two")
    v3 = store.update(v2.id, "draft three")
    other = store.capture("unrelated")
    store.forget(v3.id)
    plan = store.purge(dry_run=True)
    assert [(i.memory.id, i.reason) for i in plan.items] == [
        (v1.id, "history"), (v2.id, "history"), (v3.id, "forgotten"),
    ]
    assert store.purge().count == 3
    assert ids(store.list()) == [other.id]
    assert store.stats()["superseded"] == 0


def test_purge_of_a_forgotten_old_version_reconnects_the_chain(store):
    v1 = store.capture("wording one")
    v2 = store.update(v1.id, "wording two with a secret")
    v3 = store.update(v2.id, "wording three")
    store.forget(v2.id)  # an old version: hidden already, removed alone by purge
    assert recalled(store, "wording") == {v3.id}
    assert [i.memory.id for i in store.purge().items] == [v2.id]
    assert ids(store.history(v3.id)) == [v1.id, v3.id]
    assert store.get(v1.id).superseded_by == v3.id and store.get(v3.id).supersedes == v1.id
    assert recalled(store, "wording") == {v3.id}


def test_purge_of_an_expired_chain(store):
    v1 = store.capture("temporary fact", ttl="1d")
    v2 = store.update(v1.id, "temporary fact, corrected")
    expire(store, v2.id)
    assert {i.memory.id: i.reason for i in store.purge().items} == {v1.id: "history", v2.id: "expired"}
    assert store.stats()["superseded"] == 0
