"""CLI commands for a memory's life after capture: update, history, restore, export.

Registered on the ``memstore`` group by ``memstore/cli/__init__.py``. Each parses, makes one MemoryStore call
and formats (text or --json), like the core commands.
"""

from __future__ import annotations

import io
from typing import Any

import click

from ..models import Memory
from ..render import first_line, memory_head
from ..timeutil import now
from .util import emit_json, handle_errors, json_opt, open_from_context, parse_meta, read_stdin_text

__all__ = ["LIFECYCLE_COMMANDS"]


def _line(memory: Memory) -> str:
    return memory_head(memory, states=False, expiry=False)


def _status(memory: Memory) -> str:
    if memory.deleted:
        return "forgotten"
    if memory.superseded_by is not None:
        return "superseded"
    if memory.expired(now()):
        return "expired"
    return "current"


@click.command()
@click.argument("memory_id")
@click.argument("text", required=False)
@click.option("-t", "--tag", "tags", multiple=True, help="Replace the tags (repeatable).")
@click.option("--no-tags", is_flag=True, help="Remove all tags.")
@click.option("--meta", multiple=True, metavar="KEY=VALUE", help="Replace the metadata (repeatable).")
@click.option("--no-meta", is_flag=True, help="Remove all metadata.")
@click.option("--source", help="Replace the source.")
@click.option("--ttl", metavar="DURATION", help="Expire this long from now (7d, 12h …).")
@click.option("--expires", "expires_at", metavar="TIME", help="Expire at this time (ISO 8601).")
@click.option("--no-expiry", is_flag=True, help="Remove the expiry.")
@json_opt
@click.pass_context
@handle_errors
def update(
    ctx: click.Context, memory_id: str, text: str | None, tags: tuple[str, ...], no_tags: bool,
    meta: tuple[str, ...], no_meta: bool, source: str | None, ttl: str | None,
    expires_at: str | None, no_expiry: bool, as_json: bool,
) -> None:
    """Write a new version of memory MEMORY_ID; the old one is kept in its history.

    TEXT replaces the text ('-' reads stdin); options replace the other fields, and
    whatever is not given is carried over.
    """
    if tags and no_tags:
        raise click.UsageError("--tag and --no-tags contradict each other")
    if meta and no_meta:
        raise click.UsageError("--meta and --no-meta contradict each other")
    if sum(x is not None and x is not False for x in (ttl, expires_at, no_expiry or None)) > 1:
        raise click.UsageError("give one of --ttl, --expires and --no-expiry")
    changes: dict[str, Any] = {}
    if text is not None:
        changes["text"] = read_stdin_text() if text == "-" else text
    if tags or no_tags:
        changes["tags"] = list(tags)
    if meta or no_meta:
        changes["metadata"] = parse_meta(meta)
    if source is not None:
        changes["source"] = source
    if ttl is not None:
        changes["ttl"] = ttl
    if expires_at is not None or no_expiry:
        changes["expires_at"] = expires_at
    if not changes:
        raise click.UsageError("nothing to update: give TEXT or an option such as --tag or --meta")
    with open_from_context(ctx) as store:
        result = store.update(memory_id, **changes)
    if as_json:
        emit_json(result.to_dict())
        return
    if not result.created:
        click.echo(f"unchanged {_line(result)}")
        return
    click.echo(f"updated {result.supersedes} -> {_line(result)}")
    for notice in result.notices:
        click.echo(f"memstore: {notice}", err=True)


@click.command()
@click.argument("memory_id")
@json_opt
@click.pass_context
@handle_errors
def history(ctx: click.Context, memory_id: str, as_json: bool) -> None:
    """Show every version of a memory, oldest first (give the id of any version)."""
    with open_from_context(ctx) as store:
        versions = store.history(memory_id)
    if as_json:
        emit_json([{**m.to_dict(), "status": _status(m)} for m in versions])
        return
    for number, memory in enumerate(versions, start=1):
        mark = "*" if memory.id == memory_id else " "
        click.echo(f"{mark}v{number} {_status(memory):<10} {_line(memory)}")
        click.echo(f"      {first_line(memory.text, 100)}")


@click.command()
@click.argument("memory_id")
@json_opt
@click.pass_context
@handle_errors
def restore(ctx: click.Context, memory_id: str, as_json: bool) -> None:
    """Bring back a forgotten memory (before it is purged)."""
    with open_from_context(ctx) as store:
        memory = store.restore(memory_id)
    if as_json:
        emit_json(memory.to_dict())
    else:
        click.echo(f"restored {_line(memory)}")


@click.command()
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True),
              help="Write to this file (atomically) instead of stdout.")
@click.option("-n", "--namespace", "namespaces", multiple=True, help="Only these namespaces.")
@click.option("-t", "--tag", "tags", multiple=True, help="Only memories with all these tags.")
@click.option("--since", help="Only memories created since this time.")
@click.option("--until", help="Only memories created before this time.")
@click.option("--project", help="Only this project.")
@click.option("--current-only", is_flag=True,
              help="Only live, unexpired current versions (no history, no tombstones).")
@click.option("--with-vectors", is_flag=True,
              help="Include the stored vectors (an import with the same model skips embedding).")
@json_opt
@click.pass_context
@handle_errors
def export(
    ctx: click.Context, output: str | None, namespaces: tuple[str, ...], tags: tuple[str, ...],
    since: str | None, until: str | None, project: str | None, current_only: bool,
    with_vectors: bool, as_json: bool,
) -> None:
    """Write memories as JSON Lines that `memstore import` restores losslessly: ids, times,
    namespaces, tags, metadata, history and tombstones. Filters pick whole version chains."""
    if as_json and output is None:
        raise click.UsageError("--json prints a summary and needs -o/--output (stdout carries the export)")
    options: dict[str, Any] = dict(
        namespace=namespaces or None, tags=tags or None, since=since, until=until, project=project,
        current_only=current_only, with_vectors=with_vectors,
    )
    with open_from_context(ctx) as store:
        if output is not None:
            count = store.export_jsonl(output, **options)
        else:
            stream = io.TextIOWrapper(click.get_binary_stream("stdout"), encoding="utf-8", newline="\n")
            try:
                count = store.export_jsonl(stream, **options)
            finally:
                stream.flush()
                stream.detach()
    if as_json:
        emit_json({"exported": count, "file": output})
    else:
        click.echo(f"exported {count} memories" + (f" to {output}" if output else ""), err=True)


LIFECYCLE_COMMANDS = (update, history, restore, export)
