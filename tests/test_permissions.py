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
