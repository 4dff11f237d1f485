"""The usearch index is a cache: deleting or corrupting it never changes results."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import memstore
from memstore.embedder import HashEmbedder
from memstore.vectors import VectorIndex

TEXTS = [f"memory {i} about {topic}" for i, topic in enumerate(
    ["postgres", "deploys", "cats", "ci flakiness", "ruff", "jsonb", "canary", "hooks"] * 5
)]


def _ids(home: Path, query: str, mode: str = "semantic") -> list[str]:
    with memstore.open(home, embedder=HashEmbedder()) as s:
        return [h.memory.id for h in s.recall(query, mode=mode, limit=10)]


def _index_files(home: Path) -> tuple[Path, Path]:
    meta = next((home / "index").glob("*.json"))
    data = json.loads(meta.read_text())
    return meta, home / "index" / data["file"]


@pytest.fixture
def home(tmp_path: Path) -> Path:
    home = tmp_path / "store"
    with memstore.open(home, embedder=HashEmbedder()) as s:
        s.capture_many(TEXTS)
        s.recall("warm up", mode="semantic")
    return home


def test_index_is_saved_with_its_state(home):
    meta, data = _index_files(home)
    state = json.loads(meta.read_text())
    assert state["count"] == len(TEXTS)
    assert state["model_id"] == HashEmbedder.model_id
    assert data.stat().st_size == state["size"]


def test_deleted_index_gives_same_results(home):
    before = _ids(home, "cats and jsonb")
    for path in (home / "index").iterdir():
        path.unlink()
    assert _ids(home, "cats and jsonb") == before
    assert any((home / "index").glob("*.usearch"))


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
        assert [h.memory.id for h in s.recall("canary deploys", mode="semantic")] == before
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


def test_older_save_never_replaces_newer(tmp_path):
    import numpy as np

    directory = tmp_path / "idx"
    newer = VectorIndex(directory, "m", 4)
    newer.rebuild([(1, np.ones(4, dtype="<f4").tobytes())], position=10)
    assert newer.save("store")
    older = VectorIndex(directory, "m", 4)
    older.rebuild([], position=5)
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
