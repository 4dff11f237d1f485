"""Every page and JSON endpoint answers on every backend memstore has (the list in
tests/storage/conftest.py, so a new backend is covered here when it is added there)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest
from webtools import make_client

from memstore import MemoryStore
from memstore.embedding import HashEmbedder

_spec = importlib.util.spec_from_file_location(
    "storage_backends", Path(__file__).resolve().parents[1] / "storage" / "conftest.py")
_backends = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(_backends)  # type: ignore[union-attr]


@pytest.mark.parametrize("name", sorted(_backends.BACKENDS))
def test_every_page_answers(name: str, request: pytest.FixtureRequest, tmp_path: Path, guard: Any) -> None:
    backend = _backends.BACKENDS[name](request, tmp_path)
    with MemoryStore(tmp_path / "home", backend=backend, embedder=HashEmbedder()) as store:
        memory = store.capture("A memory on this backend", namespace="n", tags=["t"], metadata={"k": "v"})
        newer = store.update(memory.id, "A memory on this backend, edited")
        gone = store.capture("forgotten on this backend")
        store.forget(gone.id)
        client = make_client(store, guard)
        for path in ("/", "/?q=backend", "/?q=backend&mode=keyword&namespace=n&tag=t", f"/memory/{memory.id}",
                     f"/memory/{newer.id}", "/capture", "/overview", "/purge", "/api/recall?q=backend",
                     "/api/list", f"/api/memory/{newer.id}", f"/api/memory/{memory.id}/history",
                     "/api/stats", "/api/model", "/api/purge"):
            response = client.get(path)
            assert response.status_code == 200, (path, response.text[:300])
        assert client.post("/api/verify", headers={"x-csrf-token": guard.csrf}).json()["ok"] is True
