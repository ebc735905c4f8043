"""Disputes (issue #13 item 3): Stripe's dispute card 0259 pays, then its charge is disputed. The order is flagged,
its downloads are suspended, admins are emailed once, the order pages show it; ``won`` restores, ``lost`` keeps the
loss and the analytics count it. The bank's decision comes through the emulator's control API, never a sleep.

Reliability catalogue: R3 (dispute card …0259: order flagged, downloads suspended, admin alerted), A6 (a disputed
order's download link is refused), W5 (the webhook job and the re-sync mirror one dispute at once: one row).
"""

from __future__ import annotations

import asyncio
import re
from typing import Any
from uuid import UUID

import httpx
import pytest
from saq import Queue
from sqlalchemy import func, select

from app.db import models as m
from app.domain.analytics.ranges import parse_range
from app.domain.analytics.services import AnalyticsService
from app.domain.downloads.services import DownloadService
from app.domain.payments.jobs import process_stripe_event
from app.domain.sync.reconcile import SyncContext, reconcile_disputes
from app.domain.sync.services import SyncEngine, SyncOptions, start_sync
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
from tests.integration.race_support import job_context, rendezvous_before_insert, run_stored_events, stored_events

pytestmark = pytest.mark.usefixtures("app_server")

DISPUTE_EVENTS = (
    "charge.dispute.created",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.updated",
    "charge.dispute.closed",
    "charge.dispute.funds_reinstated",
)


async def settle_events(runtime: Runtime, emulator: EmulatorServer, queue: Queue) -> None:
    assert (await asyncio.to_thread(emulator.flush, 30))["idle"]
    await run_stored_events(runtime, queue)


async def disputed_purchase(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    *,
    card: str = "pm_card_createDispute",
) -> tuple[UUID, str]:
    """Cara (signed in) buys a 20.00 e-book with ``card``; returns the order and its PaymentIntent."""
    await factory.user(email="cara@example.com")
    await sign_in(client, "cara@example.com")
    product = await digital_product(factory, settings.storage_dir, price=2000)
    await add_to_cart(client, product)
    order_id = await place_order(client, email="cara@example.com", region="AB", postal_code="T2P 1J9")
    intent_id = await open_pay_page(client, order_id)
    await confirm(runtime, intent_id, card)
    return order_id, intent_id


async def dispute_id_of(runtime: Runtime, intent_id: str) -> str:
    listing = await runtime.stripe.v1.disputes.list_async({"payment_intent": intent_id})
    (dispute,) = listing.data
    return str(dispute.id)


async def admin_emails(runtime: Runtime) -> list[tuple[str, str]]:
    async with runtime.db() as db:
        rows = await db.scalars(select(m.EmailMessage).order_by(m.EmailMessage.created_at))
        return [(e.kind, e.to_address) for e in rows if e.kind.startswith("dispute")]


async def download_link(runtime: Runtime, order_id: UUID) -> str:
    async with runtime.db() as db:
        entitlement = await db.scalar(select(m.Entitlement).where(m.Entitlement.order_id == order_id))
        assert entitlement is not None
        return DownloadService(db, runtime.settings).signed_url(entitlement).removeprefix("http://testserver.local")


async def timeline(runtime: Runtime, order_id: UUID) -> list[str]:
    async with runtime.db() as db:
        rows = await db.scalars(
            select(m.OrderEvent.kind)
            .where(m.OrderEvent.order_id == order_id, m.OrderEvent.kind.like("dispute%"))
            .order_by(m.OrderEvent.created_at)
        )
        return list(rows)


