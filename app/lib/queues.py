"""The job queues, and which one each job runs on, so bulk work can never delay fulfilment.

* ``cartwright-payments``: Stripe events (fulfilment, refunds, subscriptions), with workers of their own.
* ``cartwright-emails``: sending email.
* ``cartwright``: everything else, bulk and periodic (re-sync, catch-up, sweeps, product sync, alerts). It keeps
  the single queue's old name and every task, so jobs left on it by an older release still run.

Code that enqueues does not choose: each queue object here routes a job to its queue by function name
(``ROUTES``), so ``EmailService(db, queue)`` enqueues on the email queue whichever queue's job is calling.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from redis.asyncio import Redis
from redis.exceptions import WatchError
from saq.job import Job, Status
from saq.queue.redis import RedisQueue
from saq.utils import now

log = structlog.get_logger()

PAYMENTS = "cartwright-payments"
EMAILS = "cartwright-emails"
BACKGROUND = "cartwright"
NAMES = (PAYMENTS, EMAILS, BACKGROUND)

# Seconds without a touch after which SAQ's sweep takes a running job for lost and re-queues it. The worker
# touches its running jobs every second (app/server/saq_worker.py), so only a dead worker's jobs go stale.
JOB_HEARTBEAT = 5

# How long a job may lie in the active list still marked ``queued`` before the sweep takes it for lost (see
# ``RoutingQueue.sweep``). A worker fills that gap in milliseconds; one that died inside it costs a heartbeat.
DEQUEUE_GRACE = JOB_HEARTBEAT

# SAQ's own read of the active list (saq/queue/redis.py), under the sweep lock that lets one worker sweep at a time.
_ACTIVE_JOBS = """
local id_jobs = {}
if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('SETEX', KEYS[1], ARGV[1], 1)
    for i, v in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
        id_jobs[i] = {v, redis.call('GET', v)}
    end
end
return id_jobs
"""

ROUTES: dict[str, str] = {  # test_priority_queues.py fails if these go back to one queue
    "process_stripe_event": PAYMENTS,
    "send_email": EMAILS,
}


def queue_for(function: str) -> str:
    return ROUTES.get(function, BACKGROUND)


class RoutingQueue(RedisQueue):
    """A SAQ Redis queue that sends each enqueued job to the queue ``ROUTES`` names (maybe itself)."""

    def __init__(self, redis: Redis, name: str, **kwargs: Any) -> None:
        super().__init__(redis, name=name, **kwargs)
        self.family: dict[str, RoutingQueue] = {name: self}
        self._dequeued_at: dict[tuple[bytes, int], int] = {}  # (job id, attempts) -> first seen queued in active

    async def enqueue(self, job_or_func: str | Job, **kwargs: Any) -> Job | None:
        function = job_or_func if isinstance(job_or_func, str) else job_or_func.function
        _carry_request_id(job_or_func, kwargs)
        if isinstance(job_or_func, Job):
            job_or_func.heartbeat = job_or_func.heartbeat or JOB_HEARTBEAT
        elif not kwargs.get("heartbeat"):  # SAQ's cron scheduler passes heartbeat=0
            kwargs["heartbeat"] = JOB_HEARTBEAT
        target = self.family.get(queue_for(function), self)
        if target is self:
            return await super().enqueue(job_or_func, **kwargs)
        return await target.enqueue(job_or_func, **kwargs)

    async def job(self, job_key: str) -> Job | None:
        """A job by key on whichever queue of the family holds it (keys are unique per function)."""
        for queue in (self, *(q for q in self.family.values() if q is not self)):
            found = await RedisQueue.job(queue, job_key)
            if found is not None:
                return found
        return None

    async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
        """SAQ's sweep without its race with dequeue (tobymao/saq#124, #277).

        A worker moves a job to the active list (BLMOVE) and only then writes it ``active``. SAQ's sweep took a
        job caught in between for a lost one and aborted it: on its last attempt, a Stripe event's job ended
        ``aborted`` while its handler ran on (seen in CI). Here a job found ``queued`` in the active list is
        swept only by a later sweep, once that same attempt has been seen so for ``DEQUEUE_GRACE`` seconds. The
        rest is SAQ's.
        """
        if not self._cleanup_script:
            self._cleanup_script = self.redis.register_script(_ACTIVE_JOBS)
        id_jobs = await self._cleanup_script(keys=[self._sweep, self._active], args=[lock], client=self.redis)
        current = now()
        dequeued_at: dict[tuple[bytes, int], int] = {}
        swept: list[bytes] = []
        for job_id, job_bytes in id_jobs:
            job = self.deserialize(job_bytes)
            if job is None:
                swept.append(job_id)
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.lrem(self._active, 0, job_id)
                    pipe.zrem(self._incomplete, job_id)
                    await pipe.execute()
                log.info("job.swept_missing", job_id=job_id.decode())
                continue
            if job.status == Status.QUEUED:
                seen = self._dequeued_at.get((job_id, job.attempts))
                dequeued_at[(job_id, job.attempts)] = current if seen is None else seen
                if seen is None or current - seen < DEQUEUE_GRACE * 1000:  # first seen now, or too recently
                    continue
            elif job.status == Status.ACTIVE and not job.stuck:
                continue
            swept.append(job_id)
            log.info("job.swept", job=job.info(), status=str(job.status))
            await self.abort(job, error=self.swept_error_message)
            with contextlib.suppress(asyncio.TimeoutError):
                await job.refresh(abort)
            if job.retryable:
                await self.retry(job, error=self.swept_error_message)
            else:
                await self.finish(job, Status.ABORTED, error=self.swept_error_message)
        if id_jobs:  # this sweep held the lock and read the list: what it did not see is no longer queued in it
            self._dequeued_at = dequeued_at
        return [job_id.decode() for job_id in swept]


async def touch(queue: RedisQueue, job: Job) -> bool:
    """Move a running job's ``touched`` on (its heartbeat), only while the stored job is still active.

    SAQ's ``job.update()`` reads the stored status and then writes the whole job back: when the job finishes in
    between, the write puts it back to ``active`` after ``complete``. Out of the active list, no sweep ever looks
    at it again, and its key refuses a new enqueue for ever (a Stripe event the catch-up sweeper could not
    re-run). Here the read and the write are one optimistic transaction that gives way to any other writer.
    """
    async with queue.redis.pipeline(transaction=True) as pipe:
        try:
            await pipe.watch(job.id)
            stored = queue.deserialize(await pipe.get(job.id))
            if stored is None or stored.status != Status.ACTIVE:
                return False
            stored.touched = now()
            pipe.multi()  # type: ignore[no-untyped-call]
            pipe.set(job.id, queue.serialize(stored))
            await pipe.execute()
        except WatchError:  # the job was written meanwhile (finished, retried, aborted): its writer wins
            return False
    job.touched = stored.touched
    return True


def _carry_request_id(job_or_func: str | Job, kwargs: dict[str, Any]) -> None:
    """A job enqueued while a request runs carries its id in ``meta``, so the worker's lines for it share the id."""
    request_id = structlog.contextvars.get_contextvars().get("request_id")
    if not request_id:
        return
    if isinstance(job_or_func, Job):
        job_or_func.meta.setdefault("request_id", request_id)
    else:
        kwargs["meta"] = {"request_id": request_id, **(kwargs.get("meta") or {})}


def build_queues(redis: Redis, **kwargs: Any) -> dict[str, RoutingQueue]:
    """The three queues on one Redis client, each able to route to the others."""
    queues = {name: RoutingQueue(redis, name, **kwargs) for name in NAMES}
    for queue in queues.values():
        queue.family = queues
    return queues
