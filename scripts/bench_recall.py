"""Capture throughput and recall latency at 1k and 10k memories, with the bundled model.

    python scripts/bench_recall.py [--eval-dir ../shared/eval] [--sizes 1000 10000]

Prints medians and p95 (ms) over repeated queries; ratios matter more than absolutes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from corpus import DEFAULT_EVAL, queries, sample  # noqa: E402
from timing import pct  # noqa: E402

import memstore  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()

    qs = queries(args.queries, eval_dir=args.eval_dir)
    print(f"{'size':>7} {'capture/s':>10} {'single capture ms':>18} "
          f"{'mode':>9} {'p50 ms':>8} {'p95 ms':>8}")
    for size in args.sizes:
        texts = sample(size, eval_dir=args.eval_dir)
        with tempfile.TemporaryDirectory() as tmp, memstore.open(Path(tmp) / "s") as store:
            store.embedder.embed(["warm up"])
            start = time.perf_counter()
            store.capture_many(texts)
            rate = size / (time.perf_counter() - start)
            singles = []
            for i in range(20):
                t0 = time.perf_counter()
                store.capture(f"single capture number {i} for the benchmark")
                singles.append((time.perf_counter() - t0) * 1000)
            for mode in ("hybrid", "keyword", "semantic"):
                for q in qs[:5]:
                    store.recall(q, mode=mode)
                times = []
                for q in qs:
                    t0 = time.perf_counter()
                    store.recall(q, mode=mode)
                    times.append((time.perf_counter() - t0) * 1000)
                print(f"{size:>7} {rate:>10.0f} {statistics.median(singles):>18.1f} "
                      f"{mode:>9} {statistics.median(times):>8.2f} {pct(times, 95):>8.2f}")


if __name__ == "__main__":
    main()
