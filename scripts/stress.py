"""Concurrent writers and readers against one store: nothing lost, nothing inconsistent.

    python scripts/stress.py [--writers 8] [--captures 500] [--readers 2] [--batch-every 10]
                             [--forget-every 25] [--recall-every 20] [--real-model]
                             [--home DIR] [--json]

Each writer is its own process: it captures ``--captures`` unique memories (every
``--batch-every``-th step a capture_many of 5 instead), forgets every ``--forget-every``-th of
its own, and runs a semantic recall every ``--recall-every`` captures (so every writer also
loads, updates and saves the shared usearch index). Readers recall and list in a loop until
the writers finish. Afterwards the script opens the store and checks:

- memories expected (captured − forgotten, by id) vs found;
- errors in any process (must be 0);
- FTS rows == memory rows and FTS5 integrity-check, tag table, vectors: MemoryStore.verify();
- the saved usearch index (after replaying the change log) holds exactly the live vectors.

Uses the hash embedder unless --real-model (the bundled all-MiniLM-L6-v2; much slower).
Exit status 0 only when every check passes.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from timing import pct


def _open(home: str, real_model: bool) -> Any:
    import memstore
    from memstore.embedding import HashEmbedder

    return memstore.open(home, embedder=None if real_model else HashEmbedder())




def writer(n: int, args: argparse.Namespace, out: Any) -> None:
    captured: list[str] = []
    forgotten: list[str] = []
    errors: list[str] = []
    latencies: list[float] = []
    try:
        with _open(args.home, args.real_model) as store:
            step = 0
            while len(captured) < args.captures:
                step += 1
                start = time.perf_counter()
                try:
                    if args.batch_every and step % args.batch_every == 0:
                        k = min(5, args.captures - len(captured))
                        texts = [_text(n, len(captured) + i) for i in range(k)]
                        results = store.capture_many(texts)
                    else:
                        results = [store.capture(_text(n, len(captured)), tags=[f"w{n}"])]
                    latencies.append(time.perf_counter() - start)
                    for r in results:
                        if not r.created:
                            errors.append(f"writer {n}: {r.id} unexpectedly deduplicated")
                        captured.append(r.id)
                    if args.forget_every and len(captured) % args.forget_every == 0:
                        victim = captured[-args.forget_every // 2]
                        store.forget(victim)
                        forgotten.append(victim)
                    if args.recall_every and step % args.recall_every == 0:
                        store.recall(_text(n, len(captured) - 1), mode="semantic", limit=5)
                except Exception as exc:  # noqa: BLE001 — every failure is a figure
                    errors.append(f"writer {n}: {type(exc).__name__}: {exc}")
            notices = list(store.notices)
    except Exception as exc:  # noqa: BLE001
        errors.append(f"writer {n}: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        notices = []
    out.put({"role": "writer", "n": n, "captured": captured, "forgotten": forgotten,
             "errors": errors, "latencies": latencies, "notices": notices})


def _text(writer_n: int, i: int) -> str:
    topics = ["postgres", "deploys", "the retry backoff", "canary releases", "ruff config",
              "JSONB indexes", "flaky CI", "git hooks", "the vector cache", "crash safety"]
    return (f"Writer {writer_n} note {i}: we decided something about {topics[(i + writer_n) % 10]} "
            f"(stress marker w{writer_n}x{i})")


def reader(n: int, args: argparse.Namespace, done: Any, out: Any) -> None:
    errors: list[str] = []
    latencies: list[float] = []
    queries = ["which database did we pick", "retry backoff", "canary", "crash safety vector cache",
               "flaky CI git hooks", "stress marker"]
    modes = ["hybrid", "semantic", "keyword"]
    i = 0
    try:
        with _open(args.home, args.real_model) as store:
            while i < 6 or not done.is_set():  # at least one round of every query and mode
                i += 1
                start = time.perf_counter()
                try:
                    if i % 5 == 0:
                        store.list(limit=50, tags=[f"w{i % args.writers}"])
                    else:
                        hits = store.recall(queries[i % len(queries)], mode=modes[i % 3], limit=10)
                        for hit in hits:
                            if hit.memory.deleted:
                                errors.append(f"reader {n}: recall returned forgotten {hit.memory.id}")
                    latencies.append(time.perf_counter() - start)
                except Exception as exc:  # noqa: BLE001
                    errors.append(f"reader {n}: {type(exc).__name__}: {exc}")
            notices = list(store.notices)
    except Exception as exc:  # noqa: BLE001
        errors.append(f"reader {n}: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
        notices = []
    out.put({"role": "reader", "n": n, "errors": errors, "latencies": latencies, "notices": notices})


def check(args: argparse.Namespace, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Open the store afresh and compare it with what the writers were told."""
    import sqlite3

    writers = [r for r in results if r["role"] == "writer"]
    expected = {i for r in writers for i in r["captured"]} - {i for r in writers for i in r["forgotten"]}
    forgotten = {i for r in writers for i in r["forgotten"]}
    conn = sqlite3.connect(Path(args.home) / "memstore.db")
    live = {row[0] for row in conn.execute(
        "SELECT id FROM memories WHERE deleted = 0 AND superseded_by IS NULL")}
    dead = {row[0] for row in conn.execute("SELECT id FROM memories WHERE deleted = 1")}
    memory_rows = conn.execute("SELECT count(*) FROM memories").fetchone()[0]
    fts_rows = conn.execute("SELECT count(*) FROM memories_fts_docsize").fetchone()[0]
    vectors_live = conn.execute(
        "SELECT count(*) FROM embeddings e JOIN memories m ON m.seq = e.seq "
        "WHERE m.deleted = 0 AND m.superseded_by IS NULL").fetchone()[0]
    conn.close()
    index_dir = Path(args.home) / "index"
    leftovers = [p.name for p in index_dir.glob("*.tmp")]
    generations = len(list(index_dir.glob("*.usearch")))
    with _open(args.home, args.real_model) as store:
        report = store.verify()
        state = store.stats()["index"]
        # Every live memory is found by its own text in the vector leg (exact over candidates).
        sample = sorted(expected)[:: max(1, len(expected) // 100)]
        missed = 0
        for memory_id in sample:
            memory = store.get(memory_id)
            hits = store.recall(memory.text, mode="semantic", limit=3, tags=list(memory.tags) or None)
            if memory_id not in [h.memory.id for h in hits]:
                missed += 1
    return {
        "expected": len(expected), "found": len(live),
        "missing": len(expected - live), "unexpected": len(live - expected),
        "forgotten_expected": len(forgotten), "forgotten_found": len(dead & forgotten),
        "memory_rows": memory_rows, "fts_rows": fts_rows, "live_vectors": vectors_live,
        "index_vectors_on_disk": state["vectors"], "index_reflects_op": state["reflects_op"],
        "log_head": state["log_head"], "index_generations_on_disk": generations,
        "index_tmp_leftovers": len(leftovers),
        "verify": {c.name: ("ok" if c.ok else "; ".join(c.problems) or c.summary) for c in report.checks},
        "verify_ok": report.ok, "self_recall_sample": len(sample), "self_recall_missed": missed,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--captures", type=int, default=500, help="memories per writer")
    parser.add_argument("--readers", type=int, default=2)
    parser.add_argument("--batch-every", type=int, default=10)
    parser.add_argument("--forget-every", type=int, default=25)
    parser.add_argument("--recall-every", type=int, default=20)
    parser.add_argument("--real-model", action="store_true", help="embed with the bundled model")
    parser.add_argument("--home", help="store directory (default: a fresh temporary one)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()
    tmp = None
    if args.home is None:
        tmp = tempfile.TemporaryDirectory(prefix="memstore-stress-")
        args.home = os.path.join(tmp.name, "store")
    if not args.real_model:
        os.environ["MEMSTORE_EMBEDDER"] = "hash"
    # Create the store (and, with the real model, assemble it) before the race starts.
    with _open(args.home, args.real_model) as store:
        store.model_info()

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    done = ctx.Event()
    start = time.perf_counter()
    writers = [ctx.Process(target=writer, args=(n, args, out)) for n in range(args.writers)]
    readers = [ctx.Process(target=reader, args=(n, args, done, out)) for n in range(args.readers)]
    for p in writers + readers:
        p.start()
    results = []
    while len(results) < args.writers:
        item = out.get()
        results.append(item)
        if item["role"] == "reader":  # a reader died early: keep waiting for the writers
            continue
    writers_done = time.perf_counter() - start
    results = [r for r in results if r["role"] == "writer"] + [r for r in results if r["role"] == "reader"]
    done.set()
    while sum(r["role"] == "reader" for r in results) < args.readers:
        results.append(out.get())
    for p in writers + readers:
        p.join(timeout=60)
    exit_codes = [p.exitcode for p in writers + readers]

    figures = check(args, results)
    errors = [e for r in results for e in r["errors"]]
    writer_lat = [x for r in results if r["role"] == "writer" for x in r["latencies"]]
    reader_lat = [x for r in results if r["role"] == "reader" for x in r["latencies"]]
    captured = sum(len(r["captured"]) for r in results if r["role"] == "writer")
    notices = sorted({n for r in results for n in r["notices"]})
    figures.update({
        "writers": args.writers, "captures_per_writer": args.captures, "readers": args.readers,
        "embedder": "bundled model" if args.real_model else "hash",
        "errors": len(errors), "error_samples": errors[:5], "notices": notices[:5],
        "process_exit_codes_nonzero": sum(1 for c in exit_codes if c != 0),
        "captured": captured, "writers_seconds": round(writers_done, 1),
        "captures_per_second": round(captured / writers_done, 1),
        "write_op_ms_p50": round(1000 * pct(writer_lat, 50), 1),
        "write_op_ms_p95": round(1000 * pct(writer_lat, 95), 1),
        "reader_ops": len(reader_lat),
        "read_op_ms_p50": round(1000 * pct(reader_lat, 50), 1),
        "read_op_ms_p95": round(1000 * pct(reader_lat, 95), 1),
    })
    passed = (
        figures["expected"] == figures["found"] and figures["missing"] == 0 and figures["unexpected"] == 0
        and figures["forgotten_expected"] == figures["forgotten_found"]
        and figures["errors"] == 0 and figures["process_exit_codes_nonzero"] == 0
        and figures["fts_rows"] == figures["memory_rows"] and figures["live_vectors"] == figures["found"]
        and figures["verify_ok"] and figures["self_recall_missed"] == 0
        and figures["index_tmp_leftovers"] == 0
    )
    figures["passed"] = passed
    if args.json:
        print(json.dumps(figures, indent=1))
    else:
        _print(figures)
    if tmp is not None:
        tmp.cleanup()
    return 0 if passed else 1


def _print(f: dict[str, Any]) -> None:
    print(f"stress: {f['writers']} writers × {f['captures_per_writer']} captures, {f['readers']} readers, "
          f"{f['embedder']} embedder")
    rows = [
        ("memories expected / found", f"{f['expected']} / {f['found']}"),
        ("missing / unexpected", f"{f['missing']} / {f['unexpected']}"),
        ("forgotten expected / found", f"{f['forgotten_expected']} / {f['forgotten_found']}"),
        ("errors (all processes)", f"{f['errors']}"),
        ("processes exiting non-zero", f"{f['process_exit_codes_nonzero']}"),
        ("memory rows / FTS rows", f"{f['memory_rows']} / {f['fts_rows']}"),
        ("live memories / live vectors", f"{f['found']} / {f['live_vectors']}"),
        ("index on disk: vectors, op / log head",
         f"{f['index_vectors_on_disk']}, {f['index_reflects_op']} / {f['log_head']}"),
        ("index generations / tmp files left",
         f"{f['index_generations_on_disk']} / {f['index_tmp_leftovers']}"),
        ("self-recall misses (sample)", f"{f['self_recall_missed']} of {f['self_recall_sample']}"),
        ("captured in", f"{f['writers_seconds']} s ({f['captures_per_second']} captures/s)"),
        ("write op ms p50 / p95", f"{f['write_op_ms_p50']} / {f['write_op_ms_p95']}"),
        ("reader ops, ms p50 / p95", f"{f['reader_ops']}, {f['read_op_ms_p50']} / {f['read_op_ms_p95']}"),
    ]
    for name, value in rows:
        print(f"  {name:<40} {value}")
    print("  verify:")
    for name, value in f["verify"].items():
        print(f"    {name:<8} {value}")
    for sample in f["error_samples"]:
        print(f"  ERROR {sample}")
    for notice in f["notices"]:
        print(f"  notice: {notice}")
    print("PASS" if f["passed"] else "FAIL")


if __name__ == "__main__":
    sys.exit(main())
