"""Agent lifecycle hooks: context within budget, ids, never breaking the agent, in time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from gitrepo import GitRepo, isolate_git

import memstore
from memstore.agents import hooks as agent_hooks
from memstore.agents.hooks import log_path, project_scope, render_context, run_hook
from memstore.cli import cli
from memstore.embedding import HashEmbedder
from memstore.errors import StoreError
from memstore.settings import load_settings
from memstore.timeutil import now


@pytest.fixture
def git_env(tmp_path, monkeypatch):
    isolate_git(tmp_path, monkeypatch)


def event(name: str, **fields: Any) -> str:
    base = {"session_id": "s-1", "transcript_path": "/tmp/t.jsonl", "cwd": fields.pop("cwd", None),
            "hook_event_name": name}
    return json.dumps({**base, **fields})


def settings(**values: Any):
    """Hybrid recall, and a similarity floor for the hash embedder (its cosines are word
    overlap: 0.2 where the model would say 0.5)."""
    return load_settings({"agent.recall_mode": "hybrid", "agent.min_similarity": 0.1, **values})


def hook(store: memstore.MemoryStore, name: str, raw: str | bytes, **values: Any):
    return run_hook(name, raw, settings=settings(**values), opener=lambda _s: store)


@pytest.fixture
def filled(store: memstore.MemoryStore) -> memstore.MemoryStore:
    store.capture("We chose PostgreSQL over MySQL for JSONB and partial indexes",
                  namespace="decisions", tags=["db"])
    store.capture("The flaky CI was a race in the retry backoff of the worker queue",
                  namespace="learnings")
    store.capture("Release builds are signed with the hardware key kept by the release manager",
                  namespace="ops", tags=["release"])
    return store


def test_prompt_hook_injects_relevant_memories_with_ids(filled):
    result = hook(filled, "prompt", event("UserPromptSubmit", prompt="why is the CI flaky again?"))
    assert result.error is None and result.recall_mode == "hybrid"
    out = result.output["hookSpecificOutput"]
    assert out["hookEventName"] == "UserPromptSubmit"
    context = out["additionalContext"]
    assert "retry backoff" in context and "PostgreSQL" not in context
    (memory_id,) = result.memory_ids
    assert f"- {memory_id} (learnings, " in context
    assert "`get`" in context.splitlines()[0]  # tells the agent how to read more


def test_prompt_hook_says_nothing_when_nothing_is_relevant(filled):
    for prompt in ("thanks, looks good", "   "):
        result = hook(filled, "prompt", event("UserPromptSubmit", prompt=prompt))
        assert result.output is None and result.error is None and result.context == ""


def test_hits_below_the_similarity_floor_are_left_out(filled):
    prompt = event("UserPromptSubmit", prompt="why is the CI flaky again?")
    assert hook(filled, "prompt", prompt, **{"agent.min_similarity": 0.15}).memory_ids
    assert hook(filled, "prompt", prompt, **{"agent.min_similarity": 0.5}).output is None


def test_keyword_fallback_keeps_only_strong_matches(store):
    store.capture("the deploy pipeline deploys the pipeline of deploys")
    store.capture("a note that mentions deploy once among many other unrelated words here")
    result = hook(store, "prompt", event("UserPromptSubmit", prompt="deploy pipeline"),
                  **{"agent.recall_mode": "keyword"})
    assert result.context.count("\n- ") == 1 and "pipeline of deploys" in result.context


def test_session_start_shows_project_and_recent_memories(store, tmp_path, git_env):
    repo = GitRepo(tmp_path / "billing-service", remote="https://github.com/acme/billing-service.git")
    (repo.path / "src").mkdir()
    project = "github.com/acme/billing-service"
    store.capture("billing-service retries card charges three times before giving up",
                  namespace="decisions", project=project)
    store.capture("Nightly backups run at 02:00 UTC")  # no project: shown everywhere
    store.capture("The billing-service of the other team is written in Go",
                  project="github.com/other/billing-service")
    result = hook(store, "session-start",
                  event("SessionStart", source="startup", cwd=str(repo.path / "src")))
    context = result.output["hookSpecificOutput"]["additionalContext"]
    assert result.output["hookSpecificOutput"]["hookEventName"] == "SessionStart"
    lines = context.splitlines()
    assert lines[0].startswith("Memories from memstore for billing-service")
    assert lines[1] == "About this project:" and "retries card charges" in lines[2]
    assert lines[3] == "Most recent:" and "Nightly backups" in lines[4]
    assert len(result.memory_ids) == 2  # each memory once, though it is also recent
    assert "other team" not in context  # another project's memory stays out


def test_prompt_hook_keeps_to_the_project(store, tmp_path, git_env):
    repo = GitRepo(tmp_path / "shop", remote="git@github.com:acme/shop.git")
    store.capture("Flaky CI in shop was a race in the retry backoff", project="github.com/acme/shop")
    store.capture("Flaky CI in the blog was a stale cache", project="github.com/acme/blog")
    result = hook(store, "prompt", event("UserPromptSubmit", prompt="flaky CI", cwd=str(repo.path)))
    assert "retry backoff" in result.context and "stale cache" not in result.context
    outside = hook(store, "prompt", event("UserPromptSubmit", prompt="flaky CI", cwd=str(tmp_path)))
    assert "retry backoff" in outside.context and "stale cache" in outside.context


def test_session_start_on_an_empty_store_says_nothing(store, tmp_path):
    result = hook(store, "session-start", event("SessionStart", source="startup", cwd=str(tmp_path)))
    assert result.output is None and result.error is None


@pytest.mark.parametrize("budget", [200, 500, 2000])
def test_context_never_exceeds_the_budget(store, budget):
    store.capture_many([f"note {i} about the deploy pipeline: " + "stage and verify " * 40
                        for i in range(30)])
    result = hook(store, "prompt", event("UserPromptSubmit", prompt="deploy pipeline"),
                  **{"agent.context_chars": budget, "agent.recall_mode": "keyword"})
    context = result.output["hookSpecificOutput"]["additionalContext"]
    assert len(context) <= budget
    assert result.memory_ids and all(i in context for i in result.memory_ids)
    assert context.count("\n- ") == len(result.memory_ids)


def test_default_budget_is_about_two_thousand_characters(store):
    assert load_settings()["agent.context_chars"] == 2000
    store.capture_many([f"deploy runbook step {i}: " + "check the dashboards " * 20 for i in range(20)])
    result = run_hook("prompt", event("UserPromptSubmit", prompt="deploy runbook"),
                      opener=lambda _s: store, overrides={"agent.recall_mode": "keyword"})
    assert 1500 < len(result.context) <= 2000


def test_render_context_shortens_the_last_memory_to_fit():
    long = memstore.Memory(
        id="01ABC", text="word " * 500, namespace="n", tags=(), source=None, metadata={},
        content_hash="h", created_at=now(), updated_at=now(),
    )
    text, ids = render_context("header", [(None, [long])], 300)
    assert ids == ["01ABC"] and len(text) <= 300 and text.endswith("…")
    assert render_context("header", [(None, [long])], 40) == ("", [])


@pytest.mark.parametrize("raw", [b"", b"   \n", b"not json", b"[1, 2]", b"\xff\xfe",
                                 json.dumps({"hook_event_name": "SessionStart", "prompt": "x"}).encode(),
                                 json.dumps({"hook_event_name": "UserPromptSubmit"}).encode(),
                                 json.dumps({"hook_event_name": "UserPromptSubmit", "prompt": 3}).encode()])
def test_bad_input_gives_no_context_and_a_logged_error(filled, raw):
    result = hook(filled, "prompt", raw)
    assert result.output is None and result.error
    log = log_path(settings()).read_text()
    assert log.strip().splitlines()[-1].endswith(" ".join(result.error.split()))
    assert " prompt: " in log


def test_a_broken_store_gives_no_context_and_a_logged_error():
    def broken(_settings):
        raise StoreError("database disk image is malformed")

    result = run_hook("session-start", event("SessionStart"), opener=broken)
    assert result.output is None and result.error == "database disk image is malformed"
    assert "session-start: database disk image is malformed" in log_path(load_settings()).read_text()


def test_a_bad_setting_gives_no_context_and_a_logged_error(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMSTORE_AGENT_CONTEXT_CHARS", "ten")
    result = run_hook("prompt", event("UserPromptSubmit", prompt="x"))
    assert result.output is None and "agent.context_chars" in result.error
    monkeypatch.setenv("MEMSTORE_AGENT_CONTEXT_CHARS", "50")
    result = run_hook("prompt", event("UserPromptSubmit", prompt="x"))
    assert result.output is None and "at least 200" in result.error


def test_a_long_prompt_is_clipped_not_refused(filled):
    prompt = "why is the CI flaky? " + "é" * 20_000
    result = hook(filled, "prompt", event("UserPromptSubmit", prompt=prompt))
    assert result.error is None and "retry backoff" in result.context


class SlowEmbedder(HashEmbedder):
    """The hash embedder, with a query embedding that takes as long as a cold model load."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self.done = threading.Event()

    def embed_query(self, text: str):
        time.sleep(self.delay)
        self.done.set()
        return super().embed_query(text)


