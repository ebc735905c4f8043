"""The webhook event log in the back office: the table, one event, replay, mark ignored, health, backoff retries."""

from __future__ import annotations

import asyncio
import csv
import io
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
from saq import Queue, Worker
from saq.job import TERMINAL_STATUSES
from sqlalchemy import func, select, update

from app.db import models as m
from app.domain.cart.services import price_lines
from app.domain.checkout.services import BillingDetails, CheckoutService
from app.domain.payments.health import ALERT_CACHE_KEY
from app.domain.payments.jobs import retry_backoff, sweep_stripe_events
from app.domain.payments.webhooks import PROCESS_EVENT_JOB, WebhookIntake, enqueue_event_job, event_job_key
from app.lib.runtime import Runtime
from app.lib.settings import Settings
from app.stripe_emulator.server import EmulatorServer
from tests.conftest import Factory
from tests.helpers import job_finished, post_form, sign_in, text_of
from tests.integration.purchase_support import confirm, digital_product, settle

pytestmark = pytest.mark.usefixtures("app_server")


def made_up_event(event_type: str, *, object_id: str = "", created: int | None = None, **fields: Any) -> dict[str, Any]:
    suffix = uuid4().hex[:24]
    obj_type = event_type.rsplit(".", 1)[0].replace("customer.", "")
    return {
        "id": f"evt_test_{suffix}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": created or int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
        "data": {"object": {"id": object_id or f"pi_test_{suffix}", "object": obj_type, "metadata": {}, **fields}},
    }


async def store(runtime: Runtime, event: dict[str, Any], **row: Any) -> m.StripeEvent:
    """Store an event as the webhook intake does (no job), then set the row's outcome fields to what a test needs."""
    async with runtime.db() as db:
        assert (await WebhookIntake(db, queue=None, livemode=False).store(event)).stored
        if row:
            await db.execute(update(m.StripeEvent).where(m.StripeEvent.stripe_id == event["id"]).values(**row))
            await db.commit()
        stored = await db.scalar(select(m.StripeEvent).where(m.StripeEvent.stripe_id == event["id"]))
        assert stored is not None
        return stored


async def event_row(runtime: Runtime, stripe_id: str) -> m.StripeEvent:
    async with runtime.db() as db:
        row = await db.scalar(select(m.StripeEvent).where(m.StripeEvent.stripe_id == stripe_id))
        assert row is not None
        return row


async def wait_for_status(runtime: Runtime, stripe_id: str, status: str, timeout: float = 30) -> m.StripeEvent:
    """Poll the row (with a deadline) until the worker has brought it to ``status``."""
    deadline = time.monotonic() + timeout
    while True:
        row = await event_row(runtime, stripe_id)
        if row.status == status:
            return row
        assert time.monotonic() < deadline, f"{stripe_id} stayed {row.status} ({row.last_error})"
        await asyncio.sleep(0.1)  # a poll interval, not a synchronisation


async def saq_done(queue: Queue, key: str, timeout: float = 120) -> None:
    """Poll (with a deadline) until SAQ holds no waiting, scheduled or running job under ``key``."""
    deadline = time.monotonic() + timeout
    while (job := await queue.job(key)) is not None and job.status not in TERMINAL_STATUSES:
        assert time.monotonic() < deadline, f"{key} still {job.status}"
        await asyncio.sleep(0.1)  # a poll interval, not a synchronisation


async def admin(client: httpx.AsyncClient, factory: Factory) -> None:
    await factory.user(email="admin@example.com", role="admin")
    await sign_in(client, "admin@example.com")


async def audit_rows(runtime: Runtime, action: str) -> list[m.AuditEntry]:
    async with runtime.db() as db:
        return list(await db.scalars(select(m.AuditEntry).where(m.AuditEntry.action == action)))


async def pending_order(runtime: Runtime, factory: Factory, settings: Settings, email: str) -> m.Order:
    """A guest order as the checkout form makes it (lines, tax), not yet linked to any PaymentIntent."""
    product = await digital_product(factory, settings.storage_dir, price=1500)
    billing = BillingDetails(email=email, name="Pat Payer", country="CA", region="AB", postal_code="T2P 1J9")
    async with runtime.db() as db:
        order, _ = await CheckoutService(db, runtime.stripe).place_order(
            cart=price_lines([(product, 1)]), billing=billing, user=None, checkout_token=uuid4().hex
        )
        return order


