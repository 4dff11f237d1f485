"""An HNSW index with a source holds int8 vectors and rescores its candidates exactly.

The graph only proposes candidates; every similarity returned is the stored float32
vector's own dot product with the query, read from the source (SQLite in a store).
"""

from __future__ import annotations

import numpy as np
import pytest

import memstore
from memstore.embedding import HashEmbedder
from memstore.storage.sqlite import vector_index
from memstore.storage.sqlite.vector_index import VectorIndex

DIM = 48


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    m = rng.standard_normal((n, DIM)).astype(np.float32)
    return m / np.linalg.norm(m, axis=1, keepdims=True)


class Stored:
    """A stand-in for SQLite's embeddings table: seq -> float32 bytes; counts the reads."""

    def __init__(self, matrix: np.ndarray, first: int = 1) -> None:
        self.rows = {first + i: v.astype("<f4").tobytes() for i, v in enumerate(matrix)}
        self.asked: list[int] = []

    def __call__(self, seqs):
        self.asked += list(seqs)
        return [(s, self.rows[s]) for s in seqs if s in self.rows]

    def matrix(self, seqs) -> np.ndarray:
        return np.stack([np.frombuffer(self.rows[s], dtype="<f4") for s in seqs])


def _built(tmp_path, matrix: np.ndarray, source) -> VectorIndex:
    index = VectorIndex(tmp_path, "m", DIM, source=source)
    index.rebuild(((1 + i, v.astype("<f4").tobytes()) for i, v in enumerate(matrix)), 0, "hnsw")
    return index


def _exact(stored: Stored, query: np.ndarray, seqs, count: int) -> list[int]:
    seqs = list(seqs)
    sims = stored.matrix(seqs) @ query
    return [seqs[i] for i in np.argsort(-sims, kind="stable")[:count]]


def test_with_a_source_the_graph_is_int8_and_scores_are_the_stored_vectors(tmp_path):
    rng = np.random.default_rng(3)
    matrix = _unit(rng, 3000)
    stored = Stored(matrix)
    index = _built(tmp_path, matrix, stored)
    assert index._base.index.dtype.name == "I8"
    hits = 0
    for query in _unit(rng, 30):
        found = index.search(query, 10)
        assert len(found) == 10
        sims = [sim for _, sim in found]
        assert sims == sorted(sims, reverse=True)
        for seq, sim in found:  # the float32 dot product itself, not the int8 estimate
            assert sim == pytest.approx(float(stored.matrix([seq])[0] @ query), abs=1e-6)
        hits += len({s for s, _ in found} & set(_exact(stored, query, stored.rows, 10)))
    assert hits / 300 >= 0.9
    assert index.out_of_range == 0


def test_without_a_source_the_graph_stays_float32(tmp_path):
    matrix = _unit(np.random.default_rng(4), 200)
    index = _built(tmp_path, matrix, None)
    assert index._base.index.dtype.name == "F32"
    query = matrix[7]
    assert index.search(query, 1)[0][0] == 8


def test_exact_and_among_are_exact_over_the_stored_vectors(tmp_path):
    rng = np.random.default_rng(5)
    matrix = _unit(rng, 500)
    stored = Stored(matrix)
    index = _built(tmp_path, matrix, stored)
    query = _unit(rng, 1)[0]
    assert [s for s, _ in index.search(query, 20, exact=True)] == _exact(stored, query, stored.rows, 20)
    subset = [int(s) for s in rng.choice(np.arange(1, 501), 60, replace=False)] + [9999]
    got = [s for s, _ in index.search(query, 5, among=subset)]
    assert got == _exact(stored, query, subset[:-1], 5)


def test_a_seq_the_source_no_longer_has_is_dropped(tmp_path):
    rng = np.random.default_rng(6)
    matrix = _unit(rng, 400)
    stored = Stored(matrix)
    index = _built(tmp_path, matrix, stored)
    query = matrix[41]  # seq 42 is its own nearest neighbour
    assert index.search(query, 3)[0][0] == 42
    del stored.rows[42]  # forgotten by another process since the index last synced
    found = index.search(query, 3)
    assert 42 not in {s for s, _ in found} and len(found) == 3


def test_candidates_asked_for_are_a_bounded_multiple(tmp_path):
    rng = np.random.default_rng(7)
    matrix = _unit(rng, 2000)
    stored = Stored(matrix)
    index = _built(tmp_path, matrix, stored)
    stored.asked.clear()
    index.search(_unit(rng, 1)[0], 100)
    assert len(stored.asked) == 100 * vector_index.RESCORE_FACTOR


def test_rough_scores_far_from_the_stored_ones_count_as_damage(tmp_path):
    """An int8 vector that disagrees with the stored one beyond the quantisation bound
    (bytes damaged in a file too big to digest whole) is counted, so the store rebuilds."""
    rng = np.random.default_rng(8)
    matrix = _unit(rng, 300)
    stored = Stored(-matrix)  # every stored vector the opposite of what the graph holds
    index = _built(tmp_path, matrix, stored)
    index.search(matrix[0], 10)
    assert index.out_of_range > 0


