"""The job queues, and which one each job runs on, so bulk work can never delay fulfilment.

* ``cartwright-payments``: Stripe events (fulfilment, refunds, subscriptions), with workers of their own.
* ``cartwright-emails``: sending email.
* ``cartwright``: everything else, bulk and periodic (re-sync, catch-up, sweeps, product sync, alerts). It keeps
  the single queue's old name and every task, so jobs left on it by an older release still run.

Code that enqueues does not choose: each queue object here routes a job to its queue by function name
(``ROUTES``), so ``EmailService(db, queue)`` enqueues on the email queue whichever queue's job is calling.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from saq.job import Job
from saq.queue.redis import RedisQueue

PAYMENTS = "cartwright-payments"
EMAILS = "cartwright-emails"
BACKGROUND = "cartwright"
NAMES = (PAYMENTS, EMAILS, BACKGROUND)

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

    async def enqueue(self, job_or_func: str | Job, **kwargs: Any) -> Job | None:
        function = job_or_func if isinstance(job_or_func, str) else job_or_func.function
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


def build_queues(redis: Redis, **kwargs: Any) -> dict[str, RoutingQueue]:
    """The three queues on one Redis client, each able to route to the others."""
    queues = {name: RoutingQueue(redis, name, **kwargs) for name in NAMES}
    for queue in queues.values():
        queue.family = queues
    return queues
