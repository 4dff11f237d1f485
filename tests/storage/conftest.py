"""Fixtures for the storage backends: a real PostgreSQL for the whole session (tests/pg.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pg import PostgresServer


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of an empty database of this test's own (dropped afterwards)."""
    yield from postgres_server.database()
