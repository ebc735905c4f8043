"""MRR movements and daily MRR snapshots, derived from the mirrored ``subscriptions`` and ``invoices``.

The mirror keeps each subscription's *current* state; its paid invoices are its history. The rules:

* A paid ``subscription_create`` or ``subscription_cycle`` invoice sets the subscription's MRR, from the invoice's
  time (Stripe's ``created``) on, to ``amount_paid`` less its sales tax per month (tax is collected for the state,
  never revenue): yearly prices count as amount / 12 (rounded half up to a minor unit). A trial's $0 first
  invoice therefore counts 0 MRR until the first paid cycle.
* A paid ``subscription_update`` invoice (a switch, invoiced at once with ``always_invoice``) moves the MRR at
  its time to the level of the next paid cycle invoice, or, when there is none yet, to the subscription's current
  price x quantity.
* A subscription that ended (``canceled``, ``unpaid``, ``incomplete_expired``) drops to 0 at ``ended_at``
  (else ``canceled_at``, else its last update). ``past_due`` still counts: Stripe is retrying.
* A customer's MRR is the sum of their subscriptions'. Each change of it is a movement: ``new`` (first time above
  zero), ``expansion``, ``contraction``, ``churn`` (to zero) or ``reactivation`` (above zero again after a churn).
  Changes at the same instant are netted (a switch that ends one subscription and starts another is one move).

Known limit: the interval of an old invoice is taken from the subscription's current price, so a customer who
switched between monthly and yearly has their earlier cycles normalised with the new interval.

Everything is rebuilt from scratch per customer: ``(user_id, seq)`` is the key, so a rebuild writes the same rows.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import groupby
from typing import Any
from uuid import UUID

from sqlalchemy import case, delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.domain.analytics.sql import as_date, day_bucket

CYCLE_REASONS = frozenset({"subscription_create", "subscription_cycle"})
ENDED_STATUSES = frozenset({"canceled", "unpaid", "incomplete_expired"})
# Serialises rebuilds on PostgreSQL (two mirrors at once would both rewrite the same snapshot days).
_LOCK_SQL = text("SELECT pg_advisory_xact_lock(hashtext('cartwright:analytics:mrr'))")


def monthly(amount: int, interval: str | None) -> int:
    """Minor units per month; yearly amounts / 12, rounded half up."""
    months = 12 if interval == "year" else 1
    return (amount * 2 + months) // (months * 2)


@dataclass(frozen=True, slots=True)
class Point:
    at: datetime
    subscription_id: UUID
    mrr: int
    currency: str


@dataclass(frozen=True, slots=True)
class Move:
    seq: int
    subscription_id: UUID | None
    occurred_at: datetime
    kind: str
    mrr_delta: int
    mrr_after: int
    currency: str

    def row(self, user_id: UUID) -> dict[str, Any]:
        return {
            "user_id": user_id,
            "seq": self.seq,
            "subscription_id": self.subscription_id,
            "occurred_at": self.occurred_at,
            "kind": self.kind,
            "mrr_delta": self.mrr_delta,
            "mrr_after": self.mrr_after,
            "currency": self.currency,
        }


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _invoice_time(invoice: m.Invoice) -> datetime:
    return _utc(invoice.stripe_created or invoice.created_at)


def subscription_points(sub: m.Subscription, invoices: list[m.Invoice]) -> list[Point]:
    """The subscription's MRR over time, as (time, level) points."""
    interval = sub.price.interval if sub.price is not None else None
    current = monthly(sub.price.amount * sub.quantity, interval) if sub.price is not None else None
    paid = sorted((i for i in invoices if i.status == "paid"), key=lambda i: (_invoice_time(i), i.stripe_invoice_id))
    points: list[Point] = []
    currency = "CAD"
    for index, invoice in enumerate(paid):
        currency = invoice.currency.upper()
        if invoice.billing_reason in CYCLE_REASONS:
            level = monthly(invoice.amount_paid_excluding_tax, interval)
        elif invoice.billing_reason == "subscription_update":
            following = next((i for i in paid[index + 1 :] if i.billing_reason in CYCLE_REASONS), None)
            if following is not None:
                level = monthly(following.amount_paid_excluding_tax, interval)
            elif current is not None and sub.status not in ENDED_STATUSES:
                level = current
            else:
                continue
        else:
            continue
        points.append(Point(_invoice_time(invoice), sub.id, level, currency))
    if points and sub.status in ENDED_STATUSES:
        ended = sub.ended_at or sub.canceled_at or sub.updated_at
        points.append(Point(max(_utc(ended), points[-1].at), sub.id, 0, currency))
    return points


