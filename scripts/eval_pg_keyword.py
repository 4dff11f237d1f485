"""Which ranking the PostgreSQL keyword leg should use: measured against SQLite's FTS5 bm25.

    python scripts/eval_pg_keyword.py [--db URL] [--eval-dir ../shared/eval]

Both backends index the same texts and answer the same queries (``search.keyword_terms``:
the SQLite leg's tokens). SQLite: ``memstore.open(dir)`` in ``keyword`` mode. PostgreSQL: the
backend's ``keyword_search`` with each ranking: ``bm25`` (Okapi BM25 in SQL over the matching
rows, k1 1.2, b 0.75 like FTS5), ``ts_rank_cd`` and ``ts_rank`` (normalisation 1: divided by
1 + log(document length)). LoCoMo: one store per conversation; SciFact: one store.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from eval.datasets import load_locomo, load_scifact  # noqa: E402
from eval.metrics import ndcg_at, recall_at  # noqa: E402
from pgserver import in_schema, server  # noqa: E402

import memstore  # noqa: E402
from memstore.embedding.hash import HashEmbedder  # noqa: E402
from memstore.identity import content_hash, new_id  # noqa: E402
from memstore.storage.base import Filter  # noqa: E402
from memstore.storage.postgres import open_backend, sql  # noqa: E402
from memstore.storage.terms import keyword_terms  # noqa: E402
from memstore.timeutil import format_ts, now  # noqa: E402

DEFAULT_EVAL = Path(__file__).resolve().parents[2] / "shared" / "eval"
RANKINGS = ("bm25", "ts_rank_cd", "ts_rank")


def load_pg(url: str, items: list[tuple[str, str]]) -> tuple[object, dict[int, list[str]]]:
    backend = open_backend(url)
    units: dict[int, list[str]] = {}
    stamp = format_ts(now())
    by_hash: dict[str, int] = {}
    with backend.write(), backend._op() as conn:
        for unit, text in items:
            chash = content_hash(text, "default")
            if chash in by_hash:
                units[by_hash[chash]].append(unit)
                continue
            seq = sql.insert_memory(conn, {
                "id": new_id(), "text": text, "namespace": "default", "tags": "[]", "metadata": "{}",
                "content_hash": chash, "created_at": stamp, "updated_at": stamp,
            })
            by_hash[chash] = seq
            units[seq] = [unit]
    with backend._op() as conn:
        conn.execute("ANALYZE memories")
    return backend, units


def run_set(name: str, stores: list[tuple[list[tuple[str, str]], list[tuple[str, frozenset[str]]]]],
            admin_url: str, limit: int, work: Path) -> dict[str, dict[str, float]]:
    scores: dict[str, dict[str, list[float]]] = {}

    def add(system: str, ranked: list[str], relevant: frozenset[str], seconds: float) -> None:
        s = scores.setdefault(system, {"nDCG@10": [], f"R@{limit}": [], "ms": []})
        s["nDCG@10"].append(ndcg_at(ranked, relevant, 10))
        s[f"R@{limit}"].append(recall_at(ranked, relevant, limit))
        s["ms"].append(seconds * 1000)

    for i, (items, questions) in enumerate(stores):
        with memstore.open(work / f"{name}-{i}", embedder=HashEmbedder()) as store:
            results = store.capture_many([t for _, t in items])
            sq_units: dict[str, list[str]] = {}
            for (unit, _), r in zip(items, results, strict=True):
                sq_units.setdefault(r.id, []).append(unit)
            for text, relevant in questions:
                start = time.perf_counter()
                hits = store.recall(text, limit=limit, mode="keyword")
                add("sqlite fts5 bm25", [u for h in hits for u in sq_units[h.memory.id]][:limit],
                    relevant, time.perf_counter() - start)
        backend, units = load_pg(in_schema(admin_url, f"kw_{name}_{i}"), items)
        with backend._op() as conn:
            for ranking in RANKINGS:
                for text, relevant in questions:
                    start = time.perf_counter()
                    found = sql.keyword_search(conn, keyword_terms(text), Filter(now=now()), limit,
                                               ranking=ranking)
                    add(f"pg {ranking}", [u for seq, _ in found for u in units[seq]][:limit],
                        relevant, time.perf_counter() - start)
        backend.close()
        print(f"  {name} store {i + 1}/{len(stores)} done", file=sys.stderr)
    return {system: {k: (statistics.median(v) if k == "ms" else statistics.fmean(v)) for k, v in m.items()}
            for system, m in scores.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", help="PostgreSQL URL (default: a local embedded server)")
    parser.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL)
    parser.add_argument("--datasets", nargs="+", default=["locomo", "scifact"])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out: dict[str, object] = {}
    with server(args.db) as url, tempfile.TemporaryDirectory() as tmp:
        if "locomo" in args.datasets:
            stores = [([(d, t) for d, t, _ in c.turns], [(q.text, q.evidence) for q in c.questions])
                      for c in load_locomo(args.eval_dir)]
            out["locomo"] = run_set("locomo", stores, url, 10, Path(tmp))
        if "scifact" in args.datasets:
            data = load_scifact(args.eval_dir)
            stores = [(data.docs, [(text, data.qrels[qid]) for qid, text in data.queries])]
            out["scifact"] = run_set("scifact", stores, url, 100, Path(tmp))
    if args.json:
        print(json.dumps(out, indent=2))
        return
    for name, systems in out.items():
        print(f"\n{name}")
        for system, m in systems.items():  # type: ignore[union-attr]
            cells = "  ".join(f"{k} {v:.3f}" if k != "ms" else f"p50 {v:.2f} ms" for k, v in m.items())
            print(f"  {system:<20} {cells}")


if __name__ == "__main__":
    main()
