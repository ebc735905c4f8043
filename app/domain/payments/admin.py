"""Stripe events in the back office: the webhook log, one event with what it touched, replay and mark ignored.

Replay re-runs the event through the same SAQ job as the webhook (``process_stripe_event``): the handlers are
idempotent, so replaying an event that was already processed changes nothing that was already right.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import structlog
from saq import Queue
from saq.job import TERMINAL_STATUSES
from sqlalchemy import Select, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.db.queries import get_or_404
from app.domain.audit.services import Actor, record_audit
from app.domain.payments.handlers import is_handled
from app.domain.payments.webhooks import enqueue_event_job, event_job_key
from app.lib.stripe_gateway import stripe_id
from app.lib.tables import BulkAction, Column, Filter, TableSpec, TableState

log = structlog.get_logger()

STATUS_LABELS = {
    "received": "Received",
    "processing": "Processing",
    "processed": "Processed",
    "failed": "Failed",
    "ignored": "Ignored",
}
CATCH_UP_JOB = "stripe_catch_up"
# A replay or "replay all failed" press acts on at most this many events; press again for more.
MAX_BULK = 1000
# An event being processed right now is left alone; ignored only makes sense for events not yet processed.
IGNORABLE = frozenset({m.StripeEventStatus.RECEIVED.value, m.StripeEventStatus.FAILED.value})


def webhooks_table(types: Iterable[str]) -> TableSpec:
    """The table spec; the type filter offers the types we actually hold, so it is built per request."""
    return TableSpec(
        dom_id="admin-webhooks",
        noun="events",
        columns=(
            Column("type", "Type", m.StripeEvent.type),
            Column("object", "Object"),
            Column("received", "Received (UTC)", m.StripeEvent.received_at),
            Column("status", "Status", m.StripeEvent.status),
            Column("attempts", "Attempts", m.StripeEvent.attempts, numeric=True),
            Column("duration", "Duration", m.StripeEvent.duration_ms, numeric=True),
            Column("error", "Last error"),
        ),
        default_sort="-received",
        filters=(
            Filter("status", "Status", tuple(STATUS_LABELS.items()), "Any status"),
            Filter("type", "Type", tuple((t, t) for t in types), "Any type"),
        ),
        search_label="Object or event id",
        per_page=50,
        bulk_actions=(
            BulkAction("admin:webhooks_replay", "Replay selected"),
            BulkAction("admin:webhooks_ignore", "Mark ignored", confirm="Mark the selected events as ignored?"),
        ),
        tiebreak=(m.StripeEvent.id.desc(),),
    )


async def stored_types(db: AsyncSession) -> list[str]:
    return list(await db.scalars(select(m.StripeEvent.type).distinct().order_by(m.StripeEvent.type)))


def events_query(state: TableState) -> Select[Any]:
    """Events matching the table's filter: a status, a type, and an object or event id (or its beginning)."""
    stmt = select(m.StripeEvent)
    if status := state.filters.get("status"):
        stmt = stmt.where(m.StripeEvent.status == status)
    if event_type := state.filters.get("type"):
        stmt = stmt.where(m.StripeEvent.type == event_type)
    if term := state.q:
        # Prefixes, not substrings: both columns are indexed and ids are searched from their start.
        stmt = stmt.where(or_(m.StripeEvent.object_id.startswith(term), m.StripeEvent.stripe_id.startswith(term)))
    return stmt


async def failed_matching(db: AsyncSession, state: TableState) -> int:
    """How many failed events the current filter (whatever its status choice) holds: the replay-all count."""
    stmt = events_query(replace(state, filters={**state.filters, "status": m.StripeEventStatus.FAILED.value}))
    return await db.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0


EVENTS_CSV_HEADER = (
    "event_id",
    "type",
    "object_id",
    "created",
    "received_at",
    "status",
    "source",
    "attempts",
    "duration_ms",
    "processed_at",
    "last_error",
)


def event_csv_row(ev: m.StripeEvent) -> tuple[Any, ...]:
    return (
        ev.stripe_id,
        ev.type,
        ev.object_id,
        ev.api_created,
        ev.received_at.isoformat(),
        ev.status,
        ev.source,
        ev.attempts,
        "" if ev.duration_ms is None else ev.duration_ms,
        ev.processed_at.isoformat() if ev.processed_at else "",
        ev.last_error,
    )


