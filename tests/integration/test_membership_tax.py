"""Memberships are charged sales tax (#13 item 6): the billing province picks Stripe Tax Rates kept from the same
dated table as the orders'; /pricing, the subscribe step and the proration preview show the tax; mirrored invoices
carry it; a change of province applies from the next invoice; MRR never counts it. Both databases."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import date
from typing import Any
from uuid import UUID

import httpx
import pytest
from saq import Queue, Worker
from sqlalchemy import select

from app.db import models as m
from app.domain.plans.tax_rates import METADATA_KEY, TaxRateSync
from app.domain.subscriptions.services import SubscriptionService
from app.lib.runtime import Runtime
from app.stripe_emulator.server import EmulatorServer
from tests.conftest import Factory, SetLimits
from tests.helpers import post_form, sign_in, text_of
from tests.integration.purchase_support import settle
from tests.integration.race_support import rendezvous_before_insert
from tests.integration.test_promo_codes import stripe_backed_code
from tests.integration.test_subscriptions import DAY, load_sub, make_plan, pay_first_invoice, subscribe

pytestmark = pytest.mark.usefixtures("app_server")

# $49.00 a month: GST 5 % = 2.45, QST 9.975 % = 4.88775 -> 4.89 (half-up, per line and rate), HST ON 13 % = 6.37.
QC_BREAKDOWN = [
    {"code": "GST", "label": "GST 5%", "rate": "0.05", "amount": 245},
    {"code": "QST", "label": "QST 9.975%", "rate": "0.09975", "amount": 489},
]
ON_BREAKDOWN = [{"code": "HST", "label": "HST 13%", "rate": "0.13", "amount": 637}]


async def invoices_of(runtime: Runtime, user_id: UUID) -> list[m.Invoice]:
    async with runtime.db() as db:
        return list(
            await db.scalars(select(m.Invoice).where(m.Invoice.user_id == user_id).order_by(m.Invoice.stripe_created))
        )


async def our_tax_rates_at_stripe(runtime: Runtime) -> list[Any]:
    rates = await runtime.stripe.v1.tax_rates.list_async({"limit": 100})
    return [rate for rate in rates.data if METADATA_KEY in (rate.metadata or {})]


async def member_on_a_clock(runtime: Runtime, factory: Factory, client: httpx.AsyncClient, email: str) -> str:
    """A signed-in member whose Stripe customer lives on a test clock (so the test can reach the next invoice)."""
    user = await factory.user(email=email)
    clock = await runtime.stripe.v1.test_helpers.test_clocks.create_async({"frozen_time": int(time.time())})
    customer = await runtime.stripe.v1.customers.create_async({"email": email, "test_clock": clock.id})
    async with runtime.db() as db:
        row = await db.get(m.User, user.id)
        assert row is not None
        row.stripe_customer_id = customer.id
        await db.commit()
    await sign_in(client, email)
    return clock.id


async def test_a_quebec_member_pays_gst_and_qst_on_the_plan_price_and_mrr_excludes_it(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
) -> None:
    plan = await make_plan(runtime)
    user = await factory.user(email="quebec@example.com")
    await sign_in(client, "quebec@example.com")

    # The subscribe step shows the subtotal, each component and the total for the province chosen.
    step = text_of((await client.get("/subscribe/resident?interval=month&province=QC")).text)
    assert "Subtotal $49.00 CAD GST 5% $2.45 CAD QST 9.975% $4.89 CAD Total per month $56.34 CAD" in step
    totals = await client.get("/subscribe/resident?interval=month&province=QC", headers={"HX-Request": "true"})
    assert 'id="subscribe-totals"' in totals.text and "<html" not in totals.text

    sub_id = await subscribe(client, province="QC")
    await pay_first_invoice(client, runtime, sub_id)
    await settle(stripe_emulator, queue, runtime)

    assert (await load_sub(runtime, sub_id)).status == "active"
    [invoice] = await invoices_of(runtime, user.id)
    assert (invoice.status, invoice.amount_paid, invoice.tax) == ("paid", 4900 + 245 + 489, 734)
    assert invoice.tax_breakdown == QC_BREAKDOWN
    # The province is kept on our row and on the Stripe customer's address.
    async with runtime.db() as db:
        row = await db.get(m.User, user.id)
        assert row is not None and row.billing_province == "QC"
        assert row.stripe_customer_id is not None
    customer = await runtime.stripe.v1.customers.retrieve_async(row.stripe_customer_id)
    assert (customer.address.country, customer.address.state) == ("CA", "QC")  # type: ignore[union-attr]

    # The member sees the tax on the invoice, and on /pricing without choosing the province again.
    page = text_of((await client.get("/account/subscription")).text)
    assert "GST 5% $2.45 CAD QST 9.975% $4.89 CAD $56.34 CAD" in page
    pricing = text_of((await client.get("/pricing?interval=year")).text)
    assert "+ GST 5% $24.50 CAD + QST 9.975% $48.88 CAD = $563.38 CAD / year" in pricing

    # The proration preview of a switch to yearly: Stripe's own tax lines, the Quebec ones.
    yearly = next(p for p in plan.prices if p.interval == "year")
    preview = text_of(
        (await client.get(f"/account/subscription/preview?price_id={yearly.id}", headers={"HX-Request": "true"})).text
    )
    match = re.search(r"Subtotal \$([\d,.]+) CAD GST 5% \$([\d,.]+) CAD QST 9.975% \$([\d,.]+) CAD Due now", preview)
    assert match, preview
    subtotal, gst, qst = (round(float(g.replace(",", "")) * 100) for g in match.groups())
    # Stripe rounds per line (the new year, the unused month's credit), so within a cent of the whole's.
    assert abs(gst - subtotal * 0.05) <= 1 and abs(qst - subtotal * 0.09975) <= 1 and gst > 0

    # MRR is the plan's price: the tax is collected for the state, never revenue.
    async with runtime.db() as db:
        moves = list(await db.scalars(select(m.MrrMovement).where(m.MrrMovement.user_id == user.id)))
    assert [(move.kind, move.mrr_after) for move in moves] == [("new", 4900)]
    assert (await load_sub(runtime, sub_id)).status == "active"


async def test_an_ontario_member_pays_hst_13_percent(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
) -> None:
    await make_plan(runtime)
    # A visitor picks a province on /pricing (HTMX swaps the plans, the link keeps working without it).
    fragment = await client.get("/pricing?interval=month&province=ON", headers={"HX-Request": "true"})
    assert 'id="pricing-plans"' in fragment.text and "<html" not in fragment.text
    assert "+ HST 13% $6.37 CAD = $55.37 CAD / month" in text_of(fragment.text)
    assert "Plus sales tax" in text_of((await client.get("/pricing")).text)

    user = await factory.user(email="ontario@example.com")
    await sign_in(client, "ontario@example.com")
    sub_id = await subscribe(client, province="ON")
    await pay_first_invoice(client, runtime, sub_id)
    await settle(stripe_emulator, queue, runtime)
    [invoice] = await invoices_of(runtime, user.id)
    assert (invoice.amount_paid, invoice.tax, invoice.tax_breakdown) == (5537, 637, ON_BREAKDOWN)
    remote = await runtime.stripe.v1.subscriptions.retrieve_async(
        (await load_sub(runtime, sub_id)).stripe_subscription_id
    )
    assert [(r.display_name, r.percentage, r.inclusive, r.state) for r in remote.default_tax_rates or []] == [
        ("HST", 13, False, "ON")
    ]


async def test_subscribing_without_a_province_shows_the_form_again_with_the_error(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    await make_plan(runtime)
    await factory.user(email="noprovince@example.com")
    await sign_in(client, "noprovince@example.com")
    page = await client.get("/subscribe/resident?interval=month")
    assert '<label for="f-province">' in page.text
    attempt = re.search(r'name="attempt" value="([^"]+)"', page.text)
    assert attempt
    for province in ("", "ZZ"):
        refused = await post_form(
            client, "/subscribe/resident", {"interval": "month", "attempt": attempt.group(1), "province": province}
        )
        assert refused.status_code == 422
        assert "Choose the province or territory of your billing address." in text_of(refused.text)
        assert 'aria-invalid="true"' in refused.text
    async with runtime.db() as db:
        assert await db.scalar(select(m.Subscription.id)) is None
    assert (await runtime.stripe.v1.subscriptions.list_async({"limit": 1})).data == []


async def test_a_change_of_province_applies_from_the_next_invoice_only(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
) -> None:
    await make_plan(runtime)
    clock = await member_on_a_clock(runtime, factory, client, "mover@example.com")
    sub_id = await subscribe(client, province="QC")
    await pay_first_invoice(client, runtime, sub_id)
    await settle(stripe_emulator, queue, runtime)
    sub = await load_sub(runtime, sub_id)
    assert sub.user_id is not None

    # An unknown province is refused in place; a known one is saved.
    refused = await post_form(client, "/account/subscription/province", {"province": "XX"})
    assert refused.status_code == 422
    assert "Choose the province or territory" in text_of(refused.text)
    moved = await post_form(client, "/account/subscription/province", {"province": "ON"})
    assert moved.status_code == 303
    await settle(stripe_emulator, queue, runtime)
    # No proration: the period already invoiced keeps its Quebec tax, and nothing new is billed now.
    [first] = await invoices_of(runtime, sub.user_id)
    assert (first.tax, first.tax_breakdown) == (734, QC_BREAKDOWN)
    async with runtime.db() as db:
        user = await db.get(m.User, sub.user_id)
        assert user is not None and user.billing_province == "ON"

    await runtime.stripe.v1.test_helpers.test_clocks.advance_async(clock, {"frozen_time": int(time.time()) + 32 * DAY})
    await settle(stripe_emulator, queue, runtime)
    first_again, renewal = await invoices_of(runtime, sub.user_id)
    assert (first_again.tax, first_again.amount_paid) == (734, 5634)
    assert (renewal.billing_reason, renewal.status) == ("subscription_cycle", "paid")
    assert (renewal.amount_paid, renewal.tax, renewal.tax_breakdown) == (5537, 637, ON_BREAKDOWN)
    # MRR still the plan's price through the move.
    async with runtime.db() as db:
        moves = list(await db.scalars(select(m.MrrMovement).where(m.MrrMovement.user_id == sub.user_id)))
    assert [move.mrr_after for move in moves] == [4900]


async def test_ensure_tax_rates_is_idempotent_and_two_runs_at_once_create_each_rate_once(runtime: Runtime) -> None:
    async def run() -> Any:
        async with runtime.db() as db:
            return await TaxRateSync(db, runtime.stripe).ensure()

    # Catalogue 9: both runs find nothing, create with the same idempotency key (one Tax Rate each at Stripe) and
    # reach the same INSERT together (one row each).
    with rendezvous_before_insert(runtime, "stripe_tax_rates"):
        first, second = await asyncio.gather(run(), run())
    assert first.archived == second.archived == 0
    ours = await our_tax_rates_at_stripe(runtime)
    # 13 provinces and territories: GST alone in 4, HST in 5, GST and a PST/QST/RST in 4 -> 17 rates, each once.
    assert len(ours) == 17
    assert len({rate.metadata[METADATA_KEY] for rate in ours}) == 17
    async with runtime.db() as db:
        rows = list(await db.scalars(select(m.StripeTaxRate)))
    assert len(rows) == 17
    assert {row.stripe_tax_rate_id for row in rows} == {rate.id for rate in ours}
    qst = next(rate for rate in ours if rate.display_name == "QST")
    assert (qst.percentage, qst.inclusive, qst.country, qst.state, qst.jurisdiction) == (
        9.975,
        False,
        "CA",
        "QC",
        "Quebec",
    )

    again = await run()
    assert (again.created, again.archived, again.linked) == (0, 0, 0)
    assert len(await our_tax_rates_at_stripe(runtime)) == 17

    # A link we lost (a restored database) is found again by its metadata key, not duplicated.
    async with runtime.db() as db:
        for row in await db.scalars(select(m.StripeTaxRate)):
            await db.delete(row)
        await db.commit()
    relinked = await run()
    assert (relinked.created, relinked.linked) == (0, 17)
    assert len(await our_tax_rates_at_stripe(runtime)) == 17


async def test_a_rate_change_in_the_table_archives_the_old_tax_rate_and_creates_the_new_one(runtime: Runtime) -> None:
    async with runtime.db() as db:
        await TaxRateSync(db, runtime.stripe).ensure(on=date(2025, 3, 1))  # Nova Scotia HST 15 %
    async with runtime.db() as db:
        changed = await TaxRateSync(db, runtime.stripe).ensure(on=date(2025, 4, 1))  # 14 % from April 2025
    assert (changed.created, changed.archived) == (1, 1)
    nova_scotia = [rate for rate in await our_tax_rates_at_stripe(runtime) if rate.state == "NS"]
    assert sorted((rate.percentage, rate.active) for rate in nova_scotia) == [(14, True), (15, False)]
    async with runtime.db() as db:
        rows = list(await db.scalars(select(m.StripeTaxRate).where(m.StripeTaxRate.province == "NS")))
    assert sorted((row.rate, row.active) for row in rows) == [("0.14", True), ("0.15", False)]


async def test_the_subscribe_step_taxes_the_discounted_first_invoice_and_a_new_province_is_no_promo_guess(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, rate_limits: SetLimits
) -> None:
    """Choosing another province re-quotes the applied code for the totals: that is not a guess the promo limiter
    should count (one try per session here), while a new code still is."""
    rate_limits(promo_apply_session=(1, 600))
    plan = await make_plan(runtime)
    admin = await factory.user(email="boss@example.com", role="admin")
    await stripe_backed_code(runtime, admin, code="RESIDENT20", percent_off="20", plan_ids=[str(plan.id)])
    await factory.user(email="discounted@example.com")
    await sign_in(client, "discounted@example.com")

    applied = await client.get("/subscribe/resident?interval=month&code=RESIDENT20&province=QC")
    assert applied.status_code == 200
    # $39.20 after 20 % off: GST 1.96, QST 3.9102 -> 3.91.
    text = text_of(applied.text)
    assert "First invoice before tax $39.20 CAD GST 5% $1.96 CAD QST 9.975% $3.91 CAD First invoice $45.07 CAD" in text
    for province, total in (("ON", "$44.30 CAD"), ("QC", "$45.07 CAD")):
        totals = await client.get(
            f"/subscribe/resident?interval=month&code=RESIDENT20&province={province}", headers={"HX-Request": "true"}
        )
        assert totals.status_code == 200, totals.text
        assert f"First invoice {total}" in text_of(totals.text)
    guess = await client.get("/subscribe/resident?interval=month&code=OTHER", headers={"HX-Request": "true"})
    assert guess.status_code == 429


async def test_after_a_rate_change_the_members_subscriptions_take_the_new_rate_from_their_next_invoice(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
) -> None:
    await make_plan(runtime)
    await factory.user(email="halifax@example.com")
    await sign_in(client, "halifax@example.com")
    sub_id = await subscribe(client, province="NS")  # today's Nova Scotia HST: 14 %
    await pay_first_invoice(client, runtime, sub_id)
    await settle(stripe_emulator, queue, runtime)
    sub = await load_sub(runtime, sub_id)

    # The table as of a date with another rate (15 %, before April 2025): a rate change as `plans sync` sees one.
    async with runtime.db() as db:
        changed = await TaxRateSync(db, runtime.stripe).ensure(on=date(2025, 3, 1))
    assert changed.archived == 1
    async with runtime.db() as db:
        service = SubscriptionService(db, runtime.stripe)
        assert await service.apply_current_tax_rates(on=date(2025, 3, 1)) == 1
        assert await service.apply_current_tax_rates(on=date(2025, 3, 1)) == 0  # already on it
    remote = await runtime.stripe.v1.subscriptions.retrieve_async(sub.stripe_subscription_id)
    assert [(r.display_name, r.percentage, r.active) for r in remote.default_tax_rates or []] == [("HST", 15, True)]
    # Not re-billed now: the paid invoice is the only one.
    assert sub.user_id is not None
    [paid] = await invoices_of(runtime, sub.user_id)
    assert paid.tax_breakdown == [{"code": "HST", "label": "HST 14%", "rate": "0.14", "amount": 686}]
