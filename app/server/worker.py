"""SAQ wiring: the queues, their tasks and crons. `cartwright workers run` runs them in their own process."""

from __future__ import annotations

from typing import Any

import structlog
from litestar_saq import CronJob, QueueConfig, SAQConfig
from saq.types import Context
from saq.utils import now

from app.domain.bookings import jobs as booking_jobs
from app.domain.catalog import jobs as catalog_jobs
from app.domain.notifications import jobs as notification_jobs
from app.domain.orders import jobs as order_jobs
from app.domain.payments import jobs as payment_jobs
from app.domain.settings.services import refresh_shop_settings
from app.domain.subscriptions import jobs as subscription_jobs
from app.domain.sync import jobs as sync_jobs
from app.domain.system import jobs as system_jobs
from app.lib import metrics, queues
from app.lib.runtime import Runtime
from app.lib.settings import get_settings

# One runtime (engine, Redis) per worker process, shared by the process's three queue workers.
_shared: dict[str, Any] = {"runtime": None, "users": 0}


async def on_worker_startup(ctx: Context) -> None:
    # Each worker process builds its own runtime from the same environment as the web process.
    if _shared["runtime"] is None:
        runtime = Runtime(get_settings())
        _shared["runtime"] = runtime
        if runtime.settings.worker_metrics_port:  # a worker container's own scrape target (docs/production.md)
            metrics.serve_worker_metrics(runtime.settings.worker_metrics_port)
    _shared["users"] += 1
    ctx["runtime"] = _shared["runtime"]  # type: ignore[typeddict-unknown-key]


async def record_job(ctx: Context) -> None:
    """After every job: its run time by function and outcome, and this process's database pool use."""
    job = ctx.get("job")
    if job is None:
        return
    started = job.started or job.queued
    status = getattr(job.status, "value", str(job.status))
    metrics.JOB_DURATION.labels(job.function, status).observe(max(0.0, (now() - started) / 1000))
    runtime: Runtime | None = ctx.get("runtime")  # type: ignore[assignment]
    if runtime is not None:
        checked_out = getattr(runtime.alchemy.get_engine().pool, "checkedout", None)
        if callable(checked_out):
            metrics.DB_POOL_IN_USE.set(checked_out())


async def bind_job_context(ctx: Context) -> None:
    """The job's log lines carry the id of the request that enqueued it (``meta``), so one id finds both.
    SAQ runs each job in a task of its own, so the binding ends with the job."""
    job = ctx.get("job")
    request_id = job.meta.get("request_id") if job is not None else None
    if request_id:
        structlog.contextvars.bind_contextvars(request_id=request_id)
    else:
        structlog.contextvars.unbind_contextvars("request_id")


async def before_job(ctx: Context) -> None:
    # Jobs read the shop settings (time zone, link lifetime, alert recipients) through the process snapshot.
    runtime: Runtime | None = ctx.get("runtime")  # type: ignore[assignment]
    if runtime is not None:
        await refresh_shop_settings(runtime)


async def on_worker_shutdown(ctx: Context) -> None:
    del ctx
    _shared["users"] -= 1
    runtime: Runtime | None = _shared["runtime"]
    if runtime is not None and _shared["users"] <= 0:
        _shared["runtime"] = None
        await runtime.close()


TASKS: list[Any] = [
    notification_jobs.send_email,
    notification_jobs.sweep_queued_emails,
    payment_jobs.process_stripe_event,
    payment_jobs.sweep_stripe_events,
    payment_jobs.stripe_catch_up,
    booking_jobs.release_unpaid_bookings,
    order_jobs.notify_unpaid_orders_job,
    system_jobs.watch_alerts,
    sync_jobs.run_sync,
    sync_jobs.nightly_sync,
    catalog_jobs.sync_product_to_stripe,
    catalog_jobs.sweep_unsynced_products,
    subscription_jobs.move_plan_subscribers,
]
CRON_JOBS = [
    CronJob(function=notification_jobs.sweep_queued_emails, cron="* * * * *", timeout=60, retries=1),
    CronJob(function=payment_jobs.sweep_stripe_events, cron="* * * * *", timeout=60, retries=1),
    # Missed webhooks: list Stripe's events and feed the ones we lack to the same intake (a lock keeps runs apart).
    CronJob(function=payment_jobs.stripe_catch_up, cron="*/5 * * * *", timeout=240, retries=1),
    CronJob(function=booking_jobs.release_unpaid_bookings, cron="* * * * *", timeout=60, retries=1),
    CronJob(function=order_jobs.notify_unpaid_orders_job, cron="*/5 * * * *", timeout=60, retries=1),
    CronJob(function=catalog_jobs.sweep_unsynced_products, cron="* * * * *", timeout=60, retries=1),
    CronJob(function=catalog_jobs.release_expired_stock_holds, cron="* * * * *", timeout=60, retries=1),
    CronJob(function=system_jobs.watch_alerts, cron="*/5 * * * *", timeout=60, retries=1),
]


def cron_jobs(runtime: Runtime) -> list[CronJob]:
    jobs = list(CRON_JOBS)
    if runtime.settings.stripe_sync_cron:  # off unless configured: "Sync now" and the CLI always work
        jobs.append(
            CronJob(function=sync_jobs.nightly_sync, cron=runtime.settings.stripe_sync_cron, timeout=60, retries=1)
        )
    return jobs


# Each queue's workers: fulfilment has its own and never waits behind an email burst or a re-sync.
CONCURRENCY = {queues.PAYMENTS: 8, queues.EMAILS: 4, queues.BACKGROUND: 4}


def tasks_for(queue_name: str) -> list[Any]:
    """The functions a queue's workers run: its routed ones; the background queue runs every task, so jobs an
    older release left on the single queue of old still run."""
    if queue_name == queues.BACKGROUND:
        return TASKS
    return [task for task in TASKS if queues.queue_for(task.__name__) == queue_name]


def saq_config(runtime: Runtime) -> SAQConfig:
    return SAQConfig(
        queue_configs=[
            QueueConfig(
                broker_instance=runtime.redis,
                name=name,
                tasks=tasks_for(name),
                scheduled_tasks=cron_jobs(runtime) if name == queues.BACKGROUND else [],
                startup=on_worker_startup,
                shutdown=on_worker_shutdown,
                before_process=[bind_job_context, before_job],
                after_process=record_job,
                concurrency=CONCURRENCY[name],
            )
            for name in queues.NAMES
        ],
        # Our own queue objects, which route each job to its queue (app/lib/queues.py).
        queue_instances=dict(queues.build_queues(runtime.redis)),
        use_server_lifespan=False,
    )
