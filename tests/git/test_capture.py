"""memstore.git.capture: commits as memories, history import, rewrite and stale-branch clean-up."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from gitrepo import GitRepo, isolate_git

from memstore import limits
from memstore.git import capture as gitcapture
from memstore.git import repo as gitscope
from memstore.git.capture import CommitPolicy, commit_text
from memstore.git.repo import Commit


@pytest.fixture(autouse=True)
def _isolated_git(tmp_path, monkeypatch):
    isolate_git(tmp_path, monkeypatch)


def _commit(message: str = "subject", paths: tuple[str, ...] = (), parents: int = 1) -> Commit:
    when = datetime(2024, 5, 1, tzinfo=timezone.utc)
    return Commit(sha="ab" * 20, parents=tuple(f"{i}" * 40 for i in range(parents)), author="A",
                  author_date=when, commit_date=when, message=message, paths=paths)


def test_commit_text_has_message_then_sha_and_paths():
    text = commit_text(_commit("Pick SQLite\n\nOne file, no server.", ("a.py", "b/c.py")))
    assert text == "Pick SQLite\n\nOne file, no server.\n\ncommit abababababab · 2 files: a.py, b/c.py"
    many = commit_text(_commit("x", tuple(f"f{i}" for i in range(25))))
    assert many.endswith("f19 (+5 more)")
    assert commit_text(_commit("", ())).startswith("(no commit message)\n\ncommit abababababab")
    assert "(merge)" in commit_text(_commit("m", (), parents=2))


def test_huge_messages_and_path_lists_fit_the_store_limits(store, tmp_path):
    repo = GitRepo(tmp_path / "r")
    huge = "Big change\n\n" + ("word " * 30_000)
    files = {f"dir/file_{i:04d}_with_a_long_name.txt": "x" for i in range(600)}
    sha = repo.commit(huge, files, hook="off")
    scope = gitscope.require_repo(repo.path)
    report = gitcapture.record_head(store, scope, policy=CommitPolicy())
    memory = report.stored[0]
    assert len(memory.text.encode()) <= limits.MAX_TEXT_BYTES
    assert "[… message truncated]" in memory.text and memory.text.startswith("Big change")
    assert memory.metadata["commit"] == sha and memory.metadata["paths_total"] == 600
    assert 0 < len(memory.metadata["paths"]) <= gitcapture.META_PATHS


@pytest.mark.parametrize(
    ("message", "parents", "policy", "skipped"),
    [
        ("Merge branch 'x'", 2, CommitPolicy(), True),
        ("Merge pull request #1 from a/b\n\nAdd caching", 2, CommitPolicy(), False),
        ("Combine the two parsers", 2, CommitPolicy(), False),
        ("Merge branch 'x'", 2, CommitPolicy(merges="all"), False),
        ("Combine the two parsers", 2, CommitPolicy(merges="none"), True),
        ("", 1, CommitPolicy(), True),
        ("", 1, CommitPolicy(empty_messages="capture"), False),
    ],
)
def test_policy(message, parents, policy, skipped):
    assert (policy.skip_reason(_commit(message, parents=parents)) is not None) == skipped


def test_import_history_is_idempotent_and_respects_forgets(store, tmp_path):
    repo = GitRepo(tmp_path / "r", remote="https://github.com/acme/app.git")
    shas = [repo.commit(f"change number {i}", {"f": str(i)}, hook="off") for i in range(6)]
    scope = gitscope.require_repo(repo.path)
    seen: list[tuple[int, int]] = []
    report = gitcapture.import_history(store, scope, policy=CommitPolicy(), max_count=4,
                                       progress=lambda d, t: seen.append((d, t)))
    assert report.seen == 4 and len(report.stored) == 4 and seen[-1] == (4, 4)
    stored = {m.metadata["commit"]: m for m in report.stored}
    assert set(stored) == set(shas[2:])
    newest = stored[shas[-1]]
    assert newest.project == "github.com/acme/app" and newest.branch == "main"
    assert newest.metadata["captured_by"] == "import-git"
    assert newest.created_at == scope.commit(shas[-1]).commit_date
    assert store.stats()["pending_embeddings"] == 0  # imported embedded by default
    store.forget(stored[shas[3]].id)
    again = gitcapture.import_history(store, scope, policy=CommitPolicy())
    assert len(again.stored) == 2 and len(again.already) == 4  # the forgotten one stays forgotten
    assert {m.metadata["commit"] for m in again.stored} == set(shas[:2])


def test_import_without_embedding_leaves_vectors_pending(store, tmp_path):
    repo = GitRepo(tmp_path / "r")
    for i in range(3):
        repo.commit(f"change {i}", {"f": str(i)}, hook="off")
    report = gitcapture.import_history(store, gitscope.require_repo(repo.path), policy=CommitPolicy(),
                                       embed=False)
    assert len(report.stored) == 3 and store.stats()["pending_embeddings"] == 3
    assert len(store.recall("change", mode="keyword")) == 3


def test_import_all_branches_records_where_each_commit_was_reached(store, tmp_path):
    repo = GitRepo(tmp_path / "r")
    repo.commit("on main", {"a": "1"}, hook="off")
    repo.git("checkout", "-q", "-b", "side")
    side = repo.commit("on side", {"s": "1"}, hook="off")
    repo.git("checkout", "-q", "main")
    scope = gitscope.require_repo(repo.path)
    assert len(gitcapture.import_history(store, scope, policy=CommitPolicy()).stored) == 1
    report = gitcapture.import_history(store, scope, policy=CommitPolicy(), all_branches=True)
    assert [m.metadata["commit"] for m in report.stored] == [side]
    assert report.stored[0].branch == "side"


def test_same_commit_in_two_projects_is_two_memories(store, tmp_path):
    one = GitRepo(tmp_path / "one")
    sha = one.commit("shared history", {"a": "1"}, hook="off")
    one.git("clone", "-q", str(one.path), str(tmp_path / "two"))
    two = GitRepo(tmp_path / "two", init=False)
    two.git("remote", "set-url", "origin", "https://git.example.org/fork.git")
    for path in (one.path, two.path):
        gitcapture.import_history(store, gitscope.require_repo(path), policy=CommitPolicy())
    found = store.list(metadata={"commit": sha})
    assert sorted(m.project for m in found) == sorted([str(one.path), "git.example.org/fork"])


def test_rewrite_forgets_only_commits_no_branch_keeps(store, tmp_path):
    repo = GitRepo(tmp_path / "r")
    old = repo.commit("first try", {"a": "1"}, hook="off")
    scope = gitscope.require_repo(repo.path)
    gitcapture.record_head(store, scope, policy=CommitPolicy())
    repo.git("branch", "keep-old")  # another branch still holds the old commit
    repo.git("commit", "-q", "--amend", "-m", "second try", env={"MEMSTORE_HOOK": "off"})
    new = repo.head()
    report = gitcapture.record_rewrite(store, scope, [(old, new)], policy=CommitPolicy())
    assert [m.metadata["commit"] for m in report.stored] == [new] and report.forgotten == []
    repo.git("branch", "-q", "-D", "keep-old")
    report = gitcapture.record_rewrite(store, scope, [(old, new)], policy=CommitPolicy())
    assert report.already == [new] and [m.metadata["commit"] for m in report.forgotten] == [old]


def test_gc_branches_forgets_only_unreachable_commits_of_deleted_branches(store, tmp_path):
    repo = GitRepo(tmp_path / "r")
    repo.commit("base", {"a": "1"}, hook="off")
    scope = gitscope.require_repo(repo.path)
    policy = CommitPolicy()

    def on_branch(branch: str, message: str) -> str:
        repo.git("checkout", "-q", "-b", branch, "main")
        sha = repo.commit(message, {branch: "1"}, hook="off")
        gitcapture.record_head(store, gitscope.require_repo(repo.path), policy=policy)
        return sha

    merged = on_branch("merged", "merged work")
    abandoned = on_branch("abandoned", "abandoned work")
    alive = on_branch("alive", "work in progress")
    repo.git("checkout", "-q", "main")
    repo.git("merge", "-q", "--no-ff", "--no-edit", "merged", env={"MEMSTORE_HOOK": "off"})
    repo.git("branch", "-q", "-D", "merged", "abandoned")
    note = store.capture("a note taken on the abandoned branch", project=scope.project, branch="abandoned")

    dry = gitcapture.forget_stale_branches(store, scope)
    assert [m.metadata["commit"] for m in dry.would_forget] == [abandoned] and dry.forgotten == []
    assert abandoned in {m.metadata["commit"] for m in store.list(source="git")}  # nothing changed
    done = gitcapture.forget_stale_branches(store, scope, dry_run=False)
    assert [m.metadata["commit"] for m in done.forgotten] == [abandoned]
    live = {m.metadata["commit"] for m in store.list(source="git")}
    assert {merged, alive} <= live and abandoned not in live
    assert store.get(note.id).deleted is False  # notes are never collected
    assert gitcapture.forget_stale_branches(store, scope, dry_run=False).forgotten == []
