"""Orders in the back office: the searchable list, everything known about one order, staff refunds, and the list
of every refund."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import stripe
from saq import Queue
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import raiseload

from app.db import models as m
from app.db.queries import disputes_for_order, get_or_404
from app.domain.audit.services import Actor, record_audit
from app.domain.downloads.services import DownloadService
from app.domain.notifications.services import EmailService
from app.domain.orders.fulfilment import receipt_context
from app.domain.orders.refunds import RefundForm, create_refund, parse_refund_form
from app.lib.exceptions import FormError
from app.lib.money import format_money, plain_amount
from app.lib.settings import Settings
from app.lib.stripe_gateway import stripe_dashboard_url
from app.lib.tables import Column, Filter, Query, TableSpec, TableState

STATUSES = tuple(s.value for s in m.OrderStatus)
REFUNDABLE_STATUSES = frozenset({m.OrderStatus.PAID.value, m.OrderStatus.PARTIALLY_REFUNDED.value})


STATUS_LABELS = {
    "pending": "Awaiting payment",
    "paid": "Paid",
    "partially_refunded": "Partly refunded",
    "refunded": "Refunded",
    "canceled": "Cancelled",
}

# The orders a dispute concerns: still open (evidence to send), lost, won; "" = any order.
DISPUTE_FILTERS = (("open", "Open dispute"), ("lost", "Dispute lost"), ("won", "Dispute won"))

ORDERS_TABLE = TableSpec(
    dom_id="admin-orders",
    noun="orders",
    columns=(
        Column("number", "Order", m.Order.number, numeric=True),
        Column("placed", "Placed (UTC)", m.Order.created_at, newest_first=True),
        Column("email", "Customer", m.Order.email),
        Column("status", "Status", m.Order.status),
        Column("total", "Total", m.Order.total, numeric=True),
        Column("refunded", "Refunded", m.Order.amount_refunded, numeric=True),
    ),
    default_sort="-placed",
    filters=(
        Filter("status", "Status", tuple((s, STATUS_LABELS.get(s, s)) for s in STATUSES), "Any status"),
        Filter("dispute", "Dispute", DISPUTE_FILTERS, "Disputed or not"),
    ),
    search_label="Order number or email",
    tiebreak=(m.Order.number.desc(),),
)


def orders_query(state: TableState) -> Query:
    """Orders matching the table's filters (one status, a dispute state) and an order number or part of an email."""
    # Rows only: the lines (selectin by default) would be a second query per page, and most of a 100k-row export.
    stmt = select(m.Order).options(raiseload(m.Order.lines))
    if status := state.filters.get("status"):
        stmt = stmt.where(m.Order.status == status)
    dispute = state.filters.get("dispute")
    if dispute == "open":
        stmt = stmt.where(m.Order.dispute_status.in_(m.OPEN_DISPUTE_STATUSES))
    elif dispute in {"lost", "won"}:
        stmt = stmt.where(m.Order.dispute_status == dispute)
    if term := state.q:
        matches: list[Any] = [m.Order.email.ilike(f"%{term}%")]
        number = term.lstrip("#")
        if number.isdigit() and len(number) < 10:
            matches.append(m.Order.number == int(number))
        stmt = stmt.where(or_(*matches))
    return stmt


ORDERS_CSV_HEADER = (
    "number",
    "placed_at",
    "email",
    "billing_name",
    "country",
    "region",
    "status",
    "currency",
    "subtotal",
    "discount",
    "promo_code",
    "tax",
    "total",
    "refunded",
    "paid_at",
    "stripe_fee",
    "net_after_fees",
)


def orders_export_query(state: TableState) -> Query:
    """The table's rows with their payment's Stripe fee and net, for the CSV."""
    return (
        orders_query(state)
        .outerjoin(m.Payment, m.Payment.order_id == m.Order.id)
        .add_columns(m.Payment.fee, m.Payment.net)
    )


