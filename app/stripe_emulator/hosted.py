"""Hosted pages: Checkout, the Billing Portal and the hosted invoice page (plain accessible HTML, "Test mode")."""

from __future__ import annotations

import copy
import datetime
from html import escape
from typing import Any
from urllib.parse import parse_qsl

from litestar import Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Redirect

from app.stripe_emulator import billing
from app.stripe_emulator.api import Ctx
from app.stripe_emulator.errors import StripeError
from app.stripe_emulator.ids import random_token
from app.stripe_emulator.pages import html, layout
from app.stripe_emulator.resources.coupons import check_promo
from app.stripe_emulator.resources.customers import new_customer
from app.stripe_emulator.resources.payment_intents import confirm_intent, new_intent
from app.stripe_emulator.resources.payment_methods import attach_to, create_from_params
from app.stripe_emulator.resources.subscriptions import create as create_subscription
from app.stripe_emulator.resources.subscriptions import update as update_subscription
from app.stripe_emulator.runtime import Runtime

AnyRequest = Request[Any, Any, Any]


def _rt(request: AnyRequest) -> Runtime:
    rt = request.app.state.runtime
    assert isinstance(rt, Runtime)
    return rt


def _ctx(rt: Runtime, request: AnyRequest, params: dict[str, Any] | None = None) -> Ctx:
    ctx = Ctx(rt.state, params or {}, {}, "req_" + random_token(14), str(request.base_url).rstrip("/"))
    ctx.automatic = True  # actions taken on hosted pages are not API requests
    return ctx


async def _form(request: AnyRequest) -> dict[str, str]:
    return dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))


def _money(amount: int, currency: str) -> str:
    return f"{amount / 100:,.2f} {currency.upper()}"


def _date(ts: int | None) -> str:
    if not ts:
        return ""
    return datetime.datetime.fromtimestamp(ts, tz=datetime.UTC).strftime("%Y-%m-%d")


def card_fields(error: str | None = None) -> str:
    """Card inputs with the same visible labels as the Stripe.js stand-in."""
    alert = f'<p role="alert" class="error">{escape(error)}</p>' if error else ""
    return f"""<fieldset><legend>Card details</legend>
<p><label for="number">Card number</label><br><input id="number" name="number" inputmode="numeric"
 autocomplete="cc-number" placeholder="1234 1234 1234 1234" required></p>
<p><label for="expiry">Expiration</label><br><input id="expiry" name="expiry" placeholder="MM / YY"
 autocomplete="cc-exp" required></p>
<p><label for="cvc">CVC</label><br><input id="cvc" name="cvc" inputmode="numeric" autocomplete="cc-csc"
 placeholder="CVC" required></p>
<p><label for="postal">Postal code</label><br><input id="postal" name="postal" autocomplete="postal-code"></p>
</fieldset>{alert}"""


def pm_params(form: dict[str, str]) -> dict[str, Any]:
    month, _, year = form.get("expiry", "").replace(" ", "").partition("/")
    params: dict[str, Any] = {
        "type": "card",
        "card": {
            "number": form.get("number", "").replace(" ", ""),
            "exp_month": month or "0",
            "exp_year": year or "0",
            "cvc": form.get("cvc", ""),
        },
    }
    if form.get("postal"):
        params["billing_details"] = {"address": {"postal_code": form["postal"]}}
    return params


def _commit(rt: Runtime, ctx: Ctx) -> None:
    rt.persist()
    rt.dispatcher.submit(ctx.events)


# --- Checkout -------------------------------------------------------------------------------------


