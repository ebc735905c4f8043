"""Workers stopped mid-job, by ``kill -9`` (catalogue Q2) and by SIGTERM (Q4): the order is fulfilled once; and
the email queue, in a further process of the same command, recovers a dead worker's job as quickly (Q2).

Real ``cartwright workers run`` processes, started the way production starts them (tests/support.py's
environment, which tests/conftest.py's ``test_env`` put in ``os.environ``). The job is held in progress by a row
lock the test takes on the order, so the signal lands mid-job without any sleep. The job is enqueued exactly as
the webhook enqueues it (``enqueue_event_job``: 60 s timeout, 6 attempts).

Recovery after ``kill -9``: every job carries a 5 s heartbeat that its worker touches every second
(app/server/saq_worker.py), and each worker sweeps every 2 s, so a dead worker's job is back on the queue within
seconds, not after its 60 s timeout plus a once-a-minute sweep (65-125 s before).
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
from typing import Any, cast

import httpx
import pytest
from saq import Queue
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection

from app.db import models as m
from app.domain.notifications.services import EmailService
from app.domain.payments.webhooks import WebhookIntake, enqueue_event_job
from app.lib import queues
from app.lib.queues import RoutingQueue
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
from tests.support import Mailbox

ROOT = Path(__file__).resolve().parents[2]
CARTWRIGHT = Path(sys.executable).parent / "cartwright"


@pytest.fixture
async def stripe_delivers_nothing(stripe_emulator: EmulatorServer, _clean_state: None) -> AsyncIterator[None]:
    """The test stores the event and enqueues its job itself (with a short timeout): Stripe's copies are dropped."""
    await asyncio.to_thread(stripe_emulator.chaos, drop_rate=1.0)
    yield
    await asyncio.to_thread(stripe_emulator.chaos)


def start_worker(log: Path, **extra: str) -> subprocess.Popen[bytes]:
    env = dict(os.environ)  # test_env's DATABASE_URL, REDIS_URL, SMTP_URL, STRIPE_* are in here
    env.pop("LITESTAR_APP", None)  # `cartwright` sets its own
    env.update(extra)
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
    timeout: float = 30,
) -> None:
    """Poll ``condition`` (state another process changes) until it holds, the worker dies, or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if worker is not None and worker.poll() is not None:
            pytest.fail(f"the worker exited ({worker.returncode}) before {what}:\n{log_tail(log)}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout:.0f} s:\n{log_tail(log)}")
        await asyncio.sleep(0.05)  # the poll interval; what the test waits for is the condition


async def count(runtime: Runtime, model: Any, *where: Any) -> int:
    async with runtime.db() as db:
        return int(await db.scalar(select(func.count()).select_from(model).where(*where)) or 0)


class HeldEvent:
    """A paid order whose ``payment_intent.succeeded`` is stored and enqueued, its handler held on the order's lock."""

    def __init__(self, runtime: Runtime, queue: Queue, order_id: Any, event_id: str, product_id: Any) -> None:
        self.runtime, self.queue, self.order_id, self.event_id = runtime, queue, order_id, event_id
        self.product_id = product_id
        self.key = f"stripe-event:{event_id}"

    async def status(self) -> tuple[str, int]:
        async with self.runtime.db() as db:
            row = await db.scalar(select(m.StripeEvent).where(m.StripeEvent.stripe_id == self.event_id))
            assert row is not None
            return row.status, row.attempts

    async def assert_fulfilled_once(self) -> None:
        order = await load_order(self.runtime, self.order_id)
        assert order.status == "paid"
        assert await count(self.runtime, m.Entitlement, m.Entitlement.order_id == self.order_id) == 1
        assert await count(self.runtime, m.EmailMessage, m.EmailMessage.kind == "receipt") == 1
        paid = (m.OrderEvent.order_id == self.order_id, m.OrderEvent.kind == "paid")
        assert await count(self.runtime, m.OrderEvent, *paid) == 1
        assert await count(self.runtime, m.StripeEvent, m.StripeEvent.status == "failed") == 0


