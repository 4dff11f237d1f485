"""``memstore verify``: check the store's files agree with each other; ``--repair`` fixes
what SQLite can give back. Exit status 0 when every check passes, 1 otherwise."""

from __future__ import annotations

import click

from .util import echo, emit_json, handle_errors, json_opt, open_from_context

__all__ = ["verify"]


@click.command(short_help="Check that the store's files agree; --repair.")
@click.option("--repair", is_flag=True,
              help="Rebuild what can be rebuilt from SQLite (full-text index, tag table, missing "
                   "vectors, vector index). Never touches a database that fails integrity_check.")
@click.option("--quick", is_flag=True, help="PRAGMA quick_check instead of the full integrity_check.")
@json_opt
@click.pass_context
@handle_errors
def verify(ctx: click.Context, repair: bool, quick: bool, as_json: bool) -> None:
    """Check SQLite integrity, full-text index, tags, vectors, model ids and the vector index."""
    with open_from_context(ctx) as store:
        report = store.verify(repair=repair, quick=quick)
    if as_json:
        emit_json(report.to_dict())
    else:
        if report.found is not None:
            echo("found:")
            _print_checks(report.found)
            echo("repaired:")
            for action in report.repaired:
                echo(f"  - {action}")
            echo("after repair:")
        _print_checks(report.checks)
        if report.ok:
            echo("all checks passed")
        elif report.checks[0].ok is False:
            verb = "not repaired" if repair else "damaged"
            echo(f"{verb}: the database fails the SQLite integrity check and memstore does not "
                 "modify it; `memstore export --salvage -o FILE` gets out every readable "
                 "memory (then import FILE into a new store), or restore memstore.db from a backup",
                 err=True)
        else:
            hint = "" if repair else " (memstore verify --repair fixes what can be rebuilt)"
            echo(f"problems remain{hint}", err=True)
    if not report.ok:
        ctx.exit(1)


def _print_checks(checks: list) -> None:  # type: ignore[type-arg]
    for check in checks:
        status = "ok" if check.ok else ("skip" if check.skipped else "FAIL")
        echo(f"  {check.name:<8} {status:<5} {check.summary}")
        for problem in check.problems:
            echo(f"{'':17}- {problem}")
