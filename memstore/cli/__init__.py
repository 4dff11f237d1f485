"""The ``memstore`` command: parse, make one MemoryStore call, format (text or --json).

Library errors become one line on stderr and exit status 1; usage errors exit 2.
The command groups live beside this module (``lifecycle``, ``git``, ``agent``, ``admin``;
shared helpers in ``util``); only this package imports them, and nothing outside it
imports the CLI.
"""

from __future__ import annotations

import os
import sys
from typing import Any

#: numpy (imported later, when a command needs it) starts an OpenBLAS thread per core that
#: spins while the process starts: `import numpy` took 0.24 s of CPU for 0.16 s wall on 2
#: cores, 0.12 s with one thread. memstore computes without BLAS threads (einsum, numkong),
#: so a command asks for one unless the user chose otherwise. (The CLI only: a program
#: importing the library keeps its own setting.)
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import click

from ..models import Hit
from ..notices import set_announcer
from ..render import first_line, hit_lines, memory_head
from ..version import __version__
from .admin import verify
from .git import (
    GIT_COMMANDS,
    capture_scope,
    capture_scope_options,
    recall_scope,
    recall_scope_options,
)
from .lifecycle import LIFECYCLE_COMMANDS
from .sync import sync as sync_command
from .ui import ui
from .util import (
    NOT_STORED,
    confirmed,
    echo,
    emit_json,
    emit_json_lines,
    handle_errors,
    json_opt,
    meta_json_opt,
    nl_opt,
    open_from_context,
    progress_bar,
)
from .util import parse_meta as _parse_meta
from .util import read_stdin_text as _read_stdin_text

#: Below this cosine a hit is shown under a "weaker matches" line (the agent hooks leave such
#: hits out by default, agent.min_similarity); --min-similarity hides them.
WEAK_SIMILARITY = 0.3


def _weak_from(hits: list[Hit]) -> int | None:
    """Index of the first hit from which every hit is weak (cosine known and below
    WEAK_SIMILARITY), or None when the list does not end in weak hits."""
    start = None
    for i, hit in enumerate(hits):
        weak = hit.similarity is not None and hit.similarity < WEAK_SIMILARITY
        start = (i if start is None else start) if weak else None
    return start


# ---------------------------------------------------------------------------------------------


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  memstore capture "We chose PostgreSQL for JSONB" -n decisions -t db
  memstore recall "which database did we pick"
  memstore list -k 5
  memstore hooks install      # record every commit of this repository
  memstore COMMAND --help     # options and examples of one command

\b
Exit status: 0 done; 1 error (one line on stderr); 2 usage error; 3 capture stored
nothing (a near-duplicate is live; --allow-duplicate stores it).
Shell completion (bash; zsh/fish: zsh_source/fish_source):
  eval "$(_MEMSTORE_COMPLETE=bash_source memstore)"
""",
)
@click.version_option(__version__, prog_name="memstore")
@click.option(
    "--home", type=click.Path(file_okay=False),
    help="Store directory (default: $MEMSTORE_HOME, the config file, or the platform data dir).",
)
@click.option(
    "--db", "database_url", metavar="URL",
    help="A team store on PostgreSQL (postgresql://user@host/db) instead of the store directory "
         "($MEMSTORE_DATABASE_URL).",
)
@click.option(
    "--model-dir", type=click.Path(file_okay=False),
    help="Use the ONNX model in this directory instead of the bundled one ($MEMSTORE_MODEL_DIR).",
)
@click.pass_context
def cli(ctx: click.Context, home: str | None, database_url: str | None, model_dir: str | None) -> None:
    """memstore: capture memories and recall them by meaning or keyword, offline."""
    ctx.ensure_object(dict)
    ctx.obj.update(overrides={"home": home, "database_url": database_url, "model_dir": model_dir})
    set_announcer(lambda line: click.echo(line, err=True))


namespace_opt = click.option("-n", "--namespace", help="Namespace (default: 'default').")
author_opt = click.option(
    "--author", "authors", multiple=True,
    help="Only memories captured by this author (repeatable; team stores record authors).",
)
tags_opt = click.option("-t", "--tag", "tags", multiple=True, help="Tag (repeatable).")
redact_opt = click.option(
    "--redact/--no-redact", default=None,
    help="Replace secrets with [REDACTED:<kind>] before storing [setting redact: on].",
)


@cli.command(
    short_help="Store a memory (TEXT or stdin).",
    epilog="""\b
