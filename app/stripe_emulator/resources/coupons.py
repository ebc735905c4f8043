"""Coupons and promotion codes."""

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
    get_str,
    paginate,
)
from app.stripe_emulator.errors import StripeError, invalid
from app.stripe_emulator.ids import new_id, random_token


@route("POST", "/v1/coupons")
def create_coupon(ctx: Ctx) -> dict[str, Any]:
    check_params(
        ctx.params,
        (
            "id",
            "percent_off",
            "amount_off",
            "currency",
            "duration",
            "duration_in_months",
            "max_redemptions",
            "redeem_by",
            "name",
            "metadata",
            "applies_to",
            "expand",
            "currency_options",
        ),
    )
    p = ctx.params
    coupon_id = get_str(p, "id") or random_token(8)
    if ctx.state.find(coupon_id):
        raise StripeError("Coupon already exists.", code="resource_already_exists", param="id")
    percent = p.get("percent_off")
    amount_off = get_int(p, "amount_off", minimum=1)
    if (percent in (None, "")) == (amount_off is None):
        raise invalid("You must pass exactly one of percent_off or amount_off.", "percent_off")
    percent_value = None if percent in (None, "") else float(percent)
    if percent_value is not None and not 0 < percent_value <= 100:
        raise invalid("Percent off must be between 0 and 100.", "percent_off")
    currency = get_str(p, "currency")
    if amount_off is not None and not currency:
        raise invalid("You must pass currency when passing amount_off.", "currency", "parameter_missing")
    duration = get_enum(p, "duration", ("once", "repeating", "forever")) or "once"
    months = get_int(p, "duration_in_months", minimum=1)
    if duration == "repeating" and months is None:
        raise invalid(
            "You must pass duration_in_months when duration is repeating.", "duration_in_months", "parameter_missing"
        )
    applies_to = get_dict(p, "applies_to")
    products: list[str] = []
    if applies_to is not None:
        check_params(applies_to, ("products",))
        raw_products = applies_to.get("products") or []
        if not isinstance(raw_products, list):
            raise invalid("Invalid array", "applies_to[products]")
        for index, product_id in enumerate(raw_products):
            ctx.state.get("product", str(product_id), f"applies_to[products][{index}]")
            products.append(str(product_id))
    coupon: dict[str, Any] = {
        "id": coupon_id,
        "object": "coupon",
        "amount_off": amount_off,
        "created": ctx.now,
        "currency": currency.lower() if currency else None,
        "duration": duration,
        "duration_in_months": months if duration == "repeating" else None,
        "livemode": False,
        "max_redemptions": get_int(p, "max_redemptions", minimum=1),
        "metadata": apply_metadata({}, p),
        "name": get_str(p, "name"),
        "percent_off": percent_value,
        "redeem_by": get_int(p, "redeem_by"),
        "times_redeemed": 0,
        "valid": True,
    }
    ctx.state.put(coupon)
    if applies_to is not None:
        # Like Stripe, ``applies_to`` is includable: present only with ``expand[]=applies_to``.
        ctx.state.hidden(coupon_id).setdefault("includable", {})["applies_to"] = {"products": products}
    ctx.emit("coupon.created", coupon)
    return ctx.render(coupon)


def coupon_products(ctx: Ctx, coupon: dict[str, Any]) -> list[str] | None:
    """The Stripe products a coupon is restricted to (``applies_to.products``), or None for all of them."""
    applies_to = ctx.state.private.get(coupon["id"], {}).get("includable", {}).get("applies_to")
    return list(applies_to["products"]) if applies_to else None


@route("GET", "/v1/coupons/{id}")
def retrieve_coupon(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("expand",))
    return ctx.render(ctx.state.get("coupon", ctx.args["id"]))


@route("POST", "/v1/coupons/{id}")
def update_coupon(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("name", "metadata", "expand", "currency_options"))
    coupon = ctx.state.get("coupon", ctx.args["id"])
    before = dict(coupon)
    if "name" in ctx.params:
        coupon["name"] = get_str(ctx.params, "name")
    coupon["metadata"] = apply_metadata(coupon["metadata"], ctx.params)
    changed = diff(before, coupon)
    if changed:
        ctx.emit("coupon.updated", coupon, changed)
    return ctx.render(coupon)


@route("DELETE", "/v1/coupons/{id}")
def delete_coupon(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ())
    coupon = ctx.state.get("coupon", ctx.args["id"])
    ctx.state.remove(coupon["id"])
    ctx.emit("coupon.deleted", coupon)
    return {"id": coupon["id"], "object": "coupon", "deleted": True}


@route("GET", "/v1/coupons")
def list_coupons(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, (*LIST_PARAMS, "created"))
    in_range = created_filter(ctx.params)
    page = paginate([c for c in ctx.state.all("coupon") if in_range(c["created"])], ctx.params, "/v1/coupons")
    page["data"] = [ctx.render(c, list_mode=True) for c in page["data"]]
    return page


def coupon_redeemable(coupon: dict[str, Any], now: int) -> bool:
    if coupon["redeem_by"] is not None and now > coupon["redeem_by"]:
        return False
    return coupon["max_redemptions"] is None or coupon["times_redeemed"] < coupon["max_redemptions"]


