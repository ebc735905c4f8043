"""Subscriptions and subscription items."""

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
    get_enum,
    get_int,
    get_list,
    get_str,
    paginate,
    paginate_kind,
)
from app.stripe_emulator.errors import StripeError, invalid
from app.stripe_emulator.ids import new_id
from app.stripe_emulator.resources.coupons import check_promo, coupon_redeemable

CREATE = (
    "customer",
    "items",
    "payment_behavior",
    "default_payment_method",
    "trial_period_days",
    "trial_end",
    "cancel_at_period_end",
    "cancel_at",
    "metadata",
    "expand",
    "collection_method",
    "days_until_due",
    "payment_settings",
    "description",
    "off_session",
    "proration_behavior",
    "billing_cycle_anchor",
    "discounts",
    "trial_settings",
    "currency",
    "automatic_tax",
    "default_tax_rates",
    "add_invoice_items",
    "billing_mode",
    "trial_from_plan",
    "backdate_start_date",
    "pending_invoice_item_interval",
    "invoice_settings",
)
UPDATE = (
    "items",
    "proration_behavior",
    "proration_date",
    "cancel_at_period_end",
    "cancel_at",
    "default_payment_method",
    "metadata",
    "description",
    "trial_end",
    "payment_behavior",
    "discounts",
    "expand",
    "billing_cycle_anchor",
    "collection_method",
    "days_until_due",
    "payment_settings",
    "off_session",
    "cancellation_details",
    "trial_settings",
    "pause_collection",
    "default_tax_rates",
    "automatic_tax",
    "add_invoice_items",
    "invoice_settings",
)
BEHAVIORS = ("allow_incomplete", "default_incomplete", "error_if_incomplete", "pending_if_incomplete")
PRORATIONS = ("create_prorations", "none", "always_invoice")


def _recurring_price(ctx: Ctx, price_id: str, param: str) -> dict[str, Any]:
    price = ctx.state.get("price", price_id, param)
    if price["type"] != "recurring":
        raise invalid(
            "The price specified is set to `type=one_time` but this field only accepts prices with `type=recurring`.",
            param,
        )
    return price


def _new_item(ctx: Ctx, sub_id: str, raw: dict[str, Any], index: int, start: int, end: int) -> dict[str, Any]:
    check_params(
        raw, ("price", "quantity", "metadata", "tax_rates", "discounts", "price_data", "plan", "billing_thresholds")
    )
    price_id = get_str(raw, "price") or get_str(raw, "plan")
    if not price_id:
        raise invalid(f"Missing required param: items[{index}][price].", f"items[{index}][price]", "parameter_missing")
    price = _recurring_price(ctx, price_id, f"items[{index}][price]")
    item: dict[str, Any] = {
        "id": new_id("si", 14),
        "object": "subscription_item",
        "billing_thresholds": None,
        "created": start,
        "current_period_end": end,
        "current_period_start": start,
        "discounts": [],
        "metadata": apply_metadata({}, raw),
        "plan": billing.plan_from_price(price),
        "price": copy.deepcopy(price),
        "quantity": get_int(raw, "quantity", minimum=1) or 1,
        "subscription": sub_id,
        "tax_rates": billing.tax_rate_objects(ctx, raw.get("tax_rates"), f"items[{index}][tax_rates]"),
    }
    return item


def _discounts(ctx: Ctx, sub: dict[str, Any], raw: list[Any] | None, subtotal: int, now: int) -> list[str]:
    ids: list[str] = []
    for index, entry in enumerate(raw or []):
        if not isinstance(entry, dict):
            raise invalid("Invalid discounts", "discounts")
        check_params(entry, ("coupon", "promotion_code", "discount"))
        promo_id = entry.get("promotion_code")
        if promo_id:
            promo = ctx.state.get("promotion_code", str(promo_id), f"discounts[{index}][promotion_code]")
            coupon = check_promo(
                ctx, promo, sub["customer"], subtotal, sub["currency"], now, f"discounts[{index}][promotion_code]"
            )
        elif entry.get("coupon"):
            coupon = ctx.state.get("coupon", str(entry["coupon"]), f"discounts[{index}][coupon]")
            if not coupon_redeemable(coupon, now):
                raise invalid(f"Coupon expired: {coupon['id']}", f"discounts[{index}][coupon]", "coupon_expired")
        else:
            continue
        discount = billing.make_discount(
            ctx,
            coupon,
            customer=sub["customer"],
            subscription=sub["id"],
            promotion_code=str(promo_id) if promo_id else None,
            start=now,
        )
        ids.append(discount["id"])
    return ids


