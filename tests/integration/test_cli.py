"""The `cartwright` command line: creating staff accounts and seeding the demo catalog."""

from __future__ import annotations

import asyncio

from click.testing import CliRunner
from sqlalchemy import func, select

from app.cli.commands import create_admin, seed_command
from app.db import models as m
from app.lib.runtime import Runtime
from app.lib.settings import Settings


def count(settings: Settings, model: type[m.User] | type[m.Product] | type[m.Category]) -> int:
    async def run() -> int:
        runtime = Runtime(settings)
        async with runtime.db() as db:
            value = await db.scalar(select(func.count()).select_from(model)) or 0
        await runtime.close()
        return value

    return asyncio.run(run())


def test_create_admin_and_seed_are_idempotent(migrated: Settings, runtime: Runtime) -> None:
    # `runtime` empties the database first, so the seed starts from nothing.
    runner = CliRunner()
    result = runner.invoke(
        create_admin, ["boss@example.com", "--name", "Boss"], input="a good long passphrase\na good long passphrase\n"
    )
    assert result.exit_code == 0, result.output
    assert "Created admin boss@example.com" in result.output
    again = runner.invoke(create_admin, ["boss@example.com"], input="another passphrase\nanother passphrase\n")
    assert again.exit_code == 1
    assert "already exists" in again.output
    weak = runner.invoke(create_admin, ["weak@example.com"], input="password\npassword\n")
    assert weak.exit_code == 1 and "too common" in weak.output

    first = runner.invoke(seed_command, [])
    assert first.exit_code == 0, first.output
    assert "Seeded 5 categories, 30 products, 3 users." in first.output
    second = runner.invoke(seed_command, [])
    assert "Seeded 0 categories, 0 products, 0 users." in second.output
    assert count(migrated, m.Product) == 30
    assert (migrated.storage_dir / "products" / "maple-serif.zip").exists()
