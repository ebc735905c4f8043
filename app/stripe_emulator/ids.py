"""Stripe-shaped identifiers."""

from __future__ import annotations

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def random_token(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_id(prefix: str, length: int = 24) -> str:
    """Return an id such as ``pi_3PgafyB7WZ01zgkWSjxsAJo3`` (Stripe ids are ~24 chars after the prefix)."""
    return f"{prefix}_{random_token(length)}"


def client_secret(object_id: str) -> str:
    return f"{object_id}_secret_{random_token(25)}"


def webhook_secret() -> str:
    return f"whsec_{random_token(32)}"
