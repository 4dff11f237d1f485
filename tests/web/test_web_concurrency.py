"""The page under concurrent requests while another process captures into the same store:
every request answered, nothing corrupted, the other process's writes visible."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from webtools import LiveServer

import memstore
from memstore.embedding import HashEmbedder

WRITER = """
import sys, memstore
from memstore.embedding import HashEmbedder
with memstore.open(sys.argv[1], embedder=HashEmbedder()) as store:
    for i in range(int(sys.argv[2])):
        store.capture(f"written by the other process, number {i}", namespace="writer", tags=["bulk"])
print("done")
"""


def _opener(live: LiveServer) -> Any:
    opener = urllib.request.build_opener()
    opener.addheaders = [("Cookie", f"{live.guard.cookie_name}={live.guard.token}")]
    return opener


def test_concurrent_requests_while_another_process_captures(home: Path) -> None:
    writes = 60
    with memstore.open(home, embedder=HashEmbedder()) as store:
        seeded = [store.capture(f"seed memory {i} about databases and deploys", namespace="seed").id
                  for i in range(20)]
        with LiveServer(store) as live:
            opener = _opener(live)
            writer = subprocess.Popen(
                [sys.executable, "-c", WRITER, str(home), str(writes)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            )
            paths = ["/api/recall?q=databases", "/api/list?limit=50", "/api/stats",
                     f"/api/memory/{seeded[3]}", "/api/recall?q=other+process&mode=keyword", "/",
                     "/?q=deploys", "/overview", f"/memory/{seeded[5]}"]

            def fetch(i: int) -> tuple[str, int, bytes]:
                path = paths[i % len(paths)]
                with opener.open(live.base + path, timeout=60) as response:
                    return path, response.status, response.read()

            with ThreadPoolExecutor(max_workers=8) as pool:
                answers = list(pool.map(fetch, range(240)))
            out, err = writer.communicate(timeout=120)
            assert writer.returncode == 0, err
            assert len(answers) == 240
            for path, status, body in answers:
                assert status == 200, path
                if path.startswith("/api/"):
                    json.loads(body)
            # after the writer: the server sees every write, and the store is whole
            listed = json.loads(fetch_one(opener, live, "/api/list?namespace=writer&limit=1000"))
            assert len(listed) == writes
            hits = json.loads(fetch_one(opener, live, "/api/recall?q=other+process+number+7&mode=keyword"))
            assert "written by the other process, number 7" in [h["text"] for h in hits]
        report = store.verify()
        assert report.ok, report.to_dict()
        assert store.stats()["memories"] == 20 + writes


def fetch_one(opener: Any, live: LiveServer, path: str) -> bytes:
    with opener.open(live.base + path, timeout=60) as response:
        assert response.status == 200
        return response.read()


def test_each_request_gets_only_its_own_notices() -> None:
    import anyio

    from memstore.notices import notify
    from memstore.web.state import run_noted

    barrier = threading.Barrier(4)

    def call(name: str) -> str:
        notify(f"{name} before")
        barrier.wait(timeout=30)  # all four calls are inside at once
        notify(f"{name} after")
        return name

    async def main() -> list[tuple[str, list[str]]]:
        results: list[tuple[str, list[str]]] = []

        async def one(name: str) -> None:
            results.append(await run_noted(call, name))

        async with anyio.create_task_group() as group:
            for name in "abcd":
                group.start_soon(one, name)
        return results

    # in a thread of its own: the session's Playwright keeps an event loop running in this one
    found: list[tuple[str, list[str]]] = []
    runner = threading.Thread(target=lambda: found.extend(anyio.run(main)))
    runner.start()
    runner.join(timeout=60)
    assert sorted(name for name, _ in found) == list("abcd")
    for name, notes in found:
        assert notes == [f"{name} before", f"{name} after"]
