"""A running job's heartbeat never undoes its finish (catalogue Q2's recovery relies on both).

The worker touches each running job every second (app/server/saq_worker.py) so a dead worker's job is swept
within seconds. SAQ's ``job.update()`` did that by reading the stored status and writing the whole job back;
a job that finished between the two was written back ``active``, out of every list the sweep reads: its
``job.refresh(until_complete=...)`` waited for ever and its key refused a new enqueue (seen as the webhook chaos
test's 30 s time-outs in CI). ``app.lib.queues.touch`` gives way to any other writer.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from litestar import Litestar
from litestar_saq import SAQPlugin
from saq import Queue
from saq.job import Status

from app.lib import queues
from app.lib.queues import touch
from app.lib.runtime import Runtime
from app.server.saq_worker import dequeue_timeout

# With the runtime, each test starts on an empty Redis (conftest's _clean_state): a sweep sees only its own jobs.
pytestmark = pytest.mark.usefixtures("runtime")


async def running_job(queue: Queue, key: str) -> object:
    assert await queue.enqueue("sweep_stripe_events", key=key) is not None
    job = await queue.dequeue(timeout=0.5)  # under the client's 1 s socket timeout
    assert job is not None and job.key == key
    await job.update(status=Status.ACTIVE)  # what the worker does as it starts the job
    return job


async def test_q2_a_touch_moves_a_running_jobs_heartbeat_on(queue: Queue) -> None:
    key = f"heartbeat-{uuid.uuid4().hex}"
    job = await running_job(queue, key)
    before = (await queue.job(key)).touched  # type: ignore[union-attr]
    await asyncio.sleep(0.002)  # touched is in milliseconds: let the clock move one
    assert await touch(queue, job)  # type: ignore[arg-type]
    stored = await queue.job(key)
    assert stored is not None and stored.status == Status.ACTIVE and stored.touched > before


async def test_q2_a_touch_racing_the_jobs_finish_leaves_it_finished(queue: Queue) -> None:
    key = f"heartbeat-{uuid.uuid4().hex}"
    # The touch reads first, the finish writes next, the touch would write last: the old interleaving exactly.
    for n in range(20):
        job = await running_job(queue, f"{key}-{n}")
        await asyncio.gather(touch(queue, job), queue.finish(job, Status.COMPLETE, result="done"))  # type: ignore[arg-type]
        stored = await queue.job(f"{key}-{n}")
        assert stored is not None
        assert stored.status == Status.COMPLETE, f"job {n} went back to {stored.status} after it finished"
        assert stored.result == "done"


async def test_q2_a_finished_job_is_never_touched(queue: Queue) -> None:
    key = f"heartbeat-{uuid.uuid4().hex}"
    job = await running_job(queue, key)
    await queue.finish(job, Status.FAILED, error="boom")  # type: ignore[arg-type]
    assert await touch(queue, job) is False  # type: ignore[arg-type]
    stored = await queue.job(key)
    assert stored is not None and stored.status == Status.FAILED and stored.error == "boom"


# --- the sweep and a job caught between dequeue and start ----------------------------------------------------


async def sweep_now(queue: Queue) -> list[str]:
    """One sweep, as the worker's upkeep runs it every two seconds (the lock lets one worker sweep at a time)."""
    await queue.redis.delete(queue._sweep)  # type: ignore[attr-defined]  # the lock an earlier sweep left
    return await queue.sweep(lock=60, abort=0.05)


async def test_q2_a_job_just_dequeued_is_not_swept_before_its_worker_starts_it(queue: Queue) -> None:
    # A worker has moved the job to the active list (BLMOVE) and not yet written it active. SAQ's own sweep
    # aborted it there; on a Stripe event's last attempt that ended the event `aborted` (CI, 3 Dec 2026).
    key = f"dequeued-{uuid.uuid4().hex}"
    assert await queue.enqueue("sweep_stripe_events", key=key, retries=1) is not None
    job = await queue.dequeue(timeout=0.5)
    assert job is not None and job.key == key
    assert job.id not in await sweep_now(queue)
    await job.update(status=Status.ACTIVE)  # the worker goes on and starts it
    await queue.finish(job, Status.COMPLETE, result="done")
    stored = await queue.job(key)
    assert stored is not None and (stored.status, stored.result) == (Status.COMPLETE, "done")


async def test_q2_a_worker_that_died_between_dequeue_and_start_loses_the_job_to_a_later_sweep(
    queue: Queue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(queues, "DEQUEUE_GRACE", 0)  # the grace is five seconds; the test does not wait them
    key = f"dequeued-{uuid.uuid4().hex}"
    assert await queue.enqueue("sweep_stripe_events", key=key, retries=2) is not None
    job = await queue.dequeue(timeout=0.5)
    assert job is not None and job.key == key
    # The first sweep to find it there only notes it; a later one (the job still there) re-queues it.
    assert job.id not in await sweep_now(queue)
    assert job.id in await sweep_now(queue)
    stored = await queue.job(key)
    assert stored is not None and stored.status == Status.QUEUED
    assert await queue.redis.lpos(queue._queued, job.id) is not None  # type: ignore[attr-defined,misc]


async def test_q2_an_idle_slot_waits_for_a_job_without_its_redis_connection_timing_out(
    queue: Queue, app: Litestar, runtime: Runtime
) -> None:
    # A slot blocked in BLMOVE as long as the client's socket timeout (SAQ's default: for ever) ended every idle
    # wait in a client-side TimeoutError; a job the server moved to the active list just as the client gave up
    # was answered to nobody, and only a sweep's abort found it (CI, 3 Dec 2026: an event's job `aborted`).
    timeout = runtime.settings.redis_timeout
    workers = app.plugins.get(SAQPlugin)._worker_instances.values()
    assert workers and all(w.dequeue_timeout == dequeue_timeout(timeout) < timeout for w in workers)
    for _ in range(2):  # an empty queue: nothing comes, and nothing breaks
        assert await queue.dequeue(timeout=dequeue_timeout(timeout)) is None
