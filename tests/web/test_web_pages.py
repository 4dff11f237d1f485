"""The HTML pages' forms through Starlette's TestClient: capture, edit, expiry, purge, verify."""

from __future__ import annotations

import re
from typing import Any


def form(client: Any, guard: Any, path: str, **fields: str) -> Any:
    return client.post(path, data={"csrf": guard.csrf, **fields})


def test_capture_form_stores_and_shows_the_memory(client: Any, guard: Any, web_store: Any) -> None:
    page = form(client, guard, "/capture", text="Captured\r\nfrom the page", namespace="web", tags="a, b c",
                metadata='{"ticket": "OPS-1"}', ttl="7d")
    assert page.status_code == 200 and "Stored." in page.text
    [memory] = web_store.list(namespace="web")
    assert memory.text == "Captured\nfrom the page"
    assert memory.tags == ("a", "b c") and memory.metadata == {"ticket": "OPS-1"}
    assert memory.source == "web" and memory.expires_at is not None
    again = form(client, guard, "/capture", text="Captured\nfrom the page", namespace="web")
    assert "Already stored" in again.text
    bad = form(client, guard, "/capture", text="x", metadata="[1, 2]")
    assert bad.status_code == 400 and "metadata must be a JSON object" in bad.text
    empty = form(client, guard, "/capture", text="   ")
    assert empty.status_code == 400
    assert len(web_store.list(limit=100)) == 1  # the bad ones changed nothing


def test_edit_writes_a_version_and_keeps_the_rest(client: Any, guard: Any, web_store: Any) -> None:
    memory = web_store.capture("first text", tags=["x"], metadata={"paths": ["a", "b"], "n": 1}, source="git")
    page = form(client, guard, f"/memory/{memory.id}/update", form="edit", text="second text", tags="x",
                metadata='{\n  "paths": ["a", "b"],\n  "n": 1\n}', source="git")
    assert page.status_code == 200 and "new version" in page.text
    current = web_store.history(memory.id)[-1]
    assert current.text == "second text" and current.metadata == {"paths": ["a", "b"], "n": 1}
    assert current.tags == ("x",) and current.supersedes == memory.id
    same = form(client, guard, f"/memory/{current.id}/update", form="edit", text="second text", tags="x",
                metadata='{"paths": ["a", "b"], "n": 1}', source="git")
    assert "Nothing to change" in same.text and len(web_store.history(memory.id)) == 2
    old = form(client, guard, f"/memory/{memory.id}/update", form="edit", text="edit the old one")
    assert old.status_code == 409  # superseded versions are read-only
    broken = form(client, guard, f"/memory/{current.id}/update", form="edit", text="x", metadata="{oops")
    assert broken.status_code == 400 and "not valid JSON" in broken.text
    assert len(web_store.history(memory.id)) == 2


def test_expiry_set_and_clear(client: Any, guard: Any, web_store: Any) -> None:
    memory = web_store.capture("expires later")
    form(client, guard, f"/memory/{memory.id}/update", form="expiry", ttl="2w", set="1")
    dated = web_store.history(memory.id)[-1]
    assert dated.expires_at is not None and dated.text == "expires later"
    page = form(client, guard, f"/memory/{dated.id}/update", form="expiry", clear="1")
    assert page.status_code == 200
    assert web_store.history(memory.id)[-1].expires_at is None
    both = form(client, guard, f"/memory/{dated.id}/update", form="expiry", ttl="1d", expires_at="2030-01-01")
    assert both.status_code == 400
    past = form(client, guard, f"/memory/{web_store.history(memory.id)[-1].id}/update", form="expiry",
                expires_at="2000-01-01T00:00:00Z")
    assert past.status_code in (400, 409)


def test_purge_lists_what_goes_and_deletes_only_that(client: Any, guard: Any, web_store: Any) -> None:
    keep = web_store.capture("stays")
    gone = web_store.capture("goes")
    web_store.forget(gone.id)
    page = client.get("/purge")
    assert gone.id in page.text and keep.id not in page.text
    expect = re.search(r'name="expect" value="([0-9a-f]+)"', page.text).group(1)
    late = web_store.capture("forgotten after the list was shown")
    web_store.forget(late.id)
    changed = form(client, guard, "/purge", expect=expect)
    assert "list changed" in changed.text
    assert web_store.get(gone.id).deleted  # nothing purged yet
    expect = re.search(r'name="expect" value="([0-9a-f]+)"', changed.text).group(1)
    done = form(client, guard, "/purge", expect=expect)
    assert "Purged 2 memories" in done.text
    assert [m.id for m in web_store.list()] == [keep.id]


def test_overview_and_verify(client: Any, guard: Any, web_store: Any) -> None:
    web_store.capture("a commit", source="git", tags=["commit"], project="github.com/o/r",
                      metadata={"commit": "a" * 40, "author": "A", "paths": ["x.py"], "paths_total": 3})
    page = client.get("/overview")
    assert "Not run since this page started" in page.text and "github.com/o/r" in page.text
    after = form(client, guard, "/overview/verify")
    assert "all checks passed" in after.text
    assert "all checks passed" in client.get("/overview").text


def test_commit_memory_links_only_to_a_known_forge(client: Any, web_store: Any) -> None:
    good = web_store.capture("fix the build", source="git", project="github.com/o/r",
                             metadata={"commit": "ab12cd34ef", "paths": ["a.py"], "paths_total": 4})
    html = client.get(f"/memory/{good.id}").text
    assert 'href="https://github.com/o/r/commit/ab12cd34ef"' in html and "3 more" in html
    odd = web_store.capture("odd project", source="git", project="evil.example/o/r",
                            metadata={"commit": "ab12cd34ef"})
    bad_sha = web_store.capture("odd sha", source="git", project="github.com/o/r",
                                metadata={"commit": "javascript:alert(1)"})
    for memory in (odd, bad_sha):
        assert "/commit/" not in client.get(f"/memory/{memory.id}").text


def test_browsing_pages_through_list_newest_first(client: Any, web_store: Any) -> None:
    ids = [web_store.capture(f"memory number {i}", namespace="paged").id for i in range(45)]
    newest_first = list(reversed(ids))
    first = client.get("/?namespace=paged")
    shown = re.findall(r'<li class="item" data-id="([0-9A-Z]+)"', first.text)
    assert shown == newest_first[:20]
    older = re.search(r'id="older" href="/\?([^"]+)"', first.text).group(1).replace("&amp;", "&")
    assert "offset=20" in older and "namespace=paged" in older
    second = client.get(f"/?{older}")
    assert re.findall(r'<li class="item" data-id="([0-9A-Z]+)"', second.text) == newest_first[20:40]
    third = client.get("/?namespace=paged&offset=40")
    assert re.findall(r'<li class="item" data-id="([0-9A-Z]+)"', third.text) == newest_first[40:]
    assert 'id="older"' not in third.text and 'id="newer"' in third.text
    assert client.get("/?offset=abc").status_code == 400
