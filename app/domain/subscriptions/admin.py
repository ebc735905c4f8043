"""Subscriptions in the back office: the list of every mirrored subscription, and the staff actions on one
(#16 item 5): cancel now or at period end, resume, pause or resume payment collection, refund the last paid
invoice in full or in part, apply a promo code. Credits are granted or removed on the customer's page.

Every action is one Stripe write through the SDK with an idempotency key (a double click or a retried request
replays Stripe's first answer), then the mirror applies Stripe's answer at once (the webhook that follows converges
on the same row), then one audit row. Who may do what is the permission table's: subscriptions:full to cancel,
resume and pause, refunds:full to refund, promo_codes:full to apply a code (admins only today).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from typing import Any, Literal, cast
from uuid import UUID

import stripe
from saq import Queue
from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from stripe.params import SubscriptionUpdateParamsPauseCollection

from app.db import models as m
from app.db.queries import get_or_404
from app.domain.audit.services import Actor, record_audit
from app.domain.orders.refunds import RefundForm, create_refund, parse_refund_form
from app.domain.promotions.services import PromoError, normalize_code, quote_plan, redeem_for_subscription
from app.domain.subscriptions.mirror import LIVE_STATUSES
from app.domain.subscriptions.services import SubscriptionService
from app.lib.exceptions import FormError
from app.lib.money import format_money, plain_amount
from app.lib.stripe_gateway import as_dict, idempotency_key, stripe_id
from app.lib.tables import Column, Filter, Query, TableSpec, TableState

PauseBehavior = Literal["keep_as_draft", "mark_uncollectible", "void"]
# What Stripe does with each period's invoice while collection is paused.
PAUSE_BEHAVIORS = {
    "keep_as_draft": "Keep the invoices as drafts (collect nothing; they can be finalised later)",
    "mark_uncollectible": "Mark the invoices uncollectible (the service continues, unpaid)",
    "void": "Void the invoices (the periods are free)",
}


def _state(sub: m.Subscription) -> dict[str, Any]:
    return {
        "status": sub.status,
        "cancel_at_period_end": sub.cancel_at_period_end,
        "pause_collection": sub.pause_collection or None,
    }


@dataclass(frozen=True, slots=True)
class SubscriptionDetail:
    subscription: m.Subscription
    member: m.User
    invoices: list[m.Invoice]  # newest first
    before: dict[str, Any]  # the state as loaded, for the audit row

    @property
    def is_live(self) -> bool:
        return self.subscription.status in LIVE_STATUSES

    @property
    def last_paid_invoice(self) -> m.Invoice | None:
        return next((i for i in self.invoices if i.status == "paid" and i.amount_paid > 0), None)

    @property
    def label(self) -> str:
        plan = self.subscription.plan.name if self.subscription.plan else "subscription"
        return f"{self.member.email} · {plan}"


async def subscription_detail(db: AsyncSession, subscription_id: UUID) -> SubscriptionDetail:
    sub = await get_or_404(db, m.Subscription, subscription_id, "That subscription doesn't exist.")
    member = await db.get(m.User, sub.user_id)
    assert member is not None  # the foreign key cascades
    invoices = list(
        await db.scalars(
            select(m.Invoice)
            .where(m.Invoice.subscription_id == sub.id)
            .order_by(m.Invoice.stripe_created.desc(), m.Invoice.created_at.desc())
            .limit(12)
        )
    )
    return SubscriptionDetail(subscription=sub, member=member, invoices=invoices, before=_state(sub))


def parse_invoice_refund(invoice: m.Invoice | None, form: dict[str, str]) -> RefundForm:
    """The refund form: an amount up to what the invoice took (blank: all of it), a reason, the form's token."""
    if invoice is None:
        raise FormError({}, "This subscription has no paid invoice to refund.")
    return parse_refund_form(
        form,
        refundable=invoice.amount_paid,
        currency=invoice.currency,
        too_much="At most {limit} was paid.",
        kept_in="in the audit log",
        what="invoice",
        page="subscription",
    )


