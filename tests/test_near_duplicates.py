"""Near-duplicate captures: reported, not stored twice unless allowed.

The hash embedder makes texts with the same words identical vectors (cosine 1), which
is what these tests use; the real model is checked on a few pairs at the end.
"""

from __future__ import annotations

import pytest
from sqlitefile import raw

import memstore
from memstore.identity import numbers, states_other_numbers

ORIGINAL = "Use ruff for linting the Python code"
SAME_WORDS = "use RUFF for linting, the python code!"  # different text, identical hash vector


def test_near_duplicate_returns_the_existing_memory_flagged(store):
    first = store.capture(ORIGINAL, tags=["tooling"])
    second = store.capture(SAME_WORDS)
    assert not second.created
    assert second.id == first.id and second.text == ORIGINAL
    assert second.near_duplicate_of == first.id
    assert second.similarity == pytest.approx(1.0, abs=1e-5)
    assert "near-duplicate" in second.notices[0]
    assert store.stats()["memories"] == 1
    data = second.to_dict()
    assert data["near_duplicate_of"] == first.id and data["created"] is False


def test_exact_duplicate_is_not_flagged_as_near(store):
    first = store.capture(ORIGINAL)
    again = store.capture(ORIGINAL)
    assert not again.created and again.id == first.id and again.near_duplicate_of is None


def test_allow_duplicate_stores_anyway(store):
    first = store.capture(ORIGINAL)
    second = store.capture(SAME_WORDS, allow_duplicate=True)
    assert second.created and second.id != first.id and second.near_duplicate_of is None
    assert store.stats()["memories"] == 2


def test_different_content_is_stored(store):
    store.capture(ORIGINAL)
    other = store.capture("The deploy pipeline runs on Fridays at noon")
    assert other.created and other.near_duplicate_of is None


def test_scope_is_namespace_and_project(store):
    store.capture(ORIGINAL, namespace="a")
    assert store.capture(SAME_WORDS, namespace="b").created
    store.capture(ORIGINAL, namespace="c", project="p1")
    assert store.capture(SAME_WORDS, namespace="c", project="p2").created
    assert store.capture(SAME_WORDS, namespace="c").created
    assert not store.capture(SAME_WORDS, namespace="c", project="p1").created


def test_forgotten_superseded_and_expired_memories_do_not_count(store):
    a = store.capture(ORIGINAL)
    store.forget(a.id)
    b = store.capture(SAME_WORDS)
    assert b.created
    store.update(b.id, "Use black for formatting the Python code")
    c = store.capture("use ruff for linting the python code")
    assert c.created
    raw(store).execute(
        "UPDATE memories SET expires_at = '2000-01-01T00:00:00Z' WHERE id = ?", (c.id,)
    )
    assert store.capture("USE RUFF FOR LINTING THE PYTHON CODE").created


def test_threshold_setting(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMSTORE_NEAR_DUPLICATE_THRESHOLD", "0.3")
    with memstore.open(tmp_path / "s", embedder=memstore.HashEmbedder()) as s:
        s.capture("alpha beta gamma delta")
        loose = s.capture("alpha beta gamma epsilon")  # shares most words: cosine well above 0.3
        assert loose.near_duplicate_of is not None and loose.similarity < 0.99
    monkeypatch.setenv("MEMSTORE_NEAR_DUPLICATE_THRESHOLD", "1")
    with memstore.open(tmp_path / "t", embedder=memstore.HashEmbedder()) as s:
        s.capture("alpha beta gamma delta")
        assert s.capture("alpha beta gamma epsilon").created
    monkeypatch.setenv("MEMSTORE_NEAR_DUPLICATE_THRESHOLD", "1.5")
    with pytest.raises(memstore.InvalidInputError, match="between 0 and 1"):
        memstore.open(tmp_path / "u", embedder=memstore.HashEmbedder())


def test_bulk_capture_folds_only_exact_duplicates(store):
    results = store.capture_many([ORIGINAL, SAME_WORDS, ORIGINAL])
    assert [r.created for r in results] == [True, True, False]


def test_supersede_and_update_skip_the_check(store):
    a = store.capture(ORIGINAL)
    b = store.capture(SAME_WORDS, supersedes=a.id)
    assert b.created and b.supersedes == a.id


def test_large_scope_uses_the_index(store, monkeypatch):
    monkeypatch.setattr("memstore.storage.sqlite.backend.EXACT_FILTER_MAX", 0)
    store.capture_many([{"text": f"filler note {i} about gardening", "namespace": "big"} for i in range(300)])
    first = store.capture(ORIGINAL, namespace="big")
    assert not store.capture(SAME_WORDS, namespace="big").created
    assert store.capture(SAME_WORDS, namespace="other").created
    assert store.capture(SAME_WORDS, namespace="big").id == first.id


def test_numbers_are_read_canonically():
    assert numbers("May 3rd at 10:00, 2,000 req/s, v2.50, 99.9% of 0") == {"3", "10", "2000", "2.5", "99.9"}
    assert states_other_numbers("restarts at 2am", "restarts at 4am")
    assert not states_other_numbers("review at 3pm", "review: 3 pm")
    assert not states_other_numbers("retried three times", "retried 3 times")  # one side has none


def test_memories_stating_other_numbers_are_not_near_duplicates(store):
    first = store.capture("The staging server restarts every night at 2am")
    later = store.capture("The staging server restarts every night at 4am")
    assert later.created and later.near_duplicate_of is None
    same = store.capture("the staging server restarts every night at 4am!")
    assert same.near_duplicate_of == later.id
    assert store.capture("The staging server restarts every night at 2am.").near_duplicate_of == first.id


@pytest.mark.real_model
def test_real_model_paraphrase_vs_related(tmp_path, real_embedder):
    with memstore.open(tmp_path / "s", embedder=real_embedder) as s:
        first = s.capture("We picked PostgreSQL as the main database because we need JSONB.")
        para = s.capture("We chose Postgres for the main database since we need JSONB.")
        assert para.near_duplicate_of == first.id, para.similarity
        other = s.capture("We picked Redis as the cache because we need fast expiring keys.")
        assert other.created
        s.capture("The nightly backup job takes about 40 minutes.")
        assert s.capture("The nightly backup job takes about 4 hours.").created
