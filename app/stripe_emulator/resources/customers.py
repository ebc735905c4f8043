"""Customers: CRUD, list, search."""

from __future__ import annotations

import re
from typing import Any

from app.stripe_emulator.api import Ctx, diff, route
from app.stripe_emulator.dialect import (
    LIST_PARAMS,
    apply_metadata,
    check_params,
    created_filter,
    get_dict,
    get_str,
    paginate,
    paginate_kind,
)
from app.stripe_emulator.errors import invalid
from app.stripe_emulator.ids import new_id, random_token

ADDRESS_KEYS = ("city", "country", "line1", "line2", "postal_code", "state")
WRITABLE = (
    "address",
    "description",
    "email",
    "metadata",
    "name",
    "phone",
    "preferred_locales",
    "shipping",
    "invoice_settings",
    "tax_exempt",
    "expand",
    "balance",
    "payment_method",
    "test_clock",
    "invoice_prefix",
    "source",
    "coupon",
    "promotion_code",
    "tax",
    "tax_id_data",
    "next_invoice_sequence",
    "cash_balance",
)


def _address(raw: Any) -> dict[str, Any]:
    base: dict[str, Any] = dict.fromkeys(ADDRESS_KEYS)
    if isinstance(raw, dict):
        for key, value in raw.items():
            if key not in ADDRESS_KEYS:
                raise invalid(f"Received unknown parameter: address[{key}]", f"address[{key}]", "parameter_unknown")
            base[key] = value or None
    return base


def _apply(ctx: Ctx, cus: dict[str, Any]) -> None:
    p = ctx.params
    for key in ("description", "email", "name", "phone"):
        if key in p:
            cus[key] = get_str(p, key)
    if "address" in p:
        cus["address"] = _address(p["address"]) if p["address"] != "" else None
    if "shipping" in p:
        ship = get_dict(p, "shipping")
        cus["shipping"] = (
            {"address": _address(ship.get("address")), "name": ship.get("name"), "phone": ship.get("phone") or None}
            if ship
            else None
        )
    if "preferred_locales" in p:
        cus["preferred_locales"] = list(p["preferred_locales"] or [])
    if "tax_exempt" in p:
        cus["tax_exempt"] = get_str(p, "tax_exempt") or "none"
    settings = get_dict(p, "invoice_settings")
    if settings:
        check_params(settings, ("default_payment_method", "custom_fields", "footer", "rendering_options"))
        if "default_payment_method" in settings:
            pm_id = settings["default_payment_method"] or None
            if pm_id:
                pm = ctx.state.get("payment_method", pm_id, "invoice_settings[default_payment_method]")
                if pm["customer"] != cus["id"]:
                    raise invalid(
                        f"The customer does not have a payment method with the ID {pm_id}. The payment method must "
                        "be attached to the customer.",
                        "invoice_settings[default_payment_method]",
                        "resource_missing",
                    )
            cus["invoice_settings"]["default_payment_method"] = pm_id
        if "footer" in settings:
            cus["invoice_settings"]["footer"] = settings["footer"] or None
    cus["metadata"] = apply_metadata(cus["metadata"], p)


def new_customer(ctx: Ctx) -> dict[str, Any]:
    return {
        "id": new_id("cus", 14),
        "object": "customer",
        "address": None,
        "balance": 0,
        "created": ctx.now,
        "currency": None,
        "default_source": None,
        "delinquent": False,
        "description": None,
        "discount": None,
        "email": None,
        "invoice_prefix": random_token(8).upper(),
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": False,
        "metadata": {},
        "name": None,
        "next_invoice_sequence": 1,
        "phone": None,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }


