"""How long after `git commit` returns its memory can be recalled (through `memstore hooks install`).

    python scripts/commit_to_recall.py [--commits 10]

Builds a throwaway repository and store, installs the hooks (detached, as users get them), makes
``--commits`` commits, and after each one polls the database read-only until the commit's
message is in the full-text index (what keyword recall searches). Prints each delay, the
median, and the machine calibration line of scripts/bench.py (the figure is mostly the
background process's Python start-up, so it scales with how busy the machine is).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import _machine  # noqa: E402


def _indexed(db: Path, word: str) -> bool:
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            query = "SELECT count(*) FROM memories_fts WHERE memories_fts MATCH ?"
            return bool(conn.execute(query, (word,)).fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return False  # not created yet, or mid-write


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--commits", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="memstore-commit-") as tmp:
        repo, home = Path(tmp) / "repo", Path(tmp) / "store"
        env = {**os.environ, "MEMSTORE_HOME": str(home), "GIT_CONFIG_NOSYSTEM": "1"}
        env.pop("MEMSTORE_HOOK_SYNC", None)

        def git(*argv: str) -> None:
            subprocess.run(["git", *argv], cwd=repo, env=env, check=True, capture_output=True)

        repo.mkdir()
        git("init", "-q")
        git("config", "user.email", "bench@example.com")
        git("config", "user.name", "bench")
        subprocess.run([sys.executable, "-m", "memstore", "hooks", "install"], cwd=repo, env=env,
                       check=True, capture_output=True)
        delays = []
        for i in range(args.commits + 1):  # the first one also creates the store: not counted
            word = f"zebrafish{i}q{time.time_ns()}"
            (repo / "notes.txt").write_text(word + "\n")
            git("add", "notes.txt")
            git("commit", "-qm", f"Record {word}")
            started = time.monotonic()
            while not _indexed(home / "memstore.db", word):
                time.sleep(0.005)
            if i:
                delays.append(time.monotonic() - started)
        machine = _machine()
    print("seconds from `git commit` returning to the commit being found by keyword recall:")
    print("  " + " ".join(f"{d:.2f}" for d in delays))
    print(f"  median {statistics.median(delays):.2f} s over {len(delays)} commits")
    print(f"machine: {machine['cpus']} CPUs, load average {machine['load_avg_at_start']}; calibration "
          "(fresh process, wall / CPU s): " + ", ".join(
              f"{k} {v['wall']:.3f} / {v['cpu']:.3f}" for k, v in machine["calibration"].items()))


if __name__ == "__main__":
    main()
