"""The team store's in-process BM25 (storage/postgres/keyword_ranking.py) against a real
server: the same ranking and scores as the SQL leg over random corpora, kept up with other
writers through the change log, rebuilt when it cannot catch up, and SQL for roles that
may not read the log."""

from __future__ import annotations

import random
from datetime import timedelta

import psycopg
import pytest

from memstore.identity import content_hash, new_id
from memstore.storage.base import Filter, NewMemory
from memstore.storage.postgres import sql
from memstore.storage.postgres.backend import PostgresBackend
from memstore.storage.postgres.keyword import _few_passing
from memstore.storage.postgres.keyword_ranking import KeywordRanking
from memstore.timeutil import format_ts, now

WORDS = (
    "deploy", "database", "migration", "friday", "lunch", "noon", "zebra", "crossing", "rollback", "cache",
    "index", "query", "vector", "team", "store", "sync", "merge", "branch", "commit", "review",
)


def row(text: str, namespace: str = "default", **extra) -> NewMemory:
    stamp = format_ts(now())
    return NewMemory(id=new_id(), text=text, namespace=namespace, tags=(), metadata={},
                     content_hash=content_hash(text, namespace), created_at=stamp, updated_at=stamp,
                     **extra)


def sentence(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 12))) + f" n{rng.randint(0, 10**9)}"


def ranked(ranking: KeywordRanking, conn, words, flt: Filter, limit: int):
    return ranking.search(conn, words, limit, flt,
                          passing=lambda seqs: sql.seqs_passing(conn, flt, seqs),
                          narrowed=lambda: _few_passing(conn, flt))


def assert_rows(got, expected) -> None:
    assert [s for s, _ in got] == [s for s, _ in expected]
    assert [x for _, x in got] == pytest.approx([x for _, x in expected], rel=1e-9)


def assert_same(conn, ranking: KeywordRanking, rng: random.Random, flt: Filter, queries: int = 25) -> int:
    """Ranking and SQL agree on order and scores for random queries; returns the matches seen."""
    seen = 0
    for _ in range(queries):
        words = rng.sample(WORDS, rng.randint(1, 4))
        expected = sql.keyword_search(conn, words, flt, 40, stats=sql.CorpusStats())
        got = ranked(ranking, conn, words, flt, 40)
        assert_rows(got, expected)
        seen += len(got)
    return seen


@pytest.fixture
def pg(postgres_url):
    b = PostgresBackend(postgres_url, author="alice@example.com")
    yield b
    b.close()


@pytest.mark.parametrize("seed", [1, 2])
def test_ranking_equals_the_sql_bm25_through_other_writers_changes(pg, postgres_url, seed):
    rng = random.Random(seed)
    rows = [pg.insert(row(sentence(rng), rng.choice(["default", "default", "rare"]))) for _ in range(120)]
    ranking = KeywordRanking()
    with pg._op() as conn:
        ranking.build(conn)
        assert assert_same(conn, ranking, rng, Filter(now=now())) > 0
    other = PostgresBackend(postgres_url, author="bob@example.com")  # another process's writes
    try:
        for _ in range(40):
            other.insert(row(sentence(rng)))
        for m in rng.sample(rows, 15):
            other.set_forgotten(m.id, True, format_ts(now()))
        for m in rng.sample([r for r in rows if not r.deleted], 10):
            try:
                other.supersede(m.id, row(sentence(rng)), None)
            except Exception:  # already forgotten above: nothing to supersede
                continue
        other.purge(now() + timedelta(days=400))
        soon = now() + timedelta(hours=1)
        other.insert(row("zebra crossing expiring", expires_at=format_ts(soon)))
    finally:
        other.close()
    with pg._op() as conn:
        before = ranking.rebuilds
        for flt in (Filter(now=now()), Filter(now=soon + timedelta(seconds=1)),
                    Filter(now=now(), namespaces=("rare",)), Filter(now=now(), include_expired=True)):
            assert assert_same(conn, ranking, rng, flt) > 0
        assert ranking.rebuilds == before  # caught up from the log, not rebuilt
        assert ranking.size == conn.execute(
            "SELECT count(*) FROM memories WHERE NOT deleted AND superseded_by IS NULL").fetchone()[0]


