"""Refunds that settle later, as Stripe's test cards do: 5126 refunds, then fails; 7726 is pending, then succeeds.
The later step is driven through the emulator's control API (``/_emulator/refunds/{id}/settle``), never a sleep.

Reliability catalogue: R2 (refund on …5126 moves the order back; …7726 pending, then refunded), R1 (counted once).
"""

from __future__ import annotations

import asyncio
from uuid import UUID

import httpx
import pytest
from saq import Queue
from sqlalchemy import select

from app.db import models as m
from app.lib.runtime import Runtime
from app.lib.settings import Settings
from app.stripe_emulator.server import EmulatorServer
from tests.conftest import Factory
from tests.helpers import sign_in, text_of
from tests.integration.purchase_support import (
    add_to_cart,
    confirm,
    digital_product,
    load_order,
    open_pay_page,
    place_order,
)
from tests.integration.race_support import run_stored_events

pytestmark = pytest.mark.usefixtures("app_server")


async def settle_events(runtime: Runtime, emulator: EmulatorServer, queue: Queue) -> None:
    assert (await asyncio.to_thread(emulator.flush, 30))["idle"]
    await run_stored_events(runtime, queue)


async def members_paid_order(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    emulator: EmulatorServer,
    queue: Queue,
    card: str,
) -> tuple[UUID, str]:
    await factory.user(email="cara@example.com")
    await sign_in(client, "cara@example.com")
    product = await digital_product(factory, settings.storage_dir, price=2000)
    await add_to_cart(client, product)
    order_id = await place_order(client, email="cara@example.com", region="AB", postal_code="T2P 1J9")
    intent_id = await open_pay_page(client, order_id)
    await confirm(runtime, intent_id, card)
    await settle_events(runtime, emulator, queue)
    assert (await load_order(runtime, order_id)).status == "paid"
    return order_id, intent_id


async def emails(runtime: Runtime) -> list[tuple[str, str]]:
    async with runtime.db() as db:
        rows = await db.scalars(select(m.EmailMessage).order_by(m.EmailMessage.created_at))
        return [(e.kind, e.to_address) for e in rows if e.kind != "receipt"]


async def entitlements_revoked(runtime: Runtime, order_id: UUID) -> list[bool]:
    async with runtime.db() as db:
        rows = await db.scalars(select(m.Entitlement).where(m.Entitlement.order_id == order_id))
        return [e.revoked_at is not None for e in rows]


async def test_a_refund_that_fails_later_puts_the_order_back_and_tells_everyone(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
) -> None:
    """R2: card 5126. Refunded in full (downloads revoked, refund email), then the bank refuses the refund."""
    await factory.user(email="admin@example.com", role="admin")
    order_id, intent_id = await members_paid_order(
        client, factory, runtime, settings, stripe_emulator, queue, "pm_card_refundFail"
    )
    refund = await runtime.stripe.v1.refunds.create_async({"payment_intent": intent_id})
    assert refund.status == "succeeded"  # Stripe accepts it first
    await settle_events(runtime, stripe_emulator, queue)
    order = await load_order(runtime, order_id)
    assert (order.status, order.amount_refunded) == ("refunded", order.total)
    assert await entitlements_revoked(runtime, order_id) == [True]
    assert await emails(runtime) == [("refund", "cara@example.com")]

    failed = await asyncio.to_thread(stripe_emulator.control, f"refunds/{refund.id}/settle")
    assert (failed["status"], failed["failure_reason"]) == ("failed", "expired_or_canceled_card")
    await settle_events(runtime, stripe_emulator, queue)

    order = await load_order(runtime, order_id)
    assert (order.status, order.amount_refunded, order.refunded_at) == ("paid", 0, None)
    assert await entitlements_revoked(runtime, order_id) == [False]  # the refund's revocation is undone
    assert await emails(runtime) == [
        ("refund", "cara@example.com"),
        ("refund_failed", "cara@example.com"),
        ("refund_failed_admin", "admin@example.com"),
    ]
    async with runtime.db() as db:
        row = await db.scalar(select(m.Refund).where(m.Refund.stripe_refund_id == refund.id))
        assert row is not None and row.status == "failed"
        customer_mail = await db.scalar(select(m.EmailMessage).where(m.EmailMessage.kind == "refund_failed"))
        assert customer_mail is not None
        assert "did not go through" in customer_mail.text_body and "What happens next" in customer_mail.text_body
        timeline = list(await db.scalars(select(m.OrderEvent.kind).where(m.OrderEvent.order_id == order_id)))
        assert timeline.count("refund_failed") == 1

    page = text_of((await client.get(f"/account/orders/{order_id}")).text)
    assert "A refund did not go through." in page
    assert "Failed" in page and "Paid" in page

    # Every event delivered again: nothing more is sent, nothing moves.
    async with runtime.db() as db:
        await db.execute(m.StripeEvent.__table__.update().values(status="received"))  # type: ignore[attr-defined]
        await db.commit()
    await run_stored_events(runtime, queue)
    assert len(await emails(runtime)) == 3
    assert (await load_order(runtime, order_id)).status == "paid"


async def test_a_pending_refund_shows_as_pending_until_it_succeeds(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
) -> None:
    """R2: card 7726. The refund is pending (counted as refunded, as Stripe does), then succeeds: one email, then."""
    order_id, intent_id = await members_paid_order(
        client, factory, runtime, settings, stripe_emulator, queue, "pm_card_pendingRefund"
    )
    refund = await runtime.stripe.v1.refunds.create_async({"payment_intent": intent_id, "amount": 500})
    assert refund.status == "pending"
    await settle_events(runtime, stripe_emulator, queue)
    order = await load_order(runtime, order_id)
    assert (order.status, order.amount_refunded) == ("partially_refunded", 500)
    assert await emails(runtime) == []  # nothing is refunded yet
    page = text_of((await client.get(f"/account/orders/{order_id}")).text)
    assert "$5.00 CAD: Pending" in page

    succeeded = await asyncio.to_thread(stripe_emulator.control, f"refunds/{refund.id}/settle")
    assert succeeded["status"] == "succeeded"
    await settle_events(runtime, stripe_emulator, queue)
    assert await emails(runtime) == [("refund", "cara@example.com")]
    page = text_of((await client.get(f"/account/orders/{order_id}")).text)
    assert "$5.00 CAD: Refunded" in page and "Pending" not in page
