"""Every refund in the back office (refunds:read), newest first, with its order."""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select

from app.db import models as m
from app.lib.money import plain_amount
from app.lib.tables import Column, Filter, Query, TableSpec, TableState

REFUND_STATUSES = ("pending", "requires_action", "succeeded", "failed", "canceled")

REFUNDS_TABLE = TableSpec(
    dom_id="admin-refunds",
    noun="refunds",
    columns=(
        Column("created", "When (UTC)", m.Refund.created_at, newest_first=True),
        Column("order", "Order", m.Order.number, numeric=True),
        Column("customer", "Customer", m.Order.email),
        Column("amount", "Amount", m.Refund.amount, numeric=True),
        Column("reason", "Reason", m.Refund.reason),
        Column("status", "Status", m.Refund.status),
    ),
    default_sort="-created",
    filters=(Filter("status", "Status", tuple((s, s.replace("_", " ").capitalize()) for s in REFUND_STATUSES)),),
    search_label="Order number, email or refund id",
    tiebreak=(m.Refund.id.desc(),),
)


def refunds_query(state: TableState) -> Query:
    stmt: Query = select(m.Refund, m.Order).join(m.Order, m.Order.id == m.Refund.order_id)
    if status := state.filters.get("status"):
        stmt = stmt.where(m.Refund.status == status)
    if term := state.q:
        matches: list[Any] = [m.Order.email.ilike(f"%{term}%"), m.Refund.stripe_refund_id == term]
        number = term.lstrip("#")
        if number.isdigit() and len(number) < 10:
            matches.append(m.Order.number == int(number))
        stmt = stmt.where(or_(*matches))
    return stmt


REFUNDS_CSV_HEADER = ("created_at", "order", "email", "amount", "currency", "reason", "status", "stripe_refund_id")


def refund_csv_row(row: Any) -> tuple[Any, ...]:
    refund, order = row
    return (
        refund.created_at.isoformat(),
        order.number,
        order.email,
        plain_amount(refund.amount, refund.currency),
        refund.currency,
        refund.reason,
        refund.status,
        refund.stripe_refund_id,
    )