async def held_event(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, settings: Settings, queue: Queue
) -> HeldEvent:
    product = await digital_product(factory, settings.storage_dir, name="Field Guide", price=1500, stock=5)
    await add_to_cart(client, product)
    order_id = await place_order(client, email="crash@example.com")
    intent_id = await open_pay_page(client, order_id)
    await confirm(runtime, intent_id)
    listing = await runtime.stripe.v1.events.list_async({"type": "payment_intent.succeeded"})
    [event] = [e.to_dict() for e in listing.data if e.data.object.id == intent_id]
    async with runtime.db() as db:
        assert (await WebhookIntake(db, queue=None, livemode=False).store(event)).stored
    return HeldEvent(runtime, queue, order_id, event["id"], product.id)


async def hold_and_start(held: HeldEvent, locker: AsyncConnection, log: Path, **env: str) -> subprocess.Popen[bytes]:
    """Take the order's row lock (PaymentSync takes it before it touches the order), enqueue the event as the
    webhook does, start a worker, and return once its handler is blocked on the lock: mid-fulfilment."""
    await locker.execute(text("SELECT id FROM orders WHERE id = :id FOR UPDATE"), {"id": held.order_id})
    holder = await locker.scalar(text("SELECT pg_backend_pid()"))
    assert await enqueue_event_job(held.queue, held.event_id)
    worker = start_worker(log, **env)
    engine = held.runtime.alchemy.get_engine()

    async def handler_is_blocked() -> bool:
        if await held.status() != ("processing", 1):
            return False
        async with engine.connect() as probe:
            blocked = await probe.scalar(
                text("SELECT count(*) FROM pg_stat_activity WHERE :holder = ANY(pg_blocking_pids(pid))"),
                {"holder": holder},
            )
        return bool(blocked)

    await wait_until(handler_is_blocked, what="handler waiting on the order's lock", worker=worker, log=log)
    return worker


async def payments_workers(queue: Queue, *, at_least: int) -> bool:
    """At least this many live workers on the payments queue (each registers itself as it starts)."""
    payments = cast("RoutingQueue", queue).family[queues.PAYMENTS]
    return len((await payments.info())["workers"]) >= at_least


def needs_row_locks(settings: Settings) -> None:
    if settings.is_sqlite:
        pytest.skip(
            "holding a job mid-handler needs a row lock another connection can take and release (SELECT ... FOR "
            "UPDATE); SQLite has only a database-wide write lock, which would stop the job before it starts"
        )


@pytest.mark.serial
@pytest.mark.usefixtures("stripe_delivers_nothing")
async def test_q2_a_worker_killed_mid_job_is_picked_up_by_another_within_15_seconds(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, settings: Settings, queue: Queue, tmp_path: Path
) -> None:
    needs_row_locks(settings)
    held = await held_event(client, factory, runtime, settings, queue)
    first_log, second_log = tmp_path / "worker-1.log", tmp_path / "worker-2.log"
    workers: list[subprocess.Popen[bytes]] = []
    try:
        async with runtime.alchemy.get_engine().connect() as locker:
            workers.append(first := await hold_and_start(held, locker, first_log))
            workers.append(second := start_worker(second_log))  # idle: the only job is the first worker's
            # Up and taking jobs before the kill: the 15 s measure recovery, not a Python process starting.
            await wait_until(
                lambda: payments_workers(queue, at_least=2), what="the second worker up", worker=second, log=second_log
            )
            os.killpg(first.pid, signal.SIGKILL)  # the worker and the queue processes it forked
            assert first.wait(timeout=10) == -signal.SIGKILL
            killed_at = time.monotonic()
            await locker.rollback()  # release the lock: the dead worker's job can never finish now

        finished = await job_finished(queue, held.key, timeout=15)
        assert (finished.status, finished.attempts) == ("complete", 2), log_tail(second_log)
        recovered = time.monotonic() - killed_at
        assert recovered < 15, "a killed worker's job came back too late"
        print(f"kill -9 to the job finished by another worker: {recovered:.1f} s")  # noqa: T201 - the figure (-rP)
        assert second.poll() is None
        assert await held.status() == ("processed", 2)
        await held.assert_fulfilled_once()
        async with runtime.db() as db:
            stocked = await db.get(m.Product, held.product_id)
            assert stocked is not None
            assert stocked.stock == 4
    finally:
        for proc in workers:
            stop_worker(proc)