def order_csv_row(row: Any) -> tuple[Any, ...]:
    order, fee, net = row
    return (
        order.number,
        order.created_at.isoformat(),
        order.email,
        order.billing_name,
        order.country,
        order.region,
        order.status,
        order.currency,
        plain_amount(order.subtotal, order.currency),
        plain_amount(order.discount_total, order.currency),
        order.promo_code or "",
        plain_amount(order.tax_total, order.currency),
        plain_amount(order.total, order.currency),
        plain_amount(order.amount_refunded, order.currency),
        order.paid_at.isoformat() if order.paid_at else "",
        "" if fee is None else plain_amount(fee, order.currency),
        # Stripe keeps its fee when money is refunded: net after fees is what reached us, less the refunds.
        "" if net is None else plain_amount(net - order.amount_refunded, order.currency),
    )


@dataclass(frozen=True, slots=True)
class OrderDetail:
    order: m.Order
    payment: m.Payment | None
    refunds: list[m.Refund]
    timeline: list[m.OrderEvent]
    stripe_events: list[m.StripeEvent]
    emails: list[m.EmailMessage]
    disputes: list[m.Dispute]
    # Where staff answer a dispute: the payment's page in Stripe's Dashboard ("" without a PaymentIntent).
    stripe_payment_url: str

    @property
    def can_refund(self) -> bool:
        # A charged-back payment cannot be refunded on top (Stripe refuses: the bank took the money back already).
        return self.order.status in REFUNDABLE_STATUSES and self.order.refundable > 0 and not self.order.is_disputed

    @property
    def dispute_reasons(self) -> dict[str, str]:
        return m.Dispute.REASON_LABELS


async def order_detail(db: AsyncSession, order_id: UUID, *, livemode: bool = False) -> OrderDetail:
    """The order with its payment, refunds, disputes, timeline, the Stripe events about its PaymentIntent and its
    emails. ``livemode`` chooses the Stripe Dashboard (test or live) the dispute link opens."""
    order = await get_or_404(db, m.Order, order_id, "That order doesn't exist.")
    payment = await db.scalar(select(m.Payment).where(m.Payment.order_id == order.id))
    refunds = await db.scalars(select(m.Refund).where(m.Refund.order_id == order.id).order_by(m.Refund.created_at))
    timeline = await db.scalars(
        select(m.OrderEvent).where(m.OrderEvent.order_id == order.id).order_by(m.OrderEvent.created_at)
    )
    events: list[m.StripeEvent] = []
    if order.payment_intent_id:
        intent = order.payment_intent_id
        events = list(
            await db.scalars(
                select(m.StripeEvent)
                .where(
                    or_(
                        m.StripeEvent.object_id == intent,
                        m.StripeEvent.payload["data"]["object"]["payment_intent"].as_string() == intent,
                    )
                )
                .order_by(m.StripeEvent.api_created, m.StripeEvent.received_at)
                .limit(200)
            )
        )
    emails = await db.scalars(
        select(m.EmailMessage)
        .where(m.EmailMessage.to_address == order.email)
        .order_by(m.EmailMessage.created_at.desc())
        .limit(50)
    )
    url = stripe_dashboard_url(order.payment_intent_id, livemode=livemode) if order.payment_intent_id else ""
    disputes = await disputes_for_order(db, order.id)
    return OrderDetail(order, payment, list(refunds), list(timeline), events, list(emails), disputes, url)


def parse_order_refund_form(order: m.Order, form: dict[str, str]) -> RefundForm:
    """Validate a refund form against what the order still has to give back; raises ``FormError``."""
    if order.status not in REFUNDABLE_STATUSES or order.refundable <= 0:
        raise FormError({}, "Only a paid order with money left to refund can be refunded.")
    if order.is_disputed:
        raise FormError({}, "This payment is disputed: the bank has taken the money back, so it cannot be refunded.")
    return parse_refund_form(
        form,
        refundable=order.refundable,
        currency=order.currency,
        too_much="At most {limit} can still be refunded.",
        kept_in="on the order's timeline",
        what="order",
        page="order",
    )


