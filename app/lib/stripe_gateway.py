"""The one gateway to Stripe. Every Stripe call in Cartwright goes through the client built here.

Whether it talks to api.stripe.com or to the offline emulator is configuration only (STRIPE_API_BASE and the
keys); the code path is the same official SDK either way.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import stripe
import structlog
from stripe.params import PriceListParams

from app.lib.settings import StripeSettings

# The SDK retries network errors, 409s and 429s with backoff and reuses one idempotency key across its retries;
# StripeClient does none of that unless told to.
MAX_NETWORK_RETRIES = 2
TIMEOUT_SECONDS = 20


log = structlog.get_logger()
T = TypeVar("T")


class BoundedHTTPXClient(stripe.HTTPXClient):
    """The SDK's httpx client with at most ``max_concurrency`` requests in flight (the SDK's retry sleeps happen
    outside the bound). Bulk readers (the full re-sync) use it so they never hammer Stripe."""

    def __init__(self, *, max_concurrency: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.max_concurrency = max_concurrency
        self._slots: asyncio.Semaphore | None = None

    async def request_async(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any = None
    ) -> tuple[bytes, int, Mapping[str, str]]:
        if self._slots is None:  # created in the loop that uses it
            self._slots = asyncio.Semaphore(self.max_concurrency)
        async with self._slots:
            return await super().request_async(method, url, headers, post_data)


def build_stripe_client(settings: StripeSettings, *, max_concurrency: int | None = None) -> stripe.StripeClient:
    """The client. ``max_concurrency`` bounds requests in flight at once (default: unbounded)."""
    base = settings.api_base
    # httpx serves the async (`*_async`) methods the app uses and, allowed here, the sync ones scripts use.
    http_client: stripe.HTTPXClient = (
        stripe.HTTPXClient(timeout=TIMEOUT_SECONDS, allow_sync_methods=True)
        if max_concurrency is None
        else BoundedHTTPXClient(max_concurrency=max_concurrency, timeout=TIMEOUT_SECONDS, allow_sync_methods=True)
    )
    return stripe.StripeClient(
        api_key=settings.secret_key,
        base_addresses={"api": base, "connect": base, "files": base, "meter_events": base},
        max_network_retries=MAX_NETWORK_RETRIES,
        http_client=http_client,
    )


async def with_backoff(
    call: Callable[[], Awaitable[T]], *, attempts: int = 6, base_delay: float = 0.5, max_delay: float = 30.0
) -> T:
    """Run ``call``; on a 429 (after the SDK's own retries) wait with exponential backoff and jitter and try again,
    ``attempts`` times in all. Only for reads and idempotent POSTs: the SDK keeps one idempotency key per call."""
    for attempt in range(1, attempts + 1):
        try:
            return await call()
        except stripe.RateLimitError:
            if attempt == attempts:
                raise
            delay = min(max_delay, base_delay * 2 ** (attempt - 1)) * (0.5 + random.random() / 2)
            log.info("stripe.rate_limited", attempt=attempt, retry_in=round(delay, 2))
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")


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


def stripe_message(exc: stripe.StripeError) -> str:
    """What Stripe said, for staff: its error message, else its user message, else the error's kind."""
    said = exc.error.message if exc.error is not None else None
    return said or exc.user_message or type(exc).__name__


def outcome_unknown(exc: stripe.StripeError) -> bool:
    """A lost connection or a Stripe 5xx: the request may have been carried out. Whoever retries must reuse the
    same idempotency key (the same form token), so a retry can only ever replay it, never do it twice."""
    return isinstance(exc, stripe.APIConnectionError | stripe.APIError)


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


def stripe_dashboard_url(payment_intent_id: str, *, livemode: bool) -> str:
    """Where an admin answers the dispute: the payment's page in Stripe's Dashboard (test or live)."""
    return f"https://dashboard.stripe.com/{'' if livemode else 'test/'}payments/{payment_intent_id}"
