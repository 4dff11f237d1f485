"""The vector index is a cache: deleting or corrupting it never changes results.

Every store-level test runs against both kinds of index: a flat matrix (small stores)
and a usearch HNSW graph (forced by setting EXACT_INDEX_MAX to 0).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import memstore
from memstore.embedding import HashEmbedder
from memstore.storage.sqlite.vector_index import VectorIndex

TEXTS = [f"memory {i} about {topic}" for i, topic in enumerate(
    ["postgres", "deploys", "cats", "ci flakiness", "ruff", "jsonb", "canary", "hooks"] * 5
)]


def _ranked(hits) -> list[tuple[str, float]]:
    return [(h.memory.id, h.similarity) for h in hits]


def _ids(home: Path, query: str, mode: str = "semantic") -> list[tuple[str, float]]:
    with memstore.open(home, embedder=HashEmbedder()) as s:
        return _ranked(s.recall(query, mode=mode, limit=10))


def _same_ranking(got: list[tuple[str, float]], want: list[tuple[str, float]]) -> bool:
    """Same similarities rank by rank, and the same memories in each group of equal
    similarity (hash embeddings tie a lot; the last digits of a tie may differ between an
    index and its rebuilt copy, so a tie may come out in another order). The last group may
    be cut by the limit: there only the similarity must match."""
    if len(got) != len(want):
        return False
    if any(abs(g[1] - w[1]) > 1e-5 for g, w in zip(got, want, strict=True)):
        return False
    groups: list[tuple[set[str], set[str]]] = []
    last = None
    for (gid, gsim), (wid, _) in zip(got, want, strict=True):
        if last is not None and abs(gsim - last) <= 1e-5:
            groups[-1][0].add(gid)
            groups[-1][1].add(wid)
        else:
            groups.append(({gid}, {wid}))
        last = gsim
    checked = groups if len(got) < 10 else groups[:-1]  # a full page: the last group may be cut
    return all(g == w for g, w in checked)


def _index_files(home: Path) -> tuple[Path, Path]:
    meta = next((home / "index").glob("*.json"))
    data = json.loads(meta.read_text())
    return meta, home / "index" / data["file"]


@pytest.fixture(params=["flat", "hnsw"])
def kind(request, monkeypatch) -> str:
    if request.param == "hnsw":
        monkeypatch.setattr("memstore.storage.sqlite.vector_cache.EXACT_INDEX_MAX", 0)
        monkeypatch.setattr("memstore.storage.sqlite.vector_cache.FLAT_AGAIN_BELOW", 0)
    return request.param


@pytest.fixture
def home(tmp_path: Path, kind: str) -> Path:
    home = tmp_path / "store"
    with memstore.open(home, embedder=HashEmbedder()) as s:
        s.capture_many(TEXTS)
        s.recall("warm up", mode="semantic")
    return home


def test_index_is_saved_with_its_state(home, kind):
    meta, data = _index_files(home)
    state = json.loads(meta.read_text())
    assert state["kind"] == kind
    assert data.suffix == (".flat" if kind == "flat" else ".usearch")
    assert state["count"] == len(TEXTS)
    assert state["model_id"] == HashEmbedder.model_id
    assert data.stat().st_size == state["size"]


def test_deleted_index_gives_same_results(home, kind):
    before = _ids(home, "cats and jsonb")
    for path in (home / "index").iterdir():
        path.unlink()
    assert _same_ranking(_ids(home, "cats and jsonb"), before)
    assert any((home / "index").glob("*.flat" if kind == "flat" else "*.usearch"))


@pytest.mark.parametrize("damage", ["truncate", "zero", "garbage", "bad-json"])
def test_corrupt_index_is_rebuilt_with_a_notice(home, damage):
    before = _ids(home, "canary deploys")
    meta, data = _index_files(home)
    raw = data.read_bytes()
    if damage == "truncate":
        data.write_bytes(raw[: len(raw) // 2])
    elif damage == "zero":
        data.write_bytes(b"\0" * len(raw))
    elif damage == "garbage":
        data.write_bytes(bytes((i * 7919) % 251 for i in range(len(raw))))
    else:
        meta.write_text("{not json")
    with memstore.open(home, embedder=HashEmbedder()) as s:
        assert _same_ranking(_ranked(s.recall("canary deploys", mode="semantic", limit=10)), before)
        if damage != "bad-json":
            assert any("rebuilt" in n for n in s.notices)


def test_stale_index_catches_up_from_the_log(home):
    meta_before = json.loads(_index_files(home)[0].read_text())
    # Another process captures without ever loading the index.
    with memstore.open(home, embedder=HashEmbedder()) as s:
        new = s.capture("a brand new memory about zebras")
        gone = s.list(limit=1, offset=3)[0]
        s.forget(gone.id)
    assert json.loads(_index_files(home)[0].read_text())["position"] == meta_before["position"]
    with memstore.open(home, embedder=HashEmbedder()) as s:
        ids = [h.memory.id for h in s.recall("zebras", mode="semantic", limit=50)]
        assert ids[0] == new.id
        assert gone.id not in ids


def test_two_stores_in_one_process_see_each_others_writes(home):
    with (
        memstore.open(home, embedder=HashEmbedder()) as a,
        memstore.open(home, embedder=HashEmbedder()) as b,
    ):
        a.recall("x", mode="semantic")
        b.recall("x", mode="semantic")
        m = a.capture("written by a: unicorn stables")
        assert b.recall("unicorn stables", mode="semantic")[0].memory.id == m.id


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_older_save_never_replaces_newer(tmp_path, kind):
    directory = tmp_path / "idx"
    newer = VectorIndex(directory, "m", 4)
    newer.rebuild([(1, np.ones(4, dtype="<f4").tobytes())], position=10, kind=kind)
    assert newer.save("store")
    older = VectorIndex(directory, "m", 4)
    older.rebuild([], position=5, kind=kind)
    assert not older.save("store")
    assert newer.read_state().position == 10


def test_index_of_another_store_is_not_trusted(home, tmp_path):
    other = tmp_path / "other"
    with memstore.open(other, embedder=HashEmbedder()) as s:
        s.capture("other store memory")
        s.recall("x", mode="semantic")
    for path in (other / "index").iterdir():
        path.unlink()
    for path in (home / "index").iterdir():
        (other / "index" / path.name).write_bytes(path.read_bytes())
    with memstore.open(other, embedder=HashEmbedder()) as s:
        hits = s.recall("memory", mode="semantic", limit=50)
        assert [h.memory.text for h in hits] == ["other store memory"]
        assert any("another database" in n for n in s.notices)


def _unit(rng: np.random.Generator, n: int, dim: int = 8) -> np.ndarray:
    m = rng.standard_normal((n, dim)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def _brute(matrix: dict[int, np.ndarray], q: np.ndarray, count: int) -> list[int]:
    sims = sorted(((float(v @ q), k) for k, v in matrix.items()), key=lambda t: (-t[0], t[1]))
    return [k for _, k in sims[:count]]


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_overlay_on_a_mapped_index_matches_a_rebuilt_one(tmp_path, kind):
    rng = np.random.default_rng(7)
    vectors = dict(enumerate(_unit(rng, 300), start=1))
    index = VectorIndex(tmp_path, "m", 8)
    index.rebuild([(k, v.tobytes()) for k, v in vectors.items()], position=1, kind=kind)
    assert index.save("s")
    mapped = VectorIndex(tmp_path, "m", 8)
    assert mapped.load("s", 0, 1) is None and mapped.kind == kind
    # forget 1..20, re-embed 21..30, add 301..310: all kept beside the mapped file
    changed = {k: _unit(rng, 1)[0] for k in range(21, 31)}
    changed.update({k: _unit(rng, 1)[0] for k in range(301, 311)})
    mapped.apply(list(range(1, 31)) + list(range(301, 311)),
                 {k: v.tobytes() for k, v in changed.items()}, position=2)
    assert mapped._base.readonly and mapped._hidden
    for k in range(1, 21):
        del vectors[k]
    vectors.update(changed)
    assert len(mapped) == len(vectors) == 290
    for q in _unit(rng, 5):
        assert [k for k, _ in mapped.search(q, 10, exact=True)] == _brute(vectors, q, 10)
        among = list(range(1, 60))
        subset = {k: v for k, v in vectors.items() if k in among}
        assert [k for k, _ in mapped.search(q, 5, among=among)] == _brute(subset, q, 5)
    assert mapped.save("s")  # folds the overlay in
    again = VectorIndex(tmp_path, "m", 8)
    assert again.load("s", 0, 2) is None and len(again) == 290
    q = _unit(rng, 1)[0]
    assert [k for k, _ in again.search(q, 10, exact=True)] == _brute(vectors, q, 10)


def test_flat_index_reuses_rows_and_skips_tombstones(tmp_path):
    rng = np.random.default_rng(3)
    vectors = dict(enumerate(_unit(rng, 50), start=1))
    index = VectorIndex(tmp_path, "m", 8)
    index.rebuild([(k, v.tobytes()) for k, v in vectors.items()], position=1, kind="flat")
    index.apply(list(range(1, 11)), {}, position=2)
    for k in range(1, 11):
        del vectors[k]
    fresh = {k: _unit(rng, 1)[0] for k in range(100, 105)}
    index.apply(list(fresh), {k: v.tobytes() for k, v in fresh.items()}, position=3)
    vectors.update(fresh)
    assert len(index) == 45
    for q in _unit(rng, 5):
        got = index.search(q, 100)
        assert [k for k, _ in got] == _brute(vectors, q, 100)
        assert all(abs(sim - float(vectors[k] @ q)) < 1e-5 for k, sim in got)


def test_damaged_flat_file_of_the_right_size_is_refused(tmp_path):
    rng = np.random.default_rng(5)
    index = VectorIndex(tmp_path, "m", 8)
    index.rebuild([(k, v.tobytes()) for k, v in enumerate(_unit(rng, 20), 1)], position=1, kind="flat")
    index.save("s")
    state = index.read_state()
    path = tmp_path / state.file
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    problem = VectorIndex(tmp_path, "m", 8).load("s", 0, 1)
    assert problem and "does not match" in problem


def test_index_turns_hnsw_past_the_threshold_and_flat_again_well_below(tmp_path, monkeypatch):
    monkeypatch.setattr("memstore.storage.sqlite.vector_cache.EXACT_INDEX_MAX", 30)
    monkeypatch.setattr("memstore.storage.sqlite.vector_cache.FLAT_AGAIN_BELOW", 15)
    home = tmp_path / "s"
    with memstore.open(home, embedder=HashEmbedder()) as s:
        s.capture_many(TEXTS[:25])
        s.recall("cats", mode="semantic")
        assert s.backend._cache.index.kind == "flat"
        s.capture_many(TEXTS[25:])
        assert s.backend._cache.index.kind == "hnsw" and len(s.backend._cache.index) == 40
        target = s.recall(TEXTS[33], mode="semantic")[0].memory
        assert target.text == TEXTS[33]
        for m in s.list(limit=20):
            if m.id != target.id:
                s.forget(m.id)
        assert s.backend._cache.index.kind == "hnsw" and len(s.backend._cache.index) == 21  # hysteresis
        for m in s.list(limit=10, offset=1):
            if m.id != target.id:
                s.forget(m.id)
        assert s.backend._cache.index.kind == "flat"
        assert s.recall(TEXTS[33], mode="semantic")[0].memory.id == target.id
    assert json.loads(_index_files(home)[0].read_text())["kind"] == "flat"


def test_vector_log_is_trimmed_behind_saved_indexes_and_old_indexes_rebuild(tmp_path, monkeypatch):
    monkeypatch.setattr("memstore.storage.sqlite.vector_cache.LOG_KEEP", 20)
    home = tmp_path / "store"
    with memstore.open(home, embedder=HashEmbedder()) as old:
        old.capture_many(TEXTS)
        old.recall("warm up", mode="semantic")  # this process holds an index at this position
        with memstore.open(home, embedder=HashEmbedder()) as s:
            for i in range(60):
                s.capture(f"note {i} about llamas")
                s.recall(f"llamas {i}", mode="semantic")
            rows, floor = s.backend._conn.execute("SELECT count(*), min(op) - 1 FROM vector_log").fetchone()
            position = s.backend._cache.index.position
        assert rows < 60 and position - floor >= 20  # trimmed, the last LOG_KEEP ops kept
        # The older in-memory index is behind the trimmed log: rebuilt, and sees everything.
        assert old.backend._cache.index.position < floor
        hits = old.recall("note 59 about llamas", mode="semantic", limit=3)
        assert hits[0].memory.text == "note 59 about llamas"
        assert old.backend._cache.index.position == position
    with memstore.open(home, embedder=HashEmbedder()) as s:
        assert s.verify().ok
