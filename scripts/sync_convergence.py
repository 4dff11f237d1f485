"""Sync convergence, randomised: replicas act offline and sync in random order; in the end
every store is identical and nothing captured is lost unless purged.

    python scripts/sync_convergence.py --replicas 4 --steps 400 --seeds 5     # large
    (tests/sync/test_sync_convergence.py runs it small in CI)

Each step one replica does one random thing — capture (texts drawn from a small pool, so the
same text is captured on several machines; some with a short expiry), update, forget,
restore, purge — or syncs with the bare remote. At the end every replica syncs twice in turn.
Checked: all stores identical (every version, its text, state, tombstone and links); every
version ever written is present unless its id is in the remote's purge marks; every id a
purge deleted is gone everywhere; after ``git gc --prune=now`` no object reachable from the
remote's refs holds the text of a purged version that no surviving version shares.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import memstore
from memstore.embedding import HashEmbedder
from memstore.errors import ConflictError
from memstore.sync import sync_store

WORDS = ["deploy", "cache", "postgres", "lint", "release", "token", "review", "index", "queue", "backup"]


def _rows(store: Any) -> list[tuple[Any, ...]]:
    import sqlite3

    conn = sqlite3.connect(store.db_path, timeout=30)  # a second connection: the file as it is
    return conn.execute(
        "SELECT id, text, namespace, tags, metadata, project, created_at, updated_at, expires_at, "
        "deleted, deleted_at, supersedes, superseded_by FROM memories ORDER BY id"
    ).fetchall()


def _remote_bytes(remote: str) -> bytes:
    subprocess.run(["git", "-C", remote, "gc", "-q", "--prune=now"], check=True)
    listing = subprocess.run(["git", "-C", remote, "rev-list", "--objects", "--all"], check=True,
                             capture_output=True).stdout.decode().splitlines()
    oids = "\n".join(line.split(" ")[0] for line in listing if line.strip()) + "\n"
    return subprocess.run(["git", "-C", remote, "cat-file", "--batch"], input=oids.encode(), check=True,
                          capture_output=True).stdout


def run(seed: int, replicas: int, steps: int, workdir: Path, log: Any = None) -> dict[str, Any]:
    """One randomised run; raises AssertionError naming the first broken promise."""
    rng = random.Random(seed)
    remote = str(workdir / "remote.git")
    subprocess.run(["git", "init", "-q", "--bare", remote], check=True)
    stores = [memstore.open(workdir / f"r{i}", embedder=HashEmbedder()) for i in range(replicas)]
    written: dict[str, str] = {}  # every version id ever written → its text
    purged_direct: set[str] = set()
    counts = {"capture": 0, "update": 0, "forget": 0, "restore": 0, "purge": 0, "sync": 0, "conflict": 0}
    try:
        for _ in range(steps):
            s = rng.choice(stores)
            op = rng.choices(["capture", "update", "forget", "restore", "purge", "sync"],
                             weights=[5, 3, 2, 1, 1, 3])[0]
            try:
                if op == "capture":
                    text = " ".join(rng.sample(WORDS, 2)) + f" note {rng.randrange(12)}"
                    ttl = "1s" if rng.random() < 0.1 else None
                    m = s.capture(text, namespace=rng.choice(["a", "b"]), ttl=ttl)
                    written[m.id] = m.text
                elif op == "update":
                    live = s.list(limit=1000)
                    if live:
                        text = f"{rng.choice(WORDS)} revised {rng.randrange(99)}"
                        m = s.update(rng.choice(live).id, text=text)
                        written[m.id] = m.text
                elif op == "forget":
                    live = s.list(limit=1000)
                    if live:
                        s.forget(rng.choice(live).id)
                elif op == "restore":
                    gone = s.list(limit=1000, deleted=True)
                    if gone:
                        s.restore(rng.choice(gone).id)
                elif op == "purge":
                    purged_direct.update(item.memory.id for item in s.purge().items)
                else:
                    sync_store(s, remote, yes=True)
            except ConflictError:
                counts["conflict"] += 1
                continue
            counts[op] += 1
        time.sleep(0.01)
        for _ in range(2):
            for s in stores:
                sync_store(s, remote, yes=True)
        final = [_rows(s) for s in stores]
        for n, rows in enumerate(final[1:], start=1):
            assert rows == final[0], f"seed {seed}: replica {n} differs from replica 0"
        present = {r[0] for r in final[0]}
        marks = _purge_marks(stores[0])
        # a version captured and purged on one machine before it ever synced has no mark
        missing = set(written) - present - set(marks) - purged_direct
        assert not missing, f"seed {seed}: lost without a purge: {sorted(missing)[:5]}"
        back = sorted(purged_direct & present)
        assert not back, f"seed {seed}: purged but back: {back[:5]}"
        surviving = {r[1] for r in final[0]}
        blobs = _remote_bytes(remote)
        leaked = [t for vid, t in written.items() if vid in marks and t not in surviving
                  and json.dumps(t, ensure_ascii=False).encode() in blobs]  # the whole JSON string
        assert not leaked, f"seed {seed}: purged text reachable on the remote: {leaked[:3]}"
        for s in stores:
            assert s.verify().ok, f"seed {seed}: verify failed"
        return {"seed": seed, "versions": len(present), "purge_marks": len(marks), **counts}
    finally:
        for s in stores:
            s.close()


def _purge_marks(store: Any) -> dict[str, Any]:
    from memstore.sync.engine import Base, _base_path
    from memstore.sync.transport import Remote

    for path in (store.home / "sync").glob("base-*.json"):
        data = json.loads(path.read_text())
        base = Base.load(_base_path(store.home, Remote(data["remote"], data["ref"])), store.backend.store_id)
        if base is not None:
            return base.purged
    return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--replicas", type=int, default=4)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    args = parser.parse_args()
    started = time.perf_counter()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        with tempfile.TemporaryDirectory(prefix="sync-convergence-") as tmp:
            t0 = time.perf_counter()
            result = run(seed, args.replicas, args.steps, Path(tmp))
            print(json.dumps({**result, "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
    print(f"all {args.seeds} runs converged ({args.replicas} replicas, {args.steps} steps each) in "
          f"{time.perf_counter() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
