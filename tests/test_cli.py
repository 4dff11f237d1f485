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
    lines = [line for line in run("recall", "天気").stdout.splitlines() if "weaker matches" not in line]
    assert "東京の天気" in lines[1]


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
    refused = run("purge", "--json", code=2)  # stdin is not a terminal: it needs --yes
    assert "purge deletes 1 memories for good: pass --yes" in refused.stderr
    assert json.loads(run("purge", "--yes", "--json").stdout)["purged"] == 1
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


def test_recall_list_history_nl_print_one_object_per_line(run):
    first = json.loads(run("capture", "the deploy runs the migrations first", "--json").stdout)
    run("capture", "the deploy pipeline is in the ops repository")
    run("update", first["id"], "the deploy runs the database migrations first")
    for args in (("recall", "deploy"), ("list",), ("history", first["id"])):
        pretty = json.loads(run(*args, "--json").stdout)
        lines = run(*args, "--nl").stdout.splitlines()
        assert len(lines) == len(pretty) == 2, args
        assert [json.loads(line) for line in lines] == pretty


def test_recall_min_similarity_and_the_weak_hits_line(run):
    run("capture", "the deploy pipeline runs the integration tests first")
    run("capture", "lunch is served at noon in the cafeteria")
    query = "deploy pipeline integration tests"
    hits = json.loads(run("recall", query, "--mode", "semantic", "--json").stdout)
    sims = sorted(h["similarity"] for h in hits)
    assert sims[0] < 0.3 <= sims[1]
    out = run("recall", "deploy pipeline integration tests", "--mode", "semantic").stdout.splitlines()
    marker = [i for i, line in enumerate(out) if "weaker matches (cosine below 0.3" in line]
    assert len(marker) == 1 and out[marker[0] - 2].lstrip().startswith("1.")
    assert out[marker[0] + 1].lstrip().startswith("2.") and "lunch" in out[marker[0] + 2]
    floored = json.loads(run("recall", "deploy pipeline integration tests", "--mode", "semantic",
                             "--min-similarity", "0.3", "--json").stdout)
    assert [h["similarity"] for h in floored] == [sims[1]]
    assert "weaker" not in run("recall", "deploy", "--mode", "keyword").stdout
    run("recall", "x", "--min-similarity", "2", code=2)


def test_meta_json_gives_typed_values(run):
    m = json.loads(run("capture", "a typed memory", "--meta-json", '{"n": 5, "ok": true}', "--meta", "s=5",
                       "--json").stdout)
    assert m["metadata"] == {"n": 5, "ok": True, "s": "5"}
    new = json.loads(run("update", m["id"], "--meta-json", '{"n": 6}', "--json").stdout)
    assert new["metadata"] == {"n": 6}
    assert "must be a JSON object" in run("capture", "x", "--meta-json", "[1]", code=2).stderr
    assert "not JSON" in run("capture", "x", "--meta-json", "{n: 1}", code=2).stderr


def test_config_shows_the_resolved_home(run, monkeypatch):
    from memstore.settings import home_dir

    monkeypatch.delenv("MEMSTORE_HOME")
    out = run("config").stdout
    assert f"home = {str(home_dir(None))!r}  (default: platform data dir)" in out
    data = json.loads(run("config", "--json").stdout)
    assert data["settings"]["home"]["value"] == str(home_dir(None))


def _commands(group, prefix=()):
    import click

    for name, command in group.commands.items():
        yield (*prefix, name), command
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))


def test_help_summaries_are_whole_sentences_and_main_commands_have_examples(run):
    import click

    for path, command in [((), cli), *_commands(cli)]:
        if isinstance(command, click.Group):
            out = CliRunner().invoke(cli, [*path, "--help"], terminal_width=80).stdout
            listed = out.split("Commands:", 1)[1]
            assert "..." not in listed, (path, listed)
    for name in ("capture", "recall", "list", "purge", "import", "export", "update"):
        assert "Examples:" in run(name, "--help").stdout, name
    assert "Exit status" in run("--help").stdout and "_MEMSTORE_COMPLETE" in run("--help").stdout


def test_purge_asks_on_a_terminal(tmp_path):
    """On a terminal purge lists what would go and asks; "n" keeps everything."""
    import os
    import pty

    import memstore

    home = tmp_path / "store"
    with memstore.open(home, embedder=memstore.HashEmbedder()) as store:
        store.forget(store.capture("to be purged maybe").id)
    env = {**os.environ, "MEMSTORE_HOME": str(home)}
    for answer, expected, remaining in ((b"n\n", b"nothing purged", 1), (b"y\n", b"purged 1 memories", 0)):
        pid, fd = pty.fork()
        if pid == 0:  # the child: memstore on the pty
            os.execve(sys.executable, [sys.executable, "-m", "memstore", "purge"], env)
        out = b""
        while b"[y/N]" not in out:
            out += os.read(fd, 1024)
        assert b"to be purged maybe" in out and b"Delete these 1 memories for good?" in out
        os.write(fd, answer)
        while True:
            try:
                chunk = os.read(fd, 1024)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        os.waitpid(pid, 0)
        assert expected in out
        with memstore.open(home, embedder=memstore.HashEmbedder()) as store:
            assert len(store.list(deleted=True)) == remaining


def test_an_embedder_that_cannot_be_had_refuses_the_capture(run, tmp_path, monkeypatch):
    """A chosen backend that is missing stores nothing (it used to store memories without
    vectors and exit 0)."""
    monkeypatch.setenv("MEMSTORE_EMBEDDER", "fastembed")
    monkeypatch.setenv("MEMSTORE_MODEL_DIR", str(tmp_path / "no-such-model"))
    err = run("capture", "stored only with a vector", code=1).stderr
    assert err.startswith("Error: not stored: model directory") and "does not exist" in err
    run("import", "-", input='{"text": "imported only with a vector"}\n', code=1)
    monkeypatch.setenv("MEMSTORE_EMBEDDER", "hash")
    monkeypatch.delenv("MEMSTORE_MODEL_DIR")
    assert json.loads(run("list", "--json").stdout) == []


def test_import_reports_progress_without_a_terminal_and_leaves_the_index_built(run, tmp_path):
    path = tmp_path / "notes.jsonl"
    path.write_text("".join(json.dumps({"text": f"imported note {i} about topic {i % 7}"}) + "\n"
                            for i in range(40)))
    before = json.loads(run("stats", "--json").stdout)["index"]
    assert before["up_to_date"] is True and before["stored_vectors"] == 0
    result = run("import", str(path))
    assert "memstore: importing: 40/40 (100%)" in result.stderr  # stderr is not a terminal here
    assert result.stdout.strip() == (
        "read 40, stored 40, already present 0; vector index up to date (40 vectors)")
    index = json.loads(run("stats", "--json").stdout)["index"]
    assert index["vectors"] == index["stored_vectors"] == 40 and index["up_to_date"] is True
    assert "the saved index holds 40 (up to date)" in run("stats").stdout
    run("capture", "one more after the import")
    index = json.loads(run("stats", "--json").stdout)["index"]
    assert index["stored_vectors"] == 41 and index["up_to_date"] is False  # the truth: behind by one
    assert "behind the database" in run("stats").stdout
