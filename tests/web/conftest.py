"""Fixtures for the web page: an app under Starlette's TestClient, a live uvicorn server on
127.0.0.1, and a real headless Chromium driven by Playwright.

Chromium is Debian's (``apt-get install -y chromium``; Playwright's own download needs the
network). Without it (or without playwright) the browser tests skip saying so — except in
CI (``CI=true``), where they fail instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from webtools import CHROMIUM, CHROMIUM_ARGS, TEST_HOST, LiveServer, make_client

import memstore
from memstore.embedding import HashEmbedder


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def web_store(home: Path) -> Iterator[Any]:
    with memstore.open(home, embedder=HashEmbedder()) as store:
        yield store


@pytest.fixture
def guard() -> Any:
    from memstore.web.security import Guard

    return Guard.for_hosts([TEST_HOST])


@pytest.fixture
def client(web_store: Any, guard: Any) -> Any:
    return make_client(web_store, guard)


@pytest.fixture
def live(web_store: Any) -> Iterator[LiveServer]:
    with LiveServer(web_store) as server:
        yield server


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is missing (pip install -e '.[dev]')"
    if not os.access(CHROMIUM, os.X_OK):
        return (f"no Chromium at {CHROMIUM}: install Debian's package (sudo apt-get install -y chromium); "
                "Playwright's own browser download is not used")
    return None


@pytest.fixture(scope="module")  # not session: its event loop must not outlive the browser tests
def browser() -> Iterator[Any]:
    why = _browser_missing()
    if why is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"browser tests must run in CI: {why}")
        pytest.skip(f"browser tests skipped: {why}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


class Watched:
    """A page plus every dialog it opened (an XSS that runs alert() shows up here)."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        page.on("dialog", self._dialog)
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()


@pytest.fixture
def page(browser: Any, live: LiveServer) -> Iterator[Watched]:
    context = browser.new_context()
    try:
        watched = Watched(context.new_page())
        watched.page.set_default_timeout(15_000)
        watched.page.goto(live.url)  # the printed URL: its token becomes the cookie
        yield watched
    finally:
        context.close()
