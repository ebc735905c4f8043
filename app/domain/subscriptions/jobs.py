"""Moving a plan's subscribers off its archived prices, at their next renewal (background queue).

Started from the plans back office (``app/domain/plans/admin.py``); it lives here because what it changes is
each member's subscription (subscriptions import plans, never the reverse)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from uuid import UUID

import stripe
import structlog
from saq.types import Context
from sqlalchemy import select

from app.db import models as m
from app.domain.audit.services import Actor, record_audit
from app.domain.plans.stripe_sync import PlanStripeSync
from app.domain.subscriptions.services import SubscriptionError, SubscriptionService
from app.lib.runtime import Runtime

log = structlog.get_logger()


@dataclass
class MoveResult:
    moved: int = 0  # scheduled now: their next invoice is at the current price
    already: int = 0  # Stripe had them on the current price already (an earlier run), or no longer live there
    no_price: int = 0  # the plan no longer sells their interval: nothing to move them to
    failed: int = 0  # Stripe refused or could not be reached; running the move again retries them

    def summary(self) -> str:
        parts = [f"{self.moved} moved to the current price from their next renewal"]
        if self.already:
            parts.append(f"{self.already} already moved or no longer subscribed")
        if self.no_price:
            parts.append(f"{self.no_price} left as they are (the plan no longer sells their interval)")
        if self.failed:
            parts.append(f"{self.failed} failed (run the move again to retry them)")
        return "; ".join(parts)


async def move_plan_subscribers(ctx: Context, *, plan_id: str, actor_id: str = "") -> dict[str, int | str]:
    """For each live subscription on an archived price of the plan, switch it at Stripe to the plan's current price
    of the same interval and tier with no proration, so it takes effect at the next renewal. Idempotent: Stripe's
    state is read first and anyone already on the current price is skipped; one subscriber per transaction."""
    runtime: Runtime = ctx["runtime"]  # type: ignore[typeddict-item]
    result = MoveResult()
    pid = UUID(plan_id)
    async with runtime.db() as db:
        plan = await db.get(m.Plan, pid)
        if plan is None:
            return {"summary": "The plan no longer exists.", **asdict(result)}
        # The current prices must exist at Stripe before anyone can be moved onto them. If Stripe refuses, each
        # subscriber below fails on its own and the summary says to run the move again.
        try:
            await PlanStripeSync(db, runtime.stripe).ensure(plan)
        except stripe.StripeError as exc:
            await db.rollback()
            log.warning("plans.move_sync_failed", plan_id=plan_id, error=type(exc).__name__)
        ids = list(
            await db.scalars(
                select(m.Subscription.id)
                .join(m.PlanPrice, m.PlanPrice.id == m.Subscription.plan_price_id)
                .where(
                    m.PlanPrice.plan_id == pid,
                    m.PlanPrice.is_active.is_(False),
                    m.Subscription.status.in_(m.LIVE_SUBSCRIPTION_STATUSES),
                )
                .order_by(m.Subscription.id)
            )
        )
    for sub_id in ids:
        async with runtime.db() as db:
            sub = await db.get(m.Subscription, sub_id)
            plan = await db.get(m.Plan, UUID(plan_id))
            if sub is None or sub.price is None or plan is None:
                continue
            target = plan.price_for(sub.price.interval, sub.price.tier)
            if target is None or target.id == sub.price.id:
                result.no_price += 1
                continue
            stripe_subscription = sub.stripe_subscription_id  # read now: the rollback below expires the row
            try:
                moved = await SubscriptionService(db, runtime.stripe).move_at_renewal(sub, target)
            except (stripe.StripeError, SubscriptionError) as exc:
                await db.rollback()
                result.failed += 1
                log.warning("plans.move_failed", subscription=stripe_subscription, error=type(exc).__name__)
                continue
            if moved:
                result.moved += 1
            else:
                result.already += 1
    async with runtime.db() as db:
        plan = await db.get(m.Plan, UUID(plan_id))
        actor = await db.get(m.User, UUID(actor_id)) if actor_id else None
        await record_audit(
            db,
            Actor(actor),
            "plan.move_subscribers_done",
            target=("plan", plan_id, plan.name if plan else plan_id),
            summary=result.summary(),
            after=asdict(result),
        )
        await db.commit()
    log.info("plans.subscribers_moved", plan_id=plan_id, **asdict(result))
    return {"summary": result.summary(), **asdict(result)}
