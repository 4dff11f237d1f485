"""Helpers for the sync tests: homes, a bare remote, comparing stores, reading remote objects."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import memstore
from memstore.embedding import HashEmbedder


def bare(path: Path) -> str:
    subprocess.run(["git", "init", "-q", "--bare", str(path)], check=True)
    return str(path)


def open_home(path: Path) -> Any:
    return memstore.open(path, embedder=HashEmbedder())


def snapshot(store: Any) -> list[tuple[Any, ...]]:
    """Everything a user can see of a store: every version with its state and links."""
    from sqlitefile import raw

    rows = raw(store).execute(
        "SELECT id, text, namespace, tags, metadata, source, project, branch, created_at, "
        "updated_at, expires_at, deleted, deleted_at, supersedes, superseded_by FROM memories ORDER BY id"
    ).fetchall()
    import json

    return [(*r[:3], tuple(json.loads(r[3])), json.dumps(json.loads(r[4]), sort_keys=True), *r[5:])
            for r in rows]


def remote_blobs(remote: str) -> bytes:
    """The bytes of every object reachable from the remote's refs, after gc dropped the rest."""
    subprocess.run(["git", "-C", remote, "gc", "-q", "--prune=now"], check=True)
    listing = subprocess.run(["git", "-C", remote, "rev-list", "--objects", "--all"],
                             check=True, capture_output=True).stdout.decode().split("\n")
    oids = [line.split(" ")[0] for line in listing if line.strip()]
    if not oids:
        return b""
    return subprocess.run(["git", "-C", remote, "cat-file", "--batch"],
                          input="\n".join(oids).encode() + b"\n",
                          check=True, capture_output=True).stdout


def all_objects(repo: str | Path) -> bytes:
    """The bytes of every object in a repository, reachable or not (loose and packed)."""
    out = subprocess.run(["git", "-C", str(repo), "cat-file", "--batch-all-objects", "--batch"],
                         capture_output=True, check=True).stdout
    return out
