"""``memstore ui``: serve the local web page (search, a memory's history and edits, capture,
overview, purge) on 127.0.0.1 and open it in the browser; Ctrl-C stops it."""

from __future__ import annotations

import contextlib

import click

from .util import echo, handle_errors, open_from_context

__all__ = ["ui"]

@click.command(short_help="Serve the local web page (127.0.0.1) and print its URL.")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True,
              help="Port to listen on (0: a free one).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback also needs --allow-remote.")
@click.option("--allow-remote", is_flag=True,
              help="Allow a non-loopback --host (the page can change and purge every memory).")
@click.option("--no-browser", is_flag=True, help="Only print the URL; do not open a browser.")
@click.pass_context
@handle_errors
def ui(ctx: click.Context, port: int, host: str, allow_remote: bool, no_browser: bool) -> None:
    """Serve the local web page for this store and print its URL (with this run's token)."""
    from ..web.server import UI_PACKAGES, can_open_browser, is_loopback, require_ui, serve

    try:
        require_ui()
    except ImportError as exc:
        if (exc.name or "").split(".")[0] in UI_PACKAGES:
            raise click.ClickException(
                f"the web page needs the ui extra ({exc.name} is missing): pip install 'memstore[ui]'"
            ) from exc
        raise
    if not is_loopback(host) and not allow_remote:
        raise click.UsageError(f"--host {host} is not a loopback address; add --allow-remote to serve there")

    def ready(prepared) -> None:  # type: ignore[no-untyped-def]
        if prepared.warning:
            echo(f"memstore: {prepared.warning}", err=True)
        echo(f"memstore ui: {prepared.url}")
        if not no_browser and not can_open_browser():
            echo("memstore: no display to open a browser on; open the URL above", err=True)
        echo("Ctrl-C stops it.", err=True)

    # Ctrl-C: uvicorn has shut down already; the store closes after it
    with open_from_context(ctx) as store, contextlib.suppress(KeyboardInterrupt):
        serve(store, host=host, port=port, allow_remote=allow_remote, open_browser=not no_browser,
              on_ready=ready)
    echo("memstore ui: stopped", err=True)
