"""The web page's figures at 10k memories: search-as-you-type round trip (server side and in
the browser), page load time and page weight; plus one shared store vs one per request.

    python scripts/bench_web.py                      # 10k memories, query vectors from the model
    python scripts/bench_web.py --size 2000 --query-model hash

Stored vectors come from the hash embedder: embedding 10k texts with the bundled model takes
far too long on these shared 2-core machines. Query vectors come from the bundled model by
default (``--query-model real``), so each search pays the real query encoding, and the
vector leg searches 10k 384-d vectors as it would with real ones (the ranking itself is
meaningless with mixed vectors; only the time is measured). Texts: scripts/corpus.py.

"Typing" sends every prefix of a query from its third character on, as the page does with
no debounce (the page waits 120 ms after the last keystroke; not counted here).
Medians (p50) and p95 over all requests; wall time in ms.
"""

from __future__ import annotations

import argparse
import http.client
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402
from bench import _machine  # noqa: E402
from corpus import queries, sample  # noqa: E402
from timing import pct  # noqa: E402

import memstore  # noqa: E402
from memstore.embedding import HashEmbedder, resolve_embedder  # noqa: E402
from memstore.web.server import prepare  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
NAMESPACES = ("notes", "decisions", "ops", "learnings", "agent")
TAGS = ("db", "api", "infra", "deploy", "python", "meeting")


class MixedEmbedder:
    """Documents through the hash embedder, queries through ``query`` (the bundled model)."""

    def __init__(self, query: Any) -> None:
        self._docs = HashEmbedder()
        self._query = query
        self.dimension = self._docs.dimension
        self.model_id = f"bench-mixed:{getattr(query, 'model_id', 'hash')}"
        if query.dimension != self.dimension:
            raise SystemExit(f"query model: {query.dimension} dimensions, hash embedder: {self.dimension}")

    def embed(self, texts: Any) -> np.ndarray:
        return self._docs.embed(texts)

    def embed_query(self, text: str) -> np.ndarray:
        return np.asarray(self._query.embed_query(text), dtype=np.float32)


def fill(store: Any, size: int) -> float:
    rng = random.Random(7)
    texts = sample(size)
    items = [{"text": t, "namespace": rng.choice(NAMESPACES), "tags": rng.sample(TAGS, rng.randint(0, 2))}
             for t in texts]
    started = time.perf_counter()
    for start in range(0, len(items), 2000):
        store.capture_many(items[start:start + 2000])
    return time.perf_counter() - started


def prefixes(query: str) -> list[str]:
    return [query[:i] for i in range(3, len(query) + 1)]


def summary(values: list[float]) -> str:
    return f"p50 {pct(values, 50):.1f} ms, p95 {pct(values, 95):.1f} ms (n={len(values)})"


def bench_server(base: str, cookie: str, paths: list[str]) -> list[float]:
    """Wall time of GET ``paths``, one after the other over one keep-alive connection."""
    host, port = base.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=60)
    times = []
    for path in paths:
        started = time.perf_counter()
        conn.request("GET", path, headers={"Cookie": cookie})
        response = conn.getresponse()
        response.read()
        times.append((time.perf_counter() - started) * 1000)
        assert response.status == 200, response.status
    conn.close()
    return times


ROUND_TRIP_JS = """
async (text) => {
  const q = document.getElementById('q');
  const form = document.getElementById('search');
  const started = performance.now();
  q.value = text;
  form.requestSubmit();
  await new Promise((resolve) => {
    const check = () => document.body.dataset.pending === '0' ? resolve() : setTimeout(check, 1);
    check();
  });
  const total = performance.now() - started;
  const calls = performance.getEntriesByType('resource').filter(r => r.name.includes('/api/recall'));
  const fetch = calls.length ? calls[calls.length - 1].duration : NaN;
  performance.clearResourceTimings();
  return [total, fetch];
}
"""

LOAD_JS = """
() => {
  const nav = performance.getEntriesByType('navigation')[0];
  const res = performance.getEntriesByType('resource');
  const bytes = nav.encodedBodySize + res.reduce((n, r) => n + r.encodedBodySize, 0);
  return {load: nav.loadEventEnd - nav.startTime, dcl: nav.domContentLoadedEventEnd - nav.startTime,
          bytes: bytes, html: nav.encodedBodySize, files: res.map(r => [r.name, r.encodedBodySize])};
}
"""


