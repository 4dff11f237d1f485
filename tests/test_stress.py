"""Concurrent writers and readers on one store (scripts/stress.py at a small size)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "stress.py"


def test_concurrent_writers_lose_nothing(tmp_path):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--writers", "3", "--captures", "30", "--readers", "1",
         "--forget-every", "10", "--recall-every", "5", "--home", str(tmp_path / "s"), "--json"],
        capture_output=True, text=True, timeout=600,
    )
    figures = json.loads(out.stdout)
    assert out.returncode == 0, json.dumps(figures) + out.stderr[-2000:]
    assert figures["expected"] == figures["found"] == 90 - figures["forgotten_expected"]
    assert figures["forgotten_expected"] == figures["forgotten_found"] > 0
    assert figures["errors"] == 0 and figures["error_samples"] == []
    assert figures["fts_rows"] == figures["memory_rows"]
    assert figures["live_vectors"] == figures["found"]
    assert all(value == "ok" for value in figures["verify"].values())
    assert figures["reader_ops"] > 0
