"""How long sync takes: first sync of N memories to a local bare remote, and an incremental
sync with 10 new memories (targets: 10k first ≤ 30 s, incremental ≤ 2 s). Medians.

    python scripts/bench_sync.py [--memories 10000] [--runs 3]

Memories are made with the hash embedder (fast to generate); their vectors travel with
them, so the receiving store (same model) embeds nothing. Measured in this process
(``sync_store``: fetch, validate, merge, apply, commit, push) and, for the incremental case,
as a fresh ``memstore sync`` process too (Python start-up and imports included). The
machine calibration line is scripts/bench.py's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import memstore  # noqa: E402
from memstore.embedding import HashEmbedder  # noqa: E402
from memstore.sync import sync_store  # noqa: E402

WORDS = ["deploy", "cache", "postgres", "lint", "release", "review", "index", "queue", "backup", "build",
         "test", "docker", "schema", "migration", "latency", "budget", "owner", "ticket", "incident",
         "rollback", "feature", "flag"]


def texts(n: int, start: int = 0) -> list[str]:
    import random

    rng = random.Random(start)
    return [f"memory {i}: " + " ".join(rng.choice(WORDS) for _ in range(12)) for i in range(start, start + n)]


CPU: list[float] = []  # CPU seconds (this process and its git children) of each timed run


def _cpu() -> float:
    import resource

    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    """Wall seconds of fn(); its CPU seconds go to CPU."""
    t0, c0 = time.perf_counter(), _cpu()
    fn()
    CPU.append(_cpu() - c0)
    return time.perf_counter() - t0


def line(label: str, walls: list[float], cpus: list[float], target: str = "") -> str:
    med = statistics.median
    return (f"{label:<55} wall median {med(walls):6.2f} s, CPU median {med(cpus):6.2f} s  "
            f"(wall runs {', '.join(f'{x:.2f}' for x in walls)}{'; target ' + target if target else ''})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from bench import _machine

    machine = _machine()
    print(f"machine: {machine['cpus']} CPUs, Python {machine['python']}, load average at start "
          f"{machine['load_avg_at_start']}")
    print("machine calibration (fresh process, wall / CPU s): " + ", ".join(
        f"{k} {v['wall']:.3f} / {v['cpu']:.3f}" for k, v in machine["calibration"].items()))
    cpu: dict[str, list[float]] = {"first": [], "receive": [], "incr": [], "incr_b": [], "cli": []}
    walls: dict[str, list[float]] = {k: [] for k in cpu}

    def measure(key: str, fn) -> None:  # type: ignore[no-untyped-def]
        walls[key].append(timed(fn))
        cpu[key].append(CPU[-1])

    with tempfile.TemporaryDirectory(prefix="bench-sync-") as tmp_name:
        tmp = Path(tmp_name)
        t0 = time.perf_counter()
        with memstore.open(tmp / "a", embedder=HashEmbedder()) as a:
            a.capture_many([{"text": t, "namespace": "bench"} for t in texts(args.memories)])
            print(f"made {args.memories:,} memories in {time.perf_counter() - t0:.1f} s (hash embedder)")
            for run in range(args.runs):
                remote = tmp / f"remote{run}.git"
                subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
                shutil.rmtree(a.home / "sync", ignore_errors=True)
                measure("first", lambda r=remote: sync_store(a, str(r), yes=True))
                with memstore.open(tmp / f"b{run}", embedder=HashEmbedder()) as b:
                    measure("receive", lambda r=remote, b=b: sync_store(b, str(r), yes=True))
                    assert b.stats()["without_current_vector"] == 0  # the vectors travelled
                    for k in range(2):
                        a.capture_many(texts(10, start=10_000_000 + run * 100 + k * 10))
                        measure("incr", lambda r=remote: sync_store(a, str(r)))
                        measure("incr_b", lambda r=remote, b=b: sync_store(b, str(r)))
            env = {**os.environ, "MEMSTORE_HOME": str(a.home), "MEMSTORE_EMBEDDER": "hash",
                   "MEMSTORE_QUERY_WORKER_IDLE_SECONDS": "0"}
            cmd = [sys.executable, "-m", "memstore", "sync", "--remote", str(remote), "--json"]
            for k in range(args.runs):
                a.capture_many(texts(10, start=20_000_000 + k * 10))
                measure("cli", lambda c=cmd: subprocess.run(c, env=env, check=True, capture_output=True))
    n = f"{args.memories:,}"
    print(line(f"first sync, {n} memories, sender (in process)", walls["first"], cpu["first"], "<= 30 s"))
    print(line(f"first sync, {n} memories, receiver (in process)", walls["receive"], cpu["receive"]))
    print(line("incremental, 10 new memories, sender (in process)", walls["incr"], cpu["incr"], "<= 2 s"))
    print(line("incremental, 10 new memories, receiver (in process)", walls["incr_b"], cpu["incr_b"]))
    print(line("incremental, 10 new memories, `memstore sync` process", walls["cli"], cpu["cli"]))


if __name__ == "__main__":
    main()
