"""Shared pieces of the CLI modules: opening the store, errors, JSON, progress bars.

Library errors become ``click.ClickException`` (one line on stderr, exit 1).
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any

import click

from .. import limits
from ..errors import MemstoreError
from ..settings import load_settings
from ..store import MemoryStore, open_store
from ..termsafe import escape, escape_json

__all__ = [
    "echo", "emit_json", "handle_errors", "json_opt", "open_from_context", "parse_meta", "progress_bar",
    "read_stdin_text",
]

json_opt = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _one_line_warning(message: Warning | str, category: type[Warning], *_args: Any, **_kw: Any) -> None:
    click.echo(str(message), err=True)


def handle_errors(fn: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MemstoreError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper


@contextmanager
def open_from_context(ctx: click.Context) -> Iterator[MemoryStore]:
    warnings.showwarning = _one_line_warning
    store = open_store(settings=load_settings(ctx.obj["overrides"]))
    try:
        yield store
    finally:
        store.close()
        for notice in store.notices:
            echo(f"memstore: {' '.join(notice.split())}", err=True)  # one line each


def emit_json(data: Any) -> None:
    click.echo(escape_json(json.dumps(data, indent=2, ensure_ascii=False)))


def echo(message: Any = None, *, err: bool = False, nl: bool = True) -> None:
    """``click.echo`` for human-readable output: memory text is hostile, so every character a
    terminal would act on (escape sequences, C1 and bidi controls) is shown escaped."""
    click.echo(None if message is None else escape(str(message)), err=err, nl=nl)


def progress_bar(label: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A click progress bar on stderr driven by a (done, total) callback."""
    state: dict[str, Any] = {}

    def update(done: int, total: int) -> None:
        if "bar" not in state:
            state["bar"] = click.progressbar(length=total, label=label, file=sys.stderr)
            state["bar"].__enter__()
        bar = state["bar"]
        bar.update(done - bar.pos)

    def finish() -> None:
        if "bar" in state:
            state["bar"].__exit__(None, None, None)

    return update, finish


def parse_meta(pairs: tuple[str, ...]) -> dict[str, str]:
    """``--meta KEY=VALUE`` options as a dict."""
    meta: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--meta")
        meta[key.strip()] = value
    return meta


def read_stdin_text() -> bytes:
    """Memory text piped on stdin (for TEXT omitted or '-')."""
    stream = sys.stdin.buffer
    if stream.isatty():
        raise click.UsageError("give the text as an argument or pipe it on stdin")
    # Read one byte more than the limit allows (plus a trailing newline), never all of it:
    # 200 MB piped in must not be held in memory to be refused.
    limit = limits.MAX_TEXT_BYTES
    data = stream.read(limit + 3)
    # A trailing newline from `echo` or a heredoc is not part of the memory.
    text = data.rstrip(b"\r\n")
    if len(text) > limit:
        raise click.ClickException(
            f"text on stdin is more than {limit:,} bytes; the limit is {limit:,} bytes "
            "(split it into several memories)"
        )
    return text
