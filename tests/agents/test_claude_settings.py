"""Installing the hooks into Claude Code's settings.json: merge, idempotence, no clobbering."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from memstore.agents.claude_settings import (
    hook_config,
    install,
    installed_commands,
    merge_hooks,
    remove_hooks,
    settings_path,
    uninstall,
)
from memstore.cli import cli
from memstore.errors import InvalidInputError

CMD = "/opt/venv/bin/memstore"

THEIRS = {
    "model": "opus",
    "permissions": {"allow": ["Bash(git status)"]},
    "hooks": {
        "UserPromptSubmit": [{"hooks": [{"type": "command", "command": "~/bin/log-prompt.sh"}]}],
        "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "guard.sh"}]}],
    },
}


def test_merge_adds_both_events_and_keeps_everything_else():
    merged = merge_hooks(THEIRS, CMD)
    assert list(merged) == ["model", "permissions", "hooks"]
    assert merged["hooks"]["PreToolUse"] == THEIRS["hooks"]["PreToolUse"]
    prompt = merged["hooks"]["UserPromptSubmit"]
    assert prompt[0] == THEIRS["hooks"]["UserPromptSubmit"][0]
    assert prompt[1] == {"hooks": [{"type": "command", "command": f"{CMD} agent-hook prompt", "timeout": 10}]}
    assert merged["hooks"]["SessionStart"][0]["hooks"][0]["command"] == f"{CMD} agent-hook session-start"
    assert THEIRS["hooks"]["UserPromptSubmit"] == [{"hooks": [{"type": "command",
                                                               "command": "~/bin/log-prompt.sh"}]}]


def test_merge_is_idempotent_and_repoints_an_old_install():
    once = merge_hooks(THEIRS, CMD)
    assert merge_hooks(once, CMD) == once
    once["hooks"]["SessionStart"][0]["hooks"][0]["timeout"] = 30  # the user's own choice
    moved = merge_hooks(once, "/new/venv/bin/memstore")
    hooks = moved["hooks"]["SessionStart"]
    assert len(hooks) == 1 and hooks[0]["hooks"][0] == {
        "type": "command", "command": "/new/venv/bin/memstore agent-hook session-start", "timeout": 30}
    assert installed_commands(moved) == {
        "SessionStart": ["/new/venv/bin/memstore agent-hook session-start"],
        "UserPromptSubmit": ["/new/venv/bin/memstore agent-hook prompt"],
    }


def test_merge_drops_duplicates_of_ours():
    doubled = {"hooks": {"UserPromptSubmit": [
        {"hooks": [{"type": "command", "command": "memstore agent-hook prompt"}]},
        {"hooks": [{"type": "command", "command": "other.sh"},
                   {"type": "command", "command": "python -m memstore agent-hook prompt"}]},
        {"hooks": [{"type": "command", "command": "memstore agent-hook prompt --mode keyword"}]},
    ]}}
    merged = merge_hooks(doubled, CMD)
    assert installed_commands(merged)["UserPromptSubmit"] == [f"{CMD} agent-hook prompt"]
    assert merged["hooks"]["UserPromptSubmit"][1] == {"hooks": [{"type": "command", "command": "other.sh"}]}
    assert len(merged["hooks"]["UserPromptSubmit"]) == 2


def test_remove_takes_only_ours():
    merged = merge_hooks(THEIRS, CMD)
    assert remove_hooks(merged) == THEIRS
    assert remove_hooks(merge_hooks({}, CMD)) == {}
    assert remove_hooks({"x": 1}) == {"x": 1}


@pytest.mark.parametrize("bad", [{"hooks": []}, {"hooks": {"SessionStart": {}}},
                                 {"hooks": {"UserPromptSubmit": ["x"]}}])
def test_unexpected_structure_is_refused(bad):
    with pytest.raises(InvalidInputError):
        merge_hooks(bad, CMD)


def test_install_writes_then_changes_nothing(tmp_path):
    path = tmp_path / ".claude" / "settings.json"
    first = install(path, CMD)
    assert first.changed and set(first.commands) == {"SessionStart", "UserPromptSubmit"}
    before = path.read_bytes()
    second = install(path, CMD)
    assert not second.changed and path.read_bytes() == before
    assert json.loads(before) == {"hooks": hook_config(CMD)}
    assert uninstall(path).changed and json.loads(path.read_text()) == {}
    assert not uninstall(path).changed


def test_install_refuses_a_file_that_is_not_json_and_leaves_it(tmp_path):
    path = tmp_path / "settings.json"
    path.write_text('{"model": "opus",, }')
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        install(path, CMD)
    assert path.read_text() == '{"model": "opus",, }'
    assert not list(tmp_path.glob(".settings.*"))


def test_settings_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert settings_path("user") == tmp_path / "home" / ".claude" / "settings.json"
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / "sub").mkdir()
    assert settings_path("project", repo / "sub") == repo / ".claude" / "settings.json"
    assert settings_path("project", tmp_path) == tmp_path / ".claude" / "settings.json"
    with pytest.raises(InvalidInputError):
        settings_path("team")


def test_cli_install_project_print_and_user(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    repo = tmp_path / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / ".claude").mkdir()
    (repo / ".claude" / "settings.json").write_text(json.dumps(THEIRS))
    monkeypatch.chdir(repo)
    runner = CliRunner()

    printed = runner.invoke(cli, ["agent", "install", "claude-code", "--project", "--print",
                                  "--command", CMD])
    assert printed.exit_code == 0
    assert json.loads(printed.stdout) == {"hooks": hook_config(CMD)}
    assert json.loads((repo / ".claude" / "settings.json").read_text()) == THEIRS  # untouched

    out = runner.invoke(cli, ["agent", "install", "claude-code", "--project", "--command", CMD])
    assert out.exit_code == 0 and out.stdout.startswith("installed: memstore hooks")
    again = runner.invoke(cli, ["agent", "install", "claude-code", "--project", "--command", CMD, "--json"])
    assert json.loads(again.stdout)["changed"] is False
    assert json.loads((repo / ".claude" / "settings.json").read_text()) == merge_hooks(THEIRS, CMD)

    user = runner.invoke(cli, ["agent", "install", "claude-code"])
    assert user.exit_code == 0
    assert (tmp_path / "home" / ".claude" / "settings.json").exists()
    status = json.loads(runner.invoke(cli, ["agent", "status", "--json"]).stdout)
    assert set(status["claude-code"]["user"]["hooks"]) == {"SessionStart", "UserPromptSubmit"}
    assert status["claude-code"]["project"]["hooks"]["UserPromptSubmit"] == [f"{CMD} agent-hook prompt"]

    removed = runner.invoke(cli, ["agent", "uninstall", "claude-code", "--project"])
    assert removed.exit_code == 0
    assert json.loads((repo / ".claude" / "settings.json").read_text()) == THEIRS


def test_cli_install_reports_a_broken_file(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".claude").mkdir()
    (tmp_path / ".claude" / "settings.json").write_text("[]")
    out = CliRunner().invoke(cli, ["agent", "install", "claude-code"])
    assert out.exit_code == 1 and "does not hold a JSON object" in out.stderr


def test_the_installed_command_runs(tmp_path, isolated_env):
    """The command written into settings.json works when a shell runs it, as Claude Code does."""
    import memstore

    with memstore.open() as store:
        store.capture("The flaky CI was a race in the retry backoff")
    path = tmp_path / "settings.json"
    install(path)  # default command: this interpreter (-m memstore) under pytest
    command = installed_commands(json.loads(path.read_text()))["UserPromptSubmit"][0]
    assert command.startswith(sys.executable) or command.startswith("'")
    proc = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=120,
                          input=json.dumps({"hook_event_name": "UserPromptSubmit", "prompt": "flaky CI",
                                            "cwd": str(tmp_path)}),
                          env={**os.environ, "MEMSTORE_AGENT_TIME_BUDGET_MS": "30000",
                               "MEMSTORE_AGENT_MIN_SIMILARITY": "0.1"})
    assert proc.returncode == 0, proc.stderr
    assert "retry backoff" in json.loads(proc.stdout)["hookSpecificOutput"]["additionalContext"]
    assert Path(path).stat().st_mode & 0o777 == 0o644
