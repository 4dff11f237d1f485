"""The MCP server: every tool through the SDK's own client, in process and over real stdio."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import memstore
from memstore.errors import StoreError
from memstore.settings import load_settings
from memstore.store import MemoryStore

if not os.environ.get("CI"):  # CI installs the mcp extra; anywhere else, skip without it
    pytest.importorskip("mcp", reason="the mcp extra is not installed")

from gitrepo import GitRepo, isolate_git  # noqa: E402
from mcp import Client, StdioServerParameters  # noqa: E402

from memstore.agents.mcp_server import build_server  # noqa: E402


@pytest.fixture(autouse=True)
def outside_git(tmp_path, monkeypatch):
    """The server scopes to the git project of its working directory: start outside any."""
    monkeypatch.chdir(tmp_path)
TOOLS = {"capture", "recall", "get", "update", "forget", "list", "stats"}


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def call(store: memstore.MemoryStore, *calls: tuple[str, dict[str, Any]]) -> list[Any]:
    """Run tool calls in order against an in-process server bound to ``store``."""
    app = build_server(lambda: store, load_settings())

    async def go() -> list[Any]:
        async with Client(app) as client:
            return [await client.call_tool(name, args) for name, args in calls]

    return run(go())


def test_tools_are_listed_with_typed_schemas_and_hints():
    opened = []
    app = build_server(lambda: opened.append(1), load_settings())  # type: ignore[arg-type,return-value]

    async def go() -> Any:
        async with Client(app) as client:
            return (await client.list_tools()).tools

    tools = {t.name: t for t in run(go())}
    assert set(tools) == TOOLS
    recall = tools["recall"]
    assert recall.input_schema["required"] == ["query"]
    props = recall.input_schema["properties"]
    assert set(props) == {"query", "limit", "namespace", "tags", "since", "until", "mode", "all_projects"}
    assert {"hybrid", "keyword", "semantic"} <= set(props["mode"]["anyOf"][0]["enum"])
    assert recall.output_schema is not None and "hits" in recall.output_schema["properties"]
    assert recall.annotations.read_only_hint is True
    assert tools["forget"].annotations.destructive_hint is True
    assert tools["capture"].annotations.read_only_hint is False
    assert all(t.description for t in tools.values())
    assert opened == []  # listing tools opens nothing


def test_capture_recall_get_forget_list_stats(store):
    results = call(
        store,
        ("capture", {"text": "We chose PostgreSQL for JSONB support", "namespace": "decisions",
                     "tags": ["db"], "metadata": {"ticket": "OPS-12"}}),
        ("capture", {"text": "We chose PostgreSQL for JSONB support", "namespace": "decisions"}),
        ("capture", {"text": "The CI flakiness was a race in the retry backoff"}),
        ("recall", {"query": "PostgreSQL JSONB", "limit": 5, "mode": "keyword"}),
        ("list", {"namespace": "decisions"}),
        ("stats", {}),
    )
    assert not any(r.is_error for r in results)
    first, again, _, recalled, listed, stats = results
    memory = first.structured_content
    assert memory["created"] is True and memory["tags"] == ["db"] and memory["source"] == "mcp"
    assert memory["metadata"] == {"ticket": "OPS-12"}
    assert first.content[0].text.startswith(f"stored {memory['id']} [decisions]")
    assert again.structured_content["created"] is False
    assert again.structured_content["id"] == memory["id"]
    assert again.content[0].text.startswith("already stored")
    hits = recalled.structured_content["hits"]
    assert [h["id"] for h in hits] == [memory["id"]]
    assert hits[0]["keyword_rank"] == 1 and hits[0]["score"] > 0
    assert memory["id"] in recalled.content[0].text and "PostgreSQL" in recalled.content[0].text
    assert [m["id"] for m in listed.structured_content["memories"]] == [memory["id"]]
    assert stats.structured_content["memories"] == 2
    assert "2 memories" in stats.content[0].text

    got, forgot, after = call(
        store, ("get", {"id": memory["id"]}), ("forget", {"id": memory["id"]}),
        ("recall", {"query": "PostgreSQL JSONB", "mode": "keyword"}),
    )
    assert got.structured_content["text"] == "We chose PostgreSQL for JSONB support"
    assert got.content[0].text.endswith("\nWe chose PostgreSQL for JSONB support")
    assert forgot.structured_content["deleted"] is True
    assert after.structured_content["hits"] == [] and after.content[0].text == "no memories found"


def test_recall_filters_and_defaults(store):
    store.capture("deploys go through the staging cluster first", namespace="ops", tags=["deploy"])
    store.capture("deploys of the docs site are manual", namespace="docs")
    scoped, tagged, both, default = call(
        store,
        ("recall", {"query": "deploys", "namespace": "ops"}),
        ("recall", {"query": "deploys", "tags": ["deploy"]}),
        ("recall", {"query": "deploys", "namespace": ["ops", "docs"], "since": "1d"}),
        ("recall", {"query": "deploys"}),
    )
    assert [h["namespace"] for h in scoped.structured_content["hits"]] == ["ops"]
    assert [h["tags"] for h in tagged.structured_content["hits"]] == [["deploy"]]
    assert len(both.structured_content["hits"]) == 2
    assert default.structured_content["mode"] == "hybrid"  # the recall.mode setting's default


def test_inside_a_git_repository_captures_record_the_project_and_recall_keeps_to_it(
        store, tmp_path, monkeypatch):
    isolate_git(tmp_path, monkeypatch)
    repo = GitRepo(tmp_path / "shop", remote="https://github.com/acme/shop.git")
    monkeypatch.chdir(repo.path)
    store.capture("deploys of the blog go through netlify", project="github.com/acme/blog")
    store.capture("deploys need a green CI run")  # no project: recalled everywhere
    captured, scoped, everything, listed = call(
        store,
        ("capture", {"text": "deploys of the shop go through the staging cluster"}),
        ("recall", {"query": "deploys", "mode": "keyword"}),
        ("recall", {"query": "deploys", "mode": "keyword", "all_projects": True}),
        ("list", {}),
    )
    assert captured.structured_content["project"] == "github.com/acme/shop"
    assert captured.structured_content["branch"] == "main"
    assert {h["project"] for h in scoped.structured_content["hits"]} == {"github.com/acme/shop", None}
    assert len(everything.structured_content["hits"]) == 3
    assert len(listed.structured_content["memories"]) == 2


def test_library_errors_become_tool_errors_that_say_what_went_wrong(store):
    missing, bad_since, bad_limit, empty = call(
        store,
        ("get", {"id": "01NOSUCHMEMORY"}),
        ("recall", {"query": "x", "since": "last blue moon"}),
        ("recall", {"query": "x", "limit": 0}),
        ("capture", {"text": "   "}),
    )
    assert all(r.is_error for r in (missing, bad_since, bad_limit, empty))
    assert "not found: no memory with id '01NOSUCHMEMORY'" in missing.content[0].text
    assert "invalid input: invalid since 'last blue moon'" in bad_since.content[0].text
    assert "limit" in bad_limit.content[0].text
    assert "invalid input: text is empty" in empty.content[0].text
    assert store.stats()["memories"] == 0


def test_a_store_that_cannot_open_is_a_tool_error_not_a_crash():
    def broken() -> MemoryStore:
        raise StoreError("store directory /nowhere is not writable")

    app = build_server(broken, load_settings())

    async def go() -> Any:
        async with Client(app) as client:
            first = await client.call_tool("stats", {})
            await client.list_tools()  # the server is still serving
            return first

    result = run(go())
    assert result.is_error
    assert "store error: store directory /nowhere is not writable" in result.content[0].text


def test_update_writes_a_new_version(store):
    old = store.capture("The API rate limit is 100 requests per minute", tags=["api"])
    result, none = call(
        store,
        ("update", {"id": old.id, "text": "The API rate limit is 500 requests per minute"}),
        ("update", {"id": old.id}),
    )
    assert not result.is_error
    new = result.structured_content
    assert new["text"] == "The API rate limit is 500 requests per minute" and new["id"] != old.id
    assert store.get(old.id).superseded_by == new["id"]
    assert none.is_error and "give text, tags or metadata" in none.content[0].text


def test_round_trip_over_real_stdio(tmp_path: Path):
    """The host's view: spawn `memstore mcp`, initialize, list tools, call them."""
    home = tmp_path / "store"
    env = {**os.environ, "MEMSTORE_HOME": str(home), "MEMSTORE_EMBEDDER": "hash"}
    params = StdioServerParameters(command=sys.executable, args=["-m", "memstore", "mcp"], env=env,
                                   cwd=str(tmp_path))

    async def go() -> dict[str, Any]:
        out: dict[str, Any] = {}
        async with Client(params, mode="legacy", read_timeout_seconds=60) as client:
            out["server"] = client.server_info
            out["tools"] = {t.name for t in (await client.list_tools()).tools}
            out["opened_before_first_call"] = home.exists()
            out["capture"] = await client.call_tool(
                "capture", {"text": "Release builds are signed with the hardware key", "tags": ["release"]})
            out["recall"] = await client.call_tool("recall", {"query": "how are release builds signed"})
            out["missing"] = await client.call_tool("forget", {"id": "nope"})
            out["list"] = await client.call_tool("list", {"limit": 5})
        return out

    out = run(go())
    assert out["server"].name == "memstore" and out["server"].version == memstore.__version__
    assert out["tools"] == TOOLS
    assert out["opened_before_first_call"] is False  # the store opens lazily
    memory_id = out["capture"].structured_content["id"]
    assert [h["id"] for h in out["recall"].structured_content["hits"]] == [memory_id]
    assert out["missing"].is_error and "not found" in out["missing"].content[0].text
    assert [m["id"] for m in out["list"].structured_content["memories"]] == [memory_id]
    with memstore.open(home) as store:  # and it is really in the store, closed cleanly
        assert store.get(memory_id).tags == ("release",)


def test_cli_imports_no_mcp_until_asked():
    code = "import sys, memstore.cli; print([m for m in ('mcp', 'pydantic') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_mcp_command_without_the_extra_says_how_to_install_it():
    code = ("import sys; sys.modules['mcp'] = None; sys.argv = ['memstore', 'mcp']; "
            "from memstore.cli import cli; cli()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == 1
    assert "pip install 'memstore[mcp]'" in out.stderr
