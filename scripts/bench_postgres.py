"""Team-store latency at 10k and 100k memories: each recall leg, hybrid, a selective filter,
and 8 concurrent clients, on the PostgreSQL backend beside SQLite in one run.

    python scripts/bench_postgres.py [--db URL] [--sizes 10000 100000] [--queries 200]

Texts are scripts/corpus.py's (LoCoMo turns and SciFact sentences, seed 13); vectors come
from memstore's HashEmbedder (token-hash vectors: texts that share words are neighbours), so
the run needs no model and both backends hold the same vectors. Queries are other corpus texts
(their first 8 words). PostgreSQL: the backend's legs as recall runs them (keyword BM25 at
depth 200, vector at depth 50, score fusion, the top 10 read back), connection kept open,
no network hop (Unix socket). SQLite: ``memstore.open(dir).recall`` in this process.
Prints medians and p95 in milliseconds, and the machine calibration line of scripts/bench.py.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from bench import pct  # noqa: E402
from corpus import sample  # noqa: E402
from memstore.db import Filter  # noqa: E402
from memstore.search import EVIDENCE_FACTOR, LEG_DEPTH, fuse, keyword_strength, keyword_terms  # noqa: E402
from pgserver import in_schema, server  # noqa: E402

import memstore  # noqa: E402
from memstore.embedder import HashEmbedder  # noqa: E402
from memstore.identity import content_hash, new_id  # noqa: E402
from memstore.storage.postgres import backend as pgb  # noqa: E402
from memstore.storage.postgres import open_backend  # noqa: E402
from memstore.timeutil import format_ts, now  # noqa: E402

RARE = "rare"  # 1% of memories: the selective filter


def stats(ms: list[float]) -> dict[str, float]:
    return {"p50": statistics.median(ms), "p95": pct(ms, 95), "n": len(ms)}


def load_pg(url: str, texts: list[str], vectors: Any) -> tuple[Any, float]:
    backend = open_backend(url)
    emb = HashEmbedder()
    start = time.perf_counter()
    stamp = format_ts(now())
    batch = 1000
    for lo in range(0, len(texts), batch):
        with backend.transaction() as conn:
            for i in range(lo, min(lo + batch, len(texts))):
                ns = RARE if i % 100 == 0 else "default"
                seq = backend.insert_memory(conn, {
                    "id": new_id(), "text": texts[i], "namespace": ns, "tags": "[]", "metadata": "{}",
                    "content_hash": content_hash(texts[i], ns), "created_at": stamp, "updated_at": stamp,
                })
                if seq is not None:
                    backend.put_embedding(conn, seq, emb.model_id, "h", vectors[i])
    seconds = time.perf_counter() - start
    with backend.reading() as conn:
        conn.execute("ANALYZE")
    return backend, seconds


def pg_hybrid(backend: Any, conn: Any, text: str, qvec: Any, flt: Filter, model: str,
              *, force: str | None = None) -> list[int]:
    """One hybrid recall through the backend legs, as the store's recall composes them."""
    terms = keyword_terms(text)
    kw = backend.keyword_search(conn, terms, flt, LEG_DEPTH * EVIDENCE_FACTOR)
    if force == "hnsw":
        saved, pgb.EXACT_FILTER_MAX = pgb.EXACT_FILTER_MAX, -1
        try:
            vec = backend.vector_search(conn, qvec, model, flt, LEG_DEPTH)
        finally:
            pgb.EXACT_FILTER_MAX = saved
    else:
        vec = backend.vector_search(conn, qvec, model, flt, LEG_DEPTH)
    best = kw[0][1] if kw else 0.0
    strength = {seq: keyword_strength(score, best) for seq, score in kw}
    similarity = dict(vec)
    order = [s for s, _ in kw[:LEG_DEPTH]] + [s for s, _ in vec]
    missing = [s for s in order if s not in similarity]
    if missing:
        for seq, cos in backend.vector_search(conn, qvec, model, flt, len(missing), seqs=missing):
            similarity[seq] = cos
    fused = fuse(strength, similarity, order)[:10]
    backend.memories_by_seq(conn, [s for s, _ in fused])
    return [s for s, _ in fused]


