"""The documentation runs: docs/python-api.md's code blocks, and a docstring on every public name."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

import memstore

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def test_python_api_doc_runs(tmp_path, monkeypatch, capsys):
    blocks = BLOCK.findall(DOC.read_text(encoding="utf-8"))
    assert len(blocks) >= 5
    monkeypatch.chdir(tmp_path)  # "agent-memory" lands in the tmp dir; the hash embedder is set
    namespace: dict[str, object] = {"__name__": "docs_example"}
    for number, code in enumerate(blocks, start=1):
        try:
            exec(compile(code, f"{DOC.name} block {number}", "exec"), namespace)
        except Exception as exc:  # pragma: no cover - the message names the block
            pytest.fail(f"{DOC.name} block {number} failed: {type(exc).__name__}: {exc}\n{code}")
    out = capsys.readouterr().out
    assert "(nothing known yet)" in out  # the first recall, on an empty store
    assert "Orders use PostgreSQL, not MySQL" in out  # the second task recalled the decision
    assert "not found: 01NOSUCHID" in out and "bad input:" in out and "conflict:" in out
    with memstore.open(tmp_path / "agent-memory") as store:
        assert store.stats()["namespaces"] == {"decisions": 1, "default": 1, "learnings": 1, "ops": 3}


def _public_members(cls: type) -> list[tuple[str, object]]:
    return [(name, getattr(cls, name)) for name, value in vars(cls).items()
            if not name.startswith("_")
            and (callable(value) or isinstance(value, (property, classmethod, staticmethod)))]


@pytest.mark.parametrize("name", [n for n in memstore.__all__ if n != "__version__"])
def test_every_public_name_has_a_docstring(name):
    obj = getattr(memstore, name)
    assert inspect.getdoc(obj), f"memstore.{name} has no docstring"
    if inspect.isclass(obj):
        missing = [attr for attr, member in _public_members(obj) if not inspect.getdoc(member)]
        assert not missing, f"memstore.{name}: no docstring on {', '.join(missing)}"
