"""capture_many over several batches: results in order, duplicates across batches, a
failing model batch, and the model's notices reaching the call."""

from __future__ import annotations

import pytest

import memstore
from memstore.embedding.hash import HashEmbedder
from memstore.errors import ModelError
from memstore.notices import notify


class RecordingEmbedder(HashEmbedder):
    """Hash vectors; counts batches, fails on a marked text, and says so."""

    def __init__(self) -> None:
        super().__init__()
        self.batches = 0

    def embed(self, texts):
        self.batches += 1
        if any("FAIL" in t for t in texts):
            raise ModelError("the model broke")
        notify(f"embedded {len(texts)}")
        return super().embed(texts)


@pytest.fixture
def batched(tmp_path):
    emb = RecordingEmbedder()
    with memstore.open(tmp_path / "home", embedder=emb) as store:
        yield store, emb


def test_batches_keep_their_order_and_match_one_big_batch(batched, tmp_path):
    store, emb = batched
    texts = [f"memory number {i} about the deploy" for i in range(10)]
    results = store.capture_many(texts, batch_size=3)
    assert [r.text for r in results] == texts and all(r.created for r in results)
    assert emb.batches == 4
    with memstore.open(tmp_path / "plain", embedder=HashEmbedder()) as plain:
        one_at_a_time = plain.capture_many(texts, batch_size=100)
        assert [r.text for r in one_at_a_time] == texts
        assert store.stats()["memories"] == plain.stats()["memories"] == 10
        assert [h.memory.text for h in store.recall("deploy 7", limit=3)] == [
            h.memory.text for h in plain.recall("deploy 7", limit=3)]
    assert store.verify().ok


def test_a_text_repeated_in_a_later_batch_is_the_same_memory(batched):
    store, _ = batched
    results = store.capture_many(["alpha one", "beta two", "gamma three", "alpha one", "delta four"],
                                 batch_size=2)
    assert [r.created for r in results] == [True, True, True, False, True]
    assert results[3].id == results[0].id
    assert store.stats()["memories"] == 4


def test_a_failing_batch_is_stored_without_vectors_and_says_so(batched):
    store, _ = batched
    results = store.capture_many(["fine one", "fine two", "FAIL three", "fine four"], batch_size=2)
    assert all(r.created for r in results)
    assert any("stored without a vector (the model broke)" in n for n in results[2].notices)
    assert not any("without a vector" in n for n in results[0].notices)
    assert store.stats()["pending_embeddings"] == 2  # the failed batch waits for `memstore reindex`


def test_the_models_notices_reach_the_call(batched):
    store, _ = batched
    store.notices.clear()
    store.capture_many([f"text {i}" for i in range(6)], batch_size=2)
    assert [n for n in store.notices if n.startswith("embedded")] == ["embedded 2"] * 3
