"""Seedable chaos: drops, duplicates, delays and reordering of webhook deliveries, and API rate limiting (429)."""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

from app.stripe_emulator.errors import StripeError


@dataclass
class ChaosConfig:
    seed: int | None = None
    duplicate_rate: float = 0.0
    drop_rate: float = 0.0
    delay_ms: tuple[int, int] = (0, 0)
    shuffle: int = 0  # window size; 0/1 = keep order
    # API rate limiting: answer a share of /v1 requests (or every Nth one) with Stripe's 429 ``rate_limit`` error.
    rate_limit_rate: float = 0.0
    rate_limit_every: int = 0
    # What the 429 says in ``Stripe-Should-Retry`` ("true", "false", or "" for no header).
    rate_limit_should_retry: str = "true"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChaosConfig:
        allowed = {
            "seed",
            "duplicate_rate",
            "drop_rate",
            "delay_ms",
            "shuffle",
            "rate_limit_rate",
            "rate_limit_every",
            "rate_limit_should_retry",
        }
        unknown = set(data) - allowed
        if unknown:
            raise StripeError(f"Received unknown parameter: {sorted(unknown)[0]}", code="parameter_unknown")
        delay = data.get("delay_ms", (0, 0))
        if isinstance(delay, (int, float)):
            delay = (int(delay), int(delay))
        low, high = (int(delay[0]), int(delay[1]))
        cfg = cls(
            seed=None if data.get("seed") is None else int(data["seed"]),
            duplicate_rate=float(data.get("duplicate_rate", 0.0)),
            drop_rate=float(data.get("drop_rate", 0.0)),
            delay_ms=(min(low, high), max(low, high)),
            shuffle=int(data.get("shuffle", 0)),
            rate_limit_rate=float(data.get("rate_limit_rate", 0.0)),
            rate_limit_every=max(0, int(data.get("rate_limit_every", 0))),
            rate_limit_should_retry=str(data.get("rate_limit_should_retry", "true")),
        )
        for rate in (cfg.duplicate_rate, cfg.drop_rate, cfg.rate_limit_rate):
            if not 0.0 <= rate <= 1.0:
                raise StripeError("Rates must be between 0 and 1.")
        return cfg

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["delay_ms"] = list(self.delay_ms)
        return data


@dataclass
class Plan:
    """What chaos decided for one (event, endpoint) pair."""

    dropped: bool
    delays: list[float] = field(default_factory=list)  # one entry per copy, in seconds


class Chaos:
    def __init__(self, config: ChaosConfig | None = None) -> None:
        self.configure(config or ChaosConfig())

    def configure(self, config: ChaosConfig) -> None:
        self.config = config
        # Separate streams: when a partial shuffle window is released by a timer, the
        # drop/duplicate/delay decisions still reproduce exactly for a given seed.
        self.rng = random.Random(config.seed)
        self.order_rng = random.Random(None if config.seed is None else config.seed + 1)
        self.limit_rng = random.Random(None if config.seed is None else config.seed + 2)
        self.api_requests = 0

    def rate_limited(self) -> bool:
        """Whether this API request gets a 429 (counted per request; thread-safe enough under the API lock)."""
        c = self.config
        self.api_requests += 1
        if c.rate_limit_every and self.api_requests % c.rate_limit_every == 0:
            return True
        return bool(c.rate_limit_rate) and self.limit_rng.random() < c.rate_limit_rate

    def plan(self) -> Plan:
        # Always draw the same number of values so a seed reproduces the same decisions.
        c = self.config
        drop_draw = self.rng.random()
        dup_draw = self.rng.random()
        copies = 2 if dup_draw < c.duplicate_rate else 1
        delays = [self.rng.uniform(c.delay_ms[0], c.delay_ms[1]) / 1000.0 for _ in range(copies)]
        return Plan(dropped=drop_draw < c.drop_rate, delays=delays)

    def permute(self, items: list[Any]) -> list[Any]:
        out = list(items)
        self.order_rng.shuffle(out)
        return out
