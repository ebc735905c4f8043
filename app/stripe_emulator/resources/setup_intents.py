"""SetupIntents: save a card for later (attaches the PaymentMethod to the customer)."""

from __future__ import annotations

import copy
from typing import Any
from urllib.parse import quote

from app.stripe_emulator.api import Ctx, route
from app.stripe_emulator.cards import DECLINE_MESSAGES, lookup
from app.stripe_emulator.dialect import (
    LIST_PARAMS,
    apply_metadata,
    check_params,
    created_filter,
    get_bool,
    get_dict,
    get_enum,
    get_str,
    paginate,
)
from app.stripe_emulator.errors import DOC_BASE, StripeError, invalid
from app.stripe_emulator.ids import client_secret, new_id
from app.stripe_emulator.resources.payment_intents import check_client_secret
from app.stripe_emulator.resources.payment_methods import attach_to, card_number, create_from_params, resolve_pm

CREATE = (
    "customer",
    "payment_method",
    "usage",
    "confirm",
    "payment_method_types",
    "automatic_payment_methods",
    "metadata",
    "description",
    "return_url",
    "expand",
    "payment_method_data",
    "payment_method_options",
    "mandate_data",
    "on_behalf_of",
    "single_use",
    "use_stripe_sdk",
    "flow_directions",
    "attach_to_self",
    "excluded_payment_method_types",
    "payment_method_configuration",
)
CONFIRM = (
    "payment_method",
    "payment_method_data",
    "return_url",
    "expand",
    "client_secret",
    "mandate_data",
    "payment_method_options",
    "use_stripe_sdk",
)
OPEN = ("requires_payment_method", "requires_confirmation", "requires_action")


def _set_pm(ctx: Ctx, si: dict[str, Any], params: dict[str, Any]) -> None:
    pm = None
    if params.get("payment_method_data"):
        pm = create_from_params(ctx, get_dict(params, "payment_method_data") or {}, "payment_method_data[")
    elif params.get("payment_method"):
        pm = resolve_pm(ctx, get_str(params, "payment_method") or "")
    if pm is not None:
        si["payment_method"] = pm["id"]
        if si["status"] == "requires_payment_method":
            si["status"] = "requires_confirmation"


def _fail(
    ctx: Ctx,
    si: dict[str, Any],
    pm: dict[str, Any],
    code: str,
    decline: str | None,
    message: str,
    error_type: str = "card_error",
    *,
    raise_error: bool = True,
) -> None:
    si["last_setup_error"] = {
        "code": code,
        "decline_code": decline,
        "doc_url": f"{DOC_BASE}/{code.replace('_', '-')}",
        "message": message,
        "payment_method": copy.deepcopy(pm),
        "type": error_type,
    }
    si["status"] = "requires_payment_method"
    si["payment_method"] = None
    si["next_action"] = None
    ctx.emit("setup_intent.setup_failed", si)
    if raise_error:
        raise StripeError(
            message,
            status=402,
            type=error_type,
            code=code,
            decline_code=decline,
            extra={"setup_intent": copy.deepcopy(si), "payment_method": copy.deepcopy(pm)},
        )


def _succeed(ctx: Ctx, si: dict[str, Any], pm: dict[str, Any]) -> None:
    if si["customer"]:
        attach_to(ctx, pm, ctx.state.get("customer", si["customer"]))
    si["status"] = "succeeded"
    si["next_action"] = None
    si["last_setup_error"] = None
    si["latest_attempt"] = new_id("setatt")
    ctx.emit("setup_intent.succeeded", si)


def confirm_setup(ctx: Ctx, si: dict[str, Any], params: dict[str, Any]) -> None:
    if si["status"] not in OPEN:
        raise StripeError(
            f"You cannot confirm this SetupIntent because it has a status of {si['status']}.",
            code="setup_intent_unexpected_state",
        )
    _set_pm(ctx, si, params)
    if not si["payment_method"]:
        raise StripeError(
            "You cannot confirm this SetupIntent because it's missing a payment method.",
            code="setup_intent_unexpected_state",
        )
    hidden = ctx.state.hidden(si["id"])
    if params.get("return_url"):
        hidden["return_url"] = params["return_url"]
    pm = ctx.state.get("payment_method", si["payment_method"])
    card = lookup(card_number(ctx.state.private, pm["id"]))
    if card.attach_fails:
        _fail(
            ctx,
            si,
            pm,
            card.code,
            card.decline_code,
            DECLINE_MESSAGES.get(card.decline_code or "", "Your card was declined."),
        )
    if card.outcome == "3ds" and not hidden.get("authenticated"):
        si["status"] = "requires_action"
        si["next_action"] = {
            "type": "redirect_to_url",
            "redirect_to_url": {
                "return_url": hidden.get("return_url"),
                "url": f"{ctx.base_url}/_emulator/3ds/{si['id']}?client_secret={quote(si['client_secret'])}",
            },
        }
        ctx.emit("setup_intent.requires_action", si)
        return
    _succeed(ctx, si, pm)


