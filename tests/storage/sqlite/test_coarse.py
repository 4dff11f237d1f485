"""The flat index's int8 candidate stage changes the cost of a search, never its result."""

from __future__ import annotations

import numpy as np
import pytest

from memstore.storage.sqlite import coarse as coarse_module
from memstore.storage.sqlite import vector_index
from memstore.storage.sqlite.coarse import Coarse
from memstore.storage.sqlite.vector_index import _Flat

DIM = 48


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _clustered(rng: np.random.Generator, count: int) -> np.ndarray:
    """Vectors in a few tight clusters (many near-ties), some spiky (one large component:
    the coarsest int8 rounding)."""
    centres = rng.standard_normal((6, DIM))
    rows = centres[rng.integers(0, 6, count)] + 0.05 * rng.standard_normal((count, DIM))
    spiky = rng.random(count) < 0.1
    rows[spiky, 0] += 40.0
    return _unit(rows)


def _exact(flat: _Flat, query: np.ndarray, count: int) -> list[tuple[int, float]]:
    """What the search returned before the coarse stage: every live row, float32."""
    keys = flat.keys[: flat.used]
    sims = vector_index._dot(flat.matrix[: flat.used], query)
    sims[keys < 0] = -np.inf
    return vector_index._top(sims, keys, count)


def _same(got: list[tuple[int, float]], want: list[tuple[int, float]]) -> None:
    """Same similarities rank by rank, and the same keys apart from the order of exact ties
    (and which of the keys tied with the last one the count cut off)."""
    assert [s for _, s in got] == [s for _, s in want]
    last = want[-1][1] if want else None
    assert sorted(k for k, s in got if s != last) == sorted(k for k, s in want if s != last)


@pytest.fixture
def eager(monkeypatch):
    """Coarse stage from the first search, on small matrices."""
    monkeypatch.setattr(vector_index, "COARSE_AFTER", 1)
    monkeypatch.setattr(vector_index, "COARSE_MIN_ROWS", 64)


@pytest.mark.parametrize("seed", range(6))
def test_search_with_the_coarse_stage_equals_exact_search(eager, seed):
    rng = np.random.default_rng(seed)
    flat = _Flat(DIM)
    vectors = _clustered(rng, 3000)
    flat.add(list(range(1, 3001)), vectors)
    queries = np.vstack([_clustered(rng, 20), vectors[rng.integers(0, 3000, 20)]])
    for query in queries:
        for count in (1, 10, 100, 400):
            _same(flat.search(query, count), _exact(flat, query, count))
    assert flat._coarse is not None


def test_coarse_stage_follows_adds_removes_reused_rows_and_growth(eager):
    rng = np.random.default_rng(7)
    flat = _Flat(DIM)
    flat.add(list(range(1, 1001)), _clustered(rng, 1000))
    query = _clustered(rng, 1)[0]
    flat.search(query, 10)
    assert flat._coarse is not None
    flat.remove(range(1, 400, 2))                      # tombstones
    flat.add(list(range(5000, 5300)), _clustered(rng, 300))   # reuse them, then grow
    flat.add([2, 4, 6], _clustered(rng, 3))            # change existing rows in place
    copy = flat.writable()
    for probe in _clustered(rng, 15):
        for count in (5, 50, 300):
            want = _exact(flat, probe, count)
            _same(flat.search(probe, count), want)
            _same(copy.search(probe, count), want)
    # the nearest neighbour of a changed row is that row
    assert flat.search(flat.matrix[flat.rows[4]], 1)[0][0] == 4


def test_approximate_scores_stay_within_their_bound():
    rng = np.random.default_rng(3)
    matrix = np.vstack([_clustered(rng, 500), _unit(rng.standard_normal((500, DIM)) ** 3),
                        np.zeros((1, DIM), dtype=np.float32)])
    stage = Coarse(matrix)
    for query in np.vstack([_clustered(rng, 10), _unit(rng.standard_normal((10, DIM)) ** 5)]):
        approx, bound = stage.scores(query, len(matrix))
        exact = matrix.astype(np.float64) @ query.astype(np.float64)
        assert np.all(np.abs(approx - exact) <= bound)
        assert bound < 0.2


def test_unproved_candidates_fall_back_to_every_row(eager):
    """All rows score the same: no candidate set can be proved, the search reads all."""
    flat = _Flat(DIM)
    row = _unit(np.ones((1, DIM)))[0]
    flat.add(list(range(1, 501)), np.tile(row, (500, 1)))
    stage = flat._coarse_for(10)
    assert stage is not None and flat._proved(stage, row, 10) is None
    found = flat.search(row, 10)
    assert len(found) == 10 and len({s for _, s in found}) == 1


def test_a_one_shot_search_never_builds_the_coarse_stage(monkeypatch):
    monkeypatch.setattr(vector_index, "COARSE_MIN_ROWS", 64)
    rng = np.random.default_rng(1)
    flat = _Flat(DIM)
    flat.add(list(range(1, 1001)), _clustered(rng, 1000))
    query = _clustered(rng, 1)[0]
    flat.search(query, 10)
    assert flat._coarse is None
    flat.search(query, 10)
    assert flat._coarse is not None


def test_without_the_int8_kernels_search_stays_exact(eager, monkeypatch):
    monkeypatch.setattr(coarse_module, "available", lambda: False)
    rng = np.random.default_rng(2)
    flat = _Flat(DIM)
    flat.add(list(range(1, 1001)), _clustered(rng, 1000))
    query = _clustered(rng, 1)[0]
    _same(flat.search(query, 20), _exact(flat, query, 20))
    assert flat._coarse is None
