"""Retrieval quality of memstore on LoCoMo and BEIR SciFact, beside a reference retriever.

    pip install -e '.[eval]'          # memstore + rank_bm25 (the reference retriever)
    python scripts/eval_retrieval.py  # --eval-dir ../shared/eval --datasets locomo scifact

Everything goes through memstore's public API: ``memstore.open(dir, embedder=...)``,
``capture_many`` and ``recall(query, limit, mode=...)`` for ``keyword``, ``semantic`` and
``hybrid``. LoCoMo: one store per conversation, one memory per turn, each question recalls
from its own conversation; R@5, R@10, nDCG@10, MRR@10 overall and per category. SciFact: one
store of 5,183 abstracts (title + " " + text), the 300 test claims; nDCG@10 and R@100.

The reference row is what a user would write instead (see ``eval/reference.py``): rank_bm25
BM25Okapi + brute-force cosine with the same vectors, each max-normalised, summed 50/50.

Document vectors come from ``scripts/embedcache.py`` (exactly the bundled model's vectors,
cached on disk), so reruns take a few minutes; the first run embeds 5,183 abstracts and 5,882
turns (much longer on 2 cores). Ingest time therefore measures the store with vectors at hand. Query
vectors are computed live by default, so query times include embedding the query
(``--cached-queries`` skips that for quick reruns). Timings are medians on a shared machine:
compare them within one run. The ingest line says how many texts were embedded during ingest
and how many vectors came from the cache.

``--sample N`` evaluates N questions of each dataset, drawn with ``--seed`` (LoCoMo: only the
conversations holding sampled questions are built), for a quick check; the figures of
docs/retrieval.md are full runs.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from embedcache import DEFAULT_DIR, CachingEmbedder  # noqa: E402
from eval.datasets import CATEGORIES, load_locomo, load_scifact  # noqa: E402
from eval.metrics import mrr_at, ndcg_at, recall_at  # noqa: E402
from eval.reference import ReferenceRetriever  # noqa: E402

import memstore  # noqa: E402

DEFAULT_EVAL = Path(__file__).resolve().parents[2] / "shared" / "eval"
MODES = ("keyword", "semantic", "hybrid")
SYSTEMS = (*MODES, "reference")


class LiveQueries:
    """Document vectors from the cache, query vectors from the model (so query time is real)."""

    def __init__(self, cached: CachingEmbedder) -> None:
        self.cached = cached
        self.model_id = cached.model_id
        self.dimension = cached.dimension
        self.info = cached.info

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self.cached.embed(texts)

    def embed_query(self, text: str) -> np.ndarray:
        return self.cached.inner.embed_query(text)


class Run:
    """Per-question metric values and query times, per system."""

    def __init__(self, metrics: dict[str, Callable[[list[str], frozenset[str]], float]]) -> None:
        self.metrics = metrics
        self.values: dict[str, dict[str, list[float]]] = {}
        self.groups: dict[str, dict[str, dict[str, list[float]]]] = {}
        self.times: dict[str, list[float]] = {}
        self.ingest_seconds = 0.0
        self.ingested = 0
        self.embedded = 0  # texts the model embedded during ingest (the rest came from the cache)
        self.sampled: tuple[int, int] | None = None  # (questions evaluated, questions in the set)

    def add(self, system: str, ranked: list[str], relevant: frozenset[str], seconds: float,
            group: str | None = None) -> None:
        for name, fn in self.metrics.items():
            value = fn(ranked, relevant)
            self.values.setdefault(system, {}).setdefault(name, []).append(value)
            if group is not None:
                self.groups.setdefault(system, {}).setdefault(group, {}).setdefault(name, []).append(value)
        self.times.setdefault(system, []).append(seconds * 1000)

    def mean(self, system: str, name: str, group: str | None = None) -> float:
        values = (self.groups[system][group] if group else self.values[system])[name]
        return sum(values) / len(values)

    def to_dict(self) -> dict[str, Any]:
        return {
            "systems": {
                s: {
                    "overall": {m: self.mean(s, m) for m in self.metrics},
                    "by_group": {g: {m: self.mean(s, m, g) for m in self.metrics}
                                 for g in sorted(self.groups.get(s, {}))},
                    "query_ms_p50": statistics.median(self.times[s]),
                }
                for s in self.values
            },
            "ingest_seconds": self.ingest_seconds,
            "memories": self.ingested,
            "embedded_during_ingest": self.embedded,
            "sample": list(self.sampled) if self.sampled else None,
        }


def ranked_ids(hits: list[Any], units: dict[str, list[str]]) -> list[str]:
    """Evaluation ids in hit order (a memory stands for every unit deduplicated into it)."""
    return [unit for hit in hits for unit in units[hit.memory.id]]


def ingest(store: Any, items: list[tuple[str, str]], run: Run,
           cached: CachingEmbedder) -> dict[str, list[str]]:
    """Capture ``(unit id, text)`` pairs; returns memory id → unit ids."""
    misses = cached.misses
    start = time.perf_counter()
    results = store.capture_many([text for _, text in items], progress=sys.stderr.isatty())
    run.ingest_seconds += time.perf_counter() - start
    run.ingested += len(items)
    run.embedded += cached.misses - misses
    units: dict[str, list[str]] = {}
    for (unit, _), result in zip(items, results, strict=True):
        units.setdefault(result.id, []).append(unit)
    return units


def query_all(store: Any, units: dict[str, list[str]], reference: ReferenceRetriever | None,
              cached: CachingEmbedder, questions: list[tuple[str, frozenset[str], str | None]],
              limit: int, run: Run, systems: Sequence[str], prefix: str = "") -> None:
    for mode in (m for m in MODES if m in systems):
        for text, relevant, group in questions:
            start = time.perf_counter()
            hits = store.recall(text, limit=limit, mode=mode)
            seconds = time.perf_counter() - start
            run.add(prefix + mode, ranked_ids(hits, units), relevant, seconds, group)
    if reference is not None:
        for text, relevant, group in questions:
            qvec = cached.embed_query(text)
            start = time.perf_counter()
            ranked = reference.search(text, qvec, limit)
            run.add("reference", ranked, relevant, time.perf_counter() - start, group)


def open_store(directory: Path, embedder: Any, db: str | None = None) -> Any:
    """A fresh store: the directory (SQLite), or a schema named after it on the server ``db``."""
    if db is None:
        return memstore.open(directory, embedder=embedder)
    from pgserver import in_schema

    schema = "eval_" + "_".join(directory.parts[-2:]).replace("-", "_").lower()
    return memstore.open(in_schema(db, schema), embedder=embedder)


PG = "pg "  # the prefix of the PostgreSQL backend's systems in the tables


def eval_locomo(args: argparse.Namespace, cached: CachingEmbedder, embedder: Any, work: Path,
                db: str | None = None, run: Run | None = None) -> Run:
    prefix = PG if db else ""
    run = run or Run({
        "R@5": lambda r, rel: recall_at(r, rel, 5),
        "R@10": lambda r, rel: recall_at(r, rel, 10),
        "nDCG@10": lambda r, rel: ndcg_at(r, rel, 10),
        "MRR@10": lambda r, rel: mrr_at(r, rel, 10),
    })
    conversations = load_locomo(args.eval_dir)
    everything = [(c, i) for c, conv in enumerate(conversations) for i in range(len(conv.questions))]
    chosen = set(everything)
    if args.sample is not None:
        chosen = set(random.Random(args.seed).sample(everything, min(args.sample, len(everything))))
        run.sampled = (len(chosen), len(everything))
    for c, conv in enumerate(conversations):
        asked = [q for i, q in enumerate(conv.questions) if (c, i) in chosen]
        if not asked:
            continue
        items = [(dia, text) for dia, text, _ in conv.turns]
        with open_store(work / "locomo" / conv.sample_id, embedder, db) as store:
            units = ingest(store, items, run, cached)
            reference = None
            if "reference" in args.systems and not db:
                texts = [text for _, text in items]
                reference = ReferenceRetriever([dia for dia, _ in items], texts, cached.embed(texts))
            questions = [(q.text, q.evidence, CATEGORIES[q.category]) for q in asked]
            query_all(store, units, reference, cached, questions, 10, run, args.systems, prefix)
        print(f"  {prefix}{conv.sample_id}: {len(items)} turns, {len(asked)} questions", file=sys.stderr)
    asked_all = [conversations[c].questions[i] for c, i in sorted(chosen)]
    run.info = {  # type: ignore[attr-defined]
        "conversations": len({c for c, _ in chosen}),
        "turns": sum(len(conversations[c].turns) for c in {c for c, _ in chosen}),
        "questions": len(asked_all),
        "pairs": sum(len(q.evidence) for q in asked_all),
        "by_category": {CATEGORIES[n]: count for n in CATEGORIES
                        if (count := sum(q.category == n for q in asked_all))},
    }
    return run


def eval_scifact(args: argparse.Namespace, cached: CachingEmbedder, embedder: Any, work: Path,
                 db: str | None = None, run: Run | None = None) -> Run:
    prefix = PG if db else ""
    run = run or Run({
        "nDCG@10": lambda r, rel: ndcg_at(r, rel, 10),
        "R@100": lambda r, rel: recall_at(r, rel, 100),
    })
    data = load_scifact(args.eval_dir)
    queries = list(data.queries)
    if args.sample is not None:
        queries = random.Random(args.seed).sample(queries, min(args.sample, len(queries)))
        run.sampled = (len(queries), len(data.queries))
    with open_store(work / "scifact", embedder, db) as store:
        units = ingest(store, data.docs, run, cached)
        reference = None
        if "reference" in args.systems and not db:
            texts = [text for _, text in data.docs]
            reference = ReferenceRetriever([d for d, _ in data.docs], texts, cached.embed(texts))
        questions = [(text, data.qrels[qid], None) for qid, text in queries]
        query_all(store, units, reference, cached, questions, 100, run, args.systems, prefix)
    run.info = {"docs": len(data.docs), "queries": len(data.queries),  # type: ignore[attr-defined]
                "judgments": sum(len(v) for v in data.qrels.values())}
    return run


def ingest_line(run: Run) -> str:
    """What ingest cost, and whether the model ran during it (embedded) or the cache answered."""
    cached = run.ingested - run.embedded
    line = (f"ingest: {run.ingested:,} memories in {run.ingest_seconds:.1f} s "
            f"({run.ingested / max(run.ingest_seconds, 1e-9):,.0f}/s; "
            f"{run.embedded:,} texts embedded, {cached:,} vectors from the cache)")
    if run.sampled:
        line += f"\nsample: {run.sampled[0]:,} of {run.sampled[1]:,} questions (--seed to redraw)"
    return line


def print_table(run: Run, systems: Sequence[str], names: Sequence[str], extra: str = "") -> None:
    print(f"{'system':<10}" + "".join(f"{n:>9}" for n in names) + f"{'query ms p50':>14}")
    for s in systems:
        if s not in run.values:
            continue
        cells = "".join(f"{run.mean(s, n):>9.3f}" for n in names)
        print(f"{s:<10}{cells}{statistics.median(run.times[s]):>14.2f}")
    if extra:
        print(extra)


def print_groups(run: Run, systems: Sequence[str], metric: str, groups: dict[str, int]) -> None:
    heads = [f"{g} ({n})" for g, n in groups.items()]
    print(f"{metric + ' by category':<22}" + "".join(f"{h:>20}" for h in heads))
    for s in systems:
        if s not in run.groups:
            continue
        print(f"{s:<22}" + "".join(f"{run.mean(s, metric, g):>20.3f}" for g in groups))


def revision() -> str:
    try:
        rev = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True,
                             text=True, cwd=Path(__file__).parent, check=True).stdout.strip()
        return rev or "unknown"
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eval-dir", type=Path, default=DEFAULT_EVAL,
                        help="directory holding locomo/ and scifact/ (default: ../shared/eval)")
    parser.add_argument("--datasets", nargs="+", choices=("locomo", "scifact"),
                        default=["locomo", "scifact"])
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--cache-dir", type=Path, default=DEFAULT_DIR,
                        help=f"vector cache directory (default {DEFAULT_DIR}, or $MEMSTORE_BENCH_CACHE)")
    parser.add_argument("--cached-queries", action="store_true",
                        help="take query vectors from the cache too (faster reruns; query times "
                             "then exclude embedding the query)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="where the evaluation stores are built (default: a temporary directory)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    parser.add_argument("--sample", type=int, default=None, metavar="N",
                        help="evaluate N randomly drawn questions per dataset (a quick check; "
                             "LoCoMo builds only the conversations they come from)")
    parser.add_argument("--seed", type=int, default=0, help="random seed of --sample (default 0)")
    parser.add_argument("--db", metavar="URL", default=None,
                        help="also run every store on this PostgreSQL server (\"embedded\": start a "
                             "local one), side by side with SQLite; its rows are prefixed 'pg '")
    args = parser.parse_args()
    if args.sample is not None and args.sample < 1:
        parser.error("--sample must be at least 1")
    if not args.eval_dir.is_dir():
        parser.error(f"no evaluation data at {args.eval_dir} (pass --eval-dir)")

    cached = CachingEmbedder(directory=args.cache_dir)
    embedder = cached if args.cached_queries else LiveQueries(cached)
    if not args.cached_queries:
        cached.inner.embed_query("warm up the model")
    print(f"memstore {memstore.__version__} ({revision()}), model {cached.model_id}")
    from memstore.storage.urls import redact_text

    print(redact_text(f"command: python scripts/eval_retrieval.py {' '.join(sys.argv[1:])}".rstrip()))
    report: dict[str, Any] = {"model": cached.model_id, "revision": revision()}
    import contextlib

    from pgserver import server

    systems = list(args.systems)
    if args.db:
        systems += [PG + m for m in MODES if m in args.systems]
    with tempfile.TemporaryDirectory(prefix="memstore-eval-") as tmp, \
            (server(None if args.db == "embedded" else args.db) if args.db
             else contextlib.nullcontext(None)) as db_url:
        work = args.work_dir or Path(tmp)
        db = db_url if args.db else None
        if "locomo" in args.datasets:
            run = eval_locomo(args, cached, embedder, work)
            if db:
                eval_locomo(args, cached, embedder, work, db, run)
            info = run.info  # type: ignore[attr-defined]
            print(f"\nLoCoMo: {info['conversations']} conversations, {info['turns']:,} turns (one store "
                  f"each), {info['questions']:,} questions, {info['pairs']:,} evidence turns")
            print_table(run, systems, ["R@5", "R@10", "nDCG@10", "MRR@10"])
            groups = info["by_category"]
            print()
            print_groups(run, systems, "R@10", groups)
            print_groups(run, systems, "nDCG@10", groups)
            print(ingest_line(run))
            report["locomo"] = run.to_dict() | {"info": info}
        if "scifact" in args.datasets:
            run = eval_scifact(args, cached, embedder, work)
            if db:
                eval_scifact(args, cached, embedder, work, db, run)
            info = run.info  # type: ignore[attr-defined]
            print(f"\nBEIR SciFact: {info['docs']:,} abstracts (one store), {info['queries']} test "
                  f"queries, {info['judgments']} judgments")
            print_table(run, systems, ["nDCG@10", "R@100"])
            print(ingest_line(run))
            report["scifact"] = run.to_dict() | {"info": info}
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    print(f"\nvector cache: {cached.hits:,} hits, {cached.misses:,} texts embedded", file=sys.stderr)


if __name__ == "__main__":
    main()
