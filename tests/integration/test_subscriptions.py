"""Subscriptions: subscribe with the first invoice's confirmation secret, webhook mirroring, credits per paid
cycle (exactly once), cancel/resume, switching with a proration preview, renewal and dunning on a test clock."""

from __future__ import annotations

import re
import time
from uuid import UUID

import httpx
import pytest
from saq import Queue, Worker
from sqlalchemy import func, select

from app.db import models as m
from app.lib.runtime import Runtime
from app.stripe_emulator.server import EmulatorServer
from tests.conftest import Factory
from tests.helpers import post_form, sign_in, text_of
from tests.integration.purchase_support import deliver, settle
from tests.support import Mailbox

pytestmark = pytest.mark.usefixtures("app_server")

DAY = 86_400


async def make_plan(runtime: Runtime, *, trial_days: int = 0) -> m.Plan:
    async with runtime.db() as db:
        hours = m.CreditType(code="room-hours", name="Meeting-room hours", unit="hours")
        db.add(hours)
        await db.flush()
        plan = m.Plan(name="Resident", slug="resident", description="Desk and room hours", trial_days=trial_days)
        plan.prices = [
            m.PlanPrice(interval="month", amount=4900, currency="CAD"),
            m.PlanPrice(interval="year", amount=49000, currency="CAD"),
        ]
        plan.credits = [m.PlanCredit(credit_type_id=hours.id, amount=10)]
        db.add(plan)
        await db.commit()
        return plan


async def subscribe(client: httpx.AsyncClient, interval: str = "month", province: str = "AB") -> UUID:
    """Subscribes the signed-in member (billed in ``province``: Alberta, GST only, unless a test says otherwise)."""
    page = await client.get(f"/subscribe/resident?interval={interval}")
    assert page.status_code == 200, page.text
    attempt = re.search(r'name="attempt" value="([^"]+)"', page.text)
    assert attempt
    response = await post_form(
        client,
        "/subscribe/resident",
        {"interval": interval, "attempt": attempt.group(1), "province": province},
        token=None,
    )
    assert response.status_code == 303, response.text
    match = re.search(r"/subscriptions/([0-9a-f-]{36})/pay", response.headers["location"])
    assert match, response.headers["location"]
    return UUID(match.group(1))


async def pay_first_invoice(
    client: httpx.AsyncClient, runtime: Runtime, sub_id: UUID, card: str = "pm_card_visa"
) -> str:
    page = await client.get(f"/subscriptions/{sub_id}/pay")
    assert page.status_code == 200, page.text
    secret = re.search(r'data-client-secret="(pi_[A-Za-z0-9]+)_secret_', page.text)
    assert secret, "no Payment Element on the page"
    await runtime.stripe.v1.payment_intents.confirm_async(
        secret.group(1), {"payment_method": card, "return_url": "http://testserver.local/return"}
    )
    return secret.group(1)


async def load_sub(runtime: Runtime, sub_id: UUID) -> m.Subscription:
    async with runtime.db() as db:
        sub = await db.get(m.Subscription, sub_id)
        assert sub is not None
        return sub


async def credit_balance(runtime: Runtime, user_id: UUID) -> int:
    async with runtime.db() as db:
        return int(
            await db.scalar(
                select(func.coalesce(func.sum(m.CreditEntry.amount), 0)).where(m.CreditEntry.user_id == user_id)
            )
            or 0
        )


async def test_subscribe_pay_and_get_credits_once(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
) -> None:
    await make_plan(runtime)
    user = await factory.user(email="member@example.com")
    await sign_in(client, "member@example.com")
    sub_id = await subscribe(client)
    assert (await load_sub(runtime, sub_id)).status == "incomplete"
    # Not shown as the customer's plan until Stripe says it is active.
    assert "You don't have a plan right now" in text_of((await client.get("/account/subscription")).text)

    await pay_first_invoice(client, runtime, sub_id)
    await settle(stripe_emulator, queue, runtime)
    sub = await load_sub(runtime, sub_id)
    assert sub.status == "active"
    assert sub.current_period_end is not None
    assert await credit_balance(runtime, user.id) == 10
    async with runtime.db() as db:
        invoices = list(await db.scalars(select(m.Invoice).where(m.Invoice.user_id == user.id)))
        # $49 plus Alberta's GST (5 %): the tax is Stripe's, on the invoice, and mirrored.
        assert [(i.status, i.billing_reason, i.amount_paid, i.tax) for i in invoices] == [
            ("paid", "subscription_create", 5145, 245)
        ]

    back = await client.get(f"/subscriptions/{sub_id}/complete")
    assert back.status_code == 303
    page = text_of((await client.get("/account/subscription")).text)
    assert "Resident Active" in page
    assert "$49.00 CAD per month" in page
    assert "Renews on" in page

    # Stripe delivers every event again: still exactly one allocation.
    async with runtime.db() as db:
        events = list(await db.scalars(select(m.StripeEvent)))
    for event in events:
        await deliver(client, event.payload)
    await settle(stripe_emulator, queue, runtime)
    assert await credit_balance(runtime, user.id) == 10


