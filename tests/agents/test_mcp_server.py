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
TOOLS = {"capture", "recall", "get", "update", "forget", "restore", "history", "list", "stats"}


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
    assert set(props) == {"query", "limit", "namespace", "tags", "since", "until", "mode", "min_similarity",
                          "all_projects"}
    assert recall.input_schema["additionalProperties"] is False  # unknown arguments are refused
    assert set(tools["capture"].input_schema["properties"]) >= {"allow_duplicate", "supersedes", "ttl",
                                                                "expires_at"}
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
    assert bad_limit.content[0].text == "invalid input: limit: input should be greater than or equal to 1"
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
    assert none.is_error and "give text, tags, metadata" in none.content[0].text


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


def _tools() -> dict[str, Any]:
    app = build_server(lambda: None, load_settings())  # type: ignore[arg-type,return-value]

    async def go() -> Any:
        async with Client(app) as client:
            return (await client.list_tools()).tools

    return {t.name: t for t in run(go())}


def test_descriptions_are_dedented_docstrings():
    for tool in _tools().values():
        assert tool.description and tool.description == tool.description.strip()
        assert "\n " not in tool.description, (tool.name, tool.description)


def _declared(schema: dict[str, Any], name: str) -> set[str]:
    """The property names of ``name`` in an output schema (a $defs entry or the top)."""
    node = schema["$defs"][name] if name in schema.get("$defs", {}) else schema
    return set(node["properties"])


def test_output_schemas_declare_every_key_the_results_carry(store):
    tools = _tools()
    old = store.capture("The API rate limit is one hundred requests a minute", tags=["api"])
    store.forget(store.capture("A memory to forget later on").id)
    forgotten = store.list(deleted=True)[0].id
    results = dict(zip(
        ["capture", "recall", "get", "update", "history", "list", "stats", "forget", "restore"],
        call(store,
             ("capture", {"text": "Deploys happen on Tuesdays", "ttl": "7d", "metadata": {"n": 1}}),
             ("recall", {"query": "rate limit requests"}),
             ("get", {"id": old.id}),
             ("update", {"id": old.id, "text": "The API rate limit is five hundred requests a minute"}),
             ("history", {"id": old.id}),
             ("list", {}),
             ("stats", {}),
             ("forget", {"id": old.id}),
             ("restore", {"id": forgotten})),
        strict=True))
    assert not any(r.is_error for r in results.values()), [r.content for r in results.values() if r.is_error]
    for name, result in results.items():
        schema = tools[name].output_schema
        data = result.structured_content
        assert set(data) == set(schema["properties"]) == set(schema["required"]), name
    recall_schema = tools["recall"].output_schema
    assert set(results["recall"].structured_content["hits"][0]) == _declared(recall_schema, "HitOut")
    assert set(results["list"].structured_content["memories"][0]) == _declared(
        tools["list"].output_schema, "MemoryOut")
    assert set(results["history"].structured_content["versions"][0]) == _declared(
        tools["history"].output_schema, "VersionOut")
    assert {"content_hash", "expires_at", "bm25"} <= _declared(recall_schema, "HitOut")


def test_unknown_arguments_are_refused_in_one_line(store):
    unknown, bad_type = call(
        store,
        ("capture", {"text": "Releases are cut on Mondays", "tll": "7d"}),
        ("recall", {"query": "x", "limit": "many"}),
    )
    assert unknown.is_error and bad_type.is_error
    text = unknown.content[0].text
    assert text.startswith("invalid input: unknown argument 'tll' (this tool takes: ")
    assert "ttl" in text and "\n" not in text
    assert bad_type.content[0].text.startswith("invalid input: limit: input should be a valid integer")
    for result in (unknown, bad_type):
        assert "pydantic" not in result.content[0].text and "http" not in result.content[0].text
    assert store.stats()["memories"] == 0


def test_capture_says_plainly_when_a_near_duplicate_is_not_stored(store):
    text = "the staging server restarts every night after the backup job finishes"
    first = store.capture(text)
    refused, forced, superseding = call(
        store,
        ("capture", {"text": text + " again"}),
        ("capture", {"text": text + " again", "allow_duplicate": True}),
        ("capture", {"text": "the staging server restarts every night before the backup job",
                     "supersedes": first.id}),
    )
    data = refused.structured_content
    assert not refused.is_error
    assert data["stored"] is False and data["reason"] == "near-duplicate"
    assert data["near_duplicate_of"] == first.id and data["created"] is False
    assert refused.content[0].text.startswith("not stored: a near-duplicate is already kept")
    assert "allow_duplicate: true" in refused.content[0].text
    assert forced.structured_content["stored"] is True and forced.structured_content["created"] is True
    assert superseding.structured_content["supersedes"] == first.id
    assert store.get(first.id).superseded_by == superseding.structured_content["id"]
    assert superseding.content[0].text.startswith(f"stored (supersedes {first.id})")


