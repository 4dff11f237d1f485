"""Sync: the same memories on every machine, through a git remote (docs/sync.md).

``sync_store(store)`` in a git repository syncs that project's memories through its
``origin``; ``sync_store(store, remote=URL)`` syncs every memory (minus the settings'
exclusions) through any remote git can reach. ``sync_status`` says what would move.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import GitError, SyncError
from .engine import DEFAULT_REF, NeedsConfirmation, Progress, Scope, SyncResult, last_sync, sync
from .transport import RemoteUnreachable

if TYPE_CHECKING:
    from ..store import MemoryStore

__all__ = ["NeedsConfirmation", "Scope", "SyncResult", "resolve", "sync_status", "sync_store"]


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(p.strip() for p in (value or "").split(",") if p.strip())


def _as_location(url: str, cwd: Path) -> str:
    """A local path made absolute (git runs elsewhere); URLs and scp-like addresses as given."""
    if "://" in url or (re.match(r"^[^/\\]+:", url) and not (cwd / url).exists()):
        return url
    return str((cwd / os.path.expanduser(url)).resolve())


def resolve(
    store: MemoryStore, remote: str | None = None, *, cwd: str | os.PathLike[str] | None = None,
    include_unscoped: bool | None = None,
) -> tuple[str, str, Scope]:
    """(remote, ref, scope) for a sync: the remote named, else the ``sync.remote`` setting,
    else the origin of the repository at ``cwd`` — which makes it a project's remote: only
    that project's memories go (and those with no project only when asked)."""
    from ..git import repo as gitscope

    settings = store.settings
    where = Path(cwd) if cwd is not None else Path.cwd()
    excluded = _split(settings.get("sync.exclude_namespaces"))
    ref = settings.get("sync.ref", DEFAULT_REF)
    if not re.fullmatch(r"refs/memstore/[A-Za-z0-9._/-]+", ref) or ".." in ref:
        raise SyncError(f"sync.ref {ref!r} must be a ref under refs/memstore/")
    unscoped = bool(settings.get("sync.include_unscoped", False)) if include_unscoped is None \
        else include_unscoped
    repo = gitscope.detect(where)
    named = remote or settings.get("sync.remote")
    if named:
        location = _as_location(named, where)
        if repo is not None and _is_remote_of(repo, location, where):
            return location, ref, Scope((repo.project,), unscoped, excluded)
        projects = _split(settings.get("sync.projects")) or None
        return location, ref, Scope(projects, include_unscoped is not False, excluded)
    if repo is None:
        raise SyncError("not in a git repository: give --remote URL (or set sync.remote)")
    try:
        origin = repo.git("remote", "get-url", "origin").strip()
    except GitError:
        raise SyncError(
            "this repository has no origin remote: give --remote URL (or set sync.remote)"
        ) from None
    return _as_location(origin, repo.cwd), ref, Scope((repo.project,), unscoped, excluded)


def _is_remote_of(repo: Any, location: str, where: Path) -> bool:
    from ..git import repo as gitscope

    out = repo.git("config", "--get-regexp", r"^remote\..*\.url$", check=False)
    wanted = gitscope.normalise_remote(location, base=where)
    for line in out.splitlines():
        _, _, url = line.partition(" ")
        if url and gitscope.normalise_remote(_as_location(url.strip(), repo.cwd), base=repo.cwd) == wanted:
            return True
    return False


def sync_store(
    store: MemoryStore, remote: str | None = None, *, cwd: str | os.PathLike[str] | None = None,
    include_unscoped: bool | None = None, yes: bool = False, dry_run: bool = False,
    progress: Progress | None = None,
) -> SyncResult:
    """Sync the store with its remote (see :func:`resolve`); the first sync to a remote raises
    NeedsConfirmation (with the plan) unless ``yes``."""
    location, ref, scope = resolve(store, remote, cwd=cwd, include_unscoped=include_unscoped)
    return sync(store, location, scope=scope, ref=ref, yes=yes, dry_run=dry_run, progress=progress)


def sync_status(
    store: MemoryStore, remote: str | None = None, *, cwd: str | os.PathLike[str] | None = None,
    include_unscoped: bool | None = None,
) -> dict[str, Any]:
    """The remote, the last sync, and what a sync would move now (``error`` when the remote
    cannot be read)."""
    location, ref, scope = resolve(store, remote, cwd=cwd, include_unscoped=include_unscoped)
    base = last_sync(store.home, store.backend.store_id, location, ref)
    status: dict[str, Any] = {"remote": location, "ref": ref, "scope": scope.to_dict(),
                              "last_sync": base.last_sync if base else None,
                              "confirmed": bool(base and base.confirmed), "would": None, "error": None}
    try:
        result = sync(store, location, scope=scope, ref=ref, dry_run=True)
    except (RemoteUnreachable, SyncError) as exc:
        status["error"] = str(exc)
        return status
    status["would"] = {"send": result.sent, "receive": result.received, "purge_here": result.purged_here,
                       "purge_there": result.purged_sent, "held_back": result.held_back,
                       "memories_after": result.memories}
    status["conflicts_resolved"] = result.conflicts_resolved
    status["plan"] = result.plan
    return status