async def test_cancel_at_period_end_and_resume(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
) -> None:
    await make_plan(runtime)
    await factory.user(email="leaver@example.com")
    await sign_in(client, "leaver@example.com")
    sub_id = await subscribe(client)
    await pay_first_invoice(client, runtime, sub_id)
    await settle(stripe_emulator, queue, runtime)

    response = await post_form(client, "/account/subscription/cancel", {})
    assert response.status_code == 303
    sub = await load_sub(runtime, sub_id)
    assert sub.cancel_at_period_end is True
    assert sub.status == "active"  # kept until the period ends
    remote = await runtime.stripe.v1.subscriptions.retrieve_async(sub.stripe_subscription_id)
    assert remote.cancel_at_period_end is True
    page = text_of((await client.get("/account/subscription")).text)
    assert "Your plan ends on" in page
    assert "Resume my plan" in page

    await post_form(client, "/account/subscription/resume", {})
    sub = await load_sub(runtime, sub_id)
    assert sub.cancel_at_period_end is False
    await settle(stripe_emulator, queue, runtime)
    assert (await load_sub(runtime, sub_id)).cancel_at_period_end is False  # late webhooks do not undo it


async def test_switch_to_yearly_with_a_proration_preview(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
) -> None:
    plan = await make_plan(runtime)
    await factory.user(email="switcher@example.com")
    await sign_in(client, "switcher@example.com")
    sub_id = await subscribe(client)
    await pay_first_invoice(client, runtime, sub_id)
    await settle(stripe_emulator, queue, runtime)
    yearly = next(p for p in plan.prices if p.interval == "year")

    preview = await client.get(f"/account/subscription/preview?price_id={yearly.id}", headers={"HX-Request": "true"})
    assert preview.status_code == 200
    text = text_of(preview.text)
    assert "Switch to Resident, billed yearly" in text
    due = re.search(r"Due now \$([\d,]+\.\d\d) CAD", text)
    assert due
    assert 0 < float(due.group(1).replace(",", "")) <= 490  # the year, less the unused month
    assert (await load_sub(runtime, sub_id)).stripe_price_id != ""  # previewing changed nothing
    response = await post_form(client, "/account/subscription/switch", {"price_id": str(yearly.id)})
    assert response.status_code == 303
    await settle(stripe_emulator, queue, runtime)
    sub = await load_sub(runtime, sub_id)
    assert sub.plan_price_id == yearly.id
    assert sub.status == "active"


