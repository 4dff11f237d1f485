"""The page's guard: memories are attacker-controlled text and the server runs on the user's
machine, so every request must prove it comes from the page this run printed.

One ASGI middleware, in front of everything (static files included):

* **Host allow-list** — a DNS-rebinding page reaches 127.0.0.1 under its own host name; any
  Host not in the list is refused (400).
* **Run token** — a random token per run, printed in the URL. ``?token=`` sets it as an
  HttpOnly, SameSite=Strict cookie and redirects to the same URL without it (so it stays out
  of history and Referer). Requests without the cookie are refused (403).
* **Origin** — a request carrying an Origin (or Sec-Fetch-Site: cross-site) from anywhere but
  the page itself is refused (403).
* **CSRF** — every POST must carry the run's CSRF token, in the ``X-CSRF-Token`` header or
  the form field ``csrf`` (urlencoded forms only; bodies are capped). Other methods than
  GET/HEAD/POST are refused.
* **Headers** — a CSP without inline script, frame-ancestors 'none' and X-Frame-Options DENY,
  nosniff, no Referer to other sites (same-origin: "no-referrer" would make
  Chromium send "Origin: null" on the page's own form posts), no caching of pages.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlencode

__all__ = ["CSRF_FIELD", "CSRF_HEADER", "MAX_BODY_BYTES", "Guard", "SecurityMiddleware", "loopback_hosts"]

CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
#: Largest POST body accepted (a memory is at most a few hundred KB of text and metadata).
MAX_BODY_BYTES = 2 * 1024 * 1024

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)


def loopback_hosts(port: int) -> list[str]:
    """The Host values a browser sends for a loopback server on ``port``."""
    return [f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"]


@dataclass(frozen=True)
class Guard:
    """What this run accepts: its token, its CSRF token, the Host values it answers to."""

    hosts: frozenset[str]
    token: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    cookie_name: str = "memstore_ui"
    secure_cookie: bool = False

    @classmethod
    def for_hosts(cls, hosts: Iterable[str], **kwargs: Any) -> Guard:
        return cls(hosts=frozenset(h.lower() for h in hosts), **kwargs)

    def origins(self) -> frozenset[str]:
        return frozenset(f"{scheme}://{host}" for host in self.hosts for scheme in ("http", "https"))

    def token_ok(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), self.token.encode())

    def csrf_ok(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), self.csrf.encode())


class SecurityMiddleware:
    """Applies a :class:`Guard` to every HTTP request before the app sees it."""

    def __init__(self, app: Any, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # lifespan; no websockets are served
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        refusal = self._refusal(scope, headers)
        if refusal is not None:
            await _plain(send, *refusal)
            return
        query = scope.get("query_string", b"").decode("latin-1")
        token = parse_qs(query).get("token", [None])[0]
        if token is not None and self.guard.token_ok(token) and scope["method"] in ("GET", "HEAD"):
            await self._set_cookie_and_redirect(scope, query, send)
            return
        if not self.guard.token_ok(_cookie(headers, self.guard.cookie_name)):
            await _plain(send, 403, "forbidden: open the URL printed by `memstore ui` (it carries the token)")
            return
        if scope["method"] == "POST":
            receive = await self._checked_body(headers, receive, send)
            if receive is None:
                return
        await self.app(scope, receive, _with_headers(send))

    def _refusal(self, scope: dict[str, Any], headers: dict[str, str]) -> tuple[int, str] | None:
        host = headers.get("host", "").lower()
        if host not in self.guard.hosts:
            return 400, "bad request: unknown Host header"
        origin = headers.get("origin")
        if origin is not None and origin.lower() not in self.guard.origins():
            return 403, "forbidden: cross-origin request"
        if headers.get("sec-fetch-site") == "cross-site":
            return 403, "forbidden: cross-site request"
        if scope["method"] not in ("GET", "HEAD", "POST"):
            return 405, "method not allowed"
        return None

    async def _set_cookie_and_redirect(self, scope: dict[str, Any], query: str, send: Any) -> None:
        rest = urlencode([(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "token"])
        location = scope.get("root_path", "") + scope["path"] + (f"?{rest}" if rest else "")
        cookie = f"{self.guard.cookie_name}={self.guard.token}; Path=/; HttpOnly; SameSite=Strict"
        if self.guard.secure_cookie:
            cookie += "; Secure"
        await send({"type": "http.response.start", "status": 303, "headers": [
            (b"location", location.encode("latin-1")), (b"set-cookie", cookie.encode("latin-1")),
            (b"cache-control", b"no-store"), *SECURITY_HEADERS,
        ]})
        await send({"type": "http.response.body", "body": b""})

    async def _checked_body(self, headers: dict[str, str], receive: Any, send: Any) -> Any:
        """Read the POST body (capped), check its CSRF token, and hand the app a replay of it;
        None when the request was refused (the refusal is already sent)."""
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                await _plain(send, 413, "request body too large")
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        token = headers.get(CSRF_HEADER)
        if token is None and headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            token = parse_qs(body.decode("utf-8", "replace")).get(CSRF_FIELD, [None])[0]
        if not self.guard.csrf_ok(token):
            await _plain(send, 403, "forbidden: missing or wrong CSRF token (reload the page)")
            return None
        sent = False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        return replay


def _headers(scope: dict[str, Any]) -> dict[str, str]:
    """Request headers by lower-case name (the last of repeated ones wins, except Cookie)."""
    found: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        found[name] = f"{found[name]}; {value}" if name == "cookie" and name in found else value
    return found


def _cookie(headers: dict[str, str], name: str) -> str | None:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except Exception:  # a malformed Cookie header is no token
        return None
    morsel = jar.get(name)
    return morsel.value if morsel is not None else None


def _with_headers(send: Any) -> Any:
    async def wrapped(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            present = {name.lower() for name, _ in message.get("headers", [])}
            extra = [h for h in SECURITY_HEADERS if h[0] not in present]
            if b"cache-control" not in present:
                extra.append((b"cache-control", b"no-store"))
            message = {**message, "headers": [*message.get("headers", []), *extra]}
        await send(message)

    return wrapped


async def _plain(send: Any, status: int, text: str) -> None:
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"text/plain; charset=utf-8"), (b"cache-control", b"no-store"),
        *SECURITY_HEADERS,
    ]})
    await send({"type": "http.response.body", "body": text.encode()})
