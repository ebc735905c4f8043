"""A worker killed mid-job (``kill -9``): SAQ sweeps the job, another worker retries it, the order is fulfilled once.

Real ``cartwright workers run`` processes, started the way production starts them (tests/support.py's
environment, which tests/conftest.py's ``test_env`` put in ``os.environ``). The job is held in progress by a row
lock the test takes on the order, so the kill lands mid-job without any sleep.

Recovery time, and what this test shortens: SAQ calls a job abandoned once it is ACTIVE past its ``timeout``
(``enqueue_event_job``: 60 s; no heartbeat), and one sweep per queue runs every 60 s (a shared Redis lock). The
sweep then waits 5 s for the dead worker to confirm an abort before it retries. In production a killed worker's
Stripe event is therefore picked up again 65-125 s after its job started (plus up to 3 s of retry backoff and
scheduling). Here the job is enqueued with a 3 s timeout and the sweep lock the killed worker left is expired by
hand; the rest (sweep, abort wait, retry, a second worker process) is SAQ's and ours, unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis.asyncio import Redis
from saq import Queue
from sqlalchemy import func, select, text

from app.db import models as m
from app.domain.payments.webhooks import PROCESS_EVENT_JOB, WebhookIntake
from app.lib import queues
from app.lib.runtime import Runtime
from app.lib.settings import Settings
from app.stripe_emulator.server import EmulatorServer
from tests.conftest import Factory
from tests.helpers import job_finished
from tests.integration.purchase_support import (
    add_to_cart,
    confirm,
    digital_product,
    load_order,
    open_pay_page,
    place_order,
)

ROOT = Path(__file__).resolve().parents[2]
CARTWRIGHT = Path(sys.executable).parent / "cartwright"
JOB_TIMEOUT = 3  # seconds; long enough for the kill to land first, short enough to be abandoned quickly


@pytest.fixture
async def stripe_delivers_nothing(stripe_emulator: EmulatorServer, _clean_state: None) -> AsyncIterator[None]:
    """The test stores the event and enqueues its job itself (with a short timeout): Stripe's copies are dropped."""
    await asyncio.to_thread(stripe_emulator.chaos, drop_rate=1.0)
    yield
    await asyncio.to_thread(stripe_emulator.chaos)