async def request_refund(
    db: AsyncSession, client: stripe.StripeClient, order: m.Order, request: RefundForm, *, actor: Actor
) -> str:
    """Create the refund in Stripe (the form token makes a resubmission replay it) and note it on the timeline.

    The order's refund totals are not touched here: the refund webhook recomputes them from Stripe's list.
    Returns the Stripe refund id. A ``stripe.StripeError`` propagates with nothing recorded.
    """
    assert order.payment_intent_id is not None  # paid orders always have one
    staff = actor.user
    assert staff is not None  # only signed-in staff refund
    refund = await create_refund(
        client,
        payment_intent_id=order.payment_intent_id,
        amount=request.amount,
        reason=request.stripe_reason,
        metadata={"order_id": str(order.id), "staff_reason": request.reason, "staff_user_id": str(staff.id)},
        key_parts=(order.id, request.form_token),
    )
    refund_id = str(refund.id)
    message = (
        f"Refund of {format_money(request.amount, order.currency)} requested by {staff.email}: {request.reason} "
        f"({refund_id})"
    )
    # A replayed submission gets the same refund back from Stripe: note it once.
    seen = await db.scalar(
        select(func.count())
        .select_from(m.OrderEvent)
        .where(
            m.OrderEvent.order_id == order.id, m.OrderEvent.kind == "refund_requested", m.OrderEvent.message == message
        )
    )
    if not seen:
        db.add(m.OrderEvent(order_id=order.id, kind="refund_requested", message=message))
        await record_audit(
            db,
            actor,
            "order.refund",
            target=("order", order.id, order.display_number),
            summary=f"Refund of {format_money(request.amount, order.currency)} requested: {request.reason}",
            after={"refund_id": refund_id, "amount": request.amount, "currency": order.currency},
        )
        await db.commit()
    return refund_id


async def resend_receipt(db: AsyncSession, queue: Queue, settings: Settings, order: m.Order, *, actor: Actor) -> None:
    """Email the receipt again, with fresh download links, and note it on the timeline and in the audit log."""
    if not order.is_paid:
        raise FormError({}, "Only a paid order has a receipt to resend.")
    downloads = DownloadService(db, settings)
    entitlements = list(
        await db.scalars(
            select(m.Entitlement)
            .where(m.Entitlement.order_id == order.id, m.Entitlement.revoked_at.is_(None))
            .order_by(m.Entitlement.created_at)
        )
    )
    db.add(m.OrderEvent(order_id=order.id, kind="receipt_resent", message=f"Receipt sent again to {order.email}."))
    await record_audit(
        db, actor, "order.resend_receipt", target=("order", order.id, order.display_number), summary="Receipt resent"
    )
    # send() commits the email with the timeline entry and the audit row, then queues its delivery.
    await EmailService(db, queue).send(
        "receipt", order.email, receipt_context(order, entitlements, downloads, settings.base_url)
    )


async def reissue_downloads(db: AsyncSession, queue: Queue, settings: Settings, order: m.Order, *, actor: Actor) -> int:
    """Give every download of the order its full allowance back and email fresh links; returns how many."""
    counts = {
        str(e.id): e.download_count
        for e in await db.scalars(
            select(m.Entitlement).where(m.Entitlement.order_id == order.id, m.Entitlement.revoked_at.is_(None))
        )
    }
    if not counts:
        raise FormError({}, "This order has no downloads to reissue (none, or all revoked by a refund).")
    message = f"Fresh download links sent to {order.email}."
    db.add(m.OrderEvent(order_id=order.id, kind="links_reissued", message=message))
    await record_audit(
        db,
        actor,
        "order.reissue_downloads",
        target=("order", order.id, order.display_number),
        summary="Download counts reset and fresh links emailed",
        before={"download_counts": counts},
        after={"download_counts": dict.fromkeys(counts, 0)},
    )
    reissued = await DownloadService(db, settings).reissue_for_order(order, emails=EmailService(db, queue))
    return len(reissued)


# Every refund (refunds:read), newest first, with its order: orders and refunds are one noun's screens.
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