# --- one event ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Touched:
    """A local record an event is about: what it is, a label, and the admin page to open (route, params)."""

    kind: str
    label: str
    route: str = ""
    params: tuple[tuple[str, Any], ...] = ()
    detail: str = ""


@dataclass(frozen=True, slots=True)
class EventDetail:
    event: m.StripeEvent
    payload_json: str
    touched: list[Touched]
    history: list[m.AuditEntry]

    @property
    def created_at(self) -> datetime | None:
        return datetime.fromtimestamp(self.event.api_created, UTC) if self.event.api_created else None

    @property
    def replayable(self) -> bool:
        return is_handled(self.event.type) and self.event.status != m.StripeEventStatus.PROCESSING.value

    @property
    def ignorable(self) -> bool:
        return self.event.status in IGNORABLE


async def event_detail(db: AsyncSession, event_id: UUID) -> EventDetail:
    """The event, its payload pretty-printed, the local records it touched and what staff did to it."""
    ev = await get_or_404(db, m.StripeEvent, event_id, "That Stripe event doesn't exist.")
    history = await db.scalars(
        select(m.AuditEntry)
        .where(m.AuditEntry.target_type == "stripe_event", m.AuditEntry.target_id == ev.stripe_id)
        .order_by(m.AuditEntry.created_at)
        .limit(100)
    )
    payload = json.dumps(ev.payload, indent=2, sort_keys=True, ensure_ascii=False)
    return EventDetail(ev, payload, await touched_records(db, ev.payload), list(history))


async def touched_records(db: AsyncSession, event: dict[str, Any]) -> list[Touched]:
    """The local rows an event is about, found from its object's type and ids (no Stripe call)."""
    obj = (event.get("data") or {}).get("object") or {}
    if not isinstance(obj, dict):
        return []
    kind = str(obj.get("object") or "")
    oid = str(obj.get("id") or "")
    found: list[Touched] = []
    intent_ids: set[str] = set()
    if kind == "payment_intent":
        intent_ids.add(oid)
    elif kind in {"charge", "refund"}:
        if intent := stripe_id(obj.get("payment_intent")):
            intent_ids.add(intent)
        if kind == "charge":
            intent_ids.update(
                await db.scalars(select(m.Payment.payment_intent_id).where(m.Payment.charge_id == oid).limit(5))
            )
    if intent_ids:
        orders = list(await db.scalars(select(m.Order).where(m.Order.payment_intent_id.in_(intent_ids))))
        for order in orders:
            found.append(
                Touched(
                    "Order",
                    order.display_number,
                    "admin:order",
                    (("order_id", order.id),),
                    f"{order.status} · {order.email}",
                )
            )
        if orders:
            refunds = await db.scalars(
                select(m.Refund).where(m.Refund.order_id.in_([o.id for o in orders])).order_by(m.Refund.created_at)
            )
            by_order = {o.id: o for o in orders}
            for refund in refunds:
                found.append(
                    Touched(
                        "Refund",
                        refund.stripe_refund_id,
                        "admin:order",
                        (("order_id", refund.order_id),),
                        f"{refund.status} · order {by_order[refund.order_id].display_number}",
                    )
                )
    subscription_ids = {s for s in (oid if kind == "subscription" else None, stripe_id(obj.get("subscription"))) if s}
    if kind == "invoice":
        invoice = await db.scalar(select(m.Invoice).where(m.Invoice.stripe_invoice_id == oid))
        if invoice is not None:
            found.append(Touched("Invoice", invoice.number or invoice.stripe_invoice_id, detail=invoice.status))
    if subscription_ids:
        for sub in await db.scalars(
            select(m.Subscription).where(m.Subscription.stripe_subscription_id.in_(subscription_ids))
        ):
            plan = sub.plan.name if sub.plan else "no plan"
            found.append(Touched("Subscription", sub.stripe_subscription_id, detail=f"{sub.status} · {plan}"))
    customer_id = oid if kind == "customer" else stripe_id(obj.get("customer"))
    if customer_id:
        user = await db.scalar(select(m.User).where(m.User.stripe_customer_id == customer_id))
        if user is not None:
            found.append(Touched("Customer", user.email, "admin:customer", (("user_id", user.id),), customer_id))
    return found


# --- actions ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ActionResult:
    done: int
    skipped: int

    def message(self, verb: str) -> str:
        text = f"{verb} {self.done} event{'s' if self.done != 1 else ''}."
        if self.skipped:
            text += f" {self.skipped} skipped (in progress, already in that state, or a type we don't handle)."
        return text


