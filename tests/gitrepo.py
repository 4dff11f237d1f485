"""Real temporary git repositories for tests, isolated from the machine's git configuration.

Test modules call :func:`isolate_git` from an autouse fixture: HOME, XDG_CONFIG_HOME and
GIT_CONFIG_GLOBAL point into the test's tmp dir, system config is off, and no GIT_* variable
of an enclosing git process (tests run from a hook, say) leaks in.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

_LEAKY = (
    "GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_COMMON_DIR", "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES", "GIT_NAMESPACE", "GIT_PREFIX", "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL", "GIT_AUTHOR_DATE",
    "GIT_COMMITTER_DATE", "MEMSTORE_HOOK_SYNC", "MEMSTORE_HOOK",
)


def isolate_git(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point git's user-level configuration into ``tmp_path``; returns the global config file."""
    home = tmp_path / "userhome"
    home.mkdir(exist_ok=True)
    global_config = tmp_path / "gitconfig-global"
    global_config.write_text("[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(global_config))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_TERMINAL_PROMPT", "0")
    for name in _LEAKY:
        monkeypatch.delenv(name, raising=False)
    return global_config


class GitRepo:
    """A repository made with ``git init`` (or a worktree of one), driven by the real git."""

    def __init__(self, path: Path, *, remote: str | None = None, init: bool = True) -> None:
        self.path = path
        if init:
            path.mkdir(parents=True, exist_ok=True)
            self.git("init", "-q", "-b", "main")
            self.git("config", "user.name", "Test Person")
            self.git("config", "user.email", "test@example.com")
            self.git("config", "commit.gpgsign", "false")
            if remote:
                self.git("remote", "add", "origin", remote)

    def git(self, *args: str, input: str | None = None, env: dict[str, str] | None = None,
            check: bool = True) -> str:
        proc = subprocess.run(
            ["git", *args], cwd=self.path, input=input, capture_output=True, text=True,
            env={**os.environ, **(env or {})}, timeout=120,
        )
        if check and proc.returncode != 0:
            raise AssertionError(f"git {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
        return proc.stdout

    def commit(self, message: str, files: dict[str, str] | None = None, *, hook: str = "sync",
               extra: tuple[str, ...] = (), env: dict[str, str] | None = None) -> str:
        """Write ``files``, stage them, commit with ``message``; returns the new HEAD sha.
        ``hook``: ``sync`` runs memstore's hook in the foreground (the test can look at once),
        ``background`` as users get it, ``off`` not at all (MEMSTORE_HOOK=off)."""
        for name, content in (files or {}).items():
            target = self.path / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(content)
            self.git("add", "--", name)
        hook_env = {
            "sync": {"MEMSTORE_HOOK_SYNC": "1"}, "background": {}, "off": {"MEMSTORE_HOOK": "off"},
        }[hook]
        self.git("commit", "-q", "--cleanup=strip", "-F", "-", *extra, input=message,
                 env={**hook_env, **(env or {})})
        return self.head()

    def head(self) -> str:
        return self.git("rev-parse", "HEAD").strip()

    def run_sync(self, *args: str, input: str | None = None, env: dict[str, str] | None = None) -> str:
        """A git command with memstore's hooks in the foreground."""
        return self.git(*args, input=input, env={"MEMSTORE_HOOK_SYNC": "1", **(env or {})})

    def quiet(self, *args: str) -> str:
        """A git command with memstore's hooks off (setting the scene)."""
        return self.git(*args, env={"MEMSTORE_HOOK": "off"})
