"""Products and prices."""

from __future__ import annotations

from typing import Any

from app.stripe_emulator.api import Ctx, diff, route
from app.stripe_emulator.dialect import (
    LIST_PARAMS,
    apply_metadata,
    check_params,
    created_filter,
    get_bool,
    get_dict,
    get_enum,
    get_int,
    get_list,
    get_str,
    paginate_kind,
)
from app.stripe_emulator.errors import StripeError, invalid
from app.stripe_emulator.ids import new_id

PRODUCT_FIELDS = (
    "name",
    "active",
    "description",
    "metadata",
    "images",
    "shippable",
    "statement_descriptor",
    "tax_code",
    "unit_label",
    "url",
    "expand",
    "marketing_features",
    "package_dimensions",
    "default_price",
)


def _apply_product(ctx: Ctx, prod: dict[str, Any]) -> None:
    p = ctx.params
    for key in ("name", "description", "statement_descriptor", "tax_code", "unit_label", "url"):
        if key in p:
            prod[key] = get_str(p, key)
    if "active" in p:
        prod["active"] = bool(get_bool(p, "active"))
    if "shippable" in p:
        prod["shippable"] = get_bool(p, "shippable")
    if "images" in p:
        prod["images"] = list(get_list(p, "images") or [])
    if "marketing_features" in p:
        prod["marketing_features"] = [{"name": f.get("name")} for f in get_list(p, "marketing_features") or []]
    if "default_price" in p:
        price_id = get_str(p, "default_price")
        if price_id:
            ctx.state.get("price", price_id, "default_price")
        prod["default_price"] = price_id
    prod["metadata"] = apply_metadata(prod["metadata"], p)


@route("POST", "/v1/products")
def create_product(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, (*PRODUCT_FIELDS, "id", "default_price_data", "type"))
    get_str(ctx.params, "name", required=True)
    product_id = get_str(ctx.params, "id") or new_id("prod", 14)
    if ctx.state.find(product_id):
        raise StripeError("Product already exists.", code="resource_already_exists", param="id")
    prod: dict[str, Any] = {
        "id": product_id,
        "object": "product",
        "active": True,
        "created": ctx.now,
        "default_price": None,
        "description": None,
        "images": [],
        "livemode": False,
        "marketing_features": [],
        "metadata": {},
        "name": "",
        "package_dimensions": None,
        "shippable": None,
        "statement_descriptor": None,
        "tax_code": None,
        "type": "service",
        "unit_label": None,
        "updated": ctx.now,
        "url": None,
    }
    params = {k: v for k, v in ctx.params.items() if k != "default_price"}
    ctx.state.put(prod)
    _apply_product(ctx.sub(params), prod)
    ctx.emit("product.created", prod)
    dpd = get_dict(ctx.params, "default_price_data")
    if dpd:
        check_params(dpd, ("currency", "unit_amount", "unit_amount_decimal", "recurring", "tax_behavior", "metadata"))
        price = build_price(ctx.sub({**dpd, "product": prod["id"]}))
        prod["default_price"] = price["id"]
    return ctx.render(prod)


@route("GET", "/v1/products/{id}")
def retrieve_product(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("expand",))
    return ctx.render(ctx.state.get("product", ctx.args["id"]))


@route("POST", "/v1/products/{id}")
def update_product(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, PRODUCT_FIELDS)
    prod = ctx.state.get("product", ctx.args["id"])
    before = dict(prod)
    _apply_product(ctx, prod)
    changed = diff(before, prod)
    if changed:
        prod["updated"] = ctx.now
        ctx.emit("product.updated", prod, changed)
    return ctx.render(prod)


@route("DELETE", "/v1/products/{id}")
def delete_product(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ())
    prod = ctx.state.get("product", ctx.args["id"])
    if any(p["product"] == prod["id"] for p in ctx.state.all("price")):
        raise invalid(
            "This product cannot be deleted because it has one or more user-created prices.", None, "product_has_prices"
        )
    ctx.state.remove(prod["id"])
    ctx.emit("product.deleted", prod)
    return {"id": prod["id"], "object": "product", "deleted": True}


@route("GET", "/v1/products")
def list_products(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, (*LIST_PARAMS, "active", "ids", "created", "shippable", "url"))
    active = get_bool(ctx.params, "active")
    ids = get_list(ctx.params, "ids")
    in_range = created_filter(ctx.params)

    def wanted(p: dict[str, Any]) -> bool:
        return (active is None or p["active"] == active) and (ids is None or p["id"] in ids) and in_range(p["created"])

    page = paginate_kind(ctx.state, "product", wanted, ctx.params, "/v1/products")
    page["data"] = [ctx.render(p, list_mode=True) for p in page["data"]]
    return page


PRICE_CREATE = (
    "currency",
    "product",
    "product_data",
    "unit_amount",
    "unit_amount_decimal",
    "recurring",
    "lookup_key",
    "active",
    "nickname",
    "metadata",
    "tax_behavior",
    "billing_scheme",
    "expand",
    "transfer_lookup_key",
    "custom_unit_amount",
    "tiers",
    "tiers_mode",
    "transform_quantity",
    "currency_options",
)


