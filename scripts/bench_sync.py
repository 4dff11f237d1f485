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
from memstore.embedder import HashEmbedder  # noqa: E402
from memstore.sync import sync_store  # noqa: E402

WORDS = ("deploy cache postgres lint release review index queue backup build test docker "
         "schema migration latency budget owner ticket incident rollback feature flag").split()


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
    n = f"{args.memories:,}"
    print(line(f"first sync, {n} memories, sender (in process)", first, cpu["first"], "<= 30 s"))
    print(line(f"first sync, {n} memories, receiver (in process)", receive, cpu["receive"]))
    print(line("incremental, 10 new memories, sender (in process)", incr, cpu["incr"], "<= 2 s"))
    print(line("incremental, 10 new memories, receiver (in process)", incr_b, cpu["incr_b"]))
    print(line("incremental, 10 new memories, `memstore sync` process", cli, cpu["cli"]))

if __name__ == "__main__":
    main()
