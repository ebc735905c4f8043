"""Plans: the demo seed, the Stripe mirror (idempotent, price changes, repair), the pricing page, member downloads."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from app.cli.seed import SeedResult, seed_plans
from app.cli.seed_data import PLANS
from app.db import models as m
from app.domain.plans.services import PlanService
from app.domain.plans.stripe_sync import PlanStripeSync
from app.lib.runtime import Runtime
from app.lib.settings import Settings
from app.stripe_emulator.server import EmulatorServer
from tests.conftest import Factory
from tests.helpers import sign_in, text_of

DOWNLOAD_SLUGS = sorted({slug for plan in PLANS for slug in plan["downloads"]})


async def seeded_plans(runtime: Runtime, factory: Factory, settings: Settings) -> dict[str, m.Plan]:
    """The demo plans, as `cartwright seed` creates them, with their downloadable products on disk."""
    for slug in DOWNLOAD_SLUGS:
        key = f"member-files/{slug}.zip"
        path = settings.storage_dir / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"file of {slug}".encode())
        await factory.product(slug=slug, name=slug.replace("-", " ").title(), digital_file=key)
    async with runtime.db() as db:
        await seed_plans(db, SeedResult())
        await db.commit()
    return await load_plans(runtime)


async def load_plans(runtime: Runtime) -> dict[str, m.Plan]:
    async with runtime.db() as db:
        return {p.slug: p for p in (await db.scalars(select(m.Plan))).unique()}


async def stripe_prices(runtime: Runtime, product_id: str) -> list[Any]:
    page = await runtime.stripe.v1.prices.list_async({"product": product_id, "limit": 100})
    return list(page.data)


async def subscribe(
    runtime: Runtime, user: m.User, plan: m.Plan, *, interval: str = "month", status: str = "active"
) -> m.Subscription:
    """Test data: a mirrored subscription row, as the webhook handler would leave it."""
    price = plan.price_for(interval)
    assert price is not None
    subscription = m.Subscription(
        user_id=user.id,
        plan_id=plan.id,
        plan_price_id=price.id,
        stripe_subscription_id=f"sub_test_{user.id.hex[:8]}_{status}",
        stripe_customer_id=f"cus_test_{user.id.hex[:8]}",
        stripe_price_id=price.stripe_price_id or "",
        status=status,
    )
    async with runtime.db() as db:
        db.add(subscription)
        await db.commit()
    return subscription


def card(html: str, slug: str) -> str:
    """The text of one plan card on the pricing page."""
    match = re.search(rf'<article[^>]*aria-labelledby="plan-{slug}".*?</article>', html, re.S)
    assert match, f"no card for {slug}"
    return match.group(0)


# --- seed ---------------------------------------------------------------------------------------------------------


async def test_seed_creates_credit_types_and_plans_once_without_stripe(
    runtime: Runtime, factory: Factory, settings: Settings
) -> None:
    plans = await seeded_plans(runtime, factory, settings)
    assert set(plans) == {"community", "resident", "studio"}
    resident = plans["resident"]
    assert resident.trial_days == 14 and resident.features
    assert {(p.interval, p.tier, p.amount) for p in resident.prices} == {
        ("month", "standard", 4900),
        ("year", "standard", 49000),
        ("month", "member", 3900),
        ("year", "member", 39000),
    }
    assert {(c.credit_type.code, c.amount) for c in resident.credits} == {("room-hours", 10), ("day-passes", 4)}
    assert len(resident.downloads) == 3
    assert all(p.stripe_price_id is None for plan in plans.values() for p in plan.prices)

    async with runtime.db() as db:
        again = SeedResult()
        await seed_plans(db, again)
        await db.commit()
        assert (again.plans, again.credit_types) == (0, 0)
        assert await db.scalar(select(func.count()).select_from(m.Plan)) == 3
    assert (await runtime.stripe.v1.products.list_async()).data == []  # the seed never calls Stripe


# --- the Stripe mirror --------------------------------------------------------------------------------------------


async def test_ensure_creates_product_and_prices_once(runtime: Runtime, factory: Factory, settings: Settings) -> None:
    plan = (await seeded_plans(runtime, factory, settings))["resident"]
    async with runtime.db() as db:
        plan = await db.merge(plan)
        first = await PlanStripeSync(db, runtime.stripe).ensure(plan)
    assert first.product_created and first.prices_created == 4
    assert plan.stripe_product_id is not None
    product = await runtime.stripe.v1.products.retrieve_async(plan.stripe_product_id)
    assert product.name == "Resident" and product.metadata["plan_slug"] == "resident"
    prices = {p.id: p for p in await stripe_prices(runtime, plan.stripe_product_id)}
    assert len(prices) == 4
    for row in plan.prices:
        assert row.stripe_price_id in prices
        stripe_price = prices[row.stripe_price_id]
        assert stripe_price.unit_amount == row.amount and stripe_price.currency == "cad"
        assert stripe_price.recurring is not None and stripe_price.recurring.interval == row.interval
        assert stripe_price.metadata["tier"] == row.tier and stripe_price.metadata["plan_slug"] == "resident"
        assert stripe_price.active

    ids = {row.id: row.stripe_price_id for row in plan.prices}
    async with runtime.db() as db:  # a second run, in a new session, from the database: nothing new at Stripe
        plan = (await load_plans(runtime))["resident"]
        second = await PlanStripeSync(db, runtime.stripe).ensure(await db.merge(plan))
    assert not second.changed and second.relinked == 0
    assert len(await stripe_prices(runtime, plan.stripe_product_id)) == 4
    assert len((await runtime.stripe.v1.products.list_async()).data) == 1
    assert {row.id: row.stripe_price_id for row in (await load_plans(runtime))["resident"].prices} == ids


async def test_price_change_creates_a_new_price_and_archives_the_old(
    runtime: Runtime, factory: Factory, settings: Settings
) -> None:
    plan = (await seeded_plans(runtime, factory, settings))["community"]
    async with runtime.db() as db:
        plan = await db.merge(plan)
        await PlanStripeSync(db, runtime.stripe).ensure(plan)
    old = plan.price_for("month")
    assert old is not None and old.stripe_price_id is not None
    user = await factory.user()
    subscription = await subscribe(runtime, user, plan)

    async with runtime.db() as db:
        plan = await db.merge(plan)
        new = await PlanService(db).change_price(plan, "month", "standard", 2400)
        result = await PlanStripeSync(db, runtime.stripe).ensure(plan)
    assert (result.prices_created, result.prices_archived) == (1, 1)
    assert new.id != old.id and new.stripe_price_id not in {None, old.stripe_price_id}

    archived = await runtime.stripe.v1.prices.retrieve_async(old.stripe_price_id)
    assert archived.active is False and archived.unit_amount == 1900
    created = await runtime.stripe.v1.prices.retrieve_async(new.stripe_price_id or "")
    assert created.active and created.unit_amount == 2400 and created.product == plan.stripe_product_id

    plan = (await load_plans(runtime))["community"]
    rows = [p for p in plan.prices if p.interval == "month" and p.tier == "standard"]
    assert {(p.amount, p.is_active) for p in rows} == {(1900, False), (2400, True)}  # the old row stays
    assert plan.price_for("month") is not None and plan.price_for("month").amount == 2400  # type: ignore[union-attr]
    async with runtime.db() as db:
        kept = await db.get(m.Subscription, subscription.id)
        assert kept is not None and kept.plan_price_id == old.id  # existing subscribers keep their price
        again = await PlanStripeSync(db, runtime.stripe).ensure(await db.merge(plan))
        assert not again.changed
        same = await PlanService(db).change_price(await db.merge(plan), "month", "standard", 2400)
        assert same.id == new.id  # the same amount again is no change


async def test_ensure_recreates_what_stripe_no_longer_knows(
    runtime: Runtime, factory: Factory, settings: Settings, stripe_emulator: EmulatorServer
) -> None:
    plan = (await seeded_plans(runtime, factory, settings))["studio"]
    async with runtime.db() as db:
        plan = await db.merge(plan)
        await PlanStripeSync(db, runtime.stripe).ensure(plan)
    old_product = plan.stripe_product_id
    old_prices = {p.stripe_price_id for p in plan.prices}

    await asyncio.to_thread(stripe_emulator.reset)  # Stripe's state is gone; our ids are not
    async with runtime.db() as db:
        plan = await db.merge((await load_plans(runtime))["studio"])
        result = await PlanStripeSync(db, runtime.stripe).ensure(plan)
    assert result.product_created and result.prices_created == 2 and result.relinked == 3
    assert plan.stripe_product_id not in {None, old_product}
    assert not old_prices & {p.stripe_price_id for p in plan.prices}
    assert plan.stripe_product_id is not None
    prices = await stripe_prices(runtime, plan.stripe_product_id)
    assert sorted(p.unit_amount for p in prices) == [9900, 99000]


# --- the pricing page ---------------------------------------------------------------------------------------------


async def test_pricing_page_monthly_and_yearly_as_page_and_fragment(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory, settings: Settings
) -> None:
    await seeded_plans(runtime, factory, settings)
    page = await client.get("/pricing")
    assert page.status_code == 200 and "<html" in page.text
    assert page.headers["vary"].startswith("HX-Request")
    community = text_of(card(page.text, "community"))
    assert "$19.00 CAD / month" in community and "2 day passes a month" in community
    assert "Remote Team Handbook" in community  # a feature
    resident = card(page.text, "resident")
    assert "10 meeting-room hours a month" in text_of(resident) and "14-day free trial" in text_of(resident)
    assert "Start free trial" in resident
    assert 'href="/login?next_url=%2Fsubscribe%2Fresident%3Finterval%3Dmonth"' in resident  # signed out
    assert re.search(r'id="interval-month"[^>]*aria-current="page"', page.text)

    fragment = await client.get("/pricing?interval=year", headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert "<html" not in fragment.text and '<section id="pricing-plans"' in fragment.text
    # Top level, where htmx takes the tab title from.
    assert fragment.text.lstrip().startswith("<title>Yearly memberships — Cartwright</title>")
    assert fragment.headers["vary"].startswith("HX-Request")
    yearly = text_of(card(fragment.text, "community"))
    assert "$190.00 CAD / year" in yearly and "2 months free" in yearly and "2 day passes a year" in yearly
    assert re.search(r'id="interval-year"[^>]*aria-current="page"', fragment.text)
    assert 'hx-push-url="true"' in fragment.text and 'href="/pricing?interval=month"' in fragment.text

    # A reload of the pushed URL, and htmx's history restore, get the full page at the same interval.
    for headers in ({}, {"HX-Request": "true", "HX-History-Restore-Request": "true"}):
        reload = await client.get("/pricing?interval=year", headers=headers)
        assert "<html" in reload.text and "<title>Yearly memberships — Cartwright</title>" in reload.text
        assert "$990.00 CAD / year" in text_of(card(reload.text, "studio"))
    assert "$19.00" in (await client.get("/pricing?interval=weekly")).text  # nonsense falls back to monthly


async def test_holders_see_their_member_price(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory, settings: Settings
) -> None:
    await seeded_plans(runtime, factory, settings)
    holder = await factory.user(email="holder@example.com")
    async with runtime.db() as db:
        (await db.merge(holder)).holder_pricing = True
        await db.commit()
    await sign_in(client, "holder@example.com")
    page = await client.get("/pricing")
    assert "Your account has member pricing" in page.text
    community = text_of(card(page.text, "community"))
    assert "$15.00 CAD / month instead of $19.00 CAD" in community
    assert "Member price for verified holders" in community
    studio = text_of(card(page.text, "studio"))  # no member tier: the standard price, no note
    assert "$99.00 CAD / month" in studio and "Member price" not in studio
    yearly = text_of(card((await client.get("/pricing?interval=year")).text, "resident"))
    assert "$390.00 CAD / year" in yearly and "2 months free" in yearly  # 12 x $39 - $390, at the member tier
    assert 'href="/subscribe/resident?interval=year"' in (await client.get("/pricing?interval=year")).text


async def test_the_current_plan_is_marked(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory, settings: Settings
) -> None:
    plans = await seeded_plans(runtime, factory, settings)
    user = await factory.user(email="member@example.com")
    await subscribe(runtime, user, plans["resident"], interval="year")
    await sign_in(client, "member@example.com")
    page = await client.get("/pricing")
    resident = text_of(card(page.text, "resident"))
    assert "Your plan billed yearly" in resident and "Manage your plan" in resident
    assert "Start free trial" not in resident
    for slug in ("community", "studio"):
        other = text_of(card(page.text, slug))
        assert "Your plan" not in other and "Subscribe" in other
    assert 'href="/subscribe/studio?interval=month"' in page.text


async def test_an_ended_subscription_is_not_your_plan(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory, settings: Settings
) -> None:
    plans = await seeded_plans(runtime, factory, settings)
    user = await factory.user(email="former@example.com")
    await subscribe(runtime, user, plans["resident"], status="canceled")
    await sign_in(client, "former@example.com")
    page = await client.get("/pricing")
    # The pricing page itself (a 500 page would also lack "Your plan"), offering Resident again to subscribe to.
    assert page.status_code == 200
    resident = text_of(page.text)
    assert "Resident" in resident and "Subscribe" in resident
    assert "Your plan" not in page.text


# --- member downloads ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", ["active", "trialing", "past_due"])
async def test_live_subscribers_download_their_plans_files(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory, settings: Settings, status: str
) -> None:
    plans = await seeded_plans(runtime, factory, settings)
    user = await factory.user(email="member@example.com")
    await subscribe(runtime, user, plans["community"], status=status)
    await sign_in(client, "member@example.com")
    listing = await client.get("/account/member-downloads")
    assert listing.status_code == 200
    handbook = next(p for p in plans["community"].downloads if p.slug == "remote-team-handbook")
    href = f"/account/member-downloads/{handbook.id}"
    assert f'href="{href}"' in listing.text and "Community membership" in listing.text
    response = await client.get(href)
    assert response.status_code == 200
    assert response.content == b"file of remote-team-handbook"
    assert response.headers["content-disposition"].startswith('attachment; filename="remote-team-handbook.zip"')
    assert response.headers["cache-control"] == "private, no-store"
    assert response.headers["x-content-type-options"] == "nosniff"

    # Resident's files are not in Community: the same answer as for a product that doesn't exist.
    kit = next(p for p in plans["resident"].downloads if p.slug == "freelance-invoice-kit")
    assert (await client.get(f"/account/member-downloads/{kit.id}")).status_code == 404
    other = await factory.product(slug="not-in-any-plan")
    assert (await client.get(f"/account/member-downloads/{other.id}")).status_code == 404


async def test_downloads_end_with_the_membership(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory, settings: Settings
) -> None:
    plans = await seeded_plans(runtime, factory, settings)
    user = await factory.user(email="member@example.com")
    subscription = await subscribe(runtime, user, plans["resident"], status="active")
    await sign_in(client, "member@example.com")
    kit = next(p for p in plans["resident"].downloads if p.slug == "freelance-invoice-kit")
    href = f"/account/member-downloads/{kit.id}"
    assert (await client.get(href)).status_code == 200

    async with runtime.db() as db:
        row = await db.get(m.Subscription, subscription.id)
        assert row is not None
        row.status = m.SubscriptionStatus.CANCELED.value
        await db.commit()
    refused = await client.get(href)
    assert refused.status_code == 403
    assert "<h1>Your membership has ended</h1>" in refused.text and "Renew your membership" in refused.text
    assert "attachment" not in refused.headers.get("content-disposition", "")
    listing = await client.get("/account/member-downloads")
    assert "you don't have an active one" in listing.text and href not in listing.text


async def test_member_downloads_for_non_members_and_visitors(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory, settings: Settings
) -> None:
    plans = await seeded_plans(runtime, factory, settings)
    handbook = next(p for p in plans["community"].downloads if p.slug == "remote-team-handbook")
    href = f"/account/member-downloads/{handbook.id}"
    for path in ("/account/member-downloads", href):
        response = await client.get(path)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/login?next_url=")

    await factory.user(email="visitor@example.com")
    await sign_in(client, "visitor@example.com")
    refused = await client.get(href)
    assert refused.status_code == 403 and "This download is for members" in refused.text
    overview = await client.get("/account")
    assert 'href="/account/member-downloads"' in overview.text


# --- the command line -----------------------------------------------------------------------------------------


def test_plans_sync_command_after_the_demo_seed(migrated: Settings, runtime: Runtime) -> None:
    # `runtime` empties the database and the emulator first.
    from click.testing import CliRunner

    from app.cli.commands import seed_command
    from app.cli.plans import sync_command

    runner = CliRunner()
    assert runner.invoke(seed_command, []).exit_code == 0
    first = runner.invoke(sync_command, [])
    assert first.exit_code == 0, first.output
    assert "Community: product prod_" in first.output and "4 prices created, 0 archived" in first.output
    assert "Studio: product prod_" in first.output and "2 prices created" in first.output
    again = runner.invoke(sync_command, ["--slug", "resident"])
    assert again.exit_code == 0 and "Resident: product prod_" in again.output
    assert "0 prices created, 0 archived" in again.output
    missing = runner.invoke(sync_command, ["--slug", "nope"])
    assert missing.exit_code == 1 and "No plan with slug 'nope'" in missing.output
