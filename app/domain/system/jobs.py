"""System jobs: the self-alerting watch."""

from __future__ import annotations

from datetime import UTC, datetime

from saq.types import Context

from app.domain.notifications.services import EmailService
from app.domain.system.alerts import email_admins, evaluate
from app.lib.runtime import Runtime


async def watch_alerts(ctx: Context) -> dict[str, int]:
    """Cron (every five minutes): evaluate the alert conditions and email admins, at most once an hour each."""
    runtime: Runtime = ctx["runtime"]  # type: ignore[typeddict-item]
    queue = ctx["worker"].queue
    now = datetime.now(UTC)
    async with runtime.db() as db:
        alerts = await evaluate(db, queue, runtime.redis, runtime.settings, now=now)
        told = await email_admins(db, EmailService(db, queue), alerts, now=now)
    return {"alerts": len(alerts), "emailed": told}
