"""Mirror writes race: the return page (or a second event) and the webhook job mirror the same Stripe object at
the same moment, on both databases. Each test makes both writers reach the INSERT together (see race_support)
and expects no error, one row, and each side effect once.

Reliability catalogue: P2 (webhook and success page at once), W5 (the same object twice concurrently: a unique
clash is never an error), R1 (a refund counted once).
"""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest
from saq import Queue
from sqlalchemy import func, select

from app.db import models as m
from app.domain.payments.jobs import process_stripe_event
from app.lib.runtime import Runtime
from app.lib.settings import Settings
from app.stripe_emulator.server import EmulatorServer
from tests.conftest import Factory
from tests.helpers import post_form, sign_in, text_of
from tests.integration.purchase_support import (
    add_to_cart,
    confirm,
    digital_product,
    load_order,
    open_pay_page,
    place_order,
)
from tests.integration.race_support import job_context, rendezvous_before_insert, run_stored_events, stored_events
from tests.integration.test_admin_orders import refund_form
from tests.integration.test_subscriptions import credit_balance, make_plan, pay_first_invoice, subscribe

pytestmark = pytest.mark.usefixtures("app_server")


async def count(runtime: Runtime, model: type[object], *where: object) -> int:
    async with runtime.db() as db:
        return int(await db.scalar(select(func.count()).select_from(model).where(*where)) or 0)  # type: ignore[arg-type]


async def event_statuses(runtime: Runtime, *types: str) -> list[tuple[str, str]]:
    return [(e.type, e.status) for e in await stored_events(runtime, *types)]


async def test_return_page_and_invoice_webhook_mirror_the_first_invoice_at_once(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, stripe_emulator: EmulatorServer, queue: Queue
) -> None:
    """P2/W5: the member pays; the return page and the `invoice.paid` job mirror the first invoice together."""
    await make_plan(runtime)
    user = await factory.user(email="member@example.com")
    await sign_in(client, "member@example.com")
    sub_id = await subscribe(client)
    await pay_first_invoice(client, runtime, sub_id)
    assert (await asyncio.to_thread(stripe_emulator.flush, 30))["idle"]
    (paid,) = await stored_events(runtime, "invoice.paid")
    assert await count(runtime, m.Invoice) == 0

    with rendezvous_before_insert(runtime, "invoices") as arrivals:
        page, _ = await asyncio.gather(
            client.get(f"/subscriptions/{sub_id}/complete"),
            process_stripe_event(job_context(runtime, queue), event_id=paid.stripe_id),
        )
    assert len(arrivals) == 2, "the two writers did not both reach the invoice insert"
    assert page.status_code == 303, page.text[-2000:]
    assert page.headers["location"] == "/account/subscription"
    assert await event_statuses(runtime, "invoice.paid") == [("invoice.paid", "processed")]
    assert await count(runtime, m.Invoice) == 1
    assert await credit_balance(runtime, user.id) == 10  # the paid cycle's credits, once
    welcome = text_of((await client.get("/account/subscription")).text)
    assert "Welcome to Resident!" in welcome and "Resident Active" in welcome


async def paid_guest_order(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, settings: Settings, emulator: EmulatorServer
) -> tuple[m.Order, str]:
    product = await digital_product(factory, settings.storage_dir, price=2000)
    await add_to_cart(client, product)
    order_id = await place_order(client, email="cara@example.com", region="AB", postal_code="T2P 1J9")
    intent_id = await open_pay_page(client, order_id)
    await confirm(runtime, intent_id)
    assert (await asyncio.to_thread(emulator.flush, 30))["idle"]
    return await load_order(runtime, order_id), intent_id


