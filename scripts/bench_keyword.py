"""The derived keyword index against FTS5's own ranking, in one run, on the benchmark corpus.

Builds a store of N memories (LoCoMo turns and SciFact sentences, pairs joined past the
distinct texts, as ``scripts/bench.py`` does) with hash vectors (no model needed: the keyword
leg does not look at vectors, and the vector leg's cost does not depend on their values), then
opens it twice — ranking with the derived index, and with FTS5 alone — and reports warm
in-process recall latency per mode with the query vector given (wall p50 / p95 · CPU p50,
ms), how many top-10s (hybrid) and top-200s (keyword leg) are identical, the index's build
time and size. Prints the machine
calibration line of ``scripts/bench.py`` first.

    python scripts/bench_keyword.py --sizes 10000 100000
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import _machine  # noqa: E402
from corpus import DEFAULT_EVAL, queries, sample_parts  # noqa: E402
from timing import pct  # noqa: E402

from memstore.embedding import HashEmbedder  # noqa: E402
from memstore.storage.sqlite import SQLiteBackend  # noqa: E402
from memstore.store import MemoryStore  # noqa: E402


class GivenQueries(HashEmbedder):
    """Hash vectors, with the benchmark queries' vectors computed once beforehand (the query
    vector is given, as in ``scripts/bench.py``: the store's own work is what is timed)."""

    def __init__(self, qtexts: list[str]) -> None:
        super().__init__()
        self.table = {q: HashEmbedder.embed_query(self, q) for q in qtexts}

    def embed_query(self, text: str):  # noqa: ANN201 - the Embedder protocol's signature
        found = self.table.get(text)
        return found if found is not None else HashEmbedder.embed_query(self, text)


class Samples:
    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def __enter__(self) -> None:
        self._w, self._c = time.perf_counter(), time.process_time()

    def __exit__(self, *exc: object) -> None:
        self.wall.append((time.perf_counter() - self._w) * 1000)
        self.cpu.append((time.process_time() - self._c) * 1000)

    def cell(self) -> str:
        return (f"{statistics.median(self.wall):.2f} / {pct(self.wall, 95):.2f} · "
                f"{statistics.median(self.cpu):.2f}")


def build(home: Path, size: int, eval_dir: Path) -> float:
    texts, _parts, _pool = sample_parts(size, eval_dir=eval_dir)
    start = time.perf_counter()
    with MemoryStore(home, embedder=HashEmbedder(), backend=SQLiteBackend(home)) as store:
        for i in range(0, len(texts), 5000):
            store.capture_many([{"text": t, "tags": ["bench"]} for t in texts[i : i + 5000]])
    return time.perf_counter() - start


def measure(home: Path, minimum: int, qtexts: list[str]) -> tuple[dict[str, Samples], dict[str, list], float]:
    backend = SQLiteBackend(home, keyword_index_min=minimum)
    out: dict[str, Samples] = {}
    ranked: dict[str, list] = {}
    with MemoryStore(home, embedder=GivenQueries(qtexts), backend=backend) as store:
        start = time.perf_counter()
        store.recall("warm up both indexes", mode="hybrid")
        first = time.perf_counter() - start
        for mode in ("hybrid", "keyword", "semantic"):
            for q in qtexts[:10]:
                store.recall(q, mode=mode)
            samples = Samples()
            for q in qtexts:
                with samples:
                    hits = store.recall(q, mode=mode)
                if mode == "hybrid":
                    ranked.setdefault("hybrid", []).append([(h.memory.id, h.score) for h in hits])
            out[mode] = samples
        leg = []
        for q in qtexts:  # the keyword leg's deeper list (what fusion reads: 4 × 50 × 2)
            from memstore.storage.base import Filter

            found = store.backend.keyword_leg(q).search(Filter(), 200)
            leg.append([(m.key, m.bm25) for m in found])
        ranked["leg"] = leg
    return out, ranked, first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    machine = _machine()
    print("machine calibration (fresh process, wall / CPU s): " + ", ".join(
        f"{k} {v['wall']:.3f} / {v['cpu']:.3f}" for k, v in machine["calibration"].items())
        + f"; load average at start {machine['load_avg_at_start']}")
    qtexts = queries(args.queries, eval_dir=args.eval_dir)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-keyword-"))
    results = {}
    print("\n| memories | ranking | hybrid | keyword | semantic | first recall s (builds the index) "
          "| identical hybrid top-10 | identical keyword top-200 |")
    print("|---:|---|---|---|---|---:|---:|---:|")
    for size in args.sizes:
        home = work / f"store-{size}"
        if home.exists():
            shutil.rmtree(home)
        built = build(home, size, args.eval_dir)
        fts, fts_ranked, fts_first = measure(home, 1 << 62, qtexts)
        derived, derived_ranked, derived_first = measure(home, 0, qtexts)
        same_hybrid = sum(a == b for a, b in zip(fts_ranked["hybrid"], derived_ranked["hybrid"], strict=True))
        same_leg = sum(a == b for a, b in zip(fts_ranked["leg"], derived_ranked["leg"], strict=True))
        files = list((home / "index").glob("keywords-*.bin"))
        index_mb = sum(f.stat().st_size for f in files) / 1e6
        n = len(qtexts)
        print(f"| {size:,} | FTS5 bm25 | {fts['hybrid'].cell()} | {fts['keyword'].cell()} "
              f"| {fts['semantic'].cell()} | {fts_first:.2f} | | |")
        print(f"| {size:,} | derived index ({index_mb:.1f} MB) | {derived['hybrid'].cell()} "
              f"| {derived['keyword'].cell()} | {derived['semantic'].cell()} | {derived_first:.2f} "
              f"| {same_hybrid}/{n} | {same_leg}/{n} |")
        sys.stdout.flush()
        results[size] = {
            "build_s": built, "index_mb": index_mb, "same_hybrid": same_hybrid, "same_leg": same_leg,
            "queries": n,
            **{f"{name}_{mode}_p50": statistics.median(s.wall)
               for name, runs in (("fts", fts), ("derived", derived)) for mode, s in runs.items()},
        }
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "sizes": results}, indent=1))


if __name__ == "__main__":
    main()