def _checkout_page(session: dict[str, Any], items: list[dict[str, Any]], error: str | None = None) -> str:
    rows = "".join(
        f"<tr><td>{escape(i['description'])}</td><td>{i['quantity']}</td>"
        f"<td>{_money(i['amount_total'], i['currency'])}"
        f"{' / ' + escape(i['price']['recurring']['interval']) if i['price']['recurring'] else ''}</td></tr>"
        for i in items
    )
    email = (
        ""
        if session["customer"]
        else (
            f'<p><label for="email">Email</label><br><input id="email" name="email" type="email" autocomplete="email"'
            f' value="{escape(session["customer_email"] or "")}" required></p>'
        )
    )
    if session["allow_promotion_codes"]:
        email += (
            '<p><label for="promo">Promotion code</label><br><input id="promo" name="promo" autocomplete="off"></p>'
        )
    discount = session["total_details"]["amount_discount"]
    if discount:
        email = f"<p>Discount: -{_money(discount, session['currency'])}</p>" + email
    verb = "Subscribe" if session["mode"] == "subscription" else "Pay"
    cancel = f'<p><a href="{escape(session["cancel_url"])}">Cancel and go back</a></p>' if session["cancel_url"] else ""
    return layout(
        "Checkout",
        f"""<main><h1>Checkout</h1>
<table><caption>Order summary</caption><thead><tr><th scope="col">Item</th><th scope="col">Qty</th>
<th scope="col">Price</th></tr></thead><tbody>{rows}</tbody></table>
<p>Total due today: <strong>{_money(session["amount_total"], session["currency"])}</strong></p>
<form method="post">{email}{card_fields(error)}<button type="submit">{verb}</button></form>{cancel}</main>""",
    )


def _finish_checkout(ctx: Ctx, session: dict[str, Any]) -> None:
    customer = ctx.state.get("customer", session["customer"])
    session["status"] = "complete"
    session["payment_status"] = "paid" if session["amount_total"] else "no_payment_required"
    session["customer_details"] = {
        "address": copy.deepcopy(customer["address"]),
        "business_name": None,
        "email": customer["email"],
        "individual_name": None,
        "name": customer["name"],
        "phone": customer["phone"],
        "tax_exempt": customer["tax_exempt"],
        "tax_ids": [],
    }
    ctx.emit("checkout.session.completed", session)


def _success_redirect(session: dict[str, Any]) -> Response[Any]:
    target = str(session["success_url"]).replace("{CHECKOUT_SESSION_ID}", session["id"])
    return Redirect(target, status_code=303)


@get("/_emulator/checkout/{session_id:str}")
async def checkout_page(request: AnyRequest, session_id: FromPath[str]) -> Response[Any]:
    rt = _rt(request)
    with rt.state.lock:
        session = rt.state.find(session_id)
        if session is None or session["object"] != "checkout.session":
            return html(layout("Not found", "<h1>Checkout session not found</h1>"), 404)
        if session["status"] == "complete":
            return _success_redirect(session)
        if session["status"] != "open":
            return html(layout("Expired", "<h1>This checkout session has expired</h1>"), 410)
        items = rt.state.private.get(session_id, {}).get("line_items", [])
        return html(_checkout_page(session, items))


@post("/_emulator/checkout/{session_id:str}", status_code=200)
async def checkout_submit(request: AnyRequest, session_id: FromPath[str]) -> Response[Any]:
    rt = _rt(request)
    form = await _form(request)
    ctx = _ctx(rt, request)
    with rt.state.lock:
        session = rt.state.find(session_id)
        if session is None or session.get("object") != "checkout.session" or session["status"] != "open":
            return html(layout("Not found", "<h1>Checkout session is not open</h1>"), 404)
        hidden = rt.state.hidden(session_id)
        items = hidden.get("line_items", [])
        try:
            redirect = _pay_checkout(ctx, session, hidden, form)
        except StripeError as exc:
            _commit(rt, ctx)
            return html(_checkout_page(session, items, exc.message), exc.status)
        _commit(rt, ctx)
    return redirect


