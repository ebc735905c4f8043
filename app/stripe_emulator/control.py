"""Test-control API under ``/_emulator/`` (not part of Stripe): reset, flush, chaos, deliveries."""

from __future__ import annotations

import time
from typing import Any

import anyio.to_thread
from litestar import Request, Response, get, post
from litestar.params import FromPath

from app.stripe_emulator.api import Ctx
from app.stripe_emulator.chaos import ChaosConfig
from app.stripe_emulator.errors import StripeError
from app.stripe_emulator.history import HistorySpec, seed_history
from app.stripe_emulator.ids import random_token
from app.stripe_emulator.resources.disputes import settle_dispute
from app.stripe_emulator.resources.events import create_endpoint
from app.stripe_emulator.resources.refunds import refund_charge, settle_refund
from app.stripe_emulator.runtime import Runtime
from app.stripe_emulator.state import API_VERSION


def _rt(request: Request[Any, Any, Any]) -> Runtime:
    rt = request.app.state.runtime
    assert isinstance(rt, Runtime)
    return rt


def _ctx(rt: Runtime, request: Request[Any, Any, Any], params: dict[str, Any] | None = None) -> Ctx:
    return Ctx(rt.state, params or {}, {}, "req_" + random_token(14), str(request.base_url).rstrip("/"))


def _error(exc: StripeError) -> Response[dict[str, Any]]:
    return Response(exc.body("req_control"), status_code=exc.status)


def ensure_endpoint(
    rt: Runtime, url: str, secret: str | None, events: list[str], *, default: bool = False, base: str = ""
) -> dict[str, Any]:
    """Create (or re-key) a webhook endpoint for ``url``; ``default`` ones survive ``reset``."""
    with rt.state.lock:
        existing = next((e for e in rt.state.all("webhook_endpoint") if e["url"] == url), None)
        if existing is None:
            ctx = Ctx(rt.state, {}, {}, "req_control", base)
            existing = create_endpoint(ctx, url, events, secret)
        else:
            existing["enabled_events"] = events
            existing["status"] = "enabled"
            if secret:
                rt.state.hidden(existing["id"])["secret"] = secret
        if default:
            rt.state.hidden("_defaults").setdefault("endpoints", {})[url] = {
                "secret": rt.state.hidden(existing["id"])["secret"],
                "events": events,
            }
        rt.persist()
        return {**existing, "secret": rt.state.hidden(existing["id"])["secret"]}


@get("/_emulator/health")
async def health(request: Request[Any, Any, Any]) -> dict[str, Any]:
    rt = _rt(request)
    return {"status": "ok", "api_version": API_VERSION, "pending_deliveries": rt.dispatcher.pending()}


@post("/_emulator/reset", status_code=200)
async def reset(request: Request[Any, Any, Any]) -> dict[str, Any]:
    rt = _rt(request)
    rt.dispatcher.clear()  # before taking the state lock: the dispatcher locks in the other order
    with rt.state.lock:
        defaults = dict(rt.state.private.get("_defaults", {}).get("endpoints", {}))
        rt.state.clear()
    rt.dispatcher.chaos.configure(ChaosConfig())
    for url, cfg in defaults.items():
        ensure_endpoint(rt, url, cfg["secret"], cfg["events"], default=True)
    rt.persist()
    return {"reset": True}


@post("/_emulator/flush", status_code=200)
async def flush(request: Request[Any, Any, Any]) -> dict[str, Any]:
    rt = _rt(request)
    data = await request.json() if await request.body() else {}
    timeout = float((data or {}).get("timeout", 30))
    idle = await anyio.to_thread.run_sync(rt.dispatcher.wait_idle, timeout)
    return {"idle": idle, "pending": rt.dispatcher.pending()}


@get("/_emulator/deliveries")
async def deliveries(request: Request[Any, Any, Any]) -> dict[str, Any]:
    rt = _rt(request)
    endpoint = request.query_params.get("endpoint")
    event = request.query_params.get("event")
    with rt.state.lock:
        rows = [
            d
            for d in rt.state.deliveries
            if (endpoint is None or d["endpoint"] == endpoint) and (event is None or d["event"] == event)
        ]
    return {"object": "list", "data": rows}


@get("/_emulator/chaos")
async def get_chaos(request: Request[Any, Any, Any]) -> dict[str, Any]:
    return _rt(request).dispatcher.chaos.config.to_json()


