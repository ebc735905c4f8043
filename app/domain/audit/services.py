"""The audit log: every staff action that changes data leaves one append-only row (who, when, what, before/after, IP).

Write it in the same transaction as the change, so a rolled-back change leaves no audit row and a committed one
always has one:

    await record_audit(db, actor, "product.update", target=("product", product.id, product.name),
                       summary="Price changed", before=..., after=...)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any
from uuid import UUID

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.lib.tables import Column, Filter, Query, TableSpec, TableState


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is acting and from where; controllers get one from the ``actor`` dependency and hand it to services."""

    user: m.User | None
    ip: str = ""


Target = tuple[str, object, str]  # (type, id, human label)


def _json(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json(v) for v in value]
    if isinstance(value, Enum):
        return _json(value.value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID | Decimal):
        return str(value)
    return repr(value)


def changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Only the fields that differ, from both sides: what an auditor wants to read."""
    keys = [k for k in {**before, **after} if _json(before.get(k)) != _json(after.get(k))]
    return {k: _json(before.get(k)) for k in keys}, {k: _json(after.get(k)) for k in keys}


async def record_audit(
    db: AsyncSession,
    actor: Actor,
    action: str,
    *,
    target: Target | None = None,
    summary: str = "",
    before: Mapping[str, Any] | None = None,
    after: Mapping[str, Any] | None = None,
) -> m.AuditEntry:
    user = actor.user
    target_type, target_id, target_label = target if target is not None else ("", "", "")
    entry = m.AuditEntry(
        actor_id=user.id if user else None,
        actor_email=user.email if user else "system",
        actor_role=user.role if user else "",
        action=action,
        target_type=target_type,
        target_id=str(target_id),
        target_label=target_label[:200],
        summary=summary,
        before=_json(before) if before is not None else None,
        after=_json(after) if after is not None else None,
        ip=actor.ip[:64],
    )
    db.add(entry)
    await db.flush()
    return entry


AUDIT_TABLE = TableSpec(
    dom_id="admin-audit",
    noun="entries",
    columns=(
        Column("created", "When (UTC)", m.AuditEntry.created_at, newest_first=True),
        Column("actor", "Who", m.AuditEntry.actor_email),
        Column("action", "Action", m.AuditEntry.action),
        Column("target", "On"),
        Column("summary", "What changed"),
        Column("ip", "IP"),
    ),
    default_sort="-created",
    search_label="Person, action, record or text",
    per_page=50,
    tiebreak=(m.AuditEntry.id.desc(),),
)


async def recent_for(db: AsyncSession, target_type: str, target_id: str, limit: int = 20) -> list[m.AuditEntry]:
    """The newest audit entries about one object (an account, a plan), for its page."""
    rows = await db.scalars(
        select(m.AuditEntry)
        .where(m.AuditEntry.target_type == target_type, m.AuditEntry.target_id == target_id)
        .order_by(m.AuditEntry.created_at.desc())
        .limit(limit)
    )
    return list(rows)


async def audit_table(db: AsyncSession) -> TableSpec:
    """The audit table with an "action" filter listing the actions recorded so far."""
    actions = await db.scalars(select(m.AuditEntry.action).distinct().order_by(m.AuditEntry.action))
    return AUDIT_TABLE.with_filter(Filter("action", "Action", tuple((a, a) for a in actions), "Any action"))


def audit_query(state: TableState) -> Query:
    stmt = select(m.AuditEntry)
    if action := state.filters.get("action"):
        stmt = stmt.where(m.AuditEntry.action == action)
    if state.q:
        like = f"%{state.q}%"
        stmt = stmt.where(
            or_(
                m.AuditEntry.actor_email.ilike(like),
                m.AuditEntry.action.ilike(like),
                m.AuditEntry.target_label.ilike(like),
                m.AuditEntry.target_id == state.q,
                m.AuditEntry.summary.ilike(like),
            )
        )
    return stmt