Examples:
  memstore capture "Flaky CI was a race in the retry backoff" -n learnings -t ci
  git log -1 --format=%B | memstore capture -n commits
  memstore capture "Dana covers on-call" --ttl 14d --meta-json '{"week": 49}'
  memstore capture "Standup moved to 10:00" --supersedes 01M80...Q7
  memstore capture "..." --json | jq .stored""",
)
@click.argument("text", required=False)
@namespace_opt
@tags_opt
@click.option("--source", help="Where the memory came from (e.g. a tool or file).")
@click.option("--meta", multiple=True, metavar="KEY=VALUE",
              help="Metadata entry, a string value (repeatable).")
@meta_json_opt
@click.option("--ttl", metavar="DURATION", help="Expire after this long (90m, 12h, 7d, 2w, 1y).")
@click.option("--expires", "expires_at", metavar="TIME", help="Expire at this time (ISO 8601).")
@click.option("--supersedes", metavar="ID", help="Store as the new version of memory ID (see `history`).")
@click.option(
    "--allow-duplicate", is_flag=True,
    help="Store even when a near-duplicate exists [setting near_duplicate.threshold].",
)
@capture_scope_options
@redact_opt
@json_opt
@click.pass_context
@handle_errors
def capture(
    ctx: click.Context, text: str | None, namespace: str | None, tags: tuple[str, ...],
    source: str | None, meta: tuple[str, ...], meta_json: str | None, ttl: str | None,
    expires_at: str | None, supersedes: str | None, allow_duplicate: bool, project: str | None,
    branch: str | None, no_project: bool, redact: bool | None, as_json: bool,
) -> None:
    """Store a memory. TEXT, or stdin when TEXT is omitted or '-'.

    The same text again returns the stored memory ("already stored", exit status 0). A
    text saying nearly the same as a live memory in the same namespace and project is
    NOT stored: the existing one is shown and the exit status is 3 (--json: "stored":
    false, "reason": "near-duplicate"), unless --allow-duplicate. --supersedes ID stores
    it as the new version of ID, keeping ID's tags and metadata unless given. Inside a
    git repository it records the repository's project and branch.
    """
    metadata = _parse_meta(meta, meta_json)
    scope = capture_scope(project, branch, no_project)
    body: str | bytes = text if text not in (None, "-") else _read_stdin_text()  # type: ignore[assignment]
    with open_from_context(ctx) as store:
        result = store.capture(
            body, namespace=namespace, tags=tags, metadata=metadata, source=source,  # type: ignore[arg-type]
            ttl=ttl, expires_at=expires_at, supersedes=supersedes, allow_duplicate=allow_duplicate,
            **scope,
            redact=redact,
        )
    if as_json:
        emit_json(result.to_dict())
        if not result.stored:
            ctx.exit(NOT_STORED)
        return
    if not result.stored:
        echo(f"similar memory already stored (cosine {result.similarity:.3f}): {memory_head(result)}")
        echo(f"    {first_line(result.text, 100)}")
        echo(f"memstore: not stored; if it corrects that memory, `memstore update {result.id} TEXT` "
                   f"(or capture --supersedes {result.id}); --allow-duplicate stores it anyway", err=True)
        ctx.exit(NOT_STORED)
    verb = "stored" if result.created else "already stored"
    if result.supersedes and result.created:
        verb = f"stored (supersedes {result.supersedes})"
    echo(f"{verb} {memory_head(result)}")
    for notice in result.notices:
        echo(f"memstore: {notice}", err=True)


@cli.command(
    short_help="Find memories by meaning and keyword.",
    epilog="""\b
