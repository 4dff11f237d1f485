"""Binding and running the page: a socket on loopback (a free port unless one is given), a
fresh token per run, uvicorn serving the app until Ctrl-C.

Binding to anything but loopback needs ``allow_remote=True``: the page can rewrite and purge
the store, and plain HTTP carries the token in clear on a network.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import sys
import threading
import webbrowser
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInputError
from .security import Guard, loopback_hosts

__all__ = [
    "UI_PACKAGES", "Prepared", "can_open_browser", "is_loopback", "prepare", "require_ui", "serve",
]

#: What the ``ui`` extra installs (imported lazily, so ``import memstore.web.server`` works without).
UI_PACKAGES = ("starlette", "uvicorn", "jinja2")

REMOTE_WARNING = (
    "warning: serving on {host}, reachable from other machines. Anyone who gets the URL (sent in "
    "clear over plain HTTP) can read, change and purge every memory. Use only on a network you trust."
)


def require_ui() -> None:
    """Import the ``ui`` extra's packages now; ImportError (its ``name`` the package) if one is missing."""
    import importlib

    for name in UI_PACKAGES:
        importlib.import_module(name)


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class Prepared:
    """A bound socket and the uvicorn server that will serve the app on it."""

    url: str
    guard: Guard
    sock: socket.socket
    server: Any
    warning: str | None = None

    def run(self) -> None:
        """Serve until stopped (Ctrl-C, or ``server.should_exit = True`` from another thread)."""
        try:
            self.server.run(sockets=[self.sock])
        finally:
            self.sock.close()


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InvalidInputError(f"cannot resolve host {host!r}: {exc}") from exc
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise InvalidInputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _allowed_hosts(host: str, port: int) -> list[str]:
    hosts = loopback_hosts(port)
    if is_loopback(host):
        return hosts
    if host not in ("0.0.0.0", "::", ""):
        hosts.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    for name in {socket.gethostname(), socket.getfqdn()}:
        hosts.append(f"{name}:{port}")
    return hosts


def prepare(
    store: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    allow_remote: bool = False,
    cwd: str | None = None,
    log_level: str = "warning",
) -> Prepared:
    """Bind ``host:port`` (0: a free port) and build the app and server for ``store``."""
    import uvicorn

    from .app import create_app
    from .overview import hook_logs

    remote = not is_loopback(host)
    if remote and not allow_remote:
        raise InvalidInputError(f"{host} is not a loopback address; serving there needs allow_remote")
    if not 0 <= port <= 65535:
        raise InvalidInputError(f"port must be between 0 and 65535, not {port}")
    sock = _bind(host, port)
    bound = sock.getsockname()[1]
    guard = Guard.for_hosts(_allowed_hosts(host, bound), cookie_name=f"memstore_ui_{bound}")
    app = create_app(store, guard, log_files=hook_logs(store, cwd))
    config = uvicorn.Config(
        app, log_level=log_level, access_log=False, lifespan="off", server_header=False,
        proxy_headers=False, date_header=False, timeout_graceful_shutdown=3,
    )
    shown = "127.0.0.1" if not remote else (socket.gethostname() if host in ("0.0.0.0", "::") else host)
    shown = f"[{shown}]" if ":" in shown else shown
    url = f"http://{shown}:{bound}/?token={guard.token}"
    warning = REMOTE_WARNING.format(host=host) if remote else None
    return Prepared(url, guard, sock, uvicorn.Server(config), warning)


def serve(
    store: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    allow_remote: bool = False,
    open_browser: bool = True,
    on_ready: Callable[[Prepared], None] | None = None,
    warm_up: bool = True,
) -> None:
    """Serve the page for ``store`` until Ctrl-C (KeyboardInterrupt reaches the caller after
    uvicorn has shut down). ``on_ready`` gets the bound server (its URL) before serving."""
    prepared = prepare(store, host=host, port=port, allow_remote=allow_remote)
    if on_ready is not None:
        on_ready(prepared)
    if warm_up:  # load the query model now rather than on the first keystroke
        threading.Thread(target=_warm_up, args=(store,), daemon=True).start()
    if open_browser and can_open_browser():
        threading.Thread(target=webbrowser.open, args=(prepared.url,), daemon=True).start()
    prepared.run()


def can_open_browser() -> bool:
    """False on a Linux/BSD machine without a display: there ``webbrowser`` would start a
    text-mode browser in the terminal the server is running in."""
    if sys.platform in ("darwin", "win32"):
        return True
    from ..settings import has_display

    return has_display()


def _warm_up(store: Any) -> None:
    with contextlib.suppress(Exception):  # a failing model shows up on the first real search
        store.recall("warm up", 1)