def customer_moves(points: list[Point]) -> list[Move]:
    """Net the subscriptions' points into the customer's movements."""
    levels: dict[UUID, int] = {}
    current, ever_paid = 0, False
    moves: list[Move] = []
    ordered = sorted(points, key=lambda p: (p.at, str(p.subscription_id)))
    for at, group in groupby(ordered, key=lambda p: p.at):
        batch = list(group)
        for point in batch:
            levels[point.subscription_id] = point.mrr
        after = sum(levels.values())
        if after == current:
            continue
        if current == 0:
            kind = m.MovementKind.REACTIVATION if ever_paid else m.MovementKind.NEW
        elif after == 0:
            kind = m.MovementKind.CHURN
        else:
            kind = m.MovementKind.EXPANSION if after > current else m.MovementKind.CONTRACTION
        # The subscription that moved the most explains the change.
        cause = max(batch, key=lambda p: abs(p.mrr)).subscription_id
        moves.append(Move(len(moves), cause, at, kind.value, after - current, after, batch[-1].currency))
        current, ever_paid = after, ever_paid or after > 0
    return moves


async def _derive(db: AsyncSession, user_ids: list[UUID] | None) -> dict[UUID, list[Move]]:
    # populate_existing: the mirror's own session holds these rows, maybe with a stale joined price.
    stmt = select(m.Subscription).execution_options(populate_existing=True)
    if user_ids is not None:
        stmt = stmt.where(m.Subscription.user_id.in_(user_ids))
    subs = list((await db.scalars(stmt)).unique())
    by_sub: dict[UUID, list[m.Invoice]] = defaultdict(list)
    if subs:
        invoice_stmt = (
            select(m.Invoice)
            .execution_options(populate_existing=True)
            .where(m.Invoice.status == "paid", m.Invoice.subscription_id.is_not(None))
        )
        if user_ids is not None:
            invoice_stmt = invoice_stmt.where(m.Invoice.subscription_id.in_([s.id for s in subs]))
        for invoice in await db.scalars(invoice_stmt):
            assert invoice.subscription_id is not None
            by_sub[invoice.subscription_id].append(invoice)
    points: dict[UUID, list[Point]] = defaultdict(list)
    for sub in subs:
        points[sub.user_id].extend(subscription_points(sub, by_sub.get(sub.id, [])))
    result = {user_id: customer_moves(p) for user_id, p in points.items()}
    for user_id in user_ids or []:
        result.setdefault(user_id, [])
    return result


async def _lock(db: AsyncSession) -> None:
    if db.get_bind().dialect.name == "postgresql":
        await db.execute(_LOCK_SQL)


async def _stored(db: AsyncSession, user_id: UUID) -> list[Move]:
    rows = await db.scalars(select(m.MrrMovement).where(m.MrrMovement.user_id == user_id).order_by(m.MrrMovement.seq))
    return [
        Move(r.seq, r.subscription_id, _utc(r.occurred_at), r.kind, r.mrr_delta, r.mrr_after, r.currency) for r in rows
    ]


