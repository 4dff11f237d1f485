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
    "NOT_STORED", "confirmed", "echo", "emit_json", "emit_json_lines", "handle_errors", "json_opt",
    "meta_json_opt", "nl_opt", "open_from_context", "parse_meta", "progress_bar", "read_stdin_text",
]

#: Exit status of a capture that stored nothing because a near-duplicate is live (no other
#: outcome uses it: 0 stored or already stored, 1 error, 2 usage error).
NOT_STORED = 3

json_opt = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
nl_opt = click.option(
    "--nl", is_flag=True,
    help="Print newline-delimited JSON: one compact object per line (for jq, grep, streaming).",
)


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
    """Pretty JSON (a list prints as one array)."""
    click.echo(escape_json(json.dumps(data, indent=2, ensure_ascii=False)))


def echo(message: Any = None, *, err: bool = False, nl: bool = True) -> None:
    """``click.echo`` for human-readable output: memory text is hostile, so every character a
    terminal would act on (escape sequences, C1 and bidi controls) is shown escaped."""
    click.echo(None if message is None else escape(str(message)), err=err, nl=nl)


def emit_json_lines(items: Any) -> None:
    """Newline-delimited JSON: one compact object per line."""
    for item in items:
        click.echo(escape_json(json.dumps(item, ensure_ascii=False, separators=(",", ":"))))


def confirmed(question: str, *, yes: bool, refusal: str) -> bool:
    """Whether a destructive step may go ahead: ``--yes``, or a "y" typed on a terminal.
    Without a terminal and without ``--yes`` it is a usage error saying ``refusal``."""
    if yes:
        return True
    if not sys.stdin.isatty():
        raise click.UsageError(f"{refusal}: pass --yes to do it (--dry-run only lists)")
    return click.confirm(question, default=False, err=True)


#: Without a terminal, progress is a line every this many seconds (and at 10 %, 20 %, …).
PROGRESS_SECONDS = 10.0


def progress_bar(label: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """Progress on stderr driven by a (done, total) callback: a click progress bar on a
    terminal; elsewhere (a log, CI, a pipe) one line per tenth done or per PROGRESS_SECONDS,
    and a last line when done."""
    if not sys.stderr.isatty():
        return _progress_lines(label)
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


def _progress_lines(label: str) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    import time

    state: dict[str, Any] = {"started": time.monotonic(), "at": time.monotonic(), "tenth": 0, "last": None}

    def line(done: int, total: int) -> None:
        elapsed = time.monotonic() - state["started"]
        share = f" ({100 * done // total}%)" if total else ""
        click.echo(f"memstore: {label}: {done:,}/{total:,}{share}, {elapsed:.0f} s", err=True)
        state.update(at=time.monotonic(), last=(done, total))

    def update(done: int, total: int) -> None:
        tenth = 10 * done // total if total else 10
        if tenth > state["tenth"] or time.monotonic() - state["at"] >= PROGRESS_SECONDS:
            state["tenth"] = tenth
            line(done, total)
        state["seen"] = (done, total)

    def finish() -> None:
        seen = state.get("seen")
        if seen is not None and state["last"] != seen:
            line(*seen)

    return update, finish


def parse_meta(pairs: tuple[str, ...], as_json: str | None = None) -> dict[str, Any]:
    """``--meta KEY=VALUE`` options (values are strings) merged over ``--meta-json`` (one JSON
    object, values typed: numbers, booleans, lists, objects)."""
    meta: dict[str, Any] = {}
    if as_json is not None:
        try:
            parsed = json.loads(as_json)
        except (ValueError, RecursionError) as exc:
            raise click.BadParameter(f"not JSON: {exc}", param_hint="--meta-json") from None
        if not isinstance(parsed, dict):
            raise click.BadParameter("must be a JSON object ({...})", param_hint="--meta-json")
        meta.update(parsed)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--meta")
        meta[key.strip()] = value
    return meta


meta_json_opt = click.option(
    "--meta-json", metavar="JSON",
    help='Metadata as one JSON object with typed values, e.g. \'{"n": 5, "ok": true}\' '
         "(--meta values are always strings).",
)


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
