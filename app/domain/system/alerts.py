"""Operational alerts the shop sends itself: the Prometheus rules' conditions (deploy/prometheus/alerts.yml),
evaluated from the database and Redis every five minutes, so a shop without Prometheus still hears of them.

Each alert emails every active admin at most once an hour (a ``sent_notices`` row per alert and hour, and no
second one within the hour). The 5xx rate and p99 latency need the request histograms: those two are
Prometheus-only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from redis.asyncio import Redis
from saq import Queue
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.domain.notifications.services import EmailService, claim_notice
from app.domain.payments.health import compute_alert
from app.domain.system.metrics import oldest_queued_age, storage_free_ratio
from app.lib.permissions import Role
from app.lib.settings import Settings

log = structlog.get_logger()

# Thresholds, the same as deploy/prometheus/alerts.yml's (docs/production.md explains each).
PAYMENT_WINDOW = timedelta(minutes=15)
PAYMENT_FAILURE_RATE = 0.5
PAYMENT_MIN_ATTEMPTS = 10
OLDEST_JOB_SECONDS = 120
OUTBOX_STUCK_AFTER = timedelta(minutes=10)
OUTBOX_BACKLOG = 20
DISK_FREE_RATIO = 0.10
REPEAT_AFTER = timedelta(hours=1)


@dataclass(frozen=True, slots=True)
class Alert:
    name: str
    message: str


async def evaluate(
    db: AsyncSession, queue: Queue | None, redis: Redis | None, settings: Settings, *, now: datetime
) -> list[Alert]:
    del redis  # the queue's own connection answers for Redis
    alerts: list[Alert] = []
    if webhooks := await compute_alert(db, settings, now=now):
        alerts.append(Alert("stripe_webhooks", webhooks))
    rows = await db.execute(
        select(m.Payment.status, func.count())
        .where(m.Payment.updated_at >= now - PAYMENT_WINDOW)
        .group_by(m.Payment.status)
    )
    counts = {str(status): int(count) for status, count in rows}
    failed = counts.get(m.PaymentStatus.FAILED.value, 0)
    attempts = failed + counts.get(m.PaymentStatus.SUCCEEDED.value, 0)
    if attempts >= PAYMENT_MIN_ATTEMPTS and failed / attempts > PAYMENT_FAILURE_RATE:
        alerts.append(
            Alert("payment_failures", f"{failed} of {attempts} order payments failed in the last 15 minutes.")
        )
    if queue is not None:
        try:
            family = list(getattr(queue, "family", {queue.name: queue}).values())
            age = max([await oldest_queued_age(q) for q in family])
        except Exception:  # Redis down: the readiness probe and the 503 pages say so; nothing to measure here
            age = 0.0
        if age > OLDEST_JOB_SECONDS:
            alerts.append(Alert("queue_stuck", f"The oldest waiting job has waited {int(age)} seconds."))
    stuck = await db.scalar(
        select(func.count())
        .select_from(m.EmailMessage)
        .where(m.EmailMessage.status == m.EmailStatus.QUEUED, m.EmailMessage.created_at < now - OUTBOX_STUCK_AFTER)
    )
    if (stuck or 0) > OUTBOX_BACKLOG:
        alerts.append(Alert("outbox_backlog", f"{stuck} emails have waited over 10 minutes to be sent."))
    free = storage_free_ratio(settings.storage_dir) if settings.storage_is_local else None
    if free is not None and free < DISK_FREE_RATIO:
        alerts.append(Alert("upload_disk", f"The upload disk has {free:.0%} free."))
    return alerts


async def email_admins(db: AsyncSession, mailer: EmailService, alerts: list[Alert], *, now: datetime) -> int:
    """Email each alert to every active admin, unless it was emailed within the hour. Returns alerts sent."""
    admins = list(await db.scalars(select(m.User.email).where(m.User.role == Role.ADMIN.value, m.User.is_active)))
    sent: list[m.EmailMessage] = []
    told = 0
    for alert in alerts:
        recent = await db.scalar(
            select(func.count())
            .select_from(m.SentNotice)
            .where(m.SentNotice.kind == f"alert:{alert.name}", m.SentNotice.created_at >= now - REPEAT_AFTER)
        )
        if recent or not await claim_notice(db, f"alert:{alert.name}:{now:%Y%m%d%H%M}", f"alert:{alert.name}"):
            continue
        told += 1
        log.warning("ops_alert", alert=alert.name, message=alert.message)
        sent += [mailer.stage("ops_alert", address, {"alert": alert}) for address in admins]
    await db.commit()
    await mailer.dispatch(sent)
    return told