async def refresh_customer_metrics(db: AsyncSession, user_id: UUID) -> list[Move]:
    """Re-derive one customer's movements and the snapshots from the first changed day. Does not commit (runs in
    the mirror's transaction). Returns the movements that were not there before (for the live feed)."""
    await _lock(db)
    old = await _stored(db, user_id)
    new = (await _derive(db, [user_id]))[user_id]
    if old == new:
        return []
    first_change = next((i for i, (a, b) in enumerate(zip(old, new, strict=False)) if a != b), min(len(old), len(new)))
    changed = old[first_change:] + new[first_change:]
    await db.execute(delete(m.MrrMovement).where(m.MrrMovement.user_id == user_id))
    if new:
        await db.execute(insert(m.MrrMovement), [move.row(user_id) for move in new])
    await _rebuild_snapshots(db, since=min(move.occurred_at for move in changed).date())
    return [move for move in new[first_change:] if move not in old]


async def rebuild_subscription_metrics(db: AsyncSession) -> None:
    """Re-derive every customer's MRR movements and every daily snapshot from the mirrored subscriptions and
    invoices (after a Stripe re-sync, or to repair). Idempotent: a second run writes the same rows. Commits."""
    await _lock(db)
    derived = await _derive(db, None)
    await db.execute(delete(m.MrrMovement))
    rows = [move.row(user_id) for user_id, moves in derived.items() for move in moves]
    if rows:
        await db.execute(insert(m.MrrMovement), rows)
    await _rebuild_snapshots(db, since=None)
    await db.commit()


async def _rebuild_snapshots(db: AsyncSession, *, since: date | None) -> None:
    """Rewrite the daily snapshots from ``since`` (or the first movement) to today."""
    dialect = db.get_bind().dialect.name
    today = datetime.now(UTC).date()
    if since is None:
        await db.execute(delete(m.MrrDailySnapshot))
        first_at = await db.scalar(select(func.min(m.MrrMovement.occurred_at)))
        if first_at is None:
            return
        since = _utc(first_at).date()
    else:
        await db.execute(delete(m.MrrDailySnapshot).where(m.MrrDailySnapshot.day >= since))
    since_at = datetime.combine(since, time(), UTC)
    heads = case(
        (m.MrrMovement.kind.in_([m.MovementKind.NEW.value, m.MovementKind.REACTIVATION.value]), 1),
        (m.MrrMovement.kind == m.MovementKind.CHURN.value, -1),
        else_=0,
    )
    mrr: dict[str, int] = defaultdict(int)
    subscribers: dict[str, int] = defaultdict(int)
    baseline = await db.execute(
        select(m.MrrMovement.currency, func.sum(m.MrrMovement.mrr_delta), func.sum(heads))
        .where(m.MrrMovement.occurred_at < since_at)
        .group_by(m.MrrMovement.currency)
    )
    for currency, delta, count in baseline:
        mrr[currency], subscribers[currency] = int(delta or 0), int(count or 0)
    bucket = day_bucket(m.MrrMovement.occurred_at, dialect)
    daily: dict[date, list[tuple[str, int, int]]] = defaultdict(list)
    last = today
    for day, currency, delta, count in await db.execute(
        select(bucket, m.MrrMovement.currency, func.sum(m.MrrMovement.mrr_delta), func.sum(heads))
        .where(m.MrrMovement.occurred_at >= since_at)
        .group_by(bucket, m.MrrMovement.currency)
    ):
        daily[as_date(day)].append((currency, int(delta or 0), int(count or 0)))
        last = max(last, as_date(day))
    rows: list[dict[str, Any]] = []
    day = since
    while day <= last:
        for currency, delta, count in daily.get(day, []):
            mrr[currency] += delta
            subscribers[currency] += count
        rows.extend({"day": day, "currency": c, "mrr": mrr[c], "subscribers": subscribers[c]} for c in sorted(mrr))
        day += timedelta(days=1)
    if rows:
        await db.execute(insert(m.MrrDailySnapshot), rows)