def test_held_vectors_are_within_the_int8_tolerance(tmp_path):
    rng = np.random.default_rng(9)
    matrix = _unit(rng, 100)
    index = _built(tmp_path, matrix, Stored(matrix))
    held = index.vectors(list(range(1, 101)))
    assert index.tolerance == pytest.approx(1 / 127)
    assert np.abs(held - matrix).max() < index.tolerance
    assert np.abs(held - matrix).max() > 1e-4  # int8, not float32


def test_an_int8_index_saved_and_loaded_answers_the_same(tmp_path):
    rng = np.random.default_rng(10)
    matrix = _unit(rng, 800)
    stored = Stored(matrix)
    index = _built(tmp_path, matrix, stored)
    assert index.save("store", force=True)
    queries = _unit(rng, 5)
    before = [index.search(q, 10) for q in queries]
    again = VectorIndex(tmp_path, "m", DIM, source=stored)
    assert again.load("store", 0, 0) is None and again._base.index.dtype.name == "I8"
    assert [again.search(q, 10) for q in queries] == before


def test_store_on_an_int8_graph_recalls_exact_similarities_and_verifies(tmp_path, monkeypatch):
    from memstore.storage.sqlite import vector_cache

    monkeypatch.setattr(vector_cache, "EXACT_INDEX_MAX", 50)
    monkeypatch.setattr(vector_cache, "FLAT_AGAIN_BELOW", 25)
    emb = HashEmbedder()
    texts = [f"note {i} about topic {i % 9} and item {i * 7}" for i in range(200)]
    with memstore.open(tmp_path / "s", embedder=emb) as s:
        s.capture_many(texts)
        s.reindex()
        hits = s.recall("topic 3 item", mode="semantic", limit=10)
        assert s.backend._cache.index._base.index.dtype.name == "I8"
        query = emb.embed_query("topic 3 item")
        for h in hits:
            vector = emb.embed([h.memory.text])[0]
            assert h.similarity == pytest.approx(float(vector @ query), abs=1e-5)
        report = s.verify()
        assert report.ok, report
        s.forget(hits[0].memory.id)
        assert hits[0].memory.id not in {h.memory.id for h in s.recall("topic 3 item", mode="semantic")}
    with memstore.open(tmp_path / "s", embedder=emb) as s:  # the saved file, loaded and caught up
        assert s.verify().ok


def test_changes_beside_a_loaded_int8_index_are_searched_exactly(tmp_path):
    """A memory-mapped int8 index with an overlay (hidden seqs, their new vectors) answers
    as an exact search over what the source holds now."""
    rng = np.random.default_rng(11)
    matrix = _unit(rng, 600)
    stored = Stored(matrix)
    _built(tmp_path, matrix, stored).save("store", force=True)
    index = VectorIndex(tmp_path, "m", DIM, source=stored)
    assert index.load("store", 0, 0) is None
    changed = {seq: _unit(rng, 1)[0] for seq in range(1, 30)}
    for seq, vector in changed.items():
        stored.rows[seq] = vector.astype("<f4").tobytes()
    gone = list(range(30, 40))
    for seq in gone:
        del stored.rows[seq]
    new = {1000 + i: v for i, v in enumerate(_unit(rng, 5))}
    stored.rows.update({seq: v.astype("<f4").tobytes() for seq, v in new.items()})
    current = {seq: v.astype("<f4").tobytes() for seq, v in {**changed, **new}.items()}
    index.apply([*changed, *gone, *new], current, 1)
    assert index._hidden and index._base.readonly  # still the mapped file, with an overlay
    for seq, query in [*list(changed.items())[:3], *new.items()]:  # found by its new vector
        assert index.search(query, 1)[0] == (seq, pytest.approx(1.0, abs=1e-5))
    for query in _unit(rng, 5):
        want = _exact(stored, query, stored.rows, 10)
        assert [s for s, _ in index.search(query, 10, exact=True)] == want
        got = [s for s, _ in index.search(query, 10)]  # approximate: a neighbour may be missed
        assert len(set(got) & set(want)) >= 8 and not set(got) & set(gone)


def test_a_float32_file_from_before_is_searched_as_it_was(tmp_path):
    """An HNSW file saved by an earlier version (float32) loads beside a source and is
    searched without rescoring; the next rebuild makes it int8."""
    rng = np.random.default_rng(12)
    matrix = _unit(rng, 500)
    stored = Stored(matrix)
    _built(tmp_path, matrix, None).save("store", force=True)
    index = VectorIndex(tmp_path, "m", DIM, source=stored)
    assert index.load("store", 0, 0) is None and index._base.index.dtype.name == "F32"
    stored.asked.clear()
    assert index.search(matrix[3], 5)[0][0] == 4 and stored.asked == []
    index.rebuild(((1 + i, v.astype("<f4").tobytes()) for i, v in enumerate(matrix)), 0, "hnsw")
    assert index._base.index.dtype.name == "I8"