@route("POST", "/v1/customers")
def create(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, WRITABLE)
    cus = new_customer(ctx)
    clock_id = get_str(ctx.params, "test_clock")
    if clock_id:
        clock = ctx.state.get("test_helpers.test_clock", clock_id, "test_clock")
        cus["test_clock"] = clock_id
        cus["created"] = clock["frozen_time"]
    ctx.state.put(cus)
    _apply(ctx, cus)
    pm_id = get_str(ctx.params, "payment_method")
    if pm_id:
        from app.stripe_emulator.resources.payment_methods import attach_to

        attach_to(ctx, ctx.state.get("payment_method", pm_id, "payment_method"), cus)
    ctx.emit("customer.created", cus)
    return ctx.render(cus)


@route("GET", "/v1/customers/search")
def search(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("query", "limit", "page", "expand"))
    query = get_str(ctx.params, "query", required=True) or ""
    matcher = parse_query(query)
    hits = [c for c in ctx.state.all("customer") if matcher(c)]
    page = paginate(hits, {"limit": ctx.params.get("limit")}, "/v1/customers/search")
    return {
        "object": "search_result",
        "data": [ctx.render(c, list_mode=True) for c in page["data"]],
        "has_more": page["has_more"],
        "next_page": None,
        "url": "/v1/customers/search",
    }


_CLAUSE = re.compile(r"""\s*(?:(metadata)\[['"]([^'"]+)['"]\]|(\w+))\s*(:|~)\s*['"]([^'"]*)['"]\s*""")


def parse_query(query: str) -> Any:
    """Stripe search syntax subset: ``field:'v'``, ``field~'sub'``, ``metadata['k']:'v'``, joined by AND / OR."""
    use_or = bool(re.search(r"\sOR\s", query))
    parts = re.split(r"\s+(?:AND|OR)\s+", query.strip())
    checks = []
    for part in parts:
        m = _CLAUSE.fullmatch(part)
        if not m:
            raise invalid(f"Search query is invalid: {query}", "query")
        meta_key, field_name, op, value = m.group(2), m.group(3), m.group(4), m.group(5)
        checks.append((meta_key, field_name, op, value))

    def one(obj: dict[str, Any], check: tuple[str | None, str | None, str, str]) -> bool:
        meta_key, field_name, op, value = check
        actual = obj["metadata"].get(meta_key) if meta_key else obj.get(field_name or "")
        if actual is None:
            return False
        text = str(actual)
        return value.lower() in text.lower() if op == "~" else text == value

    def matcher(obj: dict[str, Any]) -> bool:
        results = [one(obj, c) for c in checks]
        return any(results) if use_or else all(results)

    return matcher


@route("GET", "/v1/customers/{id}")
def retrieve(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("expand",))
    return ctx.render(ctx.state.get("customer", ctx.args["id"]))


@route("POST", "/v1/customers/{id}")
def update(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, [w for w in WRITABLE if w not in ("test_clock", "payment_method")] + ["default_source"])
    cus = ctx.state.get("customer", ctx.args["id"])
    before = dict(cus)
    before["invoice_settings"] = dict(cus["invoice_settings"])
    _apply(ctx, cus)
    changed = diff(before, cus)
    if changed:
        ctx.emit("customer.updated", cus, changed)
    return ctx.render(cus)


@route("DELETE", "/v1/customers/{id}")
def delete(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ())
    cus = ctx.state.get("customer", ctx.args["id"])
    ctx.state.remove(cus["id"])
    ctx.emit("customer.deleted", cus)
    return {"id": cus["id"], "object": "customer", "deleted": True}


@route("GET", "/v1/customers")
def list_(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, (*LIST_PARAMS, "email", "created", "test_clock"))
    email = get_str(ctx.params, "email")
    clock = get_str(ctx.params, "test_clock")
    in_range = created_filter(ctx.params)

    def wanted(c: dict[str, Any]) -> bool:
        return bool(
            (email is None or c["email"] == email)
            and (clock is None or c["test_clock"] == clock)
            and in_range(c["created"])
        )

    page = paginate_kind(ctx.state, "customer", wanted, ctx.params, "/v1/customers")
    page["data"] = [ctx.render(c, list_mode=True) for c in page["data"]]
    return page