def finish_setup_3ds(ctx: Ctx, si: dict[str, Any], success: bool) -> None:
    if si["status"] != "requires_action":
        return
    pm = ctx.state.get("payment_method", si["payment_method"])
    if success:
        ctx.state.hidden(si["id"])["authenticated"] = True
        _succeed(ctx, si, pm)
        return
    _fail(
        ctx,
        si,
        pm,
        "setup_intent_authentication_failure",
        None,
        "The latest attempt to set up the payment method has failed because authentication failed.",
        "invalid_request_error",
        raise_error=False,
    )


@route("POST", "/v1/setup_intents")
def create(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, CREATE)
    customer = get_str(ctx.params, "customer")
    if customer:
        ctx.state.get("customer", customer, "customer")
    apm = get_dict(ctx.params, "automatic_payment_methods")
    si_id = new_id("seti")
    si: dict[str, Any] = {
        "id": si_id,
        "object": "setup_intent",
        "application": None,
        "automatic_payment_methods": {"allow_redirects": "always", "enabled": True}
        if apm and get_bool(apm, "enabled")
        else None,
        "cancellation_reason": None,
        "client_secret": client_secret(si_id),
        "created": ctx.now,
        "customer": customer,
        "description": get_str(ctx.params, "description"),
        "excluded_payment_method_types": None,
        "flow_directions": None,
        "last_setup_error": None,
        "latest_attempt": None,
        "livemode": False,
        "mandate": None,
        "metadata": apply_metadata({}, ctx.params),
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": None,
        "payment_method_configuration_details": None,
        "payment_method_options": {
            "card": {"mandate_options": None, "network": None, "request_three_d_secure": "automatic"}
        },
        "payment_method_types": ["card"],
        "single_use_mandate": None,
        "status": "requires_payment_method",
        "usage": get_enum(ctx.params, "usage", ("on_session", "off_session")) or "off_session",
    }
    ctx.state.put(si)
    _set_pm(ctx, si, ctx.params)
    ctx.emit("setup_intent.created", si)
    if get_bool(ctx.params, "confirm"):
        confirm_setup(ctx, si, ctx.params)
    return ctx.render(si)


@route("GET", "/v1/setup_intents/{id}", publishable=True)
def retrieve(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("expand", "client_secret"))
    si = ctx.state.get("setup_intent", ctx.args["id"])
    check_client_secret(ctx, si)
    return ctx.render(si)


@route("POST", "/v1/setup_intents/{id}")
def update(ctx: Ctx) -> dict[str, Any]:
    check_params(
        ctx.params,
        (
            "customer",
            "description",
            "metadata",
            "payment_method",
            "payment_method_data",
            "payment_method_types",
            "expand",
            "payment_method_options",
            "flow_directions",
        ),
    )
    si = ctx.state.get("setup_intent", ctx.args["id"])
    if "customer" in ctx.params:
        cus = get_str(ctx.params, "customer")
        if cus:
            ctx.state.get("customer", cus, "customer")
        si["customer"] = cus
    if "description" in ctx.params:
        si["description"] = get_str(ctx.params, "description")
    si["metadata"] = apply_metadata(si["metadata"], ctx.params)
    _set_pm(ctx, si, ctx.params)
    return ctx.render(si)


@route("POST", "/v1/setup_intents/{id}/confirm", publishable=True)
def confirm(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, CONFIRM)
    si = ctx.state.get("setup_intent", ctx.args["id"])
    check_client_secret(ctx, si)
    confirm_setup(ctx, si, ctx.params)
    return ctx.render(si)


@route("POST", "/v1/setup_intents/{id}/cancel")
def cancel(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("cancellation_reason", "expand"))
    si = ctx.state.get("setup_intent", ctx.args["id"])
    if si["status"] not in OPEN:
        raise invalid(
            f"You cannot cancel this SetupIntent because it has a status of {si['status']}.",
            None,
            "setup_intent_unexpected_state",
        )
    si["status"] = "canceled"
    si["cancellation_reason"] = get_enum(
        ctx.params, "cancellation_reason", ("abandoned", "duplicate", "requested_by_customer")
    )
    ctx.emit("setup_intent.canceled", si)
    return ctx.render(si)


@route("GET", "/v1/setup_intents")
def list_(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, (*LIST_PARAMS, "customer", "created", "payment_method", "attach_to_self"))
    customer = get_str(ctx.params, "customer")
    in_range = created_filter(ctx.params)
    items = [
        s
        for s in ctx.state.all("setup_intent")
        if (customer is None or s["customer"] == customer) and in_range(s["created"])
    ]
    page = paginate(items, ctx.params, "/v1/setup_intents")
    page["data"] = [ctx.render(s, list_mode=True) for s in page["data"]]
    return page