class BrokenEmbedder(HashEmbedder):
    def embed_query(self, text: str):
        raise memstore.ModelError("the model cannot be loaded")


def test_auto_mode_uses_hybrid_when_it_answers_in_time(filled):
    result = run_hook("prompt", event("UserPromptSubmit", prompt="why is the CI flaky?"),
                      settings=settings(**{"agent.recall_mode": "auto", "agent.time_budget_ms": 5000}),
                      opener=lambda _s: filled)
    assert result.recall_mode == "hybrid" and not result.pending and "retry backoff" in result.context


def test_auto_mode_falls_back_to_keyword_when_hybrid_is_late(tmp_path):
    embedder = SlowEmbedder(delay=1.0)
    with memstore.open(tmp_path / "s", embedder=embedder) as store:
        store.capture("The flaky CI was a race in the retry backoff")
        started = time.monotonic()
        result = run_hook("prompt", event("UserPromptSubmit", prompt="flaky CI"),
                          settings=settings(**{"agent.recall_mode": "auto", "agent.time_budget_ms": 100}),
                          opener=lambda _s: store, started=started)
        elapsed = time.monotonic() - started
        assert result.recall_mode == "keyword" and result.pending
        assert "retry backoff" in result.context
        assert elapsed < embedder.delay  # it did not wait for the slow leg
        assert embedder.done.wait(5)  # the worker finishes on its own; closing waits for it