async def test_renewal_on_a_test_clock_allocates_the_next_cycle_once_and_a_failing_card_starts_dunning(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
    mailbox: Mailbox,
) -> None:
    await make_plan(runtime)
    user = await factory.user(email="renewer@example.com")
    # Test data: the customer lives on a Stripe test clock, so the test can move time forward.
    clock = await runtime.stripe.v1.test_helpers.test_clocks.create_async({"frozen_time": int(time.time())})
    customer = await runtime.stripe.v1.customers.create_async({"email": user.email, "test_clock": clock.id})
    async with runtime.db() as db:
        row = await db.get(m.User, user.id)
        assert row is not None
        row.stripe_customer_id = customer.id
        await db.commit()
    await sign_in(client, "renewer@example.com")
    sub_id = await subscribe(client)
    await pay_first_invoice(client, runtime, sub_id)
    await settle(stripe_emulator, queue, runtime)
    assert await credit_balance(runtime, user.id) == 10

    # A month later the renewal is paid: ten more hours, once (unused hours expire with their period).
    await runtime.stripe.v1.test_helpers.test_clocks.advance_async(
        clock.id, {"frozen_time": int(time.time()) + 32 * DAY}
    )
    await settle(stripe_emulator, queue, runtime)
    async with runtime.db() as db:
        allocations = await db.scalar(
            select(func.count())
            .select_from(m.CreditEntry)
            .where(m.CreditEntry.user_id == user.id, m.CreditEntry.kind == "allocation")
        )
    assert allocations == 2
    assert await credit_balance(runtime, user.id) == 10

    # The card starts failing (4000 0000 0000 0341): the next renewal fails, the account shows the banner.
    failing = await runtime.stripe.v1.payment_methods.attach_async(
        "pm_card_chargeCustomerFail", {"customer": customer.id}
    )
    sub = await load_sub(runtime, sub_id)
    await runtime.stripe.v1.subscriptions.update_async(
        sub.stripe_subscription_id, {"default_payment_method": failing.id}
    )
    await runtime.stripe.v1.test_helpers.test_clocks.advance_async(
        clock.id, {"frozen_time": int(time.time()) + 63 * DAY}
    )
    await settle(stripe_emulator, queue, runtime)
    assert (await load_sub(runtime, sub_id)).status == "past_due"
    assert "Your last payment failed" in text_of((await client.get("/account/subscription")).text)
    [notice] = await mailbox.wait_for("renewer@example.com")
    assert "payment didn't go through" in notice["Subject"]

    # Update the card (SetupIntent through the Payment Element) and the open invoice is retried at once.
    card_page = await client.get("/account/subscription/card")
    secret = re.search(r'data-client-secret="(seti_[A-Za-z0-9]+)_secret_', card_page.text)
    assert secret
    await runtime.stripe.v1.setup_intents.confirm_async(
        secret.group(1), {"payment_method": "pm_card_visa", "return_url": "http://testserver.local/r"}
    )
    saved = await client.get(f"/account/subscription/card/saved?setup_intent={secret.group(1)}")
    assert saved.status_code == 303
    await settle(stripe_emulator, queue, runtime)
    assert (await load_sub(runtime, sub_id)).status == "active"


async def test_nobody_else_can_pay_or_see_a_subscription(
    client: httpx.AsyncClient, app: object, factory: Factory, runtime: Runtime
) -> None:
    await make_plan(runtime)
    await factory.user(email="owner@example.com")
    await factory.user(email="other@example.com")
    await sign_in(client, "owner@example.com")
    sub_id = await subscribe(client)
    transport = httpx.ASGITransport(app=app, client=("198.51.100.7", 50002))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as stranger:
        assert (await stranger.get(f"/subscriptions/{sub_id}/pay")).status_code in {302, 303}  # sign in first
        await sign_in(stranger, "other@example.com")
        assert (await stranger.get(f"/subscriptions/{sub_id}/pay")).status_code == 404
        assert (await stranger.get(f"/subscriptions/{sub_id}/complete")).status_code == 404


async def test_out_of_order_subscription_events_converge_to_stripe(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
) -> None:
    await make_plan(runtime)
    await factory.user(email="order@example.com")
    await sign_in(client, "order@example.com")
    sub_id = await subscribe(client)
    await pay_first_invoice(client, runtime, sub_id)
    await settle(stripe_emulator, queue, runtime)
    # Replay the whole history backwards: the mirror still ends where Stripe is.
    async with runtime.db() as db:
        payloads = [e.payload for e in await db.scalars(select(m.StripeEvent).order_by(m.StripeEvent.api_created))]
        await db.execute(m.StripeEvent.__table__.delete())
        await db.commit()
    for payload in reversed(payloads):
        assert (await deliver(client, payload)).status_code == 200
    await settle(stripe_emulator, queue, runtime)
    sub = await load_sub(runtime, sub_id)
    remote = await runtime.stripe.v1.subscriptions.retrieve_async(sub.stripe_subscription_id)
    assert (sub.status, sub.cancel_at_period_end) == (remote.status, remote.cancel_at_period_end)


