"""Order jobs: the unpaid-order notice sweep."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from saq.types import Context

from app.domain.notifications.services import EmailService
from app.domain.orders.notices import notify_unpaid_orders
from app.lib.runtime import Runtime


async def notify_unpaid_orders_job(ctx: Context) -> dict[str, int]:
    """Cron (every five minutes): email customers whose order payment failed after they left the page. Idempotent."""
    runtime: Runtime = ctx["runtime"]  # type: ignore[typeddict-item]
    queue = ctx["worker"].queue
    quiet = timedelta(seconds=runtime.settings.unpaid_order_notice_seconds)
    async with runtime.db() as db:
        sent = await notify_unpaid_orders(
            db, EmailService(db, queue), runtime.settings, now=datetime.now(UTC), quiet=quiet
        )
    return {"sent": sent}