async def test_two_tabs_open_the_pay_page_at_once_and_get_one_payment(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, settings: Settings
) -> None:
    """P8/W5: two tabs load the pay page together; both mount the same PaymentIntent, one payment row."""
    product = await digital_product(factory, settings.storage_dir, price=2000)
    await add_to_cart(client, product)
    order_id = await place_order(client, email="cara@example.com", region="AB", postal_code="T2P 1J9")

    with rendezvous_before_insert(runtime, "payments") as arrivals:
        first, second = await asyncio.gather(
            client.get(f"/orders/{order_id}/pay"), client.get(f"/orders/{order_id}/pay")
        )
    assert len(arrivals) == 2, "the two tabs did not both reach the payment insert"
    assert (first.status_code, second.status_code) == (200, 200), (first.text[-1500:], second.text[-1500:])
    secrets = {
        re.search(r'data-client-secret="(pi_[A-Za-z0-9]+)_secret_', page.text).group(1) for page in (first, second)
    }  # type: ignore[union-attr]
    assert len(secrets) == 1
    assert await count(runtime, m.Payment) == 1
    assert (await load_order(runtime, order_id)).payment_intent_id == secrets.pop()


async def test_refund_events_arriving_together_record_the_refund_once(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
) -> None:
    """W5/R1: an admin refund's `refund.created` and `charge.refunded` jobs run at the same moment."""
    order, _intent_id = await paid_guest_order(client, factory, runtime, settings, stripe_emulator)
    await run_stored_events(runtime, queue)
    assert (await load_order(runtime, order.id)).status == "paid"
    # Support refunds part of the order through the back office, as in the issue.
    client.cookies.clear()
    await factory.user(email="support@example.com", role="support")
    await sign_in(client, "support@example.com")
    token = await refund_form(client, order.id)
    form = {"amount": "6.00", "reason": "Chapter 3 missing", "form_token": token}
    response = await post_form(client, f"/admin/orders/{order.id}/refunds", form, htmx=True)
    assert response.status_code == 200, response.text
    assert (await asyncio.to_thread(stripe_emulator.flush, 30))["idle"]
    refund_events = await stored_events(runtime, "refund.created", "charge.refunded", "refund.updated")
    assert {e.type for e in refund_events} >= {"refund.created", "charge.refunded"}

    with rendezvous_before_insert(runtime, "refunds"):
        await asyncio.gather(
            *(process_stripe_event(job_context(runtime, queue), event_id=e.stripe_id) for e in refund_events)
        )
    statuses = await event_statuses(runtime, "refund.created", "charge.refunded", "refund.updated")
    assert {status for _type, status in statuses} == {"processed"}, statuses
    assert await count(runtime, m.Refund) == 1
    reloaded = await load_order(runtime, order.id)
    assert (reloaded.status, reloaded.amount_refunded) == ("partially_refunded", 600)
    assert await count(runtime, m.EmailMessage, m.EmailMessage.kind == "refund") == 1
    assert await count(runtime, m.OrderEvent, m.OrderEvent.kind == "refunded") == 1


async def test_two_subscription_events_mirror_a_new_subscription_once(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, stripe_emulator: EmulatorServer, queue: Queue
) -> None:
    """W5: `customer.subscription.created` and `.updated` for a subscription we have no row for, at once."""
    await make_plan(runtime)
    await factory.user(email="member@example.com")
    await sign_in(client, "member@example.com")
    sub_id = await subscribe(client)
    await pay_first_invoice(client, runtime, sub_id)
    assert (await asyncio.to_thread(stripe_emulator.flush, 30))["idle"]
    events = await stored_events(runtime, "customer.subscription.created", "customer.subscription.updated")
    assert len(events) >= 2
    async with runtime.db() as db:  # as if the subscribe request's own row had never been committed
        row = await db.get(m.Subscription, sub_id)
        assert row is not None
        await db.delete(row)
        await db.commit()

    with rendezvous_before_insert(runtime, "subscriptions") as arrivals:
        await asyncio.gather(
            *(process_stripe_event(job_context(runtime, queue), event_id=e.stripe_id) for e in events[:2])
        )
    assert len(arrivals) == 2
    statuses = await event_statuses(runtime, "customer.subscription.created", "customer.subscription.updated")
    assert {status for _type, status in statuses[:2]} == {"processed"}, statuses
    assert await count(runtime, m.Subscription) == 1
