"""Store locations that are URLs (the PostgreSQL team store): recognising them, and printing them
without their password (backend-neutral, so the facade and the CLI need no backend package).

A URL may carry a password in three places: the userinfo (``postgresql://alice:s3cret@db/x``),
the query string (``?password=s3cret``) and a key/value DSN (``host=db password=s3cret``).
Every message, log line and ``stats``/``path`` output goes through :func:`redact_url`.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

__all__ = ["SCHEMES", "is_postgres_url", "redact_url", "redact_text"]

SCHEMES = ("postgresql", "postgres")
MASK = "***"
_SECRET_KEYS = {"password", "passfile", "sslpassword", "sslkey"}
_DSN_SECRET = re.compile(r"(\b(?:password|sslpassword)\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_URL_IN_TEXT = re.compile(r"postgres(?:ql)?://[^\s'\"]+", re.IGNORECASE)


def is_postgres_url(value: object) -> bool:
    """True for ``postgresql://…`` / ``postgres://…`` strings (what selects the team store)."""
    return isinstance(value, str) and value.split("://", 1)[0].lower() in SCHEMES and "://" in value


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (user, host, database and options kept)."""
    if not is_postgres_url(url):
        return _DSN_SECRET.sub(lambda m: m.group(1) + MASK, url)
    try:
        parts = urlsplit(url)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostinfo = netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:{MASK}@{hostinfo}" if ":" in userinfo else f"{user}@{hostinfo}"
        query = parts.query
        if query:
            pairs = [(k, MASK if k.lower() in _SECRET_KEYS else v)
                     for k, v in parse_qsl(query, keep_blank_values=True)]
            query = urlencode(pairs, safe="/*", quote_via=quote)
        return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
    except ValueError:
        # Unparseable: keep only the scheme, so nothing secret can leak from a malformed URL.
        return url.split("://", 1)[0] + "://" + MASK


def redact_text(text: str, url: str | None = None) -> str:
    """A message (e.g. a driver error) with the URL and every URL or ``password=`` in it redacted."""
    if url:
        text = text.replace(url, redact_url(url))
        password = _password_of(url)
        if password and len(password) >= 3:  # shorter ones would mangle the message
            text = text.replace(password, MASK)
    text = _URL_IN_TEXT.sub(lambda m: redact_url(m.group(0)), text)
    return _DSN_SECRET.sub(lambda m: m.group(1) + MASK, text)


def _password_of(url: str) -> str | None:
    if not is_postgres_url(url):
        match = _DSN_SECRET.search(url)
        return match.group(2).strip("'") if match else None
    try:
        parts = urlsplit(url)
        found = parts.password
        for key, value in parse_qsl(parts.query):
            if key.lower() == "password":
                found = value
        return found or None
    except ValueError:
        return None
