"""Products mirrored to Stripe: one Stripe Product per product, and one active Price for its current price.

Stripe Prices are immutable, so a price change creates a new Price and archives the old one (``active=false``);
the ids are kept on the product (``stripe_product_id``, ``stripe_price_id``). Checkout itself charges the order's
own amount through a PaymentIntent, so the mirror is for Stripe's reports, Payment Links and the Dashboard: a failed
sync never blocks a save.

When: the admin controllers sync inline right after the change is committed; if Stripe fails, the product keeps
``stripe_synced_at = NULL`` and the ``sync_product_to_stripe`` job retries with backoff (the minute cron
``sweep_unsynced_products`` re-enqueues any product still pending, e.g. when Redis was down at the time).
Every POST carries a deterministic idempotency key, so a retried or concurrent sync creates each object once.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import stripe
import structlog
from sqlalchemy.ext.asyncio import AsyncSession
from stripe.params import PriceCreateParams, ProductCreateParams, ProductUpdateParams

from app.db import models as m
from app.lib.stripe_gateway import as_dict, idempotency_key, is_missing, prices_of_product

log = structlog.get_logger()


def _wanted(product: m.Product) -> dict[str, Any]:
    return {
        "name": product.name,
        "description": product.summary or "",
        "active": product.is_active,
        "metadata": {"product_id": str(product.id), "slug": product.slug},
    }


class ProductStripeSync:
    """Makes Stripe match one product. Safe to run any number of times, and concurrently."""

    def __init__(self, db: AsyncSession, client: stripe.StripeClient) -> None:
        self.db = db
        self.stripe = client

    async def ensure(self, product: m.Product) -> None:
        """Create or update the Stripe Product, then make sure its active Price is the product's price. Commits
        after each new id, so an id Stripe gave us is never lost to a later failure."""
        product_id = await self._ensure_product(product)
        await self._ensure_price(product, product_id)
        product.stripe_synced_at = datetime.now(UTC)
        await self.db.commit()

    async def _ensure_product(self, product: m.Product) -> str:
        wanted = _wanted(product)
        stale = product.stripe_product_id
        if stale is not None:
            try:
                current = await self.stripe.v1.products.retrieve_async(stale)
            except stripe.InvalidRequestError as exc:
                if not is_missing(exc):
                    raise
            else:
                if (
                    current.name != wanted["name"]
                    or (current.description or "") != wanted["description"]
                    or bool(current.active) != wanted["active"]
                    or as_dict(current).get("metadata") != wanted["metadata"]
                ):
                    update: ProductUpdateParams = {
                        "name": wanted["name"],
                        "description": wanted["description"],
                        "active": wanted["active"],
                        "metadata": wanted["metadata"],
                    }
                    # Keyed by the save it mirrors (updated_at): a retry replays it, and a later save, even one back to
                    # an earlier state within Stripe's 24-hour key memory, is a new request that Stripe carries out.
                    key = idempotency_key("product-update", product.id, product.updated_at.isoformat())
                    await self.stripe.v1.products.update_async(stale, update, {"idempotency_key": key})
                return stale
        params: ProductCreateParams = {
            "name": wanted["name"],
            "active": wanted["active"],
            "metadata": wanted["metadata"],
        }
        if wanted["description"]:  # Stripe rejects an empty description on create
            params["description"] = wanted["description"]
        # A re-creation after Stripe lost the stored one gets a key of its own, or Stripe replays the lost Product.
        key = (
            idempotency_key("product", product.id)
            if stale is None
            else idempotency_key("product", product.id, "replaces", stale)
        )
        created = await self.stripe.v1.products.create_async(params, {"idempotency_key": key})
        product.stripe_product_id = created.id
        product.stripe_price_id = None  # a Price of a lost Product is lost with it
        await self.db.commit()
        log.info("catalog.stripe_product_created", product=product.slug, stripe_product=created.id, replaces=stale)
        return created.id

    async def _ensure_price(self, product: m.Product, stripe_product_id: str) -> None:
        prices = await prices_of_product(self.stripe, stripe_product_id)
        current = prices.get(product.stripe_price_id or "")
        matches = (
            current is not None
            and current["unit_amount"] == product.price
            and str(current["currency"]).upper() == product.currency.upper()
        )
        if current is not None and matches:
            if not current["active"]:  # archived behind our back: it is still the right Price
                await self.stripe.v1.prices.update_async(
                    product.stripe_price_id or "",
                    {"active": True},
                    {
                        "idempotency_key": idempotency_key(
                            "product-price-unarchive", product.stripe_price_id, product.updated_at.isoformat()
                        )
                    },
                )
        else:
            old = product.stripe_price_id
            params: PriceCreateParams = {
                "product": stripe_product_id,
                "currency": product.currency.lower(),
                "unit_amount": product.price,
                "metadata": {"product_id": str(product.id)},
            }
            # The key names the transition (from which Price, to which amount), so a retry replays it while a later
            # change back to an earlier amount still gets a Price of its own.
            key = idempotency_key("product-price", product.id, product.currency, product.price, "after", old)
            created = await self.stripe.v1.prices.create_async(params, {"idempotency_key": key})
            product.stripe_price_id = created.id
            await self.db.commit()
            prices[created.id] = {"active": True, "unit_amount": product.price, "currency": product.currency}
            log.info("catalog.stripe_price_created", product=product.slug, price=created.id, replaces=old)
        # Only the current Price stays active: archive any other (the previous one, or leftovers of a lost race).
        for price_id, info in prices.items():
            if price_id != product.stripe_price_id and info["active"]:
                key = idempotency_key("product-price-archive", price_id, product.updated_at.isoformat())
                await self.stripe.v1.prices.update_async(price_id, {"active": False}, {"idempotency_key": key})
                log.info("catalog.stripe_price_archived", product=product.slug, price=price_id)
