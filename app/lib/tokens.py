"""One-time tokens: random, shown once, stored only as a hash."""

from __future__ import annotations

import hashlib
import secrets


def new_token() -> tuple[str, str]:
    """Return ``(token, token_hash)``: mail the token, store the hash."""
    token = secrets.token_urlsafe(32)
    return token, hash_token(token)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_form_token() -> str:
    """A one-use token for one rendering of a form that changes money or Stripe (refund, credits, promo code):
    it becomes the idempotency key, so submitting that rendering twice acts once."""
    return secrets.token_urlsafe(18)
