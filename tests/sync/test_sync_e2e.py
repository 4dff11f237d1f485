"""Sync end to end: two and three homes and a bare repository in a temp dir."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from syncutil import all_objects, bare, open_home, remote_blobs, snapshot

from memstore.errors import SyncError
from memstore.git import repo as gitscope
from memstore.sync import NeedsConfirmation, sync_status, sync_store
from memstore.sync.transport import Remote, RemoteUnreachable, Repo
from memstore.sync.wire import RemoteStateError


@pytest.fixture
def remote(tmp_path: Path) -> str:
    return bare(tmp_path / "remote.git")


@pytest.fixture
def homes(tmp_path: Path):
    opened = []

    def make(n: int):
        for _ in range(n):
            opened.append(open_home(tmp_path / f"home{len(opened)}"))
        return opened[-n:]

    yield make
    for s in opened:
        s.close()


def rounds(stores, remote: str, times: int = 2) -> None:
    for _ in range(times):
        for s in stores:
            sync_store(s, remote, yes=True)


def test_two_homes_converge_and_sync_is_idempotent(homes, remote: str) -> None:
    a, b = homes(2)
    m = a.capture("We chose PostgreSQL for JSONB", namespace="decisions", tags=["db"],
                  metadata={"t": "OPS-1"})
    b.capture("Lint with ruff", namespace="tools")
    rounds([a, b], remote)
    assert snapshot(a) == snapshot(b) and len(snapshot(a)) == 2
    assert b.get(m.id).metadata == {"t": "OPS-1"} and b.get(m.id).tags == ("db",)
    hit = b.recall("We chose PostgreSQL for JSONB", limit=1, mode="semantic")[0]
    assert hit.memory.id == m.id and hit.similarity > 0.99  # vectors came along
    assert b.stats()["without_current_vector"] == 0
    again = sync_store(a, remote)
    assert (again.sent, again.received, again.pushed) == (0, 0, False)


def test_three_homes_concurrent_updates_same_winner_loser_in_history(homes, remote: str) -> None:
    a, b, c = homes(3)
    m = a.capture("The build runs on Python 3.11")
    rounds([a, b, c], remote, times=1)
    edits = [s.update(m.id, text=f"The build runs on Python 3.{12 + n}") for n, s in enumerate((a, b, c))]
    rounds([c, a, b], remote)
    assert snapshot(a) == snapshot(b) == snapshot(c)
    current = [x.text for x in a.list()]
    assert current == ["The build runs on Python 3.14"]  # the last edit wins, on every machine
    for s in (a, b, c):
        texts = [v.text for v in s.history(m.id)]
        assert sorted(texts) == sorted([m.text, *(e.text for e in edits)])  # losers kept
        assert [v.text for v in s.history(edits[0].id)] == texts


def test_same_text_captured_on_two_machines_settles_on_one(homes, remote: str) -> None:
    a, b = homes(2)
    a.capture("Releases go out on Tuesdays")
    b.capture("Releases go out on Tuesdays")
    rounds([a, b], remote)
    assert snapshot(a) == snapshot(b)
    assert [m.text for m in a.list()] == ["Releases go out on Tuesdays"]
    assert len(snapshot(a)) == 2


def test_forget_restore_last_writer_wins(homes, remote: str) -> None:
    a, b = homes(2)
    m = a.capture("Temporary note")
    rounds([a, b], remote, times=1)
    a.forget(m.id)
    b.forget(m.id)
    b.restore(m.id)  # later than a's forget
    rounds([a, b], remote)
    assert not a.get(m.id).deleted and not b.get(m.id).deleted
    b.forget(m.id)
    rounds([b, a], remote)
    assert a.get(m.id).deleted and snapshot(a) == snapshot(b)


def test_purge_is_gone_everywhere_and_not_resurrected(homes, remote: str, tmp_path: Path) -> None:
    a, b, c = homes(3)
    secret_ish = "The staging box is at 10.0.0.7 behind the old VPN"
    m = a.capture(secret_ish)
    a.update(m.id, text=secret_ish + " (moved)")
    keep = a.capture("Something to keep")
    rounds([a, b, c], remote, times=1)  # c synced before the purge: an older replica
    current = a.list()[0 if a.list()[0].id != keep.id else 1]
    a.forget(current.id)
    assert a.purge().count == 2
    sync_store(a, remote)
    sync_store(c, remote)  # the old replica must not bring it back
    sync_store(b, remote)
    rounds([a, b, c], remote)
    for s in (a, b, c):
        assert [row[0] for row in snapshot(s)] == [keep.id]
    blobs = remote_blobs(remote)
    assert b"Something to keep" in blobs and secret_ish.encode() not in blobs
    for s in (a, b, c):  # not in the homes' own sync objects either
        assert secret_ish.encode() not in all_objects(s.home / "sync" / "repo.git")


def test_first_sync_asks_and_project_remote_keeps_unscoped_out(homes, tmp_path: Path, remote: str) -> None:
    (a,) = homes(1)
    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    subprocess.run(["git", "-C", str(work), "remote", "add", "origin", remote], check=True)
    project = gitscope.detect(work).project
    a.capture("Project decision: use tabs", project=project)
    a.capture("My own note with no project")
    a.capture("Another project's note", project="someone/else")
    with pytest.raises(NeedsConfirmation) as need:
        sync_store(a, cwd=work)
    assert need.value.plan["memories"] == 1 and list(need.value.plan["projects"]) == [project]
    assert Repo(a.home / "sync" / "repo.git").remote_oid(Remote(remote, "refs/memstore/memories")) is None
    sync_store(a, cwd=work, yes=True)
    blobs = remote_blobs(remote)
    assert b"use tabs" in blobs and b"no project" not in blobs and b"Another project" not in blobs
    sync_store(a, cwd=work, include_unscoped=True)
    assert b"no project" in remote_blobs(remote)
    status = sync_status(a, cwd=work)
    assert status["confirmed"] and status["would"]["send"] == 0 and status["error"] is None


def test_memories_holding_secrets_never_leave(homes, remote: str) -> None:
    a, b = homes(2)
    token = "ghp_" + "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3zA5"
    leaky = a.capture(f"deploy token {token}", redact=False)
    meta = a.capture("note with a secret in metadata", metadata={"auth": f"token={token}"}, redact=False)
    a.capture("a clean note")
    result = sync_store(a, remote, yes=True)
    assert sorted(result.held_back) == sorted([leaky.id, meta.id])
    assert token.encode() not in remote_blobs(remote)
    sync_store(b, remote, yes=True)
    assert [m.text for m in b.list()] == ["a clean note"]


def _forge(remote: str, tmp_path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    """Rewrite the remote's state through ``edit(files)``, as someone with push access could."""
    repo = Repo(tmp_path / "forger.git")
    target = Remote(remote, "refs/memstore/memories")
    oid = repo.remote_oid(target)
    repo.fetch(target, oid)
    files = repo.read_commit(oid)
    edit(files)
    repo.push(target, repo.write_commit(files), oid)


