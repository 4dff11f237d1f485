"""Crash safety: kill -9 a process at random points of capture_many and reindex, then check.

    python scripts/crashtest.py [--kills 100] [--max-delay 2.0] [--seed 1] [--real-model]
                                [--home DIR] [--json]

Each round starts a child process on the same store. Capture rounds call capture_many with
batches of 1–60 new memories (batch_size 16, so one call spans several transactions) and
recall now and then (so the shared vector index is loaded, updated and saved all the time);
reindex rounds capture a little, then run ``reindex(force=True)`` over the whole store
(re-embedding every memory in transactions of 256 and rebuilding and saving the index).
After every call that returned, the child appends the ids it got (with a hash of their text)
to a log and fsyncs it. The parent kills the child with SIGKILL at a random moment, then
opens the store and checks:

- every capture that returned is present, live, with the text it returned;
- nothing is half-written: PRAGMA integrity_check, FTS ↔ table, tags, every live memory has
  its embedding (MemoryStore.verify());
- the vector index catches up by itself: a semantic recall after opening loads the saved
  index (or rebuilds it), replays the log, and then holds exactly the live vectors.

Exit status 0 only when every round passes.
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
from typing import Any

CHILD = r"""
import os, sys, random, xxhash
import memstore
from memstore.embedding import HashEmbedder

home, mode, log_path, status_path, seed, real = sys.argv[1:7]
rng = random.Random(int(seed))
log = open(log_path, "a", encoding="utf-8")

def phase(name):
    with open(status_path, "w") as fh:
        fh.write(name)

def confirm(results):
    for r in results:
        log.write(f"{r.id}\t{xxhash.xxh3_64_hexdigest(r.text.encode())}\n")
    log.flush()
    os.fsync(log.fileno())

topics = ["postgres", "deploys", "retry backoff", "canary", "ruff", "JSONB", "flaky CI", "hooks"]
store = memstore.open(home, embedder=None if real == "1" else HashEmbedder())
store.embedder.embed(["warm up"])  # imports (numpy, the model) happen before the clock starts
import usearch.index  # noqa: F401,E402
print("ready", flush=True)
n = 0
while True:
    k = rng.randint(1, 60)
    texts = [f"round {seed} memory {n + i} about {rng.choice(topics)} ({rng.random():.12f})"
             for i in range(k)]
    n += k
    phase("capture_many")
    results = store.capture_many(texts, batch_size=16)
    phase("between calls")
    confirm(results)
    if mode == "reindex":
        phase("reindex")
        store.reindex(force=True)
        phase("between calls")
    elif rng.random() < 0.3:
        phase("recall")
        store.recall(rng.choice(topics), mode="semantic", limit=5)
        phase("between calls")
