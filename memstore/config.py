"""Where memstore keeps its files, and the limits it enforces.

Paths come from an explicit argument, then an environment variable, then
platformdirs, so tests and users can point a whole store somewhere else.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "DB_FILENAME",
    "DEFAULT_NAMESPACE",
    "ENV_CACHE",
    "ENV_EMBEDDER",
    "ENV_HOME",
    "ENV_MODEL_DIR",
    "MAX_METADATA_BYTES",
    "MAX_METADATA_DEPTH",
    "MAX_NAME_CHARS",
    "MAX_QUERY_BYTES",
    "MAX_TAGS",
    "MAX_TEXT_BYTES",
    "cache_dir",
    "home_dir",
    "model_dir_override",
    "private_dir",
]

APP_NAME = "memstore"
DB_FILENAME = "memstore.db"
DEFAULT_NAMESPACE = "default"

#: Longest memory text accepted, in UTF-8 bytes. Longer text is refused, never truncated.
MAX_TEXT_BYTES = 64 * 1024
#: Longest recall query accepted, in UTF-8 bytes.
MAX_QUERY_BYTES = 8 * 1024
#: Longest namespace, tag, source or project name, in characters.
MAX_NAME_CHARS = 128
#: Most tags on one memory.
MAX_TAGS = 64
#: Largest metadata object, as compact JSON in UTF-8 bytes.
MAX_METADATA_BYTES = 16 * 1024
#: Deepest nesting of metadata objects and arrays.
MAX_METADATA_DEPTH = 16

ENV_HOME = "MEMSTORE_HOME"
ENV_CACHE = "MEMSTORE_CACHE_DIR"
ENV_MODEL_DIR = "MEMSTORE_MODEL_DIR"
ENV_EMBEDDER = "MEMSTORE_EMBEDDER"


def home_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The store directory: explicit path, else $MEMSTORE_HOME, else the platform data dir."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_HOME)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir(APP_NAME, appauthor=False))


def cache_dir() -> Path:
    """Where derived files live (the assembled model): $MEMSTORE_CACHE_DIR or the platform cache."""
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir(APP_NAME, appauthor=False))


def private_dir(path: Path) -> Path:
    """Create ``path`` with every missing directory from the cache root down as 0700
    (directories that already exist keep their mode; the root's parents are not ours)."""
    root = cache_dir()
    if not root.exists():
        root.parent.mkdir(parents=True, exist_ok=True)
    for directory in reversed([p for p in (path, *path.parents) if p == root or root in p.parents]):
        directory.mkdir(mode=0o700, exist_ok=True)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def model_dir_override(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """An explicitly chosen model directory (argument, then $MEMSTORE_MODEL_DIR), if any."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_MODEL_DIR)
    return Path(env).expanduser() if env else None
