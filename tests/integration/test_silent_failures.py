"""Issue #13 item 8: outcomes that used to pass in silence now reach the customer, once.

A trial that ends without a card pauses and says how to resume (S4); a renewal that wants 3-D Secure sends the
link to confirm it, not "update your card" (S4); an unpaid first invoice expires without access (S2); an order
whose payment failed after the customer left the page gets one email with the way back.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

import httpx
import pytest
from saq import Queue, Worker
from sqlalchemy import func, select

from app.db import models as m
from app.domain.notifications.services import EmailService
from app.domain.orders.notices import notify_unpaid_orders
from app.domain.payments.handlers import dispatch
from app.lib.handler_context import HandlerContext
from app.lib.runtime import Runtime
from app.stripe_emulator.server import EmulatorServer
from tests.conftest import Factory
from tests.helpers import post_form, sign_in, text_of
from tests.integration.purchase_support import add_to_cart, confirm, open_pay_page, place_order, settle
from tests.integration.test_subscriptions import credit_balance, load_sub, make_plan, pay_first_invoice, subscribe
from tests.support import Mailbox, body_text

pytestmark = pytest.mark.usefixtures("app_server")

DAY = 86_400


async def member_on_a_clock(runtime: Runtime, factory: Factory, client: httpx.AsyncClient, email: str) -> str:
    """A signed-in customer whose Stripe customer lives on a test clock; returns the clock's id."""
    user = await factory.user(email=email)
    clock = await runtime.stripe.v1.test_helpers.test_clocks.create_async({"frozen_time": int(time.time())})
    customer = await runtime.stripe.v1.customers.create_async({"email": email, "test_clock": clock.id})
    async with runtime.db() as db:
        row = await db.get(m.User, user.id)
        assert row is not None
        row.stripe_customer_id = customer.id
        await db.commit()
    await sign_in(client, email)
    return str(clock.id)


async def advance(runtime: Runtime, clock_id: str, days: float) -> None:
    await runtime.stripe.v1.test_helpers.test_clocks.advance_async(
        clock_id, {"frozen_time": int(time.time() + days * DAY)}
    )


async def email_kinds(runtime: Runtime, address: str) -> list[str]:
    async with runtime.db() as db:
        return list(
            await db.scalars(
                select(m.EmailMessage.kind)
                .where(m.EmailMessage.to_address == address)
                .order_by(m.EmailMessage.created_at)
            )
        )


async def test_a_trial_without_a_card_pauses_tells_the_member_once_and_a_card_resumes_it(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
    mailbox: Mailbox,
) -> None:
    """S4: a trial that ends with no payment method is `paused` with no access, and restored on resume."""
    await make_plan(runtime, trial_days=7)
    clock = await member_on_a_clock(runtime, factory, client, "trialist@example.com")
    page = await client.get("/subscribe/resident?interval=month")
    attempt = re.search(r'name="attempt" value="([^"]+)"', page.text)
    assert attempt
    started = await post_form(
        client,
        "/subscribe/resident",
        {"interval": "month", "attempt": attempt.group(1), "province": "AB"},
        token=None,
    )
    # Nothing to pay today: straight to the plan page, no card asked for.
    assert (started.status_code, started.headers["location"]) == (303, "/account/subscription")
    async with runtime.db() as db:
        sub_id = await db.scalar(select(m.Subscription.id))
    assert sub_id is not None
    await settle(stripe_emulator, queue, runtime)
    assert (await load_sub(runtime, sub_id)).status == "trialing"

    await advance(runtime, clock, 8)
    await settle(stripe_emulator, queue, runtime)
    sub = await load_sub(runtime, sub_id)
    assert sub.status == "paused" and not sub.is_live
    [notice] = await mailbox.wait_for("trialist@example.com")
    assert notice["Subject"] == "Your Cartwright trial has ended: add a card to continue"
    assert "http://testserver.local/account/subscription" in body_text(notice)
    page = text_of((await client.get("/account/subscription")).text)
    assert "Your free trial has ended and your membership is paused." in page
    async with runtime.db() as db:
        invoices = await db.scalar(
            select(func.count()).select_from(m.Invoice).where(m.Invoice.subscription_id == sub_id)
        )
    assert invoices == 1  # the trial's zero invoice; pausing bills nothing

    # The same event delivered again (Stripe retries, the catch-up finds it): no second email.
    async with runtime.db() as db:
        paused = await db.scalar(select(m.StripeEvent).where(m.StripeEvent.type == "customer.subscription.paused"))
        assert paused is not None
        await dispatch(HandlerContext(db, runtime.stripe, runtime.settings, queue, runtime.redis), paused.payload)
    assert await email_kinds(runtime, "trialist@example.com") == ["membership_paused"]

    # A card resumes it: a new paid cycle starts now and its credits arrive.
    card_page = await client.get("/account/subscription/card")
    assert card_page.status_code == 200
    secret = re.search(r'data-client-secret="(seti_[A-Za-z0-9]+)_secret_', card_page.text)
    assert secret
    await runtime.stripe.v1.setup_intents.confirm_async(
        secret.group(1), {"payment_method": "pm_card_visa", "return_url": "http://testserver.local/r"}
    )
    saved = await client.get(f"/account/subscription/card/saved?setup_intent={secret.group(1)}")
    assert (saved.status_code, saved.headers["location"]) == (303, "/account/subscription")
    await settle(stripe_emulator, queue, runtime)
    resumed = await load_sub(runtime, sub_id)
    assert resumed.status == "active" and resumed.is_live
    assert "Your membership is active again." in text_of((await client.get("/account/subscription")).text)
    assert await credit_balance(runtime, resumed.user_id) == 10


