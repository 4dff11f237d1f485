"""Screenshots of the web page for the docs: docs/web-search.png and docs/web-memory.png.

    python scripts/screenshots_web.py            # the bundled model (falls back to the hash embedder)
    python scripts/screenshots_web.py --hash     # the hash embedder (no model load)

Fills a throw-away store with a small team's memories (decisions, commit captures, notes),
serves the page on 127.0.0.1 and drives Debian's Chromium through Playwright.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import memstore  # noqa: E402
from memstore.web.server import prepare  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

NOTES = [
    ("decisions", ["db"], "We chose PostgreSQL 16 over MySQL for JSONB support and partial indexes"),
    ("decisions", ["api"], "Public API errors follow RFC 9457 problem details; no bare strings"),
    ("decisions", ["infra"], "Staging runs on a single k3s node; production on three"),
    ("ops", ["deploy"], "Deploys freeze on Friday after 15:00 unless the on-call lead approves"),
    ("ops", ["db", "backup"], "Nightly pg_dump to the backup bucket at 02:00 UTC, kept 30 days"),
    ("learnings", ["db"], "A missing index on orders.customer_id made the invoice page take 9 s"),
    ("learnings", ["python"], "asyncpg pools must be created inside the running event loop"),
    ("notes", ["meeting"], "Retro: flaky end-to-end tests cost us two release days in March"),
    ("notes", ["tooling"], "ruff replaces flake8 and isort in every repository; line length 110"),
    ("agent", ["session"], "The billing service reads its Stripe key from the vault, never from env files"),
]
COMMITS = [
    ("Move the session store from Redis to PostgreSQL\n\nOne database less to run; sessions are small.",
     ["src/sessions.py", "migrations/0042_sessions.sql"]),
    ("Add a GIN index on events.payload for the JSONB lookups", ["migrations/0043_events_gin.sql"]),
    ("Retry database connections with jittered backoff on startup", ["src/db.py", "tests/test_db.py"]),
]


def fill(store: memstore.MemoryStore) -> str:
    """Capture the sample memories; return the id of one with two versions."""
    start = datetime.now(timezone.utc) - timedelta(days=70)
    for i, (ns, tags, text) in enumerate(NOTES):
        store.capture(text, namespace=ns, tags=tags, created_at=start + timedelta(days=i * 6, hours=i),
                      allow_duplicate=True)
    for i, (message, paths) in enumerate(COMMITS):
        sha = f"{i + 3:x}f0c2a9d41b7e5c3a8f6d2e1b0c9a7f5e3d1c{i:x}b"
        store.capture(message, namespace="commits", tags=["commit"], source="git",
                      project="github.com/acme/api", branch="main",
                      metadata={"commit": sha, "parents": ["8d2f1e0c4b6a"], "author": "Dana Reyes",
                                "author_date": (start + timedelta(days=60 + i)).isoformat(), "paths": paths,
                                "paths_total": len(paths), "captured_by": "post-commit"},
                      created_at=start + timedelta(days=60 + i))
    first = store.capture("We chose PostgreSQL for JSONB support", namespace="decisions", tags=["db"],
                          metadata={"ticket": "OPS-12"}, created_at=start + timedelta(days=3),
                          allow_duplicate=True)
    return store.update(first.id, "We chose PostgreSQL for JSONB support; MySQL 8 lacked partial indexes",
                        tags=["db", "adr"]).id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hash", action="store_true", help="use the hash embedder")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--overview", action="store_true", help="also write web-overview.png")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    embedder = memstore.HashEmbedder() if args.hash else None
    with tempfile.TemporaryDirectory() as tmp, memstore.open(Path(tmp) / "store", embedder=embedder) as store:
        print(f"model: {store.model_info().model_id} ({store.model_info().backend})")
        edited = fill(store)
        prepared = prepare(store)
        thread = threading.Thread(target=prepared.run, daemon=True)
        thread.start()
        base = prepared.url.split("/?")[0]
        try:
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                page = browser.new_page(viewport={"width": 1180, "height": 860}, device_scale_factor=1)
                page.goto(prepared.url)
                page.type("#q", "why did we pick PostgreSQL?", delay=10)
                page.wait_for_function("() => document.body.dataset.pending === '0'")
                page.screenshot(path=str(args.out / "web-search.png"))
                page.goto(f"{base}/memory/{edited}")
                page.screenshot(path=str(args.out / "web-memory.png"), full_page=True)
                if args.overview:
                    page.goto(f"{base}/overview")
                    page.screenshot(path=str(args.out / "web-overview.png"), full_page=True)
                browser.close()
        finally:
            prepared.server.should_exit = True
            thread.join(timeout=10)
    print(f"wrote {args.out / 'web-search.png'} and {args.out / 'web-memory.png'}")


if __name__ == "__main__":
    main()
