"""memstore performance, side by side with the reference retriever, at several store sizes.

    python scripts/bench.py                          # 1k, 10k, 100k; see docs/performance.md
    python scripts/bench.py --sizes 1000 10000 --cold-runs 5 --skip-ann --skip-bulk   # quicker
    python scripts/bench.py --sizes 1000000 --skip-ann --skip-bulk --reference-max 0  # 1M

Texts are LoCoMo turns and SciFact sentences (scripts/corpus.py, seed 13; past the ~50k
distinct texts, two are joined). Stores of 10k and more also hold the 5,183 SciFact
abstracts, so SciFact's 300 test queries measure quality (nDCG@10) at that size for
memstore and for the reference retriever alike.

Vectors: every pool text, abstract and query is embedded once by the bundled model and
cached (scripts/embedcache.py; the first run embeds ~55k texts, which takes a long time on
2 cores). Stores are filled with those real vectors through an injected embedder; a joined
pair gets the normalised sum of its two parts' real vectors ("perturbed-real"; the printed
cosine to the model's own vector of the joined text says how close that is). Everything
that is measured in a fresh process (cold CLI recall and capture) uses the real model.

Timing: each measurement runs in its own child process (so peak RSS is that of the work
measured); medians and p95 over repeated runs. Cold runs report wall time and the CPU
time the process used (user+sys): on a busy machine wall time inflates, CPU time much less.
The reference retriever runs in this process on the same texts and vectors, so the ratio
holds even on a noisy machine.

Reference retriever (the recipe of scripts/eval/reference.py): rank_bm25 BM25Okapi over
lower-cased whitespace tokens + brute-force numpy cosine with the same vectors, each
max-normalised, summed 50/50; needs ``pip install -e '.[eval]'``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from corpus import DEFAULT_EVAL, queries, sample_parts, scifact_docs, scifact_test  # noqa: E402
from embedcache import DEFAULT_DIR, CachingEmbedder  # noqa: E402

MODES = ("hybrid", "keyword", "semantic")
SCIFACT_MIN_SIZE = 10_000
CHUNK = 10_000


def pct(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(round(p / 100 * len(ordered) + 0.5)) - 1))]


def log(*parts: Any) -> None:
    print(time.strftime("%H:%M:%S"), *parts, file=sys.stderr, flush=True)


def mb(n_bytes: float) -> float:
    return n_bytes / 1e6


class Samples:
    """Wall and CPU time (ms) of repeated runs: ``with samples: work()``. CPU time is that
    of the whole process (user+sys), which a busy machine inflates far less than wall time."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def __enter__(self) -> Samples:
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall.append((time.perf_counter() - self._wall) * 1000)
        self.cpu.append((time.process_time() - self._cpu) * 1000)

    def summary(self) -> dict[str, float]:
        return {"p50": statistics.median(self.wall), "p95": pct(self.wall, 95),
                "cpu_p50": statistics.median(self.cpu), "cpu_p95": pct(self.cpu, 95)}


# ---------------------------------------------------------------------------------------------
# The corpus of one size and its vectors


def corpus_for(size: int, eval_dir: Path) -> tuple[list[dict[str, Any]], list[tuple[int, ...]], list[str]]:
    """Items to capture (SciFact abstracts first for sizes >= 10k), what each short text is
    made of (pool indices; () for an abstract), and the pool."""
    docs = scifact_docs(eval_dir) if size >= SCIFACT_MIN_SIZE else []
    texts, parts, pool = sample_parts(size - len(docs), eval_dir=eval_dir)
    items: list[dict[str, Any]] = [{"text": text, "metadata": {"scifact": did}} for did, text in docs]
    items += [{"text": text} for text in texts]
    return items, [()] * len(docs) + parts, pool


def _normalised(m: np.ndarray) -> np.ndarray:
    return (m / np.linalg.norm(m, axis=1, keepdims=True)).astype(np.float32)


def corpus_vectors(items: list[dict[str, Any]], parts: list[tuple[int, ...]], pool: list[str],
                   cache: CachingEmbedder, out: Path) -> Path:
    """Write the (len(items), dim) float32 matrix of item vectors to ``out`` (.npy), reusing it
    when it is already there."""
    if out.exists():
        arr = np.load(out, mmap_mode="r")
        if arr.shape[0] == len(items):
            return out
    needed = sorted({i for p in parts for i in p})
    log(f"vectors for {len(items):,} items ({len(needed):,} pool texts; uncached ones are embedded now)")
    pool_m = np.empty((len(pool), cache.dimension), dtype=np.float32)
    for start in range(0, len(needed), 2000):
        chunk = needed[start : start + 2000]
        pool_m[chunk] = cache.embed([pool[i] for i in chunk])
    docs = [i for i, p in enumerate(parts) if not p]
    matrix = np.lib.format.open_memmap(out.with_suffix(".tmp.npy"), mode="w+", dtype=np.float32,
                                       shape=(len(items), cache.dimension))
    for start in range(0, len(docs), 500):
        chunk = docs[start : start + 500]
        matrix[chunk] = cache.embed([items[i]["text"] for i in chunk])
    for start in range(len(docs), len(items), 50_000):
        block = parts[start : start + 50_000]
        a = np.array([p[0] for p in block])
        b = np.array([p[-1] for p in block])
        single = np.array([len(p) == 1 for p in block])
        summed = pool_m[a] + np.where(single[:, None], 0.0, pool_m[b])
        matrix[start : start + len(block)] = _normalised(summed)
    matrix.flush()
    del matrix
    os.replace(out.with_suffix(".tmp.npy"), out)
    return out


