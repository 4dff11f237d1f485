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
    "owned_file",
    "private_dir",
    "secure_dir",
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
    (directories that already exist keep their mode; the root's parents are not ours).
    Each directory from the root down must be this user's and not writable by others (a
    planted file could change recall): one open to writing is tightened, with a notice;
    one of another user raises StoreError."""
    from .notices import notify

    root = cache_dir()
    if not root.exists():
        root.parent.mkdir(parents=True, exist_ok=True)
    for directory in reversed([p for p in (path, *path.parents) if p == root or root in p.parents]):
        directory.mkdir(mode=0o700, exist_ok=True)
        fixed = secure_dir(directory, "cache directory", only_writes=True)
        if fixed:
            notify(fixed)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


def owned_file(path: Path) -> bool:
    """Whether an existing file is this user's and not writable by others (a cache file
    planted by someone else is not to be read)."""
    st = os.lstat(path)
    mine = not hasattr(os, "getuid") or st.st_uid == os.getuid()
    return mine and not (st.st_mode & 0o022) and not os.path.islink(path)


def secure_dir(path: Path, what: str, *, only_writes: bool = False) -> str | None:
    """Check a directory memstore keeps private data in (the store home, the cache): it must
    belong to this user; group/other permissions are removed (0700; with ``only_writes``,
    only the write bits), with the notice returned. Raises StoreError for a directory owned
    by someone else (they could read or plant files: a memory store, a query vector cache)."""
    from .errors import StoreError

    try:
        st = os.stat(path)
    except OSError as exc:
        raise StoreError(f"cannot use {what} {path}: {exc.strerror}") from None
    if hasattr(os, "getuid") and st.st_uid != os.getuid():
        raise StoreError(
            f"{what} {path} belongs to another user (uid {st.st_uid}); memstore keeps private data "
            "there, so it only uses a directory of your own"
        )
    mode = st.st_mode & 0o777
    loose = mode & (0o022 if only_writes else 0o077)
    if loose:
        try:
            os.chmod(path, mode & ~loose)
        except OSError as exc:
            raise StoreError(f"{what} {path} is open to other users (mode {mode:o}) and cannot be "
                             f"made private: {exc.strerror}") from None
        return f"{what} {path} was open to other users (mode {mode:04o}); made it {mode & ~loose:04o}"
    return None


def private_file(path: Path) -> int:
    """Open ``path`` for appending as a private file (0600, not through a symlink)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    except OSError:
        pass
    return fd


def model_dir_override(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """An explicitly chosen model directory (argument, then $MEMSTORE_MODEL_DIR), if any."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_MODEL_DIR)
    return Path(env).expanduser() if env else None