def build_price(ctx: Ctx) -> dict[str, Any]:
    p = ctx.params
    currency = (get_str(p, "currency", required=True) or "").lower()
    product_id = get_str(p, "product")
    product_data = get_dict(p, "product_data")
    if product_id:
        ctx.state.get("product", product_id, "product")
    elif product_data:
        product_id = create_product(ctx.sub(product_data))["id"]
    else:
        raise invalid(
            "You must specify either `product` or `product_data` when creating a price.", "product", "parameter_missing"
        )
    unit_amount = get_int(p, "unit_amount", minimum=0)
    if unit_amount is None and p.get("unit_amount_decimal"):
        unit_amount = int(float(p["unit_amount_decimal"]))
    if unit_amount is None and not p.get("custom_unit_amount"):
        raise invalid("Missing required param: unit_amount.", "unit_amount", "parameter_missing")
    recurring_raw = get_dict(p, "recurring")
    recurring = None
    if recurring_raw:
        check_params(
            recurring_raw, ("interval", "interval_count", "usage_type", "meter", "trial_period_days", "aggregate_usage")
        )
        interval = get_enum(recurring_raw, "interval", ("day", "week", "month", "year"), required=True)
        recurring = {
            "interval": interval,
            "interval_count": get_int(recurring_raw, "interval_count", minimum=1) or 1,
            "meter": None,
            "trial_period_days": get_int(recurring_raw, "trial_period_days"),
            "usage_type": recurring_raw.get("usage_type") or "licensed",
        }
    lookup_key = get_str(p, "lookup_key")
    if lookup_key:
        clash = [x for x in ctx.state.all("price") if x["lookup_key"] == lookup_key]
        if clash and not get_bool(p, "transfer_lookup_key"):
            raise invalid(
                f"A price (`{clash[0]['id']}`) already uses that lookup key.", "lookup_key", "lookup_key_already_used"
            )
        for other in clash:
            other["lookup_key"] = None
    price: dict[str, Any] = {
        "id": new_id("price"),
        "object": "price",
        "active": get_bool(p, "active") is not False,
        "billing_scheme": p.get("billing_scheme") or "per_unit",
        "created": ctx.now,
        "currency": currency,
        "custom_unit_amount": None,
        "livemode": False,
        "lookup_key": lookup_key,
        "metadata": apply_metadata({}, p),
        "nickname": get_str(p, "nickname"),
        "product": product_id,
        "recurring": recurring,
        "tax_behavior": p.get("tax_behavior") or "unspecified",
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "recurring" if recurring else "one_time",
        "unit_amount": unit_amount,
        "unit_amount_decimal": None if unit_amount is None else str(unit_amount),
    }
    ctx.state.put(price)
    ctx.emit("price.created", price)
    return price


@route("POST", "/v1/prices")
def create_price(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, PRICE_CREATE)
    return ctx.render(build_price(ctx))


@route("GET", "/v1/prices/{id}")
def retrieve_price(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("expand",))
    return ctx.render(ctx.state.get("price", ctx.args["id"]))


@route("POST", "/v1/prices/{id}")
def update_price(ctx: Ctx) -> dict[str, Any]:
    check_params(
        ctx.params,
        (
            "active",
            "lookup_key",
            "metadata",
            "nickname",
            "tax_behavior",
            "expand",
            "transfer_lookup_key",
            "currency_options",
        ),
    )
    price = ctx.state.get("price", ctx.args["id"])
    before = dict(price)
    p = ctx.params
    if "active" in p:
        price["active"] = bool(get_bool(p, "active"))
    if "nickname" in p:
        price["nickname"] = get_str(p, "nickname")
    if "lookup_key" in p:
        key = get_str(p, "lookup_key")
        if key:
            for other in ctx.state.all("price"):
                if other["lookup_key"] == key and other["id"] != price["id"]:
                    if not get_bool(p, "transfer_lookup_key"):
                        raise invalid(
                            f"A price (`{other['id']}`) already uses that lookup key.",
                            "lookup_key",
                            "lookup_key_already_used",
                        )
                    other["lookup_key"] = None
        price["lookup_key"] = key
    price["metadata"] = apply_metadata(price["metadata"], p)
    changed = diff(before, price)
    if changed:
        ctx.emit("price.updated", price, changed)
    return ctx.render(price)


@route("GET", "/v1/prices")
def list_prices(ctx: Ctx) -> dict[str, Any]:
    check_params(
        ctx.params, (*LIST_PARAMS, "active", "product", "type", "lookup_keys", "currency", "created", "recurring")
    )
    active = get_bool(ctx.params, "active")
    product = get_str(ctx.params, "product")
    kind = get_enum(ctx.params, "type", ("one_time", "recurring"))
    currency = get_str(ctx.params, "currency")
    keys = get_list(ctx.params, "lookup_keys")
    in_range = created_filter(ctx.params)

    def wanted(x: dict[str, Any]) -> bool:
        return (
            (active is None or x["active"] == active)
            and (product is None or x["product"] == product)
            and (kind is None or x["type"] == kind)
            and (currency is None or x["currency"] == currency.lower())
            and (keys is None or x["lookup_key"] in keys)
            and in_range(x["created"])
        )

    page = paginate_kind(ctx.state, "price", wanted, ctx.params, "/v1/prices")
    page["data"] = [ctx.render(x, list_mode=True) for x in page["data"]]
    return page
