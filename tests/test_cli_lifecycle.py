"""The lifecycle commands as a user types them: update, history, restore, export/import,
capture --ttl/--supersedes/--allow-duplicate, list --expired, purge --dry-run."""

from __future__ import annotations

import json

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


def capture(run, *args: str) -> dict:
    return json.loads(run("capture", *args, "--json").stdout)


def test_update_and_history(run):
    m = capture(run, "The build uses Make", "-t", "build")
    out = run("update", m["id"], "The build uses Bazel now").stdout
    assert out.startswith(f"updated {m['id']} -> ") and "#build" in out
    new = json.loads(run("update", json.loads(run("list", "--json").stdout)[0]["id"], "-t", "ci",
                         "--meta", "by=me", "--json").stdout)
    assert (new["tags"], new["metadata"]) == (["ci"], {"by": "me"})
    assert new["text"] == "The build uses Bazel now"
    hist = json.loads(run("history", m["id"], "--json").stdout)
    assert [v["status"] for v in hist] == ["superseded", "superseded", "current"]
    assert hist[-1]["id"] == new["id"]
    text = run("history", new["id"]).stdout
    assert text.count("\n") == 6 and "*v3 current" in text and "The build uses Make" in text
    assert json.loads(run("recall", "build", "--json").stdout)[0]["id"] == new["id"]


def test_update_errors(run):
    m = capture(run, "something to update")
    assert "nothing to update" in run("update", m["id"], code=2).stderr
    assert "contradict" in run("update", m["id"], "-t", "a", "--no-tags", code=2).stderr
    assert "one of --ttl" in run("update", m["id"], "--ttl", "1d", "--no-expiry", code=2).stderr
    run("update", m["id"], "new words")
    err = run("update", m["id"], "newer words", code=1).stderr
    assert "old version" in err and "current version is" in err
    assert "no memory with id" in run("update", "01NOSUCHID", "x", code=1).stderr
    current = json.loads(run("list", "--json").stdout)[0]["id"]
    assert run("update", current, "new words").stdout.startswith("unchanged")


def test_update_from_stdin_and_clearing(run):
    m = capture(run, "note", "-t", "x", "--meta", "k=v", "--ttl", "3d")
    new = json.loads(run("update", m["id"], "-", "--no-tags", "--no-meta", "--no-expiry", "--json",
                         input="note from stdin\n").stdout)
    assert (new["text"], new["tags"], new["metadata"], new["expires_at"]) == ("note from stdin", [], {}, None)


def test_capture_supersedes_ttl_and_expiry_display(run):
    m = capture(run, "Lunch is at noon", "-n", "office", "--ttl", "7d")
    assert m["expires_at"] is not None
    assert "(expires " in run("get", m["id"]).stdout.splitlines()[0]
    assert "expires: " in run("get", m["id"]).stdout
    new = capture(run, "Lunch is at 12:30", "--supersedes", m["id"])
    assert new["supersedes"] == m["id"] and new["namespace"] == "office"
    assert f"supersedes: {m['id']}" in run("get", new["id"]).stdout
    assert f"superseded by: {new['id']}" in run("get", m["id"]).stdout
    assert "in the past" in run("capture", "x", "--expires", "2001-01-01", code=1).stderr
    assert "invalid duration" in run("capture", "x", "--ttl", "forever", code=1).stderr


def test_capture_near_duplicate_and_allow(run):
    first = capture(run, "Use ruff for linting the Python code")
    result = run("capture", "use RUFF for linting, the python code!", code=3)  # not stored: its own status
    assert result.stdout.startswith("similar memory already stored (cosine 1.000)")
    assert first["id"] in result.stdout and "--allow-duplicate" in result.stderr
    data = json.loads(run("capture", "use RUFF for linting, the python code!", "--json", code=3).stdout)
    assert data["near_duplicate_of"] == first["id"] and data["created"] is False
    assert data["stored"] is False and data["reason"] == "near-duplicate"
    again = capture(run, "Use ruff for linting the Python code")  # exact: already stored, status 0
    assert again["stored"] is True and again["created"] is False and again["reason"] is None
    forced = capture(run, "use RUFF for linting, the python code!", "--allow-duplicate")
    assert forced["created"] and forced["id"] != first["id"]


def test_forget_restore_purge_and_expired(run, tmp_path):
    a = capture(run, "forget then restore")
    b = capture(run, "forget then purge")
    run("forget", a["id"])
    run("forget", b["id"])
    assert run("restore", a["id"]).stdout.startswith(f"restored {a['id']}")
    assert json.loads(run("restore", a["id"], "--json").stdout)["deleted"] is False
    assert [m["id"] for m in json.loads(run("list", "--json").stdout)] == [a["id"]]
    dry = run("purge", "--dry-run").stdout
    assert "forgotten" in dry and b["id"] in dry and "would purge 1 memories" in dry
    data = json.loads(run("purge", "--dry-run", "--json").stdout)
    assert data["would_purge"] == 1 and data["memories"][0]["reason"] == "forgotten"
    assert json.loads(run("purge", "--yes", "--json").stdout)["purged"] == 1
    assert "no memory with id" in run("restore", b["id"], code=1).stderr
    assert json.loads(run("list", "--expired", "--json").stdout) == []


def test_export_import_round_trip(run, tmp_path):
    m = capture(run, "We chose PostgreSQL for JSONB", "-n", "decisions", "-t", "db", "--meta", "t=1")
    run("update", m["id"], "We chose PostgreSQL 16 for JSONB")
    gone = capture(run, "forgotten memory")
    run("forget", gone["id"])
    exported = run("export")
    assert "exported 3 memories" in exported.stderr
    lines = exported.stdout.splitlines()
    assert json.loads(lines[0])["format"] == "memstore-export" and len(lines) == 4
    path = tmp_path / "out.jsonl"
    assert json.loads(run("export", "-o", str(path), "--with-vectors", "--json").stdout) == {
        "exported": 3, "file": str(path),
    }
    assert "needs -o" in run("export", "--json", code=2).stderr
    other = tmp_path / "other-home"
    result = json.loads(run("--home", str(other), "import", str(path), "--json").stdout)
    assert (result["format"], result["created"], result["embedded"]) == ("memstore-export", 3, 0)
    again = run("--home", str(other), "import", str(path)).stdout
    assert "stored 0, already present 3" in again
    assert json.loads(run("--home", str(other), "history", m["id"], "--json").stdout)[1]["text"] == (
        "We chose PostgreSQL 16 for JSONB"
    )
    via_stdin = tmp_path / "third"
    out = json.loads(run("--home", str(via_stdin), "import", "-", "--json", input=exported.stdout).stdout)
    assert out["created"] == 3
    deleted = json.loads(run("--home", str(via_stdin), "list", "--deleted", "--json").stdout)
    assert deleted[0]["id"] == gone["id"]
