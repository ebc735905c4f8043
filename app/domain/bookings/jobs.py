"""Booking jobs: releasing seats held for card payments that never came."""

from __future__ import annotations

from saq.types import Context

from app.domain.bookings.card_payments import release_unpaid_holds
from app.lib.runtime import Runtime


async def release_unpaid_bookings(ctx: Context) -> dict[str, int]:
    """Cron (every minute): cancel card holds unpaid after 15 minutes and free their seats. Idempotent."""
    runtime: Runtime = ctx["runtime"]  # type: ignore[typeddict-item]
    async with runtime.db() as db:
        return {"released": await release_unpaid_holds(db)}
