"""Card PaymentMethods (from raw test numbers, Stripe.js, or magic ``pm_card_*`` ids)."""

from __future__ import annotations

import hashlib
from typing import Any

from app.stripe_emulator.api import Ctx, diff, route
from app.stripe_emulator.cards import DECLINE_MESSAGES, MAGIC_PMS, MAGIC_TOKENS, lookup, luhn_ok
from app.stripe_emulator.dialect import (
    LIST_PARAMS,
    apply_metadata,
    check_params,
    get_dict,
    get_int,
    get_str,
    paginate,
)
from app.stripe_emulator.errors import StripeError, invalid
from app.stripe_emulator.ids import new_id

ADDRESS_KEYS = ("city", "country", "line1", "line2", "postal_code", "state")


def card_error(message: str, code: str, param: str, decline_code: str | None = None) -> StripeError:
    return StripeError(message, status=402, type="card_error", code=code, param=param, decline_code=decline_code)


def billing_details(raw: dict[str, Any] | None) -> dict[str, Any]:
    raw = raw or {}
    check_params(raw, ("address", "email", "name", "phone", "tax_id"))
    address: dict[str, Any] = dict.fromkeys(ADDRESS_KEYS)
    for key, value in (raw.get("address") or {}).items():
        if key not in ADDRESS_KEYS:
            raise invalid(f"Received unknown parameter: billing_details[address][{key}]", None, "parameter_unknown")
        address[key] = value or None
    return {
        "address": address,
        "email": raw.get("email") or None,
        "name": raw.get("name") or None,
        "phone": raw.get("phone") or None,
        "tax_id": raw.get("tax_id") or None,
    }


def build_card_pm(
    ctx: Ctx, number: str, exp_month: int, exp_year: int, details: dict[str, Any] | None
) -> dict[str, Any]:
    card = lookup(number)
    pm: dict[str, Any] = {
        "id": new_id("pm"),
        "object": "payment_method",
        "allow_redisplay": "unspecified",
        "billing_details": billing_details(details),
        "card": {
            "brand": card.brand,
            "checks": {"address_line1_check": None, "address_postal_code_check": None, "cvc_check": "unchecked"},
            "country": card.country,
            "display_brand": card.brand,
            "exp_month": exp_month,
            "exp_year": exp_year,
            "fingerprint": hashlib.sha256(number.encode()).hexdigest()[:16],
            "funding": card.funding,
            "generated_from": None,
            "last4": number[-4:],
            "networks": {"available": [card.brand], "preferred": None},
            "regulated_status": "unregulated",
            "three_d_secure_usage": {"supported": True},
            "wallet": None,
        },
        "created": ctx.now,
        "customer": None,
        "customer_account": None,
        "livemode": False,
        "metadata": {},
        "type": "card",
    }
    ctx.state.put(pm)
    ctx.state.hidden(pm["id"])["number"] = number
    return pm


def card_number(state_private: dict[str, Any], pm_id: str) -> str:
    return str(state_private.get(pm_id, {}).get("number", "4242424242424242"))


def resolve_pm(ctx: Ctx, pm_id: str, param: str = "payment_method") -> dict[str, Any]:
    """Look up a PaymentMethod; Stripe's magic test ids mint a fresh ``pm_...`` each time."""
    if pm_id in MAGIC_PMS:
        return build_card_pm(ctx, MAGIC_PMS[pm_id], 12, _future_year(ctx), None)
    return ctx.state.get("payment_method", pm_id, param)


def _future_year(ctx: Ctx) -> int:
    import datetime

    return datetime.datetime.fromtimestamp(ctx.now, tz=datetime.UTC).year + 3


def create_from_params(ctx: Ctx, params: dict[str, Any], param_prefix: str = "") -> dict[str, Any]:
    """Validate card details like Stripe does (incomplete / incorrect number, expiry in the past)."""
    pm_type = get_str(params, "type", required=True)
    if pm_type != "card":
        raise invalid(f"The payment method type `{pm_type}` is not supported by this emulator.", f"{param_prefix}type")
    raw = get_dict(params, "card")
    if not raw:
        raise invalid("Missing required param: card.", f"{param_prefix}card", "parameter_missing")
    check_params(raw, ("number", "exp_month", "exp_year", "cvc", "token", "networks"))
    token = raw.get("token")
    if token:
        if token not in MAGIC_TOKENS:
            raise StripeError(f"No such token: '{token}'", status=404, code="resource_missing", param="card[token]")
        number, month, year = MAGIC_TOKENS[token], 12, _future_year(ctx)
    else:
        number = str(raw.get("number") or "").replace(" ", "")
        if not number:
            raise invalid("Missing required param: card[number].", "card[number]", "parameter_missing")
        if not number.isdigit() or not luhn_ok(number):
            raise card_error("Your card number is incorrect.", "incorrect_number", "number")
        month = get_int(raw, "exp_month", required=True) or 0
        year = get_int(raw, "exp_year", required=True) or 0
        if year < 100:
            year += 2000
        if not 1 <= month <= 12:
            raise card_error("Your card's expiration month is invalid.", "invalid_expiry_month", "exp_month")
        import datetime

        today = datetime.datetime.fromtimestamp(ctx.now, tz=datetime.UTC)
        if (year, month) < (today.year, today.month):
            raise card_error("Your card's expiration year is invalid.", "invalid_expiry_year", "exp_year")
        cvc = str(raw.get("cvc") or "")
        if cvc and (not cvc.isdigit() or len(cvc) not in (3, 4)):
            raise card_error("Your card's security code is invalid.", "invalid_cvc", "cvc")
    pm = build_card_pm(ctx, number, month, year, get_dict(params, "billing_details"))
    if params.get("card", {}).get("cvc"):
        pm["card"]["checks"]["cvc_check"] = "unchecked"
    pm["metadata"] = apply_metadata({}, params)
    if params.get("allow_redisplay"):
        pm["allow_redisplay"] = params["allow_redisplay"]
    return pm


