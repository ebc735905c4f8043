"""Reading orders, and who may read which: the account's own orders, or a guest's by the token in its session."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.lib.exceptions import NotFoundError, NotYoursError
from app.lib.tokens import hash_token

VISITOR_ORDERS_KEY = "order_tokens"  # session: {order_id: visitor token} for orders this browser placed
PER_PAGE = 10


def remember_visitor_order(session: dict[str, Any], order: m.Order, token: str) -> None:
    tokens: dict[str, str] = dict(session.get(VISITOR_ORDERS_KEY) or {})
    tokens[str(order.id)] = token
    # Keep the newest few: a session is not an archive (signed-in customers have their account).
    session[VISITOR_ORDERS_KEY] = dict(list(tokens.items())[-20:])


def visitor_placed(session: dict[str, Any], order: m.Order) -> bool:
    token = (session.get(VISITOR_ORDERS_KEY) or {}).get(str(order.id))
    return (
        bool(token)
        and bool(order.visitor_token_hash)
        and hmac.compare_digest(hash_token(str(token)), order.visitor_token_hash)
    )


@dataclass(frozen=True, slots=True)
class OrderPage:
    orders: list[m.Order]
    page: int
    total: int
    per_page: int = PER_PAGE

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def has_next(self) -> bool:
        return self.page < self.pages

    @property
    def has_prev(self) -> bool:
        return self.page > 1


class OrderService:
    def __init__(self, db: AsyncSession) -> None:
        self.db = db

    async def get(self, order_id: UUID) -> m.Order | None:
        order: m.Order | None = await self.db.get(m.Order, order_id, populate_existing=True)
        return order

    async def for_visitor(self, order_id: UUID, *, user: m.User | None, session: dict[str, Any]) -> m.Order:
        """The order if this user owns it or this browser placed it; otherwise 404 (never 403: no probing)."""
        order = await self.get(order_id)
        if order is None:
            raise NotFoundError("We couldn't find that order.")
        if user is not None and order.user_id == user.id:
            return order
        if visitor_placed(session, order):
            return order
        raise NotYoursError("We couldn't find that order.", resource="order", object_id=order.id)

    async def for_owner(self, order_id: UUID, user: m.User) -> m.Order:
        order = await self.get(order_id)
        if order is None:
            raise NotFoundError("We couldn't find that order.")
        if order.user_id != user.id:
            raise NotYoursError("We couldn't find that order.", resource="order", object_id=order.id)
        return order

    async def page_for_user(self, user: m.User, page: int) -> OrderPage:
        total = await self.db.scalar(select(func.count()).select_from(m.Order).where(m.Order.user_id == user.id))
        pages = max(1, -(-(total or 0) // PER_PAGE))
        page = min(max(page, 1), pages)
        rows = await self.db.scalars(
            select(m.Order)
            .where(m.Order.user_id == user.id)
            .order_by(m.Order.created_at.desc(), m.Order.number.desc())
            .limit(PER_PAGE)
            .offset((page - 1) * PER_PAGE)
        )
        return OrderPage(orders=list(rows), page=page, total=total or 0)

    async def timeline(self, order: m.Order) -> list[m.OrderEvent]:
        rows = await self.db.scalars(
            select(m.OrderEvent).where(m.OrderEvent.order_id == order.id).order_by(m.OrderEvent.created_at)
        )
        return list(rows)

    async def entitlements(self, order: m.Order) -> list[m.Entitlement]:
        rows = await self.db.scalars(
            select(m.Entitlement).where(m.Entitlement.order_id == order.id).order_by(m.Entitlement.created_at)
        )
        return list(rows)

    async def payment(self, order: m.Order) -> m.Payment | None:
        payment: m.Payment | None = await self.db.scalar(select(m.Payment).where(m.Payment.order_id == order.id))
        return payment

    async def refunds(self, order: m.Order) -> list[m.Refund]:
        rows = await self.db.scalars(select(m.Refund).where(m.Refund.order_id == order.id))
        return list(rows)
