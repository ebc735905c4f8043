"""Test clocks: move time forward for customers bound to a clock, replaying billing as it would happen."""

from __future__ import annotations

from typing import Any

from app.stripe_emulator import billing
from app.stripe_emulator.api import Ctx, route
from app.stripe_emulator.dialect import LIST_PARAMS, check_params, get_int, get_str, paginate
from app.stripe_emulator.errors import invalid
from app.stripe_emulator.ids import new_id

BASE = "/v1/test_helpers/test_clocks"


@route("POST", BASE)
def create(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("frozen_time", "name", "expand"))
    frozen = get_int(ctx.params, "frozen_time", required=True) or 0
    clock: dict[str, Any] = {
        "id": new_id("clock"),
        "object": "test_helpers.test_clock",
        "created": ctx.now,
        "deletes_after": ctx.now + 30 * billing.DAY,
        "frozen_time": frozen,
        "livemode": False,
        "name": get_str(ctx.params, "name"),
        "status": "ready",
        "status_details": {},
    }
    ctx.state.put(clock)
    ctx.emit("test_helpers.test_clock.created", clock)
    return ctx.render(clock)


@route("GET", BASE + "/{id}")
def retrieve(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("expand",))
    return ctx.render(ctx.state.get("test_helpers.test_clock", ctx.args["id"]))


@route("POST", BASE + "/{id}/advance")
def advance(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("frozen_time", "expand"))
    clock = ctx.state.get("test_helpers.test_clock", ctx.args["id"])
    target = get_int(ctx.params, "frozen_time", required=True) or 0
    if target <= clock["frozen_time"]:
        raise invalid(
            "The frozen_time must be after the current frozen_time of the test clock.",
            "frozen_time",
            "test_clock_advance_invalid",
        )
    # Stripe advances asynchronously (status "advancing"); the emulator finishes before responding.
    ctx.emit("test_helpers.test_clock.advancing", {**clock, "status": "advancing"})
    billing.advance_clock(ctx, clock, target)
    clock["status"] = "ready"
    ctx.emit("test_helpers.test_clock.ready", clock)
    return ctx.render(clock)


@route("DELETE", BASE + "/{id}")
def delete(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ())
    clock = ctx.state.get("test_helpers.test_clock", ctx.args["id"])
    for customer in ctx.state.all("customer"):
        if customer["test_clock"] == clock["id"]:
            ctx.state.remove(customer["id"])
    ctx.state.remove(clock["id"])
    ctx.emit("test_helpers.test_clock.deleted", clock)
    return {"id": clock["id"], "object": "test_helpers.test_clock", "deleted": True}


@route("GET", BASE)
def list_(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, LIST_PARAMS)
    return paginate(ctx.state.all("test_helpers.test_clock"), ctx.params, BASE)
