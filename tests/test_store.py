"""MemoryStore: capture, recall, filters, forget, purge, bulk, bad input."""

from __future__ import annotations

import io
import json
from datetime import timedelta

import pytest

import memstore
from memstore.embedding import HashEmbedder
from memstore.recall import KEYWORD_WEIGHT, VECTOR_WEIGHT
from memstore.timeutil import now


def test_capture_and_get_round_trip(store):
    m = store.capture(
        "We chose PostgreSQL for JSONB support",
        namespace="decisions", tags=["db", "postgres"], metadata={"ticket": "OPS-12"}, source="cli",
    )
    assert m.created
    got = store.get(m.id)
    assert got.text == "We chose PostgreSQL for JSONB support"
    assert got.namespace == "decisions"
    assert got.tags == ("db", "postgres")
    assert got.metadata == {"ticket": "OPS-12"}
    assert got.source == "cli"
    assert not got.deleted


def test_text_is_stored_exactly(store):
    text = "  Leading spaces,\ttabs\nand a trailing newline\n"
    assert store.get(store.capture(text).id).text == text


def test_same_text_same_namespace_is_deduplicated(store):
    a = store.capture("Use ruff for linting")
    b = store.capture("  Use   ruff for linting ")
    assert not b.created
    assert b.id == a.id
    c = store.capture("Use ruff for linting", namespace="other")
    assert c.created and c.id != a.id
    assert store.stats()["memories"] == 2


def test_recall_modes_return_evidence(store):
    target = store.capture("We chose PostgreSQL over MySQL for JSONB and partial indexes")
    store.capture("The cat sleeps on the blue blanket")
    for mode in ("hybrid", "keyword", "semantic"):
        hits = store.recall("PostgreSQL JSONB", mode=mode)
        assert hits[0].memory.id == target.id
    hit = store.recall("PostgreSQL JSONB")[0]
    assert hit.keyword_rank == 1 and hit.vector_rank == 1
    assert hit.similarity is not None and 0 < hit.similarity <= 1.0001
    # the raw fused score: keyword strength 1 (the best match) and the cosine, weighted
    assert hit.score == pytest.approx(KEYWORD_WEIGHT * 1.0 + VECTOR_WEIGHT * hit.similarity)
    kw = store.recall("PostgreSQL", mode="keyword")[0]
    assert kw.vector_rank is None and kw.similarity is None and kw.bm25 is not None


def test_recall_limit_and_default(store):
    store.capture_many([f"note number {i} about deploys" for i in range(30)])
    assert len(store.recall("deploys")) == 10
    assert len(store.recall("deploys", limit=3)) == 3


def test_namespace_filter_holds_on_both_legs(store):
    for i in range(40):
        store.capture(f"secret project alpha detail {i}", namespace="alpha")
    store.capture("beta project note", namespace="beta")
    for mode in ("hybrid", "keyword", "semantic"):
        hits = store.recall("secret project alpha detail", namespace="beta", mode=mode, limit=20)
        assert {h.memory.namespace for h in hits} <= {"beta"}, mode
    hits = store.recall("secret project alpha", namespace="beta", mode="semantic")
    assert [h.memory.namespace for h in hits] == ["beta"]


def test_namespace_filter_on_unselective_hnsw_path(store, monkeypatch):
    # Force the approximate path: post-filtering must still hold.
    monkeypatch.setattr("memstore.storage.sqlite.backend.EXACT_FILTER_MAX", 0)
    monkeypatch.setattr("memstore.storage.sqlite.vector_cache.EXACT_INDEX_MAX", 0)
    store.capture_many([{"text": f"shared words item {i}", "namespace": "a"} for i in range(200)])
    store.capture_many([{"text": f"shared words other {i}", "namespace": "b"} for i in range(5)])
    hits = store.recall("shared words item", namespace="b", mode="semantic", limit=10)
    assert len(hits) == 5
    assert {h.memory.namespace for h in hits} == {"b"}


def test_tags_filter_requires_all_tags(store):
    both = store.capture("deploy runbook for the api", tags=["ops", "api"])
    store.capture("deploy runbook for the web", tags=["ops"])
    for mode in ("hybrid", "keyword", "semantic"):
        hits = store.recall("deploy runbook", tags=["ops", "api"], mode=mode)
        assert [h.memory.id for h in hits] == [both.id]


def test_since_until_filters(store):
    m = store.capture("a memory about time filters")
    assert store.recall("time filters", since=now() + timedelta(hours=1)) == []
    assert store.recall("time filters", until="2000-01-01") == []
    assert store.recall("time filters", since="1d")[0].memory.id == m.id
    with pytest.raises(memstore.InvalidInputError):
        store.recall("time filters", since="last tuesday")


def test_forget_hides_from_recall_and_list_and_removes_vector(store):
    m = store.capture("forget me please")
    store.capture("keep me around")
    assert store.recall("forget me", mode="semantic")[0].memory.id == m.id
    store.forget(m.id)
    assert m.id not in {h.memory.id for h in store.recall("forget me please")}
    assert m.id not in {x.id for x in store.list()}
    assert [x.id for x in store.list(deleted=True)] == [m.id]
    assert store.get(m.id).deleted
    assert m.id not in {h.memory.id for h in store.recall("forget me please", mode="semantic")}
    assert store.stats()["forgotten"] == 1


def test_purge(store):
    m = store.capture("to be purged")
    store.forget(m.id)
    assert store.purge(dry_run=True).count == 1
    assert store.purge().count == 1
    with pytest.raises(memstore.NotFoundError):
        store.get(m.id)
    assert store.purge().count == 0


