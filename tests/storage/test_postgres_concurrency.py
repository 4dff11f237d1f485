"""Several processes capturing into one team store, many of them the same texts: every text
stored exactly once, nothing lost (the partial unique index + ON CONFLICT decide)."""

from __future__ import annotations

import multiprocessing

from memstore.identity import content_hash, new_id
from memstore.storage.base import NewMemory
from memstore.storage.postgres import open_backend
from memstore.timeutil import format_ts, now

WRITERS = 6
TEXTS = 30


def _texts(writer: int) -> list[str]:
    shared = [f"shared decision number {i}" for i in range(TEXTS // 2)]
    own = [f"writer {writer} note {i}" for i in range(TEXTS - len(shared))]
    return shared + own


def _write(url: str, writer: int, start, results) -> None:  # noqa: ANN001 - multiprocessing objects
    backend = open_backend(url, author=f"user{writer}")
    start.wait()
    outcomes = []
    for text in _texts(writer):
        stamp = format_ts(now())
        new = NewMemory(id=new_id(), text=text, namespace="default", tags=(), metadata={},
                        content_hash=content_hash(text, "default"), created_at=stamp, updated_at=stamp)
        stored = backend.insert(new)
        outcomes.append(("created" if stored.id == new.id else "existing", text, stored.id))
    backend.close()
    results.put((writer, outcomes))


def test_concurrent_writers_lose_nothing_and_duplicate_nothing(postgres_url):
    open_backend(postgres_url).close()  # schema first: the writers race on rows, not on DDL
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(WRITERS)
    results = ctx.Queue()
    procs = [ctx.Process(target=_write, args=(postgres_url, w, start, results)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    outcomes = dict(results.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0

    import psycopg

    with psycopg.connect(postgres_url) as conn:
        rows = conn.execute("SELECT text, id FROM memories").fetchall()
    stored = {}
    for text, id_ in rows:
        assert text not in stored, f"duplicate: {text}"
        stored[text] = id_
    expected = {t for w in range(WRITERS) for t in _texts(w)}
    assert set(stored) == expected
    for writer_outcomes in outcomes.values():
        for _kind, text, id_ in writer_outcomes:
            assert stored[text] == id_  # every writer was told the id that is stored
    created = sum(kind == "created" for o in outcomes.values() for kind, _, _ in o)
    assert created == len(expected)


def _near(url: str, writer: int, start, results) -> None:  # noqa: ANN001 - multiprocessing objects
    import memstore
    from memstore.embedding.hash import HashEmbedder

    with memstore.open(url, embedder=HashEmbedder()) as store:
        start.wait()
        r = store.capture(f"the nightly build runs at midnight on the main branch{'!' * writer}")
        results.put((writer, r.created, r.near_duplicate_of))


def test_concurrent_near_duplicates_are_stored_once(postgres_url):
    """Nearly the same text from several writers at once: the scope lock lets one in."""
    import memstore
    from memstore.embedding.hash import HashEmbedder

    memstore.open(postgres_url, embedder=HashEmbedder()).close()
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(4)
    results = ctx.Queue()
    procs = [ctx.Process(target=_near, args=(postgres_url, w, start, results)) for w in range(4)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    created = [w for w, was_created, _ in outcomes if was_created]
    assert len(created) == 1, outcomes
    assert all(near is not None for _, was_created, near in outcomes if not was_created)
