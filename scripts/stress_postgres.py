"""Many writers on one team store: nothing lost, nothing stored twice, verify clean; then the
same with writers killed (SIGKILL) mid-batch: nothing confirmed is lost.

    python scripts/stress_postgres.py [--db URL] [--procs 16] [--captures 200] [--kill-procs 8]

Phase 1: ``--procs`` processes, each a different user (``MEMSTORE_USER_NAME``), capture
``--captures`` memories each through ``memstore.open(URL)``; a third of every process's texts
are shared by all of them (the same decision noted by everyone), the rest its own. Each
process writes the id it was given for every text to a result file. Checked: every text
stored exactly once, every process told the id that is stored, authors recorded, verify ok.

Phase 2: ``--kill-procs`` writers capture batches (``capture_many`` of 10) and append each
batch's ids to a file only after the call returned; they are killed with SIGKILL at random
moments. Checked: every confirmed id is stored, no live text twice, verify ok.

The fake hash embedder keeps the machine's 2 cores for the database (embedding is measured
elsewhere); vectors are still stored and verified.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from pgserver import in_schema, server  # noqa: E402

SHARED_EVERY = 3


def texts_for(proc: int, count: int) -> list[str]:
    out = []
    for i in range(count):
        if i % SHARED_EVERY == 0:
            out.append(f"shared decision {i}: we deploy from the main branch only")
        else:
            out.append(f"user {proc} note {i}: the build cache lives in /var/cache/build-{proc}-{i}")
    return out


def child_capture(url: str, proc: int, count: int, out: Path) -> None:
    import memstore
    from memstore.embedding.hash import HashEmbedder

    results = []
    with memstore.open(url, embedder=HashEmbedder()) as store:
        for text in texts_for(proc, count):
            r = store.capture(text, allow_duplicate=True)
            results.append((text, r.id, r.created))
    out.write_text(json.dumps(results))


def child_batches(url: str, proc: int, out: Path) -> None:
    import memstore
    from memstore.embedding.hash import HashEmbedder

    with memstore.open(url, embedder=HashEmbedder()) as store, out.open("a") as fh:
        batch = 0
        while True:
            texts = [f"killable writer {proc} batch {batch} item {j}" for j in range(10)]
            results = store.capture_many(texts)
            fh.write(json.dumps([r.id for r in results]) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            batch += 1


def check(url: str) -> dict[str, object]:
    import psycopg

    import memstore
    from memstore.embedding.hash import HashEmbedder

    with psycopg.connect(url) as conn:
        twice = conn.execute(
            "SELECT count(*) FROM (SELECT content_hash FROM memories WHERE NOT deleted AND "
            "superseded_by IS NULL GROUP BY content_hash HAVING count(*) > 1) d").fetchone()[0]
        total = conn.execute("SELECT count(*) FROM memories").fetchone()[0]
        authors = conn.execute("SELECT count(DISTINCT author) FROM memories").fetchone()[0]
    with memstore.open(url, embedder=HashEmbedder()) as store:
        report = store.verify()
    return {"rows": total, "live_duplicates": twice, "authors": authors, "verify_ok": report.ok,
            "verify": [f"{c.name}: {c.summary}" for c in report.checks]}


def phase1(url: str, procs: int, captures: int, work: Path) -> dict[str, object]:
    env = dict(os.environ, MEMSTORE_QUERY_WORKER_IDLE_SECONDS="0")
    start = time.monotonic()
    children = []
    for p in range(procs):
        penv = dict(env, MEMSTORE_USER_NAME=f"user{p}@example.com")
        children.append(subprocess.Popen(
            [sys.executable, __file__, "--child", "capture", "--url", url, "--proc", str(p),
             "--captures", str(captures), "--out", str(work / f"p{p}.json")], env=penv))
    codes = [c.wait() for c in children]
    seconds = time.monotonic() - start
    import psycopg

    with psycopg.connect(url) as conn:
        stored = dict(conn.execute("SELECT text, id FROM memories").fetchall())
    expected = {t for p in range(procs) for t in texts_for(p, captures)}
    wrong_id = lost = 0
    created = 0
    for p in range(procs):
        for text, mid, was_created in json.loads((work / f"p{p}.json").read_text()):
            created += bool(was_created)
            if text not in stored:
                lost += 1
            elif stored[text] != mid:
                wrong_id += 1
    return {"procs": procs, "captures": procs * captures, "distinct_texts": len(expected),
            "exit_codes_nonzero": sum(c != 0 for c in codes), "seconds": round(seconds, 1),
            "captures_per_s": round(procs * captures / seconds, 1),
            "lost": lost + len(expected - set(stored)), "told_wrong_id": wrong_id,
            "created_reported": created, **check(url)}


def phase2(url: str, procs: int, seconds: float, work: Path) -> dict[str, object]:
    import memstore
    from memstore.embedding.hash import HashEmbedder

    memstore.open(url, embedder=HashEmbedder()).close()  # the schema, before the killing starts
    env = dict(os.environ, MEMSTORE_QUERY_WORKER_IDLE_SECONDS="0")
    rng = random.Random(7)
    kills = 0
    deadline = time.monotonic() + seconds
    children: dict[int, subprocess.Popen[bytes]] = {}
    started_at: dict[int, int] = {}  # the writer's file size when it started
    generation = 0

    def size(p: int) -> int:
        path = work / f"k{p}.jsonl"
        return path.stat().st_size if path.exists() else 0

    while time.monotonic() < deadline:
        for p in range(procs):
            if p not in children or children[p].poll() is not None:
                generation += 1
                started_at[p] = size(p)
                children[p] = subprocess.Popen(
                    [sys.executable, __file__, "--child", "batches", "--url", url,
                     "--proc", str(generation), "--out", str(work / f"k{p}.jsonl")], env=env)
        writing = [p for p in range(procs) if size(p) > started_at[p]]  # past start-up, mid-stream
        if not writing:
            time.sleep(0.2)
            continue
        time.sleep(rng.uniform(0.0, 0.5))  # a random moment: often inside a capture_many call
        victim = rng.choice(writing)
        children[victim].send_signal(signal.SIGKILL)
        children[victim].wait()
        kills += 1
    for c in children.values():
        c.send_signal(signal.SIGKILL)
        c.wait()
        kills += 1
    confirmed = []
    for p in range(procs):
        path = work / f"k{p}.jsonl"
        if path.exists():
            for line in path.read_text().splitlines():
                if line.endswith("]"):
                    confirmed.extend(json.loads(line))
    import psycopg

    with psycopg.connect(url) as conn:
        ids = {r[0] for r in conn.execute("SELECT id FROM memories")}
    return {"writers": procs, "kills": kills, "confirmed": len(confirmed),
            "confirmed_lost": sum(1 for i in confirmed if i not in ids), **check(url)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="PostgreSQL URL (default: a local embedded server)")
    parser.add_argument("--procs", type=int, default=16)
    parser.add_argument("--captures", type=int, default=200)
    parser.add_argument("--kill-procs", type=int, default=8)
    parser.add_argument("--kill-seconds", type=float, default=30.0)
    parser.add_argument("--child", choices=("capture", "batches"))
    parser.add_argument("--url")
    parser.add_argument("--proc", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.child == "capture":
        child_capture(args.url, args.proc, args.captures, args.out)
        return
    if args.child == "batches":
        child_batches(args.url, args.proc, args.out)
        return
    from memstore.storage.urls import redact_url

    with server(args.db) as admin, tempfile.TemporaryDirectory() as tmp:
        print(f"server: {redact_url(admin)}")
        one = phase1(in_schema(admin, "stress_capture"), args.procs, args.captures, Path(tmp))
        print("concurrent captures:", json.dumps(one, indent=2))
        two = phase2(in_schema(admin, "stress_kill"), args.kill_procs, args.kill_seconds, Path(tmp))
        print("kill -9 of writers:", json.dumps(two, indent=2))


if __name__ == "__main__":
    main()