class TableEmbedder:
    """Serves vectors from tables (documents primed per chunk, queries by text); anything not
    in a table goes to the real model (counted in ``fallbacks``)."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.model_id = real.model_id
        self.dimension = real.dimension
        self.info = getattr(real, "info", None)
        self.docs: dict[str, np.ndarray] = {}
        self.queries: dict[str, np.ndarray] = {}
        self.use_query_table = True
        self.fallbacks = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        rows = []
        for text in texts:
            vec = self.docs.get(text)
            if vec is None:
                self.fallbacks += 1
                vec = self.real.embed([text])[0]
            rows.append(vec)
        return np.stack(rows) if rows else np.zeros((0, self.dimension), dtype=np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        if self.use_query_table and text in self.queries:
            return self.queries[text]
        return self.real.embed_query(text)


def real_embedder(query_cache: bool = False) -> Any:
    """The bundled model as users get it; without the persistent query cache unless asked."""
    from memstore.embedding import resolve_embedder

    emb = resolve_embedder()
    if not query_cache and hasattr(emb, "query_cache"):
        emb.query_cache = None
    return emb


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------
# Child processes (one measurement each)


def child_build(args: argparse.Namespace) -> dict[str, Any]:
    """capture_many of the whole corpus with its vectors, then reindex (index rebuild)."""
    import memstore

    items, _parts, _pool = corpus_for(args.size, args.eval_dir)
    matrix = np.load(args.vectors, mmap_mode="r")
    emb = TableEmbedder(real_embedder())
    home = Path(args.home)
    if home.exists():
        shutil.rmtree(home)
    capture = Samples()
    with memstore.open(home, embedder=emb) as store:
        for start in range(0, len(items), CHUNK):
            chunk = items[start : start + CHUNK]
            emb.docs = {it["text"]: np.asarray(matrix[start + i]) for i, it in enumerate(chunk)}
            with capture:
                store.capture_many(chunk)
        emb.docs = {}
        reindex = Samples()
        with reindex:
            result = store.reindex()
        stats = store.stats()
    capture_s, capture_cpu = sum(capture.wall) / 1000, sum(capture.cpu) / 1000
    return {
        "capture_s": capture_s,
        "capture_per_s": len(items) / capture_s,
        "capture_cpu_per_s": len(items) / capture_cpu,
        "reindex_s": reindex.wall[0] / 1000,
        "reindex_cpu_s": reindex.cpu[0] / 1000,
        "indexed": result["indexed"],
        "kind": stats["index"]["kind"],
        "db_mb": mb(stats["database_bytes"]),
        "index_mb": mb(dir_bytes(home / "index")),
        "fallbacks": emb.fallbacks,
        "rss_mb": maxrss_mb(),
    }


def _ndcg10(ranked: list[str], relevant: set[str]) -> float:
    dcg = sum(1 / np.log2(r + 2) for r, d in enumerate(ranked[:10]) if d in relevant)
    ideal = sum(1 / np.log2(r + 2) for r in range(min(10, len(relevant))))
    return dcg / ideal


def child_serve(args: argparse.Namespace) -> dict[str, Any]:
    """Warm recall latency per mode, recall with the model embedding each query, SciFact
    quality, HNSW recall@10 against exact search, single captures, peak RSS."""
    import memstore

    spec = json.loads(Path(args.spec).read_text())
    qtexts: list[str] = spec["queries"]
    qvecs = np.load(spec["query_vectors"])
    emb = TableEmbedder(real_embedder())
    emb.queries = dict(zip(qtexts, qvecs, strict=True))
    sci_q: dict[str, str] = spec["scifact_queries"]
    if sci_q:
        emb.queries.update(zip(sci_q.values(), np.load(spec["scifact_vectors"]), strict=True))
    out: dict[str, Any] = {}
    with memstore.open(args.home, embedder=emb) as store:
        store.recall("warm up the index", mode="hybrid")
        for mode in MODES:
            for q in qtexts[:10]:
                store.recall(q, mode=mode)
            samples = Samples()
            for q in qtexts:
                with samples:
                    store.recall(q, mode=mode)
            out[mode] = samples.summary()
        if sci_q:
            qrels = {k: set(v) for k, v in spec["scifact_qrels"].items()}
            for mode in MODES:
                scores = []
                for qid, text in sci_q.items():
                    ranked = [h.memory.metadata.get("scifact") for h in store.recall(text, mode=mode)]
                    scores.append(_ndcg10([d for d in ranked if d], qrels[qid]))
                out[f"ndcg_{mode}"] = statistics.mean(scores)
        # single captures with the real model (the first one loads it)
        emb.real.embed(["warm up the document model"])
        singles = Samples()
        for i, text in enumerate(spec["single_texts"]):
            with singles:
                store.capture(text, metadata={"bench": i})
        out["capture_ms"] = singles.summary()
        # the model embeds every query (new queries: no cache)
        emb.use_query_table = False
        for q in qtexts[:5]:
            store.recall(q)
        samples = Samples()
        for q in qtexts[: args.model_queries]:
            with samples:
                store.recall(q + " ?")  # not a text the model has seen in this process
        out["hybrid_model"] = samples.summary()
        out["kind"] = store.backend._cache.index.kind if store.backend._cache.index is not None else None
        out["rss_mb"] = maxrss_mb()  # before the recall check reads every vector into memory
        out["ann_recall10"] = _ann_recall(store, qvecs)
    return out


def _ann_recall(store: Any, qvecs: np.ndarray) -> float | None:
    """recall@10 of the store's vector index (searched as the vector leg does: top 100)
    against exact search over every live vector SQLite holds; None for a flat (exact) index."""
    from memstore.storage.sqlite import db

    index = store.backend._cache.index
    if index is None or index.kind != "hnsw":
        return None
    seqs: list[int] = []
    blocks: list[np.ndarray] = []
    rows = db.live_vectors(store.backend._conn, index.model_id)
    while chunk := [r for _, r in zip(range(50_000), rows, strict=False)]:
        seqs += [seq for seq, _ in chunk]
        blocks.append(np.frombuffer(b"".join(blob for _, blob in chunk), dtype="<f4").reshape(len(chunk), -1))
    matrix, keys = np.vstack(blocks), np.asarray(seqs)
    hits = 0
    sample = qvecs[:100]
    for q in sample:
        sims = np.einsum("ij,j->i", matrix, q)
        exact = set(keys[np.argpartition(-sims, 10)[:10]].tolist())
        approx = [s for s, _ in index.search(q, 100)][:10]
        hits += len(exact & set(approx))
    return hits / (10 * len(sample))


def child_bulk(args: argparse.Namespace) -> dict[str, Any]:
    """capture_many vs the raw embedder on the same texts, real model, alternating runs."""
    import tempfile

    import memstore

    _texts, _parts, pool = sample_parts(1, eval_dir=args.eval_dir)
    texts = pool[-args.bulk :]  # the far end of the shuffled pool: not in the 1k/10k stores
    emb = real_embedder()
    emb.embed(["warm up"])
    raw, cap = Samples(), Samples()
    batch = 256
    for rnd in range(args.bulk_rounds):
        with raw:
            for start in range(0, len(texts), batch):
                emb.embed(texts[start : start + batch])
        with tempfile.TemporaryDirectory() as tmp, memstore.open(Path(tmp) / "s", embedder=emb) as store:
            store.recall("an index to keep in step", mode="semantic")  # capture also updates it
            with cap:
                store.capture_many(texts, batch_size=batch)
        log(f"bulk round {rnd + 1}: raw {len(texts) / raw.wall[-1] * 1000:.1f}/s, "
            f"capture_many {len(texts) / cap.wall[-1] * 1000:.1f}/s")
    n = len(texts)
    r, c = raw.summary(), cap.summary()
    return {"texts": n, "raw_per_s": n / r["p50"] * 1000, "capture_per_s": n / c["p50"] * 1000,
            "ratio": r["p50"] / c["p50"], "cpu_ratio": r["cpu_p50"] / c["cpu_p50"],
            "raw_cpu_per_s": n / r["cpu_p50"] * 1000, "capture_cpu_per_s": n / c["cpu_p50"] * 1000,
            "rss_mb": maxrss_mb()}


def child_ann(args: argparse.Namespace) -> dict[str, Any]:
    """Exact (flat numpy) vs HNSW on real vectors: latency, build time, recall@10/@50 vs exact.
    memstore's graphs are int8 with their candidates rescored exactly (here from the float32
    matrix in memory; a store reads them from SQLite); the largest size also shows float32."""
    from usearch.index import Index

    from memstore.storage.sqlite import vector_index as vectors

    _t, _p, pool = sample_parts(1, eval_dir=args.eval_dir)
    cache = CachingEmbedder(directory=args.cache)
    found = cache.cached(pool)
    base = np.stack([found[t] for t in pool if t in found]).astype(np.float32)
    qtexts = queries(args.queries, eval_dir=args.eval_dir)
    qvecs = np.stack([cache.embed_query(q) for q in qtexts])
    log(f"ann: {len(base):,} real pool vectors cached")
    rows = []
    sizes = [n for n in args.ann_sizes if n <= len(base)]
    if len(base) not in sizes and len(base) > max(sizes, default=0):
        sizes.append(len(base))
    default = (vectors.CONNECTIVITY, vectors.EXPANSION_ADD, vectors.EXPANSION_SEARCH, vectors.HNSW_DTYPE)
    for n in sizes:
        m = np.ascontiguousarray(base[:n])
        keys = np.arange(n, dtype=np.int64)
        exact_top, exact_t = [], Samples()
        for q in qvecs:
            with exact_t:
                top = vectors._top(vectors._dot(m, q), keys, 100)
            exact_top.append([k for k, _ in top])
        settings = [default]
        if n == sizes[-1]:
            settings += [(16, 128, 64, "f32"), (16, 64, 64, "i8"), (16, 128, 128, "i8")]
        rescore = max(100 * vectors.RESCORE_FACTOR, 100 + vectors.RESCORE_MIN)
        for conn, ef_add, ef_search, dtype in settings:
            index = Index(ndim=m.shape[1], metric="ip", dtype=dtype, connectivity=conn,
                          expansion_add=ef_add, expansion_search=ef_search)
            t0 = time.perf_counter()
            for start in range(0, n, 8192):  # as VectorIndex.rebuild adds them
                index.add(keys[start : start + 8192].astype(np.uint64), m[start : start + 8192])
            build_s = time.perf_counter() - t0
            r10 = r50 = 0
            hnsw_t = Samples()
            for q, ex in zip(qvecs, exact_top, strict=True):
                with hnsw_t:
                    if dtype == "f32":
                        got = index.search(q, 100).keys.tolist()
                    else:
                        cand = index.search(q, rescore).keys.astype(np.int64)
                        got = [k for k, _ in vectors._top(vectors._dot(m[cand], q), cand, 100)]
                r10 += len(set(got[:10]) & set(ex[:10]))
                r50 += len(set(got[:50]) & set(ex[:50]))
            rows.append({
                "n": n, "connectivity": conn, "expansion_add": ef_add, "expansion_search": ef_search,
                "dtype": dtype,
                "build_s": build_s, "recall10": r10 / (10 * len(qvecs)), "recall50": r50 / (50 * len(qvecs)),
                "hnsw_p50": hnsw_t.summary()["p50"], "exact_p50": exact_t.summary()["p50"],
                "hnsw_cpu_p50": hnsw_t.summary()["cpu_p50"], "exact_cpu_p50": exact_t.summary()["cpu_p50"],
                "default": (conn, ef_add, ef_search, dtype) == default,
            })
            row = rows[-1]
            log(f"ann n={n} {dtype} M={conn} efa={ef_add} efs={ef_search}: recall@10 {row['recall10']:.3f} "
                f"hnsw {row['hnsw_p50']:.2f} ms exact {row['exact_p50']:.2f} ms build {build_s:.0f} s")
    return {"rows": rows}


CHILDREN = {"build": child_build, "serve": child_serve, "bulk": child_bulk, "ann": child_ann}


LAUNCHER_CODE = """
import json, os, subprocess, sys, tempfile, time
for line in sys.stdin:
    req = json.loads(line)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(req["cmd"], env=req["env"], stdout=out, stderr=err if req["quiet"] else None)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        res = {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss_mb": ru.ru_maxrss / 1024,
               "rc": os.waitstatus_to_exitcode(status), "stdout": out.read().decode(errors="replace"),
               "stderr": err.read().decode(errors="replace")[-2000:]}
    sys.stdout.write(json.dumps(res) + chr(10))
    sys.stdout.flush()
