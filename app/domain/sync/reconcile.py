"""Reconciling one page of Stripe objects with our rows, through the same idempotent code paths the webhooks use.

Each ``reconcile_<resource>`` gets the page's new or changed objects (the engine skips unchanged ones) and returns
one ``Outcome`` per object id. Lookups are batched per page (one query for the whole page, not one per object).
Stripe wins for Stripe-owned fields; local-only data (credits ledger, bookings, notes, holder flags) is never
written here except through the domain rules (a paid cycle's credits, a refunded booking's seat).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import stripe
from redis.asyncio import Redis
from saq import Queue
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.domain.disputes.services import DisputeSync
from app.domain.orders.fulfilment import PaymentSync
from app.domain.payments.fees import record_charge_fee
from app.domain.subscriptions.events import mirror_invoice_and_credit
from app.domain.subscriptions.services import SubscriptionService
from app.lib.handler_context import HandlerContext
from app.lib.money import format_money
from app.lib.settings import Settings
from app.lib.stripe_gateway import stripe_id

OK = "ok"
SKIPPED = "skipped"  # Stripe knows it, the shop does not (a customer without an account, a foreign product)


@dataclass(frozen=True, slots=True)
class Outcome:
    result: str = OK
    divergence: str = ""


@dataclass(frozen=True, slots=True)
class SyncContext:
    db: AsyncSession
    stripe: stripe.StripeClient
    settings: Settings
    queue: Queue | None
    redis: Redis

    @property
    def handler(self) -> HandlerContext:
        return HandlerContext(self.db, self.stripe, self.settings, self.queue, self.redis)


Reconciler = Callable[[SyncContext, list[dict[str, Any]]], Awaitable[dict[str, Outcome]]]


async def _pairs(db: AsyncSession, stmt: Any) -> dict[str, str]:
    """A two-column query as a dict (first column -> second)."""
    return {str(a): str(b) for a, b in await db.execute(stmt)}


def _uuid(value: Any) -> UUID | None:
    try:
        return UUID(str(value))
    except (TypeError, ValueError):
        return None


async def reconcile_customers(ctx: SyncContext, objects: list[dict[str, Any]]) -> dict[str, Outcome]:
    """Link accounts to their Stripe customer: by our id, else by ``metadata.user_id``, else by e-mail when the
    account is not linked to any customer yet. Unknown customers are skipped (no account is invented)."""
    db = ctx.db
    ids = [o["id"] for o in objects]
    linked = set(await db.scalars(select(m.User.stripe_customer_id).where(m.User.stripe_customer_id.in_(ids))))
    emails = {str(o.get("email") or "").strip().lower() for o in objects if o["id"] not in linked}
    unlinked = {
        u.email: u
        for u in await db.scalars(
            select(m.User).where(m.User.email.in_(emails - {""}), m.User.stripe_customer_id.is_(None))
        )
    }
    out: dict[str, Outcome] = {}
    for obj in objects:
        if obj["id"] in linked:
            out[obj["id"]] = Outcome()
            continue
        user: m.User | None = None
        by_id = _uuid((obj.get("metadata") or {}).get("user_id"))
        if by_id is not None:
            user = await db.get(m.User, by_id)
            user = user if user is not None and user.stripe_customer_id is None else None
        user = user or unlinked.pop(str(obj.get("email") or "").strip().lower(), None)
        if user is None:
            out[obj["id"]] = Outcome(SKIPPED)
            continue
        user.stripe_customer_id = obj["id"]
        out[obj["id"]] = Outcome(divergence=f"customer {obj['id']} was not linked to {user.email} here — linked")
    await db.commit()  # once per page (a failing page is redone one object at a time by the engine)
    return out


async def reconcile_products(ctx: SyncContext, objects: list[dict[str, Any]]) -> dict[str, Outcome]:
    """Plans and catalog products know their Stripe product; a product created by `cartwright plans sync` names its
    plan in metadata (linked here if the plan lost its link). Anything else is not the shop's."""
    db = ctx.db
    ids = objects_ids(objects)
    known = set(await db.scalars(select(m.Plan.stripe_product_id).where(m.Plan.stripe_product_id.in_(ids))))
    # Catalog products are the shop's own and pushed to Stripe (app/domain/catalog/stripe_sync.py): known, as is.
    known |= set(await db.scalars(select(m.Product.stripe_product_id).where(m.Product.stripe_product_id.in_(ids))))
    out: dict[str, Outcome] = {}
    for obj in objects:
        if obj["id"] in known:
            out[obj["id"]] = Outcome()
            continue
        slug = (obj.get("metadata") or {}).get("plan_slug")
        plan = await db.scalar(select(m.Plan).where(m.Plan.slug == slug)) if slug else None
        if plan is None or plan.stripe_product_id is not None:
            out[obj["id"]] = Outcome(SKIPPED)  # not the shop's: never invent a local product for it
            continue
        plan.stripe_product_id = obj["id"]
        await db.commit()
        out[obj["id"]] = Outcome(divergence=f"plan {plan.name} was not linked to product {obj['id']} here — linked")
    return out


