"""Cold CLI figures at one size, on a store with the bundled model's real vectors.

What a user feels once a session has started: fresh ``memstore recall`` / ``capture``
processes with no query worker and with one running (``scripts/bench.py``'s cold section),
next to the machine calibration line (``python -c pass``, ``import numpy``, ``memstore
--version``) measured before and after in the same run. Vectors come from the benchmark
embedding cache where it has them; the rest are embedded by the model here.

    python scripts/bench_cold.py --size 10000 --workdir /tmp/bench-cold
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import TableEmbedder, _machine, cold_runs, real_embedder  # noqa: E402
from corpus import DEFAULT_EVAL, queries, sample_parts  # noqa: E402
from embedcache import CachingEmbedder  # noqa: E402

import memstore  # noqa: E402


def calibration_line(machine: dict) -> str:
    return "machine calibration (fresh process, wall / CPU s): " + ", ".join(
        f"{k} {v['wall']:.3f} / {v['cpu']:.3f}" for k, v in machine["calibration"].items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--cold-runs", type=int, default=10)
    parser.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    texts, _, _ = sample_parts(3 * args.size, eval_dir=args.eval_dir)
    cached = CachingEmbedder().cached(texts)
    unique = list(dict.fromkeys(texts))
    use = ([t for t in unique if t in cached] + [t for t in unique if t not in cached])[: args.size]
    emb = TableEmbedder(real_embedder())
    emb.docs = {t: cached[t] for t in use if t in cached}
    home = args.workdir / "store"
    with memstore.open(home, embedder=emb) as store:
        for i in range(0, len(use), 2000):
            store.capture_many(use[i : i + 2000])
    print(f"{len(use):,} memories ({emb.fallbacks:,} embedded here, the rest from the cache)")
    before = _machine()
    print(calibration_line(before) + f"; load average {before['load_avg_at_start']}")
    result = cold_runs(args, home, queries(6 * args.cold_runs, eval_dir=args.eval_dir))
    after = _machine()
    print(calibration_line(after) + " (after)")
    for key, c in result.items():
        print(f"{key}: {c['wall_p50']:.2f} / {c['wall_p95']:.2f} wall, {c['cpu_p50']:.2f} cpu, "
              f"{c['rss_mb']:.0f} MB")
    (args.workdir / "cold.json").write_text(json.dumps({"before": before, "after": after,
                                                        "cold": result}, indent=1))


if __name__ == "__main__":
    main()
