"""User settings: defaults < config file (TOML) < MEMSTORE_* environment < flags/arguments.

Every setting is declared once in ``SETTINGS`` with its type, default and help;
nothing else is accepted, and each declared setting is read somewhere in the code.
``load_settings()`` returns the effective values and, for each, where it came from
(``memstore config`` prints both).

The file is ``$MEMSTORE_CONFIG`` or ``<platform config dir>/memstore/config.toml``.
Dotted names are TOML tables: ``recall.limit`` is ``[recall] limit = 10`` and its
environment variable is ``MEMSTORE_RECALL_LIMIT``.

This is the only module that reads ``MEMSTORE_*`` variables (``env_value``), so where memstore
keeps its files (``home_dir``, ``cache_dir``, ``model_dir_override``) is decided here too:
an explicit argument, then the environment variable, then platformdirs, so tests and users
can point a whole store somewhere else.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import InvalidInputError

__all__ = [
    "owned_file",
    "private_file",
    "secure_dir",
    "DB_FILENAME",
    "DEFAULT_NAMESPACE",
    "ENV_CACHE",
    "ENV_CONFIG",
    "SETTINGS",
    "Setting",
    "Settings",
    "cache_dir",
    "config_path",
    "env_value",
    "has_display",
    "home_dir",
    "load_settings",
    "model_dir_override",
    "private_dir",
]

APP_NAME = "memstore"
DB_FILENAME = "memstore.db"
DEFAULT_NAMESPACE = "default"

#: Variables that are not settings of the table below (where files go, not how memstore behaves).
ENV_CONFIG = "MEMSTORE_CONFIG"
ENV_CACHE = "MEMSTORE_CACHE_DIR"


@dataclass(frozen=True)
class Setting:
    """One user setting."""

    name: str
    type: type
    default: Any
    help: str
    choices: tuple[str, ...] = ()
    #: inclusive bounds for numbers (None: unbounded)
    minimum: float | None = None
    maximum: float | None = None

    @property
    def env(self) -> str:
        return "MEMSTORE_" + self.name.upper().replace(".", "_")


SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("home", str, None, "Store directory (default: the platform data directory)."),
        Setting(
            "database_url", str, None,
            "PostgreSQL URL of a team store (postgresql://user@host/db); used instead of the store "
            "directory. Printed with its password masked.",
        ),
        Setting(
            "user.name", str, None,
            "Who captures, recorded as each memory's author in a team store (default: git's "
            "user.email, else the OS user).",
        ),
        Setting("default_namespace", str, DEFAULT_NAMESPACE, "Namespace of captures that do not name one."),
        Setting("model_dir", str, None, "Directory of an ONNX model to use instead of the bundled one."),
        Setting(
            "embedder", str, "auto",
            "Embedding backend: auto (bundled model, else hash with a warning), fastembed, "
            "sentence-transformers (extra memstore[sentence-transformers]) or hash.",
            choices=("auto", "fastembed", "sentence-transformers", "hash"),
        ),
        Setting(
            "model", str, None,
            "Embedding model: a sentence-transformers model name or directory (default "
            "all-MiniLM-L6-v2); fastembed runs only the bundled all-MiniLM-L6-v2 or model_dir.",
        ),
        Setting(
            "batch_size", int, 256,
            "Memories per transaction and embedding call in bulk capture, import and reindex.",
            minimum=1,
        ),
        Setting(
            "redact", bool, True,
            "Replace secrets (API keys, tokens, private keys, passwords) in captured text with "
            "[REDACTED:<kind>] markers before storing.",
        ),
        Setting(
            "near_duplicate.threshold", float, 0.85,
            "Cosine at or above which a capture is a near-duplicate of a live memory in its "
            "namespace and project (unless they state different numbers), and is not stored. "
            "Measured for all-MiniLM-L6-v2 by scripts/near_duplicate_threshold.py; 1 turns it off.",
            minimum=0.0, maximum=1.0,
        ),
        Setting("recall.limit", int, 10, "Hits `memstore recall` returns by default."),
        Setting(
            "recall.min_similarity", float, None,
            "Recall leaves out hits whose cosine similarity to the query is below this "
            "(hybrid and semantic modes; unset: no floor). agent.min_similarity is the hooks' own.",
            minimum=-1.0, maximum=1.0,
        ),
        Setting(
            "recall.mode", str, "hybrid", "Default recall mode.",
            choices=("hybrid", "keyword", "semantic"),
        ),
        Setting(
            "recall.embed_pending", int, 16,
            "Memories stored without a vector (git hooks, --no-embed) a recall embeds first, "
            "newest first; 0 leaves them to hooks and `reindex`.",
        ),
        Setting("git.namespace", str, "commits", "Namespace of memories captured from git commits."),
        Setting(
            "git.merges", str, "auto",
            "Merge commits: auto (only those with a message beyond git's generated one), all, none.",
            choices=("auto", "all", "none"),
        ),
        Setting(
            "git.empty_messages", str, "skip",
            "Commits with an empty message: skip, or capture (their changed paths).",
            choices=("skip", "capture"),
        ),
        Setting(
            "query_worker.idle_seconds", int, 300,
            "Seconds a query-embedding worker (started by a recall of a new query, so later "
            "one-shot recalls skip loading the model) waits for queries before it exits; "
            "0 turns the worker off.",
            minimum=0, maximum=86_400,
        ),
        Setting("agent.context_chars", int, 2000, "Most characters of memory context an agent hook injects."),
        Setting(
            "agent.recall_mode", str, "auto",
            "How agent hooks recall: auto (hybrid if it answers within agent.time_budget_ms, "
            "else keyword), hybrid (always wait for it), keyword (never load the model).",
            choices=("auto", "hybrid", "keyword"),
        ),
        Setting(
            "agent.time_budget_ms", int, 600,
            "In auto mode, how long after an agent hook starts it stops waiting for hybrid recall.",
        ),
        Setting(
            "sync.remote", str, None,
            "Default remote of `memstore sync` (a URL or path git understands); unset: the "
            "current repository's origin, carrying that project's memories.",
        ),
        Setting("sync.ref", str, "refs/memstore/memories", "The ref memories travel in on the remote."),
        Setting(
            "sync.projects", str, None,
            "Comma-separated projects whose memories sync to a remote that is not a project's own "
            "(default: every project).",
        ),
        Setting("sync.exclude_namespaces", str, None, "Comma-separated namespaces that never sync."),
        Setting(
            "sync.include_unscoped", bool, False,
            "Also send memories with no project to a project's remote (they always go to a remote "
            "named with --remote or sync.remote).",
        ),
        Setting(
            "sync.on_git", bool, False,
            "Git hooks (post-merge, after `git pull`) also sync with the repository's origin, once a "
            "first `memstore sync` there was confirmed.",
        ),
        Setting(
            "agent.min_similarity", float, 0.3,
            "Agent hooks leave out hits found only by meaning whose cosine similarity is below this.",
        ),
    )
}


@dataclass
class Settings:
    """Effective settings and the source of each: default, file:<path>, env:<VAR> or argument."""

    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def get(self, name: str, default: Any = None) -> Any:
        """The value, else ``default``, else the declared default (for settings left unset)."""
        value = self.values.get(name)
        if value is not None:
            return value
        if default is not None:
            return default
        setting = SETTINGS.get(name)
        return setting.default if setting is not None else None

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Every setting with its source; a database URL with its password masked."""
        return {
            name: {"value": _printable(name, self.values[name]), "source": self.sources[name],
                   "help": SETTINGS[name].help}
            for name in SETTINGS
        }


