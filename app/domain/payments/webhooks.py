"""Webhook intake: verify Stripe's signature, store the event, hand it to a worker. Nothing else, and fast.

The stored row is the durable inbox (a transactional outbox for the job): once it is committed the event cannot
be lost, whatever happens to Redis; the sweeper enqueues rows a worker never picked up.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import stripe
import structlog
from saq import Queue
from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from app.db import models as m
from app.domain.payments.handlers import is_handled

log = structlog.get_logger()

PROCESS_EVENT_JOB = "process_stripe_event"
SIGNATURE_TOLERANCE_SECONDS = 300


class WebhookSignatureError(Exception):
    """The request did not come from Stripe (or not with a secret we know, or not recently)."""


def verify_signature(
    payload: bytes, header: str | None, secrets: tuple[str, ...], *, now: float | None = None
) -> dict[str, Any]:
    """Return the event if ``header`` signs ``payload`` with one of ``secrets`` within the tolerance.

    Several secrets are tried so a secret can be rotated without dropping events. The timestamp must be within
    the tolerance *in both directions*: the SDK alone accepts any future timestamp, which would let a captured
    signature with a forged far-future ``t`` be replayed for ever.
    """
    if not header:
        raise WebhookSignatureError("missing Stripe-Signature header")
    timestamps = [part[2:] for part in header.split(",") if part.startswith("t=")]
    try:
        signed_at = int(timestamps[0])
    except (IndexError, ValueError) as exc:
        raise WebhookSignatureError("no timestamp in Stripe-Signature header") from exc
    current = time.time() if now is None else now
    if abs(current - signed_at) > SIGNATURE_TOLERANCE_SECONDS:
        raise WebhookSignatureError("timestamp outside the tolerance")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WebhookSignatureError("body is not UTF-8") from exc
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(text, header, secret, tolerance=SIGNATURE_TOLERANCE_SECONDS)
        except stripe.SignatureVerificationError:
            continue
        break
    else:
        raise WebhookSignatureError("no signature matches")
    try:
        event = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WebhookSignatureError("body is not JSON") from exc
    if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not isinstance(event.get("type"), str):
        raise WebhookSignatureError("not a Stripe event")
    return event


def event_job_key(stripe_id: str) -> str:
    return f"stripe-event:{stripe_id}"


async def enqueue_event_job(queue: Queue, stripe_id: str, *, retries: int = 6, key: str | None = None) -> bool:
    """Enqueue the event's job; False if a job for it is already waiting, scheduled for a retry, or running.

    The key makes a second enqueue of a waiting or running event (sweeper racing the web, an admin's replay racing
    SAQ's own retry) a no-op. ``retries`` is SAQ's attempts in all: the backoff sweep gives failed events one.
    """
    job = await queue.enqueue(
        PROCESS_EVENT_JOB,
        key=key or event_job_key(stripe_id),
        event_id=stripe_id,
        timeout=60,
        retries=retries,
        retry_delay=2.0,
        retry_backoff=True,
    )
    return job is not None


@dataclass(frozen=True, slots=True)
class Intake:
    stored: bool  # False: a duplicate delivery of an event we already hold
    status: str


def _object_id(event: dict[str, Any]) -> str:
    obj = (event.get("data") or {}).get("object") or {}
    value = obj.get("id") if isinstance(obj, dict) else None
    return value if isinstance(value, str) else ""


# Built once, on the table rather than the ORM class: building and keying the statement on every request cost
# more CPU than the INSERT itself.
_TABLE = cast("Table", m.StripeEvent.__table__)
_INSERTS: dict[str, Any] = {
    "postgresql": postgresql.insert(_TABLE).on_conflict_do_nothing(index_elements=["stripe_id"]),
    "sqlite": sqlite.insert(_TABLE).on_conflict_do_nothing(index_elements=["stripe_id"]),
}


class WebhookIntake:
    """Stores events through a session (jobs, tests) or straight on the engine (the webhook route).

    The route passes the engine: no ORM session to build and tear down per request, one autocommit INSERT.
    """

    def __init__(self, db: AsyncSession | AsyncEngine, queue: Queue | None, *, livemode: bool) -> None:
        self.db = db
        self.queue = queue
        self.livemode = livemode  # the Stripe key's mode: an event from the other mode is never acted on

    def _triage(self, event: dict[str, Any]) -> tuple[m.StripeEventStatus, str]:
        """Whether to act on the event, and why not when we don't."""
        if bool(event.get("livemode")) != self.livemode:
            # A test-mode event at a live shop (or the reverse) is a misrouted endpoint or a forgery: keep it for
            # the record, never process it.
            expected, got = ("live", "test") if self.livemode else ("test", "live")
            log.warning("stripe_event.livemode_mismatch", event_id=event["id"], type=event["type"], expected=expected)
            reason = f"Ignored: a {got}-mode event, and this shop's Stripe key is {expected}."
            return m.StripeEventStatus.IGNORED, reason
        if is_handled(event["type"]):
            return m.StripeEventStatus.RECEIVED, ""
        return m.StripeEventStatus.IGNORED, ""

    async def store(self, event: dict[str, Any], *, source: str = "webhook") -> Intake:
        """Insert the event once (by Stripe id) and commit; then enqueue it if we act on its type."""
        status, reason = self._triage(event)
        now = datetime.now(UTC)
        values = {
            "stripe_id": event["id"],
            "type": event["type"],
            "object_id": _object_id(event),
            "api_created": int(event.get("created") or 0),
            "livemode": bool(event.get("livemode")),
            "payload": event,
            "status": status.value,
            "last_error": reason,
            "source": source,
            "received_at": now,
        }
        # One round trip: the INSERT commits by itself (no BEGIN/COMMIT); ON CONFLICT keeps it idempotent.
        if isinstance(self.db, AsyncEngine):
            async with self.db.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                stored = bool((await conn.execute(_INSERTS[self.db.dialect.name], values)).rowcount)
        else:
            if not self.db.in_transaction():
                await self.db.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
            result = await self.db.execute(_INSERTS[self.db.get_bind().dialect.name], values)
            await self.db.commit()
            stored = bool(getattr(result, "rowcount", 1))
        if stored and status is m.StripeEventStatus.RECEIVED and self.queue is not None:
            try:
                await enqueue_event_job(self.queue, event["id"])
            except Exception:
                # Stored is what matters: the sweeper enqueues it when Redis is back.
                log.warning("stripe_event.enqueue_failed", event_id=event["id"], type=event["type"])
        return Intake(stored=stored, status=status.value)
