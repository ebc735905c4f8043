"""The full re-sync with Stripe: page through every object, mirror it, reconcile our rows with it.

One sync at a time (a Redis lock whose TTL the running sync keeps refreshing). Progress is saved after every page
(the cursor of the last completed page per resource), so a cancelled, failed or crashed run is continued by the
next one from there. At most ``stripe_sync_concurrency`` (2) requests are in flight: the current page's work and
the prefetch of the next page. Memory is bounded by a page: objects are never collected across pages.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import time
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from datetime import time as dtime
from typing import Any
from uuid import UUID

import stripe
import structlog
from redis.asyncio import Redis
from saq import Queue
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.db.queries import get_or_404
from app.db.upsert import upsert
from app.domain.audit.services import Actor, record_audit
from app.domain.sync.reconcile import OK, RECONCILERS, SKIPPED, Outcome, SyncContext
from app.lib.exceptions import ConflictError, FormError
from app.lib.settings import Settings
from app.lib.stripe_gateway import with_backoff

log = structlog.get_logger()

# In this order: accounts are linked before their subscriptions, subscriptions before their invoices.
RESOURCES: tuple[str, ...] = (
    "customers",
    "products",
    "prices",
    "subscriptions",
    "invoices",
    "payment_intents",
    "charges",
    "refunds",
    "disputes",
)
LABELS = {
    "customers": "Customers",
    "products": "Products",
    "prices": "Prices",
    "subscriptions": "Subscriptions",
    "invoices": "Invoices",
    "payment_intents": "Payment intents",
    "charges": "Charges",
    "refunds": "Refunds",
    "disputes": "Disputes",
}
# Extra list parameters: Stripe hides canceled subscriptions unless asked for all.
LIST_PARAMS: dict[str, dict[str, Any]] = {
    "subscriptions": {"status": "all"},
    "charges": {"expand": ["data.balance_transaction"]},  # the fee and net (reconcile_charges)
}
COUNT_KEYS = ("created", "updated", "unchanged", "skipped", "failed")
PAGE_SIZE = 100
LOCK_KEY = "cartwright:sync:lock"
LOCK_TTL = 120  # seconds; refreshed every LOCK_TTL / 4 while a sync runs
MAX_REPORTED = 500  # divergences and errors kept in a run's report (the counts stay exact)

DbFactory = Callable[[], AbstractAsyncContextManager[AsyncSession]]


# --- options --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SyncOptions:
    since: date | None = None
    only: tuple[str, ...] = ()

    @property
    def resources(self) -> tuple[str, ...]:
        return tuple(r for r in RESOURCES if not self.only or r in self.only)

    @property
    def since_ts(self) -> int | None:
        return int(datetime.combine(self.since, dtime.min, UTC).timestamp()) if self.since else None

    def to_json(self) -> dict[str, Any]:
        return {"since": self.since.isoformat() if self.since else None, "only": list(self.only) or None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SyncOptions:
        since = data.get("since")
        return cls(since=date.fromisoformat(since) if since else None, only=tuple(data.get("only") or ()))


def parse_options(since: str | None, only: str | list[str] | None) -> SyncOptions:
    """From the form or the command line: ``since`` a date (YYYY-MM-DD), ``only`` resources, comma-separated."""
    errors: dict[str, str] = {}
    since_date: date | None = None
    if since and since.strip():
        try:
            since_date = date.fromisoformat(since.strip())
        except ValueError:
            errors["since"] = "Enter a date as YYYY-MM-DD."
    names = only if isinstance(only, list) else (only or "").split(",")
    wanted = [n.strip().lower().replace("-", "_") for n in names if n and n.strip()]
    unknown = [n for n in wanted if n not in RESOURCES]
    if unknown:
        errors["only"] = f"Unknown: {', '.join(unknown)}. Choose from {', '.join(RESOURCES)}."
    if errors:
        raise FormError(errors, "Check the sync options.")
    return SyncOptions(since=since_date, only=tuple(r for r in RESOURCES if r in wanted))


# --- the lock -------------------------------------------------------------------------------------------------

_REFRESH = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('expire', KEYS[1], ARGV[2]) end return 0"
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


class SyncLock:
    """One sync at a time, across processes. The value is the run id, so a retried job takes its own lock back."""

    def __init__(self, redis: Redis, token: str, ttl: int = LOCK_TTL) -> None:
        self.redis = redis
        self.token = token
        self.ttl = ttl

    async def acquire(self) -> bool:
        if await self.redis.set(LOCK_KEY, self.token, nx=True, ex=self.ttl):
            return True
        return await self.refresh()  # already ours (the job after `start_sync`, or a retried job)

    async def refresh(self) -> bool:
        return bool(await self.redis.eval(_REFRESH, 1, LOCK_KEY, self.token, str(self.ttl)))

    async def release(self) -> None:
        await self.redis.eval(_RELEASE, 1, LOCK_KEY, self.token)


async def lock_holder(redis: Redis) -> str | None:
    value = await redis.get(LOCK_KEY)
    return value.decode() if isinstance(value, bytes) else value


# --- runs: start, cancel, read --------------------------------------------------------------------------------


def _empty_counts() -> dict[str, int]:
    return dict.fromkeys(COUNT_KEYS, 0)


async def _close_orphans(db: AsyncSession, redis: Redis) -> None:
    """Runs still 'running' whose lock is gone died with their process: mark them failed (they can be resumed)."""
    holder = await lock_holder(redis)
    orphans = await db.scalars(select(m.SyncRun).where(m.SyncRun.status == m.SyncStatus.RUNNING.value))
    for run in orphans:
        if str(run.id) != holder:
            run.status = m.SyncStatus.FAILED.value
            run.finished_at = run.finished_at or datetime.now(UTC)
            run.errors = [*run.errors, "Interrupted: the process running it stopped (it resumes on the next sync)."]
            run.summary = "Interrupted."


async def _resumable(db: AsyncSession, options: SyncOptions) -> m.SyncRun | None:
    """The latest run, if it was interrupted (cancelled or failed) with the same options and nobody resumed it."""
    latest = await db.scalar(select(m.SyncRun).order_by(m.SyncRun.started_at.desc(), m.SyncRun.id.desc()).limit(1))
    if latest is None or latest.status not in {m.SyncStatus.CANCELLED, m.SyncStatus.FAILED}:
        return None
    if SyncOptions.from_json(latest.options) != options:
        return None
    if not any(p.get("pages") for p in latest.progress.values()):
        return None
    return latest


async def start_sync(
    db: AsyncSession,
    redis: Redis,
    *,
    trigger: m.SyncTrigger,
    options: SyncOptions,
    requested_by: m.User | None = None,
    actor: Actor | None = None,
    resume: bool = True,
) -> m.SyncRun:
    """Create a run and take the lock for it (the job or the CLI then runs it). Raises ``ConflictError`` when a
    sync is already running. Continues an interrupted run from its last completed page when ``resume``."""
    await _close_orphans(db, redis)
    await db.flush()
    previous = await _resumable(db, options) if resume else None
    run = m.SyncRun(
        started_at=datetime.now(UTC),
        trigger=trigger.value,
        status=m.SyncStatus.RUNNING.value,
        requested_by_id=requested_by.id if requested_by else None,
        requested_by=requested_by.email if requested_by else trigger.value,
        options=options.to_json(),
        counts={},
        progress={},
        errors=[],
        divergences=[],
    )
    if previous is not None:
        run.resumed_from_id = previous.id
        run.counts = json.loads(json.dumps(previous.counts))
        run.progress = json.loads(json.dumps(previous.progress))
        run.divergences = list(previous.divergences)
    db.add(run)
    await db.flush()
    if not await SyncLock(redis, str(run.id)).acquire():
        await db.rollback()
        raise ConflictError("A sync is already running. Wait for it to finish, or cancel it first.")
    if actor is not None:  # a staff member pressed "Sync now" (the CLI and the cron have no actor)
        await record_audit(
            db,
            actor,
            "sync.start",
            target=("sync_run", run.id, f"Stripe sync {run.started_at:%Y-%m-%d %H:%M}"),
            summary="Started a Stripe sync" + (" (resuming the interrupted one)" if previous else ""),
            after=options.to_json(),
        )
    await db.commit()
    log.info("sync.started", run=str(run.id), trigger=trigger.value, resumed_from=str(run.resumed_from_id or ""))
    return run


async def request_cancel(db: AsyncSession, run_id: UUID, *, actor: Actor | None = None) -> m.SyncRun:
    """Ask a running sync to stop after its current page (it keeps what it did; the next sync resumes)."""
    run = await get_or_404(db, m.SyncRun, run_id, "That sync run doesn't exist.", fresh=False)
    if run.status != m.SyncStatus.RUNNING:
        raise ConflictError("That sync is not running any more.")
    run.cancel_requested = True
    if actor is not None:
        await record_audit(
            db,
            actor,
            "sync.cancel",
            target=("sync_run", run.id, f"Stripe sync {run.started_at:%Y-%m-%d %H:%M}"),
            summary="Cancelled a running Stripe sync",
        )
    await db.commit()
    return run


async def latest_run(db: AsyncSession) -> m.SyncRun | None:
    """The newest run ("Last synced" on the dashboard: ``admin/_sync_status.html.j2``)."""
    run: m.SyncRun | None = await db.scalar(
        select(m.SyncRun).order_by(m.SyncRun.started_at.desc(), m.SyncRun.id.desc()).limit(1)
    )
    return run


async def last_successful_run(db: AsyncSession) -> m.SyncRun | None:
    run: m.SyncRun | None = await db.scalar(
        select(m.SyncRun)
        .where(m.SyncRun.status == m.SyncStatus.SUCCEEDED.value)
        .order_by(m.SyncRun.started_at.desc())
        .limit(1)
    )
    return run


async def recent_runs(db: AsyncSession, limit: int = 20) -> list[m.SyncRun]:
    return list(await db.scalars(select(m.SyncRun).order_by(m.SyncRun.started_at.desc()).limit(limit)))


async def get_run(db: AsyncSession, run_id: UUID) -> m.SyncRun:
    return await get_or_404(db, m.SyncRun, run_id, "That sync run doesn't exist.", fresh=False)


@dataclass(frozen=True, slots=True)
class ResourceView:
    """One resource's line in the progress and report tables."""

    name: str
    label: str
    objects: int
    pages: int
    cursor: str
    state: str  # pending | running | done
    counts: dict[str, int]


