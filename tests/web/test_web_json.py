"""The page's JSON endpoints give exactly what the CLI's --json gives for the same command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from webtools import make_client

import memstore
from memstore.cli import cli


@pytest.fixture
def same_store(home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A store opened as the CLI opens it (the hash embedder from MEMSTORE_EMBEDDER), outside
    any git repository so the CLI does not scope recall to one."""
    monkeypatch.chdir(tmp_path)
    with memstore.open(home) as store:
        a = store.capture("We chose PostgreSQL for JSONB support", namespace="decisions", tags=["db"],
                          metadata={"ticket": "OPS-12"})
        store.capture("The deploy runs on Fridays only", namespace="ops", tags=["deploy"])
        store.capture("Use ruff for linting, line length 110", namespace="decisions", tags=["tooling"])
        b = store.update(a.id, "We chose PostgreSQL 16 for JSONB support")
        gone = store.capture("an obsolete note", ttl="1y")
        store.forget(gone.id)
        yield store, {"old": a.id, "new": b.id, "gone": gone.id}


def cli_json(home: Path, *args: str) -> Any:
    result = CliRunner().invoke(cli, ["--home", str(home), *args, "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def api_json(client: Any, path: str, **kwargs: Any) -> Any:
    response = client.request(kwargs.pop("method", "GET"), path, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def test_read_endpoints_match_the_cli(same_store: Any, home: Path, guard: Any) -> None:
    store, ids = same_store
    client = make_client(store, guard)
    pairs = [
        ("/api/recall?q=postgres+jsonb", ["recall", "postgres jsonb"]),
        ("/api/recall?q=deploy&mode=keyword&limit=3", ["recall", "deploy", "--mode", "keyword", "-k", "3"]),
        ("/api/recall?q=linting&namespace=decisions&tag=tooling",
         ["recall", "linting", "-n", "decisions", "-t", "tooling"]),
        ("/api/list", ["list"]),
        ("/api/list?limit=2&offset=1", ["list", "-k", "2", "--offset", "1"]),
        ("/api/list?deleted=1", ["list", "--deleted"]),
        ("/api/list?namespace=decisions,ops&since=2000-01-01", ["list", "-n", "decisions", "-n", "ops",
                                                                "--since", "2000-01-01"]),
        (f"/api/memory/{ids['new']}", ["get", ids["new"]]),
        (f"/api/memory/{ids['old']}/history", ["history", ids["old"]]),
        ("/api/purge", ["purge", "--dry-run"]),
        ("/api/model", ["model"]),
        ("/api/stats", ["stats"]),
    ]
    for path, args in pairs:
        assert api_json(client, path) == cli_json(home, *args), path
    assert [h["id"] for h in api_json(client, "/api/recall?q=postgres+jsonb")][0] == ids["new"]


def test_verify_matches_the_cli(same_store: Any, home: Path, guard: Any) -> None:
    store, _ = same_store
    client = make_client(store, guard)
    assert api_json(client, "/api/verify", method="POST", headers={"x-csrf-token": guard.csrf}) == \
        cli_json(home, "verify")


def _without_times(data: dict[str, Any]) -> dict[str, Any]:
    drop = {"id", "created_at", "updated_at", "content_hash", "supersedes", "expires_at"}
    return {k: v for k, v in data.items() if k not in drop}


def test_write_endpoints_give_the_cli_shapes(same_store: Any, home: Path, guard: Any) -> None:
    store, ids = same_store
    client = make_client(store, guard)
    post = {"method": "POST", "headers": {"x-csrf-token": guard.csrf}}
    web = api_json(client, "/api/capture", json={"text": "captured from the page", "namespace": "web",
                                                 "tags": ["a"], "metadata": {"k": "v"}}, **post)
    cli = cli_json(home, "capture", "captured from the command line", "-n", "web", "-t", "a", "--meta", "k=v")
    assert web.keys() == cli.keys()
    assert _without_times(web) | {"text": None} == _without_times(cli) | {"text": None}
    again = api_json(client, "/api/capture", json={"text": "captured from the page", "namespace": "web"},
                     **post)
    assert again["created"] is False and again["id"] == web["id"]

    updated = api_json(client, f"/api/memory/{web['id']}/update", json={"text": "changed on the page"},
                       **post)
    assert updated.keys() == cli.keys() and updated["supersedes"] == web["id"]
    assert api_json(client, f"/api/memory/{updated['id']}") == cli_json(home, "get", updated["id"])

    forgotten = api_json(client, f"/api/memory/{updated['id']}/forget", **post)
    assert forgotten == cli_json(home, "get", updated["id"]) and forgotten["deleted"] is True
    restored = api_json(client, f"/api/memory/{updated['id']}/restore", **post)
    assert restored == cli_json(home, "get", updated["id"]) and restored["deleted"] is False

    preview = cli_json(home, "purge", "--dry-run")
    purged = api_json(client, "/api/purge", **post)
    assert purged["purged"] == preview["would_purge"] == 1  # the forgotten note and nothing else
    assert {m["id"] for m in purged["memories"]} == {m["id"] for m in preview["memories"]}


def test_library_errors_are_one_line_json(same_store: Any, guard: Any) -> None:
    store, ids = same_store
    client = make_client(store, guard)
    post = {"headers": {"x-csrf-token": guard.csrf}}
    cases = [
        (client.get("/api/memory/NOPE"), 404),
        (client.get("/api/recall?q="), 400),
        (client.get("/api/recall?q=x&mode=fuzzy"), 400),
        (client.get("/api/recall?q=x&since=not-a-time"), 400),
        (client.get("/api/list?limit=abc"), 400),
        (client.post(f"/api/memory/{ids['old']}/update", json={"text": "edit an old version"}, **post), 409),
        (client.post("/api/capture", content=b"{not json", **post), 400),
        (client.post("/api/capture", json={"text": "x", "shell": "rm -rf"}, **post), 400),
        (client.post("/api/capture", json=["text"], **post), 400),
    ]
    for response, status in cases:
        assert response.status_code == status, response.text
        body = response.json()
        assert list(body) == ["error"] and "\n" not in body["error"]
    assert len(store.list(limit=100)) == 3  # nothing changed
