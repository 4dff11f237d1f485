"""The ``backend`` fixture: one fresh, empty store per test, for each backend memstore has."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from memstore.storage.base import Backend


def _sqlite(tmp_path: Path) -> Backend:
    from memstore.storage.sqlite import SQLiteBackend

    return SQLiteBackend(tmp_path / "store")


BACKENDS = {"sqlite": _sqlite}


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    made = BACKENDS[request.param](tmp_path)
    try:
        yield made
    finally:
        made.close()
