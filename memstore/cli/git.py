"""The git commands (``hooks``, ``gc --branches``, ``import-git``) and the project/branch
scope options that ``capture``, ``recall`` and ``list`` share.

Each command parses, makes one library call (``git.hooks``, ``git.capture``), and formats.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..errors import GitError, MemstoreError
from ..git import capture as gitcapture
from ..git import hooks as hooklib
from ..git import repo as gitscope
from ..render import commit_line
from ..timeutil import parse_time
from .util import emit_json, handle_errors, json_opt, open_from_context, progress_bar

__all__ = [
    "GIT_COMMANDS",
    "capture_scope",
    "capture_scope_options",
    "recall_scope",
    "recall_scope_options",
]

repo_opt = click.option(
    "--repo", type=click.Path(file_okay=False, exists=True),
    help="The repository (default: the one containing the current directory).",
)


def _global_args(ctx: click.Context) -> list[str]:
    """The memstore options given on this command line, for a hook to run memstore the same way."""
    overrides = ctx.find_root().obj.get("overrides", {})
    args: list[str] = []
    if overrides.get("home"):
        args += ["--home", str(Path(overrides["home"]).expanduser().resolve())]
    if overrides.get("model_dir"):
        args += ["--model-dir", str(Path(overrides["model_dir"]).expanduser().resolve())]
    return args


# ---------------------------------------------------------------------------------------------
# Scope options for capture / recall / list


def _project_value(value: str) -> str:
    """A --project value: a repository directory or a remote URL is turned into its project id."""
    path = Path(value).expanduser()
    if path.is_dir():
        repo = gitscope.detect(path)
        if repo is not None:
            return repo.project
    if "://" in value or (":" in value and "@" in value.split(":", 1)[0]):
        return gitscope.normalise_remote(value)
    return value


def recall_scope_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--project / --branch / --all-projects, for commands that read memories."""
    fn = click.option(
        "--all-projects", is_flag=True,
        help="Every project (default inside a git repository: its project plus memories with none).",
    )(fn)
    fn = click.option("--branch", help="Only memories captured on this branch.")(fn)
    fn = click.option(
        "--project", "projects", multiple=True, metavar="PROJECT",
        help="Recall as if in this project (an id such as github.com/o/r, a remote URL or a "
             "repository path; repeatable): it plus memories with no project.",
    )(fn)
    return fn


def recall_scope(projects: tuple[str, ...], branch: str | None, all_projects: bool) -> dict[str, Any]:
    """The ``project=``/``branch=`` arguments for recall/list: the given projects, else the
    current repository's, each with the memories that have no project; everything outside a
    repository or with ``--all-projects``."""
    if all_projects and projects:
        raise click.UsageError("--all-projects and --project exclude each other")
    scope: dict[str, Any] = {"project": None, "branch": branch}
    if projects:
        scope["project"] = [*(_project_value(p) for p in projects), None]
    elif not all_projects:
        repo = gitscope.detect()
        if repo is not None:
            scope["project"] = [repo.project, None]
    return scope


