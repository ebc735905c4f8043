"""Email delivery: SMTP when configured, the outbox otherwise; nothing lost when Redis is down."""

from __future__ import annotations

import dataclasses

import httpx
import pytest
from saq import Job, Queue
from saq.types import Context
from sqlalchemy import select

from app.db import models as m
from app.domain.notifications import jobs
from app.domain.notifications.services import EmailService
from app.lib.runtime import Runtime
from tests.conftest import Factory
from tests.helpers import job_finished, post_form, sign_in, until_complete
from tests.support import Mailbox, body_text

VERIFY_URL = "http://shop/verify-email/Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0"


async def test_without_smtp_emails_stay_in_the_outbox_and_admins_can_read_them(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory, mailbox: Mailbox
) -> None:
    outbox_runtime = Runtime(dataclasses.replace(runtime.settings, smtp_url=""))
    async with runtime.db() as db:
        message = await EmailService(db, queue=None).send(
            "welcome",
            "kim@example.com",
            {"name": "Kim", "shop_url": "http://shop", "verify_url": VERIFY_URL, "valid_days": 3},
        )
    ctx: Context = {"runtime": outbox_runtime}  # type: ignore[typeddict-unknown-key]
    assert await jobs.send_email(ctx, email_id=str(message.id)) == {"status": "outbox"}
    assert await jobs.send_email(ctx, email_id=str(message.id)) == {"skipped": True}  # idempotent
    assert mailbox.to("kim@example.com") == []
    await outbox_runtime.close()

    await factory.user(email="admin@example.com", role="admin")
    await sign_in(client, "admin@example.com")
    listing = await client.get("/admin/emails")
    assert "kim@example.com" in listing.text and "Welcome to Cartwright, Kim" in listing.text
    detail = await client.get(f"/admin/emails/{message.id}")
    assert detail.status_code == 200
    assert "Your Cartwright account is ready." in detail.text
    # The confirmation link is the customer's secret: the outbox shows that there was one, not the link.
    html = await client.get(f"/admin/emails/{message.id}/html")
    assert "/verify-email/" not in detail.text + html.text
    assert "link hidden" in detail.text + html.text
    assert "sandbox" in detail.text  # the HTML body is shown in a sandboxed iframe


async def test_support_cannot_read_the_outbox(client: httpx.AsyncClient, factory: Factory) -> None:
    await factory.user(email="support@example.com", role="support")
    await sign_in(client, "support@example.com")
    assert (await client.get("/admin")).status_code == 200
    assert (await client.get("/admin/emails")).status_code == 403


async def test_email_written_while_redis_is_down_is_sent_by_the_sweeper(
    runtime: Runtime, queue: Queue, mailbox: Mailbox, worker: object
) -> None:
    class DownQueue:
        async def enqueue(self, *args: object, **kwargs: object) -> None:
            raise ConnectionError("Redis is down")

    async with runtime.db() as db:
        message = await EmailService(db, queue=DownQueue()).send(  # type: ignore[arg-type]
            "password_reset",
            "lee@example.com",
            {"name": "Lee", "reset_url": "http://shop/reset-password/abc", "valid_minutes": 60},
        )
        assert message.status == "queued"
        # Pretend a minute has passed so the sweeper considers it stale.
        from datetime import UTC, datetime, timedelta

        message.created_at = datetime.now(UTC) - timedelta(minutes=2)
        await db.commit()
    sweep = await queue.enqueue("sweep_queued_emails")  # through the real worker, as the cron would
    assert sweep is not None
    await until_complete(sweep, 15)
    assert sweep.result == {"requeued": 1}
    await job_finished(queue, f"email:{message.id}")
    [received] = mailbox.to("lee@example.com")
    assert "http://shop/reset-password/abc" in body_text(received)
    async with runtime.db() as db:
        assert await db.scalar(select(m.EmailMessage.status).where(m.EmailMessage.id == message.id)) == "sent"


async def test_smtp_failure_keeps_the_error_and_the_job_retries(runtime: Runtime, queue: Queue) -> None:
    broken = Runtime(dataclasses.replace(runtime.settings, smtp_url="smtp://127.0.0.1:1"))
    async with runtime.db() as db:
        message = await EmailService(db, queue=None).send(
            "welcome", "x@example.com", {"name": "X", "shop_url": "u", "verify_url": VERIFY_URL, "valid_days": 3}
        )
    ctx: Context = {"runtime": broken}  # type: ignore[typeddict-unknown-key]
    with pytest.raises(ConnectionError):  # raised so SAQ retries the job with backoff
        await jobs.send_email(ctx, email_id=str(message.id))
    async with runtime.db() as db:
        row = await db.get(m.EmailMessage, message.id)
        assert row is not None and row.status == "queued" and row.attempts == 1 and row.last_error

    # The last allowed attempt fails too: the message is marked failed so nothing retries it for ever.
    last_try = Job(function="send_email", queue=queue, retries=5, attempts=5)
    ctx = {"runtime": broken, "job": last_try}  # type: ignore[typeddict-unknown-key]
    with pytest.raises(ConnectionError):
        await jobs.send_email(ctx, email_id=str(message.id))
    async with runtime.db() as db:
        row = await db.get(m.EmailMessage, message.id)
        assert row is not None and row.status == "failed" and "ConnectError" in row.last_error
    await broken.close()


async def test_forgot_password_form_requires_an_email(client: httpx.AsyncClient) -> None:
    response = await post_form(client, "/forgot-password", {"email": ""}, htmx=True)
    assert response.status_code == 422
    assert "Enter your email address." in response.text
