"""A dry run of the pending migrations: run them for real where nothing is kept, and report the SQL they ran.

Alembic's offline mode (``--sql``) cannot render our SQLite migrations (batch mode reflects the live table), and
offline SQL is a guess anyway. So a dry run executes the migrations online and records every statement:
PostgreSQL (transactional DDL) inside one transaction that is rolled back; SQLite on a scratch copy of the
database (its online backup API) that is deleted afterwards. Either way the real database is unchanged, and a
migration that would fail fails here first.
"""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from advanced_alchemy.alembic.commands import AlembicCommands
from advanced_alchemy.extensions.litestar import SQLAlchemyAsyncConfig
from alembic.runtime.environment import EnvironmentContext
from alembic.runtime.migration import MigrationContext, MigrationInfo
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, make_url
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool


@dataclass
class DryRun:
    current: tuple[str, ...] = ()
    target: tuple[str, ...] = ()
    steps: list[str] = field(default_factory=list)  # "abc123 -> def456, message"
    statements: list[str] = field(default_factory=list)


def _format(statement: str, parameters: Any) -> str:
    text = statement.strip()
    if parameters and parameters not in ((), {}, []):
        text += f"  -- parameters: {parameters!r}"
    return text if text.endswith(";") else text + ";"


def _rehearse(connection: Connection, alchemy: SQLAlchemyAsyncConfig, revision: str, result: DryRun) -> None:
    config = AlembicCommands(sqlalchemy_config=alchemy).config
    script = ScriptDirectory.from_config(config)

    def upgrade(rev: Any, _context: Any) -> Any:
        return script._upgrade_revs(revision, rev)

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        # Alembic's own look-ups (PRAGMA table_info, SELECT version_num, catalog queries) change nothing.
        if not statement.lstrip().upper().startswith(("SELECT", "PRAGMA")):
            result.statements.append(_format(statement, parameters))

    def applied(
        ctx: MigrationContext, step: MigrationInfo, heads: Collection[Any], run_args: Mapping[str, Any]
    ) -> None:
        source = "+".join(step.source_revision_ids) or "(base)"
        doc = getattr(step.up_revision, "doc", "")  # a Script (with its message), typed as its Revision
        result.steps.append(f"{source} -> {step.up_revision_id}, {doc}")

    with EnvironmentContext(config, script, fn=upgrade, destination_rev=revision) as env:
        env.configure(
            connection=connection,
            version_table=config.version_table_name,
            render_as_batch=config.render_as_batch,
            on_version_apply=applied,
        )
        result.current = tuple(env.get_context().get_current_heads())
        event.listen(connection, "before_cursor_execute", record)
        try:
            # The connection is already in our transaction: Alembic then runs inside it and commits nothing.
            with env.begin_transaction():
                env.run_migrations()
        finally:
            event.remove(connection, "before_cursor_execute", record)
        result.target = tuple(env.get_context().get_current_heads())


async def dry_run_upgrade(alchemy: SQLAlchemyAsyncConfig, revision: str = "head") -> DryRun:
    """Run the migrations up to ``revision`` where nothing is kept; return what they executed."""
    url = alchemy.connection_string or ""
    result = DryRun()
    if url.startswith("sqlite"):
        with tempfile.TemporaryDirectory(prefix="cartwright-dry-run-") as scratch:
            copy = Path(scratch) / "dry-run.sqlite3"
            source = make_url(url).database
            if source:
                await asyncio.to_thread(_sqlite_copy, Path(source), copy)
            await _run(
                make_url(url).set(database=str(copy)).render_as_string(hide_password=False), alchemy, revision, result
            )
        return result
    await _run(url, alchemy, revision, result)
    return result


async def _run(url: str, alchemy: SQLAlchemyAsyncConfig, revision: str, result: DryRun) -> None:
    engine = create_async_engine(url, poolclass=NullPool)
    try:
        async with engine.connect() as conn:
            transaction = await conn.begin()
            try:
                await conn.run_sync(_rehearse, alchemy, revision, result)
            finally:
                await transaction.rollback()
    finally:
        await engine.dispose()


def _sqlite_copy(source: Path, target: Path) -> None:
    if not source.exists():  # no database yet: the dry run starts from an empty one
        return
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
