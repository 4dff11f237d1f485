"""What is particular to the PostgreSQL backend, against a real server: schema versions,
duplicates decided by the database, the BM25 keyword leg, CJK, filtered vector search, purge.
(The contract every backend keeps is tests/storage/test_contract.py.)"""

from __future__ import annotations

import numpy as np
import psycopg
import pytest

from memstore.errors import SchemaTooNewError
from memstore.identity import content_hash, new_id
from memstore.storage.base import Filter, NewMemory
from memstore.storage.postgres import sql
from memstore.storage.postgres.backend import PostgresBackend
from memstore.timeutil import format_ts, now

MODEL = "test-model:384"


def row(text: str, namespace: str = "default", **extra) -> NewMemory:
    stamp = format_ts(now())
    return NewMemory(id=new_id(), text=text, namespace=namespace, tags=tuple(extra.pop("tags", ())),
                     metadata=extra.pop("metadata", {}), content_hash=content_hash(text, namespace),
                     created_at=stamp, updated_at=stamp, **extra)


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(384).astype(np.float32)
    return v / np.linalg.norm(v)


def vector(seed: int) -> tuple[str, bytes]:
    return MODEL, unit(seed).astype("<f4").tobytes()


@pytest.fixture
def pg(postgres_url):
    b = PostgresBackend(postgres_url, author="alice@example.com")
    yield b
    b.close()


def live() -> Filter:
    return Filter(now=now())


def test_schema_is_created_once_and_reopens(postgres_url):
    first, second = PostgresBackend(postgres_url), PostgresBackend(postgres_url)
    assert first.store_id == second.store_id and first.dimension == 384
    first.close()
    second.close()


def test_newer_schema_is_refused_and_left_alone(postgres_url):
    PostgresBackend(postgres_url).close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("INSERT INTO memstore_schema (version, name) VALUES (99, 'm099_future')")
    with pytest.raises(SchemaTooNewError, match="version 99"):
        PostgresBackend(postgres_url)
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT max(version) FROM memstore_schema").fetchone()[0] == 99


def test_same_text_in_same_scope_is_stored_once_and_author_recorded(pg):
    first = pg.insert(row("We chose PostgreSQL"))
    again = pg.insert(row("We chose PostgreSQL"))  # as a racing writer would: the index decides
    other = pg.insert(row("We chose PostgreSQL", "decisions"))
    assert again.id == first.id and other.id != first.id
    with psycopg.connect(pg.url) as conn:
        stored = conn.execute("SELECT count(*), min(author) FROM memories").fetchone()
    assert stored == (2, "alice@example.com")


def test_a_failed_write_leaves_nothing(pg):
    with pytest.raises(RuntimeError), pg.write():
        pg.insert(row("half a capture"), vector(1))
        raise RuntimeError("crash")
    assert pg.counts()["memories"] == 0 and pg.pending_count() == 0


def _found(pg, query: str, flt: Filter | None = None) -> list[str]:
    keys = [m.key for m in pg.keyword_leg(query).search(flt or live(), 10)]
    memories = pg.memories_for(keys)
    return [memories[k].text for k in keys]


def test_keyword_leg_ranks_stemmed_matches_and_holds_filters(pg):
    pg.insert(row("Deploying the database migrations", tags=("ops",)))
    pg.insert(row("We deploy on Fridays", "decisions"))
    pg.insert(row("Lunch is at noon"))
    assert _found(pg, "deploys database") == ["Deploying the database migrations", "We deploy on Fridays"]
    assert _found(pg, "deploy", Filter(namespaces=("decisions",), now=now())) == ["We deploy on Fridays"]
    assert _found(pg, "ops") == ["Deploying the database migrations"]  # tags are indexed too
    matches = pg.keyword_leg("deploys database").search(live(), 10)
    assert matches[0].strength == 1.0 > matches[1].strength > 0
    assert matches[0].bm25 < matches[1].bm25 < 0  # negated, as SQLite's bm25()