def test_auto_mode_falls_back_to_keyword_when_hybrid_fails(tmp_path):
    with memstore.open(tmp_path / "s", embedder=BrokenEmbedder()) as store:
        store.capture("The flaky CI was a race in the retry backoff")
        result = run_hook("prompt", event("UserPromptSubmit", prompt="flaky CI"),
                          settings=settings(**{"agent.recall_mode": "auto", "agent.time_budget_ms": 5000}),
                          opener=lambda _s: store)
    assert result.recall_mode == "keyword" and not result.pending and result.error is None
    assert "retry backoff" in result.context
    assert "hybrid recall failed, used keyword hits: the model cannot be loaded" in log_path().read_text()


def test_keyword_mode_never_touches_the_model(tmp_path):
    with memstore.open(tmp_path / "s", embedder=HashEmbedder()) as store:
        store.capture("The flaky CI was a race in the retry backoff")
    with memstore.open(tmp_path / "s", embedder=BrokenEmbedder()) as store:
        result = hook(store, "prompt", event("UserPromptSubmit", prompt="flaky CI"),
                      **{"agent.recall_mode": "keyword"})
    assert result.recall_mode == "keyword" and result.error is None and "retry backoff" in result.context


def test_project_scope_follows_git(tmp_path, git_env, monkeypatch):
    repo = GitRepo(tmp_path / "shop", remote="https://github.com/Acme/Shop.git")
    (repo.path / "a" / "b").mkdir(parents=True)
    scope = project_scope(str(repo.path / "a" / "b"))
    assert scope.label == "shop"
    assert scope.filters == {"project": ["github.com/acme/shop", None]}
    assert scope.capture == {"project": "github.com/acme/shop", "branch": "main"}
    plain = tmp_path / "plain"
    plain.mkdir()
    assert project_scope(str(plain)) == agent_hooks.ProjectScope(str(plain), "plain")
    monkeypatch.chdir(repo.path)
    assert project_scope(None).label == "shop"  # hooks run in the project directory


