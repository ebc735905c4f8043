"""Catch-up from Stripe's Events API: store and process the events whose webhook never reached us.

Webhooks get lost (downtime, a deploy, a wrong secret, an endpoint disabled at Stripe). Every few minutes this lists
Stripe's events since the last complete scan (minus an overlap, because an event can become visible late) and feeds
every one we do not hold to the same intake as the webhook (``WebhookIntake.store``, dedupe by event id, source
``catch-up``): handled types are processed by the same job, the rest stored as ``ignored``.

Bounded: at most ``stripe_catch_up_max_pages`` pages of 100 per run. A scan that runs out of pages saves its cursor
and the next run carries on from there; the watermark (the newest ``created`` of a *complete* scan) only moves when a
scan reaches the start of its window, so a backlog is never skipped. Stripe lists 30 days of events: the window never
starts earlier. One run at a time (a Redis lock).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import stripe
import structlog
from redis.asyncio import Redis
from saq import Queue
from sqlalchemy import func, select

from app.db import models as m
from app.domain.payments.health import CATCH_UP_RESULT_KEY
from app.domain.payments.webhooks import WebhookIntake
from app.lib.runtime import Runtime

log = structlog.get_logger()

STATE_KEY = "cartwright:stripe-catch-up:state"
LOCK_KEY = "cartwright:stripe-catch-up:lock"
LOCK_SECONDS = 280  # longer than a run may take (the job's timeout is 240 s), shorter than the 5-minute cron
PAGE_SIZE = 100
RETENTION_SECONDS = 30 * 86400  # Stripe lists the last 30 days of events
_RELEASE = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end"


@dataclass
class CatchUpResult:
    at: str = ""
    ran: bool = True  # False: another run held the lock
    since: int = 0  # the window's start (`created[gte]`, Unix seconds)
    pages: int = 0
    listed: int = 0
    stored: int = 0  # events we did not hold before
    complete: bool = False  # reached the start of the window (else: resumes next run)
    error: str = ""
    stored_ids: list[str] = field(default_factory=list)


async def _load_state(redis: Redis) -> dict[str, Any]:
    raw = await redis.get(STATE_KEY)
    value = json.loads(raw) if raw else {}
    return value if isinstance(value, dict) else {}


async def _window_start(runtime: Runtime, state: dict[str, Any], now: int) -> int:
    overlap = runtime.settings.stripe_catch_up_overlap_seconds
    floor = now - RETENTION_SECONDS + 60  # a minute inside the retention, so the first page is not aging out
    watermark = int(state.get("watermark") or 0)
    if not watermark:
        # First run (or Redis lost its state): from the newest event we hold, else as far back as Stripe goes.
        async with runtime.db() as db:
            newest = select(func.max(m.StripeEvent.api_created)).where(m.StripeEvent.api_created <= now)
            watermark = int(await db.scalar(newest) or 0)
    return max(watermark - overlap, floor) if watermark else floor


async def catch_up(
    runtime: Runtime, queue: Queue | None, *, max_pages: int | None = None, page_size: int = PAGE_SIZE
) -> CatchUpResult:
    """One bounded catch-up run; records its result in Redis for the health card and returns it."""
    redis = runtime.redis
    token = secrets.token_hex(8)
    now = int(time.time())
    result = CatchUpResult(at=datetime.now(UTC).isoformat())
    if not await redis.set(LOCK_KEY, token, nx=True, ex=LOCK_SECONDS):
        result.ran = False
        return result
    try:
        state = await _load_state(redis)
        pages = max_pages or runtime.settings.stripe_catch_up_max_pages
        await _scan(runtime, queue, state, result, now, pages, page_size)
        await redis.set(STATE_KEY, json.dumps(state))
    except stripe.StripeError as exc:
        result.error = f"{type(exc).__name__}: {exc.user_message or exc}"
        log.warning("stripe_catch_up.failed", error=result.error)
    finally:
        await redis.eval(_RELEASE, 1, LOCK_KEY, token)
    summary = {k: v for k, v in asdict(result).items() if k != "stored_ids"}
    await redis.set(CATCH_UP_RESULT_KEY, json.dumps(summary))
    # Every 5 minutes: news only when it found events we lacked; a routine pass is a DEBUG line (a calm console).
    (log.info if result.stored else log.debug)("stripe_catch_up.done", **summary)
    return result


async def _scan(
    runtime: Runtime,
    queue: Queue | None,
    state: dict[str, Any],
    result: CatchUpResult,
    now: int,
    max_pages: int,
    page_size: int,
) -> None:
    cursor = state.get("cursor") if isinstance(state.get("cursor"), dict) else None
    if cursor:
        since, after, newest = int(cursor["since"]), str(cursor["after"]), int(cursor["newest"])
    else:
        since, after, newest = await _window_start(runtime, state, now), "", 0
    result.since = since
    while result.pages < max_pages:
        params: dict[str, Any] = {"limit": page_size, "created": {"gte": since}}
        if after:
            params["starting_after"] = after
        try:
            page = await runtime.stripe.v1.events.list_async(params)  # type: ignore[arg-type]
        except stripe.InvalidRequestError as exc:
            if after and exc.code == "resource_missing":
                # The saved cursor's event aged out of Stripe's 30 days: start a fresh scan next run.
                state.pop("cursor", None)
                result.error = "the saved cursor expired; a fresh scan starts next run"
                return
            raise
        result.pages += 1
        events = [e.to_dict(for_json=True) for e in page.data]
        result.listed += len(events)
        if events:
            newest = max(newest, *(int(e.get("created") or 0) for e in events))
            await _store_missing(runtime, queue, events, result)
            after = str(events[-1]["id"])
        if not page.has_more or not events:
            result.complete = True
            break
    if result.complete:
        state.pop("cursor", None)
        # Never past our own clock: events made under a Stripe test clock carry simulated (future) times.
        state["watermark"] = min(max(int(state.get("watermark") or 0), newest), now)
    else:
        state["cursor"] = {"since": since, "after": after, "newest": newest}


async def _store_missing(
    runtime: Runtime, queue: Queue | None, events: list[dict[str, Any]], result: CatchUpResult
) -> None:
    ids = [str(e["id"]) for e in events]
    async with runtime.db() as db:
        held = set(await db.scalars(select(m.StripeEvent.stripe_id).where(m.StripeEvent.stripe_id.in_(ids))))
        await db.rollback()
        intake = WebhookIntake(db, queue, livemode=runtime.settings.stripe.livemode)
        # Oldest first, as Stripe would have delivered them (handlers do not depend on it).
        for event in reversed(events):
            if event["id"] in held or not isinstance(event.get("type"), str):
                continue
            if (await intake.store(event, source="catch-up")).stored:
                result.stored += 1
                result.stored_ids.append(str(event["id"]))
