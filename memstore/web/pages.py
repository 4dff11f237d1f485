"""The HTML pages: search/browse, a memory (edit, expiry, forget/restore, history), capture,
overview (with verify) and purge. Each handler makes MemoryStore calls in a worker thread and
renders a template; state changes come in as POST forms (the CSRF check is the middleware's).
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from ..errors import ConflictError, MemstoreError, NotFoundError
from ..models import memory_status
from . import filters
from .overview import build_overview
from .state import WebState, purge_digest, run, run_noted

__all__ = ["PAGE_ROUTES"]


async def form_fields(request: Request) -> dict[str, str]:
    """An urlencoded form's fields (the last of repeated ones); any other body is no fields."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return {}
    body = (await request.body()).decode("utf-8", "replace")
    return dict(parse_qsl(body, keep_blank_values=True))


def _state(request: Request) -> WebState:
    return request.app.state.web


def _status_of(exc: MemstoreError) -> int:
    return 404 if isinstance(exc, NotFoundError) else 409 if isinstance(exc, ConflictError) else 400


def render(request: Request, template: str, http_status: int = 200, **context: Any) -> HTMLResponse:
    web = _state(request)
    context.setdefault("message", None)
    context.setdefault("notices", ())
    context.setdefault("error", None)
    html = web.env.get_template(template).render(
        csrf=web.guard.csrf, home=web.home_label, now=datetime.now(timezone.utc), qs=_qs, **context
    )
    return HTMLResponse(html, status_code=http_status)


def _qs(**params: Any) -> str:
    return urlencode({k: v for k, v in params.items() if v not in (None, "")}, doseq=True)


def _error_page(request: Request, exc: MemstoreError) -> HTMLResponse:
    return render(request, "error.html", http_status=_status_of(exc), error=str(exc), nav="")


# -- search ------------------------------------------------------------------------------------


async def search(request: Request) -> Response:
    web = _state(request)
    params = request.query_params
    fields = web.filter_fields
    q = (params.get("q") or "").strip()
    mode, limit = filters.recall_options(params, web.store.settings)
    context: dict[str, Any] = dict(
        nav="search", q=q, mode=mode if mode in filters.MODES else "hybrid", modes=filters.MODES,
        fields=fields, values=filters.selected(params, fields), hits=None, memories=[], newer=None,
        older=None, status="",
    )
    context["filtered"] = any(context["values"].values())
    try:
        kwargs = filters.filter_kwargs(params, fields)
        if q:
            hits = await run(web.store.recall, q, limit, mode=mode, **kwargs)
            context.update(hits=hits, status=f"{len(hits)} hits ({mode})" if hits else "no memories found",
                           notices=tuple(getattr(hits, "notices", ())))  # this call's own notices
        else:
            page_size, offset = filters.paging(params)
            memories = await run(web.store.list, limit=page_size + 1, offset=offset, **kwargs)
            more = len(memories) > page_size
            memories = memories[:page_size]
            base = {k: v for k, v in params.multi_items() if k not in ("offset", "q")}
            context.update(
                memories=memories,
                status=f"newest first · {offset + 1}–{offset + len(memories)}" if memories else "no memories",
                newer=_qs(**_merge(base, offset=max(0, offset - page_size))) if offset > 0 else None,
                older=_qs(**_merge(base, offset=offset + page_size)) if more else None,
            )
    except MemstoreError as exc:
        context.update(error=str(exc), status="")
        return render(request, "search.html", http_status=_status_of(exc), **context)
    return render(request, "search.html", **context)


def _merge(base: list[tuple[str, str]] | dict[str, Any], **extra: Any) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for key, value in (base.items() if isinstance(base, dict) else base):
        merged.setdefault(key, []).append(value)
    merged.update(extra)
    return merged


# -- a memory ----------------------------------------------------------------------------------

_SHA = re.compile(r"[0-9a-f]{7,64}")
_FORGE_PROJECT = re.compile(
    r"(github\.com|gitlab\.com|codeberg\.org|bitbucket\.org)/[A-Za-z0-9._-]+/[A-Za-z0-9._-]+"
)