async def test_a_renewal_that_needs_3d_secure_emails_the_link_to_confirm_it_not_update_your_card(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
    mailbox: Mailbox,
) -> None:
    """S4: `invoice.payment_action_required` sends the payment link (Stripe's hosted invoice page)."""
    await make_plan(runtime)
    clock = await member_on_a_clock(runtime, factory, client, "threeds@example.com")
    sub_id = await subscribe(client)
    await pay_first_invoice(client, runtime, sub_id)
    await settle(stripe_emulator, queue, runtime)
    sub = await load_sub(runtime, sub_id)
    needs_auth = await runtime.stripe.v1.payment_methods.attach_async(
        "pm_card_authenticationRequired", {"customer": sub.stripe_customer_id}
    )
    await runtime.stripe.v1.subscriptions.update_async(
        sub.stripe_subscription_id, {"default_payment_method": needs_auth.id}
    )

    await advance(runtime, clock, 32)
    await settle(stripe_emulator, queue, runtime)
    assert (await load_sub(runtime, sub_id)).status == "past_due"
    [message] = await mailbox.wait_for("threeds@example.com")
    assert message["Subject"] == "Confirm your Cartwright payment with your bank"
    link = re.search(r"https?://\S+/_emulator/invoices/(in_[A-Za-z0-9]+)", body_text(message))
    assert link, body_text(message)
    async with runtime.db() as db:
        invoice = await db.scalar(select(m.Invoice).where(m.Invoice.stripe_invoice_id == link.group(1)))
        assert invoice is not None and invoice.status == "open" and invoice.billing_reason == "subscription_cycle"
    # One email, the one that helps: no "update your card" for a card that works once the bank confirms.
    assert await email_kinds(runtime, "threeds@example.com") == ["payment_action_required"]


async def test_an_unpaid_first_invoice_expires_the_subscription_without_access(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
) -> None:
    """S2: the first invoice is never paid; 23 hours later Stripe expires the subscription."""
    await make_plan(runtime)
    clock = await member_on_a_clock(runtime, factory, client, "walkaway@example.com")
    sub_id = await subscribe(client)
    await settle(stripe_emulator, queue, runtime)
    assert (await load_sub(runtime, sub_id)).status == "incomplete"

    await advance(runtime, clock, 1)
    await settle(stripe_emulator, queue, runtime)
    sub = await load_sub(runtime, sub_id)
    assert sub.status == "incomplete_expired" and not sub.is_live
    async with runtime.db() as db:
        first = await db.scalar(select(m.Invoice).where(m.Invoice.subscription_id == sub_id))
        assert first is not None and first.status == "void"
    page = text_of((await client.get("/account/subscription")).text)
    assert "You don't have a plan right now." in page
    assert (await client.get("/account/subscription/card")).status_code == 404
    # Nothing stands in the way of subscribing again.
    assert (await client.get("/subscribe/resident?interval=month")).status_code == 200


