"""Tax Rates (exclusive or inclusive percentages attached to subscription items and invoices)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from app.stripe_emulator.api import Ctx, diff, route
from app.stripe_emulator.dialect import (
    LIST_PARAMS,
    apply_metadata,
    check_params,
    created_filter,
    get_bool,
    get_enum,
    get_str,
    paginate,
)
from app.stripe_emulator.errors import invalid
from app.stripe_emulator.ids import new_id

TAX_TYPES = (
    "amusement_tax",
    "communications_tax",
    "gst",
    "hst",
    "igst",
    "jct",
    "lease_tax",
    "pst",
    "qst",
    "retail_delivery_fee",
    "rst",
    "sales_tax",
    "service_tax",
    "vat",
)


def _percentage(raw: Any) -> float:
    try:
        value = Decimal(str(raw))
    except (InvalidOperation, ValueError):
        raise invalid("Invalid decimal: " + str(raw), "percentage") from None
    if not Decimal(0) <= value <= Decimal(100):
        raise invalid("Percentage must be between 0 and 100.", "percentage")
    # Stripe answers a JSON number (9.975, 5); keep whole numbers integral like its fixtures.
    return int(value) if value == value.to_integral_value() else float(value)


@route("POST", "/v1/tax_rates")
def create_tax_rate(ctx: Ctx) -> dict[str, Any]:
    check_params(
        ctx.params,
        (
            "display_name",
            "inclusive",
            "percentage",
            "active",
            "country",
            "description",
            "jurisdiction",
            "metadata",
            "state",
            "tax_type",
            "expand",
        ),
    )
    p = ctx.params
    display_name = get_str(p, "display_name", required=True)
    inclusive = get_bool(p, "inclusive")
    if inclusive is None:
        raise invalid("Missing required param: inclusive.", "inclusive", "parameter_missing")
    if p.get("percentage") in (None, ""):
        raise invalid("Missing required param: percentage.", "percentage", "parameter_missing")
    country = get_str(p, "country")
    rate: dict[str, Any] = {
        "id": new_id("txr"),
        "object": "tax_rate",
        "active": get_bool(p, "active") is not False,
        "country": country.upper() if country else None,
        "created": ctx.now,
        "description": get_str(p, "description"),
        "display_name": display_name,
        "effective_percentage": None,
        "flat_amount": None,
        "inclusive": inclusive,
        "jurisdiction": get_str(p, "jurisdiction"),
        "jurisdiction_level": None,
        "livemode": False,
        "metadata": apply_metadata({}, p),
        "percentage": _percentage(p["percentage"]),
        "rate_type": "percentage",
        "state": get_str(p, "state"),
        "tax_type": get_enum(p, "tax_type", TAX_TYPES),
    }
    rate["effective_percentage"] = rate["percentage"]
    ctx.state.put(rate)
    ctx.emit("tax_rate.created", rate)
    return ctx.render(rate)


@route("GET", "/v1/tax_rates/{id}")
def retrieve_tax_rate(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("expand",))
    return ctx.render(ctx.state.get("tax_rate", ctx.args["id"]))


@route("POST", "/v1/tax_rates/{id}")
def update_tax_rate(ctx: Ctx) -> dict[str, Any]:
    # Percentage and inclusivity are immutable at Stripe: a changed rate is a new Tax Rate.
    check_params(
        ctx.params,
        ("active", "country", "description", "display_name", "jurisdiction", "metadata", "state", "tax_type", "expand"),
    )
    rate = ctx.state.get("tax_rate", ctx.args["id"])
    before = dict(rate)
    p = ctx.params
    active = get_bool(p, "active")
    if active is not None:
        rate["active"] = active
    for name in ("description", "display_name", "jurisdiction", "state"):
        if name in p:
            rate[name] = get_str(p, name)
    if "country" in p:
        country = get_str(p, "country")
        rate["country"] = country.upper() if country else None
    if "tax_type" in p:
        rate["tax_type"] = get_enum(p, "tax_type", TAX_TYPES)
    rate["metadata"] = apply_metadata(rate["metadata"], p)
    changed = diff(before, rate)
    if changed:
        ctx.emit("tax_rate.updated", rate, changed)
    return ctx.render(rate)


@route("GET", "/v1/tax_rates")
def list_tax_rates(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, (*LIST_PARAMS, "active", "inclusive", "created"))
    active = get_bool(ctx.params, "active")
    inclusive = get_bool(ctx.params, "inclusive")
    in_range = created_filter(ctx.params)
    items = [
        r
        for r in ctx.state.all("tax_rate")
        if in_range(r["created"])
        and (active is None or r["active"] == active)
        and (inclusive is None or r["inclusive"] == inclusive)
    ]
    page = paginate(items, ctx.params, "/v1/tax_rates")
    page["data"] = [ctx.render(r, list_mode=True) for r in page["data"]]
    return page