Examples:
  memstore recall "why were the tests unstable"
  memstore recall "deploy" --mode keyword -n ops --since 30d
  memstore recall "which database" --min-similarity 0.3 -k 3
  memstore recall "release signing" --nl | jq -r .id""",
)
@click.argument("query")
@click.option("-k", "--limit", type=click.IntRange(1, 1000), help="Hits to show [setting recall.limit: 10].")
@click.option(
    "--mode", type=click.Choice(["hybrid", "keyword", "semantic"]),
    help="Recall mode [setting recall.mode: hybrid].",
)
@click.option("-n", "--namespace", "namespaces", multiple=True, help="Only these namespaces.")
@tags_opt
@click.option("--since", help="Only memories created since (2024-05-01, 7d, yesterday).")
@click.option("--until", help="Only memories created before this time.")
@click.option(
    "--min-similarity", type=click.FloatRange(-1.0, 1.0), metavar="COSINE",
    help="Leave out hits whose cosine similarity to the query is below this, e.g. 0.3 "
         "(hybrid/semantic) [setting recall.min_similarity: none].",
)
@author_opt
@recall_scope_options
@json_opt
@nl_opt
@click.pass_context
@handle_errors
def recall(
    ctx: click.Context, query: str, limit: int | None, mode: str | None, namespaces: tuple[str, ...],
    tags: tuple[str, ...], since: str | None, until: str | None, min_similarity: float | None,
    authors: tuple[str, ...], projects: tuple[str, ...], branch: str | None, all_projects: bool,
    as_json: bool, nl: bool,
) -> None:
    """Find memories by meaning and keyword, best first. Inside a git repository: its
    project's memories and those with no project (see --project, --branch, --all-projects).

    Hits whose cosine similarity is below 0.3 are listed last, under a "weaker matches"
    line; --min-similarity leaves out hits below a floor. --json prints one JSON array,
    --nl one JSON object per line.
    """
    scope = recall_scope(projects, branch, all_projects)
    with open_from_context(ctx) as store:
        limit = limit or store.settings["recall.limit"]
        mode = mode or store.settings["recall.mode"]
        hits = store.recall(
            query, limit, namespace=namespaces or None, tags=tags or None, since=since,
            until=until, mode=mode, min_similarity=min_similarity,
            author=authors or None, **scope,  # type: ignore[arg-type]
        )
    if nl:
        emit_json_lines(hit.to_dict() for hit in hits)
        return
    if as_json:
        emit_json([hit.to_dict() for hit in hits])
        return
    if not hits:
        echo("no memories found", err=True)
    weak = _weak_from(hits) if mode != "keyword" else None
    for rank, hit in enumerate(hits, start=1):
        if rank - 1 == weak:
            echo(f"    -- weaker matches (cosine below {WEAK_SIMILARITY}; "
                       "--min-similarity hides them) --")
        echo(hit_lines(rank, hit))


@cli.command(short_help="Show one memory.")
@click.argument("memory_id")
@json_opt
@click.pass_context
@handle_errors
def get(ctx: click.Context, memory_id: str, as_json: bool) -> None:
    """Show one memory."""
    with open_from_context(ctx) as store:
        memory = store.get(memory_id)
    if as_json:
        emit_json(memory.to_dict())
        return
    echo(memory_head(memory))
    if memory.source:
        echo(f"source: {memory.source}")
    if memory.expires_at is not None:
        echo(f"expires: {memory.expires_at.astimezone().isoformat(timespec='seconds')}")
    if memory.deleted_at is not None:
        echo(f"forgotten: {memory.deleted_at.astimezone().isoformat(timespec='seconds')}")
    if memory.supersedes:
        echo(f"supersedes: {memory.supersedes}")
    if memory.superseded_by:
        echo(f"superseded by: {memory.superseded_by}")
    for key, value in memory.metadata.items():
        echo(f"{key}: {value}")
    echo()
    echo(memory.text)


@cli.command(
    name="list", short_help="List memories, newest first.",
    epilog="""\b
Examples:
  memstore list -k 5 -n decisions
  memstore list --deleted            # forgotten ones (restore ID brings one back)
  memstore list --nl | jq -r '.id + " " + .namespace'""",
)
@click.option("-k", "--limit", default=20, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--offset", default=0, type=click.IntRange(0))
@click.option("-n", "--namespace", "namespaces", multiple=True, help="Only these namespaces.")
@tags_opt
@click.option("--since", help="Only memories created since this time.")
@click.option("--until", help="Only memories created before this time.")
@click.option("--deleted", is_flag=True, help="List forgotten memories instead.")
@click.option("--expired", is_flag=True, help="List expired memories (not purged yet) instead.")
@author_opt
@recall_scope_options
@json_opt
@nl_opt
@click.pass_context
@handle_errors
def list_(
    ctx: click.Context, limit: int, offset: int, namespaces: tuple[str, ...],
    tags: tuple[str, ...], since: str | None, until: str | None, deleted: bool, expired: bool,
    authors: tuple[str, ...], projects: tuple[str, ...], branch: str | None, all_projects: bool,
    as_json: bool, nl: bool,
) -> None:
    """List memories, newest first (scoped like recall). --json prints one JSON array,
    --nl one JSON object per line."""
    scope = recall_scope(projects, branch, all_projects)
    with open_from_context(ctx) as store:
        memories = store.list(
            limit=limit, offset=offset, namespace=namespaces or None, tags=tags or None,
            since=since, until=until, deleted=deleted, expired=expired, author=authors or None, **scope,
        )
    if nl:
        emit_json_lines(m.to_dict() for m in memories)
        return
    if as_json:
        emit_json([m.to_dict() for m in memories])
        return
    for memory in memories:
        echo(f"{memory_head(memory)}  {first_line(memory.text, 100)}")


@cli.command(short_help="Forget a memory (a tombstone until purge).")
@click.argument("memory_id")
@json_opt
@click.pass_context
@handle_errors
def forget(ctx: click.Context, memory_id: str, as_json: bool) -> None:
    """Forget a memory (a tombstone until `purge`)."""
    with open_from_context(ctx) as store:
        memory = store.forget(memory_id)
    if as_json:
        emit_json(memory.to_dict())
    else:
        echo(f"forgot {memory.id}")


@cli.command(
    short_help="Delete forgotten and expired memories for good.",
    epilog="""\b
