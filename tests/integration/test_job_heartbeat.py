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

from saq import Queue
from saq.job import Status

from app.lib.queues import touch


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
