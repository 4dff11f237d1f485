"""kill -9 at every point of a sync (and at random moments): the store stays consistent, the
next sync completes, nothing is lost."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from syncutil import bare, open_home, remote_blobs, snapshot

from memstore.sync import sync_store
from memstore.sync.engine import FAULT_ENV

POINTS = ["start", "fetched", "merged", "applying", "applied", "saved", "committed", "pushed"]


def _sync_cmd(home: Path, remote: str) -> tuple[list[str], dict[str, str]]:
    env = {**os.environ, "MEMSTORE_HOME": str(home)}
    return [sys.executable, "-m", "memstore", "sync", "--remote", remote, "--yes", "--json"], env


def _scenario(tmp_path: Path) -> tuple[str, Path, Path, set[str], str]:
    """Two homes that synced once, then each changed things offline; b synced again."""
    remote = bare(tmp_path / "remote.git")
    a_home, b_home = tmp_path / "a", tmp_path / "b"
    with open_home(a_home) as a, open_home(b_home) as b:
        shared = a.capture("shared decision: tabs over spaces")
        doomed = a.capture("a note that will be purged: hunter2 lives here")
        b.capture("b's first note")
        for s in (a, b, a):
            sync_store(s, str(remote), yes=True)
        a.update(shared.id, text="shared decision: tabs, width 4")
        a.capture("a made this offline")
        a.forget(doomed.id)
        a.purge()
        b.update(shared.id, text="shared decision: spaces after all")
        b.capture("b made this offline")
        sync_store(b, str(remote))
        expected = {m.text for m in a.list()} | {m.text for m in b.list()} - {doomed.text}
    return str(remote), a_home, b_home, expected, "hunter2"


def _check_recovers(remote: str, a_home: Path, b_home: Path, expected: set[str], purged: str,
                    before: list) -> None:  # type: ignore[type-arg]
    with open_home(a_home) as a:
        assert a.verify().ok
        after = snapshot(a)
        # nothing a had is lost by the crash (rows may have moved on to the merged state)
        assert {r[0] for r in before} <= {r[0] for r in after}
        for _ in range(2):
            sync_store(a, remote)
            with open_home(b_home) as b:
                sync_store(b, remote)
        sync_store(a, remote)
        with open_home(b_home) as b:
            assert snapshot(a) == snapshot(b)
            texts = {r[1] for r in snapshot(a)}
            assert expected <= texts  # every memory captured anywhere, and both edits (history)
            assert not any(purged in t for t in texts)
    assert purged.encode() not in remote_blobs(remote)


@pytest.mark.parametrize("point", POINTS)
def test_kill_at_each_point(tmp_path: Path, point: str) -> None:
    remote, a_home, b_home, expected, purged = _scenario(tmp_path)
    with open_home(a_home) as a:
        before = snapshot(a)
    cmd, env = _sync_cmd(a_home, remote)
    proc = subprocess.run(cmd, env={**env, FAULT_ENV: point}, capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    _check_recovers(remote, a_home, b_home, expected, purged, before)


def test_kill_at_random_moments(tmp_path: Path) -> None:
    remote, a_home, b_home, expected, purged = _scenario(tmp_path)
    with open_home(a_home) as a:
        before = snapshot(a)
    cmd, env = _sync_cmd(a_home, remote)
    rng = random.Random(15)
    for _ in range(5):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.05, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        with open_home(a_home) as a:
            assert a.verify().ok
    _check_recovers(remote, a_home, b_home, expected, purged, before)
