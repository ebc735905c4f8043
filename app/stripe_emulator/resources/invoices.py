"""Invoices (created by subscriptions) and the upcoming-invoice preview."""

from __future__ import annotations

import copy
from typing import Any

from app.stripe_emulator import billing
from app.stripe_emulator.api import Ctx, diff, route
from app.stripe_emulator.dialect import (
    LIST_PARAMS,
    apply_metadata,
    check_params,
    created_filter,
    get_bool,
    get_dict,
    get_int,
    get_list,
    get_str,
    paginate,
    paginate_kind,
)
from app.stripe_emulator.errors import StripeError, invalid
from app.stripe_emulator.ids import random_token
from app.stripe_emulator.resources.subscriptions import _item_changes, _prorate


@route("GET", "/v1/invoices/{id}")
def retrieve(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("expand",))
    return ctx.render(ctx.state.get("invoice", ctx.args["id"]))


@route("POST", "/v1/invoices/{id}")
def update(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("metadata", "description", "footer", "expand", "auto_advance"))
    invoice = ctx.state.get("invoice", ctx.args["id"])
    before = dict(invoice)
    for key in ("description", "footer"):
        if key in ctx.params:
            invoice[key] = get_str(ctx.params, key)
    invoice["metadata"] = apply_metadata(invoice["metadata"], ctx.params)
    changed = diff(before, invoice)
    if changed:
        ctx.emit("invoice.updated", invoice, changed)
    return ctx.render(invoice)


@route("POST", "/v1/invoices/{id}/finalize")
def finalize(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("auto_advance", "expand"))
    invoice = ctx.state.get("invoice", ctx.args["id"])
    if invoice["status"] != "draft":
        raise invalid(
            "This invoice is already finalized, you can't re-finalize a non-draft invoice.",
            None,
            "invoice_not_editable",
        )
    billing.finalize(ctx, invoice, billing.customer_now(ctx, invoice["customer"]))
    return ctx.render(invoice)


@route("POST", "/v1/invoices/{id}/pay")
def pay(ctx: Ctx) -> dict[str, Any]:
    check_params(
        ctx.params, ("payment_method", "off_session", "paid_out_of_band", "forgive", "expand", "source", "mandate")
    )
    invoice = ctx.state.get("invoice", ctx.args["id"])
    if invoice["status"] == "paid":
        raise invalid("Invoice is already paid", None, "invoice_already_paid")
    if invoice["status"] != "open":
        raise invalid(f"You can only pay an open invoice (this one is {invoice['status']}).", None, "invoice_not_open")
    now = billing.customer_now(ctx, invoice["customer"])
    ctx.now = now
    if get_bool(ctx.params, "paid_out_of_band"):
        billing.mark_paid(ctx, invoice, now)
        return ctx.render(invoice)
    sub_id = invoice["parent"]["subscription_details"]["subscription"] if invoice["parent"] else None
    sub = ctx.state.find(sub_id) if sub_id else None
    pm = get_str(ctx.params, "payment_method") or (billing.default_pm(ctx, sub) if sub else None)
    if not billing.attempt_payment(ctx, invoice, pm, now):
        pi = billing.invoice_intent(ctx, invoice) or {}
        error = pi.get("last_payment_error") or {}
        raise StripeError(
            error.get("message", "The invoice could not be paid."),
            status=402,
            type="card_error",
            code=error.get("code", "card_declined"),
            decline_code=error.get("decline_code"),
        )
    return ctx.render(invoice)


@route("POST", "/v1/invoices/{id}/void")
def void(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("expand",))
    invoice = ctx.state.get("invoice", ctx.args["id"])
    if invoice["status"] != "open":
        raise invalid("You can only void an open invoice.", None, "invoice_not_open")
    invoice["status"] = "void"
    invoice["next_payment_attempt"] = None
    invoice["status_transitions"]["voided_at"] = billing.customer_now(ctx, invoice["customer"])
    ctx.emit("invoice.voided", invoice)
    return ctx.render(invoice)


@route("GET", "/v1/invoices/{id}/lines")
def lines(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, LIST_PARAMS)
    invoice = ctx.state.get("invoice", ctx.args["id"])
    return paginate(list(invoice["lines"]["data"]), ctx.params, f"/v1/invoices/{invoice['id']}/lines")


@route("GET", "/v1/invoices")
def list_(ctx: Ctx) -> dict[str, Any]:
    check_params(
        ctx.params,
        (
            *LIST_PARAMS,
            "customer",
            "subscription",
            "status",
            "created",
            "collection_method",
            "due_date",
            "customer_account",
        ),
    )
    customer = get_str(ctx.params, "customer")
    sub = get_str(ctx.params, "subscription")
    status = get_str(ctx.params, "status")
    in_range = created_filter(ctx.params)

    def wanted(i: dict[str, Any]) -> bool:
        return bool(
            (customer is None or i["customer"] == customer)
            and (status is None or i["status"] == status)
            and (sub is None or (i["parent"] and i["parent"]["subscription_details"]["subscription"] == sub))
            and in_range(i["created"])
        )

    page = paginate_kind(ctx.state, "invoice", wanted, ctx.params, "/v1/invoices")
    page["data"] = [ctx.render(i, list_mode=True) for i in page["data"]]
    return page