def objects_ids(objects: list[dict[str, Any]]) -> list[str]:
    return [o["id"] for o in objects]


async def reconcile_prices(ctx: SyncContext, objects: list[dict[str, Any]]) -> dict[str, Outcome]:
    """Plan prices mirror their Stripe price's amount, currency and whether it is still on sale."""
    db = ctx.db
    rows = {
        p.stripe_price_id: p
        for p in await db.scalars(select(m.PlanPrice).where(m.PlanPrice.stripe_price_id.in_(objects_ids(objects))))
    }
    catalog = set(
        await db.scalars(select(m.Product.stripe_price_id).where(m.Product.stripe_price_id.in_(objects_ids(objects))))
    )
    out: dict[str, Outcome] = {}
    for obj in objects:
        price = rows.get(obj["id"])
        notes: list[str] = []
        if price is None and obj["id"] in catalog:
            out[obj["id"]] = Outcome()  # a catalog product's price: the shop sets it and pushes it to Stripe
            continue
        if price is None:
            local_id = _uuid((obj.get("metadata") or {}).get("plan_price_id"))
            price = await db.get(m.PlanPrice, local_id) if local_id else None
            if price is None or price.stripe_price_id is not None:
                out[obj["id"]] = Outcome(SKIPPED)
                continue
            price.stripe_price_id = obj["id"]
            notes.append("was not linked here — linked")
        amount = int(obj.get("unit_amount") or 0)
        currency = str(obj.get("currency") or "").upper()
        if (price.amount, price.currency) != (amount, currency):
            notes.append(
                f"{format_money(amount, currency)} in Stripe, {format_money(price.amount, price.currency)} here — fixed"
            )
            price.amount, price.currency = amount, currency
        active = bool(obj.get("active"))
        if price.is_active != active:
            notes.append(f"{'active' if active else 'archived'} in Stripe, not here — fixed")
            price.is_active = active
        await db.commit()
        out[obj["id"]] = Outcome(divergence=f"price {obj['id']}: " + "; ".join(notes) if notes else "")
    return out


async def reconcile_subscriptions(ctx: SyncContext, objects: list[dict[str, Any]]) -> dict[str, Outcome]:
    db = ctx.db
    before = await _pairs(
        db,
        select(m.Subscription.stripe_subscription_id, m.Subscription.status).where(
            m.Subscription.stripe_subscription_id.in_(objects_ids(objects))
        ),
    )
    # One query for the page: a subscription neither known here nor of a linked customer (nor naming an account
    # in its metadata) is not the shop's, and is skipped without a query of its own.
    customers = {stripe_id(o.get("customer")) or "" for o in objects}
    linked = set(await db.scalars(select(m.User.stripe_customer_id).where(m.User.stripe_customer_id.in_(customers))))
    service = SubscriptionService(db, ctx.stripe, ctx.queue)
    out: dict[str, Outcome] = {}
    for obj in objects:
        ours = (
            obj["id"] in before
            or stripe_id(obj.get("customer")) in linked
            or (obj.get("metadata") or {}).get("user_id")
        )
        if not ours:
            out[obj["id"]] = Outcome(SKIPPED)
            continue
        sub = await service.mirror.subscription(obj)
        if sub is None:
            out[obj["id"]] = Outcome(SKIPPED)
            continue
        was = before.get(obj["id"])
        if was is None:
            out[obj["id"]] = Outcome(divergence=f"subscription {obj['id']} ({sub.status}) was missing here — added")
        elif was != sub.status:
            out[obj["id"]] = Outcome(divergence=f"subscription {obj['id']} {sub.status} in Stripe, {was} here — fixed")
        else:
            out[obj["id"]] = Outcome()
    return out