def time_pg(backend: Any, queries: list[tuple[str, Any]], model: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    flt = Filter(now=now())
    rare = Filter(namespaces=(RARE,), now=now())
    with backend.reading() as conn:
        for name, fn in {
            "keyword": lambda t, v: backend.keyword_search(conn, keyword_terms(t), flt, LEG_DEPTH * EVIDENCE_FACTOR),
            "vector": lambda t, v: backend.vector_search(conn, v, model, flt, LEG_DEPTH),
            "hybrid": lambda t, v: pg_hybrid(backend, conn, t, v, flt, model),
            "hybrid, 1% filter, exact": lambda t, v: pg_hybrid(backend, conn, t, v, rare, model),
            "hybrid, 1% filter, hnsw iterative": lambda t, v: pg_hybrid(backend, conn, t, v, rare, model,
                                                                        force="hnsw"),
        }.items():
            for t, v in queries[:5]:
                fn(t, v)  # warm
            ms = []
            for t, v in queries:
                start = time.perf_counter()
                fn(t, v)
                ms.append((time.perf_counter() - start) * 1000)
            out[name] = stats(ms)
        # Vector-leg recall of the HNSW index against exact search (unfiltered).
        hits = total = 0
        for _t, v in queries[:50]:
            approx = {s for s, _ in backend.vector_search(conn, v, model, flt, 10)}
            every = backend.filtered_seqs(conn, flt, 1 << 40)
            exact = {s for s, _ in backend.vector_search(conn, v, model, flt, 10, seqs=every)}
            hits += len(approx & exact)
            total += len(exact)
        out["hnsw recall@10"] = hits / max(total, 1)
    return out


def concurrent_pg(url: str, queries: list[tuple[str, Any]], model: str, clients: int, seconds: float
                  ) -> dict[str, float]:
    done = [0] * clients
    stop = time.monotonic() + seconds
    errors: list[BaseException] = []

    def client(k: int) -> None:
        try:
            b = open_backend(url)
            flt = Filter(now=now())
            with b.reading() as conn:
                i = k
                while time.monotonic() < stop:
                    t, v = queries[i % len(queries)]
                    pg_hybrid(b, conn, t, v, flt, model)
                    done[k] += 1
                    i += clients
            b.close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    start = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    elapsed = time.monotonic() - start
    return {"clients": clients, "recalls": sum(done), "per_second": sum(done) / elapsed}


def time_sqlite(directory: Path, texts: list[str], queries: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with memstore.open(directory, embedder=HashEmbedder()) as store:
        start = time.perf_counter()
        rows = [{"text": t, "namespace": RARE if i % 100 == 0 else "default"} for i, t in enumerate(texts)]
        store.capture_many(rows)
        out["load_s"] = time.perf_counter() - start
        for mode in ("keyword", "semantic", "hybrid"):
            for t, _ in queries[:5]:
                store.recall(t, limit=10, mode=mode)
            ms = []
            for t, _ in queries:
                s = time.perf_counter()
                store.recall(t, limit=10, mode=mode)
                ms.append((time.perf_counter() - s) * 1000)
            out[mode] = stats(ms)
        ms = []
        for t, _ in queries:
            s = time.perf_counter()
            store.recall(t, limit=10, mode="hybrid", namespace=RARE)
            ms.append((time.perf_counter() - s) * 1000)
        out["hybrid, 1% filter"] = stats(ms)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="PostgreSQL URL (default: a local embedded server)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--concurrent-seconds", type=float, default=20.0)
    parser.add_argument("--skip-sqlite", action="store_true")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    from bench import _machine

    machine = _machine()
    print("machine:", json.dumps(machine))
    emb = HashEmbedder()
    results: dict[str, Any] = {"machine": machine}
    with server(args.db) as admin, tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            texts = sample(size + args.queries)
            corpus_texts, qsource = texts[:size], texts[size:]
            qtexts = [" ".join(t.split()[:8]) for t in qsource]
            vectors = emb.embed(corpus_texts)
            queries = list(zip(qtexts, emb.embed(qtexts), strict=True))
            url = in_schema(admin, f"bench_{size}")
            backend, load_s = load_pg(url, corpus_texts, vectors)
            entry: dict[str, Any] = {"pg_load_s": load_s, "pg_load_per_s": size / load_s}
            entry["pg"] = time_pg(backend, queries, emb.model_id)
            backend.close()
            entry["pg_concurrent"] = concurrent_pg(url, queries, emb.model_id, args.clients,
                                                   args.concurrent_seconds)
            if not args.skip_sqlite:
                entry["sqlite"] = time_sqlite(Path(tmp) / f"sqlite-{size}", corpus_texts, queries)
            results[str(size)] = entry
            print_size(size, entry)
    if args.json:
        print(json.dumps(results, indent=2))


def print_size(size: int, e: dict[str, Any]) -> None:
    print(f"\n{size:,} memories  (PostgreSQL load: {e['pg_load_s']:.1f} s, {e['pg_load_per_s']:.0f}/s "
          "with vectors at hand, batches of 1,000)")
    print(f"  {'PostgreSQL leg / mode':<40}{'p50 ms':>9}{'p95 ms':>9}")
    for name, v in e["pg"].items():
        if isinstance(v, dict):
            print(f"  {name:<40}{v['p50']:>9.2f}{v['p95']:>9.2f}")
    print(f"  HNSW recall@10 vs exact: {e['pg']['hnsw recall@10']:.3f}")
    c = e["pg_concurrent"]
    print(f"  {c['clients']} concurrent clients, hybrid: {c['per_second']:.1f} recalls/s ({c['recalls']} total)")
    if "sqlite" in e:
        s = e["sqlite"]
        print(f"  {'SQLite mode (memstore.open().recall)':<40}{'p50 ms':>9}{'p95 ms':>9}")
        for name, v in s.items():
            if isinstance(v, dict):
                print(f"  {name:<40}{v['p50']:>9.2f}{v['p95']:>9.2f}")


if __name__ == "__main__":
    main()