def test_a_broad_filter_asks_the_server_about_ranked_candidates_in_rounds(pg, monkeypatch):
    rng = random.Random(3)
    for i in range(150):
        pg.insert(row(sentence(rng), "rare" if i % 3 == 0 else "default"))
    monkeypatch.setattr(sql, "EXACT_FILTER_MAX", 5)  # the namespace passes more: no listing
    asked: list[int] = []
    ranking = KeywordRanking()
    flt = Filter(now=now(), namespaces=("rare",))
    with pg._op() as conn:
        ranking.build(conn)

        def passing(seqs):
            asked.append(len(seqs))
            return sql.seqs_passing(conn, flt, seqs)

        for words in (["deploy"], ["zebra", "cache"], WORDS[:6]):
            got = ranking.search(conn, words, 30, flt, passing=passing,
                                 narrowed=lambda: _few_passing(conn, flt))
            expected = sql.keyword_search(conn, words, flt, 30, stats=sql.CorpusStats())
            assert_rows(got, expected)
    assert asked and max(asked) > min(asked)  # more candidates each round


def test_the_backend_ranks_in_process_from_its_second_search_and_sees_new_captures(pg, postgres_url):
    pg.insert(row("the deploy runbook"))
    assert [m.key for m in pg.keyword_leg("deploy").search(Filter(now=now()), 10)]
    assert pg._ranking is None or not pg._ranking.ready  # the first search used SQL
    pg.keyword_leg("deploy").search(Filter(now=now()), 10)
    assert pg._ranking.ready
    other = PostgresBackend(postgres_url)
    other.insert(row("a zebra deploy from another machine"))
    other.close()
    found = pg.keyword_leg("zebra").search(Filter(now=now()), 10)
    texts = [pg.memories_for([m.key])[m.key].text for m in found]
    assert texts == ["a zebra deploy from another machine"] and pg._ranking.rebuilds == 1


def test_ranking_rebuilds_when_the_log_moved_past_it_or_the_database_went_back(pg):
    pg.insert(row("zebra one"))
    ranking = KeywordRanking()
    with pg._op() as conn:
        ranking.build(conn)
        mark = ranking.mark
        pg.insert(row("zebra two"))
        conn.execute("UPDATE memstore_changes SET log_floor = n")  # as if older entries were dropped
        assert len(ranked(ranking, conn, ["zebra"], Filter(now=now()), 10)) == 2
        assert ranking.rebuilds == 2 and ranking.mark == mark + 1
        ranking.mark = mark + 50  # newer than the database: a restored older copy
        assert len(ranked(ranking, conn, ["zebra"], Filter(now=now()), 10)) == 2
        assert ranking.rebuilds == 3 and ranking.mark == mark + 1


def test_every_write_transaction_logs_its_memories_under_one_number(pg):
    a = pg.insert(row("first"))
    with pg.write():
        b = pg.insert(row("second"))
        c = pg.insert(row("third"))
    pg.set_forgotten(a.id, True, format_ts(now()))
    with psycopg.connect(pg.url) as conn:
        log = conn.execute("SELECT n, seq FROM memstore_change_log ORDER BY n, seq").fetchall()
        n, floor = conn.execute("SELECT n, log_floor FROM memstore_changes").fetchone()
        seq_of = dict(conn.execute("SELECT id, seq FROM memories").fetchall())
    seqs = [seq_of[m.id] for m in (a, b, c)]
    assert [s for _, s in log] == [seqs[0], seqs[1], seqs[2], seqs[0]]
    assert log[1][0] == log[2][0] == log[0][0] + 1 and log[3][0] == n and floor == 0


def test_a_role_granted_before_the_change_log_keeps_ranking_in_sql(postgres_url):
    PostgresBackend(postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE ROLE early_ranker LOGIN")
        conn.execute("GRANT USAGE ON SCHEMA public TO early_ranker")
        conn.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO early_ranker")
        conn.execute("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO early_ranker")
        conn.execute("REVOKE ALL ON memstore_change_log FROM early_ranker")
    url = postgres_url.replace("://postgres", "://early_ranker", 1)
    try:
        user = PostgresBackend(url)
        user.insert(row("a zebra crossing"))  # the commit trigger still logs (security definer)
        for _ in range(3):
            assert len(user.keyword_leg("zebra").search(Filter(now=now()), 10)) == 1
        assert user._ranking.disabled
        user.close()
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute("DROP OWNED BY early_ranker")
            conn.execute("DROP ROLE early_ranker")


def test_verify_names_a_disabled_change_trigger(pg):
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute("ALTER TABLE memories DISABLE TRIGGER memories_changed")
    report = pg.verify(model="test-model:384", dimension=384, quick=True, repair=False, embed=None)
    schema = next(c for c in report.checks if c.name == "schema")
    assert not schema.ok and schema.problems == (
        "trigger memories_changed is disabled (ALTER TABLE memories ENABLE TRIGGER memories_changed)",)
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute("ALTER TABLE memories ENABLE TRIGGER memories_changed")
    assert next(c for c in pg.verify(model="test-model:384", dimension=384, quick=True, repair=False,
                                     embed=None).checks if c.name == "schema").ok
