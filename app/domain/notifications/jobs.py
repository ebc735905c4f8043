"""Email delivery jobs. Safe to run twice: a message already sent or kept in the outbox is left alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import structlog
from saq.types import Context

from app.db import models as m
from app.domain.notifications.services import enqueue_email_job, stale_queued_email_ids
from app.lib.email import OutgoingEmail, deliver_smtp
from app.lib.runtime import Runtime

log = structlog.get_logger()


async def send_email(ctx: Context, *, email_id: str) -> dict[str, Any]:
    """Deliver one stored message over SMTP, or mark it as kept in the outbox when no SMTP is configured."""
    runtime: Runtime = ctx["runtime"]  # type: ignore[typeddict-item]
    settings = runtime.settings
    async with runtime.db() as db:
        message = await db.get(m.EmailMessage, UUID(email_id), with_for_update=not settings.is_sqlite)
        if message is None or message.status != m.EmailStatus.QUEUED.value:
            return {"skipped": True}
        message.attempts += 1
        if not settings.smtp_url:
            message.status = m.EmailStatus.OUTBOX.value
            await db.commit()
            return {"status": message.status}
        try:
            outgoing = OutgoingEmail(
                str(message.id), message.to_address, message.subject, message.text_body, message.html_body
            )
            await deliver_smtp(outgoing, smtp_url=settings.smtp_url, mail_from=settings.mail_from)
        except Exception as exc:
            message.last_error = f"{type(exc).__name__}: {exc}"[:2000]
            job = ctx.get("job")
            if job is not None and job.attempts >= job.retries:
                # Out of retries: say so, and stop the sweeper from picking it up again.
                message.status = m.EmailStatus.FAILED.value
            await db.commit()
            raise  # SAQ retries with backoff while it can; the row keeps the error for admins
        message.status = m.EmailStatus.SENT.value
        message.sent_at = datetime.now(UTC)
        message.last_error = ""
        await db.commit()
        log.info("email.sent", email_id=email_id, kind=message.kind)
        return {"status": message.status}


async def sweep_queued_emails(ctx: Context) -> dict[str, int]:
    """Cron: re-enqueue messages still queued after a minute (Redis was down when they were written)."""
    runtime: Runtime = ctx["runtime"]  # type: ignore[typeddict-item]
    async with runtime.db() as db:
        ids = await stale_queued_email_ids(db, older_than=timedelta(minutes=1))
    queue = ctx["worker"].queue
    for email_id in ids:
        await enqueue_email_job(queue, email_id)
    return {"requeued": len(ids)}
