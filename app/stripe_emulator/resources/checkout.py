"""Checkout Sessions (payment and subscription modes) and Billing Portal sessions."""

from __future__ import annotations

import copy
from typing import Any

from app.stripe_emulator.api import Ctx, route
from app.stripe_emulator.dialect import (
    LIST_PARAMS,
    apply_metadata,
    check_params,
    get_bool,
    get_dict,
    get_enum,
    get_int,
    get_list,
    get_str,
    paginate,
)
from app.stripe_emulator.errors import invalid
from app.stripe_emulator.ids import new_id, random_token
from app.stripe_emulator.resources.catalog import build_price

CREATE = (
    "mode",
    "line_items",
    "success_url",
    "cancel_url",
    "customer",
    "customer_email",
    "client_reference_id",
    "metadata",
    "payment_method_types",
    "allow_promotion_codes",
    "discounts",
    "subscription_data",
    "payment_intent_data",
    "expires_at",
    "ui_mode",
    "automatic_tax",
    "billing_address_collection",
    "customer_creation",
    "locale",
    "expand",
    "invoice_creation",
    "phone_number_collection",
    "shipping_address_collection",
    "submit_type",
    "consent_collection",
    "custom_fields",
    "custom_text",
    "saved_payment_method_options",
    "payment_method_collection",
    "return_url",
    "currency",
    "customer_update",
    "redirect_on_completion",
    "after_expiration",
    "tax_id_collection",
    "setup_intent_data",
    "shipping_options",
    "payment_method_options",
    "adaptive_pricing",
    "origin_context",
    "wallet_options",
    "branding_settings",
    "optional_items",
    "name_collection",
    "permissions",
    "payment_method_configuration",
)


PRICE_DATA = ("currency", "product", "product_data", "unit_amount", "unit_amount_decimal", "recurring", "tax_behavior")


def _line_items(ctx: Ctx, raw: list[Any] | None, mode: str) -> list[dict[str, Any]]:
    if not raw:
        raise invalid("Missing required param: line_items.", "line_items", "parameter_missing")
    items = []
    for index, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise invalid("Invalid line_items", "line_items")
        check_params(
            entry,
            ("price", "quantity", "price_data", "adjustable_quantity", "tax_rates", "dynamic_tax_rates", "metadata"),
        )
        price_id = get_str(entry, "price")
        price_data = get_dict(entry, "price_data")
        if price_id:
            price = ctx.state.get("price", price_id, f"line_items[{index}][price]")
        elif price_data:
            # An ad-hoc Price, made for this session (with its Product when product_data names one).
            check_params(
                price_data,
                (
                    "currency",
                    "product",
                    "product_data",
                    "unit_amount",
                    "unit_amount_decimal",
                    "recurring",
                    "tax_behavior",
                ),
            )
            price = build_price(ctx.sub(price_data))
        else:
            raise invalid(
                f"Missing required param: line_items[{index}][price].",
                f"line_items[{index}][price]",
                "parameter_missing",
            )
        if mode == "payment" and price["type"] == "recurring":
            raise invalid("You must use `mode=subscription` with recurring prices.", f"line_items[{index}][price]")
        quantity = get_int(entry, "quantity", minimum=1) or 1
        product = ctx.state.find(price["product"]) or {"name": price["product"]}
        amount = int(price["unit_amount"] or 0) * quantity
        items.append(
            {
                "id": new_id("li"),
                "object": "item",
                "amount_discount": 0,
                "amount_subtotal": amount,
                "amount_tax": 0,
                "amount_total": amount,
                "currency": price["currency"],
                "description": product["name"],
                "metadata": {},
                "price": copy.deepcopy(price),
                "quantity": quantity,
            }
        )
    return items


