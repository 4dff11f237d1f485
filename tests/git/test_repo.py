"""memstore.git.repo: repository, project and branch detection, and reading commits, on real repositories."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from gitrepo import GitRepo, isolate_git

from memstore.errors import GitError
from memstore.git import repo as gitscope
from memstore.git.repo import normalise_remote


@pytest.fixture(autouse=True)
def _isolated_git(tmp_path, monkeypatch):
    isolate_git(tmp_path, monkeypatch)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://github.com/Owner/Repo.git", "github.com/owner/repo"),
        ("https://github.com/owner/repo/", "github.com/owner/repo"),
        ("git@github.com:owner/repo.git", "github.com/owner/repo"),
        ("ssh://git@github.com:22/owner/repo", "github.com/owner/repo"),
        ("git://github.com/owner/repo.git", "github.com/owner/repo"),
        ("https://user:s3cret@git.example.com:8443/Group/Sub/Proj.git", "git.example.com/Group/Sub/Proj"),
        ("git.example.com:team/proj.git", "git.example.com/team/proj"),
        ("file:///srv/git/proj.git", "/srv/git/proj"),
        ("/srv/git/proj.git", "/srv/git/proj"),
    ],
)
def test_normalise_remote(url, expected):
    assert normalise_remote(url) == expected


def test_normalise_relative_path_uses_base(tmp_path):
    assert normalise_remote("../upstream.git", base=tmp_path / "work") == str(tmp_path / "upstream")


def test_credentials_never_reach_the_project_id(tmp_path):
    repo = GitRepo(tmp_path / "r", remote="https://me:ghp_token123@github.com/Me/Thing.git")
    found = gitscope.require_repo(repo.path)
    assert found.project == "github.com/me/thing"
    assert "token" not in found.project


def test_detect_everywhere_in_a_repository(tmp_path):
    repo = GitRepo(tmp_path / "r", remote="git@github.com:me/proj.git")
    repo.commit("first", {"a.txt": "a"}, hook="off")
    (repo.path / "deep" / "er").mkdir(parents=True)
    for where in (repo.path, repo.path / "deep" / "er", repo.path / ".git"):
        found = gitscope.detect(where)
        assert found is not None, where
        assert found.project == "github.com/me/proj"
        assert found.branch == "main"
        assert found.toplevel == repo.path
        assert found.common_dir == repo.path / ".git"


def test_not_a_repository(tmp_path):
    (tmp_path / "plain").mkdir()
    assert gitscope.detect(tmp_path / "plain") is None
    with pytest.raises(GitError, match="not in a git repository"):
        gitscope.require_repo(tmp_path / "plain")


def test_git_missing_is_a_clear_error(tmp_path, monkeypatch):
    repo = GitRepo(tmp_path / "r")
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    assert gitscope.detect(repo.path) is None
    with pytest.raises(GitError, match="git is not installed"):
        gitscope.require_repo(repo.path)


def test_project_without_remote_is_the_main_worktree_path(tmp_path):
    repo = GitRepo(tmp_path / "r")
    repo.commit("first", {"a": "1"}, hook="off")
    repo.git("worktree", "add", "-q", "-b", "side", str(tmp_path / "wt"))
    main = gitscope.require_repo(repo.path)
    linked = gitscope.require_repo(tmp_path / "wt")
    assert main.project == linked.project == str(repo.path)
    assert (main.branch, linked.branch) == ("main", "side")
    assert linked.common_dir == main.common_dir
    assert linked.git_dir != main.git_dir
    assert linked.hooks_dir() == main.hooks_dir() == repo.path / ".git" / "hooks"


def test_unborn_detached_and_bare(tmp_path):
    repo = GitRepo(tmp_path / "r")
    assert gitscope.require_repo(repo.path).branch == "main"  # unborn: no commit yet
    repo.commit("one", {"a": "1"}, hook="off")
    repo.commit("two", {"a": "2"}, hook="off")
    repo.git("checkout", "-q", "--detach", "HEAD~1")
    assert gitscope.require_repo(repo.path).branch is None
    bare = tmp_path / "b.git"
    repo.git("clone", "-q", "--bare", str(repo.path), str(bare))
    found = gitscope.require_repo(bare)
    assert found.bare and found.toplevel is None
    assert found.project == str(repo.path)  # its origin is the first repository


def test_explicit_path_ignores_git_dir_from_the_environment(tmp_path, monkeypatch):
    a = GitRepo(tmp_path / "a")
    b = GitRepo(tmp_path / "b")
    monkeypatch.setenv("GIT_DIR", str(b.path / ".git"))
    assert gitscope.require_repo(a.path).toplevel == a.path


def test_long_project_ids_are_shortened_but_distinct():
    one = gitscope._shorten("/" + "x" * 200 + "/one")
    two = gitscope._shorten("/" + "y" * 200 + "/one")
    assert len(one) <= gitscope.MAX_PROJECT_CHARS and len(two) <= gitscope.MAX_PROJECT_CHARS
    assert one != two and one.endswith("/one")


def test_commits_are_read_whole(tmp_path):
    repo = GitRepo(tmp_path / "r")
    first = repo.commit("Add the parser\n\nIt reads TOML.\nSecond line.", {"src/parse.py": "x",
                                                                           "docs/a b é.md": "y"},
                        hook="off")
    repo.commit("Empty one", extra=("--allow-empty",), hook="off")
    scope = gitscope.require_repo(repo.path)
    commits = list(scope.commits())
    assert [c.subject for c in commits] == ["Empty one", "Add the parser"]
    parsed = commits[1]
    assert parsed.sha == first and parsed.parents == ()
    assert parsed.body == "It reads TOML.\nSecond line."
    assert set(parsed.paths) == {"src/parse.py", "docs/a b é.md"}
    assert parsed.author == "Test Person"
    assert parsed.author_date.tzinfo is not None
    assert commits[0].paths == () and not commits[0].is_merge
    assert scope.commit(first).message == "Add the parser\n\nIt reads TOML.\nSecond line."
    assert [c.sha for c in scope.commits_by_sha([first])] == [first]
    with pytest.raises(GitError):
        scope.commits_by_sha(["0" * 40])


def test_merge_commits_list_paths_against_first_parent(tmp_path):
    repo = GitRepo(tmp_path / "r")
    repo.commit("base", {"a": "1"}, hook="off")
    repo.git("checkout", "-q", "-b", "topic")
    repo.commit("topic work", {"t1": "1", "t2": "2"}, hook="off")
    repo.git("checkout", "-q", "main")
    repo.commit("main work", {"m": "1"}, hook="off")
    repo.git("merge", "-q", "--no-ff", "--no-edit", "topic")
    merge = gitscope.require_repo(repo.path).commit()
    assert merge.is_merge and len(merge.parents) == 2
    assert set(merge.paths) == {"t1", "t2"}


def test_walk_options(tmp_path):
    repo = GitRepo(tmp_path / "r")
    for i in range(5):
        repo.commit(f"c{i}", {"f": str(i)}, hook="off")
    repo.git("checkout", "-q", "-b", "other", "HEAD~2")
    repo.commit("on other", {"o": "1"}, hook="off")
    repo.git("checkout", "-q", "main")
    scope = gitscope.require_repo(repo.path)
    assert [c.subject for c in scope.commits(max_count=2)] == ["c4", "c3"]
    assert scope.count_commits(max_count=2) == 2
    assert scope.count_commits() == 5
    assert scope.count_commits(all_branches=True) == 6
    sources = {c.subject: c.reached_from for c in scope.commits(all_branches=True)}
    assert sources["on other"] == "other" and sources["c4"] == "main"
    assert all(c.reached_from is None for c in scope.commits())
    future = datetime.now(timezone.utc) + timedelta(days=1)
    assert list(scope.commits(since=future)) == []


def test_branches_and_reachability(tmp_path):
    repo = GitRepo(tmp_path / "r")
    base = repo.commit("base", {"a": "1"}, hook="off")
    repo.git("checkout", "-q", "-b", "gone")
    orphaned = repo.commit("only on gone", {"g": "1"}, hook="off")
    repo.git("checkout", "-q", "main")
    scope = gitscope.require_repo(repo.path)
    assert scope.branches() == {"main", "gone"}
    assert scope.reachable([base, orphaned]) == {base, orphaned}
    repo.git("branch", "-q", "-D", "gone")
    assert scope.branches() == {"main"}
    assert scope.reachable([base, orphaned, "f" * 40]) == {base}
    assert scope.is_reachable(base) and not scope.is_reachable(orphaned)
    repo.git("checkout", "-q", orphaned)
    assert scope.is_reachable(orphaned, from_head=True)


def test_hooks_dir_follows_core_hooks_path(tmp_path):
    repo = GitRepo(tmp_path / "r")
    assert gitscope.require_repo(repo.path).hooks_dir() == repo.path / ".git" / "hooks"
    repo.git("config", "core.hooksPath", ".githooks")
    assert gitscope.require_repo(repo.path).hooks_dir() == repo.path / ".githooks"
    repo.git("config", "core.hooksPath", str(tmp_path / "shared"))
    found = gitscope.require_repo(repo.path)
    assert found.hooks_dir() == tmp_path / "shared"
    assert found.config_origin("core.hooksPath")[0] == str(tmp_path / "shared")
