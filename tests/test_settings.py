"""Settings: defaults < config file < environment < arguments, each with its source."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

import memstore
from memstore.cli import cli
from memstore.settings import SETTINGS, load_settings


def test_defaults(monkeypatch):
    monkeypatch.delenv("MEMSTORE_HOME")
    monkeypatch.delenv("MEMSTORE_EMBEDDER")
    s = load_settings()
    assert s["recall.limit"] == 10 and s.sources["recall.limit"] == "default"
    assert s["embedder"] == "auto"


def test_precedence(tmp_path, monkeypatch):
    path = tmp_path / "config.toml"
    path.write_text('default_namespace = "from-file"\n[recall]\nlimit = 7\nmode = "keyword"\n')
    monkeypatch.setenv("MEMSTORE_CONFIG", str(path))
    monkeypatch.setenv("MEMSTORE_RECALL_LIMIT", "3")
    s = load_settings({"recall.mode": "semantic"})
    assert (s["default_namespace"], s.sources["default_namespace"]) == ("from-file", f"file:{path}")
    assert (s["recall.limit"], s.sources["recall.limit"]) == (3, "env:MEMSTORE_RECALL_LIMIT")
    assert (s["recall.mode"], s.sources["recall.mode"]) == ("semantic", "argument")


@pytest.mark.parametrize(
    "content,message",
    [
        ("nonsense = 1\n", "unknown setting"),
        ("[recall]\nlimit = 'many'\n", "must be int"),
        ("[recall]\nmode = 'fuzzy'\n", "must be one of"),
        ("this is not toml", "not valid TOML"),
    ],
)
def test_bad_config_file_is_a_clear_error(tmp_path, monkeypatch, content, message):
    path = tmp_path / "config.toml"
    path.write_text(content)
    monkeypatch.setenv("MEMSTORE_CONFIG", str(path))
    with pytest.raises(memstore.InvalidInputError, match=message):
        load_settings()


def test_store_reads_default_namespace(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMSTORE_DEFAULT_NAMESPACE", "inbox")
    with memstore.open(tmp_path / "s", embedder=memstore.HashEmbedder()) as s:
        assert s.capture("where does this go").namespace == "inbox"


def test_config_command(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMSTORE_RECALL_LIMIT", "4")
    result = CliRunner().invoke(cli, ["config", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert set(data["settings"]) == set(SETTINGS)
    assert data["settings"]["recall.limit"] == {
        "value": 4, "source": "env:MEMSTORE_RECALL_LIMIT", "help": SETTINGS["recall.limit"].help,
    }
    text = CliRunner().invoke(cli, ["config"]).stdout
    assert "recall.limit = 4  (env:MEMSTORE_RECALL_LIMIT)" in text


def test_recall_limit_setting_is_the_cli_default(monkeypatch):
    runner = CliRunner()
    for i in range(6):
        runner.invoke(cli, ["capture", f"memory about kettles number {i}"])
    monkeypatch.setenv("MEMSTORE_RECALL_LIMIT", "2")
    hits = json.loads(runner.invoke(cli, ["recall", "kettles", "--json"]).stdout)
    assert len(hits) == 2
    hits = json.loads(runner.invoke(cli, ["recall", "kettles", "--json", "-k", "5"]).stdout)
    assert len(hits) == 5


def test_get_falls_back_to_the_declared_default():
    from memstore.settings import SETTINGS, Settings

    assert Settings().get("batch_size") == SETTINGS["batch_size"].default == 256
    assert Settings().get("batch_size", 7) == 7
    assert Settings(values={"batch_size": 3}).get("batch_size", 7) == 3
    assert Settings().get("home") is None


def test_only_settings_reads_the_environment():
    import re
    from pathlib import Path

    import memstore

    package = Path(memstore.__file__).parent
    reads = re.compile(r"os\.(environ\.get|getenv)\(|os\.environ\[|environ\.get\(")
    readers = sorted(
        str(path.relative_to(package)) for path in package.rglob("*.py") if reads.search(path.read_text())
    )
    assert readers == ["settings.py"]


def test_paths_follow_the_environment(monkeypatch, tmp_path):
    from memstore import settings

    monkeypatch.setenv("MEMSTORE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MEMSTORE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("MEMSTORE_MODEL_DIR", str(tmp_path / "model"))
    assert settings.home_dir() == tmp_path / "home"
    assert settings.home_dir(tmp_path / "x") == tmp_path / "x"
    assert settings.cache_dir() == tmp_path / "cache"
    assert settings.model_dir_override() == tmp_path / "model"
    assert settings.load_settings(path=tmp_path / "none.toml")["home"] == str(tmp_path / "home")
    monkeypatch.setenv("MEMSTORE_MODEL_DIR", "")
    assert settings.model_dir_override() is None
