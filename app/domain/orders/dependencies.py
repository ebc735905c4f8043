"""Dependency providers of the orders domain, shared by the controllers that need an ``OrderService`` (the
customer's orders, checkout): a controller never imports another domain's controllers."""

from __future__ import annotations

from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.orders.services import OrderService


def provide_order_service(db_session: NamedDependency[AsyncSession]) -> OrderService:
    return OrderService(db_session)
