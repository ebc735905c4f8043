"""Events (read-only) and webhook endpoints."""

from __future__ import annotations

import fnmatch
from typing import Any

from app.stripe_emulator.api import Ctx, diff, route
from app.stripe_emulator.dialect import (
    LIST_PARAMS,
    apply_metadata,
    check_params,
    created_filter,
    get_bool,
    get_list,
    get_str,
    paginate,
)
from app.stripe_emulator.errors import invalid, no_such
from app.stripe_emulator.ids import new_id, webhook_secret
from app.stripe_emulator.state import API_VERSION, EVENT_RETENTION


@route("GET", "/v1/events")
def list_events(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, (*LIST_PARAMS, "type", "types", "created", "delivery_success"))
    type_ = get_str(ctx.params, "type")
    types = get_list(ctx.params, "types")
    if type_ and types:
        raise invalid("You may only specify one of these parameters: type, types.", "types")
    if types and len(types) > 20:
        # Stripe accepts at most 20 types per request (a client handling more lists them all, or splits).
        raise invalid("Invalid array: types can have at most 20 elements.", "types", "parameter_invalid_array")
    in_range = created_filter(ctx.params)
    cutoff = ctx.now - EVENT_RETENTION  # Stripe only lists the last 30 days

    def wanted(evt: dict[str, Any]) -> bool:
        if type_ and not fnmatch.fnmatchcase(evt["type"], type_):
            return False
        if types and evt["type"] not in types:
            return False
        return bool(evt["created"] >= cutoff and in_range(evt["created"]))

    items = [e for e in reversed(ctx.state.events) if wanted(e)]
    return paginate(items, ctx.params, "/v1/events")


@route("GET", "/v1/events/{id}")
def retrieve_event(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("expand",))
    for evt in ctx.state.events:
        if evt["id"] == ctx.args["id"]:
            return ctx.render(evt)
    raise no_such("event", ctx.args["id"])


ENDPOINT_PARAMS = ("url", "enabled_events", "description", "metadata", "api_version", "connect", "expand", "disabled")


def _events_list(ctx: Ctx) -> list[str]:
    events = get_list(ctx.params, "enabled_events")
    if not events:
        raise invalid("Missing required param: enabled_events.", "enabled_events", "parameter_missing")
    return [str(e) for e in events]


def create_endpoint(ctx: Ctx, url: str, enabled_events: list[str], secret: str | None = None) -> dict[str, Any]:
    endpoint: dict[str, Any] = {
        "id": new_id("we"),
        "object": "webhook_endpoint",
        "api_version": get_str(ctx.params, "api_version") or API_VERSION,
        "application": None,
        "created": ctx.now,
        "description": get_str(ctx.params, "description"),
        "enabled_events": enabled_events,
        "livemode": False,
        "metadata": apply_metadata({}, ctx.params),
        "status": "enabled",
        "url": url,
    }
    ctx.state.put(endpoint)
    ctx.state.hidden(endpoint["id"])["secret"] = secret or webhook_secret()
    return endpoint


@route("POST", "/v1/webhook_endpoints")
def create(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ENDPOINT_PARAMS)
    url = get_str(ctx.params, "url", required=True) or ""
    if not url.startswith(("http://", "https://")):
        raise invalid("Invalid URL: URL must be publicly accessible.", "url", "url_invalid")
    endpoint = create_endpoint(ctx, url, _events_list(ctx))
    # The signing secret is only ever returned on creation, like Stripe.
    return {**ctx.render(endpoint), "secret": ctx.state.hidden(endpoint["id"])["secret"]}


@route("GET", "/v1/webhook_endpoints/{id}")
def retrieve(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("expand",))
    return ctx.render(ctx.state.get("webhook_endpoint", ctx.args["id"]))


@route("POST", "/v1/webhook_endpoints/{id}")
def update(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("url", "enabled_events", "description", "metadata", "expand", "disabled"))
    endpoint = ctx.state.get("webhook_endpoint", ctx.args["id"])
    before = dict(endpoint)
    if "url" in ctx.params:
        endpoint["url"] = get_str(ctx.params, "url", required=True)
    if "enabled_events" in ctx.params:
        endpoint["enabled_events"] = _events_list(ctx)
    if "description" in ctx.params:
        endpoint["description"] = get_str(ctx.params, "description")
    disabled = get_bool(ctx.params, "disabled")
    if disabled is not None:
        endpoint["status"] = "disabled" if disabled else "enabled"
    endpoint["metadata"] = apply_metadata(endpoint["metadata"], ctx.params)
    diff(before, endpoint)
    return ctx.render(endpoint)


@route("DELETE", "/v1/webhook_endpoints/{id}")
def delete(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ())
    endpoint = ctx.state.get("webhook_endpoint", ctx.args["id"])
    ctx.state.remove(endpoint["id"])
    return {"id": endpoint["id"], "object": "webhook_endpoint", "deleted": True}


@route("GET", "/v1/webhook_endpoints")
def list_(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, LIST_PARAMS)
    page = paginate(ctx.state.all("webhook_endpoint"), ctx.params, "/v1/webhook_endpoints")
    page["data"] = [ctx.render(e, list_mode=True) for e in page["data"]]
    return page
