"""The local web page (``memstore ui``): search as you type with each hit's evidence, a
memory's page with its history and edits, capture, overview, purge.

An ASGI app (Starlette) served by uvicorn, server-rendered Jinja templates and one small
script; everything it loads ships in this package. Needs the ``ui`` extra
(``pip install 'memstore[ui]'``). Modules: ``app`` (routes), ``security`` (token, Host,
Origin, CSRF, headers), ``pages``/``api`` (HTML and JSON handlers), ``filters``,
``overview``, ``views`` (templates), ``state``, ``server`` (binding and running).
"""

from __future__ import annotations

__all__ = ["create_app", "serve"]


def __getattr__(name: str):  # lazy: importing memstore.web does not import starlette
    if name == "create_app":
        from .app import create_app

        return create_app
    if name == "serve":
        from .server import serve

        return serve
    raise AttributeError(name)