def _invoice_subscription(obj: dict[str, Any]) -> str | None:
    parent = ((obj.get("parent") or {}).get("subscription_details") or {}).get("subscription")
    return stripe_id(parent) or stripe_id(obj.get("subscription"))


async def reconcile_invoices(ctx: SyncContext, objects: list[dict[str, Any]]) -> dict[str, Outcome]:
    db = ctx.db
    # Subscriptions were synced first: an invoice whose subscription is not ours is skipped without asking Stripe.
    wanted = {s for s in (_invoice_subscription(o) for o in objects) if s}
    ours = set(
        await db.scalars(
            select(m.Subscription.stripe_subscription_id).where(m.Subscription.stripe_subscription_id.in_(wanted))
        )
    )
    before = await _pairs(
        db,
        select(m.Invoice.stripe_invoice_id, m.Invoice.status).where(
            m.Invoice.stripe_invoice_id.in_(objects_ids(objects))
        ),
    )
    service = SubscriptionService(db, ctx.stripe, ctx.queue)
    out: dict[str, Outcome] = {}
    for obj in objects:
        if _invoice_subscription(obj) not in ours:
            out[obj["id"]] = Outcome(SKIPPED)
            continue
        invoice, _sub = await mirror_invoice_and_credit(service, obj)
        if invoice is None:
            out[obj["id"]] = Outcome(SKIPPED)
            continue
        was = before.get(obj["id"])
        if was is None:
            out[obj["id"]] = Outcome(divergence=f"invoice {obj['id']} ({invoice.status}) was missing here — added")
        elif was != invoice.status:
            out[obj["id"]] = Outcome(divergence=f"invoice {obj['id']} {invoice.status} in Stripe, {was} here — fixed")
        else:
            out[obj["id"]] = Outcome()
    await db.commit()  # the page's invoices and credits together (a failing page is redone one by one)
    await service.mirror.announce_metrics()
    return out


async def _orders_by_intent(db: AsyncSession, intent_ids: set[str]) -> dict[str, tuple[int, str, int]]:
    """PaymentIntent id -> (order number, status, amount refunded), for the shop's orders among them."""
    rows = await db.execute(
        select(m.Order.payment_intent_id, m.Order.number, m.Order.status, m.Order.amount_refunded).where(
            m.Order.payment_intent_id.in_(intent_ids)
        )
    )
    return {str(pi): (number, status, refunded) for pi, number, status, refunded in rows}


async def _order_state(db: AsyncSession, intent_id: str) -> tuple[str, int]:
    row = (
        await db.execute(select(m.Order.status, m.Order.amount_refunded).where(m.Order.payment_intent_id == intent_id))
    ).one()
    return str(row[0]), int(row[1])


async def reconcile_payment_intents(ctx: SyncContext, objects: list[dict[str, Any]]) -> dict[str, Outcome]:
    """A shop order's PaymentIntent: mirror the payment and fulfil the order if Stripe says it succeeded (entitlements
    once, and the receipt the customer never got; see docs/sync.md)."""
    db = ctx.db
    orders = await _orders_by_intent(db, set(objects_ids(objects)))
    sync = PaymentSync(ctx.handler)
    out: dict[str, Outcome] = {}
    for obj in objects:
        known = orders.get(obj["id"])
        if known is None:
            out[obj["id"]] = Outcome(SKIPPED)  # a subscription invoice's PaymentIntent, or not ours
            continue
        number, was, _ = known
        await sync.apply_payment_intent(obj)
        now, _ = await _order_state(db, obj["id"])
        await db.rollback()  # end the read transaction (apply_payment_intent committed its own)
        if now != was:
            out[obj["id"]] = Outcome(divergence=f"order #{number} {now} in Stripe, {was} here — fixed")
        else:
            out[obj["id"]] = Outcome()
    return out


