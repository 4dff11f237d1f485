"""The keyword leg through the store: CJK text (trigram index + substring fallback), the
trigram index kept by triggers and upgraded on open, and evidence filled in for fusion."""

from __future__ import annotations

import sqlite3

import pytest

import memstore
from memstore.embedding import HashEmbedder
from memstore.recall import KEYWORD_WEIGHT, VECTOR_WEIGHT

CJK = {
    "zh": "我们决定使用数据库迁移工具来升级生产环境",
    "ja": "東京の天気は晴れでした、タワーに登った",
    "ko": "서울에서 김치를 먹었다",
    "cat": "猫がソファで寝ている",
}
ENGLISH = ["We chose PostgreSQL for JSONB support", "The deploy runbook lives in the wiki"]


@pytest.fixture
def cjk_store(store):
    ids = {key: store.capture(text).id for key, text in CJK.items()}
    for text in ENGLISH:
        store.capture(text)
    return store, ids


def keyword_ids(store, query, **kw):
    return [h.memory.id for h in store.recall(query, mode="keyword", **kw)]


@pytest.mark.parametrize(
    ("query", "key"),
    [
        ("数据库迁移", "zh"),  # a run of 5: trigrams
        ("数据库", "zh"),  # exactly one trigram
        ("迁移", "zh"),  # 2 characters: no trigram, found as a substring
        ("東京 天気", "ja"),  # two 2-character words
        ("東京の天気", "ja"),  # trigrams of the query are in the text
        ("天気はどう", "ja"),  # no trigram in common; the bigram 天気 is
        ("タワー", "ja"),
        ("김치", "ko"),  # Korean has spaces, but particles stick to words: 김치를
        ("猫", "cat"),  # one character
    ],
)
def test_cjk_words_are_found_by_keyword(cjk_store, query, key):
    store, ids = cjk_store
    found = keyword_ids(store, query)
    assert found and found[0] == ids[key]
    assert set(found) <= set(ids.values())  # no English memory matches a CJK-only query


def test_trigram_matches_carry_bm25_and_outrank_substring_matches(store):
    strong = store.capture("数据库迁移已经完成")
    weak = store.capture("迁移到新的服务器")  # shares only the bigram 迁移
    hits = store.recall("数据库迁移", mode="keyword")
    assert [h.memory.id for h in hits] == [strong.id, weak.id]
    assert hits[0].bm25 is not None and hits[0].bm25 < 0
    assert hits[1].bm25 is None  # found by substring, not by an index
    assert hits[0].score > hits[1].score > 0


def test_mixed_query_finds_english_and_cjk_memories(store):
    english = store.capture("Python packaging notes for the team")
    chinese = store.capture("Python 教程很好")
    found = keyword_ids(store, "Python 教程")
    assert found[0] == chinese.id and english.id in found


def test_cjk_hybrid_and_filters(cjk_store):
    store, ids = cjk_store
    other = store.capture("数据库备份策略", namespace="ops")
    assert [h.memory.id for h in store.recall("数据库", namespace="ops")] == [other.id]
    hits = store.recall("数据库迁移")
    assert hits[0].memory.id == ids["zh"] and hits[0].keyword_rank == 1


def test_english_recall_ignores_the_trigram_index(cjk_store):
    store, _ = cjk_store
    hits = store.recall("PostgreSQL", mode="keyword")
    assert [h.memory.text for h in hits] == [ENGLISH[0]]


def _trigram_rows(store) -> set[int]:
    with sqlite3.connect(store.db_path) as conn:
        rows = conn.execute("SELECT rowid FROM memories_cjk WHERE memories_cjk MATCH ?", ['"数据库"'])
        return {row[0] for row in rows}


def _indexed_count(store) -> int:
    with sqlite3.connect(store.db_path) as conn:
        # the FTS5 docsize table has one row per indexed memory
        return conn.execute("SELECT count(*) FROM memories_cjk_docsize").fetchone()[0]


def test_only_cjk_memories_are_trigram_indexed_and_purge_removes_them(cjk_store):
    store, ids = cjk_store
    assert _indexed_count(store) == len(CJK)
    store.forget(ids["zh"])
    assert keyword_ids(store, "数据库") == []
    store.purge()
    assert _indexed_count(store) == len(CJK) - 1
    assert _trigram_rows(store) == set()
    with sqlite3.connect(store.db_path) as conn:
        conn.execute("INSERT INTO memories_cjk (memories_cjk, rank) VALUES ('integrity-check', 1)")


