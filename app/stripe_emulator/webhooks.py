"""Asynchronous, signed webhook delivery with retries (one background worker thread)."""

from __future__ import annotations

import heapq
import hmac
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from hashlib import sha256
from typing import Any

import httpx

from app.stripe_emulator.chaos import Chaos
from app.stripe_emulator.state import EmulatorState


def sign(payload: str, secret: str, timestamp: int | None = None) -> str:
    """``Stripe-Signature`` header value accepted by ``stripe.Webhook.construct_event``."""
    ts = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{ts}.{payload}".encode(), sha256).hexdigest()
    return f"t={ts},v1={mac}"


@dataclass(order=True)
class Job:
    due: float
    seq: int
    endpoint_id: str = field(compare=False)
    event_id: str = field(compare=False)
    attempt: int = field(compare=False, default=1)
    duplicate: bool = field(compare=False, default=False)


@dataclass
class DeliverySettings:
    retry_base: float = 1.0  # seconds; attempt n waits retry_base * 2**(n-1)
    max_attempts: int = 5
    timeout: float = 5.0
    hold_seconds: float = 1.0  # how long a partial shuffle window may wait (without new events) before release


class Dispatcher:
    def __init__(
        self,
        state: EmulatorState,
        settings: DeliverySettings | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.state = state
        self.settings = settings or DeliverySettings()
        self.chaos = Chaos()
        self.on_change = on_change
        self._cond = threading.Condition()
        self._heap: list[Job] = []
        self._held: list[Job] = []
        self._held_since = 0.0
        self._in_flight = 0
        self._seq = itertools.count()
        self._stopping = False
        self._generation = 0
        self._thread: threading.Thread | None = None
        self._client = httpx.Client(timeout=self.settings.timeout)

    # --- lifecycle -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="stripe-emulator-webhooks", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._client.close()

    def set_timeout(self, seconds: float) -> None:
        self._client.timeout = httpx.Timeout(seconds)

    def clear(self) -> None:
        with self._cond:
            self._generation += 1  # retries of deliveries in flight during a reset are discarded
            self._heap.clear()
            self._held.clear()
            self._cond.notify_all()

    # --- submission ------------------------------------------------------------------------------
    def submit(self, events: list[dict[str, Any]]) -> None:
        """Plan deliveries for freshly committed events (called after the API request finished)."""
        with self.state.lock:
            endpoints = [e for e in reversed(self.state.all("webhook_endpoint")) if e["status"] == "enabled"]
        now = time.time()
        with self._cond:
            for event in events:
                for endpoint in endpoints:
                    if "*" not in endpoint["enabled_events"] and event["type"] not in endpoint["enabled_events"]:
                        continue
                    plan = self.chaos.plan()
                    if plan.dropped:
                        self._log(endpoint["id"], event, 0, None, "dropped by chaos", dropped=True)
                        continue
                    for copy_index, delay in enumerate(plan.delays):
                        job = Job(now + delay, next(self._seq), endpoint["id"], event["id"], duplicate=copy_index > 0)
                        self._queue(job)
            self._cond.notify_all()

    def _queue(self, job: Job) -> None:
        window = self.chaos.config.shuffle
        if window > 1:
            self._held_since = time.time()  # idle timer: restarts with every new event
            self._held.append(job)
            if len(self._held) >= window:
                self._release_held()
        else:
            heapq.heappush(self._heap, job)

    def _release_held(self) -> None:
        now = time.time()
        for job in self.chaos.permute(self._held):
            job.due = max(job.due, now)
            job.seq = next(self._seq)
            # Keep the permuted order even when due times tie.
            now += 1e-6
            job.due = max(job.due, now)
            heapq.heappush(self._heap, job)
        self._held = []

    # --- synchronisation -------------------------------------------------------------------------
    def wait_idle(self, timeout: float = 30.0) -> bool:
        """Block until every queued delivery (including delays and retries) is finished."""
        deadline = time.time() + timeout
        with self._cond:
            if self._held:
                self._release_held()
                self._cond.notify_all()
            while self._heap or self._held or self._in_flight:
                remaining = deadline - time.time()
                if remaining <= 0:
                    return False
                self._cond.wait(remaining)
            return True

    def pending(self) -> int:
        with self._cond:
            return len(self._heap) + len(self._held) + self._in_flight

    # --- worker ----------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                now = time.time()
                if self._held and now - self._held_since >= self.settings.hold_seconds:
                    self._release_held()
                if not self._heap:
                    self._cond.wait(self.settings.hold_seconds if self._held else 1.0)
                    continue
                if self._heap[0].due > now:
                    self._cond.wait(self._heap[0].due - now)
                    continue
                job = heapq.heappop(self._heap)
                self._in_flight += 1
            try:
                self._deliver(job)
            finally:
                with self._cond:
                    self._in_flight -= 1
                    self._cond.notify_all()
                if self.on_change is not None:
                    self.on_change()

    def _deliver(self, job: Job) -> None:
        generation = self._generation
        with self.state.lock:
            endpoint = self.state.find(job.endpoint_id)
            event = next((e for e in reversed(self.state.events) if e["id"] == job.event_id), None)
            secret = self.state.private.get(job.endpoint_id, {}).get("secret", "")
        if endpoint is None or event is None or endpoint["status"] != "enabled":
            return
        payload = json.dumps(event, indent=2)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
            "Stripe-Signature": sign(payload, secret),
        }
        status: int | None = None
        error: str | None = None
        try:
            response = self._client.post(endpoint["url"], content=payload.encode(), headers=headers)
            status = response.status_code
            if not 200 <= status < 300:
                error = f"HTTP {status}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        with self.state.lock:
            self._log(job.endpoint_id, event, job.attempt, status, error, duplicate=job.duplicate)
            if error is None and not job.duplicate:
                event["pending_webhooks"] = max(0, event["pending_webhooks"] - 1)
        if error is not None and job.attempt < self.settings.max_attempts:
            delay = self.settings.retry_base * 2 ** (job.attempt - 1)
            retry = Job(
                time.time() + delay, next(self._seq), job.endpoint_id, job.event_id, job.attempt + 1, job.duplicate
            )
            with self._cond:
                if generation == self._generation:
                    heapq.heappush(self._heap, retry)
                self._cond.notify_all()

    def _log(
        self,
        endpoint_id: str,
        event: dict[str, Any],
        attempt: int,
        status: int | None,
        error: str | None,
        *,
        dropped: bool = False,
        duplicate: bool = False,
    ) -> None:
        with self.state.lock:
            self.state.deliveries.append(
                {
                    "endpoint": endpoint_id,
                    "event": event["id"],
                    "type": event["type"],
                    "attempt": attempt,
                    "status_code": status,
                    "error": error,
                    "dropped": dropped,
                    "duplicate": duplicate,
                    "at": time.time(),
                }
            )