def test_capture_with_expiry(store):
    ttl, expires, past = call(
        store,
        ("capture", {"text": "Dana is on call this week", "ttl": "7d"}),
        ("capture", {"text": "The office is closed on the holiday", "expires_at": "2999-01-01"}),
        ("capture", {"text": "Something already over", "expires_at": "2001-01-01"}),
    )
    assert ttl.structured_content["expires_at"] is not None and "(expires " in ttl.content[0].text
    assert expires.structured_content["expires_at"].startswith("2999-01-01")
    assert past.is_error and past.content[0].text.startswith("invalid input:")


def test_restore_and_history(store):
    old = store.capture("Backups run at midnight")
    new = store.update(old.id, "Backups run at one in the morning")
    store.forget(new.id)
    restored, history, missing = call(
        store, ("restore", {"id": new.id}), ("history", {"id": old.id}), ("history", {"id": "01NOPE"}),
    )
    assert restored.structured_content["deleted"] is False and store.get(new.id).deleted is False
    assert restored.content[0].text.startswith(f"restored {new.id}")
    versions = history.structured_content["versions"]
    assert [(v["id"], v["status"]) for v in versions] == [(old.id, "superseded"), (new.id, "current")]
    assert history.content[0].text.startswith(f"v1 superseded: {old.id}")
    assert missing.is_error and missing.content[0].text.startswith("not found:")


def test_recall_min_similarity_leaves_out_weak_hits(store):
    store.capture("the deploy pipeline runs the integration tests first")
    store.capture("lunch is served at noon in the cafeteria")
    everything, floored, bad = call(
        store,
        ("recall", {"query": "deploy pipeline integration tests", "mode": "semantic"}),
        ("recall", {"query": "deploy pipeline integration tests", "mode": "semantic", "min_similarity": 0.5}),
        ("recall", {"query": "x", "min_similarity": 2}),
    )
    sims = [h["similarity"] for h in everything.structured_content["hits"]]
    assert len(sims) == 2 and min(sims) < 0.5 <= max(sims)
    kept = floored.structured_content
    assert kept["min_similarity"] == 0.5 and [h["similarity"] for h in kept["hits"]] == [max(sims)]
    assert bad.is_error and bad.content[0].text.startswith("invalid input: min_similarity:")


def test_values_out_of_range_are_clean_errors(store):
    since, offset = call(
        store,
        ("recall", {"query": "x", "since": "1000000000d"}),
        ("list", {"offset": 10**20}),
    )
    assert since.is_error and since.content[0].text.startswith("invalid input:")
    assert "Error executing tool" not in since.content[0].text
    assert offset.is_error and offset.content[0].text.startswith("invalid input: offset:")


def _stdio(tmp_path: Path) -> StdioServerParameters:
    env = {**os.environ, "MEMSTORE_HOME": str(tmp_path / "store"), "MEMSTORE_EMBEDDER": "hash"}
    return StdioServerParameters(command=sys.executable, args=["-m", "memstore", "mcp"], env=env,
                                 cwd=str(tmp_path))


def test_a_request_nested_too_deep_gets_an_error_reply_over_stdio(tmp_path: Path):
    """The SDK drops a request its parser cannot take (no reply: the host waits for ever);
    the server answers it with an error instead, and keeps serving."""
    from mcp.shared.exceptions import MCPError

    from memstore.agents.mcp_server import MAX_JSON_DEPTH

    deep: dict[str, Any] = {}
    for _ in range(150):
        deep = {"a": deep}

    async def go() -> tuple[Any, Any]:
        async with Client(_stdio(tmp_path), mode="legacy", read_timeout_seconds=60) as client:
            try:
                await client.call_tool("capture", {"text": "deeply nested", "metadata": deep})
            except MCPError as exc:
                refused: Any = exc
            else:
                refused = None
            return refused, await client.call_tool("stats", {})

    refused, stats = run(go())
    assert refused is not None and f"accepts at most {MAX_JSON_DEPTH}" in str(refused)
    assert stats.structured_content["memories"] == 0


def test_depth_scan_finds_the_top_level_id():
    from memstore.agents.mcp_server import _depth_and_id

    line = '{"jsonrpc": "2.0", "params": {"id": 9, "x": [[["]]]"]]]}, "id": "req-1"}'
    assert _depth_and_id(line) == (5, "req-1")
    assert _depth_and_id('{"id": 7, "method": "ping"}') == (1, 7)


def test_sigint_stops_the_server_quietly(tmp_path: Path):
    import signal

    params = _stdio(tmp_path)
    proc = subprocess.Popen([params.command, *params.args], env=params.env, cwd=params.cwd,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    init = ('{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18",'
            '"capabilities":{},"clientInfo":{"name":"t","version":"1"}}}\n')
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(init.encode())
    proc.stdin.flush()
    assert b'"result"' in proc.stdout.readline()  # serving
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert err.decode().strip() == "" and out == b""