def bench_browser(url: str, base: str, typed: list[str], loads: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context()
        page = context.new_page()
        page.goto(url)  # token → cookie
        load_times, dcl, weight = [], [], None
        for _ in range(loads):
            page.goto(base + "/", wait_until="load")
            data = page.evaluate(LOAD_JS)
            load_times.append(data["load"])
            dcl.append(data["dcl"])
            weight = data
        page.goto(base + "/", wait_until="load")
        for text in typed[:3]:  # warm the page's code paths
            page.evaluate(ROUND_TRIP_JS, text)
        measured = [page.evaluate(ROUND_TRIP_JS, text) for text in typed]
        browser.close()
    return {"load": load_times, "dcl": dcl, "weight": weight, "trips": [m[0] for m in measured],
            "fetches": [m[1] for m in measured]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=12)
    parser.add_argument("--loads", type=int, default=15)
    parser.add_argument("--query-model", choices=("real", "hash"), default="real")
    args = parser.parse_args()

    machine = _machine()
    query_model = resolve_embedder() if args.query_model == "real" else HashEmbedder()
    embedder = MixedEmbedder(query_model)
    typed = [p for q in queries(args.queries) for p in prefixes(q[:40])]
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "store"
        with memstore.open(home, embedder=embedder) as store:
            fill_s = fill(store, args.size)
            store.recall("warm up the index", 5)
            lib = []
            for text in typed:
                started = time.perf_counter()
                store.recall(text, store.settings["recall.limit"])
                lib.append((time.perf_counter() - started) * 1000)
            prepared = prepare(store)
            thread = threading.Thread(target=prepared.run, daemon=True)
            thread.start()
            base = prepared.url.split("/?")[0]
            cookie = f"{prepared.guard.cookie_name}={prepared.guard.token}"
            try:
                server = bench_server(base, cookie, [f"/api/recall?q={quote(t)}" for t in typed])
                page_parts = {path: bench_server(base, cookie, [path] * args.loads)
                              for path in ("/", "/static/app.css", "/static/search.js")}
                browser = bench_browser(prepared.url, base, typed, args.loads)
            finally:
                prepared.server.should_exit = True
                thread.join(timeout=10)
            shared = []
            for text in typed[:20]:
                started = time.perf_counter()
                store.recall(text, 10)
                shared.append((time.perf_counter() - started) * 1000)
        per_request = []
        for text in typed[:20]:
            started = time.perf_counter()
            with memstore.open(home, embedder=embedder) as fresh:
                fresh.recall(text, 10)
            per_request.append((time.perf_counter() - started) * 1000)

    print(f"\nmemstore web bench: {machine['cpus']} CPUs, Python {machine['python']}, load average at start "
          f"{machine['load_avg_at_start']}")
    print("machine calibration (fresh process, wall / CPU s): " + ", ".join(
        f"{k} {v['wall']:.3f} / {v['cpu']:.3f}" for k, v in machine["calibration"].items()))
    print(f"store: {args.size:,} memories (stored vectors: hash embedder; query vectors: "
          f"{'bundled model ' + query_model.model_id if args.query_model == 'real' else 'hash embedder'}); "
          f"filled in {fill_s:.1f} s")
    print(f"typing: {len(typed)} prefixes of {args.queries} real questions (hybrid, limit 10)\n")
    print(f"recall in-process (the library alone):      {summary(lib)}")
    print(f"search round trip, server side (HTTP GET /api/recall, keep-alive client): {summary(server)}")
    print("search round trip in the browser (input → results drawn, no debounce): "
          + summary(browser["trips"]) + f"; of which the fetch (resource timing) p50 "
          f"{pct(browser['fetches'], 50):.1f} ms")
    print(f"page load (/, newest 20, warm cache off): load {summary(browser['load'])}; "
          f"DOMContentLoaded p50 {statistics.median(browser['dcl']):.1f} ms")
    w = browser["weight"]
    files = ", ".join(f"{name.rsplit('/', 1)[-1]} {size / 1024:.1f}" for name, size in w["files"])
    print("page load, server side (GET, keep-alive client): " + "; ".join(
        f"{path} p50 {pct(times, 50):.1f} ms" for path, times in page_parts.items()))
    print(f"page weight: {w['bytes'] / 1024:.1f} KB uncompressed (HTML {w['html'] / 1024:.1f}; {files}); "
          "no external requests")
    print(f"one shared store: recall {summary(shared)}; open per request (open + recall + close, "
          f"embedder kept): {summary(per_request)}")


if __name__ == "__main__":
    main()
