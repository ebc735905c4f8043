"""Customers in the back office: the searchable list, everything known about one customer, holder pricing and
manual credit adjustments."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.domain.audit.services import Actor, record_audit
from app.domain.credits.services import CreditService, NotEnoughCreditsError, credit_label
from app.lib.exceptions import FormError, NotFoundError
from app.lib.forms import FormReader
from app.lib.money import plain_amount
from app.lib.permissions import Role
from app.lib.tables import Column, Query, TableSpec, TableState

LEDGER_ROWS = 50
# The store sells in CAD; lifetime value sums CAD orders only (another currency would not add up).
LTV_CURRENCY = "CAD"
MAX_ADJUSTMENT = 10_000


def _lifetime_value(user_id: Any) -> Any:
    # Paid orders count for what was kept: a fully refunded one adds total - amount_refunded, i.e. 0.
    return (
        select(func.coalesce(func.sum(m.Order.total - m.Order.amount_refunded), 0))
        .where(m.Order.user_id == user_id, m.Order.status.in_(m.PAID_ORDER_STATUSES), m.Order.currency == LTV_CURRENCY)
        .scalar_subquery()
    )


@dataclass(frozen=True, slots=True)
class CustomerRow:
    user: m.User
    orders: int
    lifetime_value: int
    plan_status: str | None


_PAID_ORDERS = (
    select(func.count())
    .select_from(m.Order)
    .where(m.Order.user_id == m.User.id, m.Order.status.in_(m.PAID_ORDER_STATUSES))
    .scalar_subquery()
)
_LTV = _lifetime_value(m.User.id)
_PLAN_STATUS = (
    select(m.Subscription.status)
    .where(m.Subscription.user_id == m.User.id)
    .order_by(m.Subscription.created_at.desc(), m.Subscription.id.desc())
    .limit(1)
    .scalar_subquery()
)

CUSTOMERS_TABLE = TableSpec(
    dom_id="admin-customers",
    noun="customers",
    columns=(
        Column("email", "Email", m.User.email),
        Column("name", "Name", m.User.name),
        Column("created", "Joined (UTC)", m.User.created_at, newest_first=True),
        Column("orders", "Paid orders", _PAID_ORDERS, numeric=True),
        Column("ltv", "Lifetime value", _LTV, numeric=True),
        Column("plan", "Plan"),
    ),
    default_sort="-created",
    search_label="Email or name",
    tiebreak=(m.User.id.desc(),),
)


def customers_query(state: TableState) -> Query:
    """Customers (not staff) with their paid orders, lifetime value and newest subscription's status."""
    stmt = select(m.User, _PAID_ORDERS, _LTV, _PLAN_STATUS).where(m.User.role == Role.CUSTOMER.value)
    if term := state.q:
        stmt = stmt.where(or_(m.User.email.ilike(f"%{term}%"), m.User.name.ilike(f"%{term}%")))
    return stmt


def customer_row(row: Any) -> CustomerRow:
    user, count, ltv, status = row
    return CustomerRow(user=user, orders=int(count or 0), lifetime_value=int(ltv or 0), plan_status=status)


CUSTOMERS_CSV_HEADER = (
    "email",
    "name",
    "joined_at",
    "paid_orders",
    "lifetime_value_cad",
    "plan_status",
    "holder_pricing",
)


def customer_csv_row(row: Any) -> tuple[Any, ...]:
    c = customer_row(row)
    return (
        c.user.email,
        c.user.name,
        c.user.created_at.isoformat(),
        c.orders,
        plain_amount(c.lifetime_value, LTV_CURRENCY),
        c.plan_status or "",
        "yes" if c.user.holder_pricing else "no",
    )


@dataclass(frozen=True, slots=True)
class CustomerDetail:
    user: m.User
    orders: list[m.Order]
    subscriptions: list[m.Subscription]
    balances: list[tuple[m.CreditType, int]]
    ledger: list[m.CreditEntry]
    credit_types: list[m.CreditType]
    bookings: list[m.Booking]
    lifetime_value: int
    currency: str = LTV_CURRENCY


async def get_customer(db: AsyncSession, user_id: UUID) -> m.User:
    """The customer, fresh from the database; ``NotFoundError`` for unknown ids and staff accounts."""
    user: m.User | None = await db.get(m.User, user_id, populate_existing=True)
    if user is None or user.role != Role.CUSTOMER.value:
        raise NotFoundError("That customer doesn't exist.")
    return user


