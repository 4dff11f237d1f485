"""What memstore's git hook adds to `git commit`: wall time with and without it.

    python scripts/bench_hook.py [--commits 30] [--embedder auto|hash] [--sync-commits 5]

Two temporary repositories (git config isolated from yours, a temporary memstore home): one
plain, one with `memstore hooks install`. Commits alternate between them; each `git commit`
is timed from the outside (what the user waits for). After each hooked commit the script waits
(untimed) until the detached hook process has logged the commit as stored and embedded, so
its CPU never overlaps the next timed commit, and reports that background latency too.
A few commits with MEMSTORE_HOOK_SYNC=1 show what the same work would cost in the foreground.
Prints medians and p90 in milliseconds; on a shared 2-core machine trust the medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from timing import pct

from memstore.settings import cache_dir

HOOK_LOG = "memstore-hook.log"




def git(repo: Path, *args: str, env: dict[str, str]) -> str:
    return subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True,
                          text=True).stdout


def make_repo(path: Path, env: dict[str, str]) -> None:
    path.mkdir(parents=True)
    git(path, "init", "-q", "-b", "main", env=env)
    git(path, "config", "user.name", "Bench", env=env)
    git(path, "config", "user.email", "bench@example.com", env=env)
    git(path, "config", "commit.gpgsign", "false", env=env)


def timed_commit(repo: Path, number: int, env: dict[str, str]) -> tuple[float, str]:
    """Stage a change (untimed), then time `git commit` as the user would wait for it."""
    (repo / "notes.txt").write_text(f"change {number}\n")
    git(repo, "add", "notes.txt", env=env)
    message = (f"Change {number}: tune the retry backoff of the worker queue\n\n"
               "Jitter keeps the workers from retrying in lockstep after an outage.")
    start = time.perf_counter()
    subprocess.run(["git", "commit", "-q", "-m", message], cwd=repo, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elapsed = (time.perf_counter() - start) * 1000
    return elapsed, git(repo, "rev-parse", "HEAD", env=env).strip()


def wait_recorded(repo: Path, sha: str, started: float, timeout: float = 300) -> float:
    """Milliseconds from `started` until the hook log says the commit was stored."""
    log = repo / ".git" / HOOK_LOG
    needle = f"stored {sha[:12]}"
    while True:
        text = log.read_text() if log.exists() else ""
        if needle in text:
            line = next(line for line in text.splitlines() if needle in line)
            if "FAILED" in line:
                raise SystemExit(f"hook failed: {line}")
            return (time.perf_counter() - started) * 1000
        if "FAILED" in text:
            raise SystemExit(f"hook failed:\n{text}")
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"hook did not record {sha} within {timeout}s:\n{text}")
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--commits", type=int, default=30, help="timed commits per variant (>= 20)")
    parser.add_argument("--sync-commits", type=int, default=5, help="commits with the hook in the foreground")
    parser.add_argument("--embedder", choices=("auto", "hash"), default="auto",
                        help="the model the background process embeds with (auto: the bundled one)")
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-hook-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "home").mkdir()
        (tmp / "gitconfig").write_text("")
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "MEMSTORE_"))},
            "HOME": str(tmp / "home"), "XDG_CONFIG_HOME": str(tmp / "home" / ".config"),
            "GIT_CONFIG_GLOBAL": str(tmp / "gitconfig"), "GIT_CONFIG_NOSYSTEM": "1",
            "MEMSTORE_HOME": str(tmp / "store"), "MEMSTORE_CONFIG": str(tmp / "config.toml"),
            "MEMSTORE_EMBEDDER": args.embedder,
        }
        # keep the assembled model where it already is (HOME moves into the temp dir)
        env["MEMSTORE_CACHE_DIR"] = str(cache_dir())
        plain, hooked = tmp / "plain", tmp / "hooked"
        make_repo(plain, env)
        make_repo(hooked, env)
        subprocess.run([sys.executable, "-m", "memstore", "hooks", "install", "--repo", str(hooked)],
                       env=env, check=True, stdout=subprocess.DEVNULL)

        times: dict[str, list[float]] = {"plain": [], "hooked": [], "sync": []}
        background: list[float] = []
        number = 0
        for round_ in range(args.warmup + args.commits):
            order = ("plain", "hooked") if round_ % 2 == 0 else ("hooked", "plain")
            for variant in order:
                number += 1
                repo = plain if variant == "plain" else hooked
                started = time.perf_counter()
                elapsed, sha = timed_commit(repo, number, env)
                if variant == "hooked":
                    latency = wait_recorded(repo, sha, started)
                    if round_ >= args.warmup:
                        background.append(latency)
                if round_ >= args.warmup:
                    times[variant].append(elapsed)
        sync_env = {**env, "MEMSTORE_HOOK_SYNC": "1"}
        for _ in range(args.sync_commits):
            number += 1
            elapsed, sha = timed_commit(hooked, number, sync_env)
            wait_recorded(hooked, sha, time.perf_counter())
            times["sync"].append(elapsed)
        embedded = subprocess.run(
            [sys.executable, "-m", "memstore", "stats", "--json"], env=env, check=True,
            capture_output=True, text=True,
        ).stdout

    import json

    stats = json.loads(embedded)
    print(f"git commit wall time, {args.commits} timed commits per variant after {args.warmup} warm-up "
          f"(embedder: {stats['model']['model_id']}, {os.cpu_count()} CPUs)")
    print(f"{'variant':<36} {'n':>3} {'median ms':>10} {'p90 ms':>8} {'min ms':>8}")
    labels = {"plain": "no hook", "hooked": "memstore hook (detached, default)",
              "sync": "memstore hook, MEMSTORE_HOOK_SYNC=1"}
    for key, label in labels.items():
        values = times[key]
        if values:
            print(f"{label:<36} {len(values):>3} {statistics.median(values):>10.1f} "
                  f"{pct(values, 90):>8.1f} {min(values):>8.1f}")
    added = statistics.median(times["hooked"]) - statistics.median(times["plain"])
    print(f"added to git commit by the hook (difference of medians): {added:+.1f} ms (budget: 100 ms)")
    print(f"background: stored and embedded {statistics.median(background):.0f} ms after the commit "
          f"started (median; p90 {pct(background, 90):.0f} ms)")
    print(f"store: {stats['memories']} memories, {stats['pending_embeddings']} pending embeddings")


if __name__ == "__main__":
    main()
