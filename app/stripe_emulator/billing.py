"""Billing engine: invoices for subscriptions, payment attempts, renewals, trials, retries and test clocks."""

from __future__ import annotations

import calendar
import copy
import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from app.stripe_emulator import hooks
from app.stripe_emulator.api import Ctx
from app.stripe_emulator.errors import StripeError, invalid
from app.stripe_emulator.ids import new_id
from app.stripe_emulator.resources.coupons import coupon_products
from app.stripe_emulator.resources.payment_intents import confirm_intent, new_intent

DAY = 86400
INCOMPLETE_EXPIRY = 23 * 3600
TRIAL_WILL_END_NOTICE = 3 * DAY
# Smart-Retries-like schedule: retries this many days after the first failed attempt; then the subscription ends.
RETRY_DAYS = (3, 5, 7)


# --- time -----------------------------------------------------------------------------------------


def customer_now(ctx: Ctx, customer_id: str | None) -> int:
    """The current time for a customer: its test clock's frozen time when it has one."""
    if customer_id:
        customer = ctx.state.find(customer_id)
        if customer and customer.get("test_clock"):
            clock = ctx.state.find(customer["test_clock"])
            if clock:
                return int(clock["frozen_time"])
    return ctx.now


def add_interval(ts: int, interval: str, count: int = 1) -> int:
    if interval == "day":
        return ts + count * DAY
    if interval == "week":
        return ts + count * 7 * DAY
    months = count * (12 if interval == "year" else 1)
    dt = datetime.datetime.fromtimestamp(ts, tz=datetime.UTC)
    month_index = dt.month - 1 + months
    year, month = dt.year + month_index // 12, month_index % 12 + 1
    day = min(dt.day, calendar.monthrange(year, month)[1])
    return int(dt.replace(year=year, month=month, day=day).timestamp())


# --- plans, items ---------------------------------------------------------------------------------


def plan_from_price(price: dict[str, Any]) -> dict[str, Any]:
    recurring = price["recurring"] or {}
    return {
        "id": price["id"],
        "object": "plan",
        "active": price["active"],
        "amount": price["unit_amount"],
        "amount_decimal": price["unit_amount_decimal"],
        "billing_scheme": price["billing_scheme"],
        "created": price["created"],
        "currency": price["currency"],
        "interval": recurring.get("interval"),
        "interval_count": recurring.get("interval_count", 1),
        "livemode": False,
        "metadata": copy.deepcopy(price["metadata"]),
        "meter": None,
        "nickname": price["nickname"],
        "product": price["product"],
        "tiers_mode": None,
        "transform_usage": None,
        "trial_period_days": None,
        "usage_type": recurring.get("usage_type", "licensed"),
    }


def sub_items(state_sub: dict[str, Any]) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = state_sub["items"]["data"]
    return items


def period_of(sub: dict[str, Any]) -> tuple[int, int]:
    first = sub_items(sub)[0]
    return int(first["current_period_start"]), int(first["current_period_end"])


def set_period(sub: dict[str, Any], start: int, end: int) -> None:
    for item in sub_items(sub):
        item["current_period_start"] = start
        item["current_period_end"] = end


def next_period_end(sub: dict[str, Any], start: int) -> int:
    price = sub_items(sub)[0]["price"]
    recurring = price["recurring"] or {"interval": "month", "interval_count": 1}
    return add_interval(start, recurring["interval"], recurring["interval_count"])


# --- discounts ------------------------------------------------------------------------------------


def make_discount(
    ctx: Ctx, coupon: dict[str, Any], *, customer: str, subscription: str | None, promotion_code: str | None, start: int
) -> dict[str, Any]:
    end = None
    if coupon["duration"] == "repeating":
        end = add_interval(start, "month", int(coupon["duration_in_months"]))
    discount: dict[str, Any] = {
        "id": new_id("di"),
        "object": "discount",
        "checkout_session": None,
        "customer": customer,
        "customer_account": None,
        "end": end,
        "invoice": None,
        "invoice_item": None,
        "promotion_code": promotion_code,
        "source": {"coupon": coupon["id"], "type": "coupon"},
        "start": start,
        "subscription": subscription,
        "subscription_item": None,
    }
    ctx.state.put(discount)
    coupon["times_redeemed"] += 1
    if promotion_code:
        promo = ctx.state.find(promotion_code)
        if promo:
            promo["times_redeemed"] += 1
    return discount


