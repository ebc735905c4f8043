"""Reads that more than one domain asks for, kept below the domains so neither owns the other.

* ``get_or_404``: a row by primary key, or the 404 page with the caller's words.

* The member's live subscription: asked by the pricing page (plans: "your plan") and by subscribing, changing
  and cancelling (subscriptions, which import plans).
* An order's disputes: shown on the order pages (orders) and kept by the dispute handlers (disputes, which
  import orders).
"""

from __future__ import annotations

from typing import Any, TypeVar
from uuid import UUID

from sqlalchemy import Select, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import BindParameter

from app.db import models as m
from app.lib.exceptions import NotFoundError

Row = TypeVar("Row")


async def get_or_404(db: AsyncSession, model: type[Row], row_id: UUID, message: str, *, fresh: bool = True) -> Row:
    """The ``model`` row with primary key ``row_id``; ``NotFoundError(message)`` (a 404 page) when there is none.

    ``fresh``: re-read the row even if the session holds it (a form re-rendered after a rollback shows what is
    stored). Ownership is not checked here: a customer's object still needs its own ``NotYoursError`` check."""
    row: Row | None = await db.get(model, row_id, populate_existing=fresh)
    if row is None:
        raise NotFoundError(message)
    return row


def live_subscription_query(user_id: UUID | BindParameter[Any]) -> Select[m.Subscription]:
    """The user's newest subscription that still gives access (active, trialing or past_due in dunning)."""
    return (
        select(m.Subscription)
        .where(m.Subscription.user_id == user_id, m.Subscription.status.in_(m.LIVE_SUBSCRIPTION_STATUSES))
        .order_by(m.Subscription.created_at.desc(), m.Subscription.id.desc())
        .limit(1)
    )


async def live_subscription(db: AsyncSession, user_id: UUID) -> m.Subscription | None:
    """The user's newest subscription that still gives access, or None."""
    sub: m.Subscription | None = await db.scalar(live_subscription_query(user_id))
    return sub


async def disputes_for_order(db: AsyncSession, order_id: UUID) -> list[m.Dispute]:
    """The order's disputes, oldest first (the order pages show them)."""
    return list(
        await db.scalars(
            select(m.Dispute)
            .where(m.Dispute.order_id == order_id, m.Dispute.status != "")
            .order_by(m.Dispute.opened_at, m.Dispute.id)
        )
    )