async def receipts_to(runtime: Runtime, email: str) -> int:
    async with runtime.db() as db:
        count = await db.scalar(
            select(func.count())
            .select_from(m.EmailMessage)
            .where(m.EmailMessage.to_address == email, m.EmailMessage.kind == "receipt")
        )
        return int(count or 0)


# --- the table ----------------------------------------------------------------------------------------------


async def test_the_log_filters_searches_sorts_pages_and_exports(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    base = int(time.time())
    for i in range(52):
        await store(
            runtime, made_up_event("payment_intent.succeeded", object_id=f"pi_bulk_{i:03d}"), status="processed"
        )
    failed = await store(
        runtime,
        made_up_event("invoice.paid", object_id="in_broken_1"),
        status="failed",
        attempts=3,
        last_error="InvalidRequestError: No such invoice: 'in_broken_1'" + " and more" * 20,
    )
    await store(runtime, made_up_event("customer.created", object_id="cus_quiet", created=base))
    await admin(client, factory)

    page = await client.get("/admin/webhooks")
    assert page.status_code == 200, page.text[-2000:]
    assert 'id="admin-webhooks"' in page.text and 'id="webhook-health"' in page.text
    assert "Page 1 of 2 · 54 events" in text_of(page.text)
    assert '<option value="invoice.paid">' in page.text  # the type filter offers the stored types
    assert "Replay all 1 failed event matching this filter" in page.text
    assert 'hx-confirm="Replay 1 failed event matching this filter?"' in page.text

    only_failed = await client.get("/admin/webhooks?status=failed", headers={"HX-Request": "true"})
    assert "<html" not in only_failed.text and only_failed.headers["vary"].startswith("HX-Request")
    text = text_of(only_failed.text)
    assert "in_broken_1" in text and "pi_bulk_" not in text
    assert "InvalidRequestError: No such invoice" in text and "and more and more" in text
    assert text.count(" and more") < 10  # the last error is truncated in the table
    assert 'hx-swap-oob="true"' in only_failed.text  # the replay-all button follows the filter

    by_type = text_of((await client.get("/admin/webhooks?type=customer.created", headers={"HX-Request": "true"})).text)
    assert "cus_quiet" in by_type and "pi_bulk_" not in by_type
    by_object = text_of((await client.get("/admin/webhooks?q=pi_bulk_007", headers={"HX-Request": "true"})).text)
    assert "pi_bulk_007" in by_object and "pi_bulk_008" not in by_object
    by_event = text_of((await client.get(f"/admin/webhooks?q={failed.stripe_id}", headers={"HX-Request": "true"})).text)
    assert "in_broken_1" in by_event and "pi_bulk_" not in by_event

    by_attempts = text_of((await client.get("/admin/webhooks?sort=-attempts", headers={"HX-Request": "true"})).text)
    assert by_attempts.index("in_broken_1") < by_attempts.index("pi_bulk_")
    second = text_of((await client.get("/admin/webhooks?page=2", headers={"HX-Request": "true"})).text)
    assert "Page 2 of 2" in second

    export = await client.get("/admin/webhooks/export.csv?status=processed&type=payment_intent.succeeded")
    assert export.status_code == 200
    assert export.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert len(rows) == 52
    assert {r["status"] for r in rows} == {"processed"}
    assert rows[0]["object_id"].startswith("pi_bulk_")


# --- one event ----------------------------------------------------------------------------------------------


async def test_detail_shows_the_payload_as_text_and_the_order_it_touched(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
) -> None:
    order = await pending_order(runtime, factory, settings, "script@example.com")
    intent = await runtime.stripe.v1.payment_intents.create_async(
        {
            "amount": order.total,
            "currency": order.currency.lower(),
            "metadata": {"order_id": str(order.id), "note": "<script>alert('x')</script>"},
        }
    )
    async with runtime.db() as db:
        await db.execute(update(m.Order).where(m.Order.id == order.id).values(payment_intent_id=intent.id))
        await db.commit()
    await confirm(runtime, intent.id)
    await settle(stripe_emulator, queue, runtime)
    async with runtime.db() as db:
        succeeded = await db.scalar(select(m.StripeEvent).where(m.StripeEvent.type == "payment_intent.succeeded"))
    assert succeeded is not None and succeeded.status == "processed"
    await admin(client, factory)

    page = await client.get(f"/admin/webhooks/{succeeded.id}")
    assert page.status_code == 200
    assert "<script>alert(" not in page.text
    assert "&lt;script&gt;alert(" in page.text
    assert '"type": "payment_intent.succeeded"' in page.text.replace("&#34;", '"')  # pretty-printed JSON
    assert f'href="/admin/orders/{order.id}"' in page.text  # the order it paid
    assert order.display_number in text_of(page.text)
    assert (await client.get(f"/admin/webhooks/{UUID(int=0)}")).status_code == 404


# --- replay and ignore --------------------------------------------------------------------------------------


async def test_a_failed_event_replayed_after_the_cause_is_fixed_is_processed_once(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
) -> None:
    # Stripe's own deliveries are dropped: the event is stored as the intake stores it and given one attempt, as
    # the backoff sweeper gives a failed event, so no retry of SAQ's is left to race the admin's replay (waiting
    # out the webhook job's six attempts took half a minute).
    await asyncio.to_thread(stripe_emulator.chaos, drop_rate=1.0)
    # A PaymentIntent for our order, paid at Stripe before the order carries its id (the link comes afterwards,
    # as after a database restore): the handler fails for real, since no order is linked to it.
    order = await pending_order(runtime, factory, settings, "late@example.com")
    intent = await runtime.stripe.v1.payment_intents.create_async(
        {"amount": order.total, "currency": order.currency.lower(), "metadata": {"order_id": str(order.id)}}
    )
    await confirm(runtime, intent.id)
    listing = await runtime.stripe.v1.events.list_async({"type": "payment_intent.succeeded"})
    [paid] = [e.to_dict() for e in listing.data if e.data.object.id == intent.id]
    event = await store(runtime, paid)
    assert await enqueue_event_job(queue, event.stripe_id, retries=1)
    failed = await wait_for_status(runtime, event.stripe_id, "failed")
    assert "UnknownOrderError" in failed.last_error and intent.id in failed.last_error
    await saq_done(queue, event_job_key(event.stripe_id))
    attempts = (await event_row(runtime, event.stripe_id)).attempts
    assert attempts == 1

    async with runtime.db() as db:
        await db.execute(update(m.Order).where(m.Order.id == order.id).values(payment_intent_id=intent.id))
        await db.commit()
    await admin(client, factory)
    listed = await client.get("/admin/webhooks?status=failed", headers={"HX-Request": "true"})
    assert event.stripe_id[:8] in listed.text or "payment_intent.succeeded" in listed.text
    response = await post_form(client, f"/admin/webhooks/{event.id}/replay", {})
    assert response.status_code == 303
    assert response.headers["location"] == f"/admin/webhooks/{event.id}"

    processed = await wait_for_status(runtime, event.stripe_id, "processed", timeout=60)
    assert processed.attempts == attempts + 1  # attempts keep counting across the replay
    assert processed.last_error == ""
    async with runtime.db() as db:
        paid = await db.get(m.Order, order.id)
        assert paid is not None and paid.status == "paid"
    assert await receipts_to(runtime, "late@example.com") == 1
    [entry] = await audit_rows(runtime, "webhook.replay")
    assert (entry.target_type, entry.target_id, entry.actor_email) == (
        "stripe_event",
        event.stripe_id,
        "admin@example.com",
    )
    assert entry.before == {"status": "failed"} and entry.after == {"status": "received"}
    page = text_of((await client.get(f"/admin/webhooks/{event.id}")).text)
    assert "Processed" in page and "admin@example.com: Replayed payment_intent.succeeded" in page


async def test_replaying_a_processed_payment_does_not_fulfil_twice(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
) -> None:
    order = await pending_order(runtime, factory, settings, "twice@example.com")
    intent = await runtime.stripe.v1.payment_intents.create_async(
        {"amount": order.total, "currency": order.currency.lower(), "metadata": {"order_id": str(order.id)}}
    )
    async with runtime.db() as db:
        await db.execute(update(m.Order).where(m.Order.id == order.id).values(payment_intent_id=intent.id))
        await db.commit()
    await confirm(runtime, intent.id)
    await settle(stripe_emulator, queue, runtime)
    async with runtime.db() as db:
        event = await db.scalar(select(m.StripeEvent).where(m.StripeEvent.type == "payment_intent.succeeded"))
    assert event is not None and event.status == "processed"
    await admin(client, factory)

    # Through the table's bulk action, as HTMX sends it from the filtered list.
    token = client.cookies.get("cartwright_csrf")
    assert token
    response = await client.post(
        "/admin/webhooks/replay",
        data={"ids": [str(event.id)]},
        headers={
            "x-csrftoken": token,
            "HX-Request": "true",
            "HX-Current-URL": "http://testserver.local/admin/webhooks?status=processed",
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["hx-redirect"] == "/admin/webhooks?status=processed"
    await job_finished(queue, event_job_key(event.stripe_id))
    again = await wait_for_status(runtime, event.stripe_id, "processed")
    assert again.attempts == 2
    receipts = await receipts_to(runtime, "twice@example.com")
    async with runtime.db() as db:
        entitlements = await db.scalar(
            select(func.count()).select_from(m.Entitlement).where(m.Entitlement.order_id == order.id)
        )
    assert (receipts, entitlements) == (1, 1)
    assert len(await audit_rows(runtime, "webhook.replay")) == 1
    assert "Replayed 1 event." in (await client.get("/admin/webhooks?status=processed")).text


async def test_mark_ignored_and_replay_all_failed_of_a_filter(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, queue: Queue
) -> None:
    one = await store(runtime, made_up_event("invoice.paid", object_id="in_a"), status="failed", attempts=6)
    two = await store(runtime, made_up_event("invoice.paid", object_id="in_b"), status="failed", attempts=6)
    other = await store(runtime, made_up_event("refund.updated", object_id="re_c"), status="failed", attempts=6)
    done = await store(runtime, made_up_event("invoice.paid", object_id="in_d"), status="processed", attempts=1)
    await admin(client, factory)

    response = await post_form(client, "/admin/webhooks/ignore", {"ids": str(one.id)}, htmx=True)
    assert response.status_code == 200
    assert (await event_row(runtime, one.stripe_id)).status == "ignored"
    # Processed events are not "ignorable": the action skips them and says so.
    await post_form(client, "/admin/webhooks/ignore", {"ids": str(done.id)}, htmx=True)
    assert (await event_row(runtime, done.stripe_id)).status == "processed"
    [entry] = await audit_rows(runtime, "webhook.ignore")
    assert entry.target_id == one.stripe_id and entry.after == {"status": "ignored"}

    page = await client.get("/admin/webhooks?type=invoice.paid")
    assert "Replay all 1 failed event matching this filter" in page.text
    response = await post_form(client, "/admin/webhooks/replay-failed", {"type": "invoice.paid"})
    assert response.status_code == 303
    assert response.headers["location"] == "/admin/webhooks?type=invoice.paid&status=failed"
    assert (await event_row(runtime, two.stripe_id)).status == "received"  # no worker here: waiting for one
    assert (await event_row(runtime, other.stripe_id)).status == "failed"  # another type: not in the filter
    assert (await event_row(runtime, one.stripe_id)).status == "ignored"
    assert await queue.job(event_job_key(two.stripe_id)) is not None
    assert [e.target_id for e in await audit_rows(runtime, "webhook.replay")] == [two.stripe_id]


# --- retries with backoff -----------------------------------------------------------------------------------


async def test_failed_events_are_retried_after_their_backoff_until_the_attempts_run_out(
    runtime: Runtime, settings: Settings, queue: Queue
) -> None:
    base = settings.stripe_event_retry_base_seconds
    now = datetime.now(UTC)
    assert retry_backoff(1, base) == timedelta(seconds=base)
    assert retry_backoff(4, base) == timedelta(seconds=8 * base)
    assert retry_backoff(40, base) == timedelta(hours=6)

    def ago(attempts: int, factor: float) -> datetime:
        return now - retry_backoff(attempts, base) * factor

    due = await store(runtime, made_up_event("invoice.paid"), status="failed", attempts=3, updated_at=ago(3, 1.1))
    early = await store(runtime, made_up_event("invoice.paid"), status="failed", attempts=3, updated_at=ago(3, 0.9))
    spent = await store(
        runtime,
        made_up_event("invoice.paid"),
        status="failed",
        attempts=settings.stripe_event_max_attempts,
        updated_at=now - timedelta(days=2),
    )
    ctx: Any = {"runtime": runtime, "worker": type("W", (), {"queue": queue})()}
    result = await sweep_stripe_events(ctx)
    assert result["retried"] == 1
    assert await queue.job(event_job_key(due.stripe_id)) is not None
    assert await queue.job(event_job_key(early.stripe_id)) is None
    assert await queue.job(event_job_key(spent.stripe_id)) is None
    job = await queue.job(event_job_key(due.stripe_id))
    assert job is not None and job.retries == 1  # one attempt per sweep: the backoff is the sweeper's
    # A job still waiting under the key is not enqueued twice.
    assert (await sweep_stripe_events(ctx))["retried"] == 0


# --- health ---------------------------------------------------------------------------------------------------


async def test_failure_rate_banner_and_health_card(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    new_browser: Callable[..., httpx.AsyncClient],
) -> None:
    for _ in range(18):
        await store(runtime, made_up_event("invoice.paid"), status="processed", duration_ms=12)
    for _ in range(3):
        await store(runtime, made_up_event("invoice.paid"), status="failed", attempts=6, last_error="boom")
    await admin(client, factory)
    page = await client.get("/admin/webhooks")
    assert 'hx-get="/admin/webhooks/alert"' in page.text  # every admin page loads the banner
    health = text_of(page.text)
    assert "Events in the last hour" in health and "14.3%" in health  # 3 of 21

    banner = await client.get("/admin/webhooks/alert", headers={"HX-Request": "true"})
    assert "Webhook failure rate 14% in the last hour (3 of 21 events failed)." in text_of(banner.text)
    assert await runtime.redis.get(ALERT_CACHE_KEY)  # cached for the next page
    dashboard = await client.get("/admin")
    assert 'hx-get="/admin/webhooks/alert"' in dashboard.text

    # Below the minimum sample there is no rate alarm.
    await runtime.redis.delete(ALERT_CACHE_KEY)
    async with runtime.db() as db:
        await db.execute(update(m.StripeEvent).where(m.StripeEvent.status == "processed").values(status="ignored"))
        await db.commit()
    quiet = await client.get("/admin/webhooks/alert", headers={"HX-Request": "true"})
    assert "failure rate" not in quiet.text

    await factory.user(email="support@example.com", role="support")
    support = new_browser()
    await sign_in(support, "support@example.com")
    assert 'hx-get="/admin/webhooks/alert"' not in (await support.get("/admin")).text
    assert (await support.get("/admin/webhooks/alert")).status_code == 403


async def test_a_failing_job_sets_the_row_failed_for_the_sweeper(
    runtime: Runtime, queue: Queue, worker: Worker
) -> None:
    # An invoice Stripe has never heard of: the handler's re-read fails, the row ends failed with the error.
    event = made_up_event("invoice.paid", object_id="in_missing_000")
    await store(runtime, event)
    job = await queue.enqueue(PROCESS_EVENT_JOB, key=event_job_key(event["id"]), event_id=event["id"], retries=1)
    assert job is not None
    await job_finished(queue, event_job_key(event["id"]))
    row = await event_row(runtime, event["id"])
    assert (row.status, row.attempts) == ("failed", 1)
    assert "in_missing_000" in row.last_error
