"""Staff actions on a member's subscription (#16 item 5): each goes to Stripe (the emulator) with an idempotency key,
the mirror follows at once and again through the webhooks, each writes one audit row, and the permission table
decides who may: support cancels, resumes and refunds; only admins apply a promo code (support gets the 403 page).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from uuid import UUID

import httpx
import pytest
from saq import Queue, Worker
from sqlalchemy import select

from app.db import models as m
from app.lib.runtime import Runtime
from app.stripe_emulator.server import EmulatorServer
from tests.conftest import Factory
from tests.helpers import post_form, sign_in, text_of
from tests.integration.purchase_support import settle
from tests.integration.test_promo_codes import stripe_backed_code
from tests.integration.test_subscriptions import load_sub, make_plan, pay_first_invoice, subscribe

pytestmark = pytest.mark.usefixtures("app_server")


async def staff(new_browser: Callable[..., httpx.AsyncClient], factory: Factory, role: str) -> httpx.AsyncClient:
    """Another browser, signed in as a new staff member of ``role``."""
    await factory.user(email=f"{role}@example.com", role=role)
    browser = new_browser()
    await sign_in(browser, f"{role}@example.com")
    return browser


async def active_member(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, emulator: EmulatorServer, queue: Queue
) -> UUID:
    """A member (signed in on ``client``) whose monthly plan is paid and active."""
    await make_plan(runtime)
    await factory.user(email="member@example.com", name="Mia Member")
    await sign_in(client, "member@example.com")
    sub_id = await subscribe(client)
    await pay_first_invoice(client, runtime, sub_id)
    await settle(emulator, queue, runtime)
    assert (await load_sub(runtime, sub_id)).status == "active"
    return sub_id


async def audit_rows(runtime: Runtime, sub_id: UUID) -> list[tuple[str, str, str]]:
    async with runtime.db() as db:
        rows = await db.scalars(
            select(m.AuditEntry).where(m.AuditEntry.target_id == str(sub_id)).order_by(m.AuditEntry.created_at)
        )
        return [(r.action, r.actor_email, r.summary) for r in rows]


def refund_token(page: str) -> str:
    match = re.search(r'name="form_token" value="([^"]+)"', page)
    assert match, "the page has no refund form"
    return match.group(1)


async def test_support_cancels_a_subscription_now_and_the_member_sees_it(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
    new_browser: Callable[..., httpx.AsyncClient],
) -> None:
    sub_id = await active_member(client, factory, runtime, stripe_emulator, queue)
    support = await staff(new_browser, factory, "support")
    page = await support.get(f"/admin/subscriptions/{sub_id}")
    assert page.status_code == 200
    assert "Subscription of Mia Member" in text_of(page.text)
    assert 'hx-confirm="Cancel this subscription now?' in page.text  # the browser asks before it goes

    response = await post_form(support, f"/admin/subscriptions/{sub_id}/cancel-now", {})
    assert response.status_code == 303
    assert (await load_sub(runtime, sub_id)).status == "canceled"  # mirrored from Stripe's answer at once
    remote = await runtime.stripe.v1.subscriptions.retrieve_async(
        (await load_sub(runtime, sub_id)).stripe_subscription_id
    )
    assert remote.status == "canceled"
    [(action, actor, summary)] = await audit_rows(runtime, sub_id)
    assert (action, actor) == ("subscription.cancel_now", "support@example.com")
    assert "loses access" in summary

    await settle(stripe_emulator, queue, runtime)  # the webhooks converge on the same row
    assert (await load_sub(runtime, sub_id)).status == "canceled"
    assert "You don't have a plan right now" in text_of((await client.get("/account/subscription")).text)

    again = await post_form(support, f"/admin/subscriptions/{sub_id}/cancel-now", {})  # a second tab, later
    assert again.status_code == 422
    assert "This subscription is canceled: nothing to do." in text_of(again.text)
    assert len(await audit_rows(runtime, sub_id)) == 1


async def test_support_cancels_at_period_end_and_resumes(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
    new_browser: Callable[..., httpx.AsyncClient],
) -> None:
    sub_id = await active_member(client, factory, runtime, stripe_emulator, queue)
    support = await staff(new_browser, factory, "support")
    response = await post_form(support, f"/admin/subscriptions/{sub_id}/cancel-at-period-end", {}, htmx=True)
    assert response.status_code == 200 and response.headers["HX-Redirect"] == f"/admin/subscriptions/{sub_id}"
    sub = await load_sub(runtime, sub_id)
    assert sub.status == "active" and sub.cancel_at_period_end
    page = text_of((await support.get(f"/admin/subscriptions/{sub_id}")).text)
    assert "The subscription will end on" in page and "(ends at period end)" in page
    assert "Your plan ends on" in text_of((await client.get("/account/subscription")).text)  # the member sees it

    assert (await post_form(support, f"/admin/subscriptions/{sub_id}/resume", {})).status_code == 303
    assert not (await load_sub(runtime, sub_id)).cancel_at_period_end
    await settle(stripe_emulator, queue, runtime)
    assert not (await load_sub(runtime, sub_id)).cancel_at_period_end
    assert [a for a, _, _ in await audit_rows(runtime, sub_id)] == [
        "subscription.cancel_at_period_end",
        "subscription.resume",
    ]
    nothing = await post_form(support, f"/admin/subscriptions/{sub_id}/resume", {})
    assert nothing.status_code == 422 and "renews already" in text_of(nothing.text)


async def test_support_refunds_the_last_invoice_in_part_then_the_rest(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
    new_browser: Callable[..., httpx.AsyncClient],
) -> None:
    sub_id = await active_member(client, factory, runtime, stripe_emulator, queue)
    support = await staff(new_browser, factory, "support")
    path = f"/admin/subscriptions/{sub_id}"
    missing = await post_form(support, f"{path}/refund", {"amount": "", "reason": "", "form_token": "t1"})
    assert missing.status_code == 422 and "Say why the invoice is refunded" in text_of(missing.text)

    form = {
        "amount": "10.00",
        "reason": "Room closed for a week",
        "form_token": refund_token((await support.get(path)).text),
    }
    assert (await post_form(support, f"{path}/refund", form)).status_code == 303
    assert (await post_form(support, f"{path}/refund", form)).status_code == 303  # a resubmission replays it
    invoice_id = (await load_sub(runtime, sub_id)).latest_invoice_id
    assert invoice_id
    invoice = await runtime.stripe.v1.invoices.retrieve_async(invoice_id, params={"expand": ["payments"]})
    intent_id = invoice.payments.data[0].payment.payment_intent
    refunds = await runtime.stripe.v1.refunds.list_async({"payment_intent": str(intent_id)})
    assert [r.amount for r in refunds.data] == [1000]

    rest = {"amount": "39.00", "reason": "Goodwill", "form_token": refund_token((await support.get(path)).text)}
    assert (await post_form(support, f"{path}/refund", rest)).status_code == 303
    refunds = await runtime.stripe.v1.refunds.list_async({"payment_intent": str(intent_id)})
    assert sorted(r.amount for r in refunds.data) == [1000, 3900]
    over = {"amount": "", "reason": "Again", "form_token": refund_token((await support.get(path)).text)}
    refused = await post_form(support, f"{path}/refund", over)
    assert refused.status_code == 422 and "Stripe refused" in text_of(refused.text)
    summaries = [s for a, _, s in await audit_rows(runtime, sub_id) if a == "subscription.refund"]
    assert len(summaries) == 2
    assert (
        summaries[0].startswith("Refunded $10.00 CAD of invoice") and "in part: Room closed for a week" in summaries[0]
    )


async def test_support_is_refused_a_promo_code_and_an_admin_applies_one(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
    new_browser: Callable[..., httpx.AsyncClient],
) -> None:
    sub_id = await active_member(client, factory, runtime, stripe_emulator, queue)
    admin = await staff(new_browser, factory, "admin")
    support = await staff(new_browser, factory, "support")
    async with runtime.db() as db:
        admin_user = await db.scalar(select(m.User).where(m.User.email == "admin@example.com"))
    assert admin_user is not None
    await stripe_backed_code(runtime, admin_user, code="STAY20", percent_off="20", duration="forever")
    path = f"/admin/subscriptions/{sub_id}"
    assert "Apply a promo code" not in text_of((await support.get(path)).text)  # not offered to support

    refused = await post_form(support, f"{path}/promo-code", {"code": "STAY20"})
    assert refused.status_code == 403
    assert "have access to that page" in text_of(refused.text)  # the 403 page
    assert await audit_rows(runtime, sub_id) == []

    unknown = await post_form(admin, f"{path}/promo-code", {"code": "NOPE"})
    assert unknown.status_code == 422 and 'aria-invalid="true"' in unknown.text
    assert (await post_form(admin, f"{path}/promo-code", {"code": "stay20"})).status_code == 303
    remote = await runtime.stripe.v1.subscriptions.retrieve_async(
        (await load_sub(runtime, sub_id)).stripe_subscription_id
    )
    assert len(remote.discounts) == 1
    [(action, actor, summary)] = await audit_rows(runtime, sub_id)
    assert (action, actor, summary) == ("subscription.promo_code", "admin@example.com", "Applied code STAY20")


async def test_the_subscription_page_is_staff_only_and_links_the_credits(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
    new_browser: Callable[..., httpx.AsyncClient],
) -> None:
    sub_id = await active_member(client, factory, runtime, stripe_emulator, queue)
    assert (await client.get(f"/admin/subscriptions/{sub_id}")).status_code == 403  # the member themself
    assert (await post_form(client, f"/admin/subscriptions/{sub_id}/cancel-now", {})).status_code == 403
    assert (await load_sub(runtime, sub_id)).status == "active"
    support = await staff(new_browser, factory, "support")
    page = await support.get(f"/admin/subscriptions/{sub_id}")
    async with runtime.db() as db:
        member = await db.scalar(select(m.User).where(m.User.email == "member@example.com"))
    assert member is not None
    assert f'href="/admin/customers/{member.id}#credits-heading"' in page.text
    listing = await support.get("/admin/subscriptions")
    assert f'href="/admin/subscriptions/{sub_id}"' in listing.text


async def test_support_pauses_payment_collection_and_resumes_it(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
    new_browser: Callable[..., httpx.AsyncClient],
) -> None:
    sub_id = await active_member(client, factory, runtime, stripe_emulator, queue)
    support = await staff(new_browser, factory, "support")
    path = f"/admin/subscriptions/{sub_id}"
    bad = await post_form(support, f"{path}/pause-collection", {"behavior": "forever", "resumes_on": "2001-01-01"})
    assert bad.status_code == 422
    page = text_of(bad.text)
    assert "Choose what happens to the invoices" in page and "Choose a day after today" in page

    form = {"behavior": "mark_uncollectible", "resumes_on": "2099-01-31"}
    assert (await post_form(support, f"{path}/pause-collection", form)).status_code == 303
    sub = await load_sub(runtime, sub_id)
    assert sub.pause_collection == "mark_uncollectible"
    assert sub.pause_resumes_at is not None and sub.pause_resumes_at.date().isoformat() == "2099-01-31"
    remote = await runtime.stripe.v1.subscriptions.retrieve_async(sub.stripe_subscription_id)
    assert remote.pause_collection is not None and remote.pause_collection.behavior == "mark_uncollectible"
    await settle(stripe_emulator, queue, runtime)  # the webhook agrees
    assert (await load_sub(runtime, sub_id)).pause_collection == "mark_uncollectible"
    assert "Paused (mark uncollectible) until 2099-01-31" in text_of((await support.get(path)).text)

    assert (await post_form(support, f"{path}/resume-collection", {})).status_code == 303
    sub = await load_sub(runtime, sub_id)
    assert sub.pause_collection == "" and sub.pause_resumes_at is None
    remote = await runtime.stripe.v1.subscriptions.retrieve_async(sub.stripe_subscription_id)
    assert remote.pause_collection is None
    assert [a for a, _, _ in await audit_rows(runtime, sub_id)] == [
        "subscription.pause_collection",
        "subscription.resume_collection",
    ]