@route("POST", "/v1/payment_methods", publishable=True)
def create(ctx: Ctx) -> dict[str, Any]:
    check_params(
        ctx.params,
        (
            "type",
            "card",
            "billing_details",
            "metadata",
            "expand",
            "allow_redisplay",
            "customer",
            "payment_method",
            "payment_user_agent",
            "time_on_page",
            "guid",
            "muid",
            "sid",
            "key",
        ),
    )
    pm = create_from_params(ctx, ctx.params)
    return ctx.render(pm)


@route("GET", "/v1/payment_methods/{id}")
def retrieve(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("expand",))
    return ctx.render(ctx.state.get("payment_method", ctx.args["id"]))


@route("POST", "/v1/payment_methods/{id}")
def update(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("billing_details", "card", "metadata", "expand", "allow_redisplay"))
    pm = ctx.state.get("payment_method", ctx.args["id"])
    before = dict(pm)
    if "billing_details" in ctx.params:
        pm["billing_details"] = billing_details(get_dict(ctx.params, "billing_details"))
    card = get_dict(ctx.params, "card")
    if card:
        check_params(card, ("exp_month", "exp_year", "networks"))
        pm["card"] = dict(pm["card"])
        if card.get("exp_month"):
            pm["card"]["exp_month"] = get_int(card, "exp_month")
        if card.get("exp_year"):
            pm["card"]["exp_year"] = get_int(card, "exp_year")
    pm["metadata"] = apply_metadata(pm["metadata"], ctx.params)
    changed = diff(before, pm)
    if changed:
        ctx.emit("payment_method.updated", pm, changed)
    return ctx.render(pm)


def attach_to(ctx: Ctx, pm: dict[str, Any], customer: dict[str, Any]) -> None:
    if pm["customer"] == customer["id"]:
        return
    if pm["customer"]:
        raise invalid(
            "The payment method you provided has already been attached to a customer.",
            "payment_method",
            "payment_method_unexpected_state",
        )
    card = lookup(card_number(ctx.state.private, pm["id"]))
    if card.attach_fails:
        code = card.code
        raise card_error(
            DECLINE_MESSAGES.get(card.decline_code or "", "Your card was declined."), code, "", card.decline_code
        )
    pm["customer"] = customer["id"]
    ctx.emit("payment_method.attached", pm)


@route("POST", "/v1/payment_methods/{id}/attach")
def attach(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("customer", "expand", "customer_account"))
    customer = ctx.state.get("customer", get_str(ctx.params, "customer", required=True) or "", "customer")
    pm = resolve_pm(ctx, ctx.args["id"], "id")
    attach_to(ctx, pm, customer)
    return ctx.render(pm)


@route("POST", "/v1/payment_methods/{id}/detach")
def detach(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("expand",))
    pm = ctx.state.get("payment_method", ctx.args["id"])
    if not pm["customer"]:
        raise invalid(
            "The payment method you provided is not attached to a customer so detachment is impossible.",
            None,
            "payment_method_unexpected_state",
        )
    customer = ctx.state.find(pm["customer"])
    pm["customer"] = None
    if customer and customer["invoice_settings"]["default_payment_method"] == pm["id"]:
        customer["invoice_settings"]["default_payment_method"] = None
    ctx.emit("payment_method.detached", pm, {"customer": customer["id"] if customer else None})
    return ctx.render(pm)


def _list(ctx: Ctx, customer_id: str | None, url: str) -> dict[str, Any]:
    kind = get_str(ctx.params, "type")
    items = [
        pm
        for pm in ctx.state.all("payment_method")
        if (customer_id is None or pm["customer"] == customer_id) and (kind is None or pm["type"] == kind)
    ]
    page = paginate(items, ctx.params, url)
    page["data"] = [ctx.render(x, list_mode=True) for x in page["data"]]
    return page


@route("GET", "/v1/payment_methods")
def list_(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, (*LIST_PARAMS, "customer", "type", "customer_account"))
    customer = get_str(ctx.params, "customer")
    if customer:
        ctx.state.get("customer", customer, "customer")
    return _list(ctx, customer, "/v1/payment_methods")


@route("GET", "/v1/customers/{id}/payment_methods")
def list_for_customer(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, (*LIST_PARAMS, "type", "allow_redisplay"))
    ctx.state.get("customer", ctx.args["id"])
    return _list(ctx, ctx.args["id"], f"/v1/customers/{ctx.args['id']}/payment_methods")
