"""The git side of the CLI: default project scope, hooks, gc --branches, import-git."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from gitrepo import GitRepo, isolate_git

from memstore.cli import cli


@pytest.fixture(autouse=True)
def _isolated_git(tmp_path, monkeypatch):
    isolate_git(tmp_path, monkeypatch)


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args: str, code: int = 0, input: str | None = None):
        result = runner.invoke(cli, list(args), input=input, catch_exceptions=False)
        assert result.exit_code == code, (result.stdout, result.stderr)
        return result

    return invoke


@pytest.fixture
def two_repos(tmp_path, run, monkeypatch):
    """Repos A and B with similar commit histories, both imported, plus a note with no project."""
    a = GitRepo(tmp_path / "a", remote="git@github.com:acme/a.git")
    b = GitRepo(tmp_path / "b", remote="https://github.com/acme/b.git")
    for repo, name in ((a, "A"), (b, "B")):
        repo.commit(f"Switch the cache to Redis in {name}\n\nMemcached kept evicting sessions.",
                    {"cache.py": name}, hook="off")
        repo.git("checkout", "-q", "-b", "tuning")
        repo.commit(f"Tune the Redis cache eviction policy in {name}", {"cache.py": name + "2"}, hook="off")
        repo.git("checkout", "-q", "main")
        run("import-git", "--repo", str(repo.path), "--all")
    monkeypatch.chdir(tmp_path)
    run("capture", "Redis cache sizing rule of thumb: 2x the working set")
    return a, b


def _recall(run, *args: str) -> list[dict]:
    return json.loads(run("recall", "redis cache", "-k", "50", "--json", *args).stdout)


def test_recall_inside_a_repo_is_scoped_to_its_project(two_repos, run, monkeypatch):
    a, b = two_repos
    monkeypatch.chdir(a.path)
    for mode in ("hybrid", "keyword", "semantic"):
        hits = _recall(run, "--mode", mode)
        assert {h["project"] for h in hits} == {"github.com/acme/a", None}, mode
        assert not any(" in B" in h["text"] for h in hits)
    assert len(_recall(run)) == 3
    everything = _recall(run, "--all-projects")
    assert {h["project"] for h in everything} == {"github.com/acme/a", "github.com/acme/b", None}
    as_b = _recall(run, "--project", str(b.path))
    assert {h["project"] for h in as_b} == {"github.com/acme/b", None}
    for spelled in ("github.com/acme/b", "git@github.com:Acme/B.git"):
        assert {h["project"] for h in _recall(run, "--project", spelled)} == {"github.com/acme/b", None}
    tuning = _recall(run, "--branch", "tuning")
    assert [h["branch"] for h in tuning] == ["tuning"] and "in A" in tuning[0]["text"]
    listed = json.loads(run("list", "--json").stdout)
    assert {m["project"] for m in listed} == {"github.com/acme/a", None}
    assert len(json.loads(run("list", "--json", "--all-projects").stdout)) == 5
    run("recall", "x", "--all-projects", "--project", "p", code=2)


def test_outside_any_repository_recall_sees_every_project(two_repos, run, tmp_path, monkeypatch):
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert len(_recall(run)) == 5


def test_capture_records_the_repository_scope(tmp_path, run, monkeypatch):
    repo = GitRepo(tmp_path / "r", remote="ssh://git@github.com:22/acme/r.git")
    repo.commit("base", {"a": "1"}, hook="off")
    repo.git("checkout", "-q", "-b", "feature")
    monkeypatch.chdir(repo.path)
    note = json.loads(run("capture", "decided to keep the API flat", "--json").stdout)
    assert (note["project"], note["branch"]) == ("github.com/acme/r", "feature")
    other = json.loads(run("capture", "for elsewhere", "--project", "x/y", "--json").stdout)
    assert (other["project"], other["branch"]) == ("x/y", None)
    loose = json.loads(run("capture", "a general truth", "--no-project", "--json").stdout)
    assert (loose["project"], loose["branch"]) == (None, None)
    run("capture", "bad", "--no-project", "--branch", "b", code=2)
    # the same text in another project is another memory; in the same one, the same memory
    again = json.loads(run("capture", "decided to keep the API flat", "--json").stdout)
    assert again["id"] == note["id"] and not again["created"]
    moved = json.loads(run("capture", "decided to keep the API flat", "--project", "x/y", "--json").stdout)
    assert moved["created"]


def test_hooks_commands(tmp_path, run, monkeypatch):
    repo = GitRepo(tmp_path / "r")
    monkeypatch.chdir(repo.path)
    out = run("hooks", "install").stdout
    assert "post-commit: installed" in out and "post-rewrite: installed" in out
    assert "already installed" in run("hooks", "install").stdout
    sha = repo.commit("Adopt the new logger", {"a": "1"})
    status = run("hooks", "status").stdout
    assert "post-commit:  installed" in status and f"stored {sha[:12]}" in status
    assert "pending embeddings: 0" in status
    data = json.loads(run("hooks", "status", "--json").stdout)
    assert data["installed"] and data["failures"] == 0 and data["project"] == str(repo.path)
    assert "removed" in run("hooks", "uninstall").stdout
    assert json.loads(run("hooks", "status", "--json").stdout)["installed"] is False
    (tmp_path / "plain").mkdir()
    err = run("hooks", "install", "--repo", str(tmp_path / "plain"), code=1).stderr
    assert "not in a git repository" in err


def test_hooks_baked_home_is_used_by_the_hook(tmp_path, run, monkeypatch):
    repo = GitRepo(tmp_path / "r")
    monkeypatch.chdir(repo.path)
    elsewhere = tmp_path / "other-store"
    run("--home", str(elsewhere), "hooks", "install")
    sha = repo.commit("lands in the other store", {"a": "1"})
    listed = json.loads(run("--home", str(elsewhere), "list", "--json").stdout)
    assert [m["metadata"]["commit"] for m in listed] == [sha]
    assert json.loads(run("list", "--json").stdout) == []


def test_gc_branches_cli(tmp_path, run, monkeypatch):
    repo = GitRepo(tmp_path / "r")
    repo.commit("base", {"a": "1"}, hook="off")
    repo.git("checkout", "-q", "-b", "spike")
    repo.commit("spike that went nowhere", {"s": "1"}, hook="off")
    repo.git("checkout", "-q", "main")
    monkeypatch.chdir(repo.path)
    run("import-git", "--all")
    repo.git("branch", "-q", "-D", "spike")
    run("gc", code=2)
    dry = run("gc", "--branches", "--dry-run").stdout
    assert "would forget 1" in dry and "spike that went nowhere" in dry
    assert "gc would forget 1 commit memories: pass --yes" in run("gc", "--branches", code=2).stderr
    assert len(json.loads(run("list", "--json").stdout)) == 2
    data = json.loads(run("gc", "--branches", "--yes", "--json").stdout)
    assert len(data["forgotten"]) == 1 and data["dry_run"] is False
    assert [m["text"].splitlines()[0] for m in json.loads(run("list", "--json").stdout)] == ["base"]


def test_import_git_cli(tmp_path, run, monkeypatch):
    repo = GitRepo(tmp_path / "r")
    for i in range(4):
        repo.commit(f"step {i}", {"f": str(i)}, hook="off")
    data = json.loads(run("import-git", "--repo", str(repo.path), "--max", "3", "--json").stdout)
    assert data == {"project": str(repo.path), "seen": 3, "stored": 3, "already": 0, "skipped": 0}
    text = run("import-git", "--repo", str(repo.path)).stdout
    assert "read 4 commits" in text and "stored 1" in text and "already recorded 3" in text
    assert "stored 0" in run("import-git", "--repo", str(repo.path), "--since", "1d").stdout
    err = run("import-git", "--repo", str(repo.path), "--since", "someday", code=1).stderr
    assert "invalid since" in err
    (tmp_path / "plain").mkdir()
    assert "not in a git repository" in run("import-git", "--repo", str(tmp_path / "plain"), code=1).stderr


def test_help(run):
    for command in (("hooks",), ("hooks", "install"), ("hooks", "uninstall"), ("hooks", "status"),
                    ("hooks", "run"), ("gc",), ("import-git",)):
        assert "Usage:" in run(*command, "--help").stdout


def test_hooks_install_bakes_memstore_home_from_the_environment(tmp_path, run, monkeypatch):
    """git runs hooks from other shells (an IDE, a GUI) without this MEMSTORE_HOME: the home
    in force at install time is baked into the hook, like --home."""
    repo = GitRepo(tmp_path / "r")
    monkeypatch.chdir(repo.path)
    chosen = tmp_path / "chosen-store"
    monkeypatch.setenv("MEMSTORE_HOME", str(chosen))
    run("hooks", "install")
    hook = (repo.path / ".git" / "hooks" / "post-commit").read_text()
    assert f"--home {chosen.resolve()}" in hook
    sha = repo.commit("lands in the chosen store", {"a": "1"}, env={"MEMSTORE_HOME": str(tmp_path / "x")})
    listed = json.loads(run("--home", str(chosen), "list", "--json").stdout)
    assert [m["metadata"]["commit"] for m in listed] == [sha]