async def _events(db: AsyncSession, ids: Sequence[UUID]) -> list[m.StripeEvent]:
    if not ids:
        return []
    return list(
        await db.scalars(
            select(m.StripeEvent).where(m.StripeEvent.id.in_(list(ids)[:MAX_BULK])).order_by(m.StripeEvent.received_at)
        )
    )


async def replay_events(db: AsyncSession, queue: Queue | None, ids: Sequence[UUID], *, actor: Actor) -> ActionResult:
    """Put the events back to ``received`` (attempts keep counting), audit each, commit, then enqueue their jobs.

    Enqueued after the commit, so a job never reads the old status; if Redis is down the sweeper enqueues them.
    Events being processed right now and types we don't handle are skipped.
    """
    events = await _events(db, ids)
    replayed = [ev for ev in events if is_handled(ev.type) and ev.status != m.StripeEventStatus.PROCESSING.value]
    for ev in replayed:
        before = ev.status
        ev.status = m.StripeEventStatus.RECEIVED.value
        await record_audit(
            db,
            actor,
            "webhook.replay",
            target=("stripe_event", ev.stripe_id, ev.type),
            summary=f"Replayed {ev.type} for {ev.object_id or 'no object'} (was {before}, {ev.attempts} attempts)",
            before={"status": before},
            after={"status": ev.status},
        )
    await db.commit()
    if queue is not None:
        for ev in replayed:
            try:
                await _enqueue_replay(queue, ev.stripe_id)
            except Exception:
                log.warning("stripe_event.replay_enqueue_failed", event_id=ev.stripe_id)
    log.info("stripe_event.replayed", count=len(replayed))
    return ActionResult(len(replayed), len(events) - len(replayed) + max(0, len(ids) - len(events)))


async def _enqueue_replay(queue: Queue, stripe_id: str) -> None:
    if await enqueue_event_job(queue, stripe_id):
        return
    existing = await queue.job(event_job_key(stripe_id))
    if existing is None or existing.status in TERMINAL_STATUSES:
        # The key's last job is over, yet SAQ refused the key: it keeps an aborted job's key blocked for a few
        # seconds. Nothing else runs this event, so a job under a second key is no duplicate.
        await enqueue_event_job(queue, stripe_id, key=f"{event_job_key(stripe_id)}:replay")
    # Otherwise a job for the event is waiting, scheduled for SAQ's retry, or running: it processes the replay.


async def ignore_events(db: AsyncSession, ids: Sequence[UUID], *, actor: Actor) -> ActionResult:
    """Mark received or failed events ``ignored`` (their job skips them and the sweeper no longer retries them)."""
    events = await _events(db, ids)
    chosen = [ev for ev in events if ev.status in IGNORABLE]
    for ev in chosen:
        before = ev.status
        ev.status = m.StripeEventStatus.IGNORED.value
        await record_audit(
            db,
            actor,
            "webhook.ignore",
            target=("stripe_event", ev.stripe_id, ev.type),
            summary=f"Marked {ev.type} for {ev.object_id or 'no object'} ignored (was {before})",
            before={"status": before},
            after={"status": ev.status},
        )
    await db.commit()
    return ActionResult(len(chosen), len(events) - len(chosen) + max(0, len(ids) - len(events)))


async def replay_failed(db: AsyncSession, queue: Queue | None, state: TableState, *, actor: Actor) -> ActionResult:
    """Replay every failed event of the filter (its status choice aside), oldest first, at most ``MAX_BULK``."""
    stmt = events_query(replace(state, filters={**state.filters, "status": m.StripeEventStatus.FAILED.value}))
    ids = await db.scalars(stmt.with_only_columns(m.StripeEvent.id).order_by(m.StripeEvent.received_at).limit(MAX_BULK))
    return await replay_events(db, queue, list(ids), actor=actor)


async def request_catch_up(db: AsyncSession, queue: Queue, *, actor: Actor) -> bool:
    """Audit the request, commit, then enqueue the catch-up job; False if one is already waiting or running."""
    await record_audit(db, actor, "webhook.catch_up", summary="Ran the catch-up from Stripe's Events API")
    await db.commit()
    job = await queue.enqueue(CATCH_UP_JOB, key="stripe-catch-up:manual", timeout=240, retries=1)
    return job is not None
