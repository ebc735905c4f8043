"""PaymentIntents: the payment state machine, including test-card outcomes and 3-D Secure."""

from __future__ import annotations

import contextlib
import copy
from typing import Any
from urllib.parse import quote

from app.stripe_emulator import hooks
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
    get_int,
    get_list,
    get_str,
    paginate_kind,
)
from app.stripe_emulator.errors import DOC_BASE, StripeError, invalid, unauthorized
from app.stripe_emulator.ids import client_secret, new_id
from app.stripe_emulator.resources.charges import build_charge
from app.stripe_emulator.resources.disputes import open_dispute
from app.stripe_emulator.resources.payment_methods import (
    attach_to,
    card_number,
    create_from_params,
    resolve_pm,
)

CONFIRM_PARAMS = (
    "payment_method",
    "payment_method_data",
    "return_url",
    "receipt_email",
    "expand",
    "setup_future_usage",
    "off_session",
    "use_stripe_sdk",
    "mandate_data",
    "payment_method_options",
    "error_on_requires_action",
    "shipping",
    "payment_method_types",
    "capture_method",
    "client_secret",
    "radar_options",
    "mandate",
)
CREATE_PARAMS = (
    "amount",
    "currency",
    "customer",
    "description",
    "metadata",
    "receipt_email",
    "payment_method",
    "payment_method_types",
    "automatic_payment_methods",
    "confirm",
    "return_url",
    "setup_future_usage",
    "capture_method",
    "statement_descriptor",
    "statement_descriptor_suffix",
    "expand",
    "off_session",
    "payment_method_data",
    "shipping",
    "transfer_group",
    "confirmation_method",
    "error_on_requires_action",
    "use_stripe_sdk",
    "payment_method_options",
    "mandate_data",
    "excluded_payment_method_types",
    "payment_method_configuration",
    "radar_options",
    "application_fee_amount",
    "on_behalf_of",
    "transfer_data",
)
UPDATE_PARAMS = (
    "amount",
    "currency",
    "customer",
    "description",
    "metadata",
    "receipt_email",
    "payment_method",
    "payment_method_types",
    "setup_future_usage",
    "statement_descriptor",
    "statement_descriptor_suffix",
    "expand",
    "shipping",
    "transfer_group",
    "payment_method_data",
    "payment_method_options",
    "capture_method",
    "excluded_payment_method_types",
)
OPEN_STATUSES = ("requires_payment_method", "requires_confirmation", "requires_action")


def _amount(params: dict[str, Any]) -> int:
    amount = get_int(params, "amount", required=True) or 0
    if amount < 50:
        raise invalid("Amount must be at least $0.50 usd", "amount", "amount_too_small")
    if amount > 99999999:
        raise invalid("Amount must be no more than $999,999.99", "amount", "amount_too_large")
    return amount


