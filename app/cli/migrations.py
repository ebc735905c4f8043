"""``--dry-run`` on advanced-alchemy's ``cartwright database upgrade``: the SQL pending migrations run, kept nowhere.

The command itself stays advanced-alchemy's (its prompt, ``--sql`` and ``--no-prompt`` unchanged); without the flag
its own callback runs as before.
"""

from __future__ import annotations

import asyncio
from typing import Any

import click

from app.lib.migrations import dry_run_upgrade
from app.lib.runtime import Runtime
from app.lib.settings import get_settings

HELP = (
    "Print the SQL the pending migrations run, and check that they succeed, changing nothing (PostgreSQL: "
    "in a transaction rolled back; SQLite: on a scratch copy)."
)


def add_dry_run(database_group: click.Group) -> None:
    """Give ``database upgrade`` a ``--dry-run`` flag (once: the CLI may be initialised more than once)."""
    upgrade = database_group.commands.get("upgrade")
    if upgrade is None or upgrade.callback is None or any(p.name == "dry_run" for p in upgrade.params):
        return
    original = upgrade.callback
    upgrade.params.append(click.Option(["--dry-run"], is_flag=True, default=False, help=HELP))

    def callback(*, dry_run: bool, **kwargs: Any) -> Any:
        if not dry_run:
            return original(**kwargs)
        dry_run_command(str(kwargs.get("revision") or "head"))
        return None

    upgrade.callback = callback


def dry_run_command(revision: str) -> None:
    runtime = Runtime(get_settings())

    async def run() -> Any:
        try:
            return await dry_run_upgrade(runtime.alchemy, revision)
        finally:
            await runtime.close()

    try:
        result = asyncio.run(run())
    except Exception as exc:  # a failing migration is the answer a dry run exists to give, not a traceback
        click.echo(f"-- The migrations FAILED and nothing was changed: {type(exc).__name__}: {exc}", err=True)
        raise SystemExit(1) from exc
    current = ", ".join(result.current) or "(empty database)"
    if not result.steps:
        click.echo(f"-- No pending migrations: the database is at {current}.")
        return
    click.echo(f"-- Dry run from {current} to {', '.join(result.target)}: nothing was changed.")
    for step in result.steps:
        click.echo(f"-- {step}")
    for statement in result.statements:
        click.echo(statement)
