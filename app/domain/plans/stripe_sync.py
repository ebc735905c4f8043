"""Plans mirrored to Stripe: one Product per plan, one Price per PlanPrice row, linked by id.

Stripe Prices are immutable, so a price change is a new PlanPrice row (and Price) while the old row is deactivated
and its Price archived; subscriptions on the old Price keep it. Called lazily (before a subscription is created and
by `cartwright plans sync`), because the demo seed runs before the emulator is up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import stripe
import structlog
from sqlalchemy.ext.asyncio import AsyncSession
from stripe.params import PriceCreateParams, ProductCreateParams, ProductUpdateParams

from app.db import models as m
from app.lib.stripe_gateway import idempotency_key, is_missing, prices_of_product

log = structlog.get_logger()


@dataclass
class PlanSyncResult:
    """What one ``ensure`` changed at Stripe (all zero when the plan was already in sync)."""

    product_created: bool = False
    prices_created: int = 0
    prices_archived: int = 0
    relinked: int = 0  # stored ids Stripe no longer knew, recreated

    @property
    def changed(self) -> bool:
        return self.product_created or bool(self.prices_created or self.prices_archived)


class PlanStripeSync:
    """Makes Stripe match a plan. Safe to run any number of times, and concurrently: every POST has a deterministic
    idempotency key, so two callers racing create one object and store the same id."""

    def __init__(self, db: AsyncSession, stripe_client: stripe.StripeClient) -> None:
        self.db = db
        self.stripe = stripe_client

    async def ensure(self, plan: m.Plan) -> PlanSyncResult:
        """Ensure the plan has a Stripe Product and every active PlanPrice a Stripe Price; archive the Prices of
        deactivated rows. Recreates (and re-links) objects whose stored id Stripe doesn't know. Commits after each
        new link, so an id Stripe gave us is never lost to a later failure."""
        result = PlanSyncResult()
        product_id = await self._ensure_product(plan, result)
        known = await prices_of_product(self.stripe, product_id)
        for price in list(plan.prices):
            if price.is_active:
                await self._ensure_price(plan, price, product_id, known, result)
            elif price.stripe_price_id and known.get(price.stripe_price_id, {}).get("active"):
                await self.stripe.v1.prices.update_async(
                    price.stripe_price_id,
                    {"active": False},
                    {"idempotency_key": idempotency_key("plan-price-archive", price.id, price.stripe_price_id)},
                )
                result.prices_archived += 1
                log.info("plans.stripe_price_archived", plan=plan.slug, price_id=price.stripe_price_id)
        await self.db.commit()
        return result

    async def _ensure_product(self, plan: m.Plan, result: PlanSyncResult) -> str:
        stale = plan.stripe_product_id
        if stale is not None:
            try:
                product = await self.stripe.v1.products.retrieve_async(stale)
            except stripe.InvalidRequestError as exc:
                if not is_missing(exc):
                    raise
            else:
                if product.active and (product.name != plan.name or (product.description or "") != plan.description):
                    update: ProductUpdateParams = {"name": plan.name, "description": plan.description}
                    key = idempotency_key("plan-product-update", plan.id, plan.name, plan.description)
                    await self.stripe.v1.products.update_async(stale, update, {"idempotency_key": key})
                return stale
        # A first creation, or a re-creation after Stripe lost the stored one (another account, a wiped emulator):
        # a key of its own, or Stripe would replay the lost Product for 24 hours.
        key = (
            idempotency_key("plan-product", plan.id)
            if stale is None
            else idempotency_key("plan-product", plan.id, "replaces", stale)
        )
        params: ProductCreateParams = {"name": plan.name, "metadata": {"plan_slug": plan.slug}}
        if plan.description:  # Stripe rejects an empty description
            params["description"] = plan.description
        product = await self.stripe.v1.products.create_async(params, {"idempotency_key": key})
        plan.stripe_product_id = product.id
        await self.db.commit()
        result.product_created = True
        if stale is not None:
            result.relinked += 1
        log.info("plans.stripe_product_created", plan=plan.slug, product_id=product.id, replaces=stale)
        return product.id

    async def _ensure_price(
        self,
        plan: m.Plan,
        price: m.PlanPrice,
        product_id: str,
        known: dict[str, dict[str, Any]],
        result: PlanSyncResult,
    ) -> None:
        stale = price.stripe_price_id
        if stale is not None and stale in known:
            if not known[stale]["active"]:  # archived behind our back (e.g. in the Dashboard): it is still ours
                await self.stripe.v1.prices.update_async(
                    stale,
                    {"active": True},
                    {"idempotency_key": idempotency_key("plan-price-unarchive", price.id, stale)},
                )
            return
        params: PriceCreateParams = {
            "product": product_id,
            "currency": price.currency.lower(),
            "unit_amount": price.amount,
            "recurring": {"interval": price.interval},
            "metadata": {"plan_slug": plan.slug, "tier": price.tier, "plan_price_id": str(price.id)},
            "nickname": f"{plan.name} {price.interval}ly ({price.tier})",
        }
        key = (
            idempotency_key("plan-price", price.id)
            if stale is None
            else idempotency_key("plan-price", price.id, "replaces", stale)
        )
        created = await self.stripe.v1.prices.create_async(params, {"idempotency_key": key})
        price.stripe_price_id = created.id
        await self.db.commit()
        known[created.id] = {"active": True}
        result.prices_created += 1
        if stale is not None:
            result.relinked += 1
        log.info("plans.stripe_price_created", plan=plan.slug, price_id=created.id, replaces=stale)
