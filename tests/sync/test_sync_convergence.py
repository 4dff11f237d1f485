"""The convergence property, end to end at a small size (scripts/sync_convergence.py runs it
large): three replicas doing random captures, updates, forgets, restores, purges and expiries
offline, syncing in random order, end identical with nothing lost unless purged."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from sync_convergence import run  # noqa: E402


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_replicas_converge(tmp_path: Path, seed: int) -> None:
    result = run(seed, replicas=3, steps=45, workdir=tmp_path)
    assert result["sync"] > 0 and result["capture"] > 0