@route("POST", "/v1/invoices/create_preview")
def create_preview(ctx: Ctx) -> dict[str, Any]:
    """The next invoice of a subscription, optionally as if ``subscription_details`` changes were applied."""
    check_params(
        ctx.params,
        (
            "customer",
            "subscription",
            "subscription_details",
            "discounts",
            "expand",
            "preview_mode",
            "automatic_tax",
            "currency",
            "customer_details",
            "invoice_items",
            "issuer",
            "on_behalf_of",
            "schedule",
            "schedule_details",
            "customer_account",
        ),
    )
    sub_id = get_str(ctx.params, "subscription")
    if not sub_id:
        raise invalid(
            "This emulator previews subscription invoices only: pass `subscription`.",
            "subscription",
            "parameter_missing",
        )
    real = ctx.state.get("subscription", sub_id, "subscription")
    customer = get_str(ctx.params, "customer")
    if customer and customer != real["customer"]:
        raise invalid("The subscription does not belong to this customer.", "customer")
    now = billing.customer_now(ctx, real["customer"])
    # Work on a copy so the preview never changes state.
    sub = copy.deepcopy(real)
    details = get_dict(ctx.params, "subscription_details") or {}
    check_params(
        details,
        (
            "items",
            "proration_behavior",
            "proration_date",
            "cancel_at_period_end",
            "trial_end",
            "billing_cycle_anchor",
            "default_tax_rates",
            "cancel_at",
            "cancel_now",
            "resume_at",
            "start_date",
            "billing_mode",
            "cancel_at_period_end",
        ),
    )
    behavior = details.get("proration_behavior") or "create_prorations"
    when = get_int(details, "proration_date") or now
    pending = list(ctx.state.private.get(sub_id, {}).get("pending_lines", []))
    raw_items = get_list(details, "items")
    preview_id = "upcoming_" + random_token(20)
    if raw_items:
        changes = _item_changes(ctx, sub, raw_items)
        prorations = _prorate(ctx, sub, changes, when, preview_id) if behavior != "none" else []
        for item, price in changes:
            item["price"] = copy.deepcopy(price)
        if behavior == "always_invoice":
            _, end = billing.period_of(sub)
            invoice = billing.build_invoice(
                ctx, sub, "subscription_update", prorations, when, end, now, invoice_id=preview_id, store=False
            )
            invoice["id"] = preview_id
            return ctx.render(invoice)
        pending += prorations
    _, end = billing.period_of(sub)
    next_end = billing.next_period_end(sub, end)
    lines = pending + [
        billing.line_for_item(ctx, preview_id, sub, item, end, next_end) for item in billing.sub_items(sub)
    ]
    invoice = billing.build_invoice(ctx, sub, "upcoming", lines, end, next_end, now, invoice_id=preview_id, store=False)
    # Discounts still running at renewal apply to the preview too.
    discounts = []
    remaining = invoice["subtotal"]
    for discount_id in real["discounts"]:
        discount = ctx.state.find(discount_id)
        coupon = ctx.state.find(discount["source"]["coupon"]) if discount else None
        if not discount or not coupon or (discount["end"] is not None and end >= discount["end"]):
            continue
        if coupon["duration"] == "once" and ctx.state.private.get(discount_id, {}).get("used"):
            continue
        amount = (
            round(remaining * float(coupon["percent_off"]) / 100)
            if coupon["percent_off"] is not None
            else min(int(coupon["amount_off"]), remaining)
        )
        remaining -= amount
        discounts.append({"amount": amount, "discount": discount_id})
    invoice["total_discount_amounts"] = discounts
    invoice["discounts"] = [d["discount"] for d in discounts]
    preview_lines = invoice["lines"]["data"]
    for d in discounts:
        billing.spread_discount([line for line in preview_lines if line["discountable"]], d["amount"], d["discount"])
    # Tax is on each line after its discounts, so it is recomputed once the renewal discounts are known.
    invoice["total_taxes"] = billing.apply_taxes(sub, preview_lines)
    invoice["total_excluding_tax"] = invoice["subtotal"] - sum(d["amount"] for d in discounts)
    invoice["total"] = invoice["total_excluding_tax"] + sum(int(t["amount"]) for t in invoice["total_taxes"])
    invoice["amount_due"] = invoice["amount_remaining"] = max(0, invoice["total"])
    invoice["next_payment_attempt"] = end
    invoice["created"] = now
    return ctx.render(invoice)
