"""Helpers shared by the web page's tests (a module of its own: ``conftest`` is not importable
by name when several test folders have one)."""

from __future__ import annotations

import threading
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
TEST_HOST = "testserver"


def make_client(store: Any, guard: Any, *, with_cookie: bool = True) -> Any:
    from starlette.testclient import TestClient

    from memstore.web.app import create_app

    client = TestClient(create_app(store, guard), base_url=f"http://{TEST_HOST}")
    if with_cookie:
        client.cookies.set(guard.cookie_name, guard.token)
    return client


class LiveServer:
    """A uvicorn server for a store, serving in a thread on 127.0.0.1 (a free port)."""

    def __init__(self, store: Any) -> None:
        from memstore.web.server import prepare

        self.prepared = prepare(store, host="127.0.0.1", port=0)
        self.base = self.prepared.url.split("/?", 1)[0]
        self.url = self.prepared.url
        self.guard = self.prepared.guard
        self._thread = threading.Thread(target=self.prepared.run, daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.prepared.server.should_exit = True
        self._thread.join(timeout=10)
        assert not self._thread.is_alive(), "the test server did not stop"