def test_process_started_is_in_the_past():
    assert agent_hooks.process_started() <= time.monotonic()


# -- the command -------------------------------------------------------------------------------
# CliRunner runs in this process: keep --mode explicit there (auto mode may exit the process
# with os._exit when hybrid recall is late); auto mode is tested in a real subprocess below.


def test_cli_prints_the_hook_json(isolated_env, monkeypatch):
    monkeypatch.setenv("MEMSTORE_AGENT_MIN_SIMILARITY", "0.1")  # hash embedder cosines
    with memstore.open() as store:
        store.capture("The flaky CI was a race in the retry backoff")
    runner = CliRunner()
    out = runner.invoke(cli, ["agent-hook", "prompt", "--mode", "keyword"],
                        input=event("UserPromptSubmit", prompt="flaky CI"))
    assert out.exit_code == 0
    data = json.loads(out.stdout)
    assert "retry backoff" in data["hookSpecificOutput"]["additionalContext"]
    small = runner.invoke(cli, ["agent-hook", "prompt", "--mode", "hybrid", "--budget", "200"],
                          input=event("UserPromptSubmit", prompt="flaky CI"))
    assert len(json.loads(small.stdout)["hookSpecificOutput"]["additionalContext"]) <= 200


def test_cli_exits_zero_and_prints_nothing_on_garbage(isolated_env):
    out = CliRunner().invoke(cli, ["agent-hook", "session-start", "--mode", "keyword"], input="{oops")
    assert out.exit_code == 0 and out.stdout == ""
    assert "hook input is not JSON" in (isolated_env / "logs" / "agent-hooks.log").read_text()


def test_cli_in_a_real_process_auto_mode(tmp_path, isolated_env):
    with memstore.open() as store:
        store.capture("The flaky CI was a race in the retry backoff")
    env = {**os.environ, "MEMSTORE_AGENT_TIME_BUDGET_MS": "30000",
           "MEMSTORE_AGENT_MIN_SIMILARITY": "0.1"}
    proc = subprocess.run([sys.executable, "-m", "memstore", "agent-hook", "prompt"],
                          input=event("UserPromptSubmit", prompt="flaky CI"),
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "retry backoff" in json.loads(proc.stdout)["hookSpecificOutput"]["additionalContext"]
    proc = subprocess.run([sys.executable, "-m", "memstore", "agent-hook", "prompt"], input="",
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout == ""


def test_cli_status_shows_the_log(isolated_env):
    CliRunner().invoke(cli, ["agent-hook", "prompt", "--mode", "keyword"], input="")
    out = CliRunner().invoke(cli, ["agent", "status", "--json"])
    assert out.exit_code == 0
    data = json.loads(out.stdout)
    assert Path(data["log"]) == isolated_env / "logs" / "agent-hooks.log"
    assert "no hook input on stdin" in data["log_tail"][-1]
