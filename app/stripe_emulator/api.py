"""Request context and a tiny router for the ``/v1`` REST surface (kept separate from Litestar routing
so the whole API runs synchronously under one lock, which keeps state transitions atomic)."""

from __future__ import annotations

import copy
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.stripe_emulator.dialect import Params, expand, expand_paths
from app.stripe_emulator.ids import new_id
from app.stripe_emulator.state import API_VERSION, EmulatorState

Handler = Callable[["Ctx"], dict[str, Any]]


@dataclass
class Ctx:
    state: EmulatorState
    params: Params
    args: dict[str, str]
    request_id: str
    base_url: str
    key_kind: str = "secret"
    idempotency_key: str | None = None
    now: int = field(default_factory=lambda: int(time.time()))
    events: list[dict[str, Any]] = field(default_factory=list)
    # True while background processes (test clocks, hosted pages) act: their events carry no request id.
    automatic: bool = False

    def sub(self, params: Params) -> Ctx:
        """A context for an internal call (e.g. ``product_data`` creating a product) sharing events."""
        child = Ctx(
            self.state, params, {}, self.request_id, self.base_url, self.key_kind, self.idempotency_key, self.now
        )
        child.events = self.events
        return child

    def resolve(self, object_id: str) -> dict[str, Any] | None:
        if "#" in object_id:
            owner, _, name = object_id.partition("#")
            value = self.state.private.get(owner, {}).get("includable", {}).get(name)
            return value if isinstance(value, dict) else None
        return self.state.find(object_id)

    def render(self, obj: dict[str, Any], *, list_mode: bool = False) -> dict[str, Any]:
        """Copy of ``obj`` with the request's ``expand[]`` applied (``data.x`` paths for lists)."""
        out = copy.deepcopy(obj)
        paths = expand_paths(self.params)
        if list_mode:
            paths = [p.removeprefix("data.") for p in paths if p.startswith("data.")]
        return expand(out, paths, self.resolve)

    def emit(
        self,
        type_: str,
        obj: dict[str, Any],
        previous: dict[str, Any] | None = None,
        *,
        created: int | None = None,
        automatic: bool = False,
    ) -> dict[str, Any]:
        """Record an Event (a snapshot of ``obj``); delivery happens after the request completes."""
        data: dict[str, Any] = {"object": copy.deepcopy(obj)}
        if previous is not None:
            data["previous_attributes"] = copy.deepcopy(previous)
        endpoints = [
            e
            for e in self.state.all("webhook_endpoint")
            if e["status"] == "enabled" and ("*" in e["enabled_events"] or type_ in e["enabled_events"])
        ]
        event = {
            "id": new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": created if created is not None else self.now,
            "data": data,
            "livemode": False,
            "pending_webhooks": len(endpoints),
            # Events caused by background processes (test clocks, hosted pages) have no API request.
            "request": {"id": None, "idempotency_key": None}
            if automatic or self.automatic
            else {"id": self.request_id, "idempotency_key": self.idempotency_key},
            "type": type_,
        }
        self.state.events.append(event)
        self.events.append(event)
        return event


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """``previous_attributes``: old values of top-level fields that changed."""
    return {k: copy.deepcopy(v) for k, v in before.items() if after.get(k) != v}


@dataclass
class Route:
    method: str
    pattern: re.Pattern[str]
    handler: Handler
    publishable: bool
    mutating: bool


ROUTES: list[Route] = []


def route(method: str, path: str, *, publishable: bool = False) -> Callable[[Handler], Handler]:
    """Register ``handler`` for ``METHOD /v1/...``; ``{name}`` segments become ``ctx.args``."""
    regex = re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$")

    def register(handler: Handler) -> Handler:
        ROUTES.append(Route(method, regex, handler, publishable, method in ("POST", "DELETE")))
        return handler

    return register


def match(method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    # Literal paths (``/v1/invoices/create_preview``) win over ``{id}`` patterns registered earlier.
    for r in sorted(ROUTES, key=lambda r: r.pattern.groups):
        if r.method == method:
            m = r.pattern.match(path)
            if m:
                return r, m.groupdict()
    return None


def path_known(path: str) -> bool:
    return any(r.pattern.match(path) for r in ROUTES)