def _pay_checkout(ctx: Ctx, session: dict[str, Any], hidden: dict[str, Any], form: dict[str, str]) -> Response[Any]:
    pm = create_from_params(ctx, pm_params(form))
    if not session["customer"]:
        customer = new_customer(ctx)
        customer["email"] = form.get("email") or session["customer_email"]
        ctx.state.put(customer)
        ctx.emit("customer.created", customer)
        session["customer"] = customer["id"]
    customer = ctx.state.get("customer", session["customer"])
    return_url = f"{ctx.base_url}/_emulator/checkout/{session['id']}/return"
    items = hidden.get("line_items", [])
    if form.get("promo") and session["allow_promotion_codes"]:
        _apply_promotion_code(ctx, session, hidden, form["promo"].strip())
    if session["mode"] == "payment" and session["amount_total"] == 0:
        _finish_checkout(ctx, session)
        return _success_redirect(session)
    if session["mode"] == "payment":
        pi_data = hidden.get("payment_intent_data", {})
        pi = new_intent(
            ctx,
            {
                "amount": str(session["amount_total"]),
                "currency": session["currency"],
                "customer": customer["id"],
                "metadata": pi_data.get("metadata") or {},
                "description": pi_data.get("description") or "",
                "receipt_email": customer["email"] or "",
            },
        )
        ctx.emit("payment_intent.created", pi)
        session["payment_intent"] = pi["id"]
    else:
        attach_to(ctx, pm, customer)
        sub_data = hidden.get("subscription_data", {})
        sub_params: dict[str, Any] = {
            "customer": customer["id"],
            "payment_behavior": "default_incomplete",
            "items": [{"price": i["price"]["id"], "quantity": str(i["quantity"])} for i in items],
            "default_payment_method": pm["id"],
            "metadata": sub_data.get("metadata") or {},
        }
        if hidden.get("discounts"):
            sub_params["discounts"] = hidden["discounts"]
        if sub_data.get("trial_period_days"):
            sub_params["trial_period_days"] = sub_data["trial_period_days"]
        if sub_data.get("trial_settings"):
            sub_params["trial_settings"] = sub_data["trial_settings"]
        if sub_data.get("default_tax_rates"):
            sub_params["default_tax_rates"] = sub_data["default_tax_rates"]
        sub = create_subscription(ctx.sub(sub_params))
        session["subscription"] = sub["id"]
        session["invoice"] = sub["latest_invoice"]
        invoice = ctx.state.get("invoice", sub["latest_invoice"])
        intent = billing.invoice_intent(ctx, invoice)
        if intent is None:
            _finish_checkout(ctx, session)
            return _success_redirect(session)
        pi = intent
    confirm_intent(ctx, pi, {"payment_method": pm["id"], "return_url": return_url})
    if pi["status"] == "requires_action":
        return Redirect(pi["next_action"]["redirect_to_url"]["url"], status_code=303)
    _finish_checkout(ctx, session)
    return _success_redirect(session)


def _apply_promotion_code(ctx: Ctx, session: dict[str, Any], hidden: dict[str, Any], code: str) -> None:
    promo = next(
        (p for p in ctx.state.all("promotion_code") if p["code"].lower() == code.lower() and p["active"]), None
    )
    if promo is None:
        raise StripeError("This code is invalid.", code="promotion_code_invalid", param="promo")
    if hidden.get("discounts") == [{"promotion_code": promo["id"]}]:
        return  # already applied on an earlier (declined) attempt
    coupon = check_promo(
        ctx, promo, session["customer"], session["amount_subtotal"], session["currency"], ctx.now, "promo"
    )
    hidden["discounts"] = [{"promotion_code": promo["id"]}]
    session["discounts"] = [{"coupon": None, "promotion_code": promo["id"]}]
    if session["mode"] == "payment":
        # Subscriptions apply (and count) the discount on their invoices; one-off payments do it here.
        subtotal = session["amount_subtotal"]
        off = (
            round(subtotal * float(coupon["percent_off"]) / 100)
            if coupon["percent_off"] is not None
            else min(int(coupon["amount_off"]), subtotal)
        )
        session["total_details"]["amount_discount"] = off
        session["amount_total"] = subtotal - off
        coupon["times_redeemed"] += 1
        promo["times_redeemed"] += 1