Examples:
  memstore purge --dry-run     # list what would go, and why
  memstore purge               # on a terminal: list, then ask
  memstore purge --yes         # in scripts""",
)
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
@click.option("-y", "--yes", is_flag=True, help="Do not ask (needed when stdin is not a terminal).")
@json_opt
@click.pass_context
@handle_errors
def purge(ctx: click.Context, dry_run: bool, yes: bool, as_json: bool) -> None:
    """Delete forgotten and expired memories, and their older versions, for good.

    It cannot be undone: on a terminal it lists what would go and asks first; elsewhere
    it needs --yes. --dry-run only lists.
    """
    with open_from_context(ctx) as store:
        if not dry_run and not yes:
            preview = store.purge(dry_run=True)
            if not preview.count:
                result = preview
            else:
                if sys.stdin.isatty():
                    _print_purge(preview.items)
                if not confirmed(f"Delete these {preview.count} memories for good?", yes=yes,
                                 refusal=f"purge deletes {preview.count} memories for good"):
                    echo("nothing purged", err=True)
                    ctx.exit(1)
                result = store.purge()
        else:
            result = store.purge(dry_run=dry_run)
    if as_json:
        emit_json(result.to_dict())
        return
    _print_purge(result.items)
    verb = "would purge" if result.dry_run else "purged"
    echo(f"{verb} {result.count} memories")


def _print_purge(items: Any) -> None:
    for item in items:
        echo(f"{item.reason:<9} {memory_head(item.memory)}  {first_line(item.memory.text, 80)}")


@cli.command(short_help="Counts, sizes, model and index state.")
@json_opt
@click.pass_context
@handle_errors
def stats(ctx: click.Context, as_json: bool) -> None:
    """Counts, sizes, model and index state."""
    with open_from_context(ctx) as store:
        data = store.stats()
    if as_json:
        emit_json(data)
        return
    echo(f"memories:   {data['memories']} ({data['forgotten']} forgotten, "
               f"{data['superseded']} superseded)")
    for ns, count in data["namespaces"].items():
        echo(f"  {ns}: {count}")
    echo(f"model:      {data['model']['model_id']} ({data['model']['backend']}, "
               f"{data['model']['source']})")
    index = data["index"]
    stored = index.get("stored_vectors", index["vectors"])
    state = ("up to date" if index.get("up_to_date") else
             "behind the database: the next semantic or hybrid recall catches it up")
    echo(f"vectors:    {stored} stored for this model; the saved index holds "
               f"{index['vectors']} ({state})")
    echo(f"pending:    {data['without_current_vector']} memories lack a current vector "
               f"({data['pending_embeddings']} deferred; `memstore reindex` embeds them)")
    echo(f"database:   {data['database_bytes']:,} bytes")
    echo(f"index:      {data['index']['bytes']:,} bytes")
    if "home" in data:
        echo(f"home:       {data['home']}")
    else:  # a team store: its URL, password masked
        echo(f"store:      {data['database']}")


@cli.command(short_help="Embed what lacks a vector; rebuild the index.")
@click.option("--force", is_flag=True, help="Re-embed every memory, not only stale ones.")
@json_opt
@click.pass_context
@handle_errors
def reindex(ctx: click.Context, force: bool, as_json: bool) -> None:
    """Embed memories lacking a vector from the current model and rebuild the index."""
    update, finish = progress_bar("embedding")
    with open_from_context(ctx) as store:
        try:
            result = store.reindex(force=force, progress=update)
        finally:
            finish()
    if as_json:
        emit_json(result)
    else:
        echo(f"embedded {result['embedded']}, indexed {result['indexed']} with {result['model']}")


