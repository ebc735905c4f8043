"""Catch-up from Stripe's Events API: webhooks lost for a while, the cron job recovers every event exactly once."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import stripe
from saq import Queue, Worker
from sqlalchemy import select

from app.db import models as m
from app.domain.payments.catch_up import LOCK_KEY, STATE_KEY, catch_up
from app.domain.payments.handlers import HANDLERS, is_handled
from app.domain.payments.health import ALERT_CACHE_KEY, CATCH_UP_RESULT_KEY
from app.lib.runtime import Runtime
from app.lib.settings import Settings
from app.stripe_emulator.server import EmulatorServer
from tests.conftest import Factory
from tests.helpers import job_finished, post_form, sign_in, text_of
from tests.integration.purchase_support import digital_product, settle
from tests.integration.test_webhook_chaos import STOCK, Shop, assert_each_paid_order_fulfilled_once, buy

pytestmark = pytest.mark.usefixtures("app_server")


@pytest.fixture
async def emulator(stripe_emulator: EmulatorServer, _clean_state: None) -> AsyncIterator[EmulatorServer]:
    """The emulator, with its chaos switched off again afterwards whatever the test set."""
    yield stripe_emulator
    await asyncio.to_thread(stripe_emulator.reset)


@pytest.fixture
async def shop(factory: Factory, settings: Settings) -> Shop:
    guide = await digital_product(factory, settings.storage_dir, name="Field Guide", price=1500)
    deck = await digital_product(factory, settings.storage_dir, name="Pitch Deck", price=2500, stock=STOCK)
    mug = await factory.product(name="Mug", price=1800, stock=STOCK)
    return Shop(guide, deck, mug)


async def stripe_events(runtime: Runtime) -> dict[str, dict[str, Any]]:
    """Every event Stripe lists (newest first, as the API does), by id."""
    listing = await runtime.stripe.v1.events.list_async({"limit": 100})
    return {e["id"]: e.to_dict() async for e in listing.auto_paging_iter()}


async def stored(runtime: Runtime) -> list[m.StripeEvent]:
    async with runtime.db() as db:
        return list(await db.scalars(select(m.StripeEvent)))


async def run_catch_up_job(queue: Queue, key: str) -> dict[str, Any]:
    """Run the cron's job through the worker, as SAQ's scheduler does every five minutes."""
    job = await queue.enqueue("stripe_catch_up", key=key, timeout=240)
    assert job is not None
    finished = await job_finished(queue, key, timeout=120)
    assert finished.status == "complete", finished.error
    result: dict[str, Any] = finished.result
    return result


async def test_events_missed_while_webhooks_were_down_are_caught_up_exactly_once(
    emulator: EmulatorServer,
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    shop: Shop,
    queue: Queue,
    worker: Worker[Any],
) -> None:
    # Webhooks lost: Stripe "delivers" nothing, yet customers keep paying.
    await asyncio.to_thread(emulator.chaos, seed=7, drop_rate=1.0)
    purchases = await buy(runtime, shop, 6, declined_first={2})
    flushed = await asyncio.to_thread(emulator.flush, 60)
    assert flushed["idle"]
    assert await stored(runtime) == []
    async with runtime.db() as db:
        assert {o.status for o in await db.scalars(select(m.Order))} == {"pending"}

    # The admin banner says so while it lasts.
    await factory.user(email="admin@example.com", role="admin")
    await sign_in(client, "admin@example.com")
    banner = text_of((await client.get("/admin/webhooks/alert", headers={"HX-Request": "true"})).text)
    assert "No Stripe event for 30 minutes while 6 orders were placed." in banner

    first = await run_catch_up_job(queue, "catch-up-1")
    assert first["ran"] and first["complete"]
    await settle(emulator, queue, runtime)

    listed = await stripe_events(runtime)
    rows = await stored(runtime)
    assert Counter(r.stripe_id for r in rows) == Counter(listed.keys())  # every event, once
    assert first["stored"] == len(listed)
    assert {r.source for r in rows} == {"catch-up"}
    assert {r.stripe_id: r.status for r in rows} == {
        event_id: "processed" if is_handled(event["type"]) else "ignored" for event_id, event in listed.items()
    }
    assert {r.stripe_id: r.payload for r in rows} == listed  # stored as Stripe sent them
    await assert_each_paid_order_fulfilled_once(runtime, shop, purchases)

    # A second run (the admin's "Run the catch-up now") finds nothing new and changes nothing.
    response = await post_form(client, "/admin/webhooks/catch-up", {})
    assert response.status_code == 303 and response.headers["location"] == "/admin/webhooks"
    second = (await job_finished(queue, "stripe-catch-up:manual", timeout=120)).result
    assert (second["ran"], second["stored"], second["complete"]) == (True, 0, True)
    async with runtime.db() as db:
        audit = list(await db.scalars(select(m.AuditEntry.action)))
    assert audit == ["webhook.catch_up"]
    assert len(await stored(runtime)) == len(listed)
    await assert_each_paid_order_fulfilled_once(runtime, shop, purchases)

    # The health card reports the last run; the banner stays up: the webhook itself is still silent.
    last = json.loads(await runtime.redis.get(CATCH_UP_RESULT_KEY) or "{}")
    assert (last["stored"], last["complete"]) == (0, True)
    page = text_of((await client.get("/admin/webhooks")).text)
    assert "Catch-up from Stripe's Events API: last run" in page and "0 missed events stored" in page
    await runtime.redis.delete(ALERT_CACHE_KEY)
    assert "No Stripe event" in (await client.get("/admin/webhooks/alert")).text


async def test_a_bounded_run_resumes_where_it_stopped_and_runs_never_overlap(
    emulator: EmulatorServer, runtime: Runtime, shop: Shop, queue: Queue, worker: Worker[Any]
) -> None:
    await asyncio.to_thread(emulator.chaos, seed=3, drop_rate=1.0)
    purchases = await buy(runtime, shop, 4, declined_first=set())
    await asyncio.to_thread(emulator.flush, 60)
    listed = await stripe_events(runtime)
    assert len(listed) > 6

    # Another run holds the lock: this one does nothing.
    await runtime.redis.set(LOCK_KEY, "someone-else", ex=60)
    blocked = await catch_up(runtime, queue, max_pages=1, page_size=3)
    assert not blocked.ran and await stored(runtime) == []
    await runtime.redis.delete(LOCK_KEY)

    # One page of three per run: the scan saves its cursor and carries on next time, newest first.
    runs = []
    while True:
        result = await catch_up(runtime, queue, max_pages=1, page_size=3)
        runs.append(result)
        assert result.ran and not result.error
        if result.complete:
            break
        assert json.loads(await runtime.redis.get(STATE_KEY) or "{}")["cursor"]["after"]
        assert len(runs) < 20
    assert len(runs) == -(-len(listed) // 3) or len(runs) == -(-len(listed) // 3) + 1
    assert sum(r.stored for r in runs) == len(listed)
    assert Counter(r.stripe_id for r in await stored(runtime)) == Counter(listed.keys())
    state = json.loads(await runtime.redis.get(STATE_KEY) or "{}")
    assert "cursor" not in state and state["watermark"] == max(e["created"] for e in listed.values())
    await settle(emulator, queue, runtime)
    await assert_each_paid_order_fulfilled_once(runtime, shop, purchases)


async def test_the_emulator_lists_events_as_stripe_does(emulator: EmulatorServer, runtime: Runtime, shop: Shop) -> None:
    """What the catch-up relies on: newest first, `created[gte]`, `type`/`types[]`, `limit` and `starting_after`."""
    await buy(runtime, shop, 2, declined_first=set())
    everything = list((await stripe_events(runtime)).values())
    created = [e["created"] for e in everything]
    assert created == sorted(created, reverse=True)
    page = await runtime.stripe.v1.events.list_async({"limit": 2})
    assert [e.id for e in page.data] == [e["id"] for e in everything[:2]] and page.has_more
    after = await runtime.stripe.v1.events.list_async({"limit": 2, "starting_after": page.data[-1].id})
    assert [e.id for e in after.data] == [e["id"] for e in everything[2:4]]
    newest = everything[0]["created"]
    recent = await runtime.stripe.v1.events.list_async({"created": {"gte": newest}, "limit": 100})
    assert {e.id for e in recent.data} == {e["id"] for e in everything if e["created"] >= newest}
    only = await runtime.stripe.v1.events.list_async({"type": "payment_intent.succeeded", "limit": 100})
    assert len(only.data) == 2 and {e.type for e in only.data} == {"payment_intent.succeeded"}
    some = await runtime.stripe.v1.events.list_async(
        {"types": ["payment_intent.succeeded", "charge.succeeded"], "limit": 100}
    )
    assert {e.type for e in some.data} == {"payment_intent.succeeded", "charge.succeeded"}
    # Stripe takes at most 20 types: we handle more, so the catch-up lists all.
    with pytest.raises(stripe.InvalidRequestError, match=r"types can have at most 20 elements"):
        await runtime.stripe.v1.events.list_async({"types": sorted(HANDLERS), "limit": 100})
    assert len(HANDLERS) > 20
    wildcard = await runtime.stripe.v1.events.list_async({"type": "payment_intent.*", "limit": 100})
    assert {e.type for e in wildcard.data} <= {"payment_intent.created", "payment_intent.succeeded"}