@get("/_emulator/checkout/{session_id:str}/return")
async def checkout_return(request: AnyRequest, session_id: FromPath[str]) -> Response[Any]:
    """Back from 3-D Secure: complete the session, or show the checkout page again with the failure."""
    rt = _rt(request)
    ctx = _ctx(rt, request)
    with rt.state.lock:
        session = rt.state.find(session_id)
        if session is None or session.get("object") != "checkout.session":
            return html(layout("Not found", "<h1>Checkout session not found</h1>"), 404)
        pi_id = request.query_params.get("payment_intent", "")
        pi = rt.state.find(pi_id)
        if session["status"] == "open" and pi is not None and pi["status"] == "succeeded":
            _finish_checkout(ctx, session)
            _commit(rt, ctx)
        if session["status"] == "complete":
            return _success_redirect(session)
        error = ((pi or {}).get("last_payment_error") or {}).get("message", "Authentication failed.")
        items = rt.state.private.get(session_id, {}).get("line_items", [])
        return html(_checkout_page(session, items, str(error)), 402)


# --- Billing portal -------------------------------------------------------------------------------


def _portal_page(rt: Runtime, portal: dict[str, Any], notice: str | None = None) -> str:
    state = rt.state
    customer = state.get("customer", portal["customer"])
    subs = [
        s
        for s in state.all("subscription")
        if s["customer"] == customer["id"] and s["status"] not in ("canceled", "incomplete_expired")
    ]
    prices = [p for p in state.all("price") if p["type"] == "recurring" and p["active"]]
    base = f"/_emulator/portal/{portal['id']}"
    parts = []
    for sub in subs:
        item = billing.sub_items(sub)[0]
        product = (state.find(item["price"]["product"]) or {}).get("name", item["price"]["product"])
        interval = item["price"]["recurring"]["interval"]
        status = sub["status"] + (f", cancels on {_date(sub['cancel_at'])}" if sub["cancel_at_period_end"] else "")
        action = (
            f'<form method="post" action="{base}/resume"><input type="hidden" name="subscription" '
            f'value="{sub["id"]}"><button type="submit">Resume subscription</button></form>'
            if sub["cancel_at_period_end"]
            else f'<form method="post" action="{base}/cancel"><input type="hidden" name="subscription" '
            f'value="{sub["id"]}"><button type="submit">Cancel subscription</button></form>'
        )
        options = "".join(
            f'<option value="{p["id"]}"{" selected" if p["id"] == item["price"]["id"] else ""}>'
            f"{escape((state.find(p['product']) or {}).get('name', p['product']))} — "
            f"{_money(int(p['unit_amount'] or 0), p['currency'])} / {escape(p['recurring']['interval'])}</option>"
            for p in prices
            if p["currency"] == item["price"]["currency"]
        )
        parts.append(f"""<section aria-labelledby="sub-{sub["id"]}"><h3 id="sub-{sub["id"]}">{escape(product)}</h3>
<p>{_money(int(item["price"]["unit_amount"] or 0), item["price"]["currency"])} per {escape(interval)}.
Status: <span class="status">{escape(status)}</span>. Current period ends {_date(item["current_period_end"])}.</p>
{action}
<form method="post" action="{base}/switch"><input type="hidden" name="subscription" value="{sub["id"]}">
<label for="price-{sub["id"]}">Plan</label> <select id="price-{sub["id"]}" name="price">{options}</select>
<button type="submit">Update plan</button></form></section>""")
    default_pm = customer["invoice_settings"]["default_payment_method"]
    pm = state.find(default_pm) if default_pm else None
    card = (
        f"{escape(pm['card']['brand'].title())} ending in {escape(pm['card']['last4'])}, expires "
        f"{pm['card']['exp_month']:02d}/{pm['card']['exp_year']}"
        if pm
        else "No card on file"
    )
    invoices = [i for i in state.all("invoice") if i["customer"] == customer["id"] and i["status"] != "draft"]
    rows = "".join(
        f"<tr><td>{_date(i['created'])}</td><td>{_money(i['total'], i['currency'])}</td>"
        f'<td>{escape(i["status"])}</td><td><a href="/_emulator/invoices/{i["id"]}">View invoice</a></td></tr>'
        for i in invoices
    )
    back = f'<p><a href="{escape(portal["return_url"])}">Return to shop</a></p>' if portal["return_url"] else ""
    flash = f'<p role="status">{escape(notice)}</p>' if notice else ""
    return layout(
        "Billing portal",
        f"""<main><h1>Billing</h1>{flash}{back}
<h2>Subscriptions</h2>{"".join(parts) or "<p>No active subscriptions.</p>"}
<h2>Payment method</h2><p class="card">{card}</p>
<form method="post" action="{base}/card">{card_fields()}<button type="submit">Update card</button></form>
<h2>Invoice history</h2><table><thead><tr><th scope="col">Date</th><th scope="col">Amount</th>
<th scope="col">Status</th><th scope="col">Invoice</th></tr></thead><tbody>{rows}</tbody></table></main>""",
    )