async def failed_order(client: httpx.AsyncClient, factory: Factory, runtime: Runtime, **billing: str) -> UUID:
    await add_to_cart(client, await factory.product(price=3000))
    order_id = await place_order(client, **billing)
    intent_id = await open_pay_page(client, order_id)
    declined = await confirm(runtime, intent_id, "pm_card_chargeDeclined")
    assert getattr(declined, "code", None) == "card_declined"
    return order_id


async def sweep(runtime: Runtime, queue: Queue, *, minutes_later: float) -> int:
    settings = dataclasses.replace(runtime.settings, base_url="http://testserver.local")
    async with runtime.db() as db:
        return await notify_unpaid_orders(
            db,
            EmailService(db, queue),
            settings,
            now=datetime.now(UTC) + timedelta(minutes=minutes_later),
            quiet=timedelta(minutes=15),
        )


async def test_an_order_whose_payment_failed_after_the_customer_left_gets_one_email_with_the_way_back(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
    mailbox: Mailbox,
) -> None:
    await factory.user(email="leaver@example.com", name="Lee Leaver")
    await sign_in(client, "leaver@example.com")
    order_id = await failed_order(client, factory, runtime, email="leaver@example.com")
    await settle(stripe_emulator, queue, runtime)

    # While the customer may still be on the page, retrying: nothing.
    assert await sweep(runtime, queue, minutes_later=5) == 0
    # Two sweeps at once a quarter of an hour later (two workers' crons): one email.
    assert sorted(await asyncio.gather(*(sweep(runtime, queue, minutes_later=16) for _ in range(2)))) == [0, 1]
    [message] = await mailbox.wait_for("leaver@example.com")
    async with runtime.db() as db:
        order = await db.get(m.Order, order_id)
        assert order is not None and order.status == "pending"
    assert message["Subject"] == f"Your Cartwright order {order.display_number} isn't paid yet"
    text = body_text(message)
    assert f"http://testserver.local/orders/{order_id}/pay" in text
    assert "Hi Lee Leaver" in text and "declined" in text
    assert await sweep(runtime, queue, minutes_later=60) == 0  # once per order

    # The link works: the pay page offers the Payment Element again.
    assert (await client.get(f"/orders/{order_id}/pay")).status_code == 200


async def test_a_guest_is_pointed_back_to_the_shop_and_a_paid_order_is_never_chased(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
    mailbox: Mailbox,
    new_browser: Callable[..., httpx.AsyncClient],
) -> None:
    guest_order = await failed_order(client, factory, runtime, email="guest@example.com")
    # Another customer's first attempt failed, then they paid: nothing to tell.
    other = new_browser()
    await add_to_cart(other, await factory.product(price=1200))
    paid_order = await place_order(other, email="payer@example.com")
    intent_id = await open_pay_page(other, paid_order)
    await confirm(runtime, intent_id, "pm_card_chargeDeclined")
    await confirm(runtime, intent_id, "pm_card_visa")
    await settle(stripe_emulator, queue, runtime)

    assert await sweep(runtime, queue, minutes_later=16) == 1
    [message] = await mailbox.wait_for("guest@example.com")
    text = body_text(message)
    assert "/orders/" not in text  # a guest's pay page opens only in the browser that placed the order
    assert "order again: http://testserver.local" in text
    assert await email_kinds(runtime, "payer@example.com") == ["receipt"]
    async with runtime.db() as db:
        kinds = list(await db.scalars(select(m.OrderEvent.kind).where(m.OrderEvent.order_id == guest_order)))
    assert "unpaid_notice" in kinds