"""


class Launcher:
    """Starts every measured process from a tiny helper process. On Linux a child's peak RSS
    (ru_maxrss) includes what it inherited at fork, so forking from this (large) process
    would report this process's memory instead of the child's."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", LAUNCHER_CODE], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def run(self, cmd: list[str], env: dict[str, str], *, quiet: bool = True) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, "env": env, "quiet": quiet}) + "\n")
        self.proc.stdin.flush()
        result = json.loads(self.proc.stdout.readline())
        if result["rc"] != 0:
            raise SystemExit(f"{' '.join(cmd[:4])}... failed ({result['rc']}): {result['stderr'].strip()}")
        return result


LAUNCHER: Launcher | None = None


def launcher() -> Launcher:
    global LAUNCHER
    if LAUNCHER is None:
        LAUNCHER = Launcher()
    return LAUNCHER


def run_child(args: argparse.Namespace, name: str, **extra: Any) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", name, "--eval-dir", str(args.eval_dir),
           "--cache", str(args.cache), "--queries", str(args.queries),
           "--model-queries", str(args.model_queries), "--bulk", str(args.bulk),
           "--bulk-rounds", str(args.bulk_rounds), "--ann-sizes", *map(str, args.ann_sizes)]
    for key, value in extra.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    env = {**os.environ, "MEMSTORE_CACHE_DIR": str(args.workdir / "cache"),
           "MEMSTORE_CONFIG": str(args.workdir / "no-config.toml")}
    out = launcher().run(cmd, env, quiet=False)
    return json.loads(out["stdout"].strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------
# Cold processes: what a hook pays


def cold(cmd: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(wall s, cpu s, peak RSS MB) of one fresh process."""
    out = launcher().run(cmd, env)
    return out["wall"], out["cpu"], out["rss_mb"]


def cold_runs(args: argparse.Namespace, home: Path, qtexts: list[str]) -> dict[str, Any]:
    exe = Path(sys.executable).parent / "memstore"
    base = [str(exe)] if exe.exists() else [sys.executable, "-m", "memstore"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEMSTORE_")}
    env.update(MEMSTORE_HOME=str(home), MEMSTORE_CACHE_DIR=str(args.workdir / "cache"),
               MEMSTORE_CONFIG=str(args.workdir / "no-config.toml"))
    (args.workdir / "cache" / "query-vectors.db").unlink(missing_ok=True)
    for suffix in ("-wal", "-shm"):
        (args.workdir / "cache" / f"query-vectors.db{suffix}").unlink(missing_ok=True)
    # No query worker (the first new query, or the worker turned off), then with one running.
    off = {**env, "MEMSTORE_QUERY_WORKER_IDLE_SECONDS": "0"}
    on = {**env, "MEMSTORE_QUERY_WORKER_IDLE_SECONDS": "600"}
    cold(base + ["recall", "warm the page cache", "--json"], off)
    result: dict[str, Any] = {}
    picks = qtexts[-args.cold_runs :]
    for label, texts in (("recall_new", picks), ("recall_cached", picks),
                         ("recall_keyword", picks)):
        cmd_extra = ["--mode", "keyword"] if label == "recall_keyword" else []
        runs = [cold(base + ["recall", t, "--json", *cmd_extra], off) for t in texts]
        result[label] = _summary(runs)
    from memstore.embedding import BUNDLED_MODEL_ID, query_worker

    workers = args.workdir / "cache" / query_worker.DIR_NAME
    cold(base + ["recall", "start the query worker", "--json"], on)
    socket = query_worker._Paths(workers, BUNDLED_MODEL_ID).socket
    deadline = time.monotonic() + 120
    while not socket.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    try:
        if socket.exists():  # a session has started: the worker runs
            fresh = qtexts[-2 * args.cold_runs : -args.cold_runs]
            runs = [cold(base + ["recall", t, "--json"], on) for t in fresh]
            result["recall_new_worker"] = _summary(runs)
            runs = [cold(base + ["capture", f"warm capture {i} at {time.time_ns()}: benchmark memory"], on)
                    for i in range(args.cold_runs)]
            result["capture_worker"] = _summary(runs)
    finally:
        query_worker.stop_worker(BUNDLED_MODEL_ID, workers)
    runs = [cold(base + ["capture", f"cold capture {i} at {time.time_ns()}: benchmark memory"], off)
            for i in range(max(3, args.cold_runs // 2))]
    result["capture"] = _summary(runs)
    return result


def _summary(runs: list[tuple[float, float, float]]) -> dict[str, float]:
    walls, cpus, rss = zip(*runs, strict=True)
    return {"wall_p50": statistics.median(walls), "wall_p95": pct(list(walls), 95),
            "cpu_p50": statistics.median(cpus), "rss_mb": max(rss)}


# ---------------------------------------------------------------------------------------------
# The reference retriever


class Reference:
    """rank_bm25 BM25Okapi (lower-cased whitespace tokens) + brute-force cosine, each
    max-normalised, summed 50/50."""

    def __init__(self, texts: list[str], matrix: np.ndarray) -> None:
        from rank_bm25 import BM25Okapi

        self.bm25 = BM25Okapi([t.lower().split() for t in texts])
        self.matrix = matrix

    def search(self, query: str, qvec: np.ndarray, k: int = 10) -> list[int]:
        kw = self.bm25.get_scores(query.lower().split())
        cos = self.matrix @ qvec
        top_kw, top_cos = kw.max(), cos.max()
        score = 0.5 * (kw / top_kw if top_kw > 0 else kw) + 0.5 * (cos / top_cos if top_cos > 0 else cos)
        part = np.argpartition(-score, k)[:k]
        return part[np.argsort(-score[part])].tolist()


def reference_run(items: list[dict[str, Any]], matrix: np.ndarray, qtexts: list[str], qvecs: np.ndarray,
                  sci: tuple[dict[str, str], dict[str, set[str]], np.ndarray] | None) -> dict[str, Any]:
    t0 = time.perf_counter()
    ref = Reference([it["text"] for it in items], np.ascontiguousarray(matrix))
    build_s = time.perf_counter() - t0
    for q, v in zip(qtexts[:5], qvecs[:5], strict=True):
        ref.search(q, v)
    samples = Samples()
    for q, v in zip(qtexts, qvecs, strict=True):
        with samples:
            ref.search(q, v)
    out: dict[str, Any] = {"build_s": build_s, **samples.summary()}
    if sci:
        texts, qrels, vecs = sci
        doc_of = {i: it["metadata"]["scifact"] for i, it in enumerate(items) if "metadata" in it}
        scores = []
        for (qid, text), v in zip(texts.items(), vecs, strict=True):
            ranked = [doc_of.get(i) for i in ref.search(text, v)]
            scores.append(_ndcg10([d for d in ranked if d], qrels[qid]))
        out["ndcg"] = statistics.mean(scores)
    return out


# ---------------------------------------------------------------------------------------------
# The run


def pair_fidelity(cache: CachingEmbedder, pool: list[str], parts: list[tuple[int, ...]],
                  n: int = 30) -> float:
    """Median cosine between the model's vector of a joined text and the normalised sum used."""
    pairs = [p for p in parts if len(p) == 2][:n]
    if not pairs:
        return float("nan")
    joined = cache.embed([f"{pool[a]} {pool[b]}" for a, b in pairs])
    parts_m = cache.embed([pool[i] for p in pairs for i in p]).reshape(len(pairs), 2, -1)
    composed = _normalised(parts_m.sum(axis=1))
    return float(np.median(np.sum(joined * composed, axis=1)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200, help="warm recall queries per size")
    parser.add_argument("--model-queries", type=int, default=50,
                        help="queries embedded by the model per size")
    parser.add_argument("--cold-runs", type=int, default=10, help="fresh processes per cold measurement")
    parser.add_argument("--bulk", type=int, default=1000, help="texts in the bulk capture comparison")
    parser.add_argument("--bulk-rounds", type=int, default=2)
    parser.add_argument("--ann-sizes", type=int, nargs="+", default=[5000, 10_000, 20_000, 50_000])
    parser.add_argument("--reference-max", type=int, default=100_000,
                        help="largest size the reference retriever runs at")
    parser.add_argument("--skip-ann", action="store_true")
    parser.add_argument("--skip-bulk", action="store_true")
    parser.add_argument("--skip-quality", action="store_true", help="no SciFact nDCG (saves time at 1M)")
    parser.add_argument("--workdir", type=Path,
                        default=Path(os.environ.get("TMPDIR", "/tmp")) / "memstore-bench")
    parser.add_argument("--cache", type=Path, default=DEFAULT_DIR, help="embedding cache directory")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--home", help=argparse.SUPPRESS)
    parser.add_argument("--vectors", help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(CHILDREN[args.child](args)))
        return

    started = time.perf_counter()
    launcher()  # while this process is still small
    args.workdir.mkdir(parents=True, exist_ok=True)
    import memstore

    # what a normal install has: compiled modules (this machine sets PYTHONDONTWRITEBYTECODE)
    package = str(Path(memstore.__file__).parent)
    subprocess.run([sys.executable, "-m", "compileall", "-q", package], check=True)
    cache = CachingEmbedder(directory=args.cache)
    qtexts = queries(args.queries, eval_dir=args.eval_dir)
    qvecs = np.stack([cache.embed_query(q) for q in qtexts])
    sci_texts, sci_qrels = scifact_test(args.eval_dir)
    sci_vecs = np.stack([cache.embed_query(t) for t in sci_texts.values()])
    np.save(args.workdir / "queries.npy", qvecs)
    np.save(args.workdir / "scifact-queries.npy", sci_vecs)
    results: dict[str, Any] = {"sizes": {}, "machine": _machine()}

    for size in args.sizes:
        log(f"== {size:,} memories")
        items, parts, pool = corpus_for(size, args.eval_dir)
        vec_path = corpus_vectors(items, parts, pool, cache, args.workdir / f"vectors-{size}.npy")
        home = args.workdir / f"store-{size}"
        log("build: capture_many + reindex")
        build = run_child(args, "build", size=size, home=home, vectors=vec_path)
        with_sci = size >= SCIFACT_MIN_SIZE and not args.skip_quality
        spec = {
            "queries": qtexts, "query_vectors": str(args.workdir / "queries.npy"),
            "scifact_queries": sci_texts if with_sci else {},
            "scifact_vectors": str(args.workdir / "scifact-queries.npy"),
            "scifact_qrels": {k: sorted(v) for k, v in sci_qrels.items()},
            "single_texts": [f"single capture {i} for the {size} benchmark: {pool[-i - 1]}"
                             for i in range(20)],
        }
        spec_path = args.workdir / "spec.json"
        spec_path.write_text(json.dumps(spec))
        log("serve: warm recall, quality, single capture")
        serve = run_child(args, "serve", home=home, spec=spec_path)
        log("cold: fresh `memstore` processes")
        cold_result = cold_runs(args, home, qtexts)
        entry: dict[str, Any] = {"build": build, "serve": serve, "cold": cold_result}
        if size <= args.reference_max:
            log("reference retriever")
            matrix = np.load(vec_path)
            entry["reference"] = reference_run(items, matrix, qtexts, qvecs,
                                               (sci_texts, sci_qrels, sci_vecs) if with_sci else None)
            del matrix
        if any(len(p) == 2 for p in parts):
            entry["pair_cosine"] = pair_fidelity(cache, pool, parts)
        results["sizes"][size] = entry
        print_size(size, entry)
    if not args.skip_bulk:
        log("bulk capture vs raw embedder (real model)")
        results["bulk"] = run_child(args, "bulk")
    if not args.skip_ann:
        log("exact vs HNSW on real vectors")
        results["ann"] = run_child(args, "ann")
    results["elapsed_min"] = (time.perf_counter() - started) / 60
    (args.workdir / "results.json").write_text(json.dumps(results, indent=1))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    print_tables(results)


def _machine() -> dict[str, Any]:
    """The machine, and how busy it is: fresh-process start-up times to compare with a quiet
    run (on a quiet 2-core machine `python -c pass` takes ~0.02 s, `import numpy` ~0.2 s)."""
    import platform

    env = dict(os.environ)
    calibration = {}
    exe = Path(sys.executable).parent / "memstore"
    version = [str(exe)] if exe.exists() else [sys.executable, "-m", "memstore"]
    for label, cmd in (("python -c pass", [sys.executable, "-c", "pass"]),
                       ("import numpy", [sys.executable, "-c", "import numpy"]),
                       ("memstore --version", [*version, "--version"])):
        runs = [cold(cmd, env) for _ in range(5)]
        calibration[label] = {"wall": statistics.median(r[0] for r in runs),
                              "cpu": statistics.median(r[1] for r in runs)}
    return {"cpus": os.cpu_count(), "python": platform.python_version(),
            "load_avg_at_start": [round(x, 1) for x in os.getloadavg()], "calibration": calibration}


def print_size(size: int, e: dict[str, Any]) -> None:
    s = e["serve"]
    log(f"{size:,}: hybrid p50 {s['hybrid']['p50']:.2f} ms; "
        f"cold recall {e['cold']['recall_new']['wall_p50']:.2f} s"
        + (f"; reference p50 {e['reference']['p50']:.1f} ms" if "reference" in e else ""))


def cell(x: dict[str, float], digits: int = 2) -> str:
    return f"{x['p50']:.{digits}f} / {x['p95']:.{digits}f} · {x['cpu_p50']:.{digits}f}"


def print_tables(r: dict[str, Any]) -> None:
    sizes = r["sizes"]
    m = r["machine"]
    print(f"\nmemstore bench: {m['cpus']} CPUs, Python {m['python']}, load average at start "
          f"{m['load_avg_at_start']}, {r['elapsed_min']:.0f} min")
    print("machine calibration (fresh process, wall / CPU s): " + ", ".join(
        f"{k} {v['wall']:.3f} / {v['cpu']:.3f}" for k, v in m["calibration"].items()) + "\n")
    print("Cells: wall p50 / p95 · CPU p50 (ms). CPU time is what a quiet machine's wall time "
          "comes close to.\n")
    print("### Recall in-process, warm (query vector given: the store's own work)\n")
    print("| memories | index | hybrid | keyword | semantic | reference | reference / hybrid "
          "(wall, CPU) |")
    print("|---:|---|---|---|---|---|---|")
    for size, e in sizes.items():
        s, ref = e["serve"], e.get("reference")
        refs = (f"{cell(ref)} | {ref['p50'] / s['hybrid']['p50']:.0f}x, "
                f"{ref['cpu_p50'] / max(s['hybrid']['cpu_p50'], 1e-9):.0f}x" if ref else "– | –")
        print(f"| {int(size):,} | {s['kind']} | {cell(s['hybrid'])} | {cell(s['keyword'])} "
              f"| {cell(s['semantic'])} | {refs} |")
    print("\n### In-process with the model: hybrid recall of a new query (embedding included), "
          "single capture()\n")
    print("| memories | hybrid recall, new query | capture() |")
    print("|---:|---|---|")
    for size, e in sizes.items():
        s = e["serve"]
        print(f"| {int(size):,} | {cell(s['hybrid_model'])} | {cell(s['capture_ms'], 1)} |")
    print("\n### Cold: a fresh `memstore` process (wall s p50 / p95, CPU s p50, peak RSS MB)\n")
    print("| memories | recall, new query, no worker | recall, new query, query worker running "
          "| recall, repeated query | recall --mode keyword | capture, no worker "
          "| capture, query worker running |")
    print("|---:|---|---|---|---|---|---|")
    for size, e in sizes.items():
        c = e["cold"]
        cells = [f"{c[k]['wall_p50']:.2f} / {c[k]['wall_p95']:.2f} wall, {c[k]['cpu_p50']:.2f} cpu, "
                 f"{c[k]['rss_mb']:.0f} MB" if k in c else "–"
                 for k in ("recall_new", "recall_new_worker", "recall_cached", "recall_keyword",
                           "capture", "capture_worker")]
        print(f"| {int(size):,} | " + " | ".join(cells) + " |")
    print("\n### Store: bulk load, reindex, size, memory\n")
    print("| memories | capture_many/s, vectors given (per CPU s) | reindex s (CPU s) | DB MB | index MB "
          "| peak RSS build MB | peak RSS serving MB | HNSW recall@10 vs exact | reference build s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size, e in sizes.items():
        b, s, ref = e["build"], e["serve"], e.get("reference")
        ann = f"{s['ann_recall10']:.3f}" if s.get("ann_recall10") is not None else "exact"
        ref_build = f"{ref['build_s']:.1f}" if ref else "–"
        print(f"| {int(size):,} | {b['capture_per_s']:,.0f} ({b['capture_cpu_per_s']:,.0f}) "
              f"| {b['reindex_s']:.1f} ({b['reindex_cpu_s']:.1f}) | {b['db_mb']:.0f} "
              f"| {b['index_mb']:.0f} | {b['rss_mb']:.0f} | {s['rss_mb']:.0f} | {ann} | {ref_build} |")
    if any("ndcg_hybrid" in e["serve"] for e in sizes.values()):
        print("\n### Quality at size: SciFact nDCG@10 (300 test queries; abstracts among the memories)\n")
        print("| memories | memstore hybrid | keyword | semantic | reference |")
        print("|---:|---:|---:|---:|---:|")
        for size, e in sizes.items():
            s = e["serve"]
            if "ndcg_hybrid" in s:
                ref = e.get("reference", {}).get("ndcg")
                print(f"| {int(size):,} | {s['ndcg_hybrid']:.3f} | {s['ndcg_keyword']:.3f} "
                      f"| {s['ndcg_semantic']:.3f} | {f'{ref:.3f}' if ref is not None else '–'} |")
    fid = {k: v["pair_cosine"] for k, v in sizes.items() if "pair_cosine" in v}
    if fid:
        print("\nJoined-pair vectors (normalised sum of the parts' real vectors): median cosine to the "
              "model's vector of the joined text "
              + ", ".join(f"{v:.3f} at {int(k):,}" for k, v in fid.items()))
    if "bulk" in r:
        b = r["bulk"]
        print("\n### Bulk capture vs the raw embedder (real model, same texts; per wall s and per CPU s)\n")
        print("| texts | embedder alone /s | capture_many /s | ratio (wall) | ratio (CPU) |")
        print("|---:|---:|---:|---:|---:|")
        print(f"| {b['texts']:,} | {b['raw_per_s']:.1f} (CPU {b['raw_cpu_per_s']:.1f}) "
              f"| {b['capture_per_s']:.1f} (CPU {b['capture_cpu_per_s']:.1f}) | {b['ratio']:.0%} "
              f"| {b['cpu_ratio']:.0%} |")
    if "ann" in r:
        print("\n### Vector search on real vectors: exact (flat, numpy) vs usearch HNSW (top 100 asked)\n")
        print("int8 rows: the graph's candidates (2x those asked) rescored exactly, as memstore does.\n")
        print("| vectors | graph | connectivity | expansion_add | expansion_search | build s "
              "| HNSW p50 ms (CPU) | exact p50 ms (CPU) | recall@10 | recall@50 |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for row in r["ann"]["rows"]:
            mark = " (memstore)" if row["default"] else ""
            graph = {"i8": "int8", "f32": "float32"}.get(row.get("dtype", "f32"), row.get("dtype"))
            print(f"| {row['n']:,} | {graph} | {row['connectivity']} | {row['expansion_add']} | "
                  f"{row['expansion_search']}{mark} | {row['build_s']:.1f} "
                  f"| {row['hnsw_p50']:.2f} ({row['hnsw_cpu_p50']:.2f}) "
                  f"| {row['exact_p50']:.2f} ({row['exact_cpu_p50']:.2f}) "
                  f"| {row['recall10']:.3f} | {row['recall50']:.3f} |")


if __name__ == "__main__":
    main()