class StaffSubscriptionActions:
    """What staff do to a member's subscription; each method writes to Stripe, mirrors, audits and commits."""

    def __init__(self, db: AsyncSession, client: stripe.StripeClient, queue: Queue | None) -> None:
        self.db = db
        self.stripe = client
        self.subscriptions = SubscriptionService(db, client, queue)

    async def _audit(self, detail: SubscriptionDetail, actor: Actor, action: str, summary: str) -> None:
        """One audit row with the subscription's state before (as the page showed it) and after (Stripe's answer)."""
        await record_audit(
            self.db,
            actor,
            action,
            target=("subscription", detail.subscription.id, detail.label),
            summary=summary,
            before=detail.before,
            after=_state(detail.subscription),
        )
        await self.db.commit()

    def _require_live(self, detail: SubscriptionDetail) -> None:
        if not detail.is_live:
            raise FormError({}, f"This subscription is {detail.subscription.status.replace('_', ' ')}: nothing to do.")

    async def cancel_now(self, detail: SubscriptionDetail, actor: Actor) -> m.Subscription:
        self._require_live(detail)
        sub = await self.subscriptions.cancel_now(detail.subscription)
        await self._audit(detail, actor, "subscription.cancel_now", "Canceled now: the member loses access at once")
        return sub

    async def cancel_at_period_end(self, detail: SubscriptionDetail, actor: Actor) -> m.Subscription:
        self._require_live(detail)
        sub = await self.subscriptions.cancel_at_period_end(detail.subscription)
        ends = sub.current_period_end.date().isoformat() if sub.current_period_end else "the period end"
        await self._audit(detail, actor, "subscription.cancel_at_period_end", f"Set to end on {ends}")
        return sub

    async def resume(self, detail: SubscriptionDetail, actor: Actor) -> m.Subscription:
        self._require_live(detail)
        if not detail.subscription.cancel_at_period_end:
            raise FormError({}, "This subscription renews already: nothing to resume.")
        sub = await self.subscriptions.resume(detail.subscription)
        await self._audit(detail, actor, "subscription.resume", "Resumed: renews as usual")
        return sub

    async def pause_collection(
        self, detail: SubscriptionDetail, behavior: str, resumes_on: str, actor: Actor
    ) -> m.Subscription:
        """Stop collecting payment: Stripe keeps invoicing each period but drafts, voids or writes off the invoices
        (``behavior``) until collection resumes, by staff or on ``resumes_on`` (a date, UTC midnight)."""
        self._require_live(detail)
        sub = detail.subscription
        errors: dict[str, str] = {}
        if behavior not in PAUSE_BEHAVIORS:
            errors["behavior"] = "Choose what happens to the invoices while collection is paused."
        resumes_at: int | None = None
        if resumes_on.strip():
            try:
                day = date.fromisoformat(resumes_on.strip())
            except ValueError:
                errors["resumes_on"] = "Enter a date such as 2027-01-31, or leave it empty."
            else:
                if day <= datetime.now(UTC).date():
                    errors["resumes_on"] = "Choose a day after today, or leave it empty."
                resumes_at = int(datetime.combine(day, time(), UTC).timestamp())
        if errors:
            raise FormError(errors)
        pause: SubscriptionUpdateParamsPauseCollection = {"behavior": cast("PauseBehavior", behavior)}
        if resumes_at is not None:
            pause["resumes_at"] = resumes_at
        remote = await self.stripe.v1.subscriptions.update_async(
            sub.stripe_subscription_id,
            params={"pause_collection": pause},
            options={"idempotency_key": idempotency_key("admin-pause", sub.stripe_subscription_id, sub.updated_at)},
        )
        mirrored = await self.subscriptions.mirror.subscription(as_dict(remote)) or sub
        until = f" until {resumes_on.strip()}" if resumes_at else ""
        await self._audit(detail, actor, "subscription.pause_collection", f"Collection paused ({behavior}){until}")
        return mirrored

    async def resume_collection(self, detail: SubscriptionDetail, actor: Actor) -> m.Subscription:
        self._require_live(detail)
        sub = detail.subscription
        if not sub.pause_collection:
            raise FormError({}, "Payment collection is not paused: nothing to resume.")
        remote = await self.stripe.v1.subscriptions.update_async(
            sub.stripe_subscription_id,
            params={"pause_collection": ""},
            options={"idempotency_key": idempotency_key("admin-unpause", sub.stripe_subscription_id, sub.updated_at)},
        )
        mirrored = await self.subscriptions.mirror.subscription(as_dict(remote)) or sub
        await self._audit(detail, actor, "subscription.resume_collection", "Collection resumed")
        return mirrored

    async def refund_last_invoice(self, detail: SubscriptionDetail, refund: RefundForm, actor: Actor) -> str:
        """Refund ``refund.amount`` of the last paid invoice's payment; returns the Stripe refund id."""
        invoice = detail.last_paid_invoice
        assert invoice is not None  # parse_invoice_refund checked
        remote = as_dict(
            await self.stripe.v1.invoices.retrieve_async(invoice.stripe_invoice_id, params={"expand": ["payments"]})
        )
        intent_id = next(
            (
                stripe_id((p.get("payment") or {}).get("payment_intent"))
                for p in (remote.get("payments") or {}).get("data") or []
                if p.get("status") == "paid"
            ),
            None,
        )
        if not intent_id:
            raise FormError({}, "Stripe shows no card payment on this invoice to refund.")
        created = as_dict(
            await create_refund(
                self.stripe,
                payment_intent_id=intent_id,
                amount=refund.amount,
                reason=refund.stripe_reason,
                metadata={
                    "invoice": invoice.stripe_invoice_id,
                    "subscription": detail.subscription.stripe_subscription_id,
                },
                key_parts=("invoice", invoice.stripe_invoice_id, refund.form_token),
            )
        )
        money = format_money(refund.amount, invoice.currency)
        kind = "in full" if refund.amount == invoice.amount_paid else "in part"
        number = invoice.number or invoice.stripe_invoice_id
        summary = f"Refunded {money} of invoice {number} {kind}: {refund.reason} ({created['id']})"
        # A resubmitted form gets the same refund back from Stripe (same key): audit it once.
        seen = await self.db.scalar(
            select(func.count())
            .select_from(m.AuditEntry)
            .where(
                m.AuditEntry.action == "subscription.refund",
                m.AuditEntry.target_id == str(detail.subscription.id),
                m.AuditEntry.summary == summary,
            )
        )
        if not seen:
            await record_audit(
                self.db,
                actor,
                "subscription.refund",
                target=("subscription", detail.subscription.id, detail.label),
                summary=summary,
                after={"refund": created["id"], "amount": refund.amount, "invoice": invoice.stripe_invoice_id},
            )
            await self.db.commit()
        return str(created["id"])

    async def apply_promo_code(self, detail: SubscriptionDetail, raw_code: str, actor: Actor) -> m.Subscription:
        """Put a promo code on the subscription: Stripe discounts its next invoices for the code's duration."""
        self._require_live(detail)
        sub = detail.subscription
        code = normalize_code(raw_code)
        if not code:
            raise FormError({"code": "Enter a promo code."})
        if sub.plan is None or sub.price is None:
            raise FormError({"code": "This subscription's plan is not in the shop's catalogue: no code applies."})
        try:
            quote = await quote_plan(self.db, code, sub.plan, sub.price, user=detail.member)
        except PromoError as exc:
            raise FormError({"code": str(exc)}) from exc
        promo = quote.promo
        assert promo.stripe_promotion_code_id  # quote_plan refuses a code Stripe does not know
        remote = await self.stripe.v1.subscriptions.update_async(
            sub.stripe_subscription_id,
            params={"discounts": [{"promotion_code": promo.stripe_promotion_code_id}]},
            options={"idempotency_key": idempotency_key("admin-promo", sub.stripe_subscription_id, promo.id)},
        )
        mirrored = await self.subscriptions.mirror.subscription(as_dict(remote)) or sub
        await redeem_for_subscription(
            self.db, promo, user=detail.member, stripe_subscription_id=sub.stripe_subscription_id
        )
        await record_audit(
            self.db,
            actor,
            "subscription.promo_code",
            target=("subscription", sub.id, detail.label),
            summary=f"Applied code {promo.code}",
            after={"promo_code": promo.code},
        )
        await self.db.commit()
        return mirrored


# The list of every mirrored subscription (subscriptions:read), with its plan, price and member.
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
