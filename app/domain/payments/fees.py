"""Stripe's fee on each order payment, from the charge's balance transaction (``charge.succeeded`` and
``charge.updated``: Stripe attaches the balance transaction when the charge settles).

The order's net revenue is its payment's ``net`` less what was refunded: Stripe keeps its fee on a refund.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from app.db import models as m
from app.db.upsert import insert_if_absent
from app.domain.payments.context import HandlerContext
from app.domain.payments.gateway import as_dict, stripe_id


async def on_charge_event(ctx: HandlerContext, event: dict[str, Any]) -> None:
    charge_id = str(event["data"]["object"]["id"])
    # Re-read, as for every event: the balance transaction (fee and net) is Stripe's word, not the body's.
    charge = as_dict(await ctx.stripe.v1.charges.retrieve_async(charge_id, params={"expand": ["balance_transaction"]}))
    intent_id = stripe_id(charge.get("payment_intent"))
    txn = charge.get("balance_transaction")
    if intent_id is None or not isinstance(txn, dict) or charge.get("status") != "succeeded":
        return
    order = await ctx.db.scalar(select(m.Order).where(m.Order.payment_intent_id == intent_id))
    if order is None:
        return  # not one of our orders (a subscription invoice's charge, say)
    # The charge's event may be handled before the PaymentIntent's: the row is the database's to create once.
    await insert_if_absent(
        ctx.db,
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
    await ctx.db.execute(
        update(m.Payment)
        .where(m.Payment.payment_intent_id == intent_id)
        .values(fee=int(txn.get("fee") or 0), net=int(txn.get("net") or 0), charge_id=charge_id)
    )
    await ctx.db.commit()
