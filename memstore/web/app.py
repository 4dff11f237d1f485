"""The ASGI app: routes (pages, JSON API, static files) behind the security middleware."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from .api import API_ROUTES
from .pages import PAGE_ROUTES
from .security import Guard, SecurityMiddleware
from .state import WebState
from .views import STATIC_DIR

__all__ = ["create_app"]


async def _not_found(request: Any, exc: Exception) -> PlainTextResponse:
    return PlainTextResponse("not found", status_code=404)


async def _server_error(request: Any, exc: Exception) -> PlainTextResponse:
    return PlainTextResponse(f"internal error: {type(exc).__name__}", status_code=500)


def create_app(store: Any, guard: Guard, *, log_files: dict[str, Path] | None = None) -> Any:
    """The page for ``store`` (an open MemoryStore, shared by all requests), guarded by
    ``guard``; ``log_files`` are hook logs the overview shows (label → path)."""
    routes = [Route(path, endpoint, methods=methods)
              for path, endpoint, methods in (*PAGE_ROUTES, *API_ROUTES)]
    routes.append(Mount("/static", app=StaticFiles(directory=str(STATIC_DIR)), name="static"))
    app = Starlette(routes=routes, exception_handlers={404: _not_found, 500: _server_error})
    app.state.web = WebState(store=store, guard=guard, log_files=dict(log_files or {}))
    return SecurityMiddleware(app, guard)
