"""Issue #12 hole 2: a signed event is not proof of payment, and a shop must not start with a public webhook secret.

An attacker who holds a webhook secret (leaked, or the emulator's public one on a misconfigured live shop) can sign
any body. Fulfilment must therefore trust only the PaymentIntent as Stripe returns it, and events from the other
mode (test vs live) are kept as ``ignored``, never acted on.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any
from unittest import mock
from uuid import UUID

import httpx
import pytest
from saq import Queue, Worker
from sqlalchemy import select

from app.db import models as m
from app.lib.runtime import Runtime
from app.lib.settings import Settings, SettingsError, load_settings
from app.stripe_emulator.server import EmulatorServer
from tests.conftest import Factory
from tests.integration.purchase_support import (
    add_to_cart,
    confirm,
    deliver,
    digital_product,
    load_order,
    open_pay_page,
    place_order,
    settle,
)
from tests.integration.test_webhooks import (  # noqa: F401 - the fixture is used by name
    count,
    made_up_event,
    stored_event,
    stripe_delivers_nothing,
)

uses_the_app = pytest.mark.usefixtures("stripe_delivers_nothing")


async def unpaid_order(client: httpx.AsyncClient, factory: Factory, settings: Settings) -> tuple[UUID, str]:
    product = await digital_product(factory, settings.storage_dir, name="Forgery Guide", price=1500, stock=5)
    await add_to_cart(client, product)
    order_id = await place_order(client, email="mallory@example.com")
    return order_id, await open_pay_page(client, order_id)


def forged_success(order: m.Order, intent_id: str) -> dict[str, Any]:
    """What an attacker with the signing secret would send: a body claiming the order's full payment."""
    event = made_up_event("payment_intent.succeeded")
    event["data"]["object"] = {
        "id": intent_id,
        "object": "payment_intent",
        "status": "succeeded",
        "amount": order.total,
        "amount_received": order.total,
        "currency": order.currency.lower(),
        "metadata": {"order_id": str(order.id)},
    }
    return event


async def assert_nothing_granted(runtime: Runtime, order_id: UUID) -> None:
    order = await load_order(runtime, order_id)
    assert order.fulfilled_at is None
    assert order.status != "paid"
    assert await count(runtime, m.Entitlement, m.Entitlement.order_id == order_id) == 0
    assert await count(runtime, m.EmailMessage, m.EmailMessage.kind == "receipt") == 0


@uses_the_app
async def test_a_signed_success_event_for_an_unpaid_payment_intent_grants_nothing(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker[Any],
) -> None:
    order_id, intent_id = await unpaid_order(client, factory, settings)
    order = await load_order(runtime, order_id)
    event = forged_success(order, intent_id)
    assert (await deliver(client, event)).status_code == 200
    await settle(stripe_emulator, queue, runtime)

    await assert_nothing_granted(runtime, order_id)
    row = await stored_event(runtime, event["id"])
    assert row is not None
    assert row.status == "processed"  # handled: Stripe's copy says not paid, and that is what was mirrored


@uses_the_app
async def test_a_success_event_claiming_the_full_amount_of_a_smaller_payment_grants_nothing(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker[Any],
) -> None:
    order_id, intent_id = await unpaid_order(client, factory, settings)
    order = await load_order(runtime, order_id)
    # The PaymentIntent really succeeded, for 50 cents; the signed body claims the order's total.
    await runtime.stripe.v1.payment_intents.update_async(intent_id, {"amount": 50})
    assert (await confirm(runtime, intent_id)).status == "succeeded"
    event = forged_success(order, intent_id)
    assert (await deliver(client, event)).status_code == 200
    await settle(stripe_emulator, queue, runtime)

    await assert_nothing_granted(runtime, order_id)
    async with runtime.db() as db:
        kinds = list(await db.scalars(select(m.OrderEvent.kind).where(m.OrderEvent.order_id == order_id)))
    assert "amount_mismatch" in kinds  # on the order's timeline for support (the refund hook: on_payment_mismatch)


@uses_the_app
async def test_an_event_from_the_other_mode_is_stored_as_ignored_and_never_processed(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker[Any],
) -> None:
    order_id, intent_id = await unpaid_order(client, factory, settings)
    order = await load_order(runtime, order_id)
    assert (await confirm(runtime, intent_id)).status == "succeeded"  # even a real payment's event
    event = forged_success(order, intent_id)
    event["livemode"] = True  # the shop runs on a test key
    response = await deliver(client, event)
    assert response.status_code == 200
    assert response.json()["status"] == "ignored"
    await settle(stripe_emulator, queue, runtime)

    row = await stored_event(runtime, event["id"])
    assert row is not None
    assert (row.status, row.attempts) == ("ignored", 0)
    assert "live-mode event" in row.last_error
    assert await queue.job(f"stripe-event:{event['id']}") is None
    assert (await load_order(runtime, order_id)).fulfilled_at is None


def _stripe_free_env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STRIPE_") and k != "BASE_URL"}
    return {**clean, **extra}


def test_real_stripe_keys_without_a_webhook_secret_refuse_to_load() -> None:
    with (
        mock.patch.dict(os.environ, _stripe_free_env(STRIPE_SECRET_KEY="sk_test_real"), clear=True),
        pytest.raises(SettingsError, match="STRIPE_WEBHOOK_SECRET is not set"),
    ):
        load_settings()
    # The emulator's public secret, set explicitly, is no better.
    env = _stripe_free_env(STRIPE_SECRET_KEY="sk_test_real", STRIPE_WEBHOOK_SECRET="whsec_cartwright_emulator")
    with mock.patch.dict(os.environ, env, clear=True), pytest.raises(SettingsError):
        load_settings()
    # Offline (the emulator) the public secret is the default, as before.
    with mock.patch.dict(os.environ, _stripe_free_env(), clear=True):
        assert load_settings().stripe.webhook_secrets == ("whsec_cartwright_emulator",)


def test_a_live_key_needs_an_https_base_url() -> None:
    env = _stripe_free_env(STRIPE_SECRET_KEY="sk_live_x", STRIPE_WEBHOOK_SECRET="whsec_x", BASE_URL="http://shop.test")
    with mock.patch.dict(os.environ, env, clear=True), pytest.raises(SettingsError, match="https BASE_URL"):
        load_settings()
    env["BASE_URL"] = "https://shop.test"
    with mock.patch.dict(os.environ, env, clear=True):
        assert load_settings().stripe.livemode


def test_a_live_key_never_runs_with_the_public_webhook_secret_whatever_the_api_base() -> None:
    """The security review: ``https://api.stripe.com:443`` (or a proxy) counted as the emulator, so a live key
    would have taken events signed with the public secret."""
    env = _stripe_free_env(
        STRIPE_SECRET_KEY="sk_live_x", STRIPE_API_BASE="https://api.stripe.com:443", BASE_URL="https://shop.test"
    )
    with mock.patch.dict(os.environ, env, clear=True), pytest.raises(SettingsError, match="STRIPE_WEBHOOK_SECRET"):
        load_settings()


@pytest.mark.parametrize("command", [["routes"], ["workers", "run"]])
def test_the_cli_web_and_worker_exit_with_the_reason(command: list[str], tmp_path: Any) -> None:
    env = _stripe_free_env(STRIPE_SECRET_KEY="sk_test_real", CARTWRIGHT_VAR_DIR=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "app", *command], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode != 0
    assert "Cartwright cannot start: STRIPE_WEBHOOK_SECRET is not set" in result.stderr
    assert "Traceback" not in result.stderr
