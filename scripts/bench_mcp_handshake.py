"""Start-up of `memstore mcp` as a host sees it: spawn, initialize, tools/list.

    python scripts/bench_mcp_handshake.py [--runs 15] [--home DIR]

Each run spawns a fresh server and speaks plain JSON-RPC over its stdio, the way a host
(Claude Code, an IDE) does: ``initialize``, ``notifications/initialized``, ``tools/list``.
Prints wall-time median / p95 / max from spawn to the tools/list answer, the server
process's own CPU time at that moment (less sensitive to a busy machine than wall time),
and the same for baselines: a bare interpreter and ``import mcp`` alone, which bound what
any server built on the SDK can reach. The store (``--home``, default a temporary
directory) is not opened by the handshake; the model is not loaded.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from timing import pct

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "bench", "version": "0"}}}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process (Linux /proc; 0.0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def handshake(cmd: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    assert proc.stdin is not None and proc.stdout is not None

    def send(message: dict) -> None:
        proc.stdin.write(json.dumps(message) + "\n")
        proc.stdin.flush()

    send(INIT)
    reply = json.loads(proc.stdout.readline())
    assert reply.get("id") == 1 and "result" in reply, reply
    send({"jsonrpc": "2.0", "method": "notifications/initialized"})
    send({"jsonrpc": "2.0", "id": 2, "method": "tools/list"})
    reply = json.loads(proc.stdout.readline())
    elapsed = time.perf_counter() - start
    cpu = cpu_seconds(proc.pid)
    proc.stdin.close()
    proc.wait(timeout=30)
    return elapsed, cpu, len(reply["result"]["tools"])


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall time and CPU time (user + system) of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)




def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--home", help="store directory (default: a temporary one)")
    args = parser.parse_args()

    home = args.home or tempfile.mkdtemp(prefix="memstore-mcp-bench-")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("MEMSTORE_") and k != "PYTHONDONTWRITEBYTECODE"}
    env["MEMSTORE_HOME"] = home
    server = [sys.executable, "-m", "memstore", "mcp"]
    handshake(server, env)  # warm-up: bytecode caches, page cache
    runs = [handshake(server, env) for _ in range(args.runs)]
    bare = [timed([sys.executable, "-c", "pass"], env) for _ in range(5)]
    sdk = [timed([sys.executable, "-c", "import mcp.server.mcpserver"], env) for _ in range(5)]

    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}; {runs[0][2]} tools listed; "
          f"store opened by the handshake: {os.path.exists(os.path.join(home, 'memstore.db'))}")
    print(f"{'what':>36} {'p50 ms':>7} {'p95 ms':>7} {'max ms':>7} {'cpu p50 ms':>10}")
    for label, rows in (("memstore mcp: initialize+tools/list", [r[:2] for r in runs]),
                        ("python -c pass", bare), ("import mcp.server.mcpserver", sdk)):
        walls = [r[0] for r in rows]
        cpus = [r[1] for r in rows]
        print(f"{label:>36} {statistics.median(walls) * 1000:>7.0f} {pct(walls, 95) * 1000:>7.0f} "
              f"{max(walls) * 1000:>7.0f} {statistics.median(cpus) * 1000:>10.0f}")

if __name__ == "__main__":
    main()