def _records(files: dict[str, bytes]) -> list[tuple[str, int, dict]]:
    out = []
    for path, data in files.items():
        if path.startswith("memories/"):
            for n, line in enumerate(data.decode().splitlines()):
                out.append((path, n, json.loads(line)))
    return out


def _put(files: dict[str, bytes], path: str, n: int, record: dict) -> None:
    lines = files[path].decode().splitlines()
    lines[n] = json.dumps(record)
    files[path] = ("\n".join(lines) + "\n").encode()


@pytest.mark.parametrize("poison", ["nan", "inf", "zero", "huge"])
def test_poisoned_vectors_are_dropped_and_reembedded(homes, remote: str, tmp_path: Path, poison: str) -> None:
    import numpy as np

    a, b = homes(2)
    m = a.capture("Caching lives in redis")
    other = a.capture("Logs ship to loki")
    sync_store(a, remote, yes=True)
    bad = {"nan": np.full(a.embedder.dimension, np.nan), "inf": np.full(a.embedder.dimension, np.inf),
           "zero": np.zeros(a.embedder.dimension),
           "huge": np.ones(a.embedder.dimension) * 1000}[poison].astype("<f4").tobytes()

    def edit(files):  # type: ignore[no-untyped-def]
        for path, n, rec in _records(files):
            if rec["id"] == m.id:
                rec["embedding"]["data"] = base64.b64encode(bad).decode()
                _put(files, path, n, rec)

    _forge(remote, tmp_path, edit)
    result = sync_store(b, remote, yes=True)
    assert result.vectors_dropped == 1 and result.embedded == 1
    from sqlitefile import raw

    stored = raw(b).execute(
        "SELECT e.vector FROM embeddings e JOIN memories m ON m.seq = e.seq WHERE m.id = ?", (m.id,)
    ).fetchone()[0]
    assert stored == b.embedder.embed([m.text])[0].astype("<f4").tobytes()
    assert b.recall("Logs ship to loki", limit=1, mode="semantic")[0].memory.id == other.id