def _shipping(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    if not raw:
        return None
    return {
        "address": {
            k: (raw.get("address") or {}).get(k) for k in ("city", "country", "line1", "line2", "postal_code", "state")
        },
        "carrier": raw.get("carrier"),
        "name": raw.get("name"),
        "phone": raw.get("phone"),
        "tracking_number": raw.get("tracking_number"),
    }


def _apply_common(ctx: Ctx, pi: dict[str, Any], params: dict[str, Any]) -> None:
    for key in (
        "description",
        "receipt_email",
        "statement_descriptor",
        "statement_descriptor_suffix",
        "transfer_group",
    ):
        if key in params:
            pi[key] = get_str(params, key)
    if "customer" in params:
        cus_id = get_str(params, "customer")
        if cus_id:
            ctx.state.get("customer", cus_id, "customer")
        pi["customer"] = cus_id
    if "setup_future_usage" in params:
        pi["setup_future_usage"] = get_enum(params, "setup_future_usage", ("on_session", "off_session"))
    if "shipping" in params:
        pi["shipping"] = _shipping(get_dict(params, "shipping"))
    if "payment_method_types" in params:
        pi["payment_method_types"] = list(get_list(params, "payment_method_types") or ["card"])
    pi["metadata"] = apply_metadata(pi["metadata"], params)


def new_intent(ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    amount = _amount(params)
    currency = (get_str(params, "currency", required=True) or "").lower()
    apm = get_dict(params, "automatic_payment_methods")
    pi_id = new_id("pi")
    pi: dict[str, Any] = {
        "id": pi_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": 0,
        "application": None,
        "application_fee_amount": None,
        "automatic_payment_methods": {"allow_redirects": apm.get("allow_redirects", "always"), "enabled": True}
        if apm and get_bool(apm, "enabled")
        else None,
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": "automatic",
        "client_secret": client_secret(pi_id),
        "confirmation_method": get_str(params, "confirmation_method") or "automatic",
        "created": ctx.now,
        "currency": currency,
        "customer": None,
        "customer_account": None,
        "description": None,
        "excluded_payment_method_types": None,
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": False,
        "managed_payments": None,
        "metadata": {},
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": None,
        "payment_method_configuration_details": None,
        "payment_method_options": {
            "card": {
                "installments": None,
                "mandate_options": None,
                "network": None,
                "request_three_d_secure": "automatic",
            }
        },
        "payment_method_types": ["card"],
        "processing": None,
        "receipt_email": None,
        "review": None,
        "setup_future_usage": None,
        "shipping": None,
        "source": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "requires_payment_method",
        "transfer_data": None,
        "transfer_group": None,
    }
    _apply_common(ctx, pi, params)
    ctx.state.put(pi)
    _set_payment_method(ctx, pi, params)
    return pi


def _set_payment_method(ctx: Ctx, pi: dict[str, Any], params: dict[str, Any]) -> None:
    pm = None
    if params.get("payment_method_data"):
        pmd = get_dict(params, "payment_method_data") or {}
        check_params(
            pmd,
            (
                "type",
                "card",
                "billing_details",
                "metadata",
                "allow_redisplay",
                "payment_user_agent",
                "time_on_page",
                "guid",
                "muid",
                "sid",
            ),
        )
        pm = create_from_params(ctx, pmd, "payment_method_data[")
    elif params.get("payment_method"):
        pm = resolve_pm(ctx, get_str(params, "payment_method") or "")
    if pm is None:
        return
    if pm["customer"] and pi["customer"] and pm["customer"] != pi["customer"]:
        raise invalid(
            "The provided PaymentMethod was previously used with a PaymentIntent without Customer attachment, "
            "shared with a connected account without Customer attachment, or was detached from a Customer. It may "
            "not be used again. To use a PaymentMethod multiple times, you must attach it to a Customer first.",
            "payment_method",
            "payment_method_unexpected_state",
        )
    pi["payment_method"] = pm["id"]
    if pi["status"] == "requires_payment_method":
        pi["status"] = "requires_confirmation"


def check_client_secret(ctx: Ctx, obj: dict[str, Any]) -> None:
    """Publishable-key calls must prove they hold the intent's client secret."""
    if ctx.key_kind != "publishable":
        return
    secret = ctx.params.get("client_secret")
    if not secret:
        raise unauthorized("This API call cannot be made with a publishable API key without a client_secret.")
    if secret != obj["client_secret"]:
        raise invalid(
            "The client_secret provided does not match the client_secret associated with the "
            f"{obj['object'].replace('_', '')}.",
            "client_secret",
            "payment_intent_invalid_parameter",
        )


def _unexpected(pi: dict[str, Any], action: str) -> StripeError:
    return StripeError(
        f"You cannot {action} this PaymentIntent because it has a status of {pi['status']}.",
        code="payment_intent_unexpected_state",
        extra={"payment_intent": copy.deepcopy(pi)},
    )


def confirm_intent(ctx: Ctx, pi: dict[str, Any], params: dict[str, Any]) -> None:
    """Run confirmation; raises a 402 ``card_error`` (after recording events) when the card is declined."""
    if pi["status"] not in OPEN_STATUSES:
        raise _unexpected(pi, "confirm")
    _apply_common(
        ctx,
        pi,
        {
            k: v
            for k, v in params.items()
            if k in ("receipt_email", "setup_future_usage", "shipping", "payment_method_types")
        },
    )
    _set_payment_method(ctx, pi, params)
    if not pi["payment_method"]:
        raise StripeError(
            "You cannot confirm this PaymentIntent because it's missing a payment method. You can either update "
            "the PaymentIntent with a payment method and then confirm it again, or confirm it again directly "
            "with a payment method or ConfirmationToken.",
            code="payment_intent_unexpected_state",
            extra={"payment_intent": copy.deepcopy(pi)},
        )
    hidden = ctx.state.hidden(pi["id"])
    if params.get("return_url"):
        hidden["return_url"] = params["return_url"]
    pm = ctx.state.get("payment_method", pi["payment_method"])
    card = lookup(card_number(ctx.state.private, pm["id"]))
    off_session = get_bool(params, "off_session") or False
    if pi["setup_future_usage"] and pi["customer"] and not pm["customer"]:
        attach_to(ctx, pm, ctx.state.get("customer", pi["customer"]))
    if card.outcome == "3ds" and not hidden.get("authenticated"):
        if off_session or get_bool(params, "error_on_requires_action"):
            _decline(
                ctx,
                pi,
                pm,
                "authentication_required",
                "authentication_required",
                "Your card was declined. This transaction requires authentication.",
            )
        pi["status"] = "requires_action"
        secret = quote(pi["client_secret"])
        pi["next_action"] = {
            "type": "redirect_to_url",
            "redirect_to_url": {
                "return_url": hidden.get("return_url"),
                "url": f"{ctx.base_url}/_emulator/3ds/{pi['id']}?client_secret={secret}",
            },
        }
        ctx.emit("payment_intent.requires_action", pi)
        return
    charge_intent(ctx, pi)


def charge_intent(ctx: Ctx, pi: dict[str, Any], *, created: int | None = None, automatic: bool = False) -> None:
    pm = ctx.state.get("payment_method", pi["payment_method"])
    card = lookup(card_number(ctx.state.private, pm["id"]))
    succeeded = card.outcome != "decline"
    charge = build_charge(
        ctx,
        amount=pi["amount"],
        currency=pi["currency"],
        pm=pm,
        card=card,
        succeeded=succeeded,
        payment_intent=pi["id"],
        customer=pi["customer"],
        description=pi["description"],
        receipt_email=pi["receipt_email"],
        created=created,
    )
    pi["latest_charge"] = charge["id"]
    pi["next_action"] = None
    if succeeded:
        pi["status"] = "succeeded"
        pi["amount_received"] = pi["amount"]
        pi["last_payment_error"] = None
        # Stripe's own trigger fixtures emit the charge event before the intent event.
        ctx.emit("charge.succeeded", charge, created=created, automatic=automatic)
        ctx.emit("payment_intent.succeeded", pi, created=created, automatic=automatic)
        hooks.run(hooks.PAYMENT_SUCCEEDED, ctx, pi)
        if card.dispute:  # Stripe's dispute test cards: the bank disputes the payment moments later
            open_dispute(ctx, charge, card.dispute, created=created)
        return
    ctx.emit("charge.failed", charge, created=created, automatic=automatic)
    _decline(
        ctx,
        pi,
        pm,
        card.code,
        card.decline_code or "generic_decline",
        DECLINE_MESSAGES.get(card.decline_code or "", "Your card was declined."),
        charge["id"],
        created=created,
        automatic=automatic,
    )


def _decline(
    ctx: Ctx,
    pi: dict[str, Any],
    pm: dict[str, Any],
    code: str,
    decline_code: str,
    message: str,
    charge_id: str | None = None,
    *,
    created: int | None = None,
    automatic: bool = False,
) -> None:
    error: dict[str, Any] = {
        "charge": charge_id,
        "code": code,
        "decline_code": decline_code,
        "doc_url": f"{DOC_BASE}/{code.replace('_', '-')}",
        "message": message,
        "payment_method": copy.deepcopy(pm),
        "type": "card_error",
    }
    pi["last_payment_error"] = error
    pi["status"] = "requires_payment_method"
    pi["payment_method"] = None
    pi["next_action"] = None
    ctx.emit("payment_intent.payment_failed", pi, created=created, automatic=automatic)
    hooks.run(hooks.PAYMENT_FAILED, ctx, pi)
    raise StripeError(
        message,
        status=402,
        type="card_error",
        code=code,
        decline_code=decline_code,
        extra={"charge": charge_id, "payment_intent": copy.deepcopy(pi), "payment_method": copy.deepcopy(pm)},
    )


def finish_3ds(ctx: Ctx, pi: dict[str, Any], success: bool) -> None:
    """Outcome of the emulator's 3-D Secure page."""
    if pi["status"] != "requires_action":
        return
    if success:
        ctx.state.hidden(pi["id"])["authenticated"] = True
        with contextlib.suppress(StripeError):  # a decline is already recorded on the intent
            charge_intent(ctx, pi, automatic=True)
        return
    pm = ctx.state.get("payment_method", pi["payment_method"])
    pi["last_payment_error"] = {
        "code": "payment_intent_authentication_failure",
        "doc_url": f"{DOC_BASE}/payment-intent-authentication-failure",
        "message": "The provided PaymentMethod has failed authentication. You can provide payment_method_data or "
        "a new PaymentMethod to attempt to fulfill this PaymentIntent again.",
        "payment_method": copy.deepcopy(pm),
        "type": "invalid_request_error",
    }
    pi["status"] = "requires_payment_method"
    pi["payment_method"] = None
    pi["next_action"] = None
    ctx.emit("payment_intent.payment_failed", pi, automatic=True)
    hooks.run(hooks.PAYMENT_FAILED, ctx, pi)


@route("POST", "/v1/payment_intents")
def create(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, CREATE_PARAMS)
    if get_enum(ctx.params, "capture_method", ("automatic", "automatic_async")) is None:
        pass
    pi = new_intent(ctx, ctx.params)
    ctx.emit("payment_intent.created", pi)
    if get_bool(ctx.params, "confirm"):
        confirm_intent(ctx, pi, ctx.params)
    return ctx.render(pi)


@route("GET", "/v1/payment_intents/{id}", publishable=True)
def retrieve(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("expand", "client_secret"))
    pi = ctx.state.get("payment_intent", ctx.args["id"])
    check_client_secret(ctx, pi)
    return ctx.render(pi)


@route("POST", "/v1/payment_intents/{id}")
def update(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, UPDATE_PARAMS)
    pi = ctx.state.get("payment_intent", ctx.args["id"])
    money_fields = {"amount", "currency", "payment_method", "payment_method_data"} & set(ctx.params)
    if money_fields and pi["status"] not in OPEN_STATUSES:
        raise _unexpected(pi, "update")
    if "amount" in ctx.params:
        pi["amount"] = _amount(ctx.params)
    if "currency" in ctx.params:
        pi["currency"] = (get_str(ctx.params, "currency") or pi["currency"]).lower()
    _apply_common(ctx, pi, ctx.params)
    _set_payment_method(ctx, pi, ctx.params)
    return ctx.render(pi)


@route("POST", "/v1/payment_intents/{id}/confirm", publishable=True)
def confirm(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, CONFIRM_PARAMS)
    pi = ctx.state.get("payment_intent", ctx.args["id"])
    check_client_secret(ctx, pi)
    confirm_intent(ctx, pi, ctx.params)
    return ctx.render(pi)


@route("POST", "/v1/payment_intents/{id}/cancel")
def cancel(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("cancellation_reason", "expand"))
    pi = ctx.state.get("payment_intent", ctx.args["id"])
    if pi["status"] not in (*OPEN_STATUSES, "requires_capture", "processing"):
        raise _unexpected(pi, "cancel")
    pi["status"] = "canceled"
    pi["canceled_at"] = ctx.now
    pi["next_action"] = None
    pi["cancellation_reason"] = get_enum(
        ctx.params, "cancellation_reason", ("duplicate", "fraudulent", "requested_by_customer", "abandoned")
    )
    ctx.emit("payment_intent.canceled", pi)
    return ctx.render(pi)


@route("GET", "/v1/payment_intents")
def list_(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, (*LIST_PARAMS, "customer", "created"))
    customer = get_str(ctx.params, "customer")
    in_range = created_filter(ctx.params)

    def wanted(p: dict[str, Any]) -> bool:
        return bool((customer is None or p["customer"] == customer) and in_range(p["created"]))

    page = paginate_kind(ctx.state, "payment_intent", wanted, ctx.params, "/v1/payment_intents")
    page["data"] = [ctx.render(p, list_mode=True) for p in page["data"]]
    return page