@pytest.mark.serial
@pytest.mark.usefixtures("stripe_delivers_nothing")
async def test_q4_sigterm_mid_fulfilment_lets_the_job_finish_then_exits(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, settings: Settings, queue: Queue, tmp_path: Path
) -> None:
    needs_row_locks(settings)
    held = await held_event(client, factory, runtime, settings, queue)
    log = tmp_path / "worker.log"
    worker: subprocess.Popen[bytes] | None = None
    try:
        async with runtime.alchemy.get_engine().connect() as locker:
            worker = await hold_and_start(held, locker, log)
            worker.send_signal(signal.SIGTERM)  # to the first process only, as a container runtime sends it
            await locker.rollback()  # the handler goes on, within the grace period
        assert await asyncio.to_thread(worker.wait, 30) == 0, log_tail(log)
        finished = await job_finished(queue, held.key)
        assert (finished.status, finished.attempts) == ("complete", 1)
        assert await held.status() == ("processed", 1)
        await held.assert_fulfilled_once()
        assert "Traceback" not in log_tail(log)
    finally:
        if worker is not None:
            stop_worker(worker)


@pytest.mark.serial
@pytest.mark.usefixtures("stripe_delivers_nothing")
async def test_q4_a_job_that_outlives_the_grace_period_is_requeued_not_failed(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, settings: Settings, queue: Queue, tmp_path: Path
) -> None:
    needs_row_locks(settings)
    held = await held_event(client, factory, runtime, settings, queue)
    first_log, second_log = tmp_path / "worker-1.log", tmp_path / "worker-2.log"
    workers: list[subprocess.Popen[bytes]] = []
    try:
        async with runtime.alchemy.get_engine().connect() as locker:
            workers.append(first := await hold_and_start(held, locker, first_log, WORKER_SHUTDOWN_GRACE_SECONDS="1"))
            first.send_signal(signal.SIGTERM)
            # The lock outlasts the grace period: the worker cancels the handler and puts the job back.
            assert await asyncio.to_thread(first.wait, 30) == 0, log_tail(first_log)
            job = await queue.job(held.key)
            assert job is not None
            assert job.status in {"queued", "new"}, job.status
            status, _ = await held.status()
            assert status != "failed"  # a shutdown is not the event's failure
            await locker.rollback()
        workers.append(start_worker(second_log))
        finished = await job_finished(queue, held.key, timeout=15)
        assert finished.status == "complete", log_tail(second_log)
        assert (await held.status())[0] == "processed"
        await held.assert_fulfilled_once()
    finally:
        for proc in workers:
            stop_worker(proc)


async def test_q2_an_email_a_dead_worker_took_off_the_queue_is_sent_within_seconds(
    runtime: Runtime, queue: Queue, mailbox: Mailbox, tmp_path: Path
) -> None:
    """The email queue runs in a further process of `cartwright workers run`. A worker that took the job off the
    queue (its BLMOVE) and died, or whose connection gave up just as Redis answered, left it in the active list,
    still queued. That process's worker must sweep it back within seconds, as the first process's does; with
    litestar-saq's own command it ran a plain SAQ worker, which swept once a minute (emails a minute late in CI)."""
    async with runtime.db() as db:
        await EmailService(db, queue).send(
            "password_reset", "swept@example.com", {"name": "Sam", "reset_url": "http://x/r", "valid_minutes": 60}
        )
    emails = cast("RoutingQueue", queue).family[queues.EMAILS]
    # What the lost worker's BLMOVE did, before any worker of this test runs.
    assert await runtime.redis.lmove(emails.namespace("queued"), emails.namespace("active"), "LEFT", "RIGHT")
    log = tmp_path / "worker.log"
    worker = start_worker(log)
    try:

        async def email_worker_up() -> bool:
            return bool((await emails.info())["workers"])

        async def delivered() -> bool:
            return bool(mailbox.to("swept@example.com"))

        # Timed from the email process's worker registering itself, not from a Python process starting.
        await wait_until(email_worker_up, what="the email worker up", worker=worker, log=log, timeout=30)
        up = time.monotonic()
        await wait_until(delivered, what="the swept email delivered", worker=worker, log=log, timeout=25)
        print(f"email worker up to the lost email delivered: {time.monotonic() - up:.1f} s")  # noqa: T201
        [message] = mailbox.to("swept@example.com")
        assert message["Subject"] == "Reset your Cartwright password"
    finally:
        stop_worker(worker)
