"""Stripe's webhook: who may post (signatures), what is kept (the inbox), and what happens when things break.

Stripe's own deliveries are switched off here (chaos ``drop_rate=1``): each test takes real events from the
emulator's Events API, or writes one, and delivers it itself, so it decides what arrives, when and how often.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
import pytest
import stripe
from saq import Queue, Worker
from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import create_async_engine

from app.db import models as m
from app.domain.payments.jobs import SWEEP_RECEIVED_AFTER
from app.domain.payments.webhooks import (
    PROCESS_EVENT_JOB,
    SIGNATURE_TOLERANCE_SECONDS,
    WebhookIntake,
    WebhookSignatureError,
    verify_signature,
)
from app.lib.runtime import Runtime
from app.lib.settings import Settings, get_settings, load_settings
from app.stripe_emulator.server import EmulatorServer, free_port
from tests.conftest import Factory
from tests.helpers import job_finished, until_complete
from tests.integration.purchase_support import (
    WEBHOOK_SECRET,
    add_to_cart,
    confirm,
    deliver,
    digital_product,
    load_order,
    open_pay_page,
    place_order,
    settle,
    signature_header,
)
from tests.support import postgres_admin_url


@pytest.fixture
async def stripe_delivers_nothing(
    _clean_state: None, runtime: Runtime, app_server: str, stripe_emulator: EmulatorServer
) -> AsyncIterator[None]:
    """Stripe can reach the app (it listens), but every webhook the emulator sends is dropped; events stay listed."""
    await asyncio.to_thread(stripe_emulator.chaos, drop_rate=1.0)  # after _clean_state's reset, which clears chaos
    yield
    await asyncio.to_thread(stripe_emulator.chaos)


# Tests of the running app; the signature unit tests below need none of it (and so run once, not per database).
uses_the_app = pytest.mark.usefixtures("stripe_delivers_nothing")


# --- helpers --------------------------------------------------------------------------------------------------


@asynccontextmanager
async def hosted_app(**env: str) -> AsyncIterator[httpx.AsyncClient]:
    """A second app built from the test environment with ``env`` changed, started in the tests' loop.

    Built the way tests/conftest.py builds the main one: ``create_app()`` reads the settings once, so the
    environment is restored (and the settings cache cleared) as soon as the app exists.
    """
    from app.asgi import create_app

    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    get_settings.cache_clear()
    try:
        application = create_app()
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()
    started, stopping = asyncio.Event(), asyncio.Event()

    async def host() -> None:
        async with application.lifespan():
            started.set()
            await stopping.wait()

    task = asyncio.create_task(host())
    ready = asyncio.create_task(started.wait())
    await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        ready.cancel()
        task.result()  # start-up failed: raise its error here
    try:
        transport = httpx.ASGITransport(app=application, client=("203.0.113.50", 443))  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as client:
            yield client
    finally:
        stopping.set()
        await task


def signed_bytes_header(body: bytes, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """Stripe's signature over raw bytes (``signature_header`` takes text)."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