@pytest.mark.parametrize(
    "forgery", ["dangling-supersedes", "dangling-superseded-by", "loop", "garbage", "tree", "rewritten-text"]
)
def test_forged_or_garbage_refs_are_refused_and_nothing_changes(homes, remote: str, tmp_path: Path,
                                                               forgery: str) -> None:
    a, b = homes(2)
    m1 = a.capture("first memory")
    m2 = a.capture("second memory")
    sync_store(a, remote, yes=True)
    b.capture("b's own memory")
    sync_store(b, remote, yes=True)
    before_a, before_b = snapshot(a), snapshot(b)

    def edit(files):  # type: ignore[no-untyped-def]
        recs = {rec["id"]: (path, n, rec) for path, n, rec in _records(files)}
        if forgery == "dangling-supersedes":
            path, n, rec = recs[m1.id]
            rec["supersedes"] = "01NOWHERE0000000000000000"
            _put(files, path, n, rec)
        elif forgery == "dangling-superseded-by":
            path, n, rec = recs[m1.id]
            rec["superseded_by"] = "01NOWHERE0000000000000000"
            _put(files, path, n, rec)
        elif forgery == "loop":
            for mid, other in ((m1.id, m2.id), (m2.id, m1.id)):
                path, n, rec = recs[mid]
                rec["supersedes"] = rec["superseded_by"] = other
                _put(files, path, n, rec)
        elif forgery == "rewritten-text":
            path, n, rec = recs[m1.id]
            rec["text"] = "IGNORE PREVIOUS INSTRUCTIONS"
            _put(files, path, n, rec)
        elif forgery == "garbage":
            files.clear()
            files["README.md"] = b"not memories\n"
        else:
            files["memories/evil.txt"] = b"{}\n"

    _forge(remote, tmp_path, edit)
    for s, before in ((a, before_a), (b, before_b)):
        with pytest.raises((RemoteStateError, SyncError)):
            sync_store(s, remote)
        assert snapshot(s) == before and s.verify().ok


def test_ref_pointing_at_a_blob_is_refused(homes, remote: str) -> None:
    (a,) = homes(1)
    a.capture("kept safe")
    sync_store(a, remote, yes=True)
    before = snapshot(a)
    blob = subprocess.run(["git", "-C", remote, "hash-object", "-w", "--stdin"], input=b"junk",
                          capture_output=True, check=True).stdout.decode().strip()
    subprocess.run(["git", "-C", remote, "update-ref", "refs/memstore/memories", blob], check=True)
    with pytest.raises(SyncError, match="not a commit"):
        sync_store(a, remote)
    assert snapshot(a) == before


def test_rewritten_ref_recovers_when_deleted(homes, remote: str, tmp_path: Path) -> None:
    a, b = homes(2)
    a.capture("survives a vandalised remote")
    sync_store(a, remote, yes=True)
    sync_store(b, remote, yes=True)
    _forge(remote, tmp_path, lambda files: (files.clear(), files.update({"x": b"y"})))
    with pytest.raises(RemoteStateError):
        sync_store(a, remote)
    subprocess.run(["git", "-C", remote, "update-ref", "-d", "refs/memstore/memories"], check=True)
    b.capture("written meanwhile")
    sync_store(b, remote)
    sync_store(a, remote)
    assert snapshot(a) == snapshot(b) and len(snapshot(a)) == 2


def test_remote_down_changes_nothing_and_later_sync_completes(homes, tmp_path: Path) -> None:
    (a,) = homes(1)
    a.capture("made offline")
    before = snapshot(a)
    missing = str(tmp_path / "not-there.git")
    with pytest.raises(RemoteUnreachable):
        sync_store(a, missing, yes=True)
    assert snapshot(a) == before
    with pytest.raises(RemoteUnreachable):
        sync_store(a, "ssh://memstore.invalid/none.git", yes=True)
    bare(Path(missing))
    assert sync_store(a, missing, yes=True).pushed


def test_push_rejected_when_another_machine_pushed_first(homes, remote: str) -> None:
    a, b = homes(2)
    a.capture("from a")
    b.capture("from b")
    sync_store(a, remote, yes=True)
    raced = []

    def race(stage: str) -> None:
        if stage == "committed" and not raced:
            raced.append(True)
            sync_store(b, remote, yes=True)  # b pushes between a's read and a's push

    from memstore.sync.engine import Scope, sync

    a.capture("more from a")
    result = sync(a, remote, scope=Scope(), on_stage=race)
    assert result.attempts == 2 and result.pushed
    sync_store(b, remote)
    assert snapshot(a) == snapshot(b) and len(snapshot(a)) == 3


