"""CLI for agents: ``memstore mcp``, ``memstore agent-hook EVENT``, ``memstore agent ...``.

``agent-hook`` is run by an assistant before every prompt, so it never fails: whatever
happens it exits 0 (errors go to the hook log), and it exits without waiting for a recall
that missed its time budget.
"""

from __future__ import annotations

import json
import os
import sys
import time

import click

from .util import emit_json, handle_errors, json_opt

__all__ = ["AGENT_COMMANDS"]


@click.command()
@click.pass_context
@handle_errors
def mcp(ctx: click.Context) -> None:
    """Serve the store to agents over MCP on stdin/stdout.

    Tools: capture, recall, get, update, forget, list, stats. Needs the mcp extra
    (pip install 'memstore[mcp]'). The store opens on the first tool call and the model
    loads on the first embed, so the handshake is quick.
    """
    from ..settings import load_settings

    settings = load_settings(ctx.obj["overrides"])
    try:
        from ..agents.mcp_server import serve
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] in ("mcp", "mcp_types", "pydantic", "typing_extensions"):
            raise click.ClickException(
                "the MCP server needs the mcp extra: pip install 'memstore[mcp]'"
            ) from exc
        raise
    serve(settings)


@click.command(name="agent-hook")
@click.argument("event", type=click.Choice(["session-start", "prompt"]))
@click.option("--budget", type=int, metavar="CHARS",
              help="Most characters of context [setting agent.context_chars: 2000].")
@click.option("--mode", type=click.Choice(["auto", "hybrid", "keyword"]),
              help="Recall mode [setting agent.recall_mode: auto].")
@click.option("-v", "--verbose", is_flag=True,
              help="Say on stderr which recall answered, what was shown, and how long it took.")
@click.pass_context
def agent_hook(ctx: click.Context, event: str, budget: int | None, mode: str | None,
               verbose: bool) -> None:
    """Print memory context for an assistant's lifecycle hook.

    Reads the hook event (JSON) on stdin and prints Claude Code's hook output
    ({"hookSpecificOutput": {"additionalContext": ...}}), or nothing when no memory is
    relevant. session-start: memories about the current project and the most recent ones;
    prompt: memories relevant to the submitted prompt. Always exits 0; errors are logged
    (see `memstore agent status`).
    """
    pending = False
    try:
        from ..agents.hooks import process_started, run_hook

        started = process_started()
        stream = sys.stdin.buffer
        raw = b"" if stream.isatty() else stream.read()
        overrides = {**ctx.obj["overrides"], "agent.context_chars": budget, "agent.recall_mode": mode}
        result = run_hook(event, raw, overrides=overrides, started=started)
        pending = result.pending
        if result.output is not None:
            sys.stdout.write(json.dumps(result.output, ensure_ascii=False) + "\n")
        if verbose:
            elapsed = time.monotonic() - started
            sys.stderr.write(
                f"memstore agent-hook {event}: recall {result.recall_mode}"
                f"{' (hybrid still running)' if result.pending else ''}, "
                f"{len(result.memory_ids)} memories, {len(result.context)} chars, "
                f"{elapsed * 1000:.0f} ms since process start"
                f"{f', error: {result.error}' if result.error else ''}\n"
            )
        sys.stdout.flush()
        sys.stderr.flush()
    except BaseException:  # noqa: S110 - run_hook logs its own errors; this is the last guard
        pass
    if pending:
        # A hybrid recall missed the time budget and still holds the store in a worker
        # thread: leave now (the output is flushed; the store was only read).
        os._exit(0)


@click.group()
def agent() -> None:
    """Connect coding assistants to memstore (hooks and MCP)."""


scope_opt = click.option(
    "--user/--project", "user", default=True,
    help="~/.claude/settings.json (default) or .claude/settings.json of the current project.",
)


def _target(user: bool):  # noqa: ANN202
    from ..agents.claude_settings import settings_path

    return settings_path("user" if user else "project")


@agent.command()
@click.argument("assistant", type=click.Choice(["claude-code"]))
@scope_opt
@click.option("--command", "base", metavar="CMD",
              help="How the hooks call memstore (default: this memstore, by absolute path).")
@click.option("--print", "print_only", is_flag=True,
              help="Print the hook configuration instead of writing it.")
@json_opt
@handle_errors
def install(assistant: str, user: bool, base: str | None, print_only: bool, as_json: bool) -> None:
    """Install memstore's SessionStart and UserPromptSubmit hooks for ASSISTANT.

    Merges into the settings file, keeping every other hook and setting; running it again
    changes nothing (or points the hooks at this memstore if they called another one).
    """
    from ..agents.claude_settings import hook_config
    from ..agents.claude_settings import install as install_hooks

    path = _target(user)
    if print_only:
        click.echo(f"# merge into {path}:", err=True)
        emit_json({"hooks": hook_config(base)})
        return
    result = install_hooks(path, base)
    if as_json:
        emit_json(result.to_dict())
        return
    verb = "installed" if result.changed else "already installed"
    click.echo(f"{verb}: memstore hooks ({', '.join(result.commands)}) in {path}")


@agent.command()
@click.argument("assistant", type=click.Choice(["claude-code"]))
@scope_opt
@json_opt
@handle_errors
def uninstall(assistant: str, user: bool, as_json: bool) -> None:
    """Remove memstore's hooks for ASSISTANT; other hooks and settings stay."""
    from ..agents.claude_settings import uninstall as uninstall_hooks

    path = _target(user)
    result = uninstall_hooks(path)
    if as_json:
        emit_json(result.to_dict())
        return
    click.echo(f"removed memstore hooks from {path}" if result.changed else f"no memstore hooks in {path}")


@agent.command()
@click.option("--lines", default=5, show_default=True, type=click.IntRange(0),
              help="Last lines of the hook log to show.")
@json_opt
@click.pass_context
@handle_errors
def status(ctx: click.Context, lines: int, as_json: bool) -> None:
    """Where memstore's hooks are installed, and the last errors they logged."""
    from ..agents.claude_settings import installed_commands, read_settings, settings_path
    from ..agents.hooks import log_path
    from ..errors import MemstoreError
    from ..settings import load_settings

    files = {}
    for scope in ("user", "project"):
        path = settings_path(scope)
        try:
            files[scope] = {"file": str(path), "hooks": installed_commands(read_settings(path))}
        except MemstoreError as exc:
            files[scope] = {"file": str(path), "hooks": {}, "error": str(exc)}
    log = log_path(load_settings(ctx.obj["overrides"]))
    try:
        tail = log.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:] if lines else []
    except FileNotFoundError:
        tail = []
    if as_json:
        emit_json({"claude-code": files, "log": str(log), "log_tail": tail})
        return
    for scope, entry in files.items():
        events = ", ".join(entry["hooks"]) or "not installed"
        click.echo(f"claude-code ({scope}): {events}  [{entry['file']}]")
        if "error" in entry:
            click.echo(f"  {entry['error']}")
    click.echo(f"hook log: {log}")
    for line in tail:
        click.echo(f"  {line}")


AGENT_COMMANDS = (mcp, agent_hook, agent)