def start_worker(log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)  # test_env's DATABASE_URL, REDIS_URL, SMTP_URL, STRIPE_* are in here
    env.pop("LITESTAR_APP", None)  # `cartwright` sets its own
    with log.open("ab") as out:
        # A session of its own, so teardown can end it and anything it forked.
        return subprocess.Popen(
            [str(CARTWRIGHT), "workers", "run"],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def log_tail(log: Path | None) -> str:
    return log.read_text(errors="replace")[-3000:] if log is not None and log.exists() else ""


async def wait_until(
    condition: Callable[[], Awaitable[bool]],
    *,
    what: str,
    worker: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Poll ``condition`` (state another process changes) until it holds, the worker dies, or 30 s pass."""
    deadline = time.monotonic() + 30
    while not await condition():
        if worker is not None and worker.poll() is not None:
            pytest.fail(f"the worker exited ({worker.returncode}) before {what}:\n{log_tail(log)}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within 30 s:\n{log_tail(log)}")
        await asyncio.sleep(0.05)  # the poll interval; what the test waits for is the condition


async def count(runtime: Runtime, model: Any, *where: Any) -> int:
    async with runtime.db() as db:
        return int(await db.scalar(select(func.count()).select_from(model).where(*where)) or 0)


@pytest.mark.serial
@pytest.mark.usefixtures("stripe_delivers_nothing")
async def test_a_worker_killed_mid_job_is_swept_and_retried_and_fulfils_the_order_once(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    queue: Queue,
    redis: Redis,
    tmp_path: Path,
) -> None:
    if settings.is_sqlite:
        pytest.skip(
            "holding a job mid-handler needs a row lock another connection can take and release (SELECT ... FOR "
            "UPDATE); SQLite has only a database-wide write lock, which would stop the job before it starts"
        )
    product = await digital_product(factory, settings.storage_dir, name="Field Guide", price=1500, stock=5)
    await add_to_cart(client, product)
    order_id = await place_order(client, email="crash@example.com")
    intent_id = await open_pay_page(client, order_id)
    await confirm(runtime, intent_id)
    listing = await runtime.stripe.v1.events.list_async({"type": "payment_intent.succeeded"})
    [event] = [e.to_dict() for e in listing.data if e.data.object.id == intent_id]
    async with runtime.db() as db:
        assert (await WebhookIntake(db, queue=None, livemode=False).store(event)).stored
    key = f"stripe-event:{event['id']}"

    async def event_status() -> tuple[str, int]:
        async with runtime.db() as db:
            row = await db.scalar(select(m.StripeEvent).where(m.StripeEvent.stripe_id == event["id"]))
            assert row is not None
            return row.status, row.attempts

    first_log, second_log = tmp_path / "worker-1.log", tmp_path / "worker-2.log"
    workers: list[subprocess.Popen[bytes]] = []
    engine = runtime.alchemy.get_engine()
    try:
        async with engine.connect() as locker:
            # The order's row lock, which PaymentSync takes before it touches the order: the handler blocks on it.
            await locker.execute(text("SELECT id FROM orders WHERE id = :id FOR UPDATE"), {"id": order_id})
            holder = await locker.scalar(text("SELECT pg_backend_pid()"))
            # As enqueue_event_job enqueues it, but with a timeout this test can wait out.
            assert await queue.enqueue(
                PROCESS_EVENT_JOB,
                key=key,
                event_id=event["id"],
                timeout=JOB_TIMEOUT,
                retries=6,
                retry_delay=2.0,
                retry_backoff=True,
            )
            workers.append(first := start_worker(first_log))

            async def handler_is_blocked() -> bool:
                if await event_status() != ("processing", 1):
                    return False
                async with engine.connect() as probe:
                    blocked = await probe.scalar(
                        text("SELECT count(*) FROM pg_stat_activity WHERE :holder = ANY(pg_blocking_pids(pid))"),
                        {"holder": holder},
                    )
                return bool(blocked)

            await wait_until(
                handler_is_blocked, what="handler waiting on the order's lock", worker=first, log=first_log
            )
            first.send_signal(signal.SIGKILL)
            assert first.wait(timeout=10) == -signal.SIGKILL
            await locker.rollback()  # release the lock: the dead worker's job can never finish now

        job = await queue.job(key)
        assert job is not None
        assert (job.status, job.attempts) == ("active", 1)  # SAQ still thinks a worker has it
        assert await event_status() == ("processing", 1)
        assert (await load_order(runtime, order_id)).status == "pending"

        async def abandoned() -> bool:
            current = await queue.job(key)
            return current is not None and current.stuck

        # SAQ's test for "abandoned": ACTIVE for longer than the job's timeout.
        await wait_until(abandoned, what="job past its timeout")
        # The killed worker's start-up sweep holds SAQ's once-a-minute sweep lock; expiring it stands in for the
        # minute passing (as ageing `received_at` does for our own sweeper), so the new worker sweeps at start.
        await redis.delete(f"saq:{queues.queue_for(PROCESS_EVENT_JOB)}:sweep")  # the payments queue
        workers.append(start_worker(second_log))

        finished = await job_finished(queue, key, timeout=30)
        assert (finished.status, finished.attempts) == ("complete", 2), log_tail(second_log)
        assert await event_status() == ("processed", 2)
        order = await load_order(runtime, order_id)
        assert order.status == "paid"
        assert await count(runtime, m.Entitlement, m.Entitlement.order_id == order_id) == 1
        assert await count(runtime, m.EmailMessage, m.EmailMessage.kind == "receipt") == 1
        assert await count(runtime, m.OrderEvent, m.OrderEvent.order_id == order_id, m.OrderEvent.kind == "paid") == 1
        async with runtime.db() as db:
            stocked = await db.get(m.Product, product.id)
            assert stocked is not None
            assert stocked.stock == 4
    finally:
        for proc in workers:
            stop_worker(proc)
