"""All emulator data, in memory, JSON-serialisable so it can be persisted to a state file."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.stripe_emulator.errors import no_such

API_VERSION = "2026-10-28.endive"  # what stripe-python 16.1 sends (stripe/_api_version.py)
IDEMPOTENCY_TTL = 24 * 3600
IDEMPOTENCY_MAX_KEYS = 10_000
EVENT_RETENTION = 30 * 24 * 3600

# Object type -> human name used in "No such ..." messages.
KIND_NAMES = {
    "customer": "customer",
    "product": "product",
    "price": "price",
    "payment_method": "PaymentMethod",
    "payment_intent": "payment_intent",
    "charge": "charge",
    "refund": "refund",
    "dispute": "dispute",
    "balance_transaction": "balance transaction",
    "event": "event",
    "webhook_endpoint": "webhook endpoint",
    "setup_intent": "setupintent",
    "subscription": "subscription",
    "subscription_item": "subscription item",
    "invoice": "invoice",
    "coupon": "coupon",
    "promotion_code": "promotion code",
    "test_helpers.test_clock": "test clock",
    "checkout.session": "checkout.session",
    "billing_portal.session": "billing portal session",
}


@dataclass
class EmulatorState:
    """Objects keyed by id (insertion ordered), hidden per-object data, events, idempotency cache."""

    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    private: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    idempotency: dict[str, dict[str, Any]] = field(default_factory=dict)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    chaos: dict[str, Any] = field(default_factory=dict)
    # Time offset lets test clocks move "now" for objects bound to them (per clock in private data).
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False, compare=False)

    # Per type: ids in insertion order and their positions, so list pages cost O(page), not O(all objects)
    # (built lazily; 100k invoices page in constant time per page instead of scanning every object).
    _index: dict[str, tuple[list[str], dict[str, int]]] | None = field(default=None, repr=False, compare=False)

    # --- object store ----------------------------------------------------------------------------
    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        new = obj["id"] not in self.objects
        self.objects[obj["id"]] = obj
        if new and self._index is not None:
            ids, pos = self._index.setdefault(str(obj.get("object")), ([], {}))
            pos[obj["id"]] = len(ids)
            ids.append(obj["id"])
        return obj

    def kind_index(self, kind: str) -> tuple[list[str], dict[str, int]]:
        """Ids of one type, oldest first, with each id's position (removed ids stay; callers skip them)."""
        if self._index is None:
            index: dict[str, tuple[list[str], dict[str, int]]] = {}
            for object_id, obj in self.objects.items():
                ids, pos = index.setdefault(str(obj.get("object")), ([], {}))
                pos[object_id] = len(ids)
                ids.append(object_id)
            self._index = index
        return self._index.get(kind, ([], {}))

    def find(self, object_id: str) -> dict[str, Any] | None:
        return self.objects.get(object_id)

    def get(self, kind: str, object_id: str, param: str = "id") -> dict[str, Any]:
        obj = self.objects.get(object_id)
        if obj is None or obj.get("object") != kind:
            raise no_such(KIND_NAMES.get(kind, kind), object_id, param)
        return obj

    def remove(self, object_id: str) -> None:
        self.objects.pop(object_id, None)

    def all(self, kind: str) -> list[dict[str, Any]]:
        """Objects of one type, newest first (Stripe list order)."""
        return [o for o in reversed(self.objects.values()) if o.get("object") == kind]

    def hidden(self, object_id: str) -> dict[str, Any]:
        return self.private.setdefault(object_id, {})

    # --- idempotency -----------------------------------------------------------------------------
    def prune_idempotency(self, now: float | None = None) -> None:
        cutoff = (now or time.time()) - IDEMPOTENCY_TTL
        for key in [k for k, v in self.idempotency.items() if v["at"] < cutoff]:
            del self.idempotency[key]
        # The SDK sends a key with every POST; bound memory and state-file size for long dev sessions.
        while len(self.idempotency) > IDEMPOTENCY_MAX_KEYS:
            del self.idempotency[next(iter(self.idempotency))]

    # --- persistence -----------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "objects": self.objects,
            "private": self.private,
            "events": self.events,
            "idempotency": self.idempotency,
            "deliveries": self.deliveries[-1000:],
            "chaos": self.chaos,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EmulatorState:
        return cls(
            objects=dict(data.get("objects", {})),
            private=dict(data.get("private", {})),
            events=list(data.get("events", [])),
            idempotency=dict(data.get("idempotency", {})),
            deliveries=list(data.get("deliveries", [])),
            chaos=dict(data.get("chaos", {})),
        )

    def save(self, path: Path) -> None:
        """Write atomically: temp file in the same directory, then rename over the target."""
        with self.lock:
            payload = json.dumps(self.to_json())
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".stripe-emulator-", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            fh.write(payload)
        Path(tmp).replace(path)

    @classmethod
    def load(cls, path: Path) -> EmulatorState:
        if not path.exists():
            return cls()
        return cls.from_json(json.loads(path.read_text()))

    def clear(self) -> None:
        with self.lock:
            self.objects.clear()
            self._index = None
            self.private.clear()
            self.events.clear()
            self.idempotency.clear()
            self.deliveries.clear()
            self.chaos.clear()
