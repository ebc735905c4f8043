"""Queueing email: render, store, commit, then hand the id to the worker."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from jinja2 import Environment
from saq import Queue
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.db.upsert import insert_if_absent
from app.lib import metrics
from app.lib.templating import get_environment

log = structlog.get_logger()

SEND_EMAIL_JOB = "send_email"


def render_email(env: Environment, kind: str, to_address: str, context: dict[str, Any]) -> m.EmailMessage:
    """Render ``templates/emails/<kind>.{subject.txt,txt,html}.j2`` into an unsent message row."""
    subject = env.get_template(f"emails/{kind}.subject.txt.j2").render(**context).strip()
    return m.EmailMessage(
        kind=kind,
        to_address=to_address,
        subject=subject,
        text_body=env.get_template(f"emails/{kind}.txt.j2").render(**context),
        html_body=env.get_template(f"emails/{kind}.html.j2").render(**context),
    )


async def enqueue_email_job(queue: Queue, email_id: str) -> None:
    # The key makes SAQ drop a second enqueue of a message that is already waiting (sweeper and web racing).
    await queue.enqueue(
        SEND_EMAIL_JOB,
        key=f"email:{email_id}",
        email_id=email_id,
        timeout=30,
        retries=5,
        retry_delay=5.0,
        retry_backoff=True,
    )


async def claim_notice(db: AsyncSession, key: str, kind: str) -> bool:
    """True for the one caller that may send the notice ``key`` (in the caller's transaction: a rollback frees it).

    For emails about a fact several paths can see at once (a webhook, its retry, the sweep, the re-sync)."""
    return await insert_if_absent(db, m.SentNotice, "key", {"key": key, "kind": kind})


class EmailService:
    def __init__(self, db: AsyncSession, queue: Queue | None) -> None:
        self.db = db
        self.queue = queue

    async def send(self, kind: str, to_address: str, context: dict[str, Any]) -> m.EmailMessage:
        """Render and store the message, commit, then enqueue its delivery.

        If Redis is unreachable the message stays ``queued`` in the database and the sweeper sends it later:
        nothing a user asked for is lost because the queue was down.
        """
        message = render_email(get_environment(), kind, to_address, context)
        self.db.add(message)
        await self.db.commit()
        if self.queue is not None:
            try:
                await enqueue_email_job(self.queue, str(message.id))
            except Exception:
                log.warning("email.enqueue_failed", email_id=str(message.id), kind=kind)
                metrics.REDIS_ERRORS.labels("queue").inc()
        return message

    def stage(self, kind: str, to_address: str, context: dict[str, Any]) -> m.EmailMessage:
        """Render and add a message to the caller's transaction; call :meth:`dispatch` after it commits.

        For emails that must exist if and only if a state change happened (a receipt with its payment).
        """
        message = render_email(get_environment(), kind, to_address, context)
        self.db.add(message)
        return message

    async def dispatch(self, messages: list[m.EmailMessage]) -> None:
        """Enqueue delivery of committed messages; if Redis is down the sweeper sends them later."""
        if self.queue is None:
            return
        for message in messages:
            try:
                await enqueue_email_job(self.queue, str(message.id))
            except Exception:
                log.warning("email.enqueue_failed", email_id=str(message.id), kind=message.kind)

    async def get(self, email_id: Any) -> m.EmailMessage | None:
        return await self.db.get(m.EmailMessage, email_id)


async def stale_queued_email_ids(db: AsyncSession, *, older_than: timedelta) -> list[str]:
    cutoff = datetime.now(UTC) - older_than
    rows = await db.scalars(
        select(m.EmailMessage.id)
        .where(m.EmailMessage.status == m.EmailStatus.QUEUED.value, m.EmailMessage.created_at < cutoff)
        .limit(500)
    )
    return [str(i) for i in rows]