def commit_facts(memory: Any) -> dict[str, Any] | None:
    """The commit data of a commit memory (source ``git``), with a web link only for a known
    forge and a well-formed sha (both checked here: memory fields are hostile)."""
    meta = memory.metadata
    sha = meta.get("commit")
    if memory.source != "git" or not isinstance(sha, str):
        return None
    url = host = None
    if _SHA.fullmatch(sha) and memory.project and _FORGE_PROJECT.fullmatch(memory.project):
        host = memory.project.split("/", 1)[0]
        url = f"https://{memory.project}/commit/{sha}"
    paths = meta.get("paths") if isinstance(meta.get("paths"), list) else []
    total = meta.get("paths_total")
    more = total - len(paths) if isinstance(total, int) and total > len(paths) else 0
    parents = meta.get("parents") if isinstance(meta.get("parents"), list) else []
    return {"sha": sha, "url": url, "host": host, "author": meta.get("author"),
            "date": meta.get("author_date"), "parents": parents, "paths": paths, "more": more}


async def memory_page(request: Request, memory_id: str | None = None, **context: Any) -> Response:
    web = _state(request)
    memory_id = memory_id or request.path_params["memory_id"]
    try:
        memory = await run(web.store.get, memory_id)
        versions = await run(web.store.history, memory_id)
    except MemstoreError as exc:
        return _error_page(request, exc)
    at = datetime.now(timezone.utc)
    status = memory_status(memory, at)
    return render(
        request, "memory.html", nav="", m=memory, status=status, commit=commit_facts(memory),
        versions=[(v, memory_status(v, at)) for v in versions],
        editable=status in ("current", "expired") and not memory.deleted,
        metadata_json=json.dumps(memory.metadata, indent=2, ensure_ascii=False) if memory.metadata else "",
        **context,
    )


def _tags(raw: str) -> list[str]:
    return [t.strip() for t in raw.split(",") if t.strip()]


def _metadata(raw: str) -> dict[str, Any]:
    raw = raw.strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _FormError(f"metadata is not valid JSON ({exc.msg} at line {exc.lineno})") from exc
    if not isinstance(value, dict):
        raise _FormError("metadata must be a JSON object")
    return value


class _FormError(MemstoreError):
    """A form field the page itself could not read."""


def update_changes(form: Any, memory: Any) -> dict[str, Any]:
    """The ``update`` keyword arguments a submitted edit or expiry form asks for: only the
    fields that differ from ``memory`` (so editing the text never rewrites the metadata)."""
    changes: dict[str, Any] = {}
    if form.get("form") == "expiry":
        ttl = (form.get("ttl") or "").strip()
        at = (form.get("expires_at") or "").strip()
        if form.get("clear"):
            changes["expires_at"] = None
        elif ttl and at:
            raise _FormError("give either 'expire after' or 'at', not both")
        elif ttl:
            changes["ttl"] = ttl
        elif at:
            changes["expires_at"] = at
        else:
            raise _FormError("give a duration (7d) or a time to expire at")
        return changes
    text = form.get("text")
    if text is not None and text.replace("\r\n", "\n") != memory.text:
        changes["text"] = text.replace("\r\n", "\n")
    if form.get("tags") is not None and tuple(_tags(form["tags"])) != memory.tags:
        changes["tags"] = _tags(form["tags"])
    if form.get("metadata") is not None:
        meta = _metadata(form["metadata"])
        if meta != memory.metadata:
            changes["metadata"] = meta
    source = (form.get("source") or "").strip()
    if source and source != memory.source:
        changes["source"] = source
    return changes


async def update(request: Request) -> Response:
    web = _state(request)
    memory_id = request.path_params["memory_id"]
    form = await form_fields(request)
    try:
        memory = await run(web.store.get, memory_id)
        changes = update_changes(form, memory)
        if not changes:
            return await memory_page(request, memory_id, message="Nothing to change.")
        result, notes = await run_noted(web.store.update, memory_id, **changes)
    except MemstoreError as exc:
        page = await memory_page(request, memory_id, error=str(exc))
        page.status_code = _status_of(exc)
        return page
    message = f"Saved as a new version ({result.id}); the old one is in the history." if result.created \
        else "Nothing to change."
    shown = dict.fromkeys([*result.notices, *notes])  # the result's own and the call's, once each
    return await memory_page(request, result.id, message=message,
                             notices=[n for n in shown if n != "nothing to change"])


