"""The page's JSON endpoints: the same data as the CLI's ``--json`` for the same command, built
by the same library calls and ``to_dict()`` (``history_to_dicts`` for history).

    GET  /api/recall?q=…&mode=&limit=&namespace=&tag=&project=&branch=&since=&until=   recall --json
    GET  /api/list?limit=&offset=&deleted=1&expired=1 (+ the filters)                  list --json
    GET  /api/memory/{id}            get --json          GET /api/memory/{id}/history  history --json
    GET  /api/stats                  stats --json        GET /api/model                model --json
    GET  /api/purge                  purge --dry-run --json
    POST /api/capture                capture --json      (a JSON object: text, namespace, tags, …)
    POST /api/memory/{id}/update     update --json       (text, tags, metadata, source, ttl, expires_at)
    POST /api/memory/{id}/forget     forget --json       POST /api/memory/{id}/restore restore --json
    POST /api/verify                 verify --json       POST /api/purge               purge --json

Library errors are ``{"error": "<one line>"}`` with 400 (bad input), 404 or 409.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import datetime, timezone
from functools import wraps
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import ConflictError, InvalidInputError, MemstoreError, NotFoundError
from ..models import history_to_dicts
from . import filters
from .state import WebState, run

__all__ = ["API_ROUTES"]

CAPTURE_FIELDS = ("namespace", "tags", "metadata", "source", "project", "branch", "ttl", "expires_at",
                  "supersedes", "allow_duplicate", "redact")
UPDATE_FIELDS = ("text", "tags", "metadata", "source", "ttl", "expires_at", "redact")


def _state(request: Request) -> WebState:
    return request.app.state.web


def _json(data: Any, status: int = 200) -> Response:
    body = json.dumps(data, indent=2, ensure_ascii=False).encode("utf-8")
    return Response(body, status_code=status, media_type="application/json")


def api(fn: Callable[[Request], Awaitable[Any]]) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint returning data; library errors become a one-line JSON error."""

    @wraps(fn)
    async def endpoint(request: Request) -> Response:
        try:
            return _json(await fn(request))
        except NotFoundError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        except ConflictError as exc:
            return JSONResponse({"error": str(exc)}, status_code=409)
        except MemstoreError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)

    return endpoint


async def _body(request: Request, allowed: tuple[str, ...]) -> dict[str, Any]:
    try:
        data = json.loads(await request.body() or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"the request body is not JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise InvalidInputError("the request body must be a JSON object")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise InvalidInputError(f"unknown field(s): {', '.join(unknown)}")
    return data


@api
async def recall(request: Request) -> Any:
    web = _state(request)
    params = request.query_params
    mode, limit = filters.recall_options(params, web.store.settings)
    kwargs = filters.filter_kwargs(params, web.filter_fields)
    hits = await run(web.store.recall, params.get("q") or "", limit, mode=mode, **kwargs)
    return [hit.to_dict() for hit in hits]


def _flag(params: Any, name: str) -> bool:
    return (params.get(name) or "").lower() in ("1", "true", "yes", "on")


@api
async def list_(request: Request) -> Any:
    web = _state(request)
    params = request.query_params
    limit, offset = filters.paging(params)
    kwargs = filters.filter_kwargs(params, web.filter_fields)
    memories = await run(web.store.list, limit=limit, offset=offset, deleted=_flag(params, "deleted"),
                         expired=_flag(params, "expired"), **kwargs)
    return [m.to_dict() for m in memories]


@api
async def get(request: Request) -> Any:
    return (await run(_state(request).store.get, request.path_params["memory_id"])).to_dict()


@api
async def history(request: Request) -> Any:
    versions = await run(_state(request).store.history, request.path_params["memory_id"])
    return history_to_dicts(versions, datetime.now(timezone.utc))


@api
async def stats(request: Request) -> Any:
    return await run(_state(request).store.stats)


@api
async def model(request: Request) -> Any:
    return (await run(_state(request).store.model_info)).to_dict()


@api
async def purge_preview(request: Request) -> Any:
    return (await run(_state(request).store.purge, dry_run=True)).to_dict()


@api
async def purge(request: Request) -> Any:
    return (await run(_state(request).store.purge)).to_dict()


@api
async def verify(request: Request) -> Any:
    return (await run(_state(request).verify)).to_dict()


@api
async def capture(request: Request) -> Any:
    data = await _body(request, ("text", *CAPTURE_FIELDS))
    text = data.pop("text", None)
    return (await run(_state(request).store.capture, text, **data)).to_dict()


@api
async def update(request: Request) -> Any:
    data = await _body(request, UPDATE_FIELDS)
    if not data:
        raise InvalidInputError("nothing to update: give text or a field such as tags or metadata")
    return (await run(_state(request).store.update, request.path_params["memory_id"], **data)).to_dict()


@api
async def forget(request: Request) -> Any:
    return (await run(_state(request).store.forget, request.path_params["memory_id"])).to_dict()


@api
async def restore(request: Request) -> Any:
    return (await run(_state(request).store.restore, request.path_params["memory_id"])).to_dict()


API_ROUTES: list[tuple[str, Any, list[str]]] = [
    ("/api/recall", recall, ["GET"]),
    ("/api/list", list_, ["GET"]),
    ("/api/memory/{memory_id}", get, ["GET"]),
    ("/api/memory/{memory_id}/history", history, ["GET"]),
    ("/api/memory/{memory_id}/update", update, ["POST"]),
    ("/api/memory/{memory_id}/forget", forget, ["POST"]),
    ("/api/memory/{memory_id}/restore", restore, ["POST"]),
    ("/api/capture", capture, ["POST"]),
    ("/api/stats", stats, ["GET"]),
    ("/api/model", model, ["GET"]),
    ("/api/verify", verify, ["POST"]),
    ("/api/purge", purge_preview, ["GET"]),
    ("/api/purge", purge, ["POST"]),
]