@cli.command(
    name="import", short_help="Import an export or plain JSON Lines.",
    epilog="""\b
Examples:
  memstore import backup.jsonl
  memstore export | memstore --home /other/store import -
  printf '%s\\n' '{"text": "a note", "tags": ["x"]}' | memstore import -""",
)
@click.argument("file", type=click.Path(dir_okay=False, allow_dash=True))
@namespace_opt
@redact_opt
@json_opt
@click.pass_context
@handle_errors
def import_(
    ctx: click.Context, file: str, namespace: str | None, redact: bool | None, as_json: bool
) -> None:
    """Import a `memstore export` file (ids, history and tombstones kept; importing it again
    changes nothing) or plain JSON Lines ({"text": ...} objects or strings, captured anew).
    '-' reads stdin."""
    update, finish = progress_bar("importing")
    with open_from_context(ctx) as store:
        try:
            source = sys.stdin if file == "-" else file
            result = store.import_jsonl(source, namespace=namespace, progress=update, redact=redact)
        finally:
            finish()
    redacted = [kind for r in result.results for kind in r.redacted]
    if redacted:
        from ..redact import summary

        touched = sum(bool(r.redacted) for r in result.results)
        echo(f"memstore: redacted {summary(redacted)} in {touched} memories before storing "
                   "(--no-redact keeps them)", err=True)
    if as_json:
        emit_json(result.to_dict())
        return
    line = f"read {result.read}, stored {result.created}, already present {result.unchanged}"
    if result.format != "jsonl":
        line += (f", state updated {result.updated}, merged into existing {result.merged}, "
                 f"embedded {result.embedded}")
    if result.indexed is not None:
        line += f"; vector index up to date ({result.indexed} vectors)"
    echo(line)
    for memory_id in result.conflicts:
        echo(f"memstore: {memory_id}: its newer state in the file clashes with a live memory; "
                   "kept the stored state", err=True)


@cli.command(short_help="Show the embedding model and where it came from.")
@json_opt
@click.pass_context
@handle_errors
def model(ctx: click.Context, as_json: bool) -> None:
    """Show the embedding model in use and where it came from."""
    with open_from_context(ctx) as store:
        info = store.model_info()
    if as_json:
        emit_json(info.to_dict())
        return
    echo(f"model:     {info.model_id}")
    echo(f"backend:   {info.backend}")
    echo(f"source:    {info.source}")
    echo(f"dimension: {info.dimension}")
    if info.path:
        echo(f"path:      {info.path}")
    if info.note:
        echo(f"note:      {info.note}")
    if info.query_worker:
        echo(f"worker:    {info.query_worker}")


@cli.command(short_help="Show where the store keeps its files.")
@json_opt
@click.pass_context
@handle_errors
def path(ctx: click.Context, as_json: bool) -> None:
    """Show where the store keeps its files (a team store's URL without its password)."""
    from ..settings import DB_FILENAME, cache_dir, config_path, home_dir, load_settings
    from ..storage.urls import redact_url

    settings = load_settings(ctx.obj["overrides"])
    home = home_dir(settings.get("home"))
    url = settings.get("database_url")
    data = {
        "home": str(home),
        "database": redact_url(url) if url else str(home / DB_FILENAME),
        "index": str(home / "index"),
        "cache": str(cache_dir()),
        "config": str(config_path()),
    }
    if as_json:
        emit_json(data)
    else:
        for key, value in data.items():
            echo(f"{key + ':':<10}{value}")



@cli.command(name="config", short_help="Show the effective settings and their sources.")
@json_opt
@click.pass_context
@handle_errors
def config_(ctx: click.Context, as_json: bool) -> None:
    """Show the effective settings and where each came from (the store directory as the
    path it resolves to)."""
    from ..settings import config_path, home_dir, load_settings

    settings = load_settings(ctx.obj["overrides"])
    entries = settings.to_dict()
    home = entries["home"]
    if home["value"] is None:  # the platform data directory: say which
        home.update(value=str(home_dir(None)), source=f"{home['source']}: platform data dir")
    if as_json:
        emit_json({"file": str(config_path()), "settings": entries})
        return
    echo(f"# config file: {config_path()}")
    for name, entry in entries.items():
        echo(f"{name} = {entry['value']!r}  ({entry['source']})")


from .agent import AGENT_COMMANDS  # noqa: E402

for _command in (*LIFECYCLE_COMMANDS, *GIT_COMMANDS, *AGENT_COMMANDS):
    cli.add_command(_command)
cli.add_command(verify)
cli.add_command(ui)
cli.add_command(sync_command)
