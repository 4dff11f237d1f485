"""One sync: read the remote's state, merge it with the local one, apply, push; retry on a race.

The order makes every crash safe (kill -9 anywhere: tests/sync/test_faults.py):

1. lock ``<home>/sync.lock`` (two syncs of one store queue);
2. read the remote ref (``ls-remote``, ``fetch``) and validate it strictly (wire.py) — a ref
   that is not a memstore state is refused and nothing changes;
3. snapshot the local store, infer what was purged here since the last sync (ids the last
   merged state had that the store no longer has), merge (a pure function: state.py);
4. apply the merged state to the store in one transaction, which refuses if the store moved
   since the snapshot (then everything is redone);
5. record the merged ids as the new base (atomic file), then write a parentless snapshot
   commit and push it with ``--force-with-lease``; a rejected push (another machine pushed
   first) goes back to 2; the remote is never forced over another machine's work.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import signal
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import redact
from ..errors import StoreChangedError, SyncError
from ..settings import env_value
from ..timeutil import format_ts, now
from . import wire
from .state import State, Version, canonical_metadata, merge
from .transport import LOCAL_REF, PushRejected, Remote, Repo, blob_oid

if TYPE_CHECKING:
    from ..store import MemoryStore

__all__ = ["NeedsConfirmation", "Scope", "SyncResult", "sync"]

DEFAULT_REF = "refs/memstore/memories"
#: Fetch-merge-push rounds before giving up (each lost race is another machine's progress).
MAX_ATTEMPTS = 8
#: Environment variable naming a point at which the process kills itself (fault tests).
FAULT_ENV = "MEMSTORE_SYNC_FAULT"
BASE_VERSION = 1
#: progress(stage, done, total)
Progress = Callable[[str, int, int], None]


class NeedsConfirmation(SyncError):
    """The first sync to a remote must be confirmed: ``plan`` says what would go there."""

    def __init__(self, message: str, plan: dict[str, Any]) -> None:
        super().__init__(message)
        self.plan = plan


@dataclass(frozen=True)
class Scope:
    """Which local memories go to the remote."""

    projects: tuple[str, ...] | None = None  # None: every project
    include_unscoped: bool = True
    exclude_namespaces: tuple[str, ...] = ()

    def admits(self, v: Version) -> bool:
        if v.namespace in self.exclude_namespaces:
            return False
        if v.project is None:
            return self.include_unscoped
        return self.projects is None or v.project in self.projects

    def to_dict(self) -> dict[str, Any]:
        return {"projects": list(self.projects) if self.projects is not None else None,
                "include_unscoped": self.include_unscoped,
                "exclude_namespaces": list(self.exclude_namespaces)}


@dataclass
class SyncResult:
    """What a sync did (or, with ``dry_run``, would do)."""

    remote: str
    ref: str
    dry_run: bool
    scope: Scope
    sent: int = 0  # versions new or changed on the remote
    received: int = 0  # versions written here
    purged_here: int = 0  # deleted here because they were purged elsewhere
    purged_sent: int = 0  # purges made here, travelling to the remote
    held_back: list[str] = field(default_factory=list)  # ids kept back: they hold a secret
    kept_local: list[str] = field(default_factory=list)
    vectors_dropped: int = 0
    embedded: int = 0
    conflicts_resolved: int = 0
    memories: int = 0
    attempts: int = 0
    commit: str | None = None
    pushed: bool = False
    first: bool = False
    last_sync: str | None = None
    plan: dict[str, Any] | None = None
    notices: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "scope"}
        data["scope"] = self.scope.to_dict()
        return data


# ---------------------------------------------------------------------------------------------
# Entry point


def sync(
    store: MemoryStore,
    remote: str,
    *,
    scope: Scope,
    ref: str = DEFAULT_REF,
    yes: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> SyncResult:
    """Sync ``store`` with ``remote`` (a URL or path git understands). Raises
    NeedsConfirmation on the first sync to a remote unless ``yes``; SyncError when the
    remote cannot be reached or holds something that is not a memstore state. ``on_stage`` is
    called with the name of each stage reached (start, fetched, merged, applied, saved,
    committed, pushed): tests use it to race another machine in between."""
    stage = _stages(on_stage)
    target = Remote(remote, ref)
    home = store.home
    # A team store (PostgreSQL) keeps no files: its sync state lives in the user's home,
    # which may not exist yet.
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    with _locked(home / "sync.lock"):
        repo = Repo(home / "sync" / "repo.git")
        base = Base.load(_base_path(home, target), store.backend.store_id)
        model, dimension = store.embedder.model_id, store.embedder.dimension
        result = SyncResult(remote, ref, dry_run, scope, first=base is None or not base.confirmed,
                            last_sync=base.last_sync if base else None)
        for attempt in range(1, MAX_ATTEMPTS + 1):
            result.attempts = attempt
            stage("start")
            snapshot, mark = store.sync_snapshot()
            local = _versions(snapshot, model, dimension)
            # An older copy of the store put back: it has not applied the last merged state.
            rolled_back = base is not None and mark[-1] < base.high_water
            remote_oid = repo.remote_oid(target)
            remote_state, result.vectors_dropped = State.empty(), 0
            entries: dict[str, str] = {}
            skipped: dict[str, str] = {}
            if remote_oid is not None:
                repo.fetch(target, remote_oid)
                entries = repo.tree(remote_oid)
                # Shards exactly as this store wrote them last time: their records are the
                # ones it applied, so its own versions stand in for them (no re-reading).
                skipped = {p: o for p, o in entries.items()
                           if base is not None and not rolled_back and p.startswith("memories/")
                           and base.shards.get(p) == o}
                known_ids = frozenset(vid for vid in (base.links if base else {})
                                      if wire.shard_of(vid) in skipped)
                files = repo.blobs({p: o for p, o in entries.items() if p not in skipped})
                remote_state, result.vectors_dropped = wire.decode_tree(
                    files, model=model, dimension=dimension,
                    known={vid: local[vid] for vid in known_ids if vid in local}, known_ids=known_ids,
                )
            _check_unchanged(remote_state, local)
            stage("fetched")
            outgoing, held = _outgoing(local, scope, base)
            result.held_back = sorted(held)
            # Purges known here travel again until the remote has them (a crash after the base
            # was saved but before the push must not lose one).
            purges = dict(base.purged) if base is not None else {}
            if rolled_back:
                older = ("this store is older than its last sync (restored from a backup?): what it "
                         "lacks is not taken as purged; those memories come back from the remote")
                if older not in result.notices:
                    result.notices.append(older)
            elif base is not None:  # (rolled_back implies a base)
                purges.update(_inferred_purges(base, local))
            merged = merge(remote_state, State(outgoing, purges))
            stage("merged")
            rows = [_row(v, model) for vid, v in merged.versions.items()
                    if vid not in local or not local[vid].same_as(v)]
            doomed = [pid for pid in merged.purged if pid in local]
            there_now = remote_state.versions
            result.sent = sum(1 for vid, v in merged.versions.items()
                              if vid not in there_now or not there_now[vid].same_as(v))
            result.received = len(rows)
            result.purged_here = len(doomed)
            result.purged_sent = len(set(merged.purged) - set(remote_state.purged))
            result.memories = len(merged.versions)
            result.conflicts_resolved = _resolved(merged)
            result.plan = _plan(outgoing) if result.first else None
            if dry_run:
                return result
            if result.first and not yes:
                raise NeedsConfirmation(
                    f"first sync to {remote}: {_plan_line(outgoing)}; confirm to go on", _plan(outgoing)
                )
            try:
                applied = store.apply_sync_state(rows, doomed, expect=mark,
                                                 progress=_apply_progress(progress))
            except StoreChangedError:
                continue
            result.kept_local, result.embedded = applied["kept_local"], applied["embedded"]
            high_water = applied["mark"][-1]
            stage("applied")
            prints = wire.shard_prints(merged.versions)
            there = wire.shard_prints({vid: v for vid, v in remote_state.versions.items()
                                       if wire.shard_of(vid) not in skipped})
            if base is not None:
                there.update({p: base.prints.get(p, "") for p in skipped})
            reuse = {p: entries[p] for p in prints if p in entries and there.get(p) == prints[p]}
            files_out = wire.encode_tree(merged, reuse)
            shards = {p: (d if isinstance(d, str) else blob_oid(d)) for p, d in files_out.items()
                      if p.startswith("memories/")}
            stamp = format_ts(now())
            Base(store.backend.store_id, remote, ref, True, stamp,
                 {vid: (v.supersedes, v.superseded_by) for vid, v in merged.versions.items()},
                 dict(merged.purged), shards, prints, high_water).save(_base_path(home, target))
            result.last_sync = stamp
            stage("saved")
            commit = repo.write_commit(files_out)
            result.commit = commit
            stage("committed")
            if commit != remote_oid:
                try:
                    repo.push(target, commit, remote_oid)
                except PushRejected:
                    continue
                result.pushed = True
            stage("pushed")
            repo.git("update-ref", LOCAL_REF, commit)
            if doomed or result.purged_sent:
                repo.forget_unreachable()  # old snapshots here may hold the purged text
            result.first = False
            return result
        raise SyncError(f"gave up after {MAX_ATTEMPTS} attempts: {remote} kept moving (or the store "
                        "kept changing) while syncing; run sync again")


# ---------------------------------------------------------------------------------------------
# Local state


def _versions(snapshot: Iterable[tuple[Any, ...]], model: str, dimension: int) -> dict[str, Version]:
    """Versions from :meth:`MemoryStore.sync_snapshot` rows (vectors checked, as on arrival)."""
    rows = list(snapshot)
    mine = [(r[0], r[16]) for r in rows if r[16] is not None and r[15] == model]
    usable = {vid: blob for (vid, blob), ok in zip(mine, wire.vectors_ok([b for _, b in mine], dimension),
                                                   strict=True) if ok}
    out = {}
    for (vid, text, namespace, tags, source, metadata, project, branch, created, updated, expires,
         deleted, deleted_at, supersedes, superseded_by, _model, _vector) in rows:
        out[vid] = Version(
            id=vid, text=text, namespace=namespace, tags=() if tags == "[]" else tuple(json.loads(tags)),
            metadata="{}" if metadata == "{}" else canonical_metadata(json.loads(metadata)),
            source=source, project=project,
            branch=branch, created_at=created, expires_at=expires, supersedes=supersedes,
            updated_at=updated, deleted=bool(deleted), deleted_at=deleted_at,
            superseded_by=superseded_by, vector=(model, usable[vid]) if vid in usable else None,
        )
    return out


def _check_unchanged(remote: State, local: Mapping[str, Version]) -> None:
    """A version never changes in place: a remote record whose id is here with other content
    was rewritten (by hand, or forged) — the whole remote state is refused."""
    for vid, v in remote.versions.items():
        mine = local.get(vid)
        if mine is not None and mine.fixed() != v.fixed():
            raise wire.RemoteStateError(
                f"the remote holds memory {vid} with content other than this store's (a version "
                "never changes in place): the ref was rewritten; nothing was changed"
            )


def _secret_in(v: Version) -> bool:
    """True when a field of the version still holds what redaction would replace (stored with
    redaction off, or before a newer rule): such memories do not leave this machine."""
    meta = json.loads(v.metadata)
    strings: list[str] = [v.text, v.namespace, *v.tags]
    strings += [s for s in (v.source, v.project, v.branch) if s]

    def walk(value: Any) -> None:
        if isinstance(value, str):
            strings.append(value)
        elif isinstance(value, list):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for key, item in value.items():
                strings.append(str(key))
                walk(item)

    walk(meta)
    return any(redact.find_secrets(s) for s in strings)


def _outgoing(
    local: Mapping[str, Version], scope: Scope, base: Base | None
) -> tuple[dict[str, Version], set[str]]:
    """The local versions in scope, without whole families holding a secret (checked once
    per version: versions already synced were checked when they first left)."""
    from .state import families

    picked = {vid: v for vid, v in local.items() if scope.admits(v)}
    known = base.links if base is not None else {}
    risky = {vid for vid, v in picked.items() if vid not in known and _secret_in(v)}
    if not risky:
        return picked, set()
    family = families(picked)
    bad = {family[vid] for vid in risky}
    held = {vid for vid in picked if family[vid] in bad}
    return {vid: v for vid, v in picked.items() if vid not in held}, held


def _inferred_purges(base: Base, local: Mapping[str, Version]) -> dict[str, str | None]:
    """Purge marks for what was purged here since the last sync: ids the last merged state held
    that the store no longer has (only ``purge`` deletes rows), plus the versions that state
    showed as superseded by one of those from outside their own chain (the same text captured
    elsewhere, a concurrent edit that lost), with their older versions — what a purge here
    would have taken had it known them."""
    links = base.links
    gone = {vid for vid in links if vid not in local}
    if not gone:
        return {}
    grew = True
    while grew:
        grew = False
        for vid, (_sup, sby) in links.items():
            if vid in gone or sby is None or sby not in gone:
                continue
            if links.get(sby, (None, None))[0] == vid:
                continue  # its own newer version: a forgotten old version purged alone
            doomed, node = [vid], links[vid][0]
            while node is not None and node not in gone and node in links:
                doomed.append(node)
                node = links[node][0]
            gone.update(doomed)
            grew = True
    return {vid: links[vid][0] for vid in gone}


def _row(v: Version, model: str) -> dict[str, Any]:
    return {
        "id": v.id, "text": v.text, "namespace": v.namespace,
        "tags": json.dumps(list(v.tags), ensure_ascii=False), "source": v.source,
        "metadata": json.dumps(json.loads(v.metadata), ensure_ascii=False), "project": v.project,
        "branch": v.branch, "created_at": v.created_at, "updated_at": v.updated_at,
        "expires_at": v.expires_at, "deleted": int(v.deleted), "deleted_at": v.deleted_at,
        "supersedes": v.supersedes, "superseded_by": v.superseded_by,
        "_vector": v.vector[1] if v.vector is not None and v.vector[0] == model else None,
    }


def _resolved(state: State) -> int:
    """Versions superseded from outside their own chain: concurrent edits that lost, the same
    text captured on several machines."""
    versions = state.versions
    return sum(1 for v in versions.values()
               if v.superseded_by is not None and versions[v.superseded_by].supersedes != v.id)


def _plan(versions: Mapping[str, Version]) -> dict[str, Any]:
    projects: dict[str, int] = {}
    namespaces: dict[str, int] = {}
    live = [v for v in versions.values() if v.superseded_by is None and not v.deleted]
    for v in live:
        projects[v.project or "(no project)"] = projects.get(v.project or "(no project)", 0) + 1
        namespaces[v.namespace] = namespaces.get(v.namespace, 0) + 1
    return {"memories": len(live), "versions": len(versions), "projects": projects,
            "namespaces": namespaces}


def _plan_line(versions: Mapping[str, Version]) -> str:
    plan = _plan(versions)
    return (f"{plan['memories']} memories ({plan['versions']} versions with history) would go there, "
            f"projects: {', '.join(sorted(plan['projects'])) or 'none'}; "
            f"namespaces: {', '.join(sorted(plan['namespaces'])) or 'none'}")


# ---------------------------------------------------------------------------------------------
# The base: what the last sync with a remote left here


@dataclass
class Base:
    """The ids (and links) of the last merged state applied here, per remote and ref."""

    store_id: str
    remote: str
    ref: str
    confirmed: bool
    last_sync: str | None
    links: dict[str, tuple[str | None, str | None]]
    purged: dict[str, str | None] = field(default_factory=dict)
    shards: dict[str, str] = field(default_factory=dict)  # shard path → blob oid written
    prints: dict[str, str] = field(default_factory=dict)  # shard path → wire.shard_prints digest
    high_water: Any = 0  # the store's change-mark high-water after the apply

    @staticmethod
    def load(path: Path, store_id: str) -> Base | None:
        """The base, or None when there is none or it belongs to another store (a store made
        anew must not read its emptiness as purges)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise SyncError(f"sync state {path} is unreadable ({exc}); delete it to start over") from None
        if not isinstance(data, dict) or data.get("version") != BASE_VERSION:
            raise SyncError(f"sync state {path} has an unknown format; delete it to start over")
        if data.get("store_id") != store_id:
            return None
        links = {k: (v[0], v[1]) for k, v in data["links"].items()}
        return Base(store_id, data["remote"], data["ref"], bool(data["confirmed"]),
                    data.get("last_sync"), links, dict(data.get("purged", {})),
                    dict(data.get("shards", {})), dict(data.get("prints", {})), data.get("high_water", 0))

    def save(self, path: Path) -> None:
        data = {"version": BASE_VERSION, "store_id": self.store_id, "remote": self.remote,
                "ref": self.ref, "confirmed": self.confirmed, "last_sync": self.last_sync,
                "links": {k: list(v) for k, v in sorted(self.links.items())},
                "purged": dict(sorted(self.purged.items())), "shards": self.shards,
                "prints": self.prints, "high_water": self.high_water}
        _atomic_write(path, json.dumps(data).encode("utf-8"))


def _base_path(home: Path, remote: Remote) -> Path:
    key = hashlib.sha256(f"{remote.url}\0{remote.ref}".encode()).hexdigest()[:16]
    return home / "sync" / f"base-{key}.json"


def last_sync(home: Path, store_id: str, remote: str, ref: str = DEFAULT_REF) -> Base | None:
    return Base.load(_base_path(home, Remote(remote, ref)), store_id)


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# ---------------------------------------------------------------------------------------------
# Lock and fault points


@contextmanager
def _locked(path: Path):  # type: ignore[no-untyped-def]
    """An exclusive lock on ``path`` (0600), waited for: two syncs of one store queue."""
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError as exc:
        raise SyncError(f"cannot open the sync lock {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _stages(on_stage: Callable[[str], None] | None) -> Callable[[str], None]:
    def stage(name: str) -> None:
        _fault(name)
        if on_stage is not None:
            on_stage(name)

    return stage


def _apply_progress(progress: Progress | None) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        _fault("applying")  # inside the apply transaction
        if progress is not None:
            progress("applying", done, total)

    return report


def _fault(point: str) -> None:
    """Die here, as kill -9 would, when the fault-test variable names this point."""
    if env_value(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)
