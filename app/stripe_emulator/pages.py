"""Hosted HTML pages: the 3-D Secure challenge and charge receipts. Plain accessible HTML marked "Test mode"."""

from __future__ import annotations

import contextlib
from html import escape
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from litestar import Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Redirect

from app.stripe_emulator.api import Ctx
from app.stripe_emulator.errors import StripeError
from app.stripe_emulator.ids import random_token
from app.stripe_emulator.resources.payment_intents import finish_3ds
from app.stripe_emulator.resources.setup_intents import finish_setup_3ds
from app.stripe_emulator.runtime import Runtime


def _rt(request: Request[Any, Any, Any]) -> Runtime:
    rt = request.app.state.runtime
    assert isinstance(rt, Runtime)
    return rt


def layout(title: str, body: str) -> str:
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:36rem;margin:2rem auto;padding:0 1rem;color:#1a1f36}}
.test-mode{{display:inline-block;background:#ffde92;color:#5a3a00;padding:.2rem .6rem;border-radius:4px;
font-weight:600}}button{{font-size:1rem;padding:.6rem 1.2rem;margin-right:.5rem}}</style></head>
<body><p class="test-mode" role="note">Test mode</p>{body}</body></html>"""


def with_query(url: str, extra: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), *extra.items()]
    return urlunsplit(parts._replace(query=urlencode(query)))


def html(content: str, status: int = 200) -> Response[str]:
    return Response(content, media_type="text/html; charset=utf-8", status_code=status)


@get("/_emulator/3ds/{pi_id:str}")
async def three_ds_page(request: Request[Any, Any, Any], pi_id: FromPath[str]) -> Response[str]:
    rt = _rt(request)
    secret = request.query_params.get("client_secret", "")
    with rt.state.lock:
        pi = rt.state.find(pi_id)
        if pi is None or pi.get("client_secret") != secret:
            return html(layout("Not found", "<h1>Unknown authentication request</h1>"), 404)
        what = (
            f"a test payment of <strong>{pi['amount'] / 100:.2f} {escape(pi['currency'].upper())}</strong>"
            if pi["object"] == "payment_intent"
            else "saving a card for future payments"
        )
    body = f"""<main><h1>3D Secure authentication</h1>
<p>This is {what}. Choose how the bank responds.</p>
<form method="post" action="/_emulator/3ds/{escape(pi_id)}">
<input type="hidden" name="client_secret" value="{escape(secret)}">
<button type="submit" name="action" value="complete">Complete</button>
<button type="submit" name="action" value="fail">Fail</button>
</form></main>"""
    return html(layout("3D Secure authentication", body))


@post("/_emulator/3ds/{pi_id:str}", status_code=303)
async def three_ds_submit(request: Request[Any, Any, Any], pi_id: FromPath[str]) -> Response[Any]:
    rt = _rt(request)
    form = dict(parse_qsl((await request.body()).decode()))
    ctx = Ctx(rt.state, {}, {}, "req_" + random_token(14), str(request.base_url).rstrip("/"))
    with rt.state.lock:
        pi = rt.state.find(pi_id)
        if pi is None or pi.get("client_secret") != form.get("client_secret"):
            return html(layout("Not found", "<h1>Unknown authentication request</h1>"), 404)
        success = form.get("action") == "complete"
        with contextlib.suppress(StripeError):  # a decline is recorded on the intent itself
            if pi["object"] == "setup_intent":
                finish_setup_3ds(ctx, pi, success)
            else:
                finish_3ds(ctx, pi, success)
        return_url = rt.state.hidden(pi_id).get("return_url")
        status = pi["status"]
        rt.persist()
    rt.dispatcher.submit(ctx.events)
    redirect_status = "succeeded" if status == "succeeded" else "failed"
    if return_url:
        target = with_query(
            return_url,
            {
                str(pi["object"]): pi_id,
                f"{pi['object']}_client_secret": str(pi["client_secret"]),
                "redirect_status": redirect_status,
            },
        )
        return Redirect(target, status_code=303)
    return html(
        layout(
            "Authentication finished",
            f"<h1>Authentication {escape(redirect_status)}</h1><p>You can close this window.</p>",
        )
    )


@get("/_emulator/receipts/{charge_id:str}")
async def receipt(request: Request[Any, Any, Any], charge_id: FromPath[str]) -> Response[str]:
    rt = _rt(request)
    with rt.state.lock:
        charge = rt.state.find(charge_id)
        if charge is None:
            return html(layout("Not found", "<h1>Receipt not found</h1>"), 404)
        card = charge["payment_method_details"]["card"]
        text = (
            f"<h1>Receipt</h1><p>Amount paid: {charge['amount'] / 100:.2f} {charge['currency'].upper()}</p>"
            f"<p>Card: {escape(card['brand'])} ending {escape(card['last4'])}</p>"
            f"<p>Refunded: {charge['amount_refunded'] / 100:.2f}</p>"
        )
    return html(layout("Receipt", f"<main>{text}</main>"))


HANDLERS = [three_ds_page, three_ds_submit, receipt]
