"""The one gateway to Stripe. Every Stripe call in Cartwright goes through the client built here.

Whether it talks to api.stripe.com or to the offline emulator is configuration only (STRIPE_API_BASE and the
keys); the code path is the same official SDK either way.
"""

from __future__ import annotations

import hashlib
from typing import Any

import stripe
from stripe.params import PriceListParams

from app.lib.settings import StripeSettings

# The SDK retries network errors, 409s and 429s with backoff and reuses one idempotency key across its retries;
# StripeClient does none of that unless told to.
MAX_NETWORK_RETRIES = 2
TIMEOUT_SECONDS = 20


def build_stripe_client(settings: StripeSettings) -> stripe.StripeClient:
    base = settings.api_base
    return stripe.StripeClient(
        api_key=settings.secret_key,
        base_addresses={"api": base, "connect": base, "files": base, "meter_events": base},
        max_network_retries=MAX_NETWORK_RETRIES,
        # httpx serves the async (`*_async`) methods the app uses and, allowed here, the sync ones scripts use.
        http_client=stripe.HTTPXClient(timeout=TIMEOUT_SECONDS, allow_sync_methods=True),
    )


def idempotency_key(operation: str, *parts: object) -> str:
    """A deterministic key for one money-moving intent, e.g. ``idempotency_key("order-pi", order.id)``.

    The same logical request always gets the same key, so a retried job or a double click replays Stripe's first
    answer instead of creating a second object. Stripe limits keys to 255 characters: long inputs are hashed.
    """
    raw = ":".join([operation, *(str(p) for p in parts)])
    if len(raw) <= 200:
        return f"cartwright:{raw}"
    return f"cartwright:{operation}:{hashlib.sha256(raw.encode()).hexdigest()}"


def as_dict(obj: Any) -> dict[str, Any]:
    """A plain dict from an SDK object or from an event's embedded object."""
    if isinstance(obj, dict):
        return obj
    result: dict[str, Any] = obj.to_dict()
    return result


def stripe_id(value: Any) -> str | None:
    """An id from a field that may be expanded (an object) or not (a string)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        inner = value.get("id")
        return inner if isinstance(inner, str) else None
    return None


def is_missing(exc: stripe.InvalidRequestError) -> bool:
    """Whether Stripe answered "no such object" (a stored id from another account, or a wiped emulator)."""
    return exc.code == "resource_missing" or exc.http_status == 404


async def prices_of_product(client: stripe.StripeClient, product_id: str) -> dict[str, dict[str, Any]]:
    """Every Price of a Stripe Product (active or archived), by id, with its ``active``, ``unit_amount`` and
    ``currency``: one request per 100 Prices."""
    found: dict[str, dict[str, Any]] = {}
    params: PriceListParams = {"product": product_id, "limit": 100}
    while True:
        page = await client.v1.prices.list_async(params)
        for price in page.data:
            found[price.id] = {"active": price.active, "unit_amount": price.unit_amount, "currency": price.currency}
        if not page.has_more or not page.data:
            return found
        params["starting_after"] = page.data[-1].id