def capture_scope_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--project / --branch / --no-project, for commands that store memories."""
    fn = click.option(
        "--no-project", is_flag=True, help="Store it without project or branch (recalled everywhere).",
    )(fn)
    fn = click.option("--branch", help="Branch to record (default: the current one).")(fn)
    fn = click.option(
        "--project", help="Project to record (default inside a git repository: its project).",
    )(fn)
    return fn


def capture_scope(project: str | None, branch: str | None, no_project: bool) -> dict[str, Any]:
    """The ``project=``/``branch=`` arguments for capture: the current repository's project and
    branch unless told otherwise."""
    if no_project:
        if project or branch:
            raise click.UsageError("--no-project excludes --project and --branch")
        return {"project": None, "branch": None}
    if project:
        return {"project": _project_value(project), "branch": branch}
    repo = gitscope.detect()
    if repo is None:
        return {"project": None, "branch": branch}
    return {"project": repo.project, "branch": branch or repo.branch}


# ---------------------------------------------------------------------------------------------
# memstore hooks …


@click.group()
def hooks() -> None:
    """Git hooks that record each commit as a memory, in the background."""


@hooks.command(name="install")
@repo_opt
@json_opt
@click.pass_context
@handle_errors
def hooks_install(ctx: click.Context, repo: str | None, as_json: bool) -> None:
    """Install the post-commit and post-rewrite hooks (existing hooks are chained, not replaced)."""
    report = hooklib.install(repo, global_args=_global_args(ctx))
    if as_json:
        emit_json(report.to_dict())
        return
    click.echo(f"hooks directory: {report.hooks_dir}")
    for name, action in report.actions.items():
        click.echo(f"  {name}: {action}")
    for note in report.notes:
        click.echo(f"note: {note}")
    click.echo("Each commit is now recorded in the background; `memstore hooks status` shows how it went.")


@hooks.command(name="uninstall")
@repo_opt
@json_opt
@handle_errors
def hooks_uninstall(repo: str | None, as_json: bool) -> None:
    """Remove memstore's hooks and put back the hooks they chained."""
    report = hooklib.uninstall(repo)
    if as_json:
        emit_json(report.to_dict())
        return
    click.echo(f"hooks directory: {report.hooks_dir}")
    for name, action in report.actions.items():
        click.echo(f"  {name}: {action}")
    for note in report.notes:
        click.echo(f"note: {note}")


@hooks.command(name="status")
@repo_opt
@click.option("-k", "--lines", default=10, show_default=True, type=click.IntRange(0, 400),
              help="Log lines to show.")
@json_opt
@click.pass_context
@handle_errors
def hooks_status(ctx: click.Context, repo: str | None, lines: int, as_json: bool) -> None:
    """Show whether the hooks are installed, recent captures and failures from their log."""
    try:
        with open_from_context(ctx) as store:
            state = hooklib.status(repo, store=store, lines=lines)
    except MemstoreError as exc:
        if isinstance(exc, GitError):
            raise
        state = hooklib.status(repo, lines=lines)  # the store is broken: still show the hooks
        click.echo(f"memstore: cannot open the store ({exc})", err=True)
    if as_json:
        emit_json(state.to_dict())
        return
    where = state.toplevel or state.hooks_dir
    click.echo(f"repository: {where} (project {state.project}"
               + (f", branch {state.branch})" if state.branch else ")"))
    click.echo(f"hooks dir:  {state.hooks_dir}"
               + (f"  (core.hooksPath from {state.hooks_path[1]})" if state.hooks_path else ""))
    for hook in state.hooks:
        if hook.state == "installed":
            text = f"installed, runs {hook.python}" + ("" if hook.python_ok else " (MISSING)")
        elif hook.state == "other":
            text = "another tool's hook is there (memstore's is not installed)"
        else:
            text = "not installed"
        if hook.chained:
            text += f"; chains {Path(hook.chained).name}"
        click.echo(f"  {hook.name + ':':<14}{text}")
    if state.pending_embeddings is not None:
        click.echo(f"pending embeddings: {state.pending_embeddings}")
    click.echo(f"log: {state.log}" + (f" ({state.failures} failure(s) in its recent lines)"
                                        if state.failures else ""))
    if state.last_failure:
        click.echo(f"  last failure: {state.last_failure}")
    for line in state.log_lines:
        click.echo(f"  {line}")


@hooks.command(name="run")
@click.argument("kind", type=click.Choice(list(hooklib.HOOK_NAMES)))
@click.option("--log", type=click.Path(dir_okay=False), help="Append the outcome to this file.")
@click.option("--rewrite-type", help="post-rewrite: amend or rebase, as git passes it.")
@click.option("--input", "input_path", type=click.Path(dir_okay=False, allow_dash=True),
              help="post-rewrite: the file with git's 'old new' lines ('-' for stdin).")
@click.option("--delete-input", is_flag=True, help="Delete the --input file once read.")
@click.option("--commit", help="post-commit: the commit to record (default: HEAD).")
@click.option("--ref", help="What HEAD pointed to when the hook fired (refs/heads/NAME, or HEAD).")
@click.option("--detach", is_flag=True,
              help="Start the work in a background session and return at once (for hook managers).")
