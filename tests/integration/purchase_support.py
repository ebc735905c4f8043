"""Driving a purchase the way a browser and Stripe do: cart, checkout form, Stripe confirm, webhooks, worker."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import stripe
from saq import Queue
from sqlalchemy import select

from app.db import models as m
from app.domain.payments.webhooks import enqueue_event_job
from app.lib.runtime import Runtime
from app.stripe_emulator.server import EmulatorServer
from tests.helpers import job_finished, post_form

WEBHOOK_SECRET = "whsec_cartwright_tests"  # tests/conftest.py gives the app and the emulator this one
BILLING = {
    "email": "guest@example.com",
    "name": "Gail Guest",
    "country": "CA",
    "region": "ON",
    "postal_code": "M5V 2T6",
}


async def add_to_cart(client: httpx.AsyncClient, product: m.Product, quantity: int = 1) -> None:
    response = await post_form(client, "/cart/items", {"product_id": str(product.id), "quantity": str(quantity)})
    assert response.status_code in {200, 303}, response.text


async def checkout_form(client: httpx.AsyncClient) -> str:
    """Open the checkout page and return its one-use form token."""
    page = await client.get("/checkout")
    assert page.status_code == 200, page.text
    match = re.search(r'name="checkout_token" value="([^"]+)"', page.text)
    assert match, "the checkout form carries no token"
    return match.group(1)


async def place_order(client: httpx.AsyncClient, **billing: str) -> UUID:
    token = await checkout_form(client)
    response = await post_form(client, "/checkout", {**BILLING, **billing, "checkout_token": token})
    assert response.status_code == 303, response.text
    match = re.fullmatch(r"/orders/([0-9a-f-]{36})/pay", response.headers["location"])
    assert match, response.headers["location"]
    return UUID(match.group(1))


async def open_pay_page(client: httpx.AsyncClient, order_id: UUID) -> str:
    """Load the pay page (which creates the PaymentIntent) and return the PaymentIntent's id."""
    page = await client.get(f"/orders/{order_id}/pay")
    assert page.status_code == 200, page.text
    match = re.search(r'data-client-secret="(pi_[A-Za-z0-9]+)_secret_[^"]+"', page.text)
    assert match, "the pay page mounts no Payment Element"
    return match.group(1)


def stripe_client(runtime: Runtime) -> stripe.StripeClient:
    return runtime.stripe


async def confirm(runtime: Runtime, intent_id: str, payment_method: str = "pm_card_visa") -> Any:
    """What Stripe.js does when the customer presses Pay: confirm the PaymentIntent with their card."""
    try:
        return await runtime.stripe.v1.payment_intents.confirm_async(
            intent_id, {"payment_method": payment_method, "return_url": "http://testserver.local/return"}
        )
    except stripe.CardError as exc:
        return exc


async def settle(emulator: EmulatorServer, queue: Queue, runtime: Runtime) -> None:
    """Wait until Stripe has delivered every webhook and the worker has finished every stored event."""
    flushed = await asyncio.to_thread(emulator.flush, 60)
    assert flushed["idle"], f"Stripe still had webhooks to deliver: {flushed}"
    async with runtime.db() as db:
        ids = list(
            await db.scalars(
                select(m.StripeEvent.stripe_id).where(m.StripeEvent.status != m.StripeEventStatus.IGNORED.value)
            )
        )
    for stripe_id in ids:
        if await queue.job(f"stripe-event:{stripe_id}") is None:
            # Stored but never enqueued (Redis hiccup under load): what the sweeper cron does a minute later.
            await enqueue_event_job(queue, stripe_id)
        await job_finished(queue, f"stripe-event:{stripe_id}", timeout=30)


async def digital_product(factory: Any, storage_dir: Path, **fields: Any) -> m.Product:
    """A product with a real file in storage."""
    product: m.Product = await factory.product(**fields)
    key = f"products/{product.slug}.pdf"
    path = storage_dir / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"%PDF-1.4\n" + product.slug.encode() + b"\n%%EOF\n")
    async with factory.runtime.db() as db:
        row = await db.get(m.Product, product.id)
        assert row is not None
        row.digital_file = key
        await db.commit()
    product.digital_file = key
    return product


async def load_order(runtime: Runtime, order_id: UUID) -> m.Order:
    async with runtime.db() as db:
        order = await db.get(m.Order, order_id)
        assert order is not None
        return order


def signature_header(body: str, *, secret: str = WEBHOOK_SECRET, timestamp: int | None = None) -> str:
    """A ``Stripe-Signature`` header as Stripe computes it: HMAC-SHA256 of ``"{t}.{body}"``."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.{body}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


async def deliver(
    client: httpx.AsyncClient,
    payload: dict[str, Any] | str,
    *,
    secret: str = WEBHOOK_SECRET,
    timestamp: int | None = None,
) -> httpx.Response:
    """POST an event to the webhook the way Stripe does."""
    body = payload if isinstance(payload, str) else json.dumps(payload)
    return await client.post(
        "/webhooks/stripe",
        content=body,
        headers={
            "Stripe-Signature": signature_header(body, secret=secret, timestamp=timestamp),
            "Content-Type": "application/json",
        },
    )
