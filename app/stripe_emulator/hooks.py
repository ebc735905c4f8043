"""In-process hooks so billing can react to payments without circular imports."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.stripe_emulator.api import Ctx

Hook = Callable[[Ctx, dict[str, Any]], None]

PAYMENT_SUCCEEDED: list[Hook] = []  # called with the PaymentIntent after it succeeds
PAYMENT_FAILED: list[Hook] = []  # called with the PaymentIntent after a decline / failed authentication


def run(hooks: list[Hook], ctx: Ctx, obj: dict[str, Any]) -> None:
    for hook in hooks:
        hook(ctx, obj)