async def post_raw(client: httpx.AsyncClient, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return await client.post("/webhooks/stripe", content=body, headers={"Content-Type": "application/json", **headers})


def made_up_event(event_type: str = "payment_intent.succeeded", **object_fields: Any) -> dict[str, Any]:
    """An event in Stripe's shape for tests that need no real PaymentIntent behind it."""
    suffix = uuid4().hex[:24]
    return {
        "id": f"evt_test_{suffix}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": int(time.time()),
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
        "data": {"object": {"id": f"pi_test_{suffix}", "object": "payment_intent", "metadata": {}, **object_fields}},
    }


async def paid_order(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    *,
    email: str = "buyer@example.com",
    decline_first: bool = False,
) -> tuple[UUID, str, UUID]:
    """A guest order for one limited-stock download, paid at Stripe: ``(order id, PaymentIntent id, product id)``."""
    product = await digital_product(factory, settings.storage_dir, name="Field Guide", price=1500, stock=5)
    await add_to_cart(client, product)
    order_id = await place_order(client, email=email)
    intent_id = await open_pay_page(client, order_id)
    if decline_first:
        declined = await confirm(runtime, intent_id, "pm_card_chargeDeclined")
        assert getattr(declined, "code", None) == "card_declined"
    succeeded = await confirm(runtime, intent_id)
    assert succeeded.status == "succeeded"
    return order_id, intent_id, product.id


async def events_for(runtime: Runtime, intent_id: str) -> list[dict[str, Any]]:
    """What ``GET /v1/events`` lists about one PaymentIntent (and its charges), oldest first."""
    listing = await runtime.stripe.v1.events.list_async({"limit": 100})
    events = [event.to_dict() async for event in listing.auto_paging_iter()]
    mine = [
        event
        for event in events
        if intent_id in {event["data"]["object"].get("id"), event["data"]["object"].get("payment_intent")}
    ]
    return list(reversed(mine))  # Stripe lists newest first


def one(events: list[dict[str, Any]], event_type: str) -> dict[str, Any]:
    [event] = [e for e in events if e["type"] == event_type]
    return event


async def stored_event(runtime: Runtime, stripe_id: str) -> m.StripeEvent | None:
    async with runtime.db() as db:
        row: m.StripeEvent | None = await db.scalar(select(m.StripeEvent).where(m.StripeEvent.stripe_id == stripe_id))
        return row


async def count(runtime: Runtime, model: Any, *where: Any) -> int:
    async with runtime.db() as db:
        return int(await db.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def assert_fulfilled_once(runtime: Runtime, order_id: UUID, product_id: UUID, *, stock_left: int) -> None:
    order = await load_order(runtime, order_id)
    assert order.status == "paid"
    assert order.fulfilled_at is not None
    assert await count(runtime, m.Entitlement, m.Entitlement.order_id == order_id) == 1
    assert await count(runtime, m.EmailMessage, m.EmailMessage.kind == "receipt") == 1
    assert await count(runtime, m.OrderEvent, m.OrderEvent.order_id == order_id, m.OrderEvent.kind == "paid") == 1
    async with runtime.db() as db:
        product = await db.get(m.Product, product_id)
        assert product is not None
        assert product.stock == stock_left


# --- 1. signatures ---------------------------------------------------------------------------------------------


@uses_the_app
async def test_a_signed_event_is_stored_and_queued_for_the_worker(
    client: httpx.AsyncClient, runtime: Runtime, queue: Queue
) -> None:
    event = made_up_event()
    response = await deliver(client, event)
    assert response.status_code == 200
    assert response.json() == {"received": True, "duplicate": False, "status": "received"}
    row = await stored_event(runtime, event["id"])
    assert row is not None
    assert (row.type, row.status, row.object_id, row.source) == (
        "payment_intent.succeeded",
        "received",
        event["data"]["object"]["id"],
        "webhook",
    )
    assert row.api_created == event["created"]
    assert row.payload == event
    job = await queue.job(f"stripe-event:{event['id']}")
    assert job is not None
    assert (job.function, job.kwargs) == (PROCESS_EVENT_JOB, {"event_id": event["id"]})
    # SAQ's `retries` counts attempts in all: a failing handler gets five more tries, with backoff.
    assert (job.retries, job.timeout, job.retry_backoff) == (6, 60, True)


def _wrong_secret(body: str) -> dict[str, str]:
    return {"Stripe-Signature": signature_header(body, secret="whsec_somebody_else")}


def _stale(body: str) -> dict[str, str]:
    return {"Stripe-Signature": signature_header(body, timestamp=int(time.time()) - SIGNATURE_TOLERANCE_SECONDS - 5)}


def _future(body: str) -> dict[str, str]:
    return {"Stripe-Signature": signature_header(body, timestamp=int(time.time()) + SIGNATURE_TOLERANCE_SECONDS + 5)}


def _other_body(body: str) -> dict[str, str]:
    return {"Stripe-Signature": signature_header(body.replace('"livemode": false', '"livemode": true'))}


def _no_header(body: str) -> dict[str, str]:
    return {}


def _no_timestamp(body: str) -> dict[str, str]:
    return {"Stripe-Signature": signature_header(body).split(",", 1)[1]}


def _garbage(body: str) -> dict[str, str]:
    return {"Stripe-Signature": "t=soon,v1=nothing"}


@uses_the_app
@pytest.mark.parametrize(
    "headers",
    [_wrong_secret, _stale, _future, _other_body, _no_header, _no_timestamp, _garbage],
    ids=["wrong-secret", "stale", "future", "tampered-body", "missing-header", "no-timestamp", "garbage"],
)
async def test_an_unverified_request_is_rejected_and_nothing_is_stored(
    client: httpx.AsyncClient, runtime: Runtime, redis: Any, headers: Any
) -> None:
    event = made_up_event()
    body = json.dumps(event)
    response = await post_raw(client, body.encode(), headers(body))
    assert response.status_code == 400
    assert response.json() == {"error": "invalid signature"}
    assert await count(runtime, m.StripeEvent) == 0
    assert await redis.keys("saq:job:*") == []


def test_the_sdk_alone_would_accept_a_future_timestamp() -> None:
    # Why verify_signature checks the timestamp itself: this is what the SDK lets through.
    body = json.dumps(made_up_event())
    future = signature_header(body, timestamp=int(time.time()) + 3600)
    assert stripe.WebhookSignature.verify_header(body, future, WEBHOOK_SECRET, tolerance=SIGNATURE_TOLERANCE_SECONDS)
    with pytest.raises(WebhookSignatureError, match="tolerance"):
        verify_signature(body.encode(), future, (WEBHOOK_SECRET,))


def test_the_tolerance_holds_in_both_directions_at_its_edge() -> None:
    body = json.dumps(made_up_event()).encode()
    signed_at = 1_800_000_000
    header = signed_bytes_header(body, timestamp=signed_at)
    for now in (signed_at - SIGNATURE_TOLERANCE_SECONDS, signed_at + SIGNATURE_TOLERANCE_SECONDS):
        assert verify_signature(body, header, (WEBHOOK_SECRET,), now=now)["type"] == "payment_intent.succeeded"
    for now in (signed_at - SIGNATURE_TOLERANCE_SECONDS - 1, signed_at + SIGNATURE_TOLERANCE_SECONDS + 1):
        with pytest.raises(WebhookSignatureError):
            verify_signature(body, header, (WEBHOOK_SECRET,), now=now)


@uses_the_app
async def test_a_body_that_is_not_utf8_is_rejected_not_a_server_error(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    # Anyone can send this (no secret needed): it must be a 400 like any other forgery, not an unhandled error.
    body = b'{"id": "evt_\xff\xfe", "type": "payment_intent.succeeded"}'
    response = await post_raw(client, body, {"Stripe-Signature": signed_bytes_header(body)})
    assert response.status_code == 400
    assert await count(runtime, m.StripeEvent) == 0


def test_a_rotated_secret_verifies_with_either_secret() -> None:
    body = json.dumps(made_up_event())
    secrets = ("whsec_retiring", "whsec_current")
    for secret in secrets:
        event = verify_signature(body.encode(), signature_header(body, secret=secret), secrets)
        assert event["object"] == "event"
    with pytest.raises(WebhookSignatureError, match="no signature matches"):
        verify_signature(body.encode(), signature_header(body, secret="whsec_unknown"), secrets)


@uses_the_app
async def test_an_app_configured_with_two_secrets_accepts_events_signed_with_the_second(
    runtime: Runtime, queue: Queue
) -> None:
    first, second = made_up_event("customer.created"), made_up_event("customer.created")
    async with hosted_app(STRIPE_WEBHOOK_SECRET=f"whsec_retiring,{WEBHOOK_SECRET}") as other:
        assert (await deliver(other, first, secret="whsec_retiring")).status_code == 200
        assert (await deliver(other, second, secret=WEBHOOK_SECRET)).status_code == 200
        assert (await deliver(other, made_up_event(), secret="whsec_unknown")).status_code == 400
    assert await count(runtime, m.StripeEvent) == 2


@pytest.fixture
def webhook_secret_env() -> Iterator[None]:
    saved = os.environ.get("STRIPE_WEBHOOK_SECRET")
    yield
    if saved is None:
        os.environ.pop("STRIPE_WEBHOOK_SECRET", None)
    else:
        os.environ["STRIPE_WEBHOOK_SECRET"] = saved


def test_rotation_secrets_may_be_listed_with_spaces_after_the_commas(webhook_secret_env: None) -> None:
    # docs/configuration.md: "Several may be given, comma-separated" - people write "a, b".
    os.environ["STRIPE_WEBHOOK_SECRET"] = "whsec_retiring, whsec_current"
    secrets = load_settings().stripe.webhook_secrets
    assert secrets == ("whsec_retiring", "whsec_current")
    body = json.dumps(made_up_event())
    assert verify_signature(body.encode(), signature_header(body, secret="whsec_current"), secrets)


# --- 2. event types we do not act on -----------------------------------------------------------------------


@uses_the_app
async def test_an_unhandled_event_type_is_acknowledged_and_kept_as_ignored(
    client: httpx.AsyncClient, runtime: Runtime, queue: Queue
) -> None:
    customer = await runtime.stripe.v1.customers.create_async({"email": "someone@example.com"})
    listing = await runtime.stripe.v1.events.list_async({"type": "customer.created"})
    [event] = [e.to_dict() for e in listing.data if e.data.object.id == customer.id]
    response = await deliver(client, event)
    assert response.status_code == 200
    assert response.json()["status"] == "ignored"
    row = await stored_event(runtime, event["id"])
    assert row is not None
    assert (row.type, row.status, row.object_id) == ("customer.created", "ignored", customer.id)
    assert await queue.job(f"stripe-event:{event['id']}") is None
    again = await deliver(client, event)
    assert (again.status_code, again.json()["duplicate"]) == (200, True)


# --- 3. duplicates ---------------------------------------------------------------------------------------------


@uses_the_app
async def test_an_event_delivered_twice_is_stored_once_and_processed_once(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker[Any],
) -> None:
    order_id, intent_id, product_id = await paid_order(client, factory, runtime, settings)
    succeeded = one(await events_for(runtime, intent_id), "payment_intent.succeeded")
    # The app listens, yet Stripe's own deliveries all were dropped: what arrives below is what the test sends.
    own = await asyncio.to_thread(stripe_emulator.deliveries)
    assert own
    assert all(d["dropped"] for d in own)
    first, second = await deliver(client, succeeded), await deliver(client, succeeded)
    assert (first.status_code, first.json()["duplicate"]) == (200, False)
    assert (second.status_code, second.json()["duplicate"]) == (200, True)
    await settle(stripe_emulator, queue, runtime)
    # Stripe retrying after we processed it changes nothing either.
    third = await deliver(client, succeeded)
    assert (third.status_code, third.json()["duplicate"]) == (200, True)
    await settle(stripe_emulator, queue, runtime)

    assert await count(runtime, m.StripeEvent, m.StripeEvent.stripe_id == succeeded["id"]) == 1
    row = await stored_event(runtime, succeeded["id"])
    assert row is not None
    assert (row.status, row.attempts) == ("processed", 1)
    job = await job_finished(queue, f"stripe-event:{succeeded['id']}")
    assert job.attempts == 1
    await assert_fulfilled_once(runtime, order_id, product_id, stock_left=4)


@uses_the_app
async def test_concurrent_deliveries_of_one_event_store_it_once_and_process_it_once(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker[Any],
) -> None:
    order_id, intent_id, product_id = await paid_order(client, factory, runtime, settings)
    succeeded = one(await events_for(runtime, intent_id), "payment_intent.succeeded")
    responses = await asyncio.gather(*(deliver(client, succeeded) for _ in range(4)))
    assert [r.status_code for r in responses] == [200] * 4
    assert sorted(r.json()["duplicate"] for r in responses) == [False, True, True, True]
    await settle(stripe_emulator, queue, runtime)

    assert await count(runtime, m.StripeEvent) == 1
    row = await stored_event(runtime, succeeded["id"])
    assert row is not None
    assert (row.status, row.attempts) == ("processed", 1)
    await assert_fulfilled_once(runtime, order_id, product_id, stock_left=4)


# --- 4. the database is down -----------------------------------------------------------------------------------


@asynccontextmanager
async def unreachable_database_urls(settings: Settings) -> AsyncIterator[list[str]]:
    """Database URLs that fail the way a database that is down does, for this leg's dialect."""
    if settings.is_sqlite:
        # The volume holding the database file is gone.
        yield [f"sqlite+aiosqlite:///{settings.var_dir / 'unmounted-volume' / 'cartwright.db'}"]
        return
    admin_url = postgres_admin_url()
    base = admin_url.rsplit("/", 1)[0]
    closed_port = base.replace(":5432", f":{free_port()}")
    # A server that is up but refuses connections to the database (as during maintenance or a restart).
    name = "cartwright_test_not_accepting"
    admin = create_async_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            await conn.execute(text(f'CREATE DATABASE "{name}" WITH ALLOW_CONNECTIONS false'))
        yield [f"{closed_port}/cartwright", f"{base}/{name}"]
    finally:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        await admin.dispose()


@uses_the_app
async def test_an_event_that_cannot_be_stored_gets_a_503_so_stripe_retries(
    client: httpx.AsyncClient, runtime: Runtime, settings: Settings, redis: Any
) -> None:
    event = made_up_event()
    async with unreachable_database_urls(settings) as urls:
        for url in urls:
            async with hosted_app(DATABASE_URL=url) as database_down:
                response = await deliver(database_down, event)
            assert response.status_code == 503, url
            assert response.json() == {"error": "temporarily unavailable"}
    assert await redis.keys("saq:job:*") == []  # nothing queued for an event that was not stored
    # Stripe's retry, once the database is back, is taken.
    retried = await deliver(client, event)
    assert (retried.status_code, retried.json()["duplicate"]) == (200, False)
    assert await count(runtime, m.StripeEvent) == 1


# --- 5. Redis is down ------------------------------------------------------------------------------------------


@uses_the_app
async def test_with_redis_down_the_event_is_kept_and_the_sweeper_gets_it_processed(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    queue: Queue,
    worker: Worker[Any],
) -> None:
    order_id, intent_id, product_id = await paid_order(client, factory, runtime, settings)
    events = await events_for(runtime, intent_id)
    succeeded = one(events, "payment_intent.succeeded")
    async with hosted_app(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0") as redis_down:
        responses = [await deliver(redis_down, event) for event in events]
    assert [r.status_code for r in responses] == [200] * len(events)
    row = await stored_event(runtime, succeeded["id"])
    assert row is not None
    assert (row.status, row.attempts) == ("received", 0)
    assert await queue.job(f"stripe-event:{succeeded['id']}") is None
    assert (await load_order(runtime, order_id)).status == "pending"

    # Redis is back (the worker runs on it). An event this fresh may still be on its way: the sweeper waits.
    sweep = await queue.enqueue("sweep_stripe_events", key="sweep-fresh")
    assert sweep is not None
    await until_complete(sweep, 15)
    assert sweep.result == {"requeued": 0, "retried": 0}
    async with runtime.db() as db:
        await db.execute(
            update(m.StripeEvent)
            .where(m.StripeEvent.stripe_id == succeeded["id"])
            .values(received_at=datetime.now(UTC) - SWEEP_RECEIVED_AFTER - timedelta(seconds=5))
        )
        await db.commit()
    sweep = await queue.enqueue("sweep_stripe_events", key="sweep-stale")
    assert sweep is not None
    await until_complete(sweep, 15)
    assert sweep.result == {"requeued": 1, "retried": 0}  # only the handled type; the others were stored as ignored

    job = await job_finished(queue, f"stripe-event:{succeeded['id']}")
    assert job.status == "complete"
    row = await stored_event(runtime, succeeded["id"])
    assert row is not None
    assert (row.status, row.attempts) == ("processed", 1)
    await assert_fulfilled_once(runtime, order_id, product_id, stock_left=4)


# --- 6. a handler that fails -----------------------------------------------------------------------------------


@uses_the_app
async def test_a_failing_handler_leaves_the_error_on_the_row_and_saq_retries_it(
    runtime: Runtime, queue: Queue, worker: Worker[Any]
) -> None:
    # Every payment_intent.* event is re-read from Stripe, which knows no such PaymentIntent.
    event = made_up_event("payment_intent.payment_failed", metadata={"order_id": str(uuid4())})
    missing = event["data"]["object"]["id"]
    async with runtime.db() as db:
        assert (await WebhookIntake(db, queue=None, livemode=False).store(event)).stored
    # As enqueue_event_job does, with two attempts in all and no backoff so the test sees both at once.
    job = await queue.enqueue(
        PROCESS_EVENT_JOB, key=f"stripe-event:{event['id']}", event_id=event["id"], timeout=60, retries=2
    )
    assert job is not None
    finished = await job_finished(queue, f"stripe-event:{event['id']}")
    assert (finished.status, finished.attempts) == ("failed", 2)
    assert "InvalidRequestError" in (finished.error or "")
    row = await stored_event(runtime, event["id"])
    assert row is not None
    assert (row.status, row.attempts) == ("failed", 2)
    assert row.last_error.startswith("InvalidRequestError: ")
    assert missing in row.last_error
    assert row.processed_at is None
    assert row.duration_ms is not None


@uses_the_app
@pytest.mark.serial
async def test_a_handler_that_outlives_its_job_timeout_is_recorded_as_failed(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    queue: Queue,
    worker: Worker[Any],
) -> None:
    if settings.is_sqlite:
        pytest.skip("a handler is held past its timeout by a row lock on the order, which SQLite does not have")
    order_id, intent_id, _ = await paid_order(client, factory, runtime, settings)
    succeeded = one(await events_for(runtime, intent_id), "payment_intent.succeeded")
    async with runtime.db() as db:
        assert (await WebhookIntake(db, queue=None, livemode=False).store(succeeded)).stored
    key = f"stripe-event:{succeeded['id']}"
    async with runtime.alchemy.get_engine().connect() as locker:
        # Holding the order's row lock keeps PaymentSync waiting, as a slow database or Stripe call would.
        await locker.execute(text("SELECT id FROM orders WHERE id = :id FOR UPDATE"), {"id": order_id})
        assert await queue.enqueue(PROCESS_EVENT_JOB, key=key, event_id=succeeded["id"], timeout=1, retries=1)
        finished = await job_finished(queue, key)
        await locker.rollback()
    assert finished.status == "failed"
    assert "TimeoutError" in (finished.error or "")
    row = await stored_event(runtime, succeeded["id"])
    assert row is not None
    # SAQ gave up on it: the inbox must say it failed and why, not show it as still being worked on.
    assert (row.status, row.attempts) == ("failed", 1)
    assert "timeout" in row.last_error.lower()


# --- 7. events out of order ------------------------------------------------------------------------------------


@uses_the_app
async def test_an_older_payment_failed_arriving_after_the_success_does_not_undo_it(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker[Any],
) -> None:
    order_id, intent_id, product_id = await paid_order(client, factory, runtime, settings, decline_first=True)
    events = await events_for(runtime, intent_id)
    assert [e["type"] for e in events] == [
        "payment_intent.created",
        "charge.failed",
        "payment_intent.payment_failed",
        "charge.succeeded",
        "payment_intent.succeeded",
    ]
    failed, succeeded = one(events, "payment_intent.payment_failed"), one(events, "payment_intent.succeeded")
    assert failed["created"] <= succeeded["created"]

    assert (await deliver(client, succeeded)).status_code == 200
    await settle(stripe_emulator, queue, runtime)
    assert (await load_order(runtime, order_id)).status == "paid"
    assert (await deliver(client, failed)).status_code == 200
    await settle(stripe_emulator, queue, runtime)

    row = await stored_event(runtime, failed["id"])
    assert row is not None
    assert row.status == "processed"
    async with runtime.db() as db:
        payment = await db.scalar(select(m.Payment).where(m.Payment.payment_intent_id == intent_id))
        assert payment is not None
        assert (payment.status, payment.failure_message) == ("succeeded", "")
    await assert_fulfilled_once(runtime, order_id, product_id, stock_left=4)
