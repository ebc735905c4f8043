"""The email outbox table: every email the shop rendered, with its delivery status."""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.lib.tables import Column, Filter, Query, TableSpec, TableState

EMAILS_TABLE = TableSpec(
    dom_id="admin-emails",
    noun="emails",
    columns=(
        Column("created", "When (UTC)", m.EmailMessage.created_at, newest_first=True),
        Column("to", "To", m.EmailMessage.to_address),
        Column("subject", "Subject", m.EmailMessage.subject),
        Column("kind", "Kind", m.EmailMessage.kind),
        Column("status", "Status", m.EmailMessage.status),
    ),
    default_sort="-created",
    filters=(Filter("status", "Status", tuple((s.value, s.value.capitalize()) for s in m.EmailStatus), "Any status"),),
    search_label="Recipient or subject",
    tiebreak=(m.EmailMessage.id.desc(),),
)


async def emails_table(db: AsyncSession) -> TableSpec:
    """The outbox table with a "kind" filter listing the kinds sent so far."""
    kinds = await db.scalars(select(m.EmailMessage.kind).distinct().order_by(m.EmailMessage.kind))
    options = tuple((k, k.replace("_", " ").capitalize()) for k in kinds)
    return EMAILS_TABLE.with_filter(Filter("kind", "Kind", options, "Any kind"))


def emails_query(state: TableState) -> Query:
    stmt = select(m.EmailMessage)
    if kind := state.filters.get("kind"):
        stmt = stmt.where(m.EmailMessage.kind == kind)
    if status := state.filters.get("status"):
        stmt = stmt.where(m.EmailMessage.status == status)
    if term := state.q:
        stmt = stmt.where(or_(m.EmailMessage.to_address.ilike(f"%{term}%"), m.EmailMessage.subject.ilike(f"%{term}%")))
    return stmt


EMAILS_CSV_HEADER = ("created_at", "to", "subject", "kind", "status", "attempts", "sent_at", "last_error")


def email_csv_row(email: m.EmailMessage) -> tuple[Any, ...]:
    return (
        email.created_at.isoformat(),
        email.to_address,
        email.subject,
        email.kind,
        email.status,
        email.attempts,
        email.sent_at.isoformat() if email.sent_at else "",
        email.last_error,
    )