"""


def _open(home: Path, real: bool) -> Any:
    import memstore
    from memstore.embedding import HashEmbedder

    return memstore.open(home, embedder=None if real else HashEmbedder())


def run_round(args: argparse.Namespace, home: Path, work: Path, n: int, mode: str,
              rng: random.Random) -> dict[str, Any]:
    log_path = work / f"confirmed-{n}.log"
    status_path = work / f"phase-{n}"
    env = dict(os.environ)
    if not args.real_model:
        env["MEMSTORE_EMBEDDER"] = "hash"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(home), mode, str(log_path), str(status_path),
         str(args.seed * 100_000 + n), "1" if args.real_model else "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    assert child.stdout is not None
    ready = child.stdout.readline().strip()
    if ready != "ready":
        _, err = child.communicate(timeout=30)
        return {"mode": mode, "error": f"child did not start: {err.strip()[-500:]}"}
    time.sleep(rng.uniform(0.02, args.max_delay))
    landed = status_path.read_text() if status_path.exists() else "before the first call"
    landed = landed or "between calls"  # killed while rewriting the phase marker
    child.send_signal(signal.SIGKILL)
    _, err = child.communicate(timeout=60)
    died_early = child.returncode != -signal.SIGKILL
    confirmed = []
    if log_path.exists():
        for line in log_path.read_text().splitlines():
            memory_id, digest = line.split("\t")
            confirmed.append((memory_id, digest))
    return {"mode": mode, "landed": landed, "confirmed": confirmed,
            "error": f"child exited by itself ({child.returncode}): {err.strip()[-500:]}"
            if died_early else None}


def check(home: Path, args: argparse.Namespace, confirmed: list[tuple[str, str]]) -> dict[str, Any]:
    import sqlite3

    import xxhash

    import memstore

    missing = wrong_text = 0
    with _open(home, args.real_model) as store:
        # The index catches up by itself: the first semantic recall loads and replays it.
        store.recall("postgres deploys", mode="semantic", limit=3)
        notices = list(store.notices)
        in_memory = len(store.backend._cache.index) if store.backend._cache.index is not None else 0
        for memory_id, digest in confirmed:
            try:
                memory = store.get(memory_id)
            except memstore.NotFoundError:
                missing += 1
                continue
            if memory.deleted or xxhash.xxh3_64_hexdigest(memory.text.encode()) != digest:
                wrong_text += 1
        report = store.verify()
        live = store.stats()["memories"]
    conn = sqlite3.connect(home / "memstore.db")
    live_vectors = conn.execute(
        "SELECT count(*) FROM embeddings e JOIN memories m ON m.seq = e.seq "
        "WHERE m.deleted = 0 AND m.superseded_by IS NULL").fetchone()[0]
    conn.close()
    return {
        "missing": missing, "wrong_text": wrong_text, "live": live, "live_vectors": live_vectors,
        "index_in_memory": in_memory, "verify_ok": report.ok,
        "verify_failed": [f"{c.name}: {c.summary}; {'; '.join(c.problems)}"
                          for c in report.checks if not c.ok],
        "notices": notices,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kills", type=int, default=100)
    parser.add_argument("--max-delay", type=float, default=2.0,
                        help="longest wait (s) after the child is ready before killing it")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--real-model", action="store_true", help="embed with the bundled model")
    parser.add_argument("--home", type=Path, help="store directory (default: a fresh temporary one)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    tmp = tempfile.TemporaryDirectory(prefix="memstore-crash-")
    work = Path(tmp.name)
    home = args.home or work / "store"
    if not args.real_model:
        os.environ["MEMSTORE_EMBEDDER"] = "hash"

    confirmed: list[tuple[str, str]] = []
    rounds: list[dict[str, Any]] = []
    start = time.perf_counter()
    for n in range(args.kills):
        mode = "capture_many" if n % 2 == 0 else "reindex"
        outcome = run_round(args, home, work, n, mode, rng)
        confirmed += outcome.get("confirmed", [])
        result = check(home, args, confirmed)
        result.update(mode=mode, landed=outcome.get("landed"), error=outcome.get("error"),
                      confirmed_total=len(confirmed))
        rounds.append(result)
        ok = (not result["error"] and not result["missing"] and not result["wrong_text"]
              and result["verify_ok"] and result["index_in_memory"] == result["live_vectors"]
              and result["live_vectors"] == result["live"])
        result["ok"] = ok
        if not args.json:
            status = "ok" if ok else "FAIL"
            print(f"  kill {n + 1:>3} {mode:<12} during {result['landed']:<20} confirmed "
                  f"{len(confirmed):>6} live {result['live']:>6} {status}"
                  + (f"  {result['error'] or ''} {result['verify_failed']}" if not ok else ""),
                  flush=True)
    elapsed = time.perf_counter() - start
    landed: dict[str, int] = {}
    for r in rounds:
        landed[r["landed"]] = landed.get(r["landed"], 0) + 1
    figures = {
        "kills": len(rounds),
        "kills_during": landed,
        "captures_confirmed": len(confirmed),
        "confirmed_missing": sum(r["missing"] for r in rounds[-1:]),
        "confirmed_missing_any_round": sum(1 for r in rounds if r["missing"]),
        "confirmed_wrong_text_any_round": sum(1 for r in rounds if r["wrong_text"]),
        "committed_not_confirmed": rounds[-1]["live"] - len(confirmed) if rounds else 0,
        "verify_failures": sum(1 for r in rounds if not r["verify_ok"]),
        "index_not_caught_up": sum(1 for r in rounds if r["index_in_memory"] != r["live_vectors"]),
        "index_rebuilt_notices": sum(1 for r in rounds for n in r["notices"] if "rebuilt" in n),
        "child_errors": sum(1 for r in rounds if r["error"]),
        "final_live_memories": rounds[-1]["live"] if rounds else 0,
        "seconds": round(elapsed, 1),
        "failed_rounds": sum(1 for r in rounds if not r["ok"]),
    }
    figures["passed"] = figures["failed_rounds"] == 0
    if args.json:
        print(json.dumps(figures, indent=1))
    else:
        print(f"crashtest: {figures['kills']} kill -9 ({'bundled model' if args.real_model else 'hash'}"
              " embedder)")
        for name, value in figures.items():
            print(f"  {name:<32} {value}")
        print("PASS" if figures["passed"] else "FAIL")
    tmp.cleanup()
    return 0 if figures["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
