"""The guard in front of the page: token, Host, Origin, CSRF, methods, headers."""

from __future__ import annotations

from typing import Any

from webtools import TEST_HOST, make_client


def test_without_the_token_everything_is_refused(web_store: Any, guard: Any) -> None:
    anonymous = make_client(web_store, guard, with_cookie=False)
    for path in ("/", "/api/recall?q=x", "/api/stats", "/static/app.css", "/overview"):
        response = anonymous.get(path)
        assert response.status_code == 403, path
        assert "token" in response.text
    wrong = make_client(web_store, guard, with_cookie=False)
    wrong.cookies.set(guard.cookie_name, guard.token[:-1] + ("a" if guard.token[-1] != "a" else "b"))
    assert wrong.get("/").status_code == 403
    assert anonymous.get("/?token=not-the-token").status_code == 403


def test_the_token_in_the_url_becomes_a_strict_httponly_cookie(web_store: Any, guard: Any) -> None:
    anonymous = make_client(web_store, guard, with_cookie=False)
    response = anonymous.get(f"/?q=db&token={guard.token}", follow_redirects=False)
    assert response.status_code == 303
    assert response.headers["location"] == "/?q=db"  # the token leaves the address bar
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{guard.cookie_name}={guard.token};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert anonymous.get("/").status_code == 200  # the client kept the cookie


def test_unknown_host_is_refused(client: Any) -> None:
    for host in ("evil.example", "evil.example:80", "127.0.0.1.evil.example", ""):
        assert client.get("/", headers={"host": host}).status_code == 400, host
    assert client.get("/", headers={"host": TEST_HOST}).status_code == 200


def test_foreign_origin_is_refused(client: Any, guard: Any, web_store: Any) -> None:
    memory = web_store.capture("a memory nobody else may forget")
    for origin in ("http://evil.example", "null", f"http://{TEST_HOST}.evil.example", "https://evil.example"):
        assert client.get("/api/stats", headers={"origin": origin}).status_code == 403
        response = client.post(f"/api/memory/{memory.id}/forget",
                               headers={"origin": origin, "x-csrf-token": guard.csrf})
        assert response.status_code == 403, origin
    assert client.get("/", headers={"sec-fetch-site": "cross-site"}).status_code == 403
    assert not web_store.get(memory.id).deleted
    same = client.post(f"/api/memory/{memory.id}/forget",
                       headers={"origin": f"http://{TEST_HOST}", "x-csrf-token": guard.csrf})
    assert same.status_code == 200 and web_store.get(memory.id).deleted


def test_state_changes_need_post_with_the_csrf_token(client: Any, guard: Any, web_store: Any) -> None:
    memory = web_store.capture("keep me unless the page asks properly")
    assert client.post(f"/api/memory/{memory.id}/forget").status_code == 403
    wrong = client.post(f"/api/memory/{memory.id}/forget", headers={"x-csrf-token": "wrong"})
    assert wrong.status_code == 403
    assert client.post(f"/memory/{memory.id}/forget", data={"csrf": "wrong"}).status_code == 403
    assert client.get(f"/api/memory/{memory.id}/forget").status_code == 405
    for method in ("PUT", "DELETE", "PATCH"):
        assert client.request(method, f"/api/memory/{memory.id}").status_code == 405
    assert not web_store.get(memory.id).deleted
    assert client.post(f"/memory/{memory.id}/forget", data={"csrf": guard.csrf}).status_code == 200
    assert web_store.get(memory.id).deleted


def test_oversized_body_is_refused(client: Any, guard: Any) -> None:
    response = client.post("/api/capture", content=b"x" * (3 * 1024 * 1024),
                           headers={"x-csrf-token": guard.csrf, "content-type": "application/json"})
    assert response.status_code == 413


def test_every_response_carries_the_security_headers(client: Any, web_store: Any) -> None:
    anonymous_refusal = client.get("/", headers={"host": "evil.example"})
    for response in (client.get("/"), client.get("/api/stats"), client.get("/static/search.js"),
                     anonymous_refusal, client.get("/no-such-page")):
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "same-origin"


def test_pages_carry_no_inline_script(client: Any, web_store: Any) -> None:
    memory = web_store.capture("inline script check", tags=["t"])
    for path in ("/", "/?q=inline", f"/memory/{memory.id}", "/capture", "/overview", "/purge"):
        html = client.get(path).text
        assert html.count("<script") == html.count('<script src="/static/'), path
        assert " on" + "click=" not in html and "javascript:" not in html


def test_memory_text_tags_and_metadata_are_escaped(client: Any, web_store: Any) -> None:
    payload = '<script>alert(1)</script><img src=x onerror="alert(2)"><a href="javascript:alert(3)">x</a>'
    memory = web_store.capture(payload, tags=["<b>tag</b>", "javascript:alert(4)"],
                               metadata={"<i>k</i>": payload, "url": "javascript:alert(5)"})
    for path in (f"/memory/{memory.id}", "/", "/?q=script+alert", "/overview"):
        html = client.get(path).text
        assert "<script>alert" not in html and "<img src=x" not in html and "<b>tag" not in html, path
        assert 'href="javascript:' not in html, path
    html = client.get(f"/memory/{memory.id}").text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;i&gt;k&lt;/i&gt;" in html
