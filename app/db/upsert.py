"""Idempotent writes of mirrored Stripe objects: ``INSERT … ON CONFLICT (stripe id)`` on SQLite and PostgreSQL.

The webhook worker, the return pages and the re-sync mirror the same Stripe object at the same moment. A
select-then-insert lets both see "absent" and the second insert fail on the unique key (a 500 for a customer who
has just paid, a failed event). Here the database decides: one statement, and only the caller whose row was
actually inserted learns so, so side effects (emails, dashboard items) hang off that and happen once.
"""

from __future__ import annotations

from typing import Any, cast

from advanced_alchemy.operations import OnConflictUpsert
from sqlalchemy import Table
from sqlalchemy.engine import CursorResult
from sqlalchemy.ext.asyncio import AsyncSession


def _table(model: type[Any]) -> Table:
    return cast("Table", model.__table__)


async def insert_if_absent(db: AsyncSession, model: type[Any], key: str, values: dict[str, Any]) -> bool:
    """``INSERT … ON CONFLICT (key) DO NOTHING`` in the session's transaction. True when this call inserted the row.

    Column defaults (id, timestamps, statuses) apply as for any Core insert. On PostgreSQL a concurrent insert of
    the same key waits for the other transaction and then does nothing; on SQLite writers queue on the database
    lock (``busy_timeout``) and the second one does nothing.
    """
    statement = OnConflictUpsert.create_upsert(
        _table(model), values, [key], update_columns=[], dialect_name=db.get_bind().dialect.name
    )
    result = await db.execute(statement)
    return cast("CursorResult[Any]", result).rowcount == 1


async def upsert(db: AsyncSession, model: type[Any], key: str, values: dict[str, Any], update: list[str]) -> None:
    """``INSERT … ON CONFLICT (key) DO UPDATE SET <update> = excluded.<update>`` in the session's transaction."""
    statement = OnConflictUpsert.create_upsert(
        _table(model), values, [key], update_columns=update, dialect_name=db.get_bind().dialect.name
    )
    await db.execute(statement)