@post("/_emulator/chaos", status_code=200)
async def set_chaos(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    rt = _rt(request)
    try:
        config = ChaosConfig.from_json(await request.json() or {})
    except (StripeError, TypeError, ValueError) as exc:
        return _error(exc if isinstance(exc, StripeError) else StripeError(str(exc)))
    rt.dispatcher.chaos.configure(config)
    with rt.state.lock:
        rt.state.chaos = config.to_json()
    rt.persist()
    return Response(config.to_json())


@post("/_emulator/settings", status_code=200)
async def settings(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """Delivery settings: ``retry_base`` (seconds), ``max_attempts``, ``timeout`` (seconds); billing setting
    ``after_failed_retries``: ``"cancel"`` (default) or ``"unpaid"``."""
    rt = _rt(request)
    data = await request.json() or {}
    with rt.state.lock:
        billing_settings = rt.state.hidden("_settings")
        if data.get("after_failed_retries") in ("cancel", "unpaid"):
            billing_settings["after_failed_retries"] = data["after_failed_retries"]
        after = billing_settings.get("after_failed_retries", "cancel")
    s = rt.dispatcher.settings
    if "retry_base" in data:
        s.retry_base = float(data["retry_base"])
    if "max_attempts" in data:
        s.max_attempts = int(data["max_attempts"])
    if "timeout" in data:
        s.timeout = float(data["timeout"])
        rt.dispatcher.set_timeout(s.timeout)
    return {
        "retry_base": s.retry_base,
        "max_attempts": s.max_attempts,
        "timeout": s.timeout,
        "after_failed_retries": after,
    }


@post("/_emulator/webhook_endpoints", status_code=200)
async def add_endpoint(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    rt = _rt(request)
    data = await request.json() or {}
    if not data.get("url"):
        return _error(StripeError("Missing required param: url.", code="parameter_missing", param="url"))
    endpoint = ensure_endpoint(
        rt,
        str(data["url"]),
        data.get("secret"),
        list(data.get("enabled_events") or ["*"]),
        base=str(request.base_url).rstrip("/"),
    )
    return Response(endpoint)


@post("/_emulator/payment_intents/{pi_id:str}/refund", status_code=200)
async def dashboard_refund(request: Request[Any, Any, Any], pi_id: FromPath[str]) -> Response[dict[str, Any]]:
    """A refund issued "from the Dashboard": events carry no API request id."""
    rt = _rt(request)
    data = (await request.json() if await request.body() else {}) or {}
    ctx = _ctx(rt, request)
    try:
        with rt.state.lock:
            pi = rt.state.get("payment_intent", pi_id)
            if not pi["latest_charge"] or pi["status"] != "succeeded":
                raise StripeError(f"This PaymentIntent ({pi_id}) does not have a successful charge to refund.")
            charge = rt.state.get("charge", pi["latest_charge"])
            amount = data.get("amount")
            refund = refund_charge(
                ctx, charge, None if amount is None else int(amount), data.get("reason"), {}, automatic=True
            )
            rt.persist()
    except StripeError as exc:
        return _error(exc)
    rt.dispatcher.submit(ctx.events)
    return Response(refund)


@post("/_emulator/refunds/{refund_id:str}/settle", status_code=200)
async def settle(request: Request[Any, Any, Any], refund_id: FromPath[str]) -> Response[dict[str, Any]]:
    """Move an asynchronous test-card refund to its final status now (7726: succeeded; 5126: failed)."""
    rt = _rt(request)
    ctx = _ctx(rt, request)
    try:
        with rt.state.lock:
            refund = settle_refund(ctx, refund_id)
            rt.persist()
    except StripeError as exc:
        return _error(exc)
    rt.dispatcher.submit(ctx.events)
    return Response(refund)


@post("/_emulator/disputes/{dispute_id:str}/settle", status_code=200)
async def settle_dispute_now(request: Request[Any, Any, Any], dispute_id: FromPath[str]) -> Response[dict[str, Any]]:
    """The bank decides a dispute now: ``{"outcome": "won"|"lost"}`` (default: what test evidence asked, else won)."""
    rt = _rt(request)
    data = (await request.json() if await request.body() else {}) or {}
    ctx = _ctx(rt, request)
    try:
        with rt.state.lock:
            dispute = settle_dispute(ctx, dispute_id, data.get("outcome"))
            rt.persist()
    except StripeError as exc:
        return _error(exc)
    rt.dispatcher.submit(ctx.events)
    return Response(dispute)


@post("/_emulator/seed_history", status_code=200)
async def history(request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
    """Bulk history straight into the state (no events, no webhooks): see ``app/stripe_emulator/history.py``."""
    rt = _rt(request)
    try:
        spec = HistorySpec.from_json((await request.json() if await request.body() else {}) or {})

        def build() -> dict[str, int]:
            with rt.state.lock:
                counts = seed_history(rt, spec)
            rt.persist()
            return counts

        counts = await anyio.to_thread.run_sync(build)
    except (StripeError, TypeError, ValueError) as exc:
        return _error(exc if isinstance(exc, StripeError) else StripeError(str(exc)))
    return Response({"created": counts})


@get("/_emulator/stats")
async def stats(request: Request[Any, Any, Any]) -> dict[str, Any]:
    """API requests served, 429s answered, and the most requests ever in flight at once (``?reset=1`` restarts)."""
    return _rt(request).stats(reset=request.query_params.get("reset") in {"1", "true"})


@get("/_emulator/time")
async def now() -> dict[str, Any]:
    return {"now": int(time.time())}


HANDLERS = [
    health,
    reset,
    flush,
    deliveries,
    get_chaos,
    set_chaos,
    settings,
    add_endpoint,
    dashboard_refund,
    settle,
    settle_dispute_now,
    history,
    stats,
    now,
]
