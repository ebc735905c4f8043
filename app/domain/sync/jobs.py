"""The full re-sync as a SAQ job (what "Sync now" enqueues), and the optional nightly cron."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import structlog
from saq import Queue
from saq.types import Context

from app.db import models as m
from app.domain.sync.services import SyncEngine, SyncOptions, start_sync
from app.lib import metrics
from app.lib.exceptions import ConflictError
from app.lib.runtime import Runtime
from app.lib.stripe_gateway import build_stripe_client

log = structlog.get_logger()

RUN_SYNC_JOB = "run_sync"
# Hours for a very large account; the job proves it is alive on every page (SAQ's heartbeat) instead.
SYNC_TIMEOUT = 6 * 3600
SYNC_HEARTBEAT = 300


async def enqueue_sync_job(queue: Queue, run_id: UUID) -> None:
    # The key makes a double click (or the sweeper) a no-op. A worker killed mid-run leaves the run "running" and
    # SAQ's retry continues it from its last page; a run that failed or timed out stays failed, and the next
    # "Sync now" with the same options resumes it instead.
    await queue.enqueue(
        RUN_SYNC_JOB,
        key=f"sync:{run_id}",
        run_id=str(run_id),
        timeout=SYNC_TIMEOUT,
        heartbeat=SYNC_HEARTBEAT,
        retries=3,
        retry_delay=5.0,
    )


async def run_sync(ctx: Context, *, run_id: str) -> dict[str, Any]:
    """Run (or continue) one sync run. Its own Stripe client: never more than 2 requests in flight."""
    runtime: Runtime = ctx["runtime"]  # type: ignore[typeddict-item]
    job = ctx.get("job")

    async def heartbeat(_run: m.SyncRun) -> None:
        if job is not None:
            await job.update()

    engine = SyncEngine(
        db_factory=runtime.db,
        stripe=build_stripe_client(runtime.settings.stripe, max_concurrency=runtime.settings.stripe_sync_concurrency),
        redis=runtime.redis,
        settings=runtime.settings,
        queue=ctx["worker"].queue,
        run_id=UUID(run_id),
        on_page=heartbeat,
    )
    run = await engine.run()
    metrics.SYNC_RUNS.labels(str(run.status)).inc()
    return {"run": run_id, "status": run.status, "summary": run.summary}


async def nightly_sync(ctx: Context) -> dict[str, Any]:
    """Cron (``STRIPE_SYNC_CRON``): start a full sync unless one is running."""
    runtime: Runtime = ctx["runtime"]  # type: ignore[typeddict-item]
    async with runtime.db() as db:
        try:
            run = await start_sync(db, runtime.redis, trigger=m.SyncTrigger.CRON, options=SyncOptions())
        except ConflictError:
            return {"skipped": "a sync is already running"}
    await enqueue_sync_job(ctx["worker"].queue, run.id)
    return {"run": str(run.id)}
