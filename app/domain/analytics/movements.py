"""Subscription metrics (MRR/ARR snapshots, movements) derived from the mirrored history."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession


async def rebuild_subscription_metrics(db: AsyncSession) -> None:
    """Filled in by the analytics work (a stub here so the sync can call it; the lead resolves the merge)."""