def test_update_moves_the_trigram_entry(store):
    first = store.capture("会议记录在共享盘")
    newer = store.update(first.id, text="会议纪要在知识库")
    assert keyword_ids(store, "知识库") == [newer.id]
    assert keyword_ids(store, "共享盘") == []
    with sqlite3.connect(store.db_path) as conn:
        conn.execute("INSERT INTO memories_cjk (memories_cjk, rank) VALUES ('integrity-check', 1)")


def test_existing_store_gets_the_trigram_index_on_open(tmp_path):
    path = tmp_path / "old"
    with memstore.open(path, embedder=HashEmbedder()) as store:
        memory = store.capture("数据库迁移工具")
        store.capture("plain English text")
    # Make it look like a store written before the trigram index existed.
    with sqlite3.connect(path / "memstore.db") as conn:
        for name in ("memories_ai_cjk", "memories_ad_cjk", "memories_au_cjk"):
            conn.execute(f"DROP TRIGGER {name}")
        conn.execute("DROP TABLE memories_cjk")
        conn.execute("DROP VIEW memories_cjk_text")
        conn.execute("DELETE FROM _sqlite_migrations WHERE name = 'm003_cjk_trigram_index'")
    with memstore.open(path, embedder=HashEmbedder()) as store:
        hits = store.recall("数据库迁移", mode="keyword")
        assert [h.memory.id for h in hits] == [memory.id] and hits[0].bm25 is not None
        assert _indexed_count(store) == 1


def test_hybrid_fills_in_both_legs_evidence(store, monkeypatch):
    monkeypatch.setattr("memstore.recall.LEG_DEPTH", 1)  # each leg lists one candidate only
    store.capture_many([
        "alpha beta gamma release notes", "alpha release checklist", "beta gamma delta summary",
        "gamma ray burst observed", "alpha particles and gamma rays", "release the kraken",
        "weekly summary of gamma work", "notes about alpha testing",
    ])
    hits = store.recall("alpha gamma", limit=4)  # depth 4: each leg lists 4 of the 7 matches
    assert len(hits) == 4
    listed_by_one_leg = [h for h in hits if (h.keyword_rank is None) != (h.vector_rank is None)]
    assert listed_by_one_leg, "the test needs a candidate only one leg listed"
    for hit in hits:
        assert hit.similarity is not None  # every memory has a vector: its cosine is known
        assert hit.bm25 is not None  # every memory here shares a word with the query
    best = min(h.bm25 for h in hits)
    for hit in hits:
        expected = KEYWORD_WEIGHT * hit.bm25 / best + VECTOR_WEIGHT * hit.similarity
        assert hit.score == pytest.approx(expected)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_single_leg_modes_score_that_leg_only(store):
    store.capture("alpha release checklist")
    kw = store.recall("alpha", mode="keyword")[0]
    assert kw.score == pytest.approx(KEYWORD_WEIGHT) and kw.similarity is None
    sem = store.recall("alpha", mode="semantic")[0]
    assert sem.score == pytest.approx(VECTOR_WEIGHT * sem.similarity) and sem.bm25 is None


@pytest.mark.parametrize("namespace", ["wide", "mid", "narrow", None])
def test_keyword_search_ranks_and_filters_like_the_joined_query(store, namespace):
    """The index ranks alone and only its best are filtered, refetching deeper (and at last
    falling back to the joined query) when the filter drops too many: same answer as the
    joined query for a filter passing most, some, or almost none of the matches."""
    from memstore.storage.base import Filter
    from memstore.storage.sqlite import db
    from memstore.timeutil import now

    rows = [{"text": f"release notes {i} for the deploy {'pipeline' * (i % 3)}",
             "namespace": "wide" if i % 40 else ("mid" if i % 80 else "narrow")}
            for i in range(1, 1201)]
    store.capture_many(rows)
    store.forget(store.recall("release notes 40", mode="keyword", namespace="mid")[0].memory.id)
    flt = Filter(namespaces=(namespace,) if namespace else (), now=now())
    where, params = db.where(flt, "m")
    for limit in (5, 200):
        joined = store.backend._conn.execute(
            "SELECT m.seq, bm25(memories_fts) AS rank FROM memories_fts "
            "JOIN memories m ON m.seq = memories_fts.rowid "
            f"WHERE memories_fts MATCH ? AND {where} ORDER BY rank, m.seq LIMIT ?",
            ["release OR deploy", *params, limit],
        ).fetchall()
        assert db.keyword_search(store.backend._conn, "release OR deploy", flt, limit) == [
            (seq, float(rank)) for seq, rank in joined
        ]
        assert len(joined) == min(limit, {"wide": 1170, "mid": 14, "narrow": 15, None: 1199}[namespace])