async def forget(request: Request) -> Response:
    return await _tombstone(request, "forget", "Forgotten: it is kept as a tombstone until purge.")


async def restore(request: Request) -> Response:
    return await _tombstone(request, "restore", "Restored.")


async def _tombstone(request: Request, action: str, message: str) -> Response:
    web = _state(request)
    memory_id = request.path_params["memory_id"]
    try:
        _, notes = await run_noted(getattr(web.store, action), memory_id)
    except MemstoreError as exc:
        page = await memory_page(request, memory_id, error=str(exc))
        page.status_code = _status_of(exc)
        return page
    return await memory_page(request, memory_id, message=message, notices=notes)


# -- capture -----------------------------------------------------------------------------------


async def capture_form(request: Request) -> Response:
    web = _state(request)
    namespaces = list((await run(web.store.stats)).get("namespaces") or {})
    return render(request, "capture.html", nav="capture", form={}, duplicate=None, namespaces=namespaces)


async def capture(request: Request) -> Response:
    web = _state(request)
    form = await form_fields(request)
    values = {k: v for k, v in form.items() if k != "csrf"}
    try:
        result = await run(
            web.store.capture,
            (form.get("text") or "").replace("\r\n", "\n"),
            namespace=(form.get("namespace") or "").strip() or None,
            tags=_tags(form.get("tags") or ""),
            metadata=_metadata(form.get("metadata") or ""),
            source=(form.get("source") or "").strip() or "web",
            project=(form.get("project") or "").strip() or None,
            ttl=(form.get("ttl") or "").strip() or None,
            allow_duplicate=bool(form.get("allow_duplicate")),
        )
    except MemstoreError as exc:
        return render(request, "capture.html", http_status=_status_of(exc), nav="capture", form=values,
                      duplicate=None, namespaces=[], error=str(exc))
    if result.near_duplicate_of:
        return render(request, "capture.html", http_status=409, nav="capture", form=values, duplicate=result,
                      namespaces=[], error="Not stored.")
    message = "Stored." if result.created else "Already stored: the same text is in this namespace."
    return await memory_page(request, result.id, message=message, notices=list(result.notices))


# -- overview ----------------------------------------------------------------------------------


async def overview(request: Request, **context: Any) -> Response:
    web = _state(request)
    data = await run(build_overview, web.store, web.log_files)
    return render(request, "overview.html", nav="overview", o=data, last_verify=web.last_verify(), **context)


async def run_verify(request: Request) -> Response:
    web = _state(request)
    await run(web.verify)
    return await overview(request, message="Verify finished.")


# -- purge -------------------------------------------------------------------------------------


async def purge_page(request: Request, **context: Any) -> Response:
    web = _state(request)
    preview = await run(web.store.purge, dry_run=True)
    context.setdefault("done", None)
    return render(request, "purge.html", nav="purge", items=preview.items,
                  expect=purge_digest(preview), **context)


async def purge(request: Request) -> Response:
    web = _state(request)
    form = await form_fields(request)
    result = await run(web.purge_if_unchanged, form.get("expect") or "")
    if result is None:
        return await purge_page(request, error="The list changed since it was shown; check it again.")
    return await purge_page(request, done=result.count)


PAGE_ROUTES: list[tuple[str, Any, list[str]]] = [
    ("/", search, ["GET"]),
    ("/memory/{memory_id}", memory_page, ["GET"]),
    ("/memory/{memory_id}/update", update, ["POST"]),
    ("/memory/{memory_id}/forget", forget, ["POST"]),
    ("/memory/{memory_id}/restore", restore, ["POST"]),
    ("/capture", capture_form, ["GET"]),
    ("/capture", capture, ["POST"]),
    ("/overview", overview, ["GET"]),
    ("/overview/verify", run_verify, ["POST"]),
    ("/purge", purge_page, ["GET"]),
    ("/purge", purge, ["POST"]),
]
