"""Stripe's delivery at its worst: many orders, duplicated, reordered, delayed and dropped webhooks.

The emulator's chaos is seeded and the orders are paid one at a time, so the same drop/duplicate decisions meet
the same events every run (with delays on, the exact delivery order still varies with timing). The orders are
test data made through ``CheckoutService`` (what the checkout form calls), each paid as Stripe.js would pay it.

Among the 200 orders, 5 % are paid with Stripe's dispute card (0259: disputed at once, then won or lost) and 5 %
with its refund-fails card (5126: refunded in full, then the refund fails): afterwards every order's state is what
Stripe says and a full re-sync finds nothing to fix.

Reliability catalogue: W5 (duplicates), P2 (fulfilled once), R2 (5126 refund fails: back to paid), R3 (0259
dispute: flagged, downloads suspended, admin alerted; won restores, lost keeps the loss).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import httpx
import pytest
from saq import Queue, Worker
from sqlalchemy import func, select

from app.db import models as m
from app.domain.cart.services import price_lines
from app.domain.checkout.services import BillingDetails, CheckoutService
from app.domain.payments.handlers import HANDLERS, is_handled
from app.domain.sync.services import SyncEngine, SyncOptions, start_sync
from app.lib.runtime import Runtime
from app.lib.settings import Settings
from app.lib.stripe_gateway import build_stripe_client
from app.stripe_emulator.resources.balance_transactions import card_fee
from app.stripe_emulator.server import EmulatorServer
from tests.conftest import Factory
from tests.helpers import job_finished
from tests.integration.purchase_support import WEBHOOK_SECRET, confirm, deliver, digital_product, settle
from tests.support import Mailbox

pytestmark = pytest.mark.usefixtures("app_server")

STOCK = 10_000


@dataclass(frozen=True)
class Purchase:
    order_id: UUID
    intent_id: str
    email: str
    lines: tuple[tuple[UUID, int, bool], ...]  # (product id, quantity, downloadable)


@dataclass(frozen=True)
class Shop:
    guide: m.Product  # a download, unlimited
    deck: m.Product  # a download, limited stock
    mug: m.Product  # no download, limited stock


@pytest.fixture
async def chaos(stripe_emulator: EmulatorServer, _clean_state: None) -> AsyncIterator[EmulatorServer]:
    """The emulator, reset afterwards (chaos off, webhook endpoint back to all events) whatever the test set."""
    yield stripe_emulator
    await asyncio.to_thread(stripe_emulator.reset)


@pytest.fixture
async def shop(factory: Factory, settings: Settings) -> Shop:
    guide = await digital_product(factory, settings.storage_dir, name="Field Guide", price=1500)
    deck = await digital_product(factory, settings.storage_dir, name="Pitch Deck", price=2500, stock=STOCK)
    mug = await factory.product(name="Mug", price=1800, stock=STOCK)
    return Shop(guide, deck, mug)


async def buy(
    runtime: Runtime,
    shop: Shop,
    count: int,
    *,
    declined_first: set[int],
    at_once: int = 1,
    cards: dict[int, str] | None = None,
) -> list[Purchase]:
    """Place ``count`` guest orders and pay each at Stripe (``declined_first``: a declined card, then a good one;
    ``cards``: the card some orders pay with, by index, ``pm_card_visa`` for the others).

    One at a time by default, so Stripe creates the events, and chaos meets them, in the same order every run.
    """
    gate = asyncio.Semaphore(at_once)

    async def one(index: int) -> Purchase:
        wanted = [(shop.guide, 1)]
        if index % 2:
            wanted.append((shop.deck, 1))
        if index % 3 == 0:
            wanted.append((shop.mug, 2))
        email = f"buyer{index:03d}@example.com"
        billing = BillingDetails(email=email, name=f"Buyer {index}", country="CA", region="ON", postal_code="M5V 2T6")
        async with gate:
            async with runtime.db() as db:
                service = CheckoutService(db, runtime.stripe)
                order, _ = await service.place_order(
                    cart=price_lines(wanted), billing=billing, user=None, checkout_token=f"chaos-{index:04d}"
                )
                intent = await service.payment_intent(order)
            if index in declined_first:
                declined = await confirm(runtime, intent["id"], "pm_card_chargeDeclined")
                assert getattr(declined, "code", None) == "card_declined"
            paid = await confirm(runtime, intent["id"], (cards or {}).get(index, "pm_card_visa"))
            assert paid.status == "succeeded"
        lines = tuple((p.id, quantity, bool(p.digital_file)) for p, quantity in wanted)
        return Purchase(order.id, intent["id"], email, lines)

    return list(await asyncio.gather(*(one(i) for i in range(count))))


async def delivered(emulator: EmulatorServer) -> None:
    """Every webhook delivery (delays and retries included) is done; ``settle`` alone stops waiting after 30 s."""
    result = await asyncio.to_thread(emulator.flush, 120)
    assert result["idle"], result


async def listed_events(runtime: Runtime, intent_ids: set[str]) -> dict[str, dict[str, Any]]:
    """Every event ``GET /v1/events`` lists about these PaymentIntents and their charges, by id, oldest first."""
    listing = await runtime.stripe.v1.events.list_async({"limit": 100})
    events = [event.to_dict() async for event in listing.auto_paging_iter()]
    return {
        event["id"]: event
        for event in reversed(events)  # Stripe lists newest first
        if {event["data"]["object"].get("id"), event["data"]["object"].get("payment_intent")} & intent_ids
    }


async def stored_events(runtime: Runtime) -> dict[str, m.StripeEvent]:
    async with runtime.db() as db:
        return {row.stripe_id: row for row in await db.scalars(select(m.StripeEvent))}


async def assert_each_paid_order_fulfilled_once(runtime: Runtime, shop: Shop, purchases: list[Purchase]) -> None:
    ids = [p.order_id for p in purchases]
    async with runtime.db() as db:
        orders = {o.id: o for o in await db.scalars(select(m.Order).where(m.Order.id.in_(ids)))}
        assert len(orders) == len(ids)
        assert {o.status for o in orders.values()} == {"paid"}
        assert all(o.fulfilled_at is not None for o in orders.values())
        paid_events = Counter(
            await db.scalars(
                select(m.OrderEvent.order_id).where(m.OrderEvent.kind == "paid", m.OrderEvent.order_id.in_(ids))
            )
        )
        assert paid_events == Counter(ids)
        receipts = Counter(await db.scalars(select(m.EmailMessage.to_address).where(m.EmailMessage.kind == "receipt")))
        assert receipts == Counter(p.email for p in purchases)
        entitlements = Counter(await db.scalars(select(m.Entitlement.order_id)))
        assert entitlements == Counter(
            {p.order_id: sum(1 for _, _, download in p.lines if download) for p in purchases}
        )
        for product in (shop.deck, shop.mug):
            row = await db.get(m.Product, product.id)
            assert row is not None
            sold = sum(quantity for p in purchases for pid, quantity, _ in p.lines if pid == product.id)
            assert row.stock == STOCK - sold, product.name


ADMIN = "ops@example.com"


async def assert_every_order_is_what_stripe_says(runtime: Runtime, purchases: list[Purchase]) -> None:
    """Order status, refunded amount, refund rows, dispute flag and download suspension: as Stripe has them."""

    async def every(resource: Any) -> list[dict[str, Any]]:
        listing = await resource.list_async({"limit": 100})
        return [obj.to_dict() async for obj in listing.auto_paging_iter()]

    charges = {c["payment_intent"]: c for c in await every(runtime.stripe.v1.charges) if c["status"] == "succeeded"}
    stripe_refunds = await every(runtime.stripe.v1.refunds)
    disputes = {d["payment_intent"]: d for d in await every(runtime.stripe.v1.disputes)}
    async with runtime.db() as db:
        orders = {o.id: o for o in await db.scalars(select(m.Order))}
        refunds = {r.stripe_refund_id: r.status for r in await db.scalars(select(m.Refund))}
        suspended = {e.order_id for e in await db.scalars(select(m.Entitlement)) if e.suspended_at is not None}
    assert refunds == {r["id"]: r["status"] for r in stripe_refunds}
    for purchase in purchases:
        order, charge = orders[purchase.order_id], charges[purchase.intent_id]
        refunded = charge["amount_refunded"]
        expected_status = "paid" if refunded == 0 else ("refunded" if refunded >= order.total else "partially_refunded")
        assert (order.status, order.amount_refunded) == (expected_status, refunded), order.number
        dispute = disputes.get(purchase.intent_id)
        assert order.dispute_status == (dispute["status"] if dispute else ""), order.number
        expect_suspended = dispute is not None and dispute["status"] in m.SUSPENDING_DISPUTE_STATUSES
        assert (order.id in suspended) == expect_suspended, order.number


async def resync(runtime: Runtime) -> m.SyncRun:
    """A full re-sync, as `cartwright stripe sync` runs it."""
    async with runtime.db() as db:
        run = await start_sync(db, runtime.redis, trigger=m.SyncTrigger.CLI, options=SyncOptions())
    engine = SyncEngine(
        db_factory=runtime.db,
        stripe=build_stripe_client(runtime.settings.stripe, max_concurrency=2),
        redis=runtime.redis,
        settings=runtime.settings,
        queue=None,
        run_id=run.id,
        backoff_base=0.05,
    )
    return await engine.run()


async def test_duplicated_shuffled_delayed_webhooks_fulfil_every_order_exactly_once(
    chaos: EmulatorServer,
    app_server: str,
    runtime: Runtime,
    factory: Factory,
    shop: Shop,
    queue: Queue,
    worker: Worker[Any],
    mailbox: Mailbox,
) -> None:
    await factory.user(email=ADMIN, role="admin")  # who hears of disputes and failed refunds
    # The endpoint subscribes to the events the shop acts on, as a production endpoint is set up in Stripe.
    endpoint = f"{app_server}/webhooks/stripe"
    await asyncio.to_thread(chaos.add_webhook_endpoint, endpoint, WEBHOOK_SECRET, sorted(HANDLERS))
    await asyncio.to_thread(chaos.chaos, seed=20261129, duplicate_rate=0.3, shuffle=8, delay_ms=[0, 20])
    declined_first = set(range(0, 200, 40))  # a handful: a declined card first, then a good one
    disputed = set(range(7, 200, 20))  # 5 %: Stripe's dispute card, disputed as soon as it is paid
    refund_fails = set(range(13, 200, 20))  # 5 %: refunded in full later, and the refund fails at the bank
    cards = dict.fromkeys(disputed, "pm_card_createDispute") | dict.fromkeys(refund_fails, "pm_card_refundFail")
    purchases = await buy(runtime, shop, 200, declined_first=declined_first, cards=cards)
    await delivered(chaos)
    await settle(chaos, queue, runtime)

    await assert_each_paid_order_fulfilled_once(runtime, shop, purchases)
    # Days later: support refunds the 5126 orders in full (Stripe accepts, the events arrive in the same chaos)...
    refund_ids = [
        (await runtime.stripe.v1.refunds.create_async({"payment_intent": purchases[i].intent_id})).id
        for i in sorted(refund_fails)
    ]
    await delivered(chaos)
    await settle(chaos, queue, runtime)
    # ...then the banks decide: those refunds fail, half the disputes are won and half lost.
    for refund_id in refund_ids:
        await asyncio.to_thread(chaos.control, f"refunds/{refund_id}/settle")
    for n, index in enumerate(sorted(disputed)):
        listing = await runtime.stripe.v1.disputes.list_async({"payment_intent": purchases[index].intent_id})
        outcome = "won" if n % 2 == 0 else "lost"
        await asyncio.to_thread(chaos.control, f"disputes/{listing.data[0].id}/settle", {"outcome": outcome})
    await delivered(chaos)
    await settle(chaos, queue, runtime)

    await assert_every_order_is_what_stripe_says(runtime, purchases)
    # Zero lost events: every event Stripe lists for these PaymentIntents that we act on was stored and processed.
    listed = await listed_events(runtime, {p.intent_id for p in purchases})
    handled = {event_id: event for event_id, event in listed.items() if is_handled(event["type"])}
    won = (len(disputed) + 1) // 2
    assert Counter(event["type"] for event in handled.values()) == {
        "payment_intent.succeeded": len(purchases),
        "charge.succeeded": len(purchases),  # its balance transaction: Stripe's fee on the payment
        "payment_intent.payment_failed": len(declined_first),
        "charge.dispute.created": len(disputed),
        "charge.dispute.funds_withdrawn": len(disputed),
        "charge.dispute.updated": len(disputed),  # into review before the bank's decision
        "charge.dispute.closed": len(disputed),
        "charge.dispute.funds_reinstated": won,
        "charge.refunded": len(refund_fails),
        "refund.created": len(refund_fails),
        "refund.updated": len(refund_fails),
        "refund.failed": len(refund_fails),
        "charge.refund.updated": len(refund_fails),
    }
    stored = await stored_events(runtime)
    assert set(stored) == set(handled)
    assert {row.status for row in stored.values()} == {"processed"}
    async with runtime.db() as db:
        payments = list(await db.scalars(select(m.Payment)))
        dispute_rows = Counter(await db.scalars(select(m.Dispute.status)))
        timeline = Counter(await db.scalars(select(m.OrderEvent.kind).where(m.OrderEvent.kind.like("dispute%"))))
    assert len(payments) == len(purchases)
    assert {(p.status, p.failure_message) for p in payments} == {("succeeded", "")}
    # Every payment knows Stripe's fee (2.9 % + 30 cents) and its net, whichever of its events came first.
    assert all(p.fee == card_fee(p.amount) and p.net == p.amount - p.fee for p in payments)
    assert dispute_rows == {"won": won, "lost": len(disputed) - won}
    # One entry per change however often and in whatever order the events came (the opening, then the decision;
    # "under review" shows only where its event was processed before the decision was in Stripe).
    assert timeline["dispute_opened"] == len(disputed)
    assert (timeline["dispute_won"], timeline["dispute_lost"]) == (won, len(disputed) - won)

    # Zero duplicate emails: every receipt went out over SMTP once; the 5126 customers were told of the refund and
    # of its failure; the admin of each dispute opened and closed, and of each failed refund.
    async with runtime.db() as db:
        email_ids = list(await db.scalars(select(m.EmailMessage.id)))
    for email_id in email_ids:
        await job_finished(queue, f"email:{email_id}")
    expected = Counter(p.email for p in purchases)
    expected.update({purchases[i].email: 2 for i in refund_fails})
    expected[ADMIN] = 2 * len(disputed) + len(refund_fails)
    assert Counter(message["To"] for message in mailbox.messages) == expected

    # The chaos was real: Stripe sent duplicates, and not in the order it created the events.
    deliveries = await asyncio.to_thread(chaos.deliveries)
    assert sum(d["duplicate"] for d in deliveries) > len(handled) // 5
    first_deliveries = list(dict.fromkeys(d["event"] for d in deliveries))
    assert sorted(first_deliveries) == sorted(handled)
    assert first_deliveries != list(handled)

    # And a full re-sync with Stripe finds zero differences.
    await asyncio.to_thread(chaos.chaos)
    run = await resync(runtime)
    assert run.status == "succeeded", run.errors
    assert (run.divergences, run.errors) == ([], [])
    assert sum(counts.get("failed", 0) for counts in run.counts.values()) == 0


async def test_dropped_webhooks_leave_orders_unpaid_until_the_listed_events_are_delivered(
    chaos: EmulatorServer,
    client: httpx.AsyncClient,
    runtime: Runtime,
    shop: Shop,
    queue: Queue,
    worker: Worker[Any],
) -> None:
    await asyncio.to_thread(chaos.chaos, seed=7, drop_rate=0.3)
    # No declines here: a payment_failed event re-reads its PaymentIntent, which would fulfil a paid order anyway.
    purchases = await buy(runtime, shop, 20, declined_first=set())
    await delivered(chaos)
    await settle(chaos, queue, runtime)

    dropped = {d["event"] for d in await asyncio.to_thread(chaos.deliveries) if d["dropped"]}
    listed = await listed_events(runtime, {p.intent_id for p in purchases})
    stored = await stored_events(runtime)
    assert dropped, "the seed drops nothing"
    assert dropped <= set(listed)  # Stripe still lists what it failed to deliver...
    assert not dropped & set(stored)  # ...and we never saw it
    assert set(listed) == set(stored) | dropped
    succeeded_dropped = {
        listed[event_id]["data"]["object"]["id"]
        for event_id in dropped
        if listed[event_id]["type"] == "payment_intent.succeeded"
    }
    assert succeeded_dropped, "the seed drops no payment_intent.succeeded"
    async with runtime.db() as db:
        unpaid = set(await db.scalars(select(m.Order.payment_intent_id).where(m.Order.status != "paid")))
    # Webhooks alone did not fulfil the orders whose success was dropped (a catch-up job or the return page must).
    assert unpaid == succeeded_dropped

    await asyncio.to_thread(chaos.chaos)
    for event_id in [e for e in listed if e in dropped]:  # oldest first
        response = await deliver(client, listed[event_id])
        assert (response.status_code, response.json()["duplicate"]) == (200, False)
    await settle(chaos, queue, runtime)

    await assert_each_paid_order_fulfilled_once(runtime, shop, purchases)
    stored = await stored_events(runtime)
    assert set(stored) == set(listed)
    assert {row.status for row in stored.values()} == {"processed", "ignored"}
    async with runtime.db() as db:
        assert await db.scalar(select(func.count()).select_from(m.Order)) == len(purchases)