@pytest.mark.parametrize("ranking", ["bm25", "ts_rank_cd", "ts_rank"])
def test_every_measured_ranking_runs(pg, ranking):
    pg.insert(row("zebra crossing"))
    with pg._op() as conn:
        assert len(sql.keyword_search(conn, ["zebra"], live(), 5, ranking=ranking)) == 1


def test_hostile_query_words_are_only_words(pg):
    pg.insert(row("it's a 'quoted' & (odd) | text: !x"))
    assert _found(pg, "it's ' & | !x :* quoted <-> \\") == ["it's a 'quoted' & (odd) | text: !x"]
    assert _found(pg, "'); DROP TABLE memories; --") == []
    assert pg.counts()["memories"] == 1


def test_cjk_text_is_found_by_its_words(pg):
    pg.insert(row("東京の天気は晴れです"))
    pg.insert(row("plain english"))
    assert _found(pg, "天気は晴れ") == ["東京の天気は晴れです"]  # trigram index
    assert _found(pg, "天気") == ["東京の天気は晴れです"]  # a 2-character word: substring scan


def test_vector_leg_holds_a_selective_filter(pg):
    ids = {i: pg.insert(row(f"memory {i}", "rare" if i == 59 else "common"), vector(i)).id for i in range(60)}
    top = pg.vector_search(unit(3), live(), 5, model=MODEL)
    assert pg.memories_for([top[0][0]])[top[0][0]].id == ids[3] and top[0][1] == pytest.approx(1.0, abs=1e-5)
    rare = pg.vector_search(unit(3), Filter(namespaces=("rare",), now=now()), 5, model=MODEL)
    assert [pg.memories_for([k])[k].id for k, _ in rare] == [ids[59]]


def test_vector_leg_through_hnsw_with_a_filter_finds_the_passing_rows(pg, monkeypatch):
    """Above EXACT_FILTER_MAX the filter is applied during pgvector's iterative index scan."""
    monkeypatch.setattr(sql, "EXACT_FILTER_MAX", 0)
    ids = [pg.insert(row(f"note {i}", "rare" if i % 20 == 0 else "common"), vector(i)).id for i in range(200)]
    found = pg.vector_search(unit(7), Filter(namespaces=("rare",), now=now()), 5, model=MODEL)
    got = {pg.memories_for([k])[k].id for k, _ in found}
    assert len(found) == 5 and got <= {ids[i] for i in range(0, 200, 20)}


def test_forgotten_leave_both_legs_and_purge_removes_the_text(pg):
    m = pg.insert(row("the secret launch date"), vector(1))
    pg.set_forgotten(m.id, True, format_ts(now()))
    assert _found(pg, "launch") == [] and pg.vector_search(unit(1), live(), 5, model=MODEL) == []
    assert [(x.id, why) for x, why in pg.purge(now())] == [(m.id, "forgotten")]
    with psycopg.connect(pg.url) as conn:
        assert conn.execute("SELECT count(*) FROM memories WHERE text LIKE '%launch%'").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM embeddings").fetchone()[0] == 0
        vacuumed = conn.execute("SELECT last_vacuum FROM pg_stat_user_tables WHERE relname = 'memories'")
        assert vacuumed.fetchone()[0] is not None  # the deleted row was vacuumed out of the table's pages


def test_term_frequency_read_back_from_ts_rank_is_exact(pg):
    """BM25's tf comes from ts_rank (memstore_tf): exact for every count a tsvector holds."""
    with pg._op() as conn:
        wrong = conn.execute(
            "SELECT n FROM generate_series(1, 300) n WHERE memstore_tf("
            "to_tsvector('memstore_text', repeat('word ', n) || 'end'), 'word'::tsquery) <> least(n, 255)"
        ).fetchall()
    assert wrong == []


def test_bm25_prefers_rare_terms_and_short_documents(pg):
    for i in range(20):
        pg.insert(row(f"common filler {i}"))
    pg.insert(row("common zebra"))
    pg.insert(row("zebra " + " ".join(f"pad{i}" for i in range(40))))
    found = _found(pg, "common zebra")
    assert found[0] == "common zebra" and found[1].startswith("zebra pad0")


