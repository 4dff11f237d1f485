"""kill -9 during capture_many and reindex loses nothing (scripts/crashtest.py, a few kills)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "crashtest.py"


def test_kills_lose_no_confirmed_capture(tmp_path):
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--kills", "4", "--max-delay", "0.8", "--seed", "3",
         "--home", str(tmp_path / "s"), "--json"],
        capture_output=True, text=True, timeout=600,
    )
    figures = json.loads(out.stdout)
    assert out.returncode == 0, (figures, out.stderr[-2000:])
    assert figures["kills"] == 4 and figures["child_errors"] == 0
    assert figures["captures_confirmed"] > 0
    assert figures["confirmed_missing_any_round"] == 0
    assert figures["confirmed_wrong_text_any_round"] == 0
    assert figures["verify_failures"] == 0 and figures["index_not_caught_up"] == 0