@route("POST", "/v1/checkout/sessions")
def create(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, CREATE)
    p = ctx.params
    mode = get_enum(p, "mode", ("payment", "subscription", "setup"), required=True) or "payment"
    if mode == "setup":
        raise invalid("This emulator supports mode=payment and mode=subscription.", "mode")
    ui_mode = get_enum(p, "ui_mode", ("hosted", "embedded", "custom")) or "hosted"
    success_url = get_str(p, "success_url")
    if ui_mode == "hosted" and not success_url:
        raise invalid("Missing required param: success_url.", "success_url", "parameter_missing")
    customer = get_str(p, "customer")
    if customer:
        ctx.state.get("customer", customer, "customer")
    if customer and p.get("customer_email"):
        raise invalid("You may only specify one of these parameters: customer, customer_email.", "customer_email")
    items = _line_items(ctx, get_list(p, "line_items"), mode)
    subtotal = sum(i["amount_subtotal"] for i in items)
    session_id = "cs_test_" + random_token(58)
    session: dict[str, Any] = {
        "id": session_id,
        "object": "checkout.session",
        "adaptive_pricing": None,
        "after_expiration": None,
        "allow_promotion_codes": get_bool(p, "allow_promotion_codes"),
        "amount_subtotal": subtotal,
        "amount_total": subtotal,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "billing_address_collection": get_str(p, "billing_address_collection"),
        "cancel_url": get_str(p, "cancel_url"),
        "client_reference_id": get_str(p, "client_reference_id"),
        "client_secret": None,
        "collected_information": None,
        "consent": None,
        "consent_collection": None,
        "created": ctx.now,
        "currency": items[0]["currency"],
        "currency_conversion": None,
        "custom_fields": [],
        "custom_text": {
            "after_submit": None,
            "shipping_address": None,
            "submit": None,
            "terms_of_service_acceptance": None,
        },
        "customer": customer,
        "customer_account": None,
        "customer_creation": None if customer else (get_str(p, "customer_creation") or "if_required"),
        "customer_details": None,
        "customer_email": get_str(p, "customer_email"),
        "discounts": [],
        "expires_at": get_int(p, "expires_at") or ctx.now + 24 * 3600,
        "integration_identifier": None,
        "invoice": None,
        "invoice_creation": None,
        "livemode": False,
        "locale": get_str(p, "locale"),
        "managed_payments": None,
        "metadata": apply_metadata({}, p),
        "mode": mode,
        "origin_context": None,
        "payment_intent": None,
        "payment_link": None,
        "payment_method_collection": "always",
        "payment_method_configuration_details": None,
        "payment_method_options": {"card": {"request_three_d_secure": "automatic"}},
        "payment_method_types": ["card"],
        "payment_status": "unpaid",
        "permissions": None,
        "phone_number_collection": {"enabled": False},
        "recovered_from": None,
        "saved_payment_method_options": None,
        "setup_intent": None,
        "shipping_address_collection": None,
        "shipping_cost": None,
        "shipping_options": [],
        "status": "open",
        "submit_type": get_str(p, "submit_type"),
        "subscription": None,
        "success_url": success_url,
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": ui_mode,
        "url": f"{ctx.base_url}/_emulator/checkout/{session_id}" if ui_mode == "hosted" else None,
        "wallet_options": None,
    }
    ctx.state.put(session)
    hidden = ctx.state.hidden(session_id)
    hidden["line_items"] = items
    hidden["subscription_data"] = get_dict(p, "subscription_data") or {}
    hidden["payment_intent_data"] = get_dict(p, "payment_intent_data") or {}
    _preset_discounts(ctx, session, hidden, get_list(p, "discounts"))
    return ctx.render(session)


