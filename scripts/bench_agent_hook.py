"""Cold latency of the agent hooks (`memstore agent-hook prompt|session-start`) at 10k memories.

    python scripts/bench_agent_hook.py [--eval-dir ../shared/eval] [--size 10000] [--runs 15]

Each run is what an assistant pays: a fresh process reads one hook event on stdin and prints
its context. The store holds ``--size`` realistic texts embedded with the bundled model
(vectors cached by scripts/embedcache.py, the store kept in --store-dir between runs).
Prints, per event and recall mode, wall-time median / p95 / max from process spawn to exit,
which recall answered (hybrid or keyword), and the context size. Baselines: a bare
``python -c pass`` and ``memstore --version`` (interpreter + CLI imports).

Each event and mode runs twice: without the query worker (``query_worker.idle_seconds`` 0:
every new prompt loads the query model, as the first one after a quiet spell does) and with
it (the warm-up run starts it, as the first hook of a session does; stopped afterwards).

The child processes may write bytecode caches (PYTHONDONTWRITEBYTECODE is dropped for
them), as on a normal install; a warm-up run per mode is not counted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from corpus import DEFAULT_EVAL, queries, sample  # noqa: E402
from timing import pct  # noqa: E402

import memstore  # noqa: E402

VERBOSE = re.compile(r"recall (\w+)(?: \(hybrid still running\))?, (\d+) memories, (\d+) chars")




def build_store(directory: Path, size: int, eval_dir: Path) -> None:
    """A store of ``size`` sampled texts, made once and reused while its count matches."""
    if directory.exists():
        with memstore.open(directory) as store:
            if store.stats()["memories"] == size:
                return
        raise SystemExit(f"{directory} holds another store; remove it or pick --store-dir")
    from embedcache import CachingEmbedder

    embedder = CachingEmbedder()
    print(f"building a {size}-memory store in {directory} (vectors cached)...", file=sys.stderr)
    with memstore.open(directory, embedder=embedder) as store:
        store.capture_many(sample(size, eval_dir=eval_dir), progress=True)
        store.recall("warm the vector index", mode="semantic")  # writes the index file


def timed(cmd: list[str], stdin: str, env: dict[str, str]) -> tuple[float, str, str, int]:
    start = time.perf_counter()
    proc = subprocess.run(cmd, input=stdin, capture_output=True, text=True, env=env)
    return time.perf_counter() - start, proc.stdout, proc.stderr, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL)
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--modes", nargs="+", default=["auto", "keyword", "hybrid"])
    parser.add_argument("--events", nargs="+", default=["prompt", "session-start"])
    parser.add_argument("--workers", nargs="+", default=["off", "on"], choices=["off", "on"],
                        help="run without and/or with the query worker")
    parser.add_argument("--store-dir", type=Path,
                        default=Path.home() / ".cache" / "memstore-bench" / "hook-store")
    args = parser.parse_args()

    store_dir = args.store_dir.with_name(f"{args.store_dir.name}-{args.size}")
    build_store(store_dir, args.size, args.eval_dir)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MEMSTORE_") and k != "PYTHONDONTWRITEBYTECODE"}
    env.update(MEMSTORE_HOME=str(store_dir), MEMSTORE_CONFIG=str(store_dir / "no-config.toml"))
    base = [sys.executable, "-m", "memstore"]

    floor = [timed([sys.executable, "-c", "pass"], "", env)[0] for _ in range(5)]
    cli = [timed([*base, "--version"], "", env)[0] for _ in range(5)]
    print(f"store: {args.size} memories in {store_dir}; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f}")
    print(f"baseline: python -c pass {statistics.median(floor) * 1000:.0f} ms, "
          f"memstore --version {statistics.median(cli) * 1000:.0f} ms (medians)")
    print(f"{'event':>13} {'mode':>8} {'worker':>6} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} "
          f"{'hybrid':>6} {'keyword':>7} {'chars p50':>9} {'errors':>6}")
    all_prompts = queries(2 * (args.runs + 1) * len(args.modes) * len(args.events), eval_dir=args.eval_dir)
    cwd = str(Path.cwd())
    from memstore import settings
    from memstore.embedding import BUNDLED_MODEL_ID, query_worker

    env["MEMSTORE_CACHE_DIR"] = str(settings.cache_dir())  # where the hooks' worker lives
    workers = settings.cache_dir() / query_worker.DIR_NAME
    query_worker.stop_worker(BUNDLED_MODEL_ID, workers)
    combos = [(w, e, m) for w in args.workers for e in args.events for m in args.modes]
    for number, (worker, event, mode) in enumerate(combos):
        # New prompts for every combination: none is in the query-vector cache.
        prompts = all_prompts[number * (args.runs + 1):(number + 1) * (args.runs + 1)]
        env["MEMSTORE_QUERY_WORKER_IDLE_SECONDS"] = "0" if worker == "off" else "300"
        times: list[float] = []
        answered = {"hybrid": 0, "keyword": 0, "none": 0}
        chars: list[int] = []
        errors = 0
        for i, prompt in enumerate(prompts):
            name = "UserPromptSubmit" if event == "prompt" else "SessionStart"
            payload = {"session_id": "bench", "cwd": cwd, "hook_event_name": name}
            payload.update({"prompt": prompt} if event == "prompt" else {"source": "startup"})
            elapsed, out, err, code = timed([*base, "agent-hook", event, "--mode", mode, "-v"],
                                            json.dumps(payload), env)
            if i == 0:  # warm-up: bytecode caches, page cache (and the worker's start)
                if worker == "on" and mode != "keyword":
                    wait_for_worker(workers)
                continue
            found = VERBOSE.search(err)
            if code != 0 or not found or "error:" in err:
                errors += 1
                continue
            times.append(elapsed)
            answered[found.group(1)] += 1
            chars.append(int(found.group(3)))
        if not times:
            print(f"{event:>13} {mode:>8} {worker:>6} every run failed")
            continue
        print(f"{event:>13} {mode:>8} {worker:>6} {statistics.median(times) * 1000:>7.0f} "
              f"{pct(times, 95) * 1000:>7.0f} {max(times) * 1000:>7.0f} "
              f"{answered['hybrid']:>6} {answered['keyword']:>7} "
              f"{statistics.median(chars):>9.0f} {errors:>6}")
    query_worker.stop_worker(BUNDLED_MODEL_ID, workers)


def wait_for_worker(directory: Path, limit: float = 120.0) -> None:
    """Until the query worker started by the warm-up run serves (its socket exists)."""
    from memstore.embedding import BUNDLED_MODEL_ID, query_worker

    socket = query_worker._Paths(directory, BUNDLED_MODEL_ID).socket
    end = time.monotonic() + limit
    while not socket.exists():
        if time.monotonic() > end:
            raise SystemExit(f"no query worker came up in {limit:g} s (see {directory / 'worker.log'})")
        time.sleep(0.1)


if __name__ == "__main__":
    main()