def discount_amounts(
    ctx: Ctx, discount_ids: list[str], subtotal: int, now: int, lines: list[dict[str, Any]] | None = None
) -> list[dict[str, Any]]:
    """The invoice's ``total_discount_amounts``; with ``lines``, also each line's ``discount_amounts``.

    A coupon with ``applies_to.products`` discounts only the discountable lines of those products.
    """
    out: list[dict[str, Any]] = []
    remaining = subtotal
    for discount_id in discount_ids:
        discount = ctx.state.find(discount_id)
        if discount is None or remaining <= 0:
            continue
        if discount["end"] is not None and now >= discount["end"]:
            continue
        hidden = ctx.state.hidden(discount_id)
        coupon = ctx.state.find(discount["source"]["coupon"])
        if coupon is None or (coupon["duration"] == "once" and hidden.get("used")):
            continue
        products = coupon_products(ctx, coupon)
        eligible = [
            line
            for line in (lines or [])
            if line["discountable"]
            and (products is None or (line.get("pricing") or {}).get("price_details", {}).get("product") in products)
        ]
        base = (
            remaining if products is None or lines is None else min(remaining, sum(int(x["amount"]) for x in eligible))
        )
        if base <= 0:
            continue
        if coupon["percent_off"] is not None:
            amount = round(base * float(coupon["percent_off"]) / 100)
        else:
            amount = min(int(coupon["amount_off"]), base)
        remaining -= amount
        hidden["used"] = True
        out.append({"amount": amount, "discount": discount_id})
        spread_discount(eligible, amount, discount_id)
    return out


def spread_discount(lines: list[dict[str, Any]], amount: int, discount_id: str) -> None:
    """Record a discount on the lines it applies to, in proportion to their amounts (remainder to the first)."""
    total = sum(int(line["amount"]) for line in lines)
    if total <= 0 or amount <= 0:
        return
    shares = [amount * int(line["amount"]) // total for line in lines]
    shares[0] += amount - sum(shares)
    for line, share in zip(lines, shares, strict=True):
        line["discount_amounts"].append({"amount": share, "discount": discount_id})
        line["discounts"].append(discount_id)


# --- invoices -------------------------------------------------------------------------------------


def line_for_item(
    ctx: Ctx,
    invoice_id: str,
    sub: dict[str, Any],
    item: dict[str, Any],
    start: int,
    end: int,
    *,
    amount: int | None = None,
    description: str | None = None,
    proration: bool = False,
) -> dict[str, Any]:
    price = item["price"]
    product = ctx.state.find(price["product"]) or {"name": price["product"]}
    quantity = int(item["quantity"])
    unit = int(price["unit_amount"] or 0)
    value = unit * quantity if amount is None else amount
    interval = (price["recurring"] or {}).get("interval", "month")
    return {
        "id": new_id("il"),
        "object": "line_item",
        "amount": value,
        "currency": price["currency"],
        "description": description or f"{quantity} \u00d7 {product['name']} (at ${unit / 100:.2f} / {interval})",
        "discount_amounts": [],
        "discountable": not proration,
        "discounts": [],
        "invoice": invoice_id,
        "livemode": False,
        "metadata": {},
        "parent": {
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": proration,
                "proration_details": {"credited_items": None},
                "subscription": sub["id"],
                "subscription_item": item["id"],
            },
            "type": "subscription_item_details",
        },
        "period": {"end": end, "start": start},
        "pretax_credit_amounts": [],
        "pricing": {
            "price_details": {"price": price["id"], "product": price["product"]},
            "type": "price_details",
            "unit_amount_decimal": price["unit_amount_decimal"],
        },
        "quantity": quantity,
        "taxes": [],
    }


def tax_rate_objects(ctx: Ctx, raw: Any, param: str) -> list[dict[str, Any]]:
    """Tax Rate ids as passed (``tax_rates[]`` / ``default_tax_rates[]``) -> the Tax Rate objects Stripe embeds."""
    if raw in (None, ""):
        return []
    if not isinstance(raw, list):
        raise invalid("Invalid array", param)
    return [copy.deepcopy(ctx.state.get("tax_rate", str(rate_id), f"{param}[{i}]")) for i, rate_id in enumerate(raw)]


