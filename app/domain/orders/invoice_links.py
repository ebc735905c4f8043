"""The invoice link a guest gets in their receipt: ``/invoices/<token>``, the token the order id signed with
HMAC-SHA256 under ``SECRET_KEY``.

A guest has no account to open ``/account/orders/<id>/invoice`` with, yet needs the invoice (a business buyer claims
input tax credits with it). Like Stripe's own receipt links, it does not expire: it shows this one order's invoice
and nothing else, and rotating ``SECRET_KEY`` voids every such link.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from uuid import UUID

INVOICE_LINK_PATH = "/invoices"
_CONTEXT = b"cartwright:invoice-link:v1:"  # domain separation from anything else signed with SECRET_KEY
_ID_LEN, _MAC_LEN = 16, 32


def _mac(secret_key: str, payload: bytes) -> bytes:
    return hmac.new(secret_key.encode(), _CONTEXT + payload, hashlib.sha256).digest()


def invoice_token(secret_key: str, order_id: UUID) -> str:
    payload = order_id.bytes
    return base64.urlsafe_b64encode(payload + _mac(secret_key, payload)).rstrip(b"=").decode()


def read_invoice_token(secret_key: str, token: str) -> UUID | None:
    """The order id of a token we signed; ``None`` for anything else (including non-canonical spellings)."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (ValueError, binascii.Error):
        return None
    if len(raw) != _ID_LEN + _MAC_LEN or base64.urlsafe_b64encode(raw).rstrip(b"=") != token.encode():
        return None
    payload, mac = raw[:_ID_LEN], raw[_ID_LEN:]
    if not hmac.compare_digest(mac, _mac(secret_key, payload)):
        return None
    return UUID(bytes=payload)


def invoice_url(base_url: str, secret_key: str, order_id: UUID) -> str:
    return f"{base_url}{INVOICE_LINK_PATH}/{invoice_token(secret_key, order_id)}"
