"""``payment_intent.succeeded`` events shaped like the ones Stripe (and app/stripe_emulator) sends, and their signature.

The PaymentIntent mirrors what the emulator's ``charge_intent`` emits for a shop order: status ``succeeded``, a
latest charge, a card payment method and the ``order_id``/``order_number`` metadata CheckoutService sets; about
1.7 kB of JSON, like the real thing. The order ids point nowhere: ingestion only stores and enqueues.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid
from typing import Any

API_VERSION = "2026-10-28.endive"  # app/stripe_emulator/state.py: what stripe-python 16.1 sends


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def payment_intent_succeeded(event_id: str, created: int, number: int) -> dict[str, Any]:
    intent_id = _id("pi")
    amount = 1500 + number % 9000
    return {
        "id": event_id,
        "object": "event",
        "api_version": API_VERSION,
        "created": created,
        "data": {
            "object": {
                "id": intent_id,
                "object": "payment_intent",
                "amount": amount,
                "amount_capturable": 0,
                "amount_details": {"tip": {}},
                "amount_received": amount,
                "application": None,
                "application_fee_amount": None,
                "automatic_payment_methods": {"allow_redirects": "always", "enabled": True},
                "canceled_at": None,
                "cancellation_reason": None,
                "capture_method": "automatic",
                "client_secret": f"{intent_id}_secret_{secrets.token_urlsafe(18)}",
                "confirmation_method": "automatic",
                "created": created - 4,
                "currency": "cad",
                "customer": None,
                "customer_account": None,
                "description": f"Cartwright order CW-{number:06d}",
                "excluded_payment_method_types": None,
                "last_payment_error": None,
                "latest_charge": _id("ch"),
                "livemode": False,
                "managed_payments": None,
                "metadata": {"order_id": str(uuid.uuid4()), "order_number": str(number)},
                "next_action": None,
                "on_behalf_of": None,
                "payment_method": _id("pm"),
                "payment_method_configuration_details": None,
                "payment_method_options": {
                    "card": {
                        "installments": None,
                        "mandate_options": None,
                        "network": None,
                        "request_three_d_secure": "automatic",
                    }
                },
                "payment_method_types": ["card"],
                "processing": None,
                "receipt_email": f"buyer{number}@example.com",
                "review": None,
                "setup_future_usage": None,
                "shipping": None,
                "source": None,
                "statement_descriptor": None,
                "statement_descriptor_suffix": None,
                "status": "succeeded",
                "transfer_data": None,
                "transfer_group": None,
            }
        },
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": "payment_intent.succeeded",
    }


def body_for(event: dict[str, Any]) -> bytes:
    # Stripe sends pretty-printed JSON; the signature covers these exact bytes.
    return json.dumps(event, indent=2).encode()


def signature(body: bytes, secret: str, timestamp: int) -> str:
    """Stripe's scheme: ``t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed by the endpoint secret>``."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def webhook_request(host: str, body: bytes, signature_header: str) -> bytes:
    """The complete HTTP/1.1 request Stripe's deliverer would send."""
    head = (
        "POST /webhooks/stripe HTTP/1.1\r\n"
        f"Host: {host}\r\n"
        "User-Agent: Stripe/1.0 (+https://stripe.com/docs/webhooks)\r\n"
        "Accept: */*; q=0.5, application/xml\r\n"
        "Cache-Control: no-cache\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Stripe-Signature: {signature_header}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "\r\n"
    )
    return head.encode() + body
