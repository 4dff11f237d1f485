"""The CLI as a user types it (CliRunner), plus one real subprocess run."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from memstore.cli import cli


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args: str, input: str | bytes | None = None, code: int = 0):
        result = runner.invoke(cli, list(args), input=input, catch_exceptions=False)
        assert result.exit_code == code, (result.output, result.stderr)
        return result

    return invoke


def test_transcript(run):
    out = run("capture", "We chose PostgreSQL over MySQL because we need JSONB and partial indexes",
              "-n", "decisions", "-t", "db").stdout
    assert out.startswith("stored ") and "[decisions]" in out and "#db" in out
    out = run("capture", "-n", "learnings",
              input="Flaky CI was a race in the retry backoff of the worker queue\n").stdout
    assert "[learnings]" in out
    hits = json.loads(run("recall", "PostgreSQL JSONB", "--json").stdout)
    assert hits[0]["text"].startswith("We chose PostgreSQL")
    for key in ("id", "text", "score", "keyword_rank", "vector_rank", "similarity"):
        assert key in hits[0]
    text = run("recall", "retry backoff race").stdout
    assert text.lstrip().startswith("1.") and "Flaky CI" in text


def test_cjk_recall(run):
    run("capture", "我们决定使用数据库迁移工具")
    run("capture", "東京の天気は晴れでした")
    run("capture", "We chose PostgreSQL for JSONB support")
    cases = (("数据库迁移", "数据库"), ("迁移", "数据库"), ("天気", "東京"), ("東京 天気", "東京"))
    for query, expected in cases:
        hits = json.loads(run("recall", query, "--mode", "keyword", "--json").stdout)
        assert len(hits) == 1 and expected in hits[0]["text"], query
    assert "東京の天気" in run("recall", "天気").stdout.splitlines()[1]


def test_stdin_newline_is_not_part_of_the_memory(run):
    data = json.loads(run("capture", "--json", input="hello from stdin\n").stdout)
    assert data["text"] == "hello from stdin"
    again = json.loads(run("capture", "-", "--json", input="hello from stdin").stdout)
    assert again["id"] == data["id"] and again["created"] is False


def test_get_list_forget_purge(run):
    m = json.loads(run("capture", "remember the milk", "--meta", "shop=corner", "--json").stdout)
    got = run("get", m["id"]).stdout
    assert "remember the milk" in got and "shop: corner" in got
    assert json.loads(run("get", m["id"], "--json").stdout)["metadata"] == {"shop": "corner"}
    listed = json.loads(run("list", "--json").stdout)
    assert [x["id"] for x in listed] == [m["id"]]
    assert run("forget", m["id"]).stdout.strip() == f"forgot {m['id']}"
    assert json.loads(run("list", "--json").stdout) == []
    assert [x["id"] for x in json.loads(run("list", "--deleted", "--json").stdout)] == [m["id"]]
    assert "would purge 1" in run("purge", "--dry-run").stdout
    assert json.loads(run("purge", "--json").stdout)["purged"] == 1
    run("get", m["id"], code=1)


def test_errors_are_one_line_and_change_nothing(run):
    for args, stdin in [
        (("capture", ""), None),
        (("capture",), b"\xff\xfe not utf-8"),
        (("capture",), b"nul\x00byte"),
        (("capture", "x" * 70_000), None),
        (("get", "NOPE"), None),
        (("forget", "NOPE"), None),
        (("recall", "x", "--since", "someday"), None),
    ]:
        result = run(*args, input=stdin, code=1)
        assert result.stderr.startswith("Error: ")
        assert result.stderr.count("\n") == 1
    assert json.loads(run("stats", "--json").stdout)["memories"] == 0


def test_usage_errors_exit_2(run):
    run("recall", code=2)
    run("recall", "x", "--mode", "fuzzy", code=2)
    run("recall", "x", "-k", "0", code=2)
    run("capture", "x", "--meta", "novalue", code=2)
    run("nonsense", code=2)


def test_home_option(run, tmp_path):
    home = tmp_path / "elsewhere"
    run("--home", str(home), "capture", "in another home")
    assert (home / "memstore.db").exists()
    assert json.loads(run("--home", str(home), "path", "--json").stdout)["home"] == str(home)
    assert json.loads(run("stats", "--json").stdout)["memories"] == 0


def test_import_stats_reindex_model(run, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text('{"text": "one"}\n{"text": "two", "namespace": "n"}\n')
    first = json.loads(run("import", str(path), "--json").stdout)
    assert (first["format"], first["read"], first["created"], first["unchanged"]) == ("jsonl", 2, 2, 0)
    assert json.loads(run("import", str(path), "--json").stdout)["unchanged"] == 2
    stats = json.loads(run("stats", "--json").stdout)
    assert stats["memories"] == 2 and stats["namespaces"] == {"default": 1, "n": 1}
    assert "memories:" in run("stats").stdout
    assert json.loads(run("reindex", "--json").stdout)["indexed"] == 2
    info = json.loads(run("model", "--json").stdout)
    assert info["backend"] == "hash" and info["dimension"] == 384
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"text": ""}\n')
    assert "line 2" in run("import", str(bad), code=1).stderr
    assert json.loads(run("stats", "--json").stdout)["memories"] == 2


def test_help_everywhere(run):
    for command in ("capture", "recall", "get", "list", "forget", "purge", "stats", "reindex",
                    "import", "model", "path"):
        assert "Usage:" in run(command, "--help").stdout


@pytest.mark.real_model
def test_python_m_memstore_real_model(tmp_path, model_cache):
    env = {"MEMSTORE_HOME": str(tmp_path / "h"), "MEMSTORE_CACHE_DIR": str(model_cache),
           "MEMSTORE_QUERY_WORKER_IDLE_SECONDS": "0",
           "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    def memstore(*args: str, input: str | None = None) -> str:
        out = subprocess.run([sys.executable, "-m", "memstore", *args], input=input, env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        return out.stdout
    memstore("capture", "We chose PostgreSQL over MySQL because we need JSONB and partial indexes",
             "-n", "decisions", "-t", "db")
    memstore("capture", "-n", "learnings",
             input="Flaky CI was a race in the retry backoff of the worker queue\n")
    memstore("capture", "The office plants need watering every Tuesday")
    first = memstore("recall", "which database did we pick and why").splitlines()[1]
    assert "PostgreSQL" in first
    hits = json.loads(memstore("recall", "why were the tests unstable", "--json"))
    assert hits[0]["text"].startswith("Flaky CI")
    assert json.loads(memstore("model", "--json"))["source"] == "bundled"
