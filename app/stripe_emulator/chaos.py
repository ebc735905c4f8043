"""Seedable delivery chaos: drops, duplicates, delays and reordering of webhook deliveries."""

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

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChaosConfig:
        allowed = {"seed", "duplicate_rate", "drop_rate", "delay_ms", "shuffle"}
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
        )
        for rate in (cfg.duplicate_rate, cfg.drop_rate):
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
