"""Every mirrored subscription in the back office (subscriptions:read), with its plan, price and member."""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select

from app.db import models as m
from app.lib.money import plain_amount
from app.lib.tables import Column, Filter, Query, TableSpec, TableState

STATUSES = tuple(m.SubscriptionStatus)

SUBSCRIPTIONS_TABLE = TableSpec(
    dom_id="admin-subscriptions",
    noun="subscriptions",
    columns=(
        Column("member", "Member", m.User.email),
        Column("plan", "Plan", m.Plan.name),
        Column("price", "Price", m.PlanPrice.amount, numeric=True),
        Column("status", "Status", m.Subscription.status),
        Column("renews", "Renews / ends (UTC)", m.Subscription.current_period_end),
        Column("created", "Started (UTC)", m.Subscription.created_at, newest_first=True),
    ),
    default_sort="-created",
    filters=(
        Filter(
            "status", "Status", tuple((s.value, s.value.replace("_", " ").capitalize()) for s in m.SubscriptionStatus)
        ),
        Filter("ending", "Cancellation", (("yes", "Ends at period end"), ("no", "Renews")), "Either"),
    ),
    search_label="Member email or Stripe id",
    tiebreak=(m.Subscription.id.desc(),),
)


def subscriptions_query(state: TableState) -> Query:
    stmt: Query = (
        select(m.Subscription, m.User.email)
        .join(m.User, m.User.id == m.Subscription.user_id)
        .outerjoin(m.Plan, m.Plan.id == m.Subscription.plan_id)
        .outerjoin(m.PlanPrice, m.PlanPrice.id == m.Subscription.plan_price_id)
    )
    if status := state.filters.get("status"):
        stmt = stmt.where(m.Subscription.status == status)
    if ending := state.filters.get("ending"):
        stmt = stmt.where(m.Subscription.cancel_at_period_end.is_(ending == "yes"))
    if term := state.q:
        stmt = stmt.where(
            or_(
                m.User.email.ilike(f"%{term}%"),
                m.Subscription.stripe_subscription_id == term,
                m.Subscription.stripe_customer_id == term,
            )
        )
    return stmt


SUBSCRIPTIONS_CSV_HEADER = (
    "member",
    "plan",
    "interval",
    "amount",
    "currency",
    "status",
    "cancel_at_period_end",
    "current_period_end",
    "started_at",
    "stripe_subscription_id",
)


def subscription_csv_row(row: Any) -> tuple[Any, ...]:
    sub, email = row
    price = sub.price
    return (
        email,
        sub.plan.name if sub.plan else "",
        price.interval if price else "",
        plain_amount(price.amount, price.currency) if price else "",
        price.currency if price else "",
        sub.status,
        "yes" if sub.cancel_at_period_end else "no",
        sub.current_period_end.isoformat() if sub.current_period_end else "",
        sub.created_at.isoformat(),
        sub.stripe_subscription_id,
    )
