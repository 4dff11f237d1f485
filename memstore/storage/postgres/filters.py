"""Recall/list filters as SQL over the ``memories`` table, with parameters (never text).

The same fields as SQLite's filter: live/current/unexpired defaults, namespaces, tags (all
of them), time range, projects (None: memories without one), branch, plus metadata equality
pairs and authors. Values only ever travel as parameters; column names are fixed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["filter_sql"]


def filter_sql(
    flt: Any,
    alias: str = "m",
    *,
    metadata: Sequence[tuple[str, str]] = (),
    authors: Sequence[str] = (),
) -> tuple[str, list[Any]]:
    """A WHERE clause body over ``alias`` for ``flt`` (a typed filter) and its parameters."""
    if getattr(flt, "extra", None):
        raise ValueError("SQL fragments in a filter cannot run on PostgreSQL; pass metadata pairs")
    a = alias
    clauses: list[str] = []
    params: list[Any] = []
    if getattr(flt, "only_deleted", False):
        clauses.append(f"{a}.deleted")
    elif not getattr(flt, "include_deleted", False):
        clauses.append(f"NOT {a}.deleted")
    if not getattr(flt, "include_superseded", False):
        clauses.append(f"{a}.superseded_by IS NULL")
    now = getattr(flt, "now", None)
    if not getattr(flt, "include_expired", False) and now is not None:
        clauses.append(f"({a}.expires_at IS NULL OR {a}.expires_at > %s)")
        params.append(now)
    namespaces = tuple(getattr(flt, "namespaces", ()) or ())
    if namespaces:
        clauses.append(f"{a}.namespace = ANY(%s)")
        params.append(list(namespaces))
    tags = tuple(getattr(flt, "tags", ()) or ())
    if tags:
        clauses.append(f"{a}.tags @> %s::text[]")
        params.append(list(tags))
    since, until = getattr(flt, "since", None), getattr(flt, "until", None)
    if since is not None:
        clauses.append(f"{a}.created_at >= %s")
        params.append(since)
    if until is not None:
        clauses.append(f"{a}.created_at < %s")
        params.append(until)
    projects = getattr(flt, "projects", None)
    if projects is not None:
        named = [p for p in projects if p is not None]
        parts = []
        if named:
            parts.append(f"{a}.project = ANY(%s)")
            params.append(named)
        if None in projects:
            parts.append(f"{a}.project IS NULL")
        clauses.append("(" + (" OR ".join(parts) or "false") + ")")
    branch = getattr(flt, "branch", None)
    if branch is not None:
        clauses.append(f"{a}.branch = %s")
        params.append(branch)
    if getattr(flt, "only_expired", False):
        clauses.append(f"({a}.expires_at IS NOT NULL AND {a}.expires_at <= %s)")
        params.append(now)
    source = getattr(flt, "source", None)
    if source is not None:
        clauses.append(f"{a}.source = %s")
        params.append(source)
    pairs = list(metadata) or list(getattr(flt, "metadata", ()) or ())
    for key, value in pairs:
        clauses.append(f"json_extract_path_text({a}.metadata, %s) = %s")
        params.extend((key, value))
    who = list(authors) or list(getattr(flt, "authors", ()) or ())
    if who:
        clauses.append(f"{a}.author = ANY(%s)")
        params.append(who)
    return (" AND ".join(clauses) or "true"), params
