"""The derived keyword index ranks exactly as FTS5 does, and keeps the cache's promises:
caught up from SQLite, saved atomically, rebuilt with a notice when missing, damaged or
foreign, and equal to a fresh build after any mix of captures, forgets and purges."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlitefile import raw

import memstore
from memstore.embedding import HashEmbedder
from memstore.storage.sqlite import SQLiteBackend
from memstore.storage.sqlite.keyword import fts_match
from memstore.storage.sqlite.keyword_index import FTS_TABLE, KeywordIndex, _Tokenizer
from memstore.storage.terms import keyword_terms
from memstore.store import MemoryStore

# Words chosen to exercise the tokenizer: stems (run/running/runs), case, diacritics folded
# (café/cafe, naïve), connector punctuation that splits a term into a phrase (foo_bar),
# digits, stopwords, CJK runs (one token for the word index), and a very common word.
WORDS = ["run", "running", "runs", "ran", "Runner", "café", "cafe", "CAFÉ", "naïve", "naive", "über",
         "uber", "foo_bar", "db", "deploy", "postgres", "jsonb", "JSONB", "x", "y", "42", "4.2", "the",
         "of", "is", "数据库", "東京", "서울", "common", "common", "common", "a", "I"]
TAGS = ("db", "ops", "x", "café")

texts = st.lists(st.sampled_from(WORDS), min_size=1, max_size=25).map(" ".join)
memories = st.lists(
    st.tuples(texts, st.lists(st.sampled_from(TAGS), max_size=2, unique=True)), min_size=1, max_size=40
)
queries = st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join),
                   min_size=1, max_size=8)


def fts_ranking(conn, terms, limit):
    """What memstore's keyword leg asks FTS5 for (db.keyword_search's ranked read)."""
    return [
        (row[0], float(row[1]))
        for row in conn.execute(
            f"SELECT rowid, bm25({FTS_TABLE}) AS rank FROM {FTS_TABLE} WHERE {FTS_TABLE} MATCH ? "
            "ORDER BY rank, rowid LIMIT ?",
            (fts_match(terms), limit),
        )
    ]


def fill(store, items):
    store.capture_many(
        [{"text": f"{text} n{i}", "tags": tags} for i, (text, tags) in enumerate(items)], embed=False
    )


def assert_same_ranking(index, conn, query_texts, limit):
    tok = _Tokenizer()
    for query in query_texts:
        terms = keyword_terms(query)
        mine = index.search(terms, limit)
        if mine is None:  # FTS5 answers: only for a term FTS5 splits into a phrase
            assert any(len(tok.phrase(t)) > 1 for t in terms)
            continue
        assert mine == fts_ranking(conn, terms, limit), query


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=memories, query_texts=queries, forget=st.sets(st.integers(0, 39)),
       limit=st.sampled_from([1, 3, 10, 400]))
def test_ranking_equals_fts5_bm25_and_tie_order(items, query_texts, forget, limit):
    with tempfile.TemporaryDirectory() as tmp, memstore.open(Path(tmp), embedder=HashEmbedder()) as store:
        fill(store, items)
        for i, memory in enumerate(store.list(limit=1000)):  # forgotten rows stay in FTS5
            if i in forget:
                store.forget(memory.id)
        index = KeywordIndex(Path(tmp) / "index")
        assert index.sync(raw(store), store.backend.store_id) is None
        assert_same_ranking(index, raw(store), query_texts, limit)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(first=memories, later=memories, query_texts=queries)
def test_caught_up_index_equals_a_fresh_build(first, later, query_texts):
    with tempfile.TemporaryDirectory() as tmp, memstore.open(Path(tmp), embedder=HashEmbedder()) as store:
        conn, sid = raw(store), store.backend.store_id
        fill(store, first)
        saved = KeywordIndex(Path(tmp) / "index")
        assert saved.sync(conn, sid) is None
        assert saved.saved_position >= 0
        # then: more captures, some forgotten and purged (rows leave FTS5)
        store.capture_many([{"text": f"{t} later{i}", "tags": g} for i, (t, g) in enumerate(later)],
                           embed=False)
        for memory in store.list(limit=1000)[::3]:
            store.forget(memory.id)
        store.purge()
        index = KeywordIndex(Path(tmp) / "index")  # a fresh process: loads the file, catches up
        assert index.sync(conn, sid) is None
        assert index.differences(conn) == []
        assert_same_ranking(index, conn, query_texts, 50)
        saved.sync(conn, sid)  # the long-lived one catches up too
        assert_same_ranking(saved, conn, query_texts, 50)


@pytest.fixture
def filled(store):
    fill(store, [("We chose PostgreSQL for JSONB support", ["db"]), ("Deploys run on Fridays", []),
                 ("The runner deploy failed on café wifi", ["ops"])] * 3)
    index = KeywordIndex(store.index_dir)
    assert index.sync(raw(store), store.backend.store_id) is None
    return store, index


def test_saved_index_is_loaded_memory_mapped_not_rebuilt(filled):
    store, _ = filled
    again = KeywordIndex(store.index_dir)
    assert again.sync(raw(store), store.backend.store_id) is None
    assert again.loaded and again._mmap is not None
    assert again.search(["deploy"], 10) == fts_ranking(raw(store), ["deploy"], 10)


def damage_file(index_dir: Path) -> None:
    meta = json.loads((index_dir / "keywords.json").read_text())
    path = index_dir / meta["file"]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("damage", "notice"),
    [
        (damage_file, "damaged"),
        (lambda d: (d / "keywords.json").write_text("{not json"), "unreadable"),
        (lambda d: [p.write_bytes(p.read_bytes()[:-8]) for p in d.glob("keywords-*.bin")], "truncated"),
    ],
)
def test_damaged_index_is_rebuilt_with_a_notice(filled, damage, notice):
    store, _ = filled
    damage(store.index_dir)
    index = KeywordIndex(store.index_dir)
    message = index.sync(raw(store), store.backend.store_id)
    assert message is not None and notice in message and "rebuilt" in message
    assert index.differences(raw(store)) == []
    again = KeywordIndex(store.index_dir)  # saved again
    assert again.sync(raw(store), store.backend.store_id) is None


def test_index_of_another_store_is_not_used(filled, tmp_path):
    store, _ = filled
    with memstore.open(tmp_path / "other", embedder=HashEmbedder()) as other:
        other.capture("something else entirely")
        other.index_dir.mkdir(exist_ok=True)
        for path in store.index_dir.glob("keywords*"):
            (other.index_dir / path.name).write_bytes(path.read_bytes())
        index = KeywordIndex(other.index_dir)
        message = index.sync(raw(other), other.backend.store_id)
        assert message is not None and "another database" in message
        assert index.search(["something"], 5) == fts_ranking(raw(other), ["something"], 5)


def test_missing_index_is_built_silently_and_deleting_it_loses_nothing(filled):
    store, index = filled
    index.delete_files()
    assert not list(store.index_dir.glob("keywords*.bin"))
    again = KeywordIndex(store.index_dir)
    assert again.sync(raw(store), store.backend.store_id) is None
    assert again.search(["run"], 10) == fts_ranking(raw(store), ["run"], 10)


def test_a_phrase_term_is_left_to_fts5(filled):
    _, index = filled
    assert index.search(["foo_bar"], 5) is None  # FTS5 reads it as the phrase "foo bar"
    assert index.search(["_"], 5) == []  # no token at all: matches nothing, as in FTS5


def test_save_never_replaces_a_newer_index(filled):
    store, index = filled
    store.capture("a newer memory about deploys")
    newer = KeywordIndex(store.index_dir)
    newer.sync(raw(store), store.backend.store_id)
    newer.save(store.backend.store_id, force=True)
    written = json.loads((store.index_dir / "keywords.json").read_text())
    assert not index.save(store.backend.store_id)  # older (not caught up): leaves the newer file
    assert json.loads((store.index_dir / "keywords.json").read_text()) == written


# -- through the store: the keyword leg gives today's results with the derived index -------------

STORE_TEXTS = ["We chose PostgreSQL for JSONB support", "Deploys run on Fridays after the standup",
               "The runner deploy failed on café wifi", "数据库迁移已经完成", "東京の天気は晴れでした",
               "迁移到新的服务器", "Postgres vacuum runs nightly", "naïve retry loop in the deploy job"]


def open_pair(tmp_path: Path):
    """The same memories in two stores: one ranking with the derived index, one with FTS5."""
    stores = []
    for name, minimum in (("derived", 0), ("fts5", 1 << 62)):
        home = tmp_path / name
        stores.append(MemoryStore(home, embedder=HashEmbedder(),
                                  backend=SQLiteBackend(home, keyword_index_min=minimum)))
    for store in stores:
        store.capture_many([
            {"text": f"{text} #{i}", "namespace": ("ops", "decisions")[i % 2],
             "tags": [("db", "x")[i % 3 == 0]]}
            for i, text in enumerate(STORE_TEXTS * 4)
        ])
        for memory in store.list(limit=100)[::5]:
            store.forget(memory.id)
    return stores


def summary(hits):
    return [(h.memory.text, h.score, h.keyword_rank, h.vector_rank, h.bm25) for h in hits]


@pytest.mark.parametrize("query", ["deploy", "postgres runs", "数据库迁移", "迁移", "東京 deploy", "café",
                                   "foo_bar deploy", "the"])
@pytest.mark.parametrize("filters", [{}, {"namespace": "ops"}, {"tags": ["db"]}, {"namespace": "decisions",
                                                                                 "tags": ["x"]}])
def test_store_recall_is_unchanged_by_the_derived_index(tmp_path, query, filters):
    derived, fts5 = open_pair(tmp_path)
    try:
        for mode in ("keyword", "hybrid"):
            assert summary(derived.recall(query, mode=mode, limit=20, **filters)) == summary(
                fts5.recall(query, mode=mode, limit=20, **filters))
        assert derived.backend._keywords is not None and derived.backend._keywords.loaded
        assert fts5.backend._keywords is None
    finally:
        derived.close()
        fts5.close()


def test_verify_checks_and_repairs_the_keyword_index(tmp_path):
    derived, fts5 = open_pair(tmp_path)
    fts5.close()
    try:
        derived.recall("deploy")
        home = derived.index_dir
        report = derived.verify()
        assert report.ok and any(c.name == "keywords" and "matches" in c.summary for c in report.checks)
        damage_file(home)
        report = derived.verify()
        keywords = next(c for c in report.checks if c.name == "keywords")
        assert not keywords.ok
        repaired = derived.verify(repair=True)
        assert repaired.ok and any("keyword index" in line for line in repaired.repaired)
    finally:
        derived.close()


def test_reindex_rebuilds_the_keyword_index(tmp_path):
    derived, fts5 = open_pair(tmp_path)
    fts5.close()
    try:
        derived.recall("deploy")
        before = json.loads((derived.index_dir / "keywords.json").read_text())["file"]
        derived.reindex()
        after = json.loads((derived.index_dir / "keywords.json").read_text())["file"]
        assert before != after
    finally:
        derived.close()


def test_live_state_filter_equals_the_sql_filter_at_any_time(tmp_path):
    home = tmp_path / "s"
    backend = SQLiteBackend(home, keyword_index_min=0)
    with MemoryStore(home, embedder=HashEmbedder(), backend=backend) as store:
        for i, text in enumerate(STORE_TEXTS * 3):
            store.capture(f"{text} #{i}", ttl=f"{i % 4}d" if i % 4 else None)
        for memory in store.list(limit=100)[::4]:
            store.forget(memory.id)
        old = store.list(limit=1)[0]
        store.update(old.id, text=old.text + " (updated)")  # the old version is superseded
        conn, sid = raw(store), store.backend.store_id
        index = KeywordIndex(store.index_dir)
        index.sync(conn, sid)
        index.live_state(conn)
        assert index.filters_live
        stamps = ["2000-01-01T00:00:00.000000Z", *(f"{2026 + y}-06-01T00:00:00.000000Z" for y in range(3)),
                  "9999-01-01T00:00:00.000000Z"]
        for stamp in stamps:
            for query in ("deploy", "postgres runs", "café", "the", "数据库"):
                terms = keyword_terms(query)
                expected = [
                    (row[0], float(row[1])) for row in conn.execute(
                        f"SELECT f.rowid, bm25({FTS_TABLE}) AS rank FROM {FTS_TABLE} f JOIN memories m "
                        f"ON m.seq = f.rowid WHERE {FTS_TABLE} MATCH ? AND m.deleted = 0 AND "
                        "m.superseded_by IS NULL AND (m.expires_at IS NULL OR m.expires_at > ?) "
                        "ORDER BY rank, f.rowid LIMIT 50", (fts_match(terms), stamp))
                ]
                assert index.search(terms, 50, live_at=stamp) == expected, (stamp, query)


def test_a_long_lived_store_filters_with_the_live_state_and_keeps_it_current(tmp_path):
    derived, fts5 = open_pair(tmp_path)
    try:
        queries = ["deploy", "postgres runs", "café wifi", "数据库迁移", "the runner"]
        for _round in range(3):
            for store in (derived, fts5):
                for memory in store.list(limit=100)[1:4]:  # forgotten between recalls
                    store.forget(memory.id)
                store.capture(f"deploy notes round {_round}")
            for query in queries:
                for mode in ("keyword", "hybrid"):
                    assert summary(derived.recall(query, mode=mode, limit=20)) == summary(
                        fts5.recall(query, mode=mode, limit=20))
        assert derived.backend._keywords.filters_live  # the last rounds filtered in numpy
    finally:
        derived.close()
        fts5.close()