@route("POST", "/v1/subscriptions")
def create(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, CREATE)
    p = ctx.params
    customer = ctx.state.get("customer", get_str(p, "customer", required=True) or "", "customer")
    now = billing.customer_now(ctx, customer["id"])
    ctx.now = now
    raw_items = get_list(p, "items")
    if not raw_items:
        raise invalid("Missing required param: items.", "items", "parameter_missing")
    behavior = get_enum(p, "payment_behavior", BEHAVIORS) or "allow_incomplete"
    pm_id = get_str(p, "default_payment_method")
    if pm_id:
        pm = ctx.state.get("payment_method", pm_id, "default_payment_method")
        if pm["customer"] != customer["id"]:
            raise invalid(
                "The customer does not have a payment method with the ID " + pm_id + ".",
                "default_payment_method",
                "resource_missing",
            )
    trial_days = get_int(p, "trial_period_days", minimum=0)
    trial_end_raw = p.get("trial_end")
    trial_end = None
    if trial_days:
        trial_end = now + trial_days * billing.DAY
    elif trial_end_raw and trial_end_raw != "now":
        trial_end = get_int(p, "trial_end")
        if trial_end is not None and trial_end <= now:
            raise invalid("Invalid timestamp: must be an integer Unix timestamp in the future.", "trial_end")
    sub_id = new_id("sub")
    first_price = (
        _recurring_price(ctx, str(raw_items[0].get("price") or raw_items[0].get("plan") or ""), "items[0][price]")
        if isinstance(raw_items[0], dict)
        else None
    )
    if first_price is None:
        raise invalid("Invalid items", "items")
    start = now
    recurring = first_price["recurring"]
    end = trial_end or billing.add_interval(start, recurring["interval"], recurring["interval_count"])
    items = [_new_item(ctx, sub_id, raw, i, start, end) for i, raw in enumerate(raw_items)]
    settings = get_dict(p, "payment_settings") or {}
    check_params(
        settings,
        (
            "save_default_payment_method",
            "payment_method_types",
            "payment_method_options",
            "payment_method_configuration",
        ),
    )
    trial_settings = get_dict(p, "trial_settings") or {}
    missing_pm = ((trial_settings.get("end_behavior") or {}).get("missing_payment_method")) or "create_invoice"
    sub: dict[str, Any] = {
        "id": sub_id,
        "object": "subscription",
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": end if trial_end else start,
        "billing_cycle_anchor_config": None,
        "billing_mode": {"flexible": None, "type": "classic", "updated_at": None},
        "billing_schedules": [],
        "billing_thresholds": None,
        "cancel_at": get_int(p, "cancel_at"),
        "cancel_at_period_end": bool(get_bool(p, "cancel_at_period_end")),
        "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": get_enum(p, "collection_method", ("charge_automatically", "send_invoice"))
        or "charge_automatically",
        "created": now,
        "currency": first_price["currency"],
        "customer": customer["id"],
        "customer_account": None,
        "days_until_due": get_int(p, "days_until_due"),
        "default_payment_method": pm_id,
        "default_source": None,
        "default_tax_rates": billing.tax_rate_objects(ctx, p.get("default_tax_rates"), "default_tax_rates"),
        "description": get_str(p, "description"),
        "discounts": [],
        "ended_at": None,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "items": {
            "object": "list",
            "data": items,
            "has_more": False,
            "total_count": len(items),
            "url": f"/v1/subscription_items?subscription={sub_id}",
        },
        "latest_invoice": None,
        "livemode": False,
        "managed_payments": None,
        "metadata": apply_metadata({}, p),
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": settings.get("save_default_payment_method") or "off",
        },
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": None,
        "schedule": None,
        "start_date": now,
        "status": "trialing" if trial_end else "incomplete",
        "test_clock": customer["test_clock"],
        "transfer_data": None,
        "trial_end": trial_end,
        "trial_settings": {"end_behavior": {"missing_payment_method": missing_pm}},
        "trial_start": now if trial_end else None,
    }
    subtotal = sum(int(i["price"]["unit_amount"] or 0) * int(i["quantity"]) for i in items)
    sub["discounts"] = _discounts(ctx, sub, get_list(p, "discounts"), subtotal, now)
    ctx.state.put(sub)
    ctx.emit("customer.subscription.created", sub)
    invoice_id = new_id("in")
    if trial_end:
        lines = [
            billing.line_for_item(
                ctx,
                invoice_id,
                sub,
                item,
                start,
                end,
                amount=0,
                description=f"Trial period for {item['price']['product']}",
            )
            for item in items
        ]
    else:
        lines = [billing.line_for_item(ctx, invoice_id, sub, item, start, end) for item in items]
    invoice = billing.build_invoice(ctx, sub, "subscription_create", lines, start, end, now, invoice_id=invoice_id)
    sub["latest_invoice"] = invoice["id"]
    billing.finalize(ctx, invoice, now)
    if invoice["status"] == "paid":
        if sub["status"] == "incomplete":
            sub["status"] = "active"
    elif behavior != "default_incomplete":
        default = billing.default_pm(ctx, sub)
        if default:
            paid = billing.attempt_payment(ctx, invoice, default, now)
            if not paid and behavior == "error_if_incomplete":
                pi = billing.invoice_intent(ctx, invoice) or {}
                error = pi.get("last_payment_error") or {}
                raise StripeError(
                    error.get("message", "Your card was declined."),
                    status=402,
                    type="card_error",
                    code=error.get("code", "card_declined"),
                    decline_code=error.get("decline_code"),
                )
    return ctx.render(sub)


