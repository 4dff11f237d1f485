"""The CLI and the Python API on a team store: the README's commands with --db, authors,
no password ever printed, and export/import lossless in both directions between backends."""

from __future__ import annotations

import io
import json

import pytest
from click.testing import CliRunner

import memstore
from memstore.cli import cli
from memstore.embedding.hash import HashEmbedder

SECRET = "s3cret-pw"


@pytest.fixture
def url(postgres_url: str) -> str:
    """The test database's URL with a password in it (the test server trusts local users)."""
    return postgres_url.replace("postgresql://postgres:@", f"postgresql://postgres:{SECRET}@")


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, code: int = 0, env: dict | None = None):
        result = runner.invoke(cli, list(args), input=input, catch_exceptions=False, env=env)
        assert result.exit_code == code, (result.output, result.stderr)
        assert SECRET not in result.output and SECRET not in result.stderr
        return result

    return invoke


def test_readme_commands_on_a_team_store(run, url, monkeypatch):
    monkeypatch.setenv("MEMSTORE_USER_NAME", "alice@example.com")
    out = run("--db", url, "capture", "We pin numpy below 3 until the ABI settles", "-n", "decisions").stdout
    assert out.startswith("stored ")
    monkeypatch.setenv("MEMSTORE_USER_NAME", "bob@example.com")
    run("--db", url, "capture", "Bob prefers numpy arrays over lists")
    hits = json.loads(run("--db", url, "recall", "why is numpy pinned", "--json").stdout)
    assert hits[0]["text"].startswith("We pin numpy") and hits[0]["author"] == "alice@example.com"
    only_bob = json.loads(run("--db", url, "recall", "numpy", "--author", "bob@example.com", "--json").stdout)
    assert [h["text"] for h in only_bob] == ["Bob prefers numpy arrays over lists"]
    listed = json.loads(run("--db", url, "list", "--author", "alice@example.com", "--json").stdout)
    assert [m["author"] for m in listed] == ["alice@example.com"]
    assert "postgres:***@" in run("--db", url, "path").stdout
    monkeypatch.setenv("MEMSTORE_DATABASE_URL", url)
    config = run("config").stdout
    assert "database_url = 'postgresql://postgres:***@" in config
    stats = json.loads(run("stats", "--json").stdout)
    assert stats["memories"] == 2 and "***" in stats["database"]
    assert json.loads(run("verify", "--json").stdout)["ok"] is True
    for command in (["stats"], ["verify"], ["reindex"], ["purge", "--dry-run"], ["export"]):
        run(*command)  # the text output of every maintenance command works on a team store


def test_server_down_is_one_line_and_exit_1(run, tmp_path):
    result = run("--db", f"postgresql://alice:{SECRET}@/memories?host={tmp_path}", "recall", "x", code=1)
    assert result.stderr.count("\n") == 1 and "cannot connect to PostgreSQL" in result.stderr


def _export(store) -> list[dict]:
    buf = io.StringIO()
    store.export_jsonl(buf, with_vectors=True)
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_export_import_is_lossless_between_backends_both_ways(tmp_path, postgres_url):
    with memstore.open(tmp_path / "personal", embedder=HashEmbedder()) as personal:
        first = personal.capture("We chose PostgreSQL", namespace="decisions", tags=["db"],
                                 metadata={"ticket": "OPS-12", "n": 1.5e16}, project="infra")
        personal.update(first.id, text="We chose PostgreSQL 18")
        gone = personal.capture("an old note")
        personal.forget(gone.id)
        personal.capture("東京の天気は晴れです", ttl="30d")
        original = _export(personal)
    with memstore.open(postgres_url, embedder=HashEmbedder()) as team:
        team.import_jsonl(io.StringIO("\n".join(json.dumps(r) for r in original)))
        via_team = _export(team)
        assert team.recall("天気", mode="keyword")[0].memory.text == "東京の天気は晴れです"
    with memstore.open(tmp_path / "back", embedder=HashEmbedder()) as back:
        back.import_jsonl(io.StringIO("\n".join(json.dumps(r) for r in via_team)))
        again = _export(back)
    assert via_team[1:] == original[1:] and again[1:] == original[1:]  # [0]: the header line


def test_a_pooled_store_shared_by_threads(postgres_url):
    """A long-lived process (MCP server, web page) keeps a pool; threads capture and recall."""
    import threading

    from memstore.store import open_store

    errors: list[BaseException] = []
    with open_store(postgres_url, embedder=HashEmbedder(), pool_size=2) as store:
        def work(k: int) -> None:
            try:
                for i in range(10):
                    store.capture(f"thread {k} wrote note number {i}", allow_duplicate=True)
                    assert store.recall(f"thread {k} note", limit=3)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors, errors
        assert store.stats()["memories"] == 40


class _Hash8(HashEmbedder):
    """Another model, of another size: what reindex is for."""

    model_id = "hash-test:8"
    dimension = 8


def test_reindex_to_a_model_of_another_size(postgres_url):
    with memstore.open(postgres_url, embedder=HashEmbedder()) as store:
        store.capture_many(["the deploy runs nightly", "lunch is at noon"])
    with memstore.open(postgres_url, embedder=_Hash8()) as store:
        result = store.reindex(force=True)
        assert (result["embedded"], result["indexed"]) == (2, 2)
        assert store.stats()["embeddings"] == {"hash-test:8": 2}
        assert store.recall("deploy nightly", mode="semantic")[0].memory.text == "the deploy runs nightly"
        assert store.verify().ok
