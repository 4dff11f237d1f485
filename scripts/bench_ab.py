"""Recall latency of two source trees of memstore, side by side in one run (A/B).

    python scripts/bench_ab.py --tree before=/tmp/memstore-before --tree after=. --size 10000

Each tree builds its own store from the same texts and the same real vectors (bundled model,
cached by scripts/embedcache.py), through the public API only, so any two versions compare.
Then rounds alternate between the trees (A, B, A, B, ...): each round is a fresh child process
(PYTHONPATH = that tree) that warms up and times ``--queries`` warm in-process recalls per mode
with the query vectors given (the store's own work). Printed: wall p50 / p95 and CPU p50 (ms) per
tree and mode over all rounds, and the ratio of p50s (after / before), next to the machine
calibration line of scripts/bench.py.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402

MODES = ("hybrid", "keyword", "semantic")


class TableEmbedder:
    """Vectors from tables: documents by text, queries by text (no model in the child)."""

    model_id = "all-MiniLM-L6-v2:bench-table"
    dimension = 384

    def __init__(self, docs: dict[str, np.ndarray], queries: dict[str, np.ndarray]) -> None:
        self.docs = docs
        self.queries = queries

    def embed(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.docs[t] for t in texts]) if texts else np.zeros((0, 384), np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self.queries[text]


def child(args: argparse.Namespace) -> None:
    import memstore

    spec = json.loads(Path(args.spec).read_text())
    items = spec["items"]
    matrix = np.load(spec["vectors"])
    qtexts = spec["queries"]
    qvecs = np.load(spec["query_vectors"])
    emb = TableEmbedder({it["text"]: matrix[i] for i, it in enumerate(items)},
                        dict(zip(qtexts, qvecs, strict=True)))
    home = Path(args.home)
    if args.build:
        with memstore.open(home, embedder=emb) as store:
            store.capture_many(items, redact=False)  # the texts as the vector table has them
            store.reindex()
        print(json.dumps({"built": len(items)}))
        return
    out: dict[str, Any] = {}
    with memstore.open(home, embedder=emb) as store:
        store.recall(qtexts[0], mode="hybrid")
        for mode in MODES:
            for q in qtexts[:10]:
                store.recall(q, mode=mode)
            wall, cpu = [], []
            for q in qtexts:
                w, c = time.perf_counter(), time.process_time()
                store.recall(q, mode=mode)
                wall.append((time.perf_counter() - w) * 1000)
                cpu.append((time.process_time() - c) * 1000)
            out[mode] = {"wall": wall, "cpu": cpu}
    print(json.dumps(out))


def run_child(tree: Path, argv: list[str]) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree), "MEMSTORE_QUERY_WORKER_IDLE_SECONDS": "0"}
    done = subprocess.run([sys.executable, __file__, *argv], env=env, capture_output=True, text=True,
                          check=False, cwd=tree)
    if done.returncode != 0:
        sys.exit(f"child in {tree} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", action="append", default=[], metavar="NAME=PATH",
                        help="a source tree to measure (give two; the first is the baseline)")
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--eval-dir", type=Path, default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--build", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if len(args.tree) != 2:
        parser.error("give --tree NAME=PATH twice")
    trees = [(name, Path(path).resolve()) for name, path in (t.split("=", 1) for t in args.tree)]

    from bench import _machine, corpus_for, corpus_vectors
    from corpus import DEFAULT_EVAL, queries
    from embedcache import DEFAULT_DIR, CachingEmbedder

    eval_dir = args.eval_dir or DEFAULT_EVAL
    m = _machine()
    print(f"memstore A/B: {m['cpus']} CPUs, Python {m['python']}, load average at start "
          f"{m['load_avg_at_start']}")
    print("machine calibration (fresh process, wall / CPU s): " + ", ".join(
        f"{k} {v['wall']:.3f} / {v['cpu']:.3f}" for k, v in m["calibration"].items()), flush=True)
    work = Path(tempfile.mkdtemp(prefix="memstore-ab-"))
    cache = CachingEmbedder(directory=DEFAULT_DIR)
    items, parts, pool = corpus_for(args.size, eval_dir)
    vectors = corpus_vectors(items, parts, pool, cache, work / "vectors.npy")
    qtexts = queries(args.queries, eval_dir=eval_dir)
    np.save(work / "queries.npy", np.stack([cache.embed_query(q) for q in qtexts]))
    spec = work / "spec.json"
    spec.write_text(json.dumps({"items": items, "vectors": str(vectors), "queries": qtexts,
                                "query_vectors": str(work / "queries.npy")}))
    for name, tree in trees:
        run_child(tree, ["--child", "--build", "--spec", str(spec), "--home", str(work / name)])
    samples: dict[str, dict[str, dict[str, list[float]]]] = {
        name: {m: {"wall": [], "cpu": []} for m in MODES} for name, _ in trees
    }
    for _ in range(args.rounds):
        for name, tree in trees:
            got = run_child(tree, ["--child", "--spec", str(spec), "--home", str(work / name)])
            for mode in MODES:
                for key in ("wall", "cpu"):
                    samples[name][mode][key] += got[mode][key]
    print(f"{args.size:,} memories, {len(qtexts)} queries x {args.rounds} rounds per tree, alternating")
    print(f"{'mode':<9}" + "".join(f"{name + ' wall p50/p95 · cpu p50':>34}" for name, _ in trees)
          + f"{'p50 ratio':>11}")
    (base, _), (other, _) = trees
    for mode in MODES:
        cells, p50 = [], {}
        for name, _ in trees:
            wall, cpu = samples[name][mode]["wall"], samples[name][mode]["cpu"]
            p50[name] = statistics.median(wall)
            p95 = sorted(wall)[int(0.95 * len(wall))]
            cells.append(f"{p50[name]:8.2f} / {p95:7.2f} · {statistics.median(cpu):7.2f}")
        print(f"{mode:<9}" + "".join(f"{c:>34}" for c in cells) + f"{p50[other] / p50[base]:>10.3f}x")


if __name__ == "__main__":
    main()