@route("GET", "/v1/subscriptions/{id}")
def retrieve(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("expand",))
    return ctx.render(ctx.state.get("subscription", ctx.args["id"]))


def _prorate(
    ctx: Ctx,
    sub: dict[str, Any],
    changes: list[tuple[dict[str, Any], dict[str, Any]]],
    when: int,
    invoice_id: str | None = None,
) -> list[dict[str, Any]]:
    """Proration lines for swapping item prices at ``when``: credit unused time, charge remaining time."""
    start, end = billing.period_of(sub)
    if not start <= when < end:
        return []
    fraction = (end - when) / (end - start)
    lines: list[dict[str, Any]] = []
    for item, new_price in changes:
        qty = int(item["quantity"])
        old_amount = round(int(item["price"]["unit_amount"] or 0) * qty * fraction)
        new_amount = round(int(new_price["unit_amount"] or 0) * qty * fraction)
        old_product = (ctx.state.find(item["price"]["product"]) or {}).get("name", item["price"]["product"])
        new_product = (ctx.state.find(new_price["product"]) or {}).get("name", new_price["product"])
        lines.append(
            billing.line_for_item(
                ctx,
                invoice_id or "",
                sub,
                item,
                when,
                end,
                amount=-old_amount,
                description=f"Unused time on {qty} \u00d7 {old_product}",
                proration=True,
            )
        )
        new_item = {**item, "price": new_price}
        lines.append(
            billing.line_for_item(
                ctx,
                invoice_id or "",
                sub,
                new_item,
                when,
                end,
                amount=new_amount,
                description=f"Remaining time on {qty} \u00d7 {new_product}",
                proration=True,
            )
        )
    return lines