def resource_views(run: m.SyncRun) -> list[ResourceView]:
    options = SyncOptions.from_json(run.options)
    views = []
    for name in options.resources:
        p = run.progress.get(name) or {}
        state = "done" if p.get("done") else ("running" if run.current_resource == name else "pending")
        views.append(
            ResourceView(
                name=name,
                label=LABELS[name],
                objects=int(p.get("objects") or 0),
                pages=int(p.get("pages") or 0),
                cursor=str(p.get("cursor") or ""),
                state=state,
                counts={**_empty_counts(), **(run.counts.get(name) or {})},
            )
        )
    return views


# --- the engine -----------------------------------------------------------------------------------------------


def fingerprint(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


class SyncCancelledError(Exception):
    pass


@dataclass
class SyncEngine:
    """Runs one ``SyncRun`` to its end. ``on_page`` (the CLI's progress line, the job's heartbeat) is called
    after every saved page."""

    db_factory: DbFactory
    stripe: stripe.StripeClient
    redis: Redis
    settings: Settings
    queue: Queue | None
    run_id: UUID
    on_page: Callable[[m.SyncRun], Any] | None = None
    backoff_base: float = 0.5
    _lock: SyncLock = field(init=False)
    _lost_lock: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self._lock = SyncLock(self.redis, str(self.run_id))

    async def run(self) -> m.SyncRun:
        """Run (or continue) the sync; always leaves the run finished with a status, and returns it."""
        started = time.perf_counter()
        async with self.db_factory() as db:
            run = await get_run(db, self.run_id)
            if run.is_finished:
                return run
            if not await self._lock.acquire():
                run.status = m.SyncStatus.FAILED.value
                run.errors = [*run.errors, "Another sync holds the lock."]
                run.finished_at = datetime.now(UTC)
                await db.commit()
                return run
            options = SyncOptions.from_json(run.options)
        keeper = asyncio.create_task(self._keep_lock())
        status, error = m.SyncStatus.SUCCEEDED, ""
        try:
            for resource in options.resources:
                await self._sync_resource(resource, options)
        except SyncCancelledError:
            status = m.SyncStatus.CANCELLED
        except asyncio.CancelledError:
            # The worker is stopping (job timeout, shutdown, kill): save that much, free the lock, let it go.
            await asyncio.shield(self._finish(m.SyncStatus.FAILED, "Interrupted (the worker stopped).", started))
            await asyncio.shield(self._lock.release())
            keeper.cancel()
            raise
        except Exception as exc:
            log.exception("sync.failed", run=str(self.run_id))
            status, error = m.SyncStatus.FAILED, f"{type(exc).__name__}: {exc}"
        finally:
            keeper.cancel()
        if status == m.SyncStatus.SUCCEEDED:
            await self._after_success()
        run = await self._finish(status, error, started)
        await self._lock.release()
        return run

    async def _keep_lock(self) -> None:
        while True:
            await asyncio.sleep(self._lock.ttl / 4)
            if not await self._lock.refresh():
                self._lost_lock = True
                return

    async def _finish(self, status: m.SyncStatus, error: str, started: float) -> m.SyncRun:
        async with self.db_factory() as db:
            run = await get_run(db, self.run_id)
            run.status = status.value
            run.finished_at = datetime.now(UTC)
            run.duration_ms = int((time.perf_counter() - started) * 1000)
            run.current_resource = ""
            if error:
                run.errors = [*run.errors, error][-MAX_REPORTED:]
            run.summary = summarise(run)
            await db.commit()
            log.info("sync.finished", run=str(run.id), status=run.status, summary=run.summary)
            return run

    async def _after_success(self) -> None:
        try:
            async with self.db_factory() as db:
                await rebuild_metrics(db)
        except Exception as exc:  # the mirror is right; a metrics failure is reported, not a failed sync
            log.exception("sync.metrics_failed", run=str(self.run_id))
            async with self.db_factory() as db:
                run = await get_run(db, self.run_id)
                run.errors = [*run.errors, f"Metrics rebuild failed: {type(exc).__name__}: {exc}"]
                await db.commit()

    async def _fetch(self, resource: str, cursor: str | None, options: SyncOptions) -> tuple[list[Any], bool]:
        """One page, as plain JSON: the SDK's request path (retries, errors such as RateLimitError) without turning
        each object into a StripeObject, which costs more CPU than everything else the sync does with it."""
        params: dict[str, Any] = {"limit": PAGE_SIZE, **LIST_PARAMS.get(resource, {})}
        if cursor:
            params["starting_after"] = cursor
        if options.since_ts is not None:
            params["created"] = {"gte": options.since_ts}
        response = await with_backoff(
            lambda: self.stripe.raw_request_async("get", f"/v1/{resource}", **params), base_delay=self.backoff_base
        )
        page: dict[str, Any] = response.data
        return list(page.get("data") or []), bool(page.get("has_more"))

    async def _sync_resource(self, resource: str, options: SyncOptions) -> None:
        async with self.db_factory() as db:
            run = await get_run(db, self.run_id)
            progress = dict(run.progress.get(resource) or {})
            if progress.get("done"):
                return
            run.current_resource = resource
            await db.commit()
        cursor: str | None = progress.get("cursor")
        fetch = asyncio.create_task(self._fetch(resource, cursor, options))
        try:
            while True:
                objects, has_more = await fetch
                if has_more and objects:
                    # Prefetch the next page while this one is reconciled (the second request slot).
                    fetch = asyncio.create_task(self._fetch(resource, objects[-1]["id"], options))
                await self._process_page(resource, objects, done=not has_more or not objects)
                del objects
                if not has_more:
                    return
                await self._check_cancel()
        finally:
            if not fetch.done():
                fetch.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await fetch

    async def _check_cancel(self) -> None:
        if self._lost_lock:
            raise RuntimeError("Lost the sync lock (the run was too slow to refresh it).")
        async with self.db_factory() as db:
            if await db.scalar(select(m.SyncRun.cancel_requested).where(m.SyncRun.id == self.run_id)):
                raise SyncCancelledError

    async def _process_page(self, resource: str, objects: list[dict[str, Any]], *, done: bool) -> None:
        counts = _empty_counts()
        divergences: list[str] = []
        errors: list[str] = []
        async with self.db_factory() as db:
            ids = [o["id"] for o in objects]
            known = {
                sid: (row_id, fp)
                for sid, row_id, fp in (
                    await db.execute(
                        select(m.StripeObject.stripe_id, m.StripeObject.id, m.StripeObject.fingerprint).where(
                            m.StripeObject.stripe_id.in_(ids)
                        )
                    )
                )
            }
            await db.rollback()
            fingerprints = {o["id"]: fingerprint(o) for o in objects}
            changed = [o for o in objects if known.get(o["id"], (None, None))[1] != fingerprints[o["id"]]]
            counts["unchanged"] = len(objects) - len(changed)
            outcomes = await self._reconcile(db, resource, changed, errors)
            new_rows: list[dict[str, Any]] = []
            updates: list[dict[str, Any]] = []
            for obj in changed:
                outcome = outcomes.get(obj["id"])
                if outcome is None:
                    counts["failed"] += 1  # the fingerprint is not saved: the next sync tries it again
                    continue
                if outcome.divergence:
                    divergences.append(outcome.divergence)
                if obj["id"] in known:
                    counts["updated" if outcome.result == OK else "skipped"] += 1
                    updates.append({"id": known[obj["id"]][0], "fingerprint": fingerprints[obj["id"]]})
                else:
                    counts["created" if outcome.result == OK else "skipped"] += 1
                    new_rows.append(
                        {
                            "stripe_id": obj["id"],
                            "object_type": str(obj.get("object") or resource),
                            "fingerprint": fingerprints[obj["id"]],
                            "stripe_created": int(obj.get("created") or 0),
                        }
                    )
            # Keyed by the Stripe id: a page redone after a crash, or an object seen twice, updates its one row.
            for values in new_rows:
                await upsert(db, m.StripeObject, "stripe_id", values, update=["fingerprint", "stripe_created"])
            if updates:
                await db.execute(update(m.StripeObject), updates)
            # The page's mirror rows and its progress are saved together: a crash redoes the whole page (the
            # reconcilers are idempotent) and the counts stay exact.
            run = await get_run(db, self.run_id)
            progress = dict(run.progress.get(resource) or {})
            progress["objects"] = int(progress.get("objects") or 0) + len(objects)
            progress["pages"] = int(progress.get("pages") or 0) + 1
            if objects:
                progress["cursor"] = objects[-1]["id"]
            progress["done"] = done
            total = {**_empty_counts(), **(run.counts.get(resource) or {})}
            for key, value in counts.items():
                total[key] += value
            run.progress = {**run.progress, resource: progress}
            run.counts = {**run.counts, resource: total}
            if divergences:
                run.divergences = [*run.divergences, *divergences][:MAX_REPORTED]
            if errors:
                run.errors = [*run.errors, *errors][:MAX_REPORTED]
            await db.commit()
            if self.on_page is not None:
                result = self.on_page(run)
                if asyncio.iscoroutine(result):
                    await result

    async def _reconcile(
        self, db: AsyncSession, resource: str, objects: list[dict[str, Any]], errors: list[str]
    ) -> dict[str, Outcome]:
        if not objects:
            return {}
        ctx = SyncContext(db, self.stripe, self.settings, self.queue, self.redis)
        reconciler = RECONCILERS[resource]
        try:
            return await reconciler(ctx, objects)
        except Exception:
            await db.rollback()
            log.warning("sync.page_failed_retrying_one_by_one", resource=resource, run=str(self.run_id))
        # Something in the page failed: reconcile one object at a time so one bad object fails alone.
        outcomes: dict[str, Outcome] = {}
        for obj in objects:
            try:
                outcomes.update(await reconciler(ctx, [obj]))
            except Exception as exc:
                await db.rollback()
                log.warning("sync.object_failed", resource=resource, object=obj["id"], error=str(exc))
                errors.append(f"{LABELS[resource]} {obj['id']}: {type(exc).__name__}: {exc}")
        return outcomes


def summarise(run: m.SyncRun) -> str:
    totals = _empty_counts()
    for counts in run.counts.values():
        for key in COUNT_KEYS:
            totals[key] += int(counts.get(key) or 0)
    objects = sum(int(p.get("objects") or 0) for p in run.progress.values())
    return (
        f"{objects} objects: {totals['created']} created, {totals['updated']} updated, "
        f"{totals['unchanged']} unchanged, {totals['skipped']} skipped, {totals['failed']} failed; "
        f"{len(run.divergences)} divergences fixed."
    )


async def rebuild_metrics(db: AsyncSession) -> None:
    """After a successful sync the analytics (MRR, movements) are rebuilt from the repaired mirror."""
    # A plain import here: the analytics area owns the function; the sync only says when to call it.
    from app.domain.analytics.movements import rebuild_subscription_metrics

    await rebuild_subscription_metrics(db)
    await db.commit()


__all__ = [
    "LABELS",
    "RESOURCES",
    "SKIPPED",
    "SyncEngine",
    "SyncLock",
    "SyncOptions",
    "latest_run",
    "parse_options",
    "recent_runs",
    "request_cancel",
    "start_sync",
]