async def customer_detail(db: AsyncSession, user_id: UUID) -> CustomerDetail:
    """The customer with their orders, subscriptions, credits (balances and newest ledger rows) and bookings."""
    user = await get_customer(db, user_id)
    orders = await db.scalars(
        select(m.Order).where(m.Order.user_id == user.id).order_by(m.Order.created_at.desc()).limit(100)
    )
    subscriptions = await db.scalars(
        select(m.Subscription).where(m.Subscription.user_id == user.id).order_by(m.Subscription.created_at.desc())
    )
    credits = CreditService(db)
    bookings = await db.scalars(
        select(m.Booking).where(m.Booking.user_id == user.id).order_by(m.Booking.created_at.desc()).limit(50)
    )
    credit_types = await db.scalars(select(m.CreditType).order_by(m.CreditType.name))
    ltv = await db.scalar(select(_lifetime_value(user.id)))
    return CustomerDetail(
        user=user,
        orders=list(orders),
        subscriptions=list(subscriptions.unique()),
        balances=await credits.balances(user.id),
        ledger=await credits.entries(user.id, limit=LEDGER_ROWS),
        credit_types=list(credit_types),
        bookings=list(bookings.unique()),
        lifetime_value=int(ltv or 0),
    )


async def set_holder_pricing(db: AsyncSession, user: m.User, *, enabled: bool, actor: Actor) -> None:
    """Turn the customer's holder/partner price tier on or off, and commit."""
    if user.holder_pricing == enabled:
        return
    await record_audit(
        db,
        actor,
        "customer.holder_pricing",
        target=("user", user.id, user.email),
        summary=f"Holder pricing turned {'on' if enabled else 'off'}",
        before={"holder_pricing": user.holder_pricing},
        after={"holder_pricing": enabled},
    )
    user.holder_pricing = enabled
    await db.commit()


@dataclass(frozen=True, slots=True)
class CreditAdjustment:
    credit_type_id: UUID
    amount: int
    reason: str
    form_token: str


def parse_credit_form(form: dict[str, str], credit_types: list[m.CreditType]) -> CreditAdjustment:
    """Validate a manual credit adjustment form; raises ``FormError`` with every field's problem at once."""
    read = FormReader(form)
    type_id = read.one_of("credit_type_id", (t.id for t in credit_types), "Choose a credit type.", required=True)
    amount = read.integer("amount", "Enter a whole number of credits, such as 3 or -2.", default=0, required=True)
    if amount == 0:
        read.error("amount", "Enter a number of credits other than zero.")
    elif abs(amount) > MAX_ADJUSTMENT:
        read.error("amount", f"Adjust at most {MAX_ADJUSTMENT} credits at a time.")
    reason = " ".join(read.raw("reason").split())
    if not reason:
        read.error("reason", "Say why: the customer sees this reason in their credit history.")
    elif len(reason) > 500:
        read.error("reason", "Keep the reason under 500 characters.")
    token = read.form_token("This form has expired: reload the page and try again.")
    read.done()
    assert type_id is not None
    return CreditAdjustment(credit_type_id=type_id, amount=amount, reason=reason, form_token=token)


async def adjust_credits(db: AsyncSession, user: m.User, adjustment: CreditAdjustment, *, actor: Actor) -> bool:
    """Apply a staff adjustment once per form token, and commit. Returns False when the token was already used.

    The form token is the ledger row's reference, so the unique (user, type, kind, reference) key makes a double
    submit (even a concurrent one) a no-op. The look-up first also catches a resubmission with another credit type.
    An overdraw raises ``FormError`` on the amount, with nothing written.
    """
    used = await db.scalar(
        select(func.count())
        .select_from(m.CreditEntry)
        .where(
            m.CreditEntry.user_id == user.id,
            m.CreditEntry.kind == m.CreditEntryKind.ADJUSTMENT.value,
            m.CreditEntry.reference == adjustment.form_token,
        )
    )
    if used:
        return False
    staff = actor.user
    assert staff is not None  # only signed-in staff adjust credits
    try:
        await CreditService(db).adjust(
            user_id=user.id,
            credit_type_id=adjustment.credit_type_id,
            amount=adjustment.amount,
            reason=adjustment.reason,
            admin_id=staff.id,
            reference=adjustment.form_token,
        )
    except NotEnoughCreditsError as exc:
        held = credit_label(exc.balance, exc.credit_type)  # before the rollback expires the credit type
        await db.rollback()
        raise FormError(
            {"amount": f"Not enough credits to take back: the customer has {held}."},
            "That would take the balance below zero.",
        ) from exc
    except FormError:
        await db.rollback()
        raise
    await record_audit(
        db,
        actor,
        "customer.credits",
        target=("user", user.id, user.email),
        summary=f"Credits adjusted by {adjustment.amount:+d}: {adjustment.reason}",
        after={"credit_type_id": adjustment.credit_type_id, "amount": adjustment.amount},
    )
    await db.commit()
    return True
