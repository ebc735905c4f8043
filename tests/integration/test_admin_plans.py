"""Plans in the back office (#16 item 1): create and edit with Stripe kept in line (a changed price is a new Price,
the old one archived), archive, support read-only, field errors, and moving subscribers off an archived price at
their next renewal (a job, idempotent)."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from typing import Any
from uuid import UUID

import httpx
import pytest
from saq import Queue, Worker
from sqlalchemy import func, select

from app.db import models as m
from app.domain.subscriptions.jobs import move_plan_subscribers
from app.lib.runtime import Runtime
from app.stripe_emulator.server import EmulatorServer
from tests.conftest import Factory
from tests.helpers import job_finished, post_form, sign_in, text_of
from tests.integration.purchase_support import settle
from tests.integration.test_subscriptions import pay_first_invoice

pytestmark = pytest.mark.usefixtures("app_server")

DAY = 86_400


def plan_form(**overrides: str) -> dict[str, str]:
    values = {
        "name": "Studio",
        "slug": "",
        "description": "A desk and studio hours",
        "features": "Fixed desk\nStudio hours\n",
        "price_month_standard": "49.00",
        "price_year_standard": "490",
        "price_month_member": "39.50",
        "price_year_member": "",
        "trial_days": "0",
        "position": "3",
        "allow_cancel_now": "on",
    }
    return {**values, **overrides}


async def admin_client(client: httpx.AsyncClient, factory: Factory, email: str = "admin@example.com") -> None:
    await factory.user(email=email, role="admin")
    await sign_in(client, email)


async def load_plan(runtime: Runtime, slug: str) -> m.Plan:
    async with runtime.db() as db:
        plan = await db.scalar(select(m.Plan).where(m.Plan.slug == slug))
        assert plan is not None
        return plan


async def stripe_prices(runtime: Runtime, product_id: str) -> dict[str, Any]:
    page = await runtime.stripe.v1.prices.list_async({"product": product_id, "limit": 100})
    return {p.id: p for p in page.data}


async def audit_actions(runtime: Runtime) -> list[str]:
    async with runtime.db() as db:
        return list(await db.scalars(select(m.AuditEntry.action).order_by(m.AuditEntry.created_at)))


async def test_an_admin_creates_a_plan_it_is_on_pricing_and_at_stripe(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    new_browser: Callable[..., httpx.AsyncClient],
) -> None:
    async with runtime.db() as db:
        hours = m.CreditType(code="room-hours", name="Meeting-room hours", unit="hours")
        db.add(hours)
        await db.commit()
    guide = await factory.product(name="Members' guide", slug="members-guide")
    await admin_client(client, factory)
    assert (await client.get("/admin/plans/new")).status_code == 200
    form = plan_form(**{f"credits_{hours.id}": "10", "credits_roll_over": "on"})
    response = await client.post(
        "/admin/plans/",
        data={**form, "download_ids": [str(guide.id)]},
        headers={"x-csrftoken": client.cookies["cartwright_csrf"]},
    )
    assert response.status_code == 303, response.text
    plan = await load_plan(runtime, "studio")
    assert response.headers["location"] == f"/admin/plans/{plan.id}"
    assert (plan.features, plan.trial_days, plan.position) == (["Fixed desk", "Studio hours"], 0, 3)
    assert (plan.allow_cancel_now, plan.credits_roll_over) == (True, True)
    assert [(c.credit_type.code, c.amount) for c in plan.credits] == [("room-hours", 10)]
    assert [p.slug for p in plan.downloads] == ["members-guide"]
    assert sorted((p.interval, p.tier, p.amount) for p in plan.prices) == [
        ("month", "member", 3950),
        ("month", "standard", 4900),
        ("year", "standard", 49000),
    ]
    # At Stripe: one Product and a Price per row, linked by id.
    assert plan.stripe_product_id
    product = await runtime.stripe.v1.products.retrieve_async(plan.stripe_product_id)
    assert (product.name, product.active) == ("Studio", True)
    prices = await stripe_prices(runtime, plan.stripe_product_id)
    assert {p.stripe_price_id for p in plan.prices} == set(prices)
    assert sorted(p.unit_amount for p in prices.values()) == [3950, 4900, 49000]
    assert "plan.create" in await audit_actions(runtime)

    pricing = text_of((await client.get("/pricing")).text)
    for shown in ("Studio", "$49.00", "Fixed desk", "10 meeting-room hours"):
        assert shown in pricing

    # The list shows it, as on sale; archiving takes it off /pricing (audited), restoring puts it back.
    listing = text_of((await client.get("/admin/plans")).text)
    assert "Studio $49.00" in listing and "On sale" in listing
    csv_text = (await client.get("/admin/plans/export.csv")).text
    assert csv_text.splitlines()[1].startswith("Studio,studio,49.00,490.00,39.50,,CAD,0,10 room-hours,yes,")
    visitor = new_browser()  # an anonymous visitor, whose /pricing the page cache now holds
    assert "Fixed desk" in text_of((await visitor.get("/pricing")).text)
    archived = await post_form(client, f"/admin/plans/{plan.id}/archive", {})
    assert archived.status_code == 303
    assert "No memberships are on offer right now" in text_of((await client.get("/pricing")).text)
    assert "No memberships are on offer right now" in text_of((await visitor.get("/pricing")).text)
    await visitor.aclose()
    assert (await client.get("/subscribe/studio")).status_code == 404
    assert "Archived" in text_of((await client.get("/admin/plans?status=archived")).text)
    assert (await post_form(client, f"/admin/plans/{plan.id}/restore", {})).status_code == 303
    assert "Fixed desk" in text_of((await client.get("/pricing")).text)
    assert {"plan.archive", "plan.restore"} <= set(await audit_actions(runtime))
    # A new name and description reach the Stripe Product; the prices, unchanged, are not touched.
    renamed = await post_form(client, f"/admin/plans/{plan.id}", {**form, "name": "Studio Plus", "slug": "studio"})
    assert renamed.status_code == 303
    product = await runtime.stripe.v1.products.retrieve_async(plan.stripe_product_id)
    assert product.name == "Studio Plus"
    assert set(await stripe_prices(runtime, plan.stripe_product_id)) == set(prices)
    async with runtime.db() as db:
        assert await db.scalar(select(func.count()).select_from(m.Plan)) == 1  # never deleted


async def test_bad_input_re_renders_with_field_errors_and_changes_nothing(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, stripe_emulator: EmulatorServer
) -> None:
    await admin_client(client, factory)
    bad = plan_form(
        name="",
        slug="Not A Slug",
        price_month_standard="forty",
        price_month_member="",
        price_year_member="600",
        trial_days="-1",
    )
    response = await post_form(client, "/admin/plans/", bad, htmx=True)
    assert response.status_code == 422
    assert "<html" not in response.text and 'id="plan-form"' in response.text
    page = text_of(response.text)
    assert "Enter a name of up to 80 characters" in page
    assert "Use lower-case letters, digits and hyphens" in page
    assert "Enter an amount such as 49.00" in page
    assert "Enter a number of days from 0 to 730" in page
    assert 'value="forty"' in response.text  # what they typed is kept
    no_price = await post_form(client, "/admin/plans/", plan_form(price_month_standard="", price_year_standard=""))
    assert no_price.status_code == 422
    assert "Enter a monthly or a yearly price" in text_of(no_price.text)
    member_above = await post_form(client, "/admin/plans/", plan_form(price_month_member="60"))
    assert "can&#39;t be more than the monthly price" in member_above.text
    async with runtime.db() as db:
        assert await db.scalar(select(func.count()).select_from(m.Plan)) == 0
    assert await audit_actions(runtime) == []

    # An edit with a bad price changes nothing either: not the plan, not its prices, not Stripe.
    assert (await post_form(client, "/admin/plans/", plan_form())).status_code == 303
    plan = await load_plan(runtime, "studio")
    assert plan.stripe_product_id
    before = await stripe_prices(runtime, plan.stripe_product_id)
    edit = await post_form(client, f"/admin/plans/{plan.id}", plan_form(name="Renamed", price_month_standard="-5"))
    assert edit.status_code == 422
    assert "Enter an amount greater than zero" in text_of(edit.text)
    after = await load_plan(runtime, "studio")
    assert after.name == "Studio"
    assert sorted(p.amount for p in after.prices) == sorted(p.amount for p in plan.prices)
    assert await stripe_prices(runtime, plan.stripe_product_id) == before
    assert await audit_actions(runtime) == ["plan.create"]


async def test_support_sees_plans_but_cannot_create_or_edit(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    new_browser: Callable[..., httpx.AsyncClient],
) -> None:
    await admin_client(client, factory)
    assert (await post_form(client, "/admin/plans/", plan_form())).status_code == 303
    plan = await load_plan(runtime, "studio")
    support = new_browser()
    await factory.user(email="support@example.com", role="support")
    await sign_in(support, "support@example.com")
    listing = await support.get("/admin/plans")
    assert listing.status_code == 200 and "Studio" in listing.text
    assert "New plan" not in text_of(listing.text)
    page = await support.get(f"/admin/plans/{plan.id}")
    assert page.status_code == 200
    assert "Save changes" not in page.text and "<fieldset disabled>" in page.text
    denied = await support.get("/admin/plans/new")
    assert denied.status_code == 403 and "You don&#39;t have access to that page." in denied.text
    for path, data in (
        ("/admin/plans/", plan_form(name="Sneaky", slug="sneaky")),
        (f"/admin/plans/{plan.id}", plan_form(price_month_standard="1.00")),
        (f"/admin/plans/{plan.id}/archive", {}),
        (f"/admin/plans/{plan.id}/move-subscribers", {}),
    ):
        response = await post_form(support, path, data)
        assert response.status_code == 403, path
        assert "You don&#39;t have access to that page." in response.text
    after = await load_plan(runtime, "studio")
    assert after.is_active and sorted(p.amount for p in after.prices if p.is_active) == [3950, 4900, 49000]
    async with runtime.db() as db:
        assert await db.scalar(select(func.count()).select_from(m.Plan)) == 1
    assert await audit_actions(runtime) == ["plan.create"]


async def _subscriber_on_a_clock(
    new_browser: Callable[..., httpx.AsyncClient], factory: Factory, runtime: Runtime, email: str
) -> tuple[httpx.AsyncClient, str, UUID]:
    """A customer on a Stripe test clock (so the test can move time) subscribed monthly to "studio" and paid."""
    user = await factory.user(email=email)
    clock = await runtime.stripe.v1.test_helpers.test_clocks.create_async({"frozen_time": int(time.time())})
    customer = await runtime.stripe.v1.customers.create_async({"email": email, "test_clock": clock.id})
    async with runtime.db() as db:
        row = await db.get(m.User, user.id)
        assert row is not None
        row.stripe_customer_id = customer.id
        await db.commit()
    browser = new_browser()
    await sign_in(browser, email)
    page = await browser.get("/subscribe/studio?interval=month")
    assert page.status_code == 200, page.text
    attempt = re.search(r'name="attempt" value="([^"]+)"', page.text)
    assert attempt
    response = await post_form(
        browser, "/subscribe/studio", {"interval": "month", "attempt": attempt.group(1), "province": "AB"}
    )
    assert response.status_code == 303, response.text
    match = re.search(r"/subscriptions/([0-9a-f-]{36})/pay", response.headers["location"])
    assert match
    sub_id = UUID(match.group(1))
    await pay_first_invoice(browser, runtime, sub_id)
    return browser, clock.id, sub_id


async def renewal_amounts(runtime: Runtime, sub_id: UUID) -> list[int]:
    """The plan price each renewal billed: what was paid, less the sales tax on it (Alberta's GST here)."""
    async with runtime.db() as db:
        rows = await db.scalars(
            select(m.Invoice.amount_paid - m.Invoice.tax)
            .where(m.Invoice.subscription_id == sub_id, m.Invoice.billing_reason == "subscription_cycle")
            .order_by(m.Invoice.period_start)
        )
        return list(rows)


async def test_a_price_change_keeps_subscribers_on_the_old_price_until_moved_at_their_next_renewal(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
    new_browser: Callable[..., httpx.AsyncClient],
) -> None:
    await admin_client(client, factory)
    assert (await post_form(client, "/admin/plans/", plan_form())).status_code == 303
    plan = await load_plan(runtime, "studio")
    old_month = next(p for p in plan.prices if p.interval == "month" and p.tier == "standard")
    old_year = next(p for p in plan.prices if p.interval == "year")
    _, clock, sub_id = await _subscriber_on_a_clock(new_browser, factory, runtime, "member@example.com")
    await settle(stripe_emulator, queue, runtime)

    # The monthly price goes up: a new Price for new subscribers, the old one archived; the yearly is untouched.
    saved = await post_form(client, f"/admin/plans/{plan.id}", plan_form(price_month_standard="59.00"))
    assert saved.status_code == 303
    plan = await load_plan(runtime, "studio")
    new_month = plan.price_for("month")
    assert new_month is not None and new_month.amount == 5900 and new_month.id != old_month.id
    assert plan.stripe_product_id
    prices = await stripe_prices(runtime, plan.stripe_product_id)
    assert prices[old_month.stripe_price_id].active is False
    assert (prices[new_month.stripe_price_id].active, prices[new_month.stripe_price_id].unit_amount) == (True, 5900)
    assert prices[old_year.stripe_price_id].active is True
    assert plan.price_for("year") is not None and plan.price_for("year").id == old_year.id  # type: ignore[union-attr]
    async with runtime.db() as db:
        [update] = await db.scalars(select(m.AuditEntry).where(m.AuditEntry.action == "plan.update"))
        assert update.before == {"prices": {"month/member": 3950, "month/standard": 4900, "year/standard": 49000}}
    assert "$59.00" in text_of((await client.get("/pricing")).text)

    # The renewal a month later is still at the old amount: subscribers keep their price until moved.
    await runtime.stripe.v1.test_helpers.test_clocks.advance_async(clock, {"frozen_time": int(time.time()) + 32 * DAY})
    await settle(stripe_emulator, queue, runtime)
    assert await renewal_amounts(runtime, sub_id) == [4900]
    page = text_of((await client.get(f"/admin/plans/{plan.id}")).text)
    assert "$49.00 CAD per month $59.00 CAD per month 1" in page

    # Move them: a job on the background queue, whose result the plan page shows.
    moved = await post_form(client, f"/admin/plans/{plan.id}/move-subscribers", {})
    assert moved.status_code == 303
    key = moved.headers["location"].split("?move=", 1)[1]
    plan_page = await client.get(moved.headers["location"])
    assert f'hx-get="/admin/plans/{plan.id}/move-subscribers/{key}"' in plan_page.text  # polls the job
    stranger = await client.get(f"/admin/plans/{plan.id}/move-subscribers/plan-move:{UUID(int=0)}:x")
    assert stranger.status_code == 404  # another plan's key
    job = await job_finished(queue, key, timeout=30)
    assert job.result["moved"] == 1, job.result
    await settle(stripe_emulator, queue, runtime)
    status = await client.get(f"/admin/plans/{plan.id}/move-subscribers/{key}", headers={"HX-Request": "true"})
    assert "Done: 1 moved to the current price from their next renewal" in text_of(status.text)
    assert "hx-trigger" not in status.text  # finished: the page stops polling
    assert "Every subscriber pays a current price" in text_of(status.text)
    async with runtime.db() as db:
        sub = await db.get(m.Subscription, sub_id)
        assert sub is not None and sub.plan_price_id == new_month.id and sub.status == "active"
    # No proration: nothing was invoiced for the switch.
    async with runtime.db() as db:
        reasons = list(await db.scalars(select(m.Invoice.billing_reason).where(m.Invoice.subscription_id == sub_id)))
    assert sorted(reasons) == ["subscription_create", "subscription_cycle"]

    # Running it again moves nobody twice.
    again = await post_form(client, f"/admin/plans/{plan.id}/move-subscribers", {})
    job = await job_finished(queue, again.headers["location"].split("?move=", 1)[1], timeout=30)
    assert job.result["moved"] == 0, job.result

    # The next renewal is at the new price.
    await runtime.stripe.v1.test_helpers.test_clocks.advance_async(clock, {"frozen_time": int(time.time()) + 63 * DAY})
    await settle(stripe_emulator, queue, runtime)
    assert await renewal_amounts(runtime, sub_id) == [4900, 5900]
    actions = await audit_actions(runtime)
    assert actions.count("plan.move_subscribers") == 2 and actions.count("plan.move_subscribers_done") == 2


async def test_two_moves_at_once_switch_each_subscriber_once_at_stripe(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
    new_browser: Callable[..., httpx.AsyncClient],
) -> None:
    """A double click on "Move subscribers" (or a job re-run after a crash, catalogue Q2): both runs read the old
    price, both ask Stripe, one switch happens (the same idempotency key), nothing is invoiced."""
    await admin_client(client, factory)
    assert (await post_form(client, "/admin/plans/", plan_form())).status_code == 303
    plan = await load_plan(runtime, "studio")
    _, _, sub_id = await _subscriber_on_a_clock(new_browser, factory, runtime, "twice@example.com")
    await settle(stripe_emulator, queue, runtime)
    assert (await post_form(client, f"/admin/plans/{plan.id}", plan_form(price_month_standard="55"))).status_code == 303

    ctx: Any = {"runtime": runtime}
    first, second = await asyncio.gather(
        move_plan_subscribers(ctx, plan_id=str(plan.id)), move_plan_subscribers(ctx, plan_id=str(plan.id))
    )
    assert first["failed"] == second["failed"] == 0
    await settle(stripe_emulator, queue, runtime)
    async with runtime.db() as db:
        sub = await db.get(m.Subscription, sub_id)
        assert sub is not None
        new_price = (await load_plan(runtime, "studio")).price_for("month")
        assert new_price is not None and sub.stripe_price_id == new_price.stripe_price_id
        reasons = list(await db.scalars(select(m.Invoice.billing_reason).where(m.Invoice.subscription_id == sub_id)))
    assert reasons == ["subscription_create"]
    events = await runtime.stripe.v1.events.list_async({"type": "customer.subscription.updated", "limit": 100})
    switches = [
        data
        for e in events.data
        if (data := e.to_dict()["data"])["object"]["id"] == sub.stripe_subscription_id
        and "items" in (data.get("previous_attributes") or {})
    ]
    assert len(switches) == 1


async def test_stripe_unreachable_saves_the_plan_and_a_failed_move_is_retried_by_running_it_again(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
    new_browser: Callable[..., httpx.AsyncClient],
) -> None:
    await admin_client(client, factory)
    stripe_emulator.chaos(rate_limit_rate=1.0, rate_limit_should_retry="false")  # every Stripe call refused
    try:
        created = await post_form(client, "/admin/plans/", plan_form())
    finally:
        stripe_emulator.chaos()
    assert created.status_code == 303
    page = text_of((await client.get(created.headers["location"])).text)
    assert "Studio created" in page and "Stripe could not be reached" in page
    plan = await load_plan(runtime, "studio")
    assert plan.stripe_product_id is None and all(p.stripe_price_id is None for p in plan.prices)

    # The next subscription creates the Product and Prices on its way (the sync is lazy and idempotent).
    _, _, sub_id = await _subscriber_on_a_clock(new_browser, factory, runtime, "later@example.com")
    await settle(stripe_emulator, queue, runtime)
    plan = await load_plan(runtime, "studio")
    assert plan.stripe_product_id and all(p.stripe_price_id for p in plan.prices)

    assert (await post_form(client, f"/admin/plans/{plan.id}", plan_form(price_month_standard="52"))).status_code == 303
    ctx: Any = {"runtime": runtime}
    stripe_emulator.chaos(rate_limit_rate=1.0, rate_limit_should_retry="false")
    try:
        failed = await move_plan_subscribers(ctx, plan_id=str(plan.id))
    finally:
        stripe_emulator.chaos()
    assert (failed["moved"], failed["failed"]) == (0, 1)
    assert "1 failed (run the move again to retry them)" in str(failed["summary"])
    again = await move_plan_subscribers(ctx, plan_id=str(plan.id))
    assert (again["moved"], again["failed"]) == (1, 0)
    async with runtime.db() as db:
        sub = await db.get(m.Subscription, sub_id)
        assert sub is not None and sub.price is not None and sub.price.amount == 5200
