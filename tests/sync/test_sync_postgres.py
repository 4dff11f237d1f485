"""Sync between a team store on PostgreSQL and a personal SQLite store, through a bare repo."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from syncutil import bare, open_home

import memstore
from memstore.embedding import HashEmbedder
from memstore.sync import sync_store


@pytest.fixture
def pg_store(postgres_server):
    for url in postgres_server.database():
        with memstore.open(url, embedder=HashEmbedder()) as store:
            yield store


def view(store: Any) -> list[tuple[Any, ...]]:
    """Every version as sync sees it (vectors aside): the same on both backends once converged."""
    rows, _ = store.sync_snapshot()
    return sorted(r[:-2] for r in rows)


def rounds(stores, remote: str, times: int = 2) -> None:
    for _ in range(times):
        for s in stores:
            sync_store(s, remote, yes=True)


def test_postgres_and_sqlite_stores_converge(pg_store, tmp_path: Path) -> None:
    remote = bare(tmp_path / "remote.git")
    personal = open_home(tmp_path / "personal")
    try:
        team = pg_store
        m = team.capture("We chose PostgreSQL for JSONB", namespace="decisions", tags=["db"],
                         metadata={"t": "OPS-1"})
        team.update(m.id, text="We chose PostgreSQL 16 for JSONB")
        gone = team.capture("Forgotten on the team store")
        team.forget(gone.id)
        mine = personal.capture("Lint with ruff", namespace="tools")
        team.capture("Same text on both")
        personal.capture("Same text on both")
        rounds([team, personal], remote)
        assert view(team) == view(personal) and len(view(team)) == 6
        assert team.get(mine.id).namespace == "tools" and personal.get(gone.id).deleted
        hit = team.recall("Lint with ruff", limit=1, mode="semantic")[0]
        assert hit.memory.id == mine.id and hit.similarity > 0.99  # the vector came along
        again = sync_store(team, remote)
        assert (again.sent, again.received, again.pushed) == (0, 0, False)
        # a forget on one side and a purge on the other travel both ways
        personal.forget(mine.id)
        assert team.purge().count == 1  # the forgotten memory
        rounds([personal, team], remote)
        assert view(team) == view(personal)
        assert team.get(mine.id).deleted and gone.id not in [r[0] for r in view(personal)]
        assert team.stats()["without_current_vector"] == 0
    finally:
        personal.close()