def test_list_newest_first_with_filters(store):
    a = store.capture("first", namespace="x")
    b = store.capture("second", namespace="y")
    c = store.capture("third", namespace="x", tags=["t"])
    assert [m.id for m in store.list()] == [c.id, b.id, a.id]
    assert [m.id for m in store.list(namespace="x")] == [c.id, a.id]
    assert [m.id for m in store.list(tags=["t"])] == [c.id]
    assert [m.id for m in store.list(limit=1, offset=1)] == [b.id]


def test_capture_many_mixed_items_and_duplicates(store):
    calls = []
    results = store.capture_many(
        ["alpha", {"text": "beta", "namespace": "n", "tags": ["x"]}, "alpha"],
        batch_size=2, progress=lambda done, total: calls.append((done, total)),
    )
    assert [r.created for r in results] == [True, True, False]
    assert results[2].id == results[0].id
    assert store.get(results[1].id).namespace == "n"
    assert calls[-1] == (3, 3)


def test_capture_many_checks_everything_first(store):
    with pytest.raises(memstore.InvalidInputError, match="item 2"):
        store.capture_many(["fine", "also fine", ""])
    assert store.stats()["memories"] == 0


def test_import_jsonl(store, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "one", "tags": ["a"]}\n\n"two"\n', encoding="utf-8")
    result = store.import_jsonl(path)
    assert result.format == "jsonl" and (result.read, result.created) == (2, 2)
    assert [r.text for r in result.results] == ["one", "two"]
    bad = io.StringIO('{"text": "ok"}\n{not json}\n')
    with pytest.raises(memstore.InvalidInputError, match="line 2"):
        store.import_jsonl(bad)
    assert store.stats()["memories"] == 2


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "empty"),
        ("   \n\t ", "empty"),
        ("a\x00b", "NUL"),
        ("x" * (64 * 1024 + 1), "65,536"),
        (b"\xff\xfe bad", "UTF-8"),
        (42, "string"),
    ],
)
def test_bad_text_is_refused_and_changes_nothing(store, text, message):
    with pytest.raises(memstore.InvalidInputError, match=message):
        store.capture(text)
    assert store.stats()["memories"] == 0


def test_text_at_the_limit_is_kept_whole(store):
    text = "é" * (32 * 1024)  # 64 KiB of UTF-8
    assert store.get(store.capture(text).id).text == text


@pytest.mark.parametrize(
    "kwargs",
    [
        {"namespace": ""},
        {"namespace": "a\nb"},
        {"tags": ["ok", ""]},
        {"tags": ["x" * 200]},
        {"metadata": {"k": object()}},
        {"metadata": {1: "x"}},
        {"metadata": "not a dict"},
    ],
)
def test_bad_fields_are_refused(store, kwargs):
    with pytest.raises(memstore.InvalidInputError):
        store.capture("valid text", **kwargs)
    assert store.stats()["memories"] == 0


def test_bad_recall_arguments(store):
    for kwargs in ({"limit": 0}, {"limit": "5"}, {"mode": "fuzzy"}):
        with pytest.raises(memstore.InvalidInputError):
            store.recall("query", **kwargs)
    with pytest.raises(memstore.InvalidInputError):
        store.recall("   ")


def test_unknown_id(store):
    for call in (store.get, store.forget):
        with pytest.raises(memstore.NotFoundError):
            call("01NOSUCHID")


def test_hostile_queries_are_safe(store):
    store.capture('He said "AND" NEAR the (parenthesis): a*b ^c')
    for query in ['"', "AND", "NEAR(", "a:b", "*", "^", "(((", ")", "-", "OR OR"]:
        store.recall(query, mode="keyword")
        store.recall(query)
    top = store.recall('"AND" NEAR (parenthesis)', mode="keyword")[0]
    assert top.memory.text.startswith("He said")
    with pytest.raises(memstore.InvalidInputError, match="NUL"):
        store.recall("\x00x")


def test_stats(store):
    store.capture("one", namespace="a")
    store.capture("two", namespace="b")
    stats = store.stats()
    assert stats["memories"] == 2
    assert stats["namespaces"] == {"a": 1, "b": 1}
    assert stats["embeddings"] == {HashEmbedder.model_id: 2}
    assert stats["without_current_vector"] == 0
    json.dumps(stats)


def test_closed_store_refuses_work(tmp_path):
    s = memstore.open(tmp_path / "s", embedder=HashEmbedder())
    s.close()
    s.close()
    with pytest.raises(memstore.StoreError):
        s.capture("x")


def test_default_home_from_environment(isolated_env):
    with memstore.open(embedder=HashEmbedder()) as s:
        assert s.home == isolated_env
        s.capture("lives in MEMSTORE_HOME")
    assert (isolated_env / "memstore.db").exists()


def test_store_files_are_private(tmp_path):
    home = tmp_path / "private"
    with memstore.open(home, embedder=HashEmbedder()) as s:
        s.capture("private note")
    assert (home.stat().st_mode & 0o777) == 0o700
    assert (home / "memstore.db").stat().st_mode & 0o077 == 0


def test_recall_leaves_out_a_memory_forgotten_while_it_ran(tmp_path, monkeypatch):
    from memstore.storage.sqlite import db

    home = tmp_path / "race"
    with memstore.open(home, embedder=HashEmbedder()) as s, \
            memstore.open(home, embedder=HashEmbedder()) as other:
        gone = s.capture("the canary deploy runs at noon")
        kept = s.capture("the canary deploy has a rollback")
        fetch = db.memories_by_seq

        def forget_first(conn, seqs):  # another process forgets between the legs and the fetch
            monkeypatch.setattr(db, "memories_by_seq", fetch)
            other.forget(gone.id)
            return fetch(conn, seqs)

        monkeypatch.setattr(db, "memories_by_seq", forget_first)
        assert [h.memory.id for h in s.recall("canary deploy")] == [kept.id]
