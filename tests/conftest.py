"""Every test gets its own store directory; the fake (hash) embedder is the default.

Tests that need the real bundled model use the ``real_embedder`` fixture; the model
is assembled once per session into a shared cache directory.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pg  # now: it reads MEMSTORE_TEST_POSTGRES_URL before each test clears MEMSTORE_*
import pytest

import memstore
from memstore.embedding import HashEmbedder

KEEP_ENV = {"MEMSTORE_HOME", "MEMSTORE_CACHE_DIR", "MEMSTORE_EMBEDDER", "MEMSTORE_CONFIG"}


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, model_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("MEMSTORE_HOME", str(home))
    monkeypatch.setenv("MEMSTORE_CACHE_DIR", str(model_cache))
    monkeypatch.setenv("MEMSTORE_EMBEDDER", "hash")
    monkeypatch.delenv("MEMSTORE_MODEL_DIR", raising=False)
    monkeypatch.setenv("MEMSTORE_CONFIG", str(tmp_path / "config.toml"))
    for name in list(os.environ):
        if name.startswith("MEMSTORE_") and name not in KEEP_ENV:
            monkeypatch.delenv(name)
    # No query workers unless a test asks for one (tests/embedding/test_query_worker.py); subprocesses
    # given an environment of their own must carry this variable too.
    monkeypatch.setenv("MEMSTORE_QUERY_WORKER_IDLE_SECONDS", "0")
    return home


@pytest.fixture(scope="session", autouse=True)
def no_leaked_query_workers(model_cache: Path):
    """Fail the run if a test left a query worker running in the shared cache (and stop it)."""
    yield
    from memstore.embedding import BUNDLED_MODEL_ID
    from memstore.embedding.query_worker import DIR_NAME, stop_worker

    leaked = stop_worker(BUNDLED_MODEL_ID, model_cache / DIR_NAME)
    assert not leaked, "a test started a query worker in the shared model cache"


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL + pgvector for the session (tests/pg.py), started on first use."""
    server = pg.PostgresServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def store(tmp_path: Path):
    with memstore.open(tmp_path / "store", embedder=HashEmbedder()) as s:
        yield s


@pytest.fixture(scope="session")
def real_embedder(model_cache: Path):
    """The bundled all-MiniLM-L6-v2, resolved the way users get it."""
    mp = pytest.MonkeyPatch()
    mp.setenv("MEMSTORE_CACHE_DIR", str(model_cache))
    mp.delenv("MEMSTORE_EMBEDDER", raising=False)
    mp.delenv("MEMSTORE_MODEL_DIR", raising=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", memstore.EmbedderFallbackWarning)
            from memstore.embedding import resolve_embedder

            embedder = resolve_embedder()
    finally:
        mp.undo()
    assert embedder.info.backend == "fastembed"
    return embedder


@pytest.fixture
def postgres_url(postgres_server: pg.PostgresServer) -> Iterator[str]:
    """The URL of an empty database of this test's own (dropped afterwards)."""
    yield from postgres_server.database()