def _restrictions(raw: dict[str, Any] | None) -> dict[str, Any]:
    raw = raw or {}
    check_params(raw, ("first_time_transaction", "minimum_amount", "minimum_amount_currency", "currency_options"))
    return {
        "currency_options": {},
        "first_time_transaction": bool(get_bool(raw, "first_time_transaction")),
        "minimum_amount": get_int(raw, "minimum_amount"),
        "minimum_amount_currency": (get_str(raw, "minimum_amount_currency") or "").lower() or None,
    }


@route("POST", "/v1/promotion_codes")
def create_promo(ctx: Ctx) -> dict[str, Any]:
    check_params(
        ctx.params,
        (
            "promotion",
            "code",
            "active",
            "customer",
            "expires_at",
            "max_redemptions",
            "restrictions",
            "metadata",
            "expand",
            "customer_account",
        ),
    )
    promotion = get_dict(ctx.params, "promotion")
    if not promotion or not promotion.get("coupon"):
        raise invalid("Missing required param: promotion[coupon].", "promotion", "parameter_missing")
    check_params(promotion, ("type", "coupon"))
    coupon = ctx.state.get("coupon", str(promotion["coupon"]), "promotion[coupon]")
    code = get_str(ctx.params, "code") or random_token(8).upper()
    if any(pc["code"].lower() == code.lower() and pc["active"] for pc in ctx.state.all("promotion_code")):
        raise invalid(
            "An active promotion code with `code: " + code + "` already exists.", "code", "resource_already_exists"
        )
    customer = get_str(ctx.params, "customer")
    if customer:
        ctx.state.get("customer", customer, "customer")
    promo: dict[str, Any] = {
        "id": new_id("promo"),
        "object": "promotion_code",
        "active": get_bool(ctx.params, "active") is not False,
        "code": code,
        "created": ctx.now,
        "customer": customer,
        "customer_account": None,
        "expires_at": get_int(ctx.params, "expires_at"),
        "livemode": False,
        "max_redemptions": get_int(ctx.params, "max_redemptions", minimum=1),
        "metadata": apply_metadata({}, ctx.params),
        "promotion": {"coupon": coupon["id"], "type": "coupon"},
        "restrictions": _restrictions(get_dict(ctx.params, "restrictions")),
        "times_redeemed": 0,
    }
    ctx.state.put(promo)
    ctx.emit("promotion_code.created", promo)
    return ctx.render(promo)


@route("GET", "/v1/promotion_codes/{id}")
def retrieve_promo(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("expand",))
    return ctx.render(ctx.state.get("promotion_code", ctx.args["id"]))


@route("POST", "/v1/promotion_codes/{id}")
def update_promo(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("active", "metadata", "restrictions", "expand"))
    promo = ctx.state.get("promotion_code", ctx.args["id"])
    before = dict(promo)
    active = get_bool(ctx.params, "active")
    if active is not None:
        promo["active"] = active
    promo["metadata"] = apply_metadata(promo["metadata"], ctx.params)
    changed = diff(before, promo)
    if changed:
        ctx.emit("promotion_code.updated", promo, changed)
    return ctx.render(promo)


@route("GET", "/v1/promotion_codes")
def list_promos(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, (*LIST_PARAMS, "code", "active", "coupon", "customer", "created"))
    code = get_str(ctx.params, "code")
    active = get_bool(ctx.params, "active")
    coupon = get_str(ctx.params, "coupon")
    customer = get_str(ctx.params, "customer")
    items = [
        pc
        for pc in ctx.state.all("promotion_code")
        if (code is None or pc["code"].lower() == code.lower())
        and (active is None or pc["active"] == active)
        and (coupon is None or pc["promotion"]["coupon"] == coupon)
        and (customer is None or pc["customer"] == customer)
    ]
    page = paginate(items, ctx.params, "/v1/promotion_codes")
    page["data"] = [ctx.render(pc, list_mode=True) for pc in page["data"]]
    return page


def check_promo(
    ctx: Ctx, promo: dict[str, Any], customer_id: str, subtotal: int, currency: str, now: int, param: str
) -> dict[str, Any]:
    """Validate a promotion code for a purchase; returns its coupon."""
    coupon = ctx.state.get("coupon", promo["promotion"]["coupon"])
    r = promo["restrictions"]
    problems = [
        not promo["active"],
        promo["expires_at"] is not None and now > promo["expires_at"],
        promo["max_redemptions"] is not None and promo["times_redeemed"] >= promo["max_redemptions"],
        promo["customer"] is not None and promo["customer"] != customer_id,
        not coupon_redeemable(coupon, now),
        r["minimum_amount"] is not None
        and (subtotal < r["minimum_amount"] or (r["minimum_amount_currency"] or currency) != currency),
        r["first_time_transaction"]
        and any(ch["customer"] == customer_id and ch["status"] == "succeeded" for ch in ctx.state.all("charge")),
    ]
    if any(problems):
        raise invalid(
            f"This promotion code cannot be redeemed: {promo['code']}.",
            param,
            "promotion_code_invalid" if not promo["active"] else "coupon_expired",
        )
    return coupon
