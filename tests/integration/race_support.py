"""Making two writers meet: both reach the same INSERT before either runs it, on both databases.

A listener on the app's engine holds each of the first two connections about to insert into a table until both
have arrived (SQLAlchemy runs cursor executions inside its greenlet, so the listener may await). When one writer
is legitimately held behind the other's row lock (PostgreSQL ``FOR UPDATE``) the pair never forms: after
``patience`` seconds the waiting writer goes on alone, since the lock already serialises them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

from saq import Queue
from saq.types import Context
from sqlalchemy import event, select
from sqlalchemy.util import await_only

from app.db import models as m
from app.domain.payments.jobs import process_stripe_event
from app.lib.runtime import Runtime


@contextlib.contextmanager
def rendezvous_before_insert(runtime: Runtime, table: str, *, patience: float = 3.0) -> Iterator[list[str]]:
    """Within the block, the first two INSERTs into ``table`` wait for each other. Yields the arrivals seen."""
    barrier = asyncio.Barrier(2)
    arrivals: list[str] = []
    prefix = f"INSERT INTO {table} "

    def hold(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if not statement.lstrip().startswith(prefix) or len(arrivals) >= 2:
            return
        arrivals.append(statement)
        with contextlib.suppress(TimeoutError, asyncio.BrokenBarrierError):
            await_only(asyncio.wait_for(barrier.wait(), patience))

    engine = runtime.alchemy.get_engine().sync_engine
    event.listen(engine, "before_cursor_execute", hold)
    try:
        yield arrivals
    finally:
        event.remove(engine, "before_cursor_execute", hold)


def job_context(runtime: Runtime, queue: Queue) -> Context:
    """What SAQ hands the webhook job: the process's runtime and the worker (for its queue)."""
    return cast("Context", {"runtime": runtime, "worker": SimpleNamespace(queue=queue)})


async def stored_events(runtime: Runtime, *types: str) -> list[m.StripeEvent]:
    async with runtime.db() as db:
        stmt = select(m.StripeEvent).order_by(m.StripeEvent.api_created, m.StripeEvent.received_at)
        if types:
            stmt = stmt.where(m.StripeEvent.type.in_(types))
        return list(await db.scalars(stmt))


async def run_stored_events(runtime: Runtime, queue: Queue) -> None:
    """Process, one after the other, every stored event not processed yet (what the worker does, minus timing)."""
    for row in await stored_events(runtime):
        if row.status in {m.StripeEventStatus.RECEIVED.value, m.StripeEventStatus.FAILED.value}:
            await process_stripe_event(job_context(runtime, queue), event_id=row.stripe_id)