async def test_a_plan_that_allows_it_can_be_ended_now_and_the_member_is_told(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
    mailbox: Mailbox,
) -> None:
    plan = await make_plan(runtime)
    await factory.user(email="quitter@example.com")
    await sign_in(client, "quitter@example.com")
    sub_id = await subscribe(client)
    await pay_first_invoice(client, runtime, sub_id)
    await settle(stripe_emulator, queue, runtime)

    # Not allowed for this plan: only the end-of-period cancellation is offered.
    assert "End my plan now" not in (await client.get("/account/subscription")).text
    refused = await post_form(client, "/account/subscription/cancel-now", {})
    assert refused.status_code == 303
    assert (await load_sub(runtime, sub_id)).status == "active"

    async with runtime.db() as db:
        row = await db.get(m.Plan, plan.id)
        assert row is not None
        row.allow_cancel_now = True
        await db.commit()
    assert "End my plan now" in (await client.get("/account/subscription")).text
    ended = await post_form(client, "/account/subscription/cancel-now", {})
    assert ended.status_code == 303
    await settle(stripe_emulator, queue, runtime)
    assert (await load_sub(runtime, sub_id)).status == "canceled"
    assert "You don't have a plan right now" in text_of((await client.get("/account/subscription")).text)
    notices = await mailbox.wait_for("quitter@example.com")
    assert [n["Subject"] for n in notices] == ["Your Cartwright Resident membership has ended"]
    async with runtime.db() as db:
        sent = await db.scalar(
            select(func.count()).select_from(m.EmailMessage).where(m.EmailMessage.kind == "membership_ended")
        )
    assert sent == 1  # the page and the webhook both saw the end; one email


async def test_hosted_checkout_return_trusts_only_this_customers_completed_session(
    client: httpx.AsyncClient, app: object, factory: Factory, runtime: Runtime
) -> None:
    await make_plan(runtime)
    await factory.user(email="hosted@example.com")
    await sign_in(client, "hosted@example.com")
    page = await client.get("/subscribe/resident?interval=month")
    assert "Pay on Stripe's checkout page instead" in page.text
    attempt = re.search(r'name="attempt" value="([^"]+)"', page.text)
    assert attempt
    response = await post_form(
        client,
        "/subscribe/resident",
        {"interval": "month", "attempt": attempt.group(1), "via": "hosted", "province": "AB"},
    )
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith(str(runtime.settings.stripe.api_base))  # off to Stripe's page
    sessions = await runtime.stripe.v1.checkout.sessions.list_async({"limit": 1})
    session = sessions.data[0]
    assert session.mode == "subscription"

    # Coming back before paying: nothing was created, the customer is told so.
    back = await client.get(f"/subscriptions/checkout/return?session_id={session.id}")
    assert back.status_code == 303
    assert back.headers["location"] == "/pricing"
    async with runtime.db() as db:
        assert await db.scalar(select(func.count()).select_from(m.Subscription)) == 0

    # Someone else cannot claim the session.
    await factory.user(email="claimant@example.com")
    transport = httpx.ASGITransport(app=app, client=("198.51.100.8", 50003))  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as other:
        await sign_in(other, "claimant@example.com")
        assert (await other.get(f"/subscriptions/checkout/return?session_id={session.id}")).status_code == 404
        assert (await other.get("/subscriptions/checkout/return?session_id=cs_nope")).status_code == 404


async def test_a_standard_customer_cannot_switch_onto_the_member_price(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
) -> None:
    plan = await make_plan(runtime)
    async with runtime.db() as db:
        member_price = m.PlanPrice(plan_id=plan.id, interval="year", tier="member", amount=100, currency="CAD")
        db.add(member_price)
        await db.commit()
    await factory.user(email="standard@example.com")
    await sign_in(client, "standard@example.com")
    sub_id = await subscribe(client)
    await pay_first_invoice(client, runtime, sub_id)
    await settle(stripe_emulator, queue, runtime)
    before = (await load_sub(runtime, sub_id)).stripe_price_id

    assert (await client.get(f"/account/subscription/preview?price_id={member_price.id}")).status_code == 404
    response = await post_form(client, "/account/subscription/switch", {"price_id": str(member_price.id)})
    assert response.status_code == 404
    assert (await load_sub(runtime, sub_id)).stripe_price_id == before
    assert (await client.get("/account/subscription/preview?price_id=not-a-uuid")).status_code == 404


async def test_stripe_refusing_is_a_clear_page_not_a_server_error(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    plan = await make_plan(runtime)
    user = await factory.user(email="ghost@example.com")
    async with runtime.db() as db:
        # A mirror row whose subscription Stripe does not know (deleted there, say).
        db.add(
            m.Subscription(
                user_id=user.id,
                plan_id=plan.id,
                stripe_subscription_id="sub_unknown_to_stripe",
                stripe_customer_id="cus_unknown",
                status="active",
            )
        )
        await db.commit()
    await sign_in(client, "ghost@example.com")
    yearly = next(p for p in plan.prices if p.interval == "year")
    page = await client.get(f"/account/subscription/preview?price_id={yearly.id}")
    assert page.status_code == 503
    assert "reach the payment processor" in text_of(page.text)