def test_verify_finds_and_repairs_a_stale_full_text_entry(pg):
    pg.insert(row("an indexed memory"), vector(2))
    with psycopg.connect(pg.url, autocommit=True) as conn:
        conn.execute("ALTER TABLE memories DISABLE TRIGGER memories_text")
        conn.execute("UPDATE memories SET tsv = ''::tsvector")
        conn.execute("ALTER TABLE memories ENABLE TRIGGER memories_text")
    report = pg.verify(model=MODEL, dimension=384, quick=False, repair=False, embed=None)
    assert not report.ok and [c.name for c in report.checks if not c.ok] == ["fts"]
    fixed = pg.verify(model=MODEL, dimension=384, quick=False, repair=True, embed=None)
    assert fixed.ok and fixed.repaired == ["recomputed the full-text entries of 1 memories"]
    assert _found(pg, "indexed") == ["an indexed memory"]


def test_connection_lost_mid_write_stores_nothing_and_says_so(pg):
    from memstore.errors import StoreError

    with pytest.raises(StoreError, match="lost the connection") as info, pg.write():
        pg.insert(row("first half"))
        pid = pg._local.conn.info.backend_pid
        with psycopg.connect(pg.url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        pg.insert(row("second half"))
    assert "\n" not in str(info.value)
    assert pg.counts()["memories"] == 0  # reconnected; the transaction was rolled back whole
    assert pg.insert(row("after")).text == "after"


def _sync_values(r: NewMemory, **changes) -> dict:
    values = {"id": r.id, "text": r.text, "namespace": r.namespace, "tags": "[]", "source": None,
              "metadata": "{}", "project": None, "branch": None, "created_at": r.created_at,
              "updated_at": r.updated_at, "expires_at": None, "deleted": 0, "deleted_at": None,
              "supersedes": None, "superseded_by": None, "content_hash": r.content_hash, "_vector": None}
    values.update(changes)
    return values


def test_change_mark_moves_with_every_write_and_never_goes_down(pg):
    marks = [pg.sync_rows()[1]]
    m = pg.insert(row("a memory"))
    marks.append(pg.sync_rows()[1])
    pg.set_forgotten(m.id, True, format_ts(now()))
    marks.append(pg.sync_rows()[1])
    pg.set_forgotten(m.id, False, format_ts(now()))
    marks.append(pg.sync_rows()[1])
    newer = row("a memory, edited", supersedes=m.id)
    pg.supersede(m.id, newer, None)
    marks.append(pg.sync_rows()[1])
    pg.set_forgotten(newer.id, True, format_ts(now()))
    pg.purge(now())
    assert pg.get(m.id) is None
    marks.append(pg.sync_rows()[1])
    assert [mk[-1] for mk in marks] == sorted({mk[-1] for mk in marks})  # strictly increasing
    pg.set_forgotten("missing", True, format_ts(now()))  # writes nothing: the mark stays
    assert pg.sync_rows()[1] == marks[-1]


def test_apply_sync_rolls_back_a_write_committed_while_it_ran(pg, postgres_url):
    from memstore.errors import StoreChangedError

    here = row("already here")
    pg.insert(here)
    rows, mark = pg.sync_rows()
    other = PostgresBackend(postgres_url)
    arriving = row("arriving")
    meanwhile = row("written by another process during the apply")

    def progress(done: int, total: int) -> None:  # inside apply_sync's transaction
        other.insert(meanwhile)

    try:
        with pytest.raises(StoreChangedError):
            forgotten = _sync_values(here, deleted=1, deleted_at=format_ts(now()))
            pg.apply_sync([_sync_values(arriving), forgotten], [], expect=mark, progress=progress)
    finally:
        other.close()
    assert pg.get(arriving.id) is None and not pg.get(here.id).deleted  # nothing applied
    assert pg.get(meanwhile.id) is not None
    rows, mark = pg.sync_rows()
    kept, after = pg.apply_sync([_sync_values(arriving)], [], expect=mark)
    assert kept == [] and after[-1] > mark[-1] and pg.sync_rows()[1] == after