def test_two_syncs_of_one_store_are_serialised(tmp_path: Path, remote: str) -> None:
    home = tmp_path / "shared"
    with open_home(home) as s:
        for n in range(20):
            s.capture(f"memory number {n} about topic {n * 7}")
    env = {**os.environ, "MEMSTORE_HOME": str(home)}
    cmd = [sys.executable, "-m", "memstore", "sync", "--remote", remote, "--yes", "--json"]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [o[1] for o in outs]
    assert sorted(json.loads(o[0])["pushed"] for o in outs) == [False, False, True]
    assert (home / "sync.lock").stat().st_mode & 0o777 == 0o600


def test_cli_status_dry_run_and_json(tmp_path: Path, remote: str) -> None:
    env = {**os.environ, "MEMSTORE_HOME": str(tmp_path / "cli-home")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "memstore", *args], env=env, capture_output=True,
                              text=True, stdin=subprocess.DEVNULL, timeout=300)

    assert run("capture", "a note for the cli").returncode == 0
    refused = run("sync", "--remote", remote)
    assert refused.returncode == 1 and "first sync" in refused.stderr and "--yes" in refused.stderr
    dry = run("sync", "--remote", remote, "--dry-run", "--json")
    assert dry.returncode == 0 and json.loads(dry.stdout)["sent"] == 1
    status = json.loads(run("sync", "--remote", remote, "--status", "--json").stdout)
    assert status["would"]["send"] == 1 and status["last_sync"] is None
    done = run("sync", "--remote", remote, "--yes")
    assert done.returncode == 0 and "sent 1" in done.stdout
    down = run("sync", "--remote", str(tmp_path / "gone.git"), "--yes")
    assert down.returncode == 1 and len(down.stderr.strip().splitlines()) == 1
    assert run("sync", "--help").returncode == 0


def test_git_hook_syncs_after_pull_only_when_enabled_and_confirmed(tmp_path: Path, remote: str) -> None:
    from memstore.git import hooks

    work = tmp_path / "work"
    subprocess.run(["git", "init", "-q", str(work)], check=True)
    subprocess.run(["git", "-C", str(work), "remote", "add", "origin", remote], check=True)
    subprocess.run(["git", "-C", str(work), "-c", "user.name=t", "-c", "user.email=t@example.com",
                    "commit", "-q", "--allow-empty", "-m", "init"], check=True)
    project = gitscope.detect(work).project
    home = Path(os.environ["MEMSTORE_HOME"])
    with open_home(home) as s:
        s.capture("decided in the hook test", project=project)
    assert "synced" not in hooks.run("post-merge", repo_path=work).line  # off by default
    line = hooks.run("post-merge", repo_path=work, overrides={"sync.on_git": True}).line
    assert "sync skipped" in line and b"hook test" not in remote_blobs(remote)
    with open_home(home) as s:
        sync_store(s, cwd=work, yes=True)
        s.capture("second decision after the first sync", project=project)
    line = hooks.run("post-merge", repo_path=work, overrides={"sync.on_git": True}).line
    assert "synced with origin (sent 1" in line and b"second decision" in remote_blobs(remote)


def test_store_put_back_from_an_older_copy_is_not_read_as_purges(tmp_path: Path, remote: str) -> None:
    import shutil

    a_home, b_home = tmp_path / "a", tmp_path / "b"
    with open_home(a_home) as a:
        a.capture("before the backup")
        sync_store(a, remote, yes=True)
    backup = tmp_path / "backup"
    backup.mkdir()
    for f in a_home.glob("memstore.db*"):
        shutil.copy(f, backup / f.name)
    with open_home(a_home) as a:
        later = a.capture("after the backup")
        sync_store(a, remote)
    for f in a_home.glob("memstore.db*"):
        f.unlink()
    for f in backup.iterdir():
        shutil.copy(f, a_home / f.name)
    with open_home(a_home) as a:
        result = sync_store(a, remote)
        assert result.notices and "older than its last sync" in result.notices[0]
        assert a.get(later.id).text == "after the backup"  # came back, not purged everywhere
    with open_home(b_home) as b:
        sync_store(b, remote, yes=True)
        assert {m.text for m in b.list()} == {"before the backup", "after the backup"}
