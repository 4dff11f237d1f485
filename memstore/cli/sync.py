"""``memstore sync``: the same memories on every machine, through a git remote (docs/sync.md)."""

from __future__ import annotations

import sys
from typing import Any

import click

from .util import echo, emit_json, handle_errors, json_opt, open_from_context, progress_bar

__all__ = ["sync"]


def _safe(text: str) -> str:
    """Names from memories (projects, namespaces) with control characters made visible."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@click.command(short_help="Sync memories with a git remote (a ref of their own).")
@click.option("--remote", metavar="URL",
              help="Remote to sync with (default: the sync.remote setting, else this repository's origin).")
@click.option("--status", "show_status", is_flag=True,
              help="Say what would move, the last sync and the remote; change nothing.")
@click.option("--dry-run", is_flag=True,
              help="Fetch and merge, then say what a sync would do; change nothing.")
@click.option("--yes", is_flag=True, help="Confirm the first sync to a remote without asking.")
@click.option("--include-unscoped/--no-include-unscoped", default=None,
              help="Also send memories with no project to a project's remote "
                   "(setting sync.include_unscoped).")
@json_opt
@click.pass_context
@handle_errors
def sync(ctx: click.Context, remote: str | None, show_status: bool, dry_run: bool, yes: bool,
         include_unscoped: bool | None, as_json: bool) -> None:
    """Merge this store's memories with a git remote's and push the result (ref refs/memstore/…)."""
    from ..sync import NeedsConfirmation, sync_status, sync_store

    with open_from_context(ctx) as store:
        if show_status:
            status = sync_status(store, remote, include_unscoped=include_unscoped)
            _show_status(status, as_json)
            if status["error"]:
                ctx.exit(1)
            return
        update, finish = progress_bar("syncing")

        def progress(_stage: str, done: int, total: int) -> None:
            if total >= 2000 and not as_json:
                update(done, total)

        try:
            try:
                result = sync_store(store, remote, include_unscoped=include_unscoped, yes=yes,
                                    dry_run=dry_run, progress=progress)
            except NeedsConfirmation as need:
                if as_json or not sys.stdin.isatty():
                    raise click.ClickException(f"{need} (run again with --yes)") from None
                _show_plan(need.plan)
                if not click.confirm("Sync these memories to that remote?", default=False):
                    raise click.ClickException("not synced") from None
                result = sync_store(store, remote, include_unscoped=include_unscoped, yes=True,
                                    progress=progress)
        finally:
            finish()
    if as_json:
        emit_json(result.to_dict())
        return
    if dry_run and result.plan:
        _show_plan(result.plan)
    words = (("would send", "receive", "delete", "send") if dry_run
             else ("sent", "received", "deleted", "sent"))
    resolved = result.conflicts_resolved
    echo(
        f"{_safe(result.remote)} {result.ref}: {words[0]} {result.sent}, {words[1]} {result.received}, "
        f"{words[2]} {result.purged_here} purged elsewhere, {words[3]} {result.purged_sent} purge marks; "
        f"{result.memories} versions in sync"
        + (f"; {resolved} concurrent edits/duplicates resolved (kept in history)" if resolved else "")
    )
    for notice in result.notices:
        echo(f"memstore: {notice}", err=True)
    if result.held_back:
        echo(f"held back {len(result.held_back)} memories holding what looks like a secret "
                   f"(e.g. {result.held_back[0]}): update or forget and purge them", err=True)
    if result.kept_local:
        echo(f"{len(result.kept_local)} synced memories repeat a memory kept out of sync here; "
                   "kept superseded by it", err=True)
    if result.vectors_dropped:
        echo(f"{result.vectors_dropped} vectors from the remote were invalid and re-embedded", err=True)


def _show_plan(plan: dict[str, Any] | None) -> None:
    if not plan:
        return
    echo(f"{plan['memories']} memories ({plan['versions']} versions with history) "
               "will go to the remote;")
    for label, key in (("projects:  ", "projects"), ("namespaces:", "namespaces")):
        echo(f"  {label} " + ", ".join(f"{_safe(k)} ({v})" for k, v in sorted(plan[key].items())))
    echo("Whoever can read the remote can read them.")


def _show_status(status: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit_json(status)
        return
    echo(f"remote:    {_safe(status['remote'])} ({status['ref']})")
    scope = status["scope"]
    projects = ", ".join(_safe(p) for p in scope["projects"]) if scope["projects"] is not None else "all"
    excluded = ", ".join(_safe(n) for n in scope["exclude_namespaces"])
    echo(f"scope:     projects {projects}; unscoped {'yes' if scope['include_unscoped'] else 'no'}"
               + (f"; excluding {excluded}" if excluded else ""))
    echo(f"last sync: {status['last_sync'] or 'never'}")
    if status["error"]:
        echo(f"remote unreadable: {status['error']}", err=True)
        return
    would = status["would"]
    echo(f"would:     send {would['send']}, receive {would['receive']}, delete {would['purge_here']} "
               f"purged elsewhere, send {would['purge_there']} purge marks "
               f"({would['memories_after']} versions after)")
    echo(f"resolved:  {status['conflicts_resolved']} concurrent edits/duplicates (kept in history)")
    if would["held_back"]:
        echo(f"held back: {len(would['held_back'])} memories holding what looks like a secret")
    if not status["confirmed"]:
        _show_plan(status.get("plan"))