def _preset_discounts(ctx: Ctx, session: dict[str, Any], hidden: dict[str, Any], raw: list[Any] | None) -> None:
    """``discounts=[{promotion_code}|{coupon}]`` chosen by the merchant at creation (exclusive with
    ``allow_promotion_codes``, like Stripe). Subscriptions apply and count them on their first invoice."""
    if not raw:
        return
    if session["allow_promotion_codes"]:
        raise invalid("You may only specify one of these parameters: allow_promotion_codes, discounts.", "discounts")
    if len(raw) > 1:
        raise invalid("You can only apply one discount to a Checkout Session.", "discounts")
    entry = raw[0]
    if not isinstance(entry, dict):
        raise invalid("Invalid discounts", "discounts")
    check_params(entry, ("coupon", "promotion_code"))
    promo_id, coupon_id = entry.get("promotion_code"), entry.get("coupon")
    if promo_id:
        promo = ctx.state.get("promotion_code", str(promo_id), "discounts[0][promotion_code]")
        if not promo["active"]:
            raise invalid(f"This promotion code is inactive: {promo['code']}.", "discounts[0][promotion_code]")
        coupon = ctx.state.get("coupon", promo["promotion"]["coupon"])
        hidden["discounts"] = [{"promotion_code": promo["id"]}]
        session["discounts"] = [{"coupon": None, "promotion_code": promo["id"]}]
    elif coupon_id:
        coupon = ctx.state.get("coupon", str(coupon_id), "discounts[0][coupon]")
        hidden["discounts"] = [{"coupon": coupon["id"]}]
        session["discounts"] = [{"coupon": coupon["id"], "promotion_code": None}]
    else:
        return
    subtotal = session["amount_subtotal"]
    off = (
        round(subtotal * float(coupon["percent_off"]) / 100)
        if coupon["percent_off"] is not None
        else min(int(coupon["amount_off"]), subtotal)
    )
    session["total_details"]["amount_discount"] = off
    session["amount_total"] = subtotal - off


@route("GET", "/v1/checkout/sessions/{id}")
def retrieve(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("expand",))
    return ctx.render(ctx.state.get("checkout.session", ctx.args["id"]))


@route("GET", "/v1/checkout/sessions/{id}/line_items")
def line_items(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, LIST_PARAMS)
    session = ctx.state.get("checkout.session", ctx.args["id"])
    items = list(ctx.state.private.get(session["id"], {}).get("line_items", []))
    return paginate(items, ctx.params, f"/v1/checkout/sessions/{session['id']}/line_items")


@route("POST", "/v1/checkout/sessions/{id}/expire")
def expire(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("expand",))
    session = ctx.state.get("checkout.session", ctx.args["id"])
    if session["status"] != "open":
        raise invalid(
            f'Only Checkout Sessions with a status in ["open"] can be expired. This Checkout Session '
            f'has a status of "{session["status"]}".',
            None,
            "checkout_session_not_open",
        )
    session["status"] = "expired"
    ctx.emit("checkout.session.expired", session)
    return ctx.render(session)


@route("GET", "/v1/checkout/sessions")
def list_(ctx: Ctx) -> dict[str, Any]:
    check_params(
        ctx.params,
        (
            *LIST_PARAMS,
            "customer",
            "payment_intent",
            "subscription",
            "status",
            "created",
            "customer_details",
            "payment_link",
        ),
    )
    filters = {k: get_str(ctx.params, k) for k in ("customer", "payment_intent", "subscription", "status")}
    items = [s for s in ctx.state.all("checkout.session") if all(v is None or s[k] == v for k, v in filters.items())]
    page = paginate(items, ctx.params, "/v1/checkout/sessions")
    page["data"] = [ctx.render(s, list_mode=True) for s in page["data"]]
    return page


@route("POST", "/v1/billing_portal/sessions")
def create_portal(ctx: Ctx) -> dict[str, Any]:
    check_params(
        ctx.params,
        (
            "customer",
            "return_url",
            "configuration",
            "flow_data",
            "locale",
            "on_behalf_of",
            "expand",
            "customer_account",
        ),
    )
    customer = ctx.state.get("customer", get_str(ctx.params, "customer", required=True) or "", "customer")
    session_id = new_id("bps")
    session: dict[str, Any] = {
        "id": session_id,
        "object": "billing_portal.session",
        "configuration": "bpc_emulator_default",
        "created": ctx.now,
        "customer": customer["id"],
        "customer_account": None,
        "flow": None,
        "livemode": False,
        "locale": get_str(ctx.params, "locale"),
        "on_behalf_of": None,
        "return_url": get_str(ctx.params, "return_url"),
        "url": f"{ctx.base_url}/_emulator/portal/{session_id}",
    }
    ctx.state.put(session)
    return ctx.render(session)
