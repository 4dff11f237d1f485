"""The store directory is created 0700 and every file memstore writes in it is 0600, whatever
the umask; so are the lock files and the model cache directories."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import memstore
from memstore import settings
from memstore.embedding import HashEmbedder


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def loose_umask():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def test_store_files_are_private(tmp_path, loose_umask):
    home = tmp_path / "store"
    with memstore.open(home, embedder=HashEmbedder()) as s:
        s.capture_many([f"memory {i}" for i in range(20)])
        s.recall("memory", mode="semantic")
        s.forget(s.list(limit=1)[0].id)
        s.recall("memory", mode="semantic")
        # WAL and shared-memory files exist while the store is open.
        files = {p.name: p for p in home.rglob("*") if p.is_file()}
        assert {"memstore.db-wal", "memstore.db-shm"} <= set(files)
        open_modes = {name: _mode(p) for name, p in files.items()}
    assert _mode(home) == 0o700
    assert _mode(home / "index") == 0o700
    files = {p.name: p for p in home.rglob("*") if p.is_file()}
    names = set(files)
    assert "memstore.db" in names and "memstore.db.migrate.lock" in names
    assert any(n.endswith((".flat", ".usearch")) for n in names) and any(n.endswith(".json") for n in names)
    assert any(n.endswith(".lock") and n != "memstore.db.migrate.lock" for n in names)
    loose = {name: oct(mode) for name, mode in {**open_modes,
             **{n: _mode(p) for n, p in files.items()}}.items() if mode != 0o600}
    assert loose == {}


def test_cache_directories_are_private(tmp_path, monkeypatch, loose_umask):
    monkeypatch.setenv("MEMSTORE_CACHE_DIR", str(tmp_path / "cache" / "memstore"))
    made = settings.private_dir(settings.cache_dir() / "models" / "m")
    assert made.is_dir()
    for path in (made, made.parent, settings.cache_dir()):
        assert _mode(path) == 0o700, path
    assert _mode(tmp_path / "cache") == 0o755  # not ours: created with the default mode
    existing = tmp_path / "cache" / "memstore" / "models"
    existing.chmod(0o750)
    settings.private_dir(existing / "other")
    assert _mode(existing) == 0o750  # an existing directory keeps its mode


def test_bundled_model_is_assembled_in_private_directories(tmp_path, monkeypatch, loose_umask):
    from memstore.embedding import fastembed as embedder
    from memstore.embedding import resolve

    weights_dir = resolve._package_dir(resolve.WEIGHTS_PACKAGE)
    if weights_dir is None:
        pytest.skip("the weights package is not installed")
    monkeypatch.setenv("MEMSTORE_CACHE_DIR", str(tmp_path / "cache"))
    target = embedder.assemble_bundled_model(weights_dir / "model.onnx")
    for path in (target, target.parent, tmp_path / "cache"):
        assert _mode(path) == 0o700, path
    locks = list(target.parent.glob("*.lock"))
    assert locks and all(_mode(p) == 0o600 for p in locks)


def test_hook_log_and_locks_are_private_and_a_loose_home_is_tightened(tmp_path, loose_umask):
    from memstore.agents import hooks as agent_hooks
    from memstore.git import hooks
    from memstore.settings import load_settings

    home = tmp_path / "loose"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    with memstore.open(home, embedder=HashEmbedder()) as s:
        assert any("0700" in n for n in s.notices)
        s.capture("deferred", embed=False)
        hooks._embed_backlog(s)
    settings = load_settings({"home": str(home)})
    agent_hooks._log(settings, "prompt", "x" * 200_000 + "\x1b[2J")
    log = agent_hooks.log_path(settings)
    assert _mode(home) == 0o700 and _mode(log.parent) == 0o700 and _mode(log) == 0o600
    line = log.read_text().splitlines()[-1]
    assert len(line) < 5000 and "\x1b" not in line
    loose = {p.name: oct(_mode(p)) for p in home.rglob("*") if p.is_file() and _mode(p) != 0o600}
    assert loose == {}


def test_saved_query_graph_and_its_sidecar_are_private(tmp_path, monkeypatch, loose_umask, real_embedder):
    from memstore.embedding.onnx_query import OnnxQueryEncoder

    monkeypatch.setenv("MEMSTORE_CACHE_DIR", str(tmp_path / "cache"))
    encoder = OnnxQueryEncoder(real_embedder.info.path if hasattr(real_embedder.info, "path") else None)
    encoder.encode("a query")
    graph = encoder.saved_graph_path()
    files = [graph, graph.with_suffix(".json")]
    assert all(p.exists() for p in files)
    assert {p.name: oct(_mode(p)) for p in files if _mode(p) != 0o600} == {}


def test_a_cache_open_to_others_is_tightened_and_a_planted_query_cache_dropped(tmp_path, monkeypatch):
    from memstore.storage.sqlite.query_cache import QueryVectorCache

    root = tmp_path / "cache"
    root.mkdir()
    root.chmod(0o777)
    monkeypatch.setenv("MEMSTORE_CACHE_DIR", str(root))
    planted = root / "query-vectors.db"
    cache = QueryVectorCache(planted)
    cache.put("model", "which database", b"\x00" * 16)
    assert cache.get("model", "which database") == b"\x00" * 16
    cache._conn.close()
    assert _mode(root) == 0o755  # writable by others no more
    planted.chmod(0o666)  # as if another user had planted it in the open directory
    fresh = QueryVectorCache(planted)
    assert fresh.get("model", "which database") is None  # the planted entries are not used
    assert _mode(planted) == 0o600 or not planted.exists()


def test_a_cache_or_home_of_another_user_is_refused(tmp_path, monkeypatch):
    from memstore.errors import StoreError

    home = tmp_path / "home-of-someone"
    home.mkdir(mode=0o700)
    real_uid = os.getuid()
    monkeypatch.setattr(os, "getuid", lambda: real_uid + 4242)
    with pytest.raises(StoreError, match="another user"):
        memstore.open(home, embedder=HashEmbedder())
    monkeypatch.setenv("MEMSTORE_CACHE_DIR", str(tmp_path))
    with pytest.raises(StoreError, match="another user"):
        settings.private_dir(tmp_path / "models")
