"""Our SAQ worker: graceful on SIGTERM, and quick to hand a dead worker's job to another.

* **SIGTERM**: stop taking jobs, let running ones finish within ``WORKER_SHUTDOWN_GRACE_SECONDS``; SAQ cancels
  and re-queues what is still running then (``Job.retry``). SAQ's own ``stop`` also waited that whole grace
  period for its housekeeping loops (asleep for up to a minute) and for idle slots blocked in ``BLMOVE``; here
  the loops are cancelled at once and idle slots return within ``dequeue_timeout`` (under a second).
* **SIGKILL / a lost machine**: every job is enqueued with a ``heartbeat`` (app/lib/queues.py) and this worker
  touches each running job every ``TOUCH_EVERY`` seconds, so a job whose worker died looks stuck after
  ``JOB_HEARTBEAT`` seconds; the sweep runs every ``SWEEP_EVERY`` seconds and re-queues it (before: only after
  the job's timeout, 65 to 125 s).
* **The web process** builds these workers too (litestar-saq's plugin) but never runs them: litestar-saq's
  ``on_app_startup`` started a heartbeat-manager thread per queue there, whose ``stop`` on SIGTERM stopped that
  thread's event loop under ``run_until_complete`` ("HeartbeatManager thread crashed", RuntimeError: Event loop
  stopped before Future completed). A worker in its own process needs neither hook, so they do nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast

import structlog
from litestar_saq import SAQConfig, SAQPlugin
from litestar_saq.base import Worker

from app.lib.queues import touch

if TYPE_CHECKING:
    from collections.abc import Collection

    from saq.queue.redis import RedisQueue
    from saq.types import Context, Function, ReceivesContext

TOUCH_EVERY = 1.0
SWEEP_EVERY = 2
SWEEP_ABORT_WAIT = 0.5  # how long the sweep waits for a stuck job's worker to acknowledge the abort


def dequeue_timeout(redis_timeout: float) -> float:
    """How long an idle slot blocks in BLMOVE: well under the Redis client's socket timeout (``REDIS_TIMEOUT``).

    At the socket timeout or beyond (SAQ's default blocks for ever), every idle wait ended in a client-side
    TimeoutError and a reconnect, and a job the server moved to the active list just as the client gave up was
    answered to nobody: it lay there ``queued`` until a sweep aborted it, and a retry that started while that
    abort was still posted was aborted too (a Stripe event's job ended ``aborted``; an email came a minute late).
    """
    return min(1.0, redis_timeout / 2)


log = structlog.get_logger()


class GracefulWorker(Worker):
    async def on_app_startup(self) -> None:
        if not self.separate_process:  # pragma: no cover - we always run workers in their own process
            await super().on_app_startup()

    async def on_app_shutdown(self) -> None:
        if not self.separate_process:  # pragma: no cover
            await super().on_app_shutdown()

    def stopping(self) -> bool:
        """True once a shutdown began: a job cancelled now is re-queued, not failed."""
        return self.event.is_set()

    async def upkeep(self) -> list[asyncio.Task[None]]:
        async def poll(name: str, func: Callable[[], Awaitable[Any]], every: float) -> None:
            while not self.event.is_set():
                try:
                    await func()
                except Exception:
                    log.exception("worker.upkeep_failed", task=name)
                await asyncio.sleep(every)

        timers = self.timers
        return [
            asyncio.create_task(poll("abort", lambda: self.abort(timers["abort"]), timers["abort"]), name="upkeep"),
            asyncio.create_task(
                poll("schedule", lambda: self.schedule(timers["schedule"]), timers["schedule"]), name="upkeep"
            ),
            asyncio.create_task(
                poll("sweep", lambda: self.queue.sweep(SWEEP_EVERY, abort=SWEEP_ABORT_WAIT), SWEEP_EVERY), name="upkeep"
            ),
            asyncio.create_task(
                poll("worker_info", lambda: self.worker_info(timers["worker_info"] + 1), timers["worker_info"]),
                name="upkeep",
            ),
            asyncio.create_task(poll("touch", self.touch_running_jobs, TOUCH_EVERY), name="upkeep"),
        ]

    async def touch_running_jobs(self) -> None:
        """The heartbeat: a running job's ``touched`` moves on while this process lives."""
        for job in list(self.job_task_contexts):
            with contextlib.suppress(Exception):
                await touch(cast("RedisQueue", job.get_queue()), job)

    async def stop(self) -> None:
        self.event.set()  # no slot takes another job from here on
        # `cartwright workers run` forks one process per further queue; a SIGTERM to the first (a container's
        # PID 1) reaches only it, and it would then wait for ever on children that never heard. Pass it on.
        for child in multiprocessing.active_children():
            child.terminate()
        upkeep = [task for task in self.tasks if task.get_name() == "upkeep"]
        for task in upkeep:
            self.tasks.discard(task)
            task.cancel()
        await asyncio.gather(*upkeep, return_exceptions=True)
        await super().stop()


def saq_plugin(config: SAQConfig, *, grace_seconds: int, redis_timeout: float) -> SAQPlugin:
    """litestar-saq's plugin with ``GracefulWorker``s. It has no setting for the worker class and its CLI finds the
    plugin by exact type (no subclass), so the workers it would build lazily are put in its cache up front."""
    plugin = SAQPlugin(config=config)
    plugin._worker_instances = {
        qc.name: GracefulWorker(
            queue=plugin.get_queue(qc.name),
            id=qc.id,
            functions=cast("Collection[Function[Context]]", qc.tasks),
            cron_jobs=qc.scheduled_tasks,
            cron_tz=qc.cron_tz,
            concurrency=qc.concurrency,
            startup=cast("Collection[ReceivesContext[Context]]", qc.startup),
            shutdown=cast("Collection[ReceivesContext[Context]]", qc.shutdown),
            before_process=cast("Collection[ReceivesContext[Context]]", qc.before_process),
            after_process=cast("Collection[ReceivesContext[Context]]", qc.after_process),
            timers=qc.timers,
            dequeue_timeout=dequeue_timeout(redis_timeout),
            separate_process=qc.separate_process,
            metadata=qc.metadata,
            shutdown_grace_period_s=grace_seconds,
            cancellation_hard_deadline_s=qc.cancellation_hard_deadline_s,
            poll_interval=qc.poll_interval,
            enable_heartbeat_manager=False,  # our heartbeat is touch_running_jobs
        )
        for qc in config.queue_configs
    }
    return plugin


__all__ = ["GracefulWorker", "dequeue_timeout", "saq_plugin"]
