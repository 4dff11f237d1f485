"""The replicated state of sync and its merge: a pure function, so every replica converges.

A :class:`State` is every memory version by id plus the purge marks (ids that were purged,
each with the id it superseded so chains reconnect around it — ids only, never text).
:func:`merge` is a join: commutative, associative and idempotent (tests check the three
properties directly), so any replicas merging in any order end with the same state.

What is merged, per version id:

- the version's content (text, namespace, tags, metadata, source, project, branch,
  created_at, expires_at, supersedes) is fixed when it is written, so replicas agree on it;
  if two disagree anyway (a hand-made record), the smaller canonical form wins everywhere;
- its forgotten state is a last-writer-wins register: the greatest
  ``(updated_at, deleted, deleted_at)`` wins (forget, restore and supersede all stamp
  ``updated_at``);
- the vector is the one present, the smallest ``(model, bytes)`` among those.

``superseded_by`` is *derived*, never merged (:func:`normalize`), from the chains that
``supersedes`` draws:

1. in each family (versions linked by ``supersedes``) the current version is the leaf with
   the greatest ``(created_at, id)``; every other version points forward to it — the version
   on the way for its ancestors, the newest child for a side branch, the current version for
   a losing leaf. Two machines updating the same memory concurrently make two leaves: one
   wins everywhere, the other stays in history, superseded by the winner;
2. current versions holding the same text in the same scope (the same content hash, e.g.
   captured on two machines) are one memory: the one touched last (``(updated_at, id)``)
   stays current, the others are superseded by it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ..identity import content_hash

__all__ = ["State", "Version", "merge", "normalize"]

#: Longest chain followed when resolving through purge marks (a guard against loops).
MAX_HOPS = 100_000


@dataclass(frozen=True)
class Version:
    """One memory version as sync carries it (timestamps in the database's exact form)."""

    id: str
    text: str
    namespace: str
    tags: tuple[str, ...]
    metadata: str  # canonical JSON (sorted keys) of the metadata object
    source: str | None
    project: str | None
    branch: str | None
    created_at: str
    expires_at: str | None
    supersedes: str | None
    updated_at: str
    deleted: bool
    deleted_at: str | None
    superseded_by: str | None = None  # derived by normalize()
    vector: tuple[str, bytes] | None = field(default=None, compare=False)

    @property
    def content_hash(self) -> str:
        return content_hash(self.text, self.namespace, self.project)

    def fixed(self) -> tuple[Any, ...]:
        """The content fixed at write time (everything but the forgotten state and links)."""
        return (self.text, self.namespace, self.tags, self.metadata, self.source, self.project,
                self.branch, self.created_at, self.expires_at)

    def register(self) -> tuple[str, bool, str]:
        """The last-writer-wins key of the forgotten state."""
        return (self.updated_at, self.deleted, self.deleted_at or "")

    def same_as(self, other: Version) -> bool:
        """Equal in everything that is stored (the vector aside)."""
        return self == other


@dataclass(frozen=True)
class State:
    """Versions by id and purge marks (purged id → the id it superseded, or None)."""

    versions: Mapping[str, Version]
    purged: Mapping[str, str | None]

    @staticmethod
    def empty() -> State:
        return State({}, {})

    def key(self) -> tuple[Any, ...]:
        """A comparable form (vectors aside) for tests and change detection."""
        return (tuple(sorted(self.versions.items(), key=lambda kv: kv[0])),
                tuple(sorted(self.purged.items(), key=lambda kv: (kv[0], kv[1] or ""))))


def canonical_metadata(value: Mapping[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))


def _vector_key(v: tuple[str, bytes] | None) -> tuple[Any, ...]:
    return (1,) if v is None else (0, v[0], v[1])


def _join_version(a: Version, b: Version) -> Version:
    if a == b:  # the common case: the same version on both sides (vectors aside)
        return a if _vector_key(a.vector) <= _vector_key(b.vector) else b
    if a.fixed() != b.fixed() or a.supersedes != b.supersedes:
        base = min(a, b, key=lambda v: json.dumps([*v.fixed(), v.supersedes], ensure_ascii=False))
    else:
        base = a
    state = max(a, b, key=Version.register)
    vector = min(a.vector, b.vector, key=_vector_key)
    return replace(base, updated_at=state.updated_at, deleted=state.deleted,
                   deleted_at=state.deleted_at, superseded_by=None, vector=vector)


def _resolve(link: str | None, purged: Mapping[str, str | None]) -> str | None:
    hops = 0
    while link is not None and link in purged and hops <= MAX_HOPS:
        link = purged[link]
        hops += 1
    return None if link in purged else link


def join(a: State, b: State) -> State:
    """The raw join (before :func:`normalize`)."""
    purged: dict[str, str | None] = dict(a.purged)
    for pid, link in b.purged.items():
        if pid in purged and purged[pid] != link:
            purged[pid] = min(purged[pid], link, key=lambda x: (x is None, x or ""))
        else:
            purged[pid] = link
    versions: dict[str, Version] = {}
    for source in (a.versions, b.versions):
        for vid, version in source.items():
            if vid in purged:
                continue
            if version.supersedes is not None and version.supersedes in purged:
                version = replace(version, supersedes=_resolve(version.supersedes, purged))
            seen = versions.get(vid)
            versions[vid] = version if seen is None else _join_version(seen, version)
    return State(versions, purged)


def merge(*states: State) -> State:
    """The merged, normalised state of any number of states."""
    out = State.empty()
    for state in states:
        out = join(out, state)
    return normalize(out)


def normalize(state: State) -> State:
    """Resolve links through purge marks, break link loops and derive ``superseded_by``."""
    purged = state.purged
    versions = state.versions
    parent: dict[str, str | None] = {}
    for vid, v in versions.items():
        link = _resolve(v.supersedes, purged) if v.supersedes is not None else None
        # A link to a version that is not there makes a root (validation refuses such input;
        # this keeps the function total).
        parent[vid] = link if link is not None and link != vid and link in versions else None
    _break_loops(parent)
    children: dict[str, list[str]] = {}
    for vid, link in parent.items():
        if link is not None:
            children.setdefault(link, []).append(vid)
    root_of: dict[str, str] = {}

    def root(vid: str) -> str:
        path = []
        while vid not in root_of and parent[vid] is not None:
            path.append(vid)
            vid = parent[vid]  # type: ignore[assignment]
        top = root_of.get(vid, vid)
        for p in path:
            root_of[p] = top
        root_of[vid] = top
        return top

    def order(vid: str) -> tuple[str, str]:
        return (versions[vid].created_at, vid)

    families: dict[str, list[str]] = {}
    for vid in versions:
        families.setdefault(root(vid), []).append(vid)
    pointer: dict[str, str | None] = {}
    currents: list[str] = []
    for members in families.values():
        if len(members) == 1:
            pointer[members[0]] = None
            currents.append(members[0])
            continue
        current = max((m for m in members if m not in children), key=order)
        currents.append(current)
        on_path: dict[str, str] = {}
        node = current
        while parent[node] is not None:
            up = parent[node]
            assert up is not None
            on_path[up] = node
            node = up
        for m in members:
            if m == current:
                pointer[m] = None
            elif m in on_path:
                pointer[m] = on_path[m]
            elif m in children:
                pointer[m] = max(children[m], key=order)
            else:
                pointer[m] = current
    groups: dict[str, list[str]] = {}
    for c in currents:
        groups.setdefault(versions[c].content_hash, []).append(c)
    for members in groups.values():
        if len(members) > 1:
            winner = max(members, key=lambda m: (versions[m].updated_at, m))
            for m in members:
                if m != winner:
                    pointer[m] = winner
    out = {}
    for vid, v in versions.items():
        if v.supersedes == parent[vid] and v.superseded_by == pointer[vid]:
            out[vid] = v
        else:
            out[vid] = replace(v, supersedes=parent[vid], superseded_by=pointer[vid])
    return State(out, dict(purged))


def _break_loops(parent: dict[str, str | None]) -> None:
    """Make the smallest id of every ``supersedes`` loop a root (only forged input loops)."""
    state: dict[str, int] = {}  # 1: on the current walk, 2: done
    for start in sorted(parent):
        walk: list[str] = []
        node: str | None = start
        while node is not None and state.get(node) is None:
            state[node] = 1
            walk.append(node)
            node = parent[node]
        if node is not None and state.get(node) == 1:
            loop = walk[walk.index(node):]
            parent[min(loop)] = None
        for n in walk:
            state[n] = 2


def families(versions: Mapping[str, Version]) -> dict[str, str]:
    """id → a family key: versions linked by supersedes or superseded_by share one."""
    parent: dict[str, str] = {vid: vid for vid in versions}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for vid, v in versions.items():
        for link in (v.supersedes, v.superseded_by):
            if link is not None and link in parent:
                ra, rb = find(vid), find(link)
                if ra != rb:
                    parent[max(ra, rb)] = min(ra, rb)
    return {vid: find(vid) for vid in versions}


def diff(old: Mapping[str, Version], new: Mapping[str, Version]) -> tuple[list[str], list[str]]:
    """(ids new or changed in ``new``, ids of ``old`` missing from ``new``)."""
    changed = [vid for vid, v in new.items() if vid not in old or not old[vid].same_as(v)]
    gone = [vid for vid in old if vid not in new]
    return changed, gone


def from_iter(versions: Iterable[Version], purged: Mapping[str, str | None] | None = None) -> State:
    return State({v.id: v for v in versions}, dict(purged or {}))