@get("/_emulator/portal/{portal_id:str}")
async def portal_page(request: AnyRequest, portal_id: FromPath[str]) -> Response[Any]:
    rt = _rt(request)
    with rt.state.lock:
        portal = rt.state.find(portal_id)
        if portal is None or portal["object"] != "billing_portal.session":
            return html(layout("Not found", "<h1>Portal session not found</h1>"), 404)
        return html(_portal_page(rt, portal, request.query_params.get("notice")))


@post("/_emulator/portal/{portal_id:str}/{action:str}", status_code=303)
async def portal_action(request: AnyRequest, portal_id: FromPath[str], action: FromPath[str]) -> Response[Any]:
    rt = _rt(request)
    form = await _form(request)
    ctx = _ctx(rt, request)
    with rt.state.lock:
        portal = rt.state.find(portal_id)
        if portal is None or portal["object"] != "billing_portal.session":
            return html(layout("Not found", "<h1>Portal session not found</h1>"), 404)
        customer = rt.state.get("customer", portal["customer"])
        try:
            notice = _portal_action(ctx, customer, action, form)
        except StripeError as exc:
            _commit(rt, ctx)
            return html(_portal_page(rt, portal, exc.message), exc.status)
        _commit(rt, ctx)
    return Redirect(f"/_emulator/portal/{portal_id}?notice={notice.replace(' ', '+')}", status_code=303)


def _portal_action(ctx: Ctx, customer: dict[str, Any], action: str, form: dict[str, str]) -> str:
    if action == "card":
        pm = create_from_params(ctx, pm_params(form))
        attach_to(ctx, pm, customer)
        customer["invoice_settings"]["default_payment_method"] = pm["id"]
        ctx.emit("customer.updated", customer)
        for sub in ctx.state.all("subscription"):
            if sub["customer"] == customer["id"] and sub["default_payment_method"]:
                sub["default_payment_method"] = pm["id"]
        return "Card updated"
    sub = ctx.state.get("subscription", form.get("subscription", ""))
    if sub["customer"] != customer["id"]:
        raise StripeError("Unknown subscription.", status=404)
    params: dict[str, Any] = {}
    if action == "cancel":
        params["cancel_at_period_end"] = "true"
        notice = "Subscription will be canceled at the end of the period"
    elif action == "resume":
        params["cancel_at_period_end"] = "false"
        notice = "Subscription resumed"
    elif action == "switch":
        item = billing.sub_items(sub)[0]
        params["items"] = [{"id": item["id"], "price": form.get("price", "")}]
        params["proration_behavior"] = "create_prorations"
        notice = "Plan updated"
    else:
        raise StripeError("Unknown action.", status=404)
    child = ctx.sub(params)
    child.args = {"id": sub["id"]}
    child.automatic = True
    update_subscription(child)
    return notice


