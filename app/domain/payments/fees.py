"""Stripe's fee on each order payment, from the charge's balance transaction (``charge.succeeded`` and
``charge.updated``: Stripe attaches the balance transaction when the charge settles).

The order's net revenue is its payment's ``net`` less what was refunded: Stripe keeps its fee on a refund.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.db.upsert import insert_if_absent
from app.lib.handler_context import HandlerContext
from app.lib.stripe_gateway import as_dict, stripe_id


async def on_charge_event(ctx: HandlerContext, event: dict[str, Any]) -> None:
    charge_id = str(event["data"]["object"]["id"])
    # Re-read, as for every event: the balance transaction (fee and net) is Stripe's word, not the body's.
    charge = as_dict(await ctx.stripe.v1.charges.retrieve_async(charge_id, params={"expand": ["balance_transaction"]}))
    await record_charge_fee(ctx.db, charge)


async def record_charge_fee(db: AsyncSession, charge: dict[str, Any]) -> bool:
    """Store the fee and net of ``charge`` (its ``balance_transaction`` expanded) on its order's payment and commit.

    Used by the charge webhooks and by the re-sync (which lists charges with their balance transactions), so a
    shop that missed ``charge.succeeded`` still learns its fees. False when there was nothing to record: not one
    of our orders, not settled yet, or already recorded.
    """
    charge_id = str(charge["id"])
    intent_id = stripe_id(charge.get("payment_intent"))
    txn = charge.get("balance_transaction")
    if intent_id is None or not isinstance(txn, dict) or charge.get("status") != "succeeded":
        return False
    order = await db.scalar(select(m.Order).where(m.Order.payment_intent_id == intent_id))
    if order is None:
        return False  # not one of our orders (a subscription invoice's charge, say)
    # The charge's event may be handled before the PaymentIntent's: the row is the database's to create once.
    await insert_if_absent(
        db,
        m.Payment,
        "payment_intent_id",
        {
            "order_id": order.id,
            "payment_intent_id": intent_id,
            "amount": order.total,
            "currency": order.currency,
            "status": m.PaymentStatus.REQUIRES_PAYMENT_METHOD.value,
            "last_event_created": 0,
        },
    )
    fee, net = int(txn.get("fee") or 0), int(txn.get("net") or 0)
    result = await db.execute(
        update(m.Payment)
        .where(
            m.Payment.payment_intent_id == intent_id,
            or_(
                m.Payment.fee.is_distinct_from(fee),
                m.Payment.net.is_distinct_from(net),
                m.Payment.charge_id.is_distinct_from(charge_id),
            ),
        )
        .values(fee=fee, net=net, charge_id=charge_id)
    )
    await db.commit()
    return bool(getattr(result, "rowcount", 0))