def apply_taxes(sub: dict[str, Any], lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Exclusive tax per line and per rate, as Stripe computes it: (amount - line discounts) * rate, rounded per line.

    A line takes its subscription item's ``tax_rates``, else the subscription's ``default_tax_rates``. Returns the
    invoice's ``total_taxes`` (one entry per rate, summed over lines)."""
    items = {item["id"]: item for item in sub_items(sub)}
    totals: dict[str, dict[str, Any]] = {}
    for line in lines:
        details = (line.get("parent") or {}).get("subscription_item_details") or {}
        item = items.get(details.get("subscription_item") or "")
        rates = (item or {}).get("tax_rates") or sub.get("default_tax_rates") or []
        taxable = int(line["amount"]) - sum(int(d["amount"]) for d in line.get("discount_amounts") or [])
        line["taxes"] = []
        for rate in rates:
            if rate["inclusive"]:
                continue  # the app only uses exclusive rates; inclusive ones would split the amount instead
            amount = int(
                (Decimal(taxable) * Decimal(str(rate["percentage"])) / 100).quantize(Decimal(1), ROUND_HALF_UP)
            )
            tax = {
                "amount": amount,
                "tax_behavior": "exclusive",
                "tax_rate_details": {"tax_rate": rate["id"]},
                "taxability_reason": "standard_rated",
                "taxable_amount": taxable,
                "type": "tax_rate_details",
            }
            line["taxes"].append(tax)
            total = totals.setdefault(rate["id"], {**tax, "amount": 0, "taxable_amount": 0})
            total["amount"] += amount
            total["taxable_amount"] += taxable
    return list(totals.values())


def build_invoice(
    ctx: Ctx,
    sub: dict[str, Any],
    billing_reason: str,
    lines: list[dict[str, Any]],
    start: int,
    end: int,
    now: int,
    *,
    invoice_id: str | None = None,
    store: bool = True,
) -> dict[str, Any]:
    customer = ctx.state.get("customer", sub["customer"])
    invoice_id = invoice_id or new_id("in")
    for line in lines:
        line["invoice"] = invoice_id
    subtotal = sum(int(line["amount"]) for line in lines)
    discountable = sum(int(line["amount"]) for line in lines if line["discountable"])
    discounts = discount_amounts(ctx, list(sub["discounts"]), max(0, discountable), now, lines) if store else []
    total_taxes = apply_taxes(sub, lines)
    tax = sum(int(t["amount"]) for t in total_taxes)
    total_excluding_tax = subtotal - sum(d["amount"] for d in discounts)
    total = total_excluding_tax + tax
    amount_due = max(0, total)
    invoice: dict[str, Any] = {
        "id": invoice_id,
        "object": "invoice",
        "account_country": "US",
        "account_name": "Cartwright (test)",
        "account_tax_ids": None,
        "amount_due": amount_due,
        "amount_overpaid": 0,
        "amount_paid": 0,
        "amount_remaining": amount_due,
        "amount_shipping": 0,
        "application": None,
        "attempt_count": 0,
        "attempted": False,
        "auto_advance": True,
        "automatic_tax": {
            "disabled_reason": None,
            "enabled": False,
            "liability": None,
            "provider": None,
            "status": None,
        },
        "automatically_finalizes_at": None,
        "billing_reason": billing_reason,
        "collection_method": sub["collection_method"],
        "created": now,
        "currency": sub["currency"],
        "custom_fields": None,
        "customer": customer["id"],
        "customer_account": None,
        "customer_address": copy.deepcopy(customer["address"]),
        "customer_email": customer["email"],
        "customer_name": customer["name"],
        "customer_phone": customer["phone"],
        "customer_shipping": copy.deepcopy(customer["shipping"]),
        "customer_tax_exempt": customer["tax_exempt"],
        "customer_tax_ids": [],
        "default_payment_method": None,
        "default_source": None,
        "default_tax_rates": copy.deepcopy(sub.get("default_tax_rates") or []),
        "description": None,
        "discounts": [d["discount"] for d in discounts],
        "due_date": None,
        "effective_at": None,
        "ending_balance": None,
        "footer": None,
        "from_invoice": None,
        "hosted_invoice_url": None,
        "invoice_pdf": None,
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "lines": {
            "object": "list",
            "data": lines,
            "has_more": False,
            "total_count": len(lines),
            "url": f"/v1/invoices/{invoice_id}/lines",
        },
        "livemode": False,
        "metadata": {},
        "next_payment_attempt": None,
        "number": None,
        "on_behalf_of": None,
        "parent": {
            "quote_details": None,
            "subscription_details": {"metadata": copy.deepcopy(sub["metadata"]), "subscription": sub["id"]},
            "type": "subscription_details",
        },
        "payment_settings": {"default_mandate": None, "payment_method_options": None, "payment_method_types": None},
        "period_end": end,
        "period_start": start,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": None,
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": 0,
        "statement_descriptor": None,
        "status": "draft",
        "status_transitions": {
            "finalized_at": None,
            "marked_uncollectible_at": None,
            "paid_at": None,
            "voided_at": None,
        },
        "subscription": sub["id"],
        "subtotal": subtotal,
        "subtotal_excluding_tax": subtotal,
        "test_clock": customer["test_clock"],
        "total": total,
        "total_discount_amounts": discounts,
        "total_excluding_tax": total_excluding_tax,
        "total_pretax_credit_amounts": [],
        "total_taxes": total_taxes,
        "webhooks_delivered_at": None,
    }
    if store:
        ctx.state.put(invoice)
        ctx.emit("invoice.created", invoice)
    return invoice


def _includable(ctx: Ctx, invoice: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = ctx.state.hidden(invoice["id"]).setdefault("includable", {})
    return result


def finalize(ctx: Ctx, invoice: dict[str, Any], now: int) -> None:
    if invoice["status"] != "draft":
        return
    customer = ctx.state.get("customer", invoice["customer"])
    invoice["number"] = f"{customer['invoice_prefix']}-{customer['next_invoice_sequence']:04d}"
    customer["next_invoice_sequence"] += 1
    invoice["status"] = "open"
    invoice["effective_at"] = now
    invoice["status_transitions"]["finalized_at"] = now
    invoice["hosted_invoice_url"] = f"{ctx.base_url}/_emulator/invoices/{invoice['id']}"
    invoice["invoice_pdf"] = f"{ctx.base_url}/_emulator/invoices/{invoice['id']}/pdf"
    invoice["ending_balance"] = 0
    includable = _includable(ctx, invoice)
    includable["payments"] = {
        "object": "list",
        "data": [],
        "has_more": False,
        "url": f"/v1/invoice_payments?invoice={invoice['id']}",
    }
    if invoice["amount_due"] > 0:
        pi = new_intent(
            ctx,
            {"amount": str(invoice["amount_due"]), "currency": invoice["currency"], "customer": invoice["customer"]},
        )
        pi["created"] = now
        pi["description"] = {
            "subscription_create": "Subscription creation",
            "subscription_cycle": "Subscription update",
            "subscription_update": "Subscription update",
        }.get(invoice["billing_reason"], "Invoice")
        ctx.state.hidden(pi["id"])["invoice"] = invoice["id"]
        includable["confirmation_secret"] = {"client_secret": pi["client_secret"], "type": "payment_intent"}
        includable["payments"]["data"].append(
            {
                "id": new_id("inpay"),
                "object": "invoice_payment",
                "amount_paid": None,
                "amount_requested": invoice["amount_due"],
                "created": now,
                "currency": invoice["currency"],
                "invoice": invoice["id"],
                "is_default": True,
                "livemode": False,
                "payment": {"payment_intent": pi["id"], "type": "payment_intent"},
                "status": "open",
                "status_transitions": {"canceled_at": None, "paid_at": None},
            }
        )
        ctx.state.hidden(invoice["id"])["payment_intent"] = pi["id"]
        ctx.emit("payment_intent.created", pi)
    ctx.emit("invoice.finalized", invoice)
    if invoice["amount_due"] == 0:
        mark_paid(ctx, invoice, now)


def invoice_intent(ctx: Ctx, invoice: dict[str, Any]) -> dict[str, Any] | None:
    pi_id = ctx.state.private.get(invoice["id"], {}).get("payment_intent")
    return ctx.state.find(pi_id) if pi_id else None


def default_pm(ctx: Ctx, sub: dict[str, Any]) -> str | None:
    if sub["default_payment_method"]:
        return str(sub["default_payment_method"])
    customer = ctx.state.find(sub["customer"])
    pm = customer["invoice_settings"]["default_payment_method"] if customer else None
    return str(pm) if pm else None


def attempt_payment(ctx: Ctx, invoice: dict[str, Any], pm_id: str | None, now: int) -> bool:
    """Charge an open invoice off-session; returns True when paid. Failures are recorded, never raised."""
    if invoice["status"] == "paid":
        return True
    pi = invoice_intent(ctx, invoice)
    if pi is None:
        mark_paid(ctx, invoice, now)
        return True
    if pm_id is None:
        _record_failure(ctx, invoice, now, action_required=False)
        return False
    if pi["status"] not in ("requires_payment_method", "requires_confirmation", "requires_action"):
        return bool(pi["status"] == "succeeded")
    try:
        confirm_intent(ctx, pi, {"payment_method": pm_id, "off_session": "true"})
    except StripeError:
        return False
    return bool(pi["status"] == "succeeded")


def mark_paid(ctx: Ctx, invoice: dict[str, Any], now: int) -> None:
    invoice["status"] = "paid"
    invoice["amount_paid"] = invoice["amount_due"]
    invoice["amount_remaining"] = 0
    invoice["attempted"] = True
    invoice["next_payment_attempt"] = None
    invoice["status_transitions"]["paid_at"] = now
    for payment in _includable(ctx, invoice).get("payments", {}).get("data", []):
        payment["status"] = "paid"
        payment["amount_paid"] = payment["amount_requested"]
        payment["status_transitions"]["paid_at"] = now
    ctx.emit("invoice.paid", invoice)
    ctx.emit("invoice.payment_succeeded", invoice)
    sub_id = invoice["parent"]["subscription_details"]["subscription"] if invoice["parent"] else None
    sub = ctx.state.find(sub_id) if sub_id else None
    if sub is None:
        return
    if sub["status"] in ("incomplete", "past_due", "unpaid"):
        before = {"status": sub["status"]}
        sub["status"] = "trialing" if sub["trial_end"] and sub["trial_end"] > now else "active"
        ctx.emit("customer.subscription.updated", sub, before)


def _record_failure(ctx: Ctx, invoice: dict[str, Any], now: int, *, action_required: bool) -> None:
    invoice["attempted"] = True
    invoice["attempt_count"] += 1
    sub_id = invoice["parent"]["subscription_details"]["subscription"] if invoice["parent"] else None
    sub = ctx.state.find(sub_id) if sub_id else None
    first_failure = ctx.state.hidden(invoice["id"]).setdefault("first_failure", now)
    if invoice["billing_reason"] != "subscription_create" and invoice["attempt_count"] <= len(RETRY_DAYS):
        invoice["next_payment_attempt"] = first_failure + RETRY_DAYS[invoice["attempt_count"] - 1] * DAY
    else:
        invoice["next_payment_attempt"] = None
    ctx.emit("invoice.payment_failed", invoice)
    if action_required:
        ctx.emit("invoice.payment_action_required", invoice)
    if sub is None or invoice["billing_reason"] == "subscription_create":
        return
    if invoice["next_payment_attempt"] is None:
        # Like the Dashboard's "if all retries fail" setting: cancel (default) or mark unpaid.
        if ctx.state.private.get("_settings", {}).get("after_failed_retries") == "unpaid":
            before = {"status": sub["status"]}
            sub["status"] = "unpaid"
            ctx.emit("customer.subscription.updated", sub, before)
        else:
            cancel_subscription(ctx, sub, now, reason="payment_failed")
    elif sub["status"] != "past_due":
        before = {"status": sub["status"]}
        sub["status"] = "past_due"
        ctx.emit("customer.subscription.updated", sub, before)


def _on_payment_succeeded(ctx: Ctx, pi: dict[str, Any]) -> None:
    invoice_id = ctx.state.private.get(pi["id"], {}).get("invoice")
    invoice = ctx.state.find(invoice_id) if invoice_id else None
    if invoice is None or invoice["status"] != "open":
        return
    invoice["attempt_count"] += 1
    now = customer_now(ctx, invoice["customer"])
    sub_id = invoice["parent"]["subscription_details"]["subscription"] if invoice["parent"] else None
    sub = ctx.state.find(sub_id) if sub_id else None
    if sub is not None and pi["payment_method"]:
        save = sub["payment_settings"]["save_default_payment_method"] == "on_subscription"
        pm = ctx.state.find(pi["payment_method"])
        if pm is not None and not pm["customer"]:
            pm["customer"] = sub["customer"]
            ctx.emit("payment_method.attached", pm)
        if save and not sub["default_payment_method"]:
            sub["default_payment_method"] = pi["payment_method"]
    mark_paid(ctx, invoice, now)


def _on_payment_failed(ctx: Ctx, pi: dict[str, Any]) -> None:
    invoice_id = ctx.state.private.get(pi["id"], {}).get("invoice")
    invoice = ctx.state.find(invoice_id) if invoice_id else None
    if invoice is None or invoice["status"] != "open":
        return
    error = pi["last_payment_error"] or {}
    action = error.get("decline_code") == "authentication_required"
    _record_failure(ctx, invoice, customer_now(ctx, invoice["customer"]), action_required=action)


hooks.PAYMENT_SUCCEEDED.append(_on_payment_succeeded)
hooks.PAYMENT_FAILED.append(_on_payment_failed)


# --- subscriptions over time ----------------------------------------------------------------------


def cancel_subscription(ctx: Ctx, sub: dict[str, Any], now: int, *, reason: str = "cancellation_requested") -> None:
    if sub["status"] in ("canceled", "incomplete_expired"):
        return
    sub["status"] = "canceled"
    sub["canceled_at"] = sub["canceled_at"] or now
    sub["ended_at"] = now
    sub["cancellation_details"]["reason"] = reason
    for invoice in ctx.state.all("invoice"):
        if invoice["parent"] and invoice["parent"]["subscription_details"]["subscription"] == sub["id"]:
            invoice["next_payment_attempt"] = None
    ctx.emit("customer.subscription.deleted", sub)


def pause_subscription(ctx: Ctx, sub: dict[str, Any], now: int) -> None:
    """A trial ended with no payment method and ``missing_payment_method=pause``: no invoice, status paused."""
    before = {"status": sub["status"]}
    sub["status"] = "paused"
    set_period(sub, period_of(sub)[0], now)
    ctx.emit("customer.subscription.paused", sub, before)
    ctx.emit("customer.subscription.updated", sub, before)


def resume_subscription(ctx: Ctx, sub: dict[str, Any], now: int) -> None:
    """Resume a paused subscription with ``billing_cycle_anchor=now``: a new cycle starts and is invoiced now."""
    before = {"status": sub["status"]}
    sub["status"] = "active"
    set_period(sub, now, now)  # the new cycle starts now (renew starts a cycle where the last one ended)
    ctx.emit("customer.subscription.resumed", sub, before)
    renew(ctx, sub, now)


def renew(ctx: Ctx, sub: dict[str, Any], now: int, billing_reason: str = "subscription_cycle") -> None:
    """Start the next period and invoice it (pending prorations included), charging the default card."""
    _, old_end = period_of(sub)
    start = old_end if billing_reason == "subscription_cycle" else now
    end = next_period_end(sub, start)
    before = {"items": copy.deepcopy(sub["items"]), "status": sub["status"]}
    set_period(sub, start, end)
    if sub["status"] == "trialing":
        sub["status"] = "active"
    invoice = build_invoice(ctx, sub, billing_reason, [], start, end, now, invoice_id=new_id("in"), store=False)
    lines = [line_for_item(ctx, invoice["id"], sub, item, start, end) for item in sub_items(sub)]
    lines += ctx.state.hidden(sub["id"]).pop("pending_lines", [])
    invoice = build_invoice(ctx, sub, billing_reason, lines, start, end, now, invoice_id=invoice["id"])
    sub["latest_invoice"] = invoice["id"]
    ctx.emit("customer.subscription.updated", sub, {k: v for k, v in before.items() if sub.get(k) != v})
    paused = sub.get("pause_collection")
    if paused and paused["behavior"] == "keep_as_draft":
        return  # Stripe still invoices the period but leaves the invoice a draft: nothing is collected
    finalize(ctx, invoice, now)
    if paused and invoice["status"] == "open":
        # mark_uncollectible / void: the invoice is finalised, then closed at once without a payment attempt.
        invoice["next_payment_attempt"] = None
        if paused["behavior"] == "void":
            invoice["status"] = "void"
            invoice["status_transitions"]["voided_at"] = now
            ctx.emit("invoice.voided", invoice)
        else:
            invoice["status"] = "uncollectible"
            invoice["status_transitions"]["marked_uncollectible_at"] = now
            ctx.emit("invoice.marked_uncollectible", invoice)
        return
    if invoice["status"] == "open":
        attempt_payment(ctx, invoice, default_pm(ctx, sub), now)


def next_action(ctx: Ctx, sub: dict[str, Any]) -> tuple[int, str] | None:
    """The next time-driven change for ``sub`` (time, kind)."""
    status = sub["status"]
    hidden = ctx.state.hidden(sub["id"])
    if status in ("canceled", "incomplete_expired", "paused"):
        return None  # a paused subscription waits for a resume call: no cycles, no invoices
    if status == "incomplete":
        return sub["created"] + INCOMPLETE_EXPIRY, "expire"
    candidates: list[tuple[int, str]] = []
    if status == "trialing" and sub["trial_end"]:
        if not hidden.get("trial_will_end_sent") and sub["trial_end"] - TRIAL_WILL_END_NOTICE > sub["created"]:
            candidates.append((sub["trial_end"] - TRIAL_WILL_END_NOTICE, "trial_will_end"))
        candidates.append((sub["trial_end"], "trial_end"))
    else:
        _, end = period_of(sub)
        resumes_at = (sub.get("pause_collection") or {}).get("resumes_at")
        if resumes_at:
            candidates.append((resumes_at, "unpause"))
        if sub["cancel_at"] and sub["cancel_at"] <= end:
            candidates.append((sub["cancel_at"], "cancel"))
        candidates.append((end, "cancel" if sub["cancel_at_period_end"] else "renew"))
    for invoice in ctx.state.all("invoice"):
        if (
            invoice["status"] == "open"
            and invoice["next_payment_attempt"]
            and invoice["parent"]
            and invoice["parent"]["subscription_details"]["subscription"] == sub["id"]
        ):
            candidates.append((invoice["next_payment_attempt"], "retry:" + invoice["id"]))
    return min(candidates) if candidates else None


def perform(ctx: Ctx, sub: dict[str, Any], when: int, kind: str) -> None:
    ctx.now = when
    if kind == "expire":
        before = {"status": sub["status"]}
        sub["status"] = "incomplete_expired"
        sub["ended_at"] = when
        for invoice in ctx.state.all("invoice"):
            if invoice["id"] == sub["latest_invoice"] and invoice["status"] == "open":
                invoice["status"] = "void"
                invoice["status_transitions"]["voided_at"] = when
                ctx.emit("invoice.voided", invoice)
        ctx.emit("customer.subscription.updated", sub, before)
    elif kind == "trial_will_end":
        ctx.state.hidden(sub["id"])["trial_will_end_sent"] = True
        ctx.emit("customer.subscription.trial_will_end", sub)
    elif kind == "trial_end":
        behaviour = sub["trial_settings"]["end_behavior"]["missing_payment_method"]
        if behaviour == "cancel" and not default_pm(ctx, sub):
            cancel_subscription(ctx, sub, when, reason="cancellation_requested")
            return
        if behaviour == "pause" and not default_pm(ctx, sub):
            pause_subscription(ctx, sub, when)
            return
        set_period(sub, period_of(sub)[0], when)
        renew(ctx, sub, when)
    elif kind == "cancel":
        cancel_subscription(ctx, sub, when)
    elif kind == "renew":
        renew(ctx, sub, when)
    elif kind == "unpause":
        sub["pause_collection"], before = None, {"pause_collection": sub["pause_collection"]}
        ctx.emit("customer.subscription.updated", sub, before)
    elif kind.startswith("retry:"):
        invoice = ctx.state.get("invoice", kind.split(":", 1)[1])
        invoice["next_payment_attempt"] = None
        attempt_payment(ctx, invoice, default_pm(ctx, sub), when)


def advance_clock(ctx: Ctx, clock: dict[str, Any], target: int) -> None:
    """Replay everything that happens to the clock's subscriptions up to ``target``, in time order."""
    ctx.automatic = True
    customers = {c["id"] for c in ctx.state.all("customer") if c["test_clock"] == clock["id"]}
    for _ in range(10_000):  # guard against a runaway schedule
        pending: list[tuple[int, str, dict[str, Any]]] = []
        for sub in ctx.state.all("subscription"):
            if sub["customer"] in customers:
                action = next_action(ctx, sub)
                if action and action[0] <= target:
                    pending.append((action[0], action[1], sub))
        if not pending:
            break
        when, kind, sub = min(pending, key=lambda p: (p[0], p[2]["created"]))
        clock["frozen_time"] = max(clock["frozen_time"], when)
        perform(ctx, sub, when, kind)
    clock["frozen_time"] = target
    ctx.now = target