async def count(runtime: Runtime, model: Any, *where: Any) -> int:
    async with runtime.db() as db:
        return int(await db.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def redeliver_everything(runtime: Runtime, queue: Queue) -> None:
    """Stripe delivers every event again (a retry storm): nothing more may be sent or moved."""
    async with runtime.db() as db:
        await db.execute(m.StripeEvent.__table__.update().values(status="received"))  # type: ignore[attr-defined]
        await db.commit()
    await run_stored_events(runtime, queue)


async def test_a_0259_payment_is_disputed_the_order_flagged_downloads_suspended_and_admins_told(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
) -> None:
    """R3/A6: card 0259. Then the dispute is won: the downloads come back."""
    await factory.user(email="admin@example.com", role="admin")
    order_id, intent_id = await disputed_purchase(client, factory, runtime, settings)
    await settle_events(runtime, stripe_emulator, queue)

    order = await load_order(runtime, order_id)
    assert (order.status, order.dispute_status) == ("paid", "needs_response")
    events = await stored_events(runtime, *DISPUTE_EVENTS)
    assert {e.type for e in events} == {"charge.dispute.created", "charge.dispute.funds_withdrawn"}
    assert {e.status for e in events} == {"processed"}  # no longer "ignored"
    async with runtime.db() as db:
        dispute = await db.scalar(select(m.Dispute).where(m.Dispute.order_id == order_id))
        assert dispute is not None
        assert (dispute.amount, dispute.currency, dispute.reason, dispute.status) == (
            order.total,
            "CAD",
            "fraudulent",
            "needs_response",
        )
        assert dispute.stripe_dispute_id.startswith("dp_") and dispute.payment_intent_id == intent_id
        assert dispute.evidence_due_by is not None and dispute.evidence_due_by > dispute.opened_at
    assert await timeline(runtime, order_id) == ["dispute_opened"]
    assert await admin_emails(runtime) == [("dispute_admin", "admin@example.com")]
    async with runtime.db() as db:
        mail = await db.scalar(select(m.EmailMessage).where(m.EmailMessage.kind == "dispute_admin"))
        assert mail is not None
        assert f"https://dashboard.stripe.com/test/payments/{intent_id}" in mail.text_body
        assert "Evidence due by" in mail.text_body and "Dispute on order" in mail.subject

    # The customer: the download link is refused with a page that says why, and the order page says it too.
    link = await download_link(runtime, order_id)
    refused = await client.get(link)
    assert refused.status_code == 403
    assert "disputed with your bank" in text_of(refused.text)
    page = text_of((await client.get(f"/account/orders/{order_id}")).text)
    assert "This payment is disputed with your bank." in page and "Suspended: payment disputed" in page
    downloads = text_of((await client.get("/account/downloads")).text)
    assert "Suspended" in downloads

    # The admin: the order page shows the dispute and where to answer it.
    client.cookies.clear()
    await sign_in(client, "admin@example.com")
    admin_page = (await client.get(f"/admin/orders/{order_id}")).text
    assert 'id="order-disputes"' in admin_page
    assert f'href="https://dashboard.stripe.com/test/payments/{intent_id}"' in admin_page
    text = text_of(admin_page)
    assert "Fraudulent" in text and "needs response" in text and "Disputed" in text
    assert '<form id="refund-form"' not in admin_page  # a charged-back payment cannot be refunded on top
    assert "so it cannot be refunded" in text
    # The evidence due date is shown in the shop's time zone.
    assert re.search(r"\d{2} \w{3} \d{4} \d{2}:\d{2} [A-Z]{3}", text), text

    # The bank decides for the shop.
    dispute_id = await dispute_id_of(runtime, intent_id)
    won = await asyncio.to_thread(stripe_emulator.control, f"disputes/{dispute_id}/settle", {"outcome": "won"})
    assert won["status"] == "won"
    await settle_events(runtime, stripe_emulator, queue)
    order = await load_order(runtime, order_id)
    assert order.dispute_status == "won"
    assert await timeline(runtime, order_id) == ["dispute_opened", "dispute_won"]
    assert await admin_emails(runtime) == [("dispute_admin", "admin@example.com")] * 2
    client.cookies.clear()  # the link works for whoever holds it (a guest, or Cara herself)
    assert (await client.get(link)).status_code == 200  # downloads restored

    await redeliver_everything(runtime, queue)
    assert len(await admin_emails(runtime)) == 2
    assert await timeline(runtime, order_id) == ["dispute_opened", "dispute_won"]
    assert (await load_order(runtime, order_id)).dispute_status == "won"


async def test_a_lost_dispute_keeps_the_downloads_suspended_and_counts_the_loss(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
) -> None:
    """R3: the shop accepts the dispute (``close``): lost. The analytics count the dispute and the loss."""
    order_id, intent_id = await disputed_purchase(client, factory, runtime, settings)
    await settle_events(runtime, stripe_emulator, queue)
    await runtime.stripe.v1.disputes.close_async(await dispute_id_of(runtime, intent_id))
    await settle_events(runtime, stripe_emulator, queue)

    order = await load_order(runtime, order_id)
    assert (order.status, order.dispute_status) == ("paid", "lost")
    assert await timeline(runtime, order_id) == ["dispute_opened", "dispute_lost"]
    link = await download_link(runtime, order_id)
    assert (await client.get(link)).status_code == 403
    page = text_of((await client.get(f"/account/orders/{order_id}")).text)
    assert "The bank returned the money to your card" in page and "Dispute lost" in page
    async with runtime.db() as db:
        figures = await AnalyticsService(db).figures(parse_range("30d", None, None))
    assert (figures["disputes"], figures["disputed_amount"], figures["dispute_losses"]) == (1, order.total, order.total)
    assert figures["net"] == figures["gross"] - order.total

    # The back office finds it: the orders table filters on the dispute, the dashboard counts it.
    await factory.user(email="admin@example.com", role="admin")
    client.cookies.clear()
    await sign_in(client, "admin@example.com")
    lost = text_of((await client.get("/admin/orders?dispute=lost", headers={"HX-Request": "true"})).text)
    assert f"#{order.number}" in lost and "Dispute lost" in lost
    still_open = text_of((await client.get("/admin/orders?dispute=open", headers={"HX-Request": "true"})).text)
    assert f"#{order.number}" not in still_open
    dashboard = text_of((await client.get("/admin")).text)
    assert "Disputes" in dashboard and "Lost to disputes" in dashboard


async def test_dispute_events_out_of_order_and_before_the_payment_end_in_stripes_state(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
) -> None:
    """The dispute is lost before any event is processed; the events then run newest first."""
    order_id, intent_id = await disputed_purchase(client, factory, runtime, settings)
    await asyncio.to_thread(
        stripe_emulator.control, f"disputes/{await dispute_id_of(runtime, intent_id)}/settle", {"outcome": "lost"}
    )
    assert (await asyncio.to_thread(stripe_emulator.flush, 30))["idle"]
    for row in reversed(await stored_events(runtime)):
        await process_stripe_event(job_context(runtime, queue), event_id=row.stripe_id)
    order = await load_order(runtime, order_id)
    assert (order.status, order.dispute_status) == ("paid", "lost")
    async with runtime.db() as db:
        entitlement = await db.scalar(select(m.Entitlement).where(m.Entitlement.order_id == order_id))
        assert entitlement is not None and entitlement.suspended_at is not None
    assert await timeline(runtime, order_id) == ["dispute_opened", "dispute_lost"]


async def test_the_webhook_job_and_the_resync_mirror_one_dispute_at_once(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
) -> None:
    """W5/R3: `charge.dispute.created`'s job and the re-sync's disputes page reach the INSERT together."""
    await factory.user(email="admin@example.com", role="admin")
    order_id, intent_id = await disputed_purchase(client, factory, runtime, settings)
    assert (await asyncio.to_thread(stripe_emulator.flush, 30))["idle"]
    for row in await stored_events(runtime):
        if not row.type.startswith("charge.dispute"):
            await process_stripe_event(job_context(runtime, queue), event_id=row.stripe_id)
    assert (await load_order(runtime, order_id)).status == "paid"
    (created,) = await stored_events(runtime, "charge.dispute.created")
    listing = await runtime.stripe.raw_request_async("get", "/v1/disputes", payment_intent=intent_id)
    objects = list(listing.data["data"])

    async def resync() -> None:
        async with runtime.db() as db:
            outcomes = await reconcile_disputes(
                SyncContext(db, runtime.stripe, runtime.settings, queue, runtime.redis), objects
            )
            assert {o.result for o in outcomes.values()} == {"ok"}

    with rendezvous_before_insert(runtime, "disputes") as arrivals:
        await asyncio.gather(
            process_stripe_event(job_context(runtime, queue), event_id=created.stripe_id),
            resync(),
        )
    assert len(arrivals) >= 1
    assert (await stored_events(runtime, "charge.dispute.created"))[0].status == "processed"
    assert await count(runtime, m.Dispute) == 1
    assert await timeline(runtime, order_id) == ["dispute_opened"]
    assert await admin_emails(runtime) == [("dispute_admin", "admin@example.com")]
    assert (await load_order(runtime, order_id)).dispute_status == "needs_response"


async def test_a_resync_mirrors_a_dispute_whose_webhooks_were_all_lost(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
) -> None:
    """Every webhook is lost: the re-sync pays the order, then mirrors its dispute with its consequences, once."""
    await asyncio.to_thread(stripe_emulator.chaos, drop_rate=1.0)
    await factory.user(email="admin@example.com", role="admin")
    order_id, intent_id = await disputed_purchase(client, factory, runtime, settings)
    assert (await asyncio.to_thread(stripe_emulator.flush, 30))["idle"]
    assert (await load_order(runtime, order_id)).status == "pending"
    dispute_id = await dispute_id_of(runtime, intent_id)

    first = await resync(runtime)
    assert first.status == "succeeded", first.errors
    order = await load_order(runtime, order_id)
    assert (order.status, order.dispute_status) == ("paid", "needs_response")
    assert f"dispute {dispute_id} on order #{order.number} (needs_response) was missing here — added" in (
        first.divergences
    )
    assert await admin_emails(runtime) == [("dispute_admin", "admin@example.com")]
    async with runtime.db() as db:
        entitlement = await db.scalar(select(m.Entitlement).where(m.Entitlement.order_id == order_id))
        assert entitlement is not None and entitlement.suspended_at is not None

    await asyncio.to_thread(stripe_emulator.control, f"disputes/{dispute_id}/settle", {"outcome": "won"})
    second = await resync(runtime)
    assert f"dispute {dispute_id} on order #{order.number} won in Stripe, needs_response here — fixed" in (
        second.divergences
    )
    assert (await load_order(runtime, order_id)).dispute_status == "won"
    third = await resync(runtime)
    assert third.divergences == []
    assert await admin_emails(runtime) == [("dispute_admin", "admin@example.com")] * 2
    assert await timeline(runtime, order_id) == ["dispute_opened", "dispute_won"]


async def resync(runtime: Runtime) -> m.SyncRun:
    async with runtime.db() as db:
        run = await start_sync(db, runtime.redis, trigger=m.SyncTrigger.CLI, options=SyncOptions())
    return await SyncEngine(
        db_factory=runtime.db,
        stripe=runtime.stripe,
        redis=runtime.redis,
        settings=runtime.settings,
        queue=None,  # the emails are stored; the test reads them from the database
        run_id=run.id,
        backoff_base=0.05,
    ).run()
