"""The page in a real headless Chromium (Playwright): search as you type, filters, a memory's
edit and history, forget/restore, hostile memory text, and refused foreign requests."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = pytest.mark.browser

PAYLOADS = [
    '<script>window.__xss = (window.__xss || 0) + 1; alert("script")</script>',
    '<img src=x id=injected onerror="window.__xss = 1; alert(\'onerror\')">',
    '<a id=injected href="javascript:alert(\'link\')">click me</a> [md link](javascript:alert(1))',
    '"><svg id=injected onload=alert("svg")>',
]


def seed(store: Any) -> dict[str, str]:
    ids = {}
    ids["pg"] = store.capture("We chose PostgreSQL for its JSONB support", namespace="decisions",
                              tags=["db"]).id
    ids["deploy"] = store.capture("Deploys run on Fridays after the release review", namespace="ops",
                                  tags=["deploy"]).id
    ids["lint"] = store.capture("Use ruff for linting with line length 110", namespace="decisions",
                                tags=["tooling"]).id
    ids["ops_db"] = store.capture("The ops database backup runs nightly at 02:00", namespace="ops",
                                  tags=["db"]).id
    return ids


def result_ids(page: Any) -> list[str]:
    return page.eval_on_selector_all("#results li.item", "els => els.map(e => e.dataset.id)")


def settled(page: Any) -> None:
    """Until the page's script has drawn the answer to the latest input (a function, not a
    string: the page's CSP forbids eval)."""
    page.wait_for_function("() => document.body.dataset.pending === '0'")


def type_query(page: Any, text: str) -> None:
    page.fill("#q", "")
    page.type("#q", text, delay=15)
    settled(page)


def test_type_a_query_and_see_the_right_memory_first(page: Any, web_store: Any) -> None:
    ids = seed(web_store)
    p = page.page
    p.reload()
    assert len(result_ids(p)) == 4  # newest first before typing
    type_query(p, "postgresql jsonb")
    assert result_ids(p)[0] == ids["pg"]
    first = p.locator("#results li.item").first
    assert "We chose PostgreSQL" in first.inner_text()
    evidence = first.locator(".evidence").inner_text()
    assert "score" in evidence and "keyword #1" in evidence and "bm25" in evidence and "cos" in evidence
    assert "q=postgresql+jsonb" in p.url  # the address can be shared or reloaded
    p.reload()
    assert result_ids(p)[0] == ids["pg"]  # server-rendered from the address
    assert page.dialogs == [] and page.errors == []


def test_filters_narrow_the_results(page: Any, web_store: Any) -> None:
    ids = seed(web_store)
    p = page.page
    p.reload()
    type_query(p, "db")
    assert set(result_ids(p)) >= {ids["pg"], ids["ops_db"]}
    p.click("details.filters summary")
    p.fill("input[name=namespace]", "ops")
    settled(p)
    narrowed = result_ids(p)
    assert ids["ops_db"] in narrowed and ids["pg"] not in narrowed
    shown = p.eval_on_selector_all("#results .ns", "els => els.map(e => e.textContent)")
    assert shown and all(ns == "ops" for ns in shown)
    p.fill("input[name=namespace]", "")
    p.fill("#q", "")
    p.fill("input[name=tag]", "tooling")
    settled(p)
    assert result_ids(p) == [ids["lint"]]  # browsing (no query) is filtered too


def test_open_a_memory_edit_it_and_see_both_versions(page: Any, web_store: Any) -> None:
    ids = seed(web_store)
    p = page.page
    p.reload()
    type_query(p, "ruff linting")
    p.click(f"#results li[data-id='{ids['lint']}'] a.open")
    p.wait_for_selector("#memory")
    assert "Use ruff for linting" in p.inner_text("#text")
    p.fill("#edit-text", "Use ruff for linting and formatting, line length 110")
    p.fill("#edit-tags", "tooling, python")
    p.click("#save")
    p.wait_for_selector("#message")
    assert "new version" in p.inner_text("#message")
    assert "linting and formatting" in p.inner_text("#text")
    versions = p.locator("#history li")
    assert versions.count() == 2
    assert "v1" in versions.nth(0).inner_text() and "superseded" in versions.nth(0).inner_text()
    assert "Use ruff for linting with line length 110" in versions.nth(0).inner_text()
    assert "v2" in versions.nth(1).inner_text() and "current" in versions.nth(1).inner_text()
    current = web_store.history(ids["lint"])[-1]
    assert current.text == "Use ruff for linting and formatting, line length 110"
    assert current.tags == ("tooling", "python")
    assert web_store.get(ids["lint"]).superseded_by == current.id


def test_forget_and_restore(page: Any, web_store: Any) -> None:
    ids = seed(web_store)
    p = page.page
    p.goto(f"{page.page.url.split('/?')[0].rstrip('/')}/memory/{ids['deploy']}")
    p.click("#forget")
    p.wait_for_selector("#restore")
    assert "forgotten" in p.inner_text("#mstatus")
    assert web_store.get(ids["deploy"]).deleted
    assert ids["deploy"] not in [m.id for m in web_store.list()]
    p.click("#restore")
    p.wait_for_selector("#forget")
    assert "current" in p.inner_text("#mstatus")
    assert not web_store.get(ids["deploy"]).deleted