# --- Hosted invoice page --------------------------------------------------------------------------


def _invoice_page(invoice: dict[str, Any], error: str | None = None) -> str:
    rows = "".join(
        f"<tr><td>{escape(line['description'] or '')}</td><td>{_money(line['amount'], line['currency'])}</td></tr>"
        for line in invoice["lines"]["data"]
    )
    pay = (
        f'<form method="post">{card_fields(error)}<button type="submit">Pay invoice</button></form>'
        if invoice["status"] == "open"
        else ""
    )
    return layout(
        f"Invoice {invoice['number'] or ''}",
        f"""<main><h1>Invoice {escape(invoice["number"] or "")}</h1>
<p>Status: <strong class="status">{escape(invoice["status"])}</strong></p>
<p>Amount due: {_money(invoice["amount_due"], invoice["currency"])}.
Amount paid: {_money(invoice["amount_paid"], invoice["currency"])}.</p>
<table><thead><tr><th scope="col">Description</th><th scope="col">Amount</th></tr></thead><tbody>{rows}</tbody>
</table><p><a href="/_emulator/invoices/{invoice["id"]}/pdf">Download PDF</a></p>{pay}</main>""",
    )


@get("/_emulator/invoices/{invoice_id:str}")
async def invoice_page(request: AnyRequest, invoice_id: FromPath[str]) -> Response[Any]:
    rt = _rt(request)
    with rt.state.lock:
        invoice = rt.state.find(invoice_id)
        if invoice is None or invoice["object"] != "invoice":
            return html(layout("Not found", "<h1>Invoice not found</h1>"), 404)
        return html(_invoice_page(invoice))


@post("/_emulator/invoices/{invoice_id:str}", status_code=200)
async def invoice_pay(request: AnyRequest, invoice_id: FromPath[str]) -> Response[Any]:
    rt = _rt(request)
    form = await _form(request)
    ctx = _ctx(rt, request)
    with rt.state.lock:
        invoice = rt.state.find(invoice_id)
        if invoice is None or invoice["object"] != "invoice" or invoice["status"] != "open":
            return html(layout("Not found", "<h1>This invoice cannot be paid</h1>"), 404)
        try:
            pm = create_from_params(ctx, pm_params(form))
            ctx.now = billing.customer_now(ctx, invoice["customer"])
            paid = billing.attempt_payment(ctx, invoice, pm["id"], ctx.now)
        except StripeError as exc:
            _commit(rt, ctx)
            return html(_invoice_page(invoice, exc.message), exc.status)
        _commit(rt, ctx)
        if not paid:
            pi = billing.invoice_intent(ctx, invoice) or {}
            message = (pi.get("last_payment_error") or {}).get("message", "Your card was declined.")
            return html(_invoice_page(invoice, str(message)), 402)
        return html(_invoice_page(invoice))


@get("/_emulator/invoices/{invoice_id:str}/pdf")
async def invoice_pdf(request: AnyRequest, invoice_id: FromPath[str]) -> Response[bytes]:
    rt = _rt(request)
    with rt.state.lock:
        invoice = rt.state.find(invoice_id)
        if invoice is None or invoice["object"] != "invoice":
            return Response(b"not found", status_code=404, media_type="text/plain")
        text = f"Invoice {invoice['number']} - {_money(invoice['total'], invoice['currency'])} - {invoice['status']}"
    # A tiny valid-enough PDF so downloads open; the content is what matters in tests.
    body = (f"%PDF-1.4\n% Test mode\n% {text}\n%%EOF\n").encode()
    return Response(body, media_type="application/pdf")


HANDLERS = [
    checkout_page,
    checkout_submit,
    checkout_return,
    portal_page,
    portal_action,
    invoice_page,
    invoice_pay,
    invoice_pdf,
]