@click.pass_context
@handle_errors
def hooks_run(ctx: click.Context, kind: str, log: str | None, rewrite_type: str | None,
              input_path: str | None, delete_input: bool, commit: str | None, ref: str | None,
              detach: bool) -> None:
    """What the hooks run: record the commit(s) git reports. Never fails a commit."""
    if detach:
        hooklib.spawn_detached(kind, global_args=_global_args(ctx))
        return
    result = hooklib.run(
        kind, overrides=ctx.find_root().obj["overrides"], log=log, rewrite_type=rewrite_type,
        input_path=input_path, delete_input=delete_input, commit=commit, ref=ref,
    )
    if log is None:
        click.echo(result.line, err=not result.ok)


# ---------------------------------------------------------------------------------------------
# memstore gc --branches, memstore import-git


@click.command()
@click.option("--branches", is_flag=True, help="Forget commit memories of deleted, unmerged branches.")
@repo_opt
@click.option("--yes", is_flag=True, help="Do it (without it, only show what would be forgotten).")
@json_opt
@click.pass_context
@handle_errors
def gc(ctx: click.Context, branches: bool, repo: str | None, yes: bool, as_json: bool) -> None:
    """Tidy the store. --branches: forget (tombstone) commit memories of this repository whose
    branch is gone and whose commit no remaining branch reaches. A dry run unless --yes."""
    if not branches:
        raise click.UsageError("say what to collect: --branches")
    where = gitscope.require_repo(repo)
    with open_from_context(ctx) as store:
        report = gitcapture.forget_stale_branches(store, where, dry_run=not yes)
    if as_json:
        data = report.to_dict()
        data.update(project=where.project, dry_run=not yes)
        emit_json(data)
        return
    if yes:
        click.echo(f"forgot {len(report.forgotten)} commit memories of deleted branches in {where.project}"
                   + (" (`memstore purge` deletes them for good)" if report.forgotten else ""))
        for memory in report.forgotten:
            click.echo(commit_line(memory))
        return
    click.echo(f"would forget {len(report.would_forget)} commit memories of deleted branches in "
               f"{where.project}" + (" (run again with --yes):" if report.would_forget else ""))
    for memory in report.would_forget:
        click.echo(commit_line(memory))


@click.command(name="import-git")
@repo_opt
@click.option("--since", help="Only commits since this date (2024-05-01, 30d, yesterday).")
@click.option("--max", "max_count", type=click.IntRange(1), help="At most this many (the newest).")
@click.option("--all", "all_branches", is_flag=True, help="Every local branch, not only HEAD's history.")
@click.option("--no-embed", is_flag=True,
              help="Store the text now and embed later (recall embeds a few each time; `reindex` all).")
@json_opt
@click.pass_context
@handle_errors
def import_git(ctx: click.Context, repo: str | None, since: str | None, max_count: int | None,
               all_branches: bool, no_embed: bool, as_json: bool) -> None:
    """Record existing commits of a repository (idempotent: commits already recorded are skipped)."""
    where = gitscope.require_repo(repo)
    since_time = parse_time(since, field="since") if since else None
    update, finish = progress_bar("importing commits")
    with open_from_context(ctx) as store:
        try:
            report = gitcapture.import_history(
                store, where, policy=gitcapture.CommitPolicy.from_settings(store.settings),
                since=since_time, max_count=max_count, all_branches=all_branches,
                embed=not no_embed, progress=update,
            )
        finally:
            finish()
    if as_json:
        emit_json({"project": where.project, "seen": report.seen, "stored": len(report.stored),
                   "already": len(report.already), "skipped": len(report.skipped)})
        return
    click.echo(f"read {report.seen} commits of {where.project}: stored {len(report.stored)}, "
               f"already recorded {len(report.already)}, skipped {len(report.skipped)} "
               "(merges/empty messages, see `memstore config`)")


#: Registered on the main group by memstore/cli/__init__.py.
GIT_COMMANDS = (hooks, gc, import_git)