def _assert_nothing_ran(page: Any) -> None:
    p = page.page
    assert page.dialogs == []
    assert p.evaluate("window.__xss") is None
    assert p.locator("#injected").count() == 0
    assert p.locator("img, svg:not(.chart), iframe, object, embed").count() == 0
    scripts = p.eval_on_selector_all("script", "els => els.map(e => e.getAttribute('src'))")
    assert all(src is not None and src.startswith("/static/") for src in scripts)
    assert p.locator("a[href^='javascript:' i]").count() == 0


def test_hostile_text_tags_and_metadata_execute_nothing(page: Any, web_store: Any) -> None:
    ids = []
    for i, payload in enumerate(PAYLOADS):
        ids.append(web_store.capture(
            f"xss case {i}: {payload}", namespace="hostile", tags=[payload[:60], f"case{i}"],
            metadata={payload[:80]: payload, "url": "javascript:alert('meta')"},
        ).id)
    p = page.page
    base = p.url.split("/?")[0].rstrip("/")
    p.goto(f"{base}/?namespace=hostile")  # server-rendered list
    assert len(result_ids(p)) == len(PAYLOADS)
    _assert_nothing_ran(page)
    type_query(p, "xss case alert script")  # rendered by the page's script from JSON
    assert len(result_ids(p)) == len(PAYLOADS)
    assert "<script>" in p.inner_text("#results")  # shown as text
    _assert_nothing_ran(page)
    for memory_id in ids:
        p.goto(f"{base}/memory/{memory_id}")
        assert "xss case" in p.inner_text("#text")
        _assert_nothing_ran(page)
    p.goto(f"{base}/overview")
    _assert_nothing_ran(page)
    p.click("text=#case0")  # a tag link: a plain same-page search
    p.wait_for_selector("#results")
    _assert_nothing_ran(page)
    assert page.errors == []


class _Evil(http.server.BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:  # noqa: N802
        body = f"""<!doctype html><body>
<form id=f method=post action="{self.target}/memory/ID/forget"><input name=csrf value=guess></form>
<script>
fetch("{self.target}/api/memory/ID/forget", {{method: "POST", credentials: "include",
  headers: {{"X-CSRF-Token": "guess"}}}}).then(r => document.title = "fetch " + r.status)
  .catch(e => document.title = "fetch blocked");
</script></body>""".encode()
        self.send_response(200)
        self.send_header("content-type", "text/html")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def evil_site(live: Any) -> Iterator[str]:
    handler = type("Evil", (_Evil,), {"target": live.base})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        thread.join()


def test_requests_without_the_token_or_from_another_origin_are_refused(
    browser: Any, page: Any, live: Any, web_store: Any, evil_site: str,
) -> None:
    memory = web_store.capture("a memory another site wants to forget")
    # a fresh browser without the token
    stranger = browser.new_context()
    try:
        response = stranger.new_page().goto(live.base + "/")
        assert response.status == 403
        api = stranger.request.get(live.base + "/api/stats")
        assert api.status == 403
    finally:
        stranger.close()
    # the user's browser (it holds the cookie) visiting another local site: same-site as far as
    # cookies go (another port), so only the Origin and CSRF checks stand in the way
    p = page.page
    evil = p.context.new_page()
    evil.goto(evil_site.rstrip("/") + "/")
    evil.evaluate(f"document.getElementById('f').action = {live.base + '/memory/' + memory.id + '/forget'!r}")
    evil.wait_for_function("() => document.title.startsWith('fetch')")
    with evil.expect_navigation():
        evil.evaluate("document.getElementById('f').submit()")
    assert "forbidden" in evil.inner_text("body")
    assert not web_store.get(memory.id).deleted
    # the same POST with the cookie and the right CSRF token but a foreign Origin
    refused = p.context.request.post(f"{live.base}/api/memory/{memory.id}/forget",
                                     headers={"Origin": evil_site, "X-CSRF-Token": live.guard.csrf})
    assert refused.status == 403
    assert not web_store.get(memory.id).deleted
    # and the page itself may
    allowed = p.context.request.post(f"{live.base}/api/memory/{memory.id}/forget",
                                     headers={"Origin": live.base, "X-CSRF-Token": live.guard.csrf})
    assert allowed.status == 200 and web_store.get(memory.id).deleted


def test_browse_pages_then_search_hides_the_pager(page: Any, web_store: Any) -> None:
    ids = [web_store.capture(f"note {i} about the release train").id for i in range(25)]
    p = page.page
    p.reload()
    assert result_ids(p) == list(reversed(ids))[:20]
    p.click("#older")
    p.wait_for_selector("#newer")
    assert result_ids(p) == list(reversed(ids))[20:]
    type_query(p, "note 3 release")
    assert not p.is_visible("#pager")
    assert ids[3] in result_ids(p)
