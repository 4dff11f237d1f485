"""The git hooks end to end: real repositories, real `git commit`, the hook scripts as installed.

Commits run with MEMSTORE_HOOK_SYNC=1 so the hook's memstore process finishes before git
returns (deterministic); one test exercises the detached path by polling its log.
The hook processes inherit this test's MEMSTORE_HOME and the hash embedder (conftest).
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from gitrepo import GitRepo, isolate_git

import memstore
from memstore.errors import GitError
from memstore.git import hooks


@pytest.fixture(autouse=True)
def _isolated_git(tmp_path, monkeypatch):
    isolate_git(tmp_path, monkeypatch)


@pytest.fixture
def repo(tmp_path) -> GitRepo:
    r = GitRepo(tmp_path / "repo", remote="git@github.com:acme/widgets.git")
    hooks.install(r.path)
    return r


def commits_in_store(*, deleted: bool = False) -> dict[str, memstore.Memory]:
    with memstore.open() as store:
        found = store.list(limit=1000, source="git", deleted=deleted)
    return {m.metadata["commit"]: m for m in found}


def log_text(r: GitRepo) -> str:
    path = r.path / ".git" / hooks.LOG_NAME
    return path.read_text() if path.exists() else ""


def test_commit_is_recorded_with_its_scope(repo):
    sha = repo.commit("Use WAL mode\n\nReaders no longer block the writer.",
                      {"memstore/db.py": "x", "README.md": "y"})
    memory = commits_in_store()[sha]
    assert memory.text.startswith("Use WAL mode\n\nReaders no longer block the writer.")
    assert f"commit {sha[:12]}" in memory.text and "memstore/db.py" in memory.text
    assert memory.project == "github.com/acme/widgets" and memory.branch == "main"
    assert memory.namespace == "commits" and memory.tags == ("commit",) and memory.source == "git"
    meta = memory.metadata
    assert set(meta["paths"]) == {"memstore/db.py", "README.md"} and meta["paths_total"] == 2
    assert meta["author"] == "Test Person" and meta["captured_by"] == "post-commit"
    assert meta["author_date"] and meta["parents"] == []
    with memstore.open() as store:
        assert store.stats()["pending_embeddings"] == 0  # the hook process embedded it
        hits = store.recall("readers blocking the writer", project="github.com/acme/widgets")
    assert hits[0].memory.id == memory.id and hits[0].vector_rank is not None
    assert f"stored {sha[:12]}" in log_text(repo)


def test_install_is_idempotent_and_uninstall_leaves_nothing(repo):
    directory = repo.path / ".git" / "hooks"
    before = {name: (directory / name).read_text() for name in hooks.HOOK_NAMES}
    again = hooks.install(repo.path)
    assert set(again.actions.values()) == {"already installed"}
    for name in hooks.HOOK_NAMES:
        path = directory / name
        assert path.read_text() == before[name]
        assert path.stat().st_mode & stat.S_IXUSR
        assert not (directory / (name + hooks.CHAIN_SUFFIX)).exists()
    state = hooks.status(repo.path)
    assert state.installed and all(h.python == sys.executable for h in state.hooks)
    removed = hooks.uninstall(repo.path)
    assert set(removed.actions.values()) == {"removed"}
    assert not any((directory / name).exists() for name in hooks.HOOK_NAMES)
    assert set(hooks.uninstall(repo.path).actions.values()) == {"not installed"}
    assert not hooks.status(repo.path).installed


EXISTING_HOOK = """#!/bin/sh
# a hook that was there first: it must keep running, see its own name, args and stdin
{{ echo "name=$(basename "$0") dir=$(basename "$(dirname "$0")") args=$*"; cat; }} >> {out}
exit 3
"""


def test_an_existing_hook_is_chained_and_restored(tmp_path):
    r = GitRepo(tmp_path / "repo")
    out = tmp_path / "existing.out"
    directory = r.path / ".git" / "hooks"
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("post-commit", "post-rewrite"):
        (directory / name).write_text(EXISTING_HOOK.format(out=out))
        (directory / name).chmod(0o750)
    original = (directory / "post-commit").read_bytes()
    report = hooks.install(r.path)
    assert "chaining the existing hook" in report.actions["post-commit"]
    assert (directory / ("post-commit" + hooks.CHAIN_SUFFIX)).read_bytes() == original

    first = r.commit("first commit", {"a": "1"})
    assert f"stored {first[:12]}" in log_text(r)  # the hook failing (exit 3) stops nothing
    r.run_sync("commit", "-q", "--amend", "-m", "first commit, amended")
    amended = r.head()
    lines = out.read_text().splitlines()
    assert lines[0] == "name=post-commit dir=hooks args="
    assert "name=post-rewrite dir=hooks args=amend" in lines
    assert f"{first} {amended}" in lines  # post-rewrite's stdin reached the chained hook
    # our hook exits with the chained hook's status
    proc = subprocess.run([str(directory / "post-commit")], cwd=r.path,
                          env={**os.environ, "MEMSTORE_HOOK_SYNC": "1"})
    assert proc.returncode == 3

    assert hooks.install(r.path).actions["post-commit"] == "already installed"
    hooks.uninstall(r.path)
    assert (directory / "post-commit").read_bytes() == original
    assert stat.S_IMODE((directory / "post-commit").stat().st_mode) == 0o750
    assert not (directory / ("post-commit" + hooks.CHAIN_SUFFIX)).exists()


def test_a_non_shell_existing_hook_is_run_directly(tmp_path):
    r = GitRepo(tmp_path / "repo")
    out = tmp_path / "py.out"
    hook = r.path / ".git" / "hooks" / "post-commit"
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text(f"#!{sys.executable}\nimport sys\nopen({str(out)!r}, 'a').write('python hook ran\\n')\n")
    hook.chmod(0o755)
    hooks.install(r.path)
    sha = r.commit("with a python hook", {"a": "1"})
    assert out.read_text() == "python hook ran\n"
    assert sha in commits_in_store()


def test_install_refuses_to_clobber_two_foreign_files(tmp_path):
    r = GitRepo(tmp_path / "repo")
    directory = r.path / ".git" / "hooks"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "post-commit").write_text("#!/bin/sh\necho mine\n")
    (directory / ("post-commit" + hooks.CHAIN_SUFFIX)).write_text("#!/bin/sh\necho older\n")
    with pytest.raises(GitError, match="move one of them aside"):
        hooks.install(r.path)
    assert (directory / "post-commit").read_text() == "#!/bin/sh\necho mine\n"


def test_uninstall_leaves_a_replaced_hook_alone(repo):
    hook = repo.path / ".git" / "hooks" / "post-commit"
    hook.write_text("#!/bin/sh\necho someone else now\n")
    report = hooks.uninstall(repo.path)
    assert report.actions["post-commit"] == "left alone (not memstore's)"
    assert hook.read_text() == "#!/bin/sh\necho someone else now\n"


def test_amend_forgets_the_old_commit(repo):
    old = repo.commit("Add retry loop", {"a": "1"})
    repo.run_sync("commit", "-q", "--amend", "-m", "Add retry loop with backoff")
    new = repo.head()
    live, gone = commits_in_store(), commits_in_store(deleted=True)
    assert new in live and old not in live and old in gone
    assert live[new].text.startswith("Add retry loop with backoff")
    assert "post-rewrite amend ok" in log_text(repo)


def test_rebase_records_the_result_once(repo):
    repo.commit("base", {"base": "1"}, hook="off")
    repo.git("checkout", "-q", "-b", "topic")
    originals = [repo.commit(f"topic step {i}", {f"t{i}": "x"}) for i in range(2)]
    repo.git("checkout", "-q", "main")
    repo.commit("main moved on", {"m": "1"}, hook="off")
    repo.git("checkout", "-q", "topic")
    repo.run_sync("rebase", "-q", "main")
    rebased = repo.git("rev-list", "--reverse", "main..topic").split()
    live, gone = commits_in_store(), commits_in_store(deleted=True)
    assert set(rebased) <= set(live) and not set(originals) & set(live)
    assert set(originals) <= set(gone)
    assert {live[sha].branch for sha in rebased} == {"topic"}
    assert all(live[sha].metadata["captured_by"] == "post-rewrite" for sha in rebased)
    assert "skipped: rebase in progress" not in log_text(repo)  # the shell skipped those runs


def test_aborted_rebase_records_nothing(repo):
    repo.commit("base", {"f": "1"}, hook="off")
    repo.git("checkout", "-q", "-b", "topic")
    repo.commit("topic edits f", {"f": "topic"}, hook="off")
    repo.git("checkout", "-q", "main")
    repo.commit("main edits f", {"f": "main"}, hook="off")
    repo.git("checkout", "-q", "topic")
    before = set(commits_in_store())
    proc = subprocess.run(["git", "rebase", "-q", "main"], cwd=repo.path, capture_output=True,
                          env={**os.environ, "MEMSTORE_HOOK_SYNC": "1"})
    assert proc.returncode != 0  # conflict
    repo.git("rebase", "--abort")
    assert set(commits_in_store()) == before


def test_core_hooks_path_is_respected(tmp_path):
    r = GitRepo(tmp_path / "repo")
    r.git("config", "core.hooksPath", ".githooks")
    report = hooks.install(r.path)
    assert report.hooks_dir == str(r.path / ".githooks")
    assert any("inside the work tree" in note for note in report.notes)
    assert (r.path / ".githooks" / "post-commit").exists()
    assert not (r.path / ".git" / "hooks" / "post-commit").exists()
    sha = r.commit("via hooksPath", {"a": "1"})
    assert sha in commits_in_store()


def test_a_shared_global_hooks_path_is_pointed_out(tmp_path):
    shared = tmp_path / "shared-hooks"
    subprocess.run(["git", "config", "--global", "core.hooksPath", str(shared)], check=True)
    one, two = GitRepo(tmp_path / "one"), GitRepo(tmp_path / "two", remote="https://x.org/two.git")
    report = hooks.install(one.path)
    assert report.hooks_dir == str(shared)
    assert any("every repository" in note for note in report.notes)
    a = one.commit("in one", {"a": "1"})
    b = two.commit("in two", {"b": "1"})
    found = commits_in_store()
    assert found[a].project == str(one.path) and found[b].project == "x.org/two"
    assert f"stored {a[:12]}" in (one.path / ".git" / hooks.LOG_NAME).read_text()
    assert f"stored {b[:12]}" in (two.path / ".git" / hooks.LOG_NAME).read_text()


def test_worktrees_share_the_hooks_and_the_project(repo, tmp_path):
    repo.commit("base", {"a": "1"}, hook="off")
    wt = GitRepo(tmp_path / "wt", init=False)
    repo.git("worktree", "add", "-q", "-b", "wt-branch", str(wt.path))
    sha = wt.commit("made in a worktree", {"w": "1"})
    memory = commits_in_store()[sha]
    assert memory.project == "github.com/acme/widgets" and memory.branch == "wt-branch"
    assert hooks.install(wt.path).hooks_dir == str(repo.path / ".git" / "hooks")
    assert hooks.status(wt.path).installed
    assert f"stored {sha[:12]}" in log_text(repo)  # one log, in the common dir


def test_merge_commits_follow_the_setting(repo, monkeypatch):
    repo.commit("base", {"a": "1"}, hook="off")

    def merge(name: str, *message: str) -> str:
        repo.git("checkout", "-q", "-b", name)
        repo.commit(f"work on {name}", {name: "1"}, hook="off")
        repo.git("checkout", "-q", "main")
        repo.commit(f"main work before {name}", {f"main-{name}": "1"}, hook="off")
        args = ["merge", "-q", "--no-ff"] + ([a for m in message for a in ("-m", m)] or ["--no-edit"])
        repo.run_sync(*args, name)
        return repo.head()

    generated = merge("plain")
    explained = merge("explained", "Merge explained: adopt the new parser", "It halves load time.")
    found = commits_in_store()
    assert generated not in found
    assert "merge commit with a generated message" in log_text(repo)
    assert found[explained].tags == ("commit", "merge")
    assert found[explained].metadata["captured_by"] == "post-merge"
    assert found[explained].metadata["paths"] == ["explained"]
    monkeypatch.setenv("MEMSTORE_GIT_MERGES", "all")
    assert merge("everything") in commits_in_store()
    monkeypatch.setenv("MEMSTORE_GIT_MERGES", "none")
    assert merge("nothing", "Merge nothing", "with a body") not in commits_in_store()


def test_fast_forward_merge_records_nothing_new(repo):
    repo.commit("base", {"a": "1"}, hook="off")
    repo.git("checkout", "-q", "-b", "ff")
    tip = repo.commit("on ff", {"b": "1"})
    repo.git("checkout", "-q", "main")
    repo.run_sync("merge", "-q", "--ff-only", "ff")
    assert repo.head() == tip
    assert "fast-forward" in log_text(repo)
    assert commits_in_store()[tip].branch == "ff"


def test_memstore_hook_off_records_nothing_but_runs_the_chained_hook(tmp_path):
    r = GitRepo(tmp_path / "repo")
    out = tmp_path / "chained.out"
    hook = r.path / ".git" / "hooks" / "post-commit"
    hook.parent.mkdir(parents=True, exist_ok=True)
    hook.write_text(f"#!/bin/sh\necho ran >> {out}\n")
    hook.chmod(0o755)
    hooks.install(r.path)
    sha = r.commit("not recorded", {"a": "1"}, hook="off")
    assert out.read_text() == "ran\n"
    assert sha not in commits_in_store() and log_text(r) == ""


def test_empty_messages_follow_the_setting(repo, monkeypatch):
    skipped = repo.commit("", {"a": "1"}, extra=("--allow-empty-message",))
    assert skipped not in commits_in_store()
    assert "empty commit message" in log_text(repo)
    monkeypatch.setenv("MEMSTORE_GIT_EMPTY_MESSAGES", "capture")
    kept = repo.commit("", {"b": "1"}, extra=("--allow-empty-message",))
    assert commits_in_store()[kept].text.startswith("(no commit message)")


def test_missing_memstore_is_logged_and_the_commit_succeeds(tmp_path, monkeypatch):
    r = GitRepo(tmp_path / "repo")
    hooks.install(r.path, python=str(tmp_path / "gone" / "python"))
    monkeypatch.setenv("PATH", os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep)
                                               if not (Path(p) / "memstore").exists()))
    sha = r.commit("still commits", {"a": "1"})
    assert r.git("log", "-1", "--format=%H").strip() == sha
    assert "post-commit FAILED: memstore is not installed at" in log_text(r)
    state = hooks.status(r.path)
    assert state.failures == 1 and "not installed" in state.last_failure
    assert not state.installed and state.hooks[0].python_ok is False


def test_a_broken_store_is_logged_and_the_commit_succeeds(repo, tmp_path, monkeypatch):
    not_a_dir = tmp_path / "store-is-a-file"
    not_a_dir.write_text("")
    monkeypatch.setenv("MEMSTORE_HOME", str(not_a_dir))
    sha = repo.commit("commit with a broken store", {"a": "1"})
    assert repo.head() == sha
    state = hooks.status(repo.path)
    assert state.failures == 1 and "FAILED" in state.last_failure and "store" in state.last_failure


def test_the_detached_hook_records_in_the_background(repo):
    started = time.monotonic()
    sha = repo.commit("recorded in the background", {"bg": "1"}, hook="background")
    deadline = started + 120
    while f"stored {sha[:12]}" not in log_text(repo):
        assert time.monotonic() < deadline, log_text(repo)
        time.sleep(0.05)
    assert sha in commits_in_store()


def test_run_detached_for_hook_managers(repo):
    sha = repo.commit("recorded via --detach", {"a": "1"})
    # recorded by our hook; now run the entry point pre-commit would use: it finds it known
    proc = subprocess.run([sys.executable, "-m", "memstore", "hooks", "run", "post-commit", "--detach"],
                          cwd=repo.path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    deadline = time.monotonic() + 120
    while f"already had {sha[:12]}" not in log_text(repo):
        assert time.monotonic() < deadline, log_text(repo)
        time.sleep(0.05)
    assert f"stored {sha[:12]}" in log_text(repo)


def test_install_refuses_bare_repositories_and_non_repositories(tmp_path):
    r = GitRepo(tmp_path / "repo")
    r.commit("x", {"a": "1"}, hook="off")
    r.git("clone", "-q", "--bare", str(r.path), str(tmp_path / "bare.git"))
    with pytest.raises(GitError, match="bare"):
        hooks.install(tmp_path / "bare.git")
    (tmp_path / "plain").mkdir()
    with pytest.raises(GitError, match="not in a git repository"):
        hooks.install(tmp_path / "plain")


def test_log_is_rotated(tmp_path, monkeypatch):
    monkeypatch.setattr(hooks, "LOG_MAX_BYTES", 100)
    log = tmp_path / "x.log"
    for i in range(5):
        hooks._log(log, "post-commit", f"line {i} " + "x" * 40)
    assert log.with_name("x.log.1").exists()
    assert log.stat().st_size < 300


def test_pre_commit_manifest_runs_detached_at_post_commit():
    text = (Path(__file__).resolve().parents[2] / ".pre-commit-hooks.yaml").read_text()
    assert "stages: [post-commit]" in text
    assert "entry: memstore hooks run post-commit --detach" in text
    assert "pass_filenames: false" in text and "always_run: true" in text
