"""The full re-sync with Stripe: a shop that missed every webhook converges to Stripe's state, once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from uuid import UUID

import httpx
import pytest
from click.testing import CliRunner
from saq import Queue
from saq.worker import Worker
from sqlalchemy import func, select

from app.cli.stripe_sync import sync_command
from app.db import models as m
from app.domain.plans.stripe_sync import PlanStripeSync
from app.domain.sync.services import SyncEngine, SyncOptions, request_cancel, start_sync
from app.lib.runtime import Runtime
from app.lib.settings import Settings
from app.lib.stripe_gateway import build_stripe_client
from app.stripe_emulator.resources.balance_transactions import card_fee
from app.stripe_emulator.server import EmulatorServer
from tests.conftest import Factory
from tests.helpers import job_finished, post_form, sign_in, text_of
from tests.integration.purchase_support import add_to_cart, confirm, digital_product, open_pay_page, place_order

ADMIN = "admin@example.com"


async def control(emulator: EmulatorServer, path: str, payload: dict[str, Any] | None = None) -> Any:
    return await asyncio.to_thread(emulator.control, path, payload)


async def guest_order(
    new_browser: Callable[..., httpx.AsyncClient], product: m.Product, email: str
) -> tuple[UUID, str]:
    """A guest's order with its PaymentIntent (the pay page creates it), in a browser of its own."""
    async with new_browser() as browser:
        await add_to_cart(browser, product)
        order_id = await place_order(browser, email=email)
        return order_id, await open_pay_page(browser, order_id)


