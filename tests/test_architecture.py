"""The architecture holds: the import-linter contracts in pyproject.toml pass, there are no import
cycles inside memstore, and both checks catch a violation planted in a copy of the package.

Each check runs in a subprocess on a source tree (this checkout, or a copy of it with one bad
import added), so the graph is built from those files and not from modules already imported.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

LINT = (
    "import sys; from importlinter.cli import lint_imports; "
    "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True, no_logo=True))"
)

#: Prints every import cycle among memstore's modules as "a -> b -> ... -> a", one per line.
CYCLES = """
import grimp
graph = grimp.build_graph("memstore", cache_dir=None)
seen = set()
for module in sorted(graph.modules):
    for imported in sorted(graph.find_modules_directly_imported_by(module)):
        if not imported.startswith("memstore") or imported == module:
            continue
        back = graph.find_shortest_chain(importer=imported, imported=module)
        if back is not None:
            cycle = (module, *back)
            key = frozenset(cycle)
            if key not in seen:
                seen.add(key)
                print(" -> ".join(cycle))
"""


def _run(code: str, root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the package and its pyproject.toml to plant violations in."""
    shutil.copytree(ROOT / "memstore", tmp_path / "memstore",
                    ignore=shutil.ignore_patterns("__pycache__", "model_data"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _plant(tree: Path, module: str, line: str) -> None:
    path = tree / module.replace(".", "/") / "__init__.py"
    if not path.exists():
        path = tree / (module.replace(".", "/") + ".py")
    old = path.read_text() if path.exists() else '"""A module."""\n'
    path.write_text(old + f"\n{line}\n")


def test_contracts_are_kept():
    result = _run(LINT, ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_no_import_cycles():
    result = _run(CYCLES, ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "", "import cycles:\n" + result.stdout


@pytest.mark.parametrize(
    ("module", "line", "expected"),
    [
        ("memstore.recall", "import sqlite3", "memstore.recall -> sqlite3"),
        ("memstore.capture", "import sqlite3", "memstore.capture -> sqlite3"),
        ("memstore.storage.base", "import sqlite_utils", "memstore.storage.base -> sqlite_utils"),
        ("memstore.recall", "from memstore.storage.sqlite import db",
         "memstore.recall -> memstore.storage.sqlite"),
        ("memstore.store", "from usearch.index import Index", "memstore.store -> usearch"),
        ("memstore.store", "import fastembed", "memstore.store -> fastembed"),
        ("memstore.storage.sqlite", "import onnxruntime", "memstore.storage.sqlite -> onnxruntime"),
        ("memstore.exchange", "import psycopg", "memstore.exchange -> psycopg"),
        ("memstore.render", "from memstore.cli import cli", "memstore.render -> memstore.cli"),
        ("memstore.models", "from memstore import store", "memstore.models -> memstore.store"),
        ("memstore.recall", "from memstore import store", "memstore.recall -> memstore.store"),
        ("memstore.store", "from memstore.agents import hooks", "memstore.store -> memstore.agents"),
    ],
)
def test_a_planted_violation_breaks_the_check(tree, module, line, expected):
    assert _run(LINT, tree).returncode == 0  # the copy is clean before planting
    _plant(tree, module, line)
    result = _run(LINT, tree)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert expected in result.stdout


def test_a_planted_cycle_is_found(tree):
    _plant(tree, "memstore.models", "from memstore import render")
    result = _run(CYCLES, tree)
    assert result.returncode == 0, result.stderr
    assert "memstore.models -> memstore.render -> memstore.models" in result.stdout.splitlines()


def test_embedding_package_import_is_light():
    code = (
        "import sys, memstore.embedding; print([m for m in ('numpy', 'fastembed', 'onnxruntime', "
        "'tokenizers', 'usearch') if m in sys.modules])"
    )
    result = _run(code, ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize(("preset", "expected"), [(None, "1"), ("3", "3")])
def test_the_cli_asks_numpy_for_one_blas_thread_unless_told(preset, expected):
    """numpy's OpenBLAS threads spin while a command starts (twice the CPU of `import
    numpy`); the CLI asks for one before anything imports numpy, keeping a user's choice.
    The library alone leaves the setting to the program importing it."""
    code = ("import os, sys, memstore; lib = os.environ.get('OPENBLAS_NUM_THREADS'); "
            "import memstore.cli; import numpy; "
            "print(lib, os.environ['OPENBLAS_NUM_THREADS'], 'numpy' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if preset is not None:
        env["OPENBLAS_NUM_THREADS"] = preset
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(preset), expected, "True"]