async def _refund_orders(
    ctx: SyncContext, objects: list[dict[str, Any]], needs_sync: Callable[[dict[str, Any], int], bool]
) -> dict[str, Outcome]:
    """Charges and refunds: when Stripe's refunds differ from ours, re-read the PaymentIntent's refunds (the same
    ``sync_refunds`` the refund webhooks use: totals recomputed, downloads revoked on a full refund, notice sent)."""
    db = ctx.db
    intents = {o["id"]: stripe_id(o.get("payment_intent")) for o in objects}
    orders = await _orders_by_intent(db, {pi for pi in intents.values() if pi})
    await db.rollback()
    sync = PaymentSync(ctx.handler)
    done: set[str] = set()
    out: dict[str, Outcome] = {}
    for obj in objects:
        intent_id = intents[obj["id"]]
        known = orders.get(intent_id or "")
        if intent_id is None or known is None:
            out[obj["id"]] = Outcome(SKIPPED)
            continue
        number, was_status, was_refunded = known
        if intent_id in done or not needs_sync(obj, was_refunded):
            out[obj["id"]] = Outcome()
            continue
        await sync.sync_refunds(intent_id)
        done.add(intent_id)
        status, refunded = await _order_state(db, intent_id)
        await db.rollback()
        if (status, refunded) == (was_status, was_refunded):
            out[obj["id"]] = Outcome()
            continue
        currency = str(obj.get("currency") or "").upper()
        out[obj["id"]] = Outcome(
            divergence=(
                f"order #{number} {format_money(refunded, currency)} refunded in Stripe ({status}), "
                f"{format_money(was_refunded, currency)} here ({was_status}) — fixed"
            )
        )
    return out


async def reconcile_charges(ctx: SyncContext, objects: list[dict[str, Any]]) -> dict[str, Outcome]:
    """Refunds as below, and Stripe's fee and net from each charge's balance transaction (listed expanded:
    ``LIST_PARAMS``), for the payments whose ``charge.succeeded`` never arrived."""
    out = await _refund_orders(
        ctx, objects, lambda charge, refunded_here: int(charge.get("amount_refunded") or 0) != refunded_here
    )
    # One lookup for the page (not one per charge): only the shop's orders' charges have a fee to record here.
    ours = await _orders_by_intent(ctx.db, {pi for o in objects if (pi := stripe_id(o.get("payment_intent")))})
    await ctx.db.rollback()
    for charge in objects:
        if stripe_id(charge.get("payment_intent")) in ours:
            await record_charge_fee(ctx.db, charge)
    return out


async def reconcile_refunds(ctx: SyncContext, objects: list[dict[str, Any]]) -> dict[str, Outcome]:
    known = await _pairs(
        ctx.db,
        select(m.Refund.stripe_refund_id, m.Refund.status).where(m.Refund.stripe_refund_id.in_(objects_ids(objects))),
    )
    return await _refund_orders(ctx, objects, lambda refund, _: known.get(refund["id"]) != refund.get("status"))


async def reconcile_disputes(ctx: SyncContext, objects: list[dict[str, Any]]) -> dict[str, Outcome]:
    """A dispute on a shop order's payment: mirrored through the webhooks' own ``DisputeSync`` (flag, downloads,
    timeline and the admins' email, each once)."""
    db = ctx.db
    intents = {o["id"]: stripe_id(o.get("payment_intent")) for o in objects}
    orders = await _orders_by_intent(db, {pi for pi in intents.values() if pi})
    known = await _pairs(
        db, select(m.Dispute.stripe_dispute_id, m.Dispute.status).where(m.Dispute.stripe_dispute_id.in_(list(intents)))
    )
    await db.rollback()
    sync = DisputeSync(ctx.handler)
    out: dict[str, Outcome] = {}
    for obj in objects:
        order = orders.get(intents[obj["id"]] or "")
        if order is None:
            out[obj["id"]] = Outcome(SKIPPED)  # a subscription invoice's payment, or not the shop's
            continue
        was, status = known.get(obj["id"]), str(obj.get("status") or "")
        if was == status:
            out[obj["id"]] = Outcome()
            continue
        await sync.apply(obj)
        now = await db.scalar(select(m.Dispute.status).where(m.Dispute.stripe_dispute_id == obj["id"]))
        await db.rollback()
        if now == was:
            out[obj["id"]] = Outcome()
        elif not was:
            out[obj["id"]] = Outcome(
                divergence=f"dispute {obj['id']} on order #{order[0]} ({now}) was missing here — added"
            )
        else:
            out[obj["id"]] = Outcome(
                divergence=f"dispute {obj['id']} on order #{order[0]} {now} in Stripe, {was} here — fixed"
            )
    return out


RECONCILERS: dict[str, Reconciler] = {
    "customers": reconcile_customers,
    "products": reconcile_products,
    "prices": reconcile_prices,
    "subscriptions": reconcile_subscriptions,
    "invoices": reconcile_invoices,
    "payment_intents": reconcile_payment_intents,
    "charges": reconcile_charges,
    "refunds": reconcile_refunds,
    "disputes": reconcile_disputes,
}