def _item_changes(ctx: Ctx, sub: dict[str, Any], raw_items: list[Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    changes = []
    for index, raw in enumerate(raw_items):
        if not isinstance(raw, dict):
            raise invalid("Invalid items", "items")
        check_params(
            raw,
            (
                "id",
                "price",
                "quantity",
                "metadata",
                "deleted",
                "tax_rates",
                "discounts",
                "plan",
                "price_data",
                "billing_thresholds",
                "clear_usage",
            ),
        )
        item_id = get_str(raw, "id")
        price_id = get_str(raw, "price") or get_str(raw, "plan")
        item = next((i for i in billing.sub_items(sub) if i["id"] == item_id), None)
        if item_id and item is None:
            raise invalid(f"Subscription item {item_id} does not belong to this subscription.", f"items[{index}][id]")
        if item is None:
            item = billing.sub_items(sub)[0] if len(billing.sub_items(sub)) == 1 and not price_id else None
        if item is not None and "tax_rates" in raw:
            # Takes effect from the next invoice: no proration for a tax change, as at Stripe.
            item["tax_rates"] = billing.tax_rate_objects(ctx, raw["tax_rates"], f"items[{index}][tax_rates]")
        if item is None or not price_id:
            if item is not None and raw.get("quantity"):
                item["quantity"] = get_int(raw, "quantity", minimum=1)
            continue
        changes.append((item, _recurring_price(ctx, price_id, f"items[{index}][price]")))
        if raw.get("quantity"):
            item["quantity"] = get_int(raw, "quantity", minimum=1)
    return changes


PAUSE_BEHAVIORS = ("keep_as_draft", "mark_uncollectible", "void")


def _pause_collection(raw: Any) -> dict[str, Any] | None:
    """``pause_collection=""`` resumes collection; a hash pauses it with a behavior and an optional resumes_at."""
    if raw in ("", None):
        return None
    if not isinstance(raw, dict):
        raise invalid("Invalid pause_collection: must be a hash or an empty string.", "pause_collection")
    behavior = raw.get("behavior")
    if behavior not in PAUSE_BEHAVIORS:
        raise invalid(
            f"Invalid pause_collection[behavior]: must be one of {', '.join(PAUSE_BEHAVIORS)}",
            "pause_collection[behavior]",
        )
    resumes_at = raw.get("resumes_at")
    try:
        resumes = int(resumes_at) if resumes_at not in (None, "") else None
    except (TypeError, ValueError):
        raise invalid("Invalid integer: " + str(resumes_at), "pause_collection[resumes_at]") from None
    return {"behavior": behavior, "resumes_at": resumes}


@route("POST", "/v1/subscriptions/{id}")
def update(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, UPDATE)
    p = ctx.params
    sub = ctx.state.get("subscription", ctx.args["id"])
    if sub["status"] in ("canceled", "incomplete_expired"):
        raise invalid(
            "A canceled subscription can only update its cancellation_details and metadata.", None, "resource_missing"
        )
    now = billing.customer_now(ctx, sub["customer"])
    ctx.now = now
    before = copy.deepcopy(sub)
    if "default_tax_rates" in p:
        sub["default_tax_rates"] = billing.tax_rate_objects(ctx, p["default_tax_rates"], "default_tax_rates")
    if "cancel_at_period_end" in p:
        sub["cancel_at_period_end"] = bool(get_bool(p, "cancel_at_period_end"))
        sub["canceled_at"] = now if sub["cancel_at_period_end"] else None
        sub["cancel_at"] = billing.period_of(sub)[1] if sub["cancel_at_period_end"] else None
    if "cancel_at" in p:
        sub["cancel_at"] = get_int(p, "cancel_at")
    if "default_payment_method" in p:
        pm_id = get_str(p, "default_payment_method")
        if pm_id:
            pm = ctx.state.get("payment_method", pm_id, "default_payment_method")
            if pm["customer"] != sub["customer"]:
                raise invalid(
                    "The customer does not have a payment method with the ID " + pm_id + ".",
                    "default_payment_method",
                    "resource_missing",
                )
        sub["default_payment_method"] = pm_id
    if "description" in p:
        sub["description"] = get_str(p, "description")
    details = get_dict(p, "cancellation_details")
    if details:
        sub["cancellation_details"]["comment"] = details.get("comment") or None
        sub["cancellation_details"]["feedback"] = details.get("feedback") or None
    sub["metadata"] = apply_metadata(sub["metadata"], p)
    if p.get("trial_end") == "now" and sub["status"] == "trialing":
        sub["trial_end"] = now
        billing.set_period(sub, billing.period_of(sub)[0], now)
        billing.renew(ctx, sub, now)
    raw_items = get_list(p, "items")
    if raw_items:
        behavior = get_enum(p, "proration_behavior", PRORATIONS) or "create_prorations"
        when = get_int(p, "proration_date") or now
        changes = _item_changes(ctx, sub, raw_items)
        lines = _prorate(ctx, sub, changes, when) if behavior != "none" and sub["status"] != "trialing" else []
        for item, price in changes:
            item["price"] = copy.deepcopy(price)
            item["plan"] = billing.plan_from_price(price)
        if lines and behavior == "always_invoice":
            _, end = billing.period_of(sub)
            invoice = billing.build_invoice(ctx, sub, "subscription_update", lines, when, end, now)
            sub["latest_invoice"] = invoice["id"]
            billing.finalize(ctx, invoice, now)
            if invoice["status"] == "open":
                billing.attempt_payment(ctx, invoice, billing.default_pm(ctx, sub), now)
        elif lines:
            ctx.state.hidden(sub["id"]).setdefault("pending_lines", []).extend(lines)
    if get_list(p, "discounts") is not None:
        sub["discounts"] = _discounts(ctx, sub, get_list(p, "discounts"), 0, now)
    if "pause_collection" in p:
        sub["pause_collection"] = _pause_collection(p["pause_collection"])
    changed = diff(before, sub)
    if changed:
        ctx.emit("customer.subscription.updated", sub, changed)
    return ctx.render(sub)


@route("DELETE", "/v1/subscriptions/{id}")
def cancel(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("invoice_now", "prorate", "cancellation_details", "expand"))
    sub = ctx.state.get("subscription", ctx.args["id"])
    if sub["status"] in ("canceled", "incomplete_expired"):
        raise invalid(f"No such subscription: '{sub['id']}'", "id", "resource_missing")
    now = billing.customer_now(ctx, sub["customer"])
    ctx.now = now
    details = get_dict(ctx.params, "cancellation_details")
    if details:
        sub["cancellation_details"]["comment"] = details.get("comment") or None
        sub["cancellation_details"]["feedback"] = details.get("feedback") or None
    sub["canceled_at"] = now
    billing.cancel_subscription(ctx, sub, now)
    return ctx.render(sub)


@route("POST", "/v1/subscriptions/{id}/resume")
def resume(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("billing_cycle_anchor", "proration_behavior", "proration_date", "expand"))
    sub = ctx.state.get("subscription", ctx.args["id"])
    if sub["status"] != "paused":
        raise invalid("Only a paused subscription can be resumed.", None, "subscription_not_paused")
    anchor = ctx.params.get("billing_cycle_anchor") or {"type": "now"}
    if not isinstance(anchor, dict) or anchor.get("type") != "now":
        # "unchanged" keeps the old anchor and prorates: not needed by the shop, so refused rather than faked.
        raise invalid("The emulator resumes with billing_cycle_anchor[type]=now only.", "billing_cycle_anchor")
    billing.resume_subscription(ctx, sub, billing.customer_now(ctx, sub["customer"]))
    return ctx.render(sub)


@route("GET", "/v1/subscriptions")
def list_(ctx: Ctx) -> dict[str, Any]:
    check_params(
        ctx.params,
        (
            *LIST_PARAMS,
            "customer",
            "price",
            "status",
            "created",
            "test_clock",
            "collection_method",
            "current_period_end",
            "current_period_start",
            "automatic_tax",
        ),
    )
    customer = get_str(ctx.params, "customer")
    price = get_str(ctx.params, "price")
    status = get_str(ctx.params, "status")
    clock = get_str(ctx.params, "test_clock")
    in_range = created_filter(ctx.params)

    def wanted(s: dict[str, Any]) -> bool:
        if status == "all":
            pass
        elif status is not None:
            if s["status"] != status:
                return False
        elif s["status"] == "canceled":
            return False  # Stripe hides canceled subscriptions unless asked
        return (
            (customer is None or s["customer"] == customer)
            and (clock is None or s["test_clock"] == clock)
            and (price is None or any(i["price"]["id"] == price for i in billing.sub_items(s)))
            and in_range(s["created"])
        )

    page = paginate_kind(ctx.state, "subscription", wanted, ctx.params, "/v1/subscriptions")
    page["data"] = [ctx.render(s, list_mode=True) for s in page["data"]]
    return page


def _find_item(ctx: Ctx, item_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    for sub in ctx.state.all("subscription"):
        for item in billing.sub_items(sub):
            if item["id"] == item_id:
                return sub, item
    raise StripeError(f"No such subscription item: '{item_id}'", status=404, code="resource_missing", param="id")


@route("GET", "/v1/subscription_items/{id}")
def retrieve_item(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, ("expand",))
    return ctx.render(_find_item(ctx, ctx.args["id"])[1])


@route("POST", "/v1/subscription_items/{id}")
def update_item(ctx: Ctx) -> dict[str, Any]:
    check_params(
        ctx.params,
        (
            "price",
            "quantity",
            "metadata",
            "proration_behavior",
            "proration_date",
            "expand",
            "payment_behavior",
            "off_session",
            "tax_rates",
            "discounts",
        ),
    )
    sub, item = _find_item(ctx, ctx.args["id"])
    params: dict[str, Any] = {
        "items": [
            {"id": item["id"], **{k: ctx.params[k] for k in ("price", "quantity", "tax_rates") if k in ctx.params}}
        ]
    }
    for key in ("proration_behavior", "proration_date"):
        if key in ctx.params:
            params[key] = ctx.params[key]
    item["metadata"] = apply_metadata(item["metadata"], ctx.params)
    child = ctx.sub(params)
    child.args = {"id": sub["id"]}
    update(child)
    return ctx.render(item)


@route("GET", "/v1/subscription_items")
def list_items(ctx: Ctx) -> dict[str, Any]:
    check_params(ctx.params, (*LIST_PARAMS, "subscription"))
    sub = ctx.state.get("subscription", get_str(ctx.params, "subscription", required=True) or "", "subscription")
    page = paginate(list(billing.sub_items(sub)), ctx.params, f"/v1/subscription_items?subscription={sub['id']}")
    page["data"] = [ctx.render(i, list_mode=True) for i in page["data"]]
    return page