async def counts(runtime: Runtime, model: Any, *where: Any) -> int:
    async with runtime.db() as db:
        return int(await db.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def order(runtime: Runtime, order_id: UUID) -> m.Order:
    async with runtime.db() as db:
        row = await db.get(m.Order, order_id)
        assert row is not None
        return row


async def make_plan(runtime: Runtime) -> m.Plan:
    async with runtime.db() as db:
        hours = m.CreditType(code="room-hours", name="Meeting-room hours", unit="hours")
        db.add(hours)
        await db.flush()
        plan = m.Plan(name="Resident", slug="resident", description="Desk and room hours")
        plan.prices = [m.PlanPrice(interval="month", amount=4900, currency="CAD")]
        plan.credits = [m.PlanCredit(credit_type_id=hours.id, amount=10)]
        db.add(plan)
        await db.commit()
        await PlanStripeSync(db, runtime.stripe).ensure(plan)
        return plan


async def admin_sync_now(client: httpx.AsyncClient, queue: Queue, data: dict[str, str] | None = None) -> UUID:
    response = await post_form(client, "/admin/sync", data or {})
    assert response.status_code == 303, response.text
    run_id = UUID(response.headers["location"].rsplit("/", 1)[1])
    await job_finished(queue, f"sync:{run_id}", timeout=120)
    return run_id


async def load_run(runtime: Runtime, run_id: UUID) -> m.SyncRun:
    async with runtime.db() as db:
        run = await db.get(m.SyncRun, run_id)
        assert run is not None
        return run


def totals(run: m.SyncRun, key: str) -> int:
    return sum(int(c.get(key) or 0) for c in run.counts.values())


async def test_a_shop_that_missed_every_webhook_converges_to_stripe_once(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
    new_browser: Callable[..., httpx.AsyncClient],
) -> None:
    # Webhooks are lost for the whole story: only the sync can tell the shop what happened.
    await control(stripe_emulator, "chaos", {"drop_rate": 1.0})
    await factory.user(email=ADMIN, role="admin")
    product = await digital_product(factory, settings.storage_dir, name="Field Guide", price=1000)
    paid_id, paid_pi = await guest_order(new_browser, product, "paid@example.com")
    pending_id, _ = await guest_order(new_browser, product, "pending@example.com")
    partial_id, partial_pi = await guest_order(new_browser, product, "partial@example.com")
    full_id, full_pi = await guest_order(new_browser, product, "full@example.com")
    for intent in (paid_pi, partial_pi, full_pi):
        await confirm(runtime, intent)
    await control(stripe_emulator, f"payment_intents/{partial_pi}/refund", {"amount": 500})
    await control(stripe_emulator, f"payment_intents/{full_pi}/refund", {})
    # A member who subscribed while the shop was down: a Stripe customer with their e-mail, not linked here.
    plan = await make_plan(runtime)
    member = await factory.user(email="member@example.com")
    customer = await runtime.stripe.v1.customers.create_async({"email": "member@example.com"})
    card = await runtime.stripe.v1.payment_methods.attach_async("pm_card_visa", {"customer": customer.id})
    price_id = plan.prices[0].stripe_price_id
    assert price_id
    sub = await runtime.stripe.v1.subscriptions.create_async(
        {"customer": customer.id, "items": [{"price": price_id}], "default_payment_method": card.id}
    )
    assert sub.status == "active"
    # And history the shop never knew (customers without accounts here): counted as skipped, nothing invented.
    await control(stripe_emulator, "seed_history", {"customers": 3, "invoices_per_customer": 2})
    assert (await order(runtime, paid_id)).status == "pending"

    await sign_in(client, ADMIN)
    run_id = await admin_sync_now(client, queue)

    run = await load_run(runtime, run_id)
    assert run.status == "succeeded", run.errors
    assert run.errors == []
    paid, pending = await order(runtime, paid_id), await order(runtime, pending_id)
    partial, full = await order(runtime, partial_id), await order(runtime, full_id)
    assert (paid.status, pending.status, partial.status, full.status) == (
        "paid",
        "pending",
        "partially_refunded",
        "refunded",
    )
    assert partial.amount_refunded == 500 and full.amount_refunded == full.total
    assert f"order #{paid.number} paid in Stripe, pending here — fixed" in run.divergences
    assert await counts(runtime, m.Payment, m.Payment.status == "succeeded") == 3
    # Stripe's fee and net on each payment, though no charge.succeeded ever arrived (issue #16 item 7).
    async with runtime.db() as db:
        payments = list(await db.scalars(select(m.Payment).where(m.Payment.status == "succeeded")))
    assert sorted((p.fee, p.net) for p in payments) == [
        (card_fee(p.amount), p.amount - card_fee(p.amount)) for p in payments
    ]
    assert await counts(runtime, m.Refund) == 2
    # Entitlements granted exactly once per paid order; the fully refunded one is revoked.
    assert await counts(runtime, m.Entitlement) == 3
    assert await counts(runtime, m.Entitlement, m.Entitlement.revoked_at.is_not(None)) == 1
    # The member: linked by e-mail, subscription and its paid invoice mirrored, the cycle's credits once.
    async with runtime.db() as db:
        linked = await db.get(m.User, member.id)
        assert linked is not None and linked.stripe_customer_id == customer.id
        local_sub = await db.scalar(select(m.Subscription).where(m.Subscription.stripe_subscription_id == sub.id))
        assert local_sub is not None and local_sub.status == "active" and local_sub.plan_id == plan.id
        invoice = await db.scalar(select(m.Invoice).where(m.Invoice.subscription_id == local_sub.id))
        assert invoice is not None and invoice.status == "paid"
        credits = await db.scalar(select(func.sum(m.CreditEntry.amount)).where(m.CreditEntry.user_id == member.id))
        assert credits == 10
    # The customers never got their receipts or refund notices: the sync sends them, once.
    receipts = await counts(runtime, m.EmailMessage, m.EmailMessage.kind == "receipt")
    notices = await counts(runtime, m.EmailMessage, m.EmailMessage.kind == "refund")
    assert (receipts, notices) == (3, 2)
    customers = run.counts["customers"]
    assert customers["skipped"] >= 3  # the history's customers have no account here
    assert run.progress["invoices"]["done"] is True

    # The report, as the admin reads it.
    page = text_of((await client.get(f"/admin/sync/runs/{run_id}")).text)
    assert "succeeded" in page and f"order #{paid.number} paid in Stripe, pending here — fixed" in page

    # A second sync finds nothing to do and sends nothing.
    again = await load_run(runtime, await admin_sync_now(client, queue))
    assert again.status == "succeeded"
    assert totals(again, "unchanged") == totals(again, "unchanged") + totals(again, "created") + totals(
        again, "updated"
    )
    assert totals(again, "created") == totals(again, "updated") == totals(again, "failed") == 0
    assert again.divergences == []
    assert await counts(runtime, m.EmailMessage, m.EmailMessage.kind.in_(["receipt", "refund"])) == 5
    assert await counts(runtime, m.Entitlement) == 3
    async with runtime.db() as db:
        assert await db.scalar(select(func.sum(m.CreditEntry.amount))) == 10
    # Both presses of "Sync now" are in the audit log.
    assert await counts(runtime, m.AuditEntry, m.AuditEntry.action == "sync.start") == 2


def engine(runtime: Runtime, run_id: UUID, **kwargs: Any) -> SyncEngine:
    return SyncEngine(
        db_factory=runtime.db,
        stripe=build_stripe_client(runtime.settings.stripe, max_concurrency=2),
        redis=runtime.redis,
        settings=runtime.settings,
        queue=None,
        run_id=run_id,
        backoff_base=0.05,
        **kwargs,
    )


async def test_an_interrupted_sync_resumes_from_its_last_page(
    runtime: Runtime, stripe_emulator: EmulatorServer
) -> None:
    await control(stripe_emulator, "seed_history", {"customers": 250, "invoices_per_customer": 1})
    options = SyncOptions(only=("customers", "invoices"))
    stripe_customers = 251  # the history's 250 and the template it is cloned from
    stripe_invoices = 251

    # 1. Cancelled by an admin after the second page of customers.
    first = await _start(runtime, options)

    async def cancel_after_two_pages(run: m.SyncRun) -> None:
        if run.progress["customers"]["pages"] == 2:
            async with runtime.db() as db:
                await request_cancel(db, first.id)

    done = await engine(runtime, first.id, on_page=cancel_after_two_pages).run()
    assert done.status == "cancelled"
    assert done.progress["customers"] == {**done.progress["customers"], "objects": 200, "pages": 2, "done": False}

    # 2. The next run continues from page 3; it is then killed (the task cancelled, as a stopping worker does).
    second = await _start(runtime, options)
    assert second.resumed_from_id == first.id
    reached = asyncio.Event()

    async def note_invoices(run: m.SyncRun) -> None:
        if run.progress.get("invoices", {}).get("pages") == 1:
            reached.set()

    task = asyncio.create_task(engine(runtime, second.id, on_page=note_invoices).run())
    await asyncio.wait_for(reached.wait(), 60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    killed = await load_run(runtime, second.id)
    assert killed.status == "failed" and "Interrupted" in killed.errors[-1]
    assert killed.progress["customers"]["objects"] == stripe_customers  # pages 1-2 were not read again

    # 3. A third run finishes the job with exact totals.
    third = await _start(runtime, options)
    assert third.resumed_from_id == second.id
    finished = await engine(runtime, third.id).run()
    assert finished.status == "succeeded", finished.errors
    assert finished.progress["customers"]["objects"] == stripe_customers
    assert finished.progress["invoices"]["objects"] == stripe_invoices
    handled = sum(finished.counts["customers"].values())
    assert handled == stripe_customers
    assert await counts(runtime, m.StripeObject) == stripe_customers + stripe_invoices


async def _start(runtime: Runtime, options: SyncOptions) -> m.SyncRun:
    async with runtime.db() as db:
        return await start_sync(db, runtime.redis, trigger=m.SyncTrigger.CLI, options=options)


async def test_rate_limits_are_backed_off_and_one_sync_runs_at_a_time(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    stripe_emulator: EmulatorServer,
) -> None:
    await control(stripe_emulator, "seed_history", {"customers": 120, "invoices_per_customer": 1})
    # Every third request is refused with Stripe's 429, and Stripe says nothing about retrying: our backoff copes.
    await control(stripe_emulator, "chaos", {"rate_limit_every": 3, "rate_limit_should_retry": ""})
    await asyncio.to_thread(stripe_emulator.control, "stats?reset=1", None, "GET")
    run = await _start(runtime, SyncOptions(only=("customers", "invoices", "payment_intents")))

    # While it holds the lock, "Sync now" is refused.
    await factory.user(email=ADMIN, role="admin")
    await sign_in(client, ADMIN)
    refused = await post_form(client, "/admin/sync", {}, htmx=True)
    assert refused.status_code == 409
    assert "A sync is already running" in text_of(refused.text)

    finished = await engine(runtime, run.id).run()
    assert finished.status == "succeeded", finished.errors
    assert finished.progress["customers"]["objects"] == 121
    stats = await asyncio.to_thread(stripe_emulator.control, "stats", None, "GET")
    assert stats["rate_limited"] > 0
    assert stats["max_in_flight"] <= 2


def test_the_cli_syncs_with_a_progress_line_and_fails_loudly(
    migrated: Settings, runtime: Runtime, stripe_emulator: EmulatorServer
) -> None:
    stripe_emulator.control("seed_history", {"customers": 5})
    runner = CliRunner()
    result = runner.invoke(sync_command, ["--only", "customers,products"])
    assert result.exit_code == 0, result.output
    assert "Customers: 6 objects, page 1" in result.output
    assert "Sync succeeded: 7 objects" in result.output  # 6 customers and the history's product
    bad = runner.invoke(sync_command, ["--only", "customers,widgets"])
    assert bad.exit_code == 2
    assert "Unknown: widgets" in bad.output
    # A Stripe that refuses every request: the sync fails, and says so with a non-zero exit code.
    stripe_emulator.chaos(rate_limit_rate=1.0, rate_limit_should_retry="false")
    failed = runner.invoke(sync_command, ["--only", "products", "--no-resume"])
    stripe_emulator.chaos()
    assert failed.exit_code == 1
    assert "Sync failed" in failed.output


async def test_only_admins_reach_the_sync_page(
    client: httpx.AsyncClient, factory: Factory, new_browser: Callable[..., httpx.AsyncClient]
) -> None:
    for role in ("support", "customer"):
        await factory.user(email=f"{role}@example.com", role=role)
        async with new_browser() as browser:
            await sign_in(browser, f"{role}@example.com")
            assert (await browser.get("/admin/sync")).status_code == 403
            assert (await post_form(browser, "/admin/sync", {})).status_code == 403
    await factory.user(email=ADMIN, role="admin")
    await sign_in(client, ADMIN)
    page = await client.get("/admin/sync")
    assert page.status_code == 200
    assert "Sync now" in page.text and "Stripe sync" in page.text
    invalid = await post_form(client, "/admin/sync", {"since": "yesterday"}, htmx=True)
    assert invalid.status_code == 422
    assert "Enter a date as YYYY-MM-DD." in text_of(invalid.text)


async def test_an_admin_cancels_a_running_sync(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, stripe_emulator: EmulatorServer
) -> None:
    await control(stripe_emulator, "seed_history", {"customers": 150})
    run = await _start(runtime, SyncOptions(only=("customers",)))
    await factory.user(email=ADMIN, role="admin")
    await sign_in(client, ADMIN)
    page = await client.get(f"/admin/sync/runs/{run.id}", headers={"HX-Request": "true"})
    assert page.status_code == 200 and "<html" not in page.text
    assert 'hx-trigger="every 1s"' in page.text  # the progress fragment polls while the run is running
    response = await post_form(client, f"/admin/sync/runs/{run.id}/cancel", {})
    assert response.status_code == 303
    finished = await engine(runtime, run.id).run()
    assert finished.status == "cancelled"
    assert finished.progress["customers"]["pages"] == 1  # stopped after the page it was on
    assert await counts(runtime, m.AuditEntry, m.AuditEntry.action == "sync.cancel") == 1
    report = await client.get(f"/admin/sync/runs/{run.id}", headers={"HX-Request": "true"})
    assert "every 1s" not in report.text and "continues from the last completed page" in text_of(report.text)
