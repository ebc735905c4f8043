"""The app's one Stripe client: pointed at the emulator or at Stripe by configuration alone."""

from __future__ import annotations

import os
from collections.abc import Iterator
from unittest import mock

import pytest
import stripe

from app.lib.settings import StripeSettings, load_settings
from app.lib.stripe_gateway import build_stripe_client, idempotency_key
from app.stripe_emulator.server import EmulatorServer, run_emulator


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorServer]:
    with run_emulator() as server:
        yield server


def emulator_settings(url: str) -> StripeSettings:
    return StripeSettings(
        secret_key="sk_test_cartwright",
        publishable_key="pk_test_cartwright",
        webhook_secrets=("whsec_x",),
        api_base=url,
        js_url=f"{url}/v3/",
    )


def test_without_keys_the_shop_uses_the_emulator_and_with_keys_real_stripe(tmp_path: object) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STRIPE_")}
    with mock.patch.dict(os.environ, clean, clear=True):
        offline = load_settings().stripe
        assert offline.api_base == "http://127.0.0.1:12111"
        assert offline.js_url == "http://127.0.0.1:12111/v3/"
        assert offline.uses_emulator
    with mock.patch.dict(
        os.environ,
        {**clean, "STRIPE_SECRET_KEY": "sk_live_x", "STRIPE_WEBHOOK_SECRET": "a,b", "BASE_URL": "https://shop.example"},
        clear=True,
    ):
        live = load_settings().stripe
        assert live.api_base == "https://api.stripe.com"
        assert live.js_url == "https://js.stripe.com/v3/"
        assert live.webhook_secrets == ("a", "b")  # several secrets during rotation
        assert not live.uses_emulator


async def test_the_app_client_talks_to_the_emulator_like_to_stripe(emulator: EmulatorServer) -> None:
    client = build_stripe_client(emulator_settings(emulator.url))
    key = idempotency_key("customer", "user-1")
    first = await client.v1.customers.create_async({"email": "ann@example.com"}, {"idempotency_key": key})
    replay = await client.v1.customers.create_async({"email": "ann@example.com"}, {"idempotency_key": key})
    assert replay.id == first.id  # same key, same parameters: Stripe's first answer again
    assert client.v1.customers.retrieve(first.id).email == "ann@example.com"  # the sync API works too

    intent = await client.v1.payment_intents.create_async(
        {
            "amount": 2500,
            "currency": "cad",
            "customer": first.id,
            "automatic_payment_methods": {"enabled": True},
            "metadata": {"order_id": "42"},
        },
        {"idempotency_key": idempotency_key("order-pi", 42)},
    )
    assert intent.id.startswith("pi_") and intent.client_secret and intent.status == "requires_payment_method"
    with pytest.raises(stripe.CardError) as declined:
        await client.v1.payment_intents.confirm_async(intent.id, {"payment_method": "pm_card_chargeDeclined"})
    assert declined.value.code == "card_declined"


def test_idempotency_keys_are_deterministic_and_bounded() -> None:
    assert idempotency_key("order-pi", 42) == idempotency_key("order-pi", 42) == "cartwright:order-pi:42"
    assert idempotency_key("refund", "o", 1) != idempotency_key("refund", "o", 2)
    assert len(idempotency_key("x", "y" * 500)) < 255