def _printable(name: str, value: Any) -> Any:
    if name == "database_url" and isinstance(value, str):
        from .storage.urls import redact_url

        return redact_url(value)
    return value


def env_value(name: str) -> str | None:
    """The environment variable of setting ``name`` (or a variable named ``MEMSTORE_*`` itself),
    or None when it is unset or empty: the one place ``MEMSTORE_*`` is read."""
    variable = name if name.startswith("MEMSTORE_") else SETTINGS[name].env
    value = os.environ.get(variable)
    return value if value else None


def config_path() -> Path:
    """Where the TOML config file lives (it need not exist)."""
    env = env_value(ENV_CONFIG)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_config_dir

    return Path(user_config_dir(APP_NAME, appauthor=False)) / "config.toml"


def home_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The store directory: explicit path, else $MEMSTORE_HOME, else the platform data dir."""
    if explicit:
        return Path(explicit).expanduser()
    env = env_value("home")
    if env:
        return Path(env).expanduser()
    from platformdirs import user_data_dir

    return Path(user_data_dir(APP_NAME, appauthor=False))


def cache_dir() -> Path:
    """Where derived files live (the assembled model): $MEMSTORE_CACHE_DIR or the platform cache."""
    env = env_value(ENV_CACHE)
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
    env = env_value("model_dir")
    return Path(env).expanduser() if env else None


def _coerce(setting: Setting, value: Any, origin: str) -> Any:
    if value is None:
        return None
    kind = setting.type
    try:
        if kind is bool:
            if isinstance(value, bool):
                result: Any = value
            elif isinstance(value, str) and value.strip().lower() in ("1", "true", "yes", "on"):
                result = True
            elif isinstance(value, str) and value.strip().lower() in ("0", "false", "no", "off"):
                result = False
            else:
                raise ValueError(value)
        elif kind is int:
            if isinstance(value, bool):
                raise ValueError(value)
            result = int(value)
        elif kind is float:
            if isinstance(value, bool):
                raise ValueError(value)
            result = float(value)
            if not math.isfinite(result):  # NaN passes every bound check: refuse it here
                raise ValueError(value)
        else:
            if not isinstance(value, str):
                raise ValueError(value)
            result = value
    except (TypeError, ValueError):
        raise InvalidInputError(
            f"setting {setting.name} from {origin} must be {kind.__name__}, not {value!r}"
        ) from None
    if isinstance(result, (int, float)) and not isinstance(result, bool) and (
        (setting.minimum is not None and result < setting.minimum)
        or (setting.maximum is not None and result > setting.maximum)
    ):
        if setting.minimum is not None and setting.maximum is not None:
            bounds = f"between {setting.minimum:g} and {setting.maximum:g}"
        elif setting.minimum is not None:
            bounds = f"at least {setting.minimum:g}"
        else:
            bounds = f"at most {setting.maximum:g}"
        raise InvalidInputError(f"setting {setting.name} from {origin} must be {bounds}, not {result!r}")
    if setting.choices and result not in setting.choices:
        raise InvalidInputError(
            f"setting {setting.name} from {origin} must be one of {', '.join(setting.choices)}, "
            f"not {result!r}"
        )
    return result


def _flatten(table: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in table.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _read_file(path: Path) -> dict[str, Any]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise InvalidInputError(f"config file {path} is not valid TOML: {exc}") from None
    flat = _flatten(data)
    unknown = sorted(set(flat) - set(SETTINGS))
    if unknown:
        raise InvalidInputError(
            f"config file {path} has unknown setting(s): {', '.join(unknown)} "
            f"(known: {', '.join(SETTINGS)})"
        )
    return flat


def load_settings(overrides: Mapping[str, Any] | None = None, *, path: Path | None = None) -> Settings:
    """Effective settings: declared defaults, then the config file, then MEMSTORE_* variables,
    then ``overrides`` (flags or arguments; None values are ignored)."""
    path = path or config_path()
    from_file = _read_file(path)
    settings = Settings()
    for name, setting in SETTINGS.items():
        value, source = setting.default, "default"
        if name in from_file:
            value, source = _coerce(setting, from_file[name], f"{path}"), f"file:{path}"
        env = env_value(name)
        if env is not None:
            value, source = _coerce(setting, env, f"${setting.env}"), f"env:{setting.env}"
        if overrides and overrides.get(name) is not None:
            value, source = _coerce(setting, overrides[name], "argument"), "argument"
        settings.values[name] = value
        settings.sources[name] = source
    unknown = sorted(set(overrides or {}) - set(SETTINGS))
    if unknown:
        raise InvalidInputError(f"unknown setting(s): {', '.join(unknown)}")
    return settings


def has_display() -> bool:
    """Whether the environment names a graphical session (DISPLAY or WAYLAND_DISPLAY): without
    one, Python's ``webbrowser`` falls back to a text browser in the terminal."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
