"""Litestar application: ``/v1`` REST API, ``/v3/`` Stripe.js stand-in, hosted pages, control API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio.to_thread
from litestar import Litestar, Request, Response, get, route
from litestar.config.cors import CORSConfig
from litestar.enums import HttpMethod
from litestar.params import FromPath

from app.stripe_emulator import control, hosted, pages
from app.stripe_emulator.runtime import Runtime
from app.stripe_emulator.state import EmulatorState
from app.stripe_emulator.webhooks import DeliverySettings

STATIC = Path(__file__).parent / "static"


def runtime_of(request: Request[Any, Any, Any]) -> Runtime:
    rt = request.app.state.runtime
    assert isinstance(rt, Runtime)
    return rt


def base_url(request: Request[Any, Any, Any]) -> str:
    return str(request.base_url).rstrip("/")


@route("/v1/{path:path}", http_method=[HttpMethod.GET, HttpMethod.POST, HttpMethod.DELETE])
async def api(request: Request[Any, Any, Any], path: FromPath[str]) -> Response[bytes]:
    rt = runtime_of(request)
    rt.request_started()  # before reading the body: two clients sending at once count as two in flight
    try:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        # On a worker thread (the state lock serialises the handlers): the event loop keeps accepting requests,
        # so clients that send several at once are really in flight together and `max_in_flight` sees it.
        status, payload, out_headers = await anyio.to_thread.run_sync(
            rt.handle_api,
            request.method,
            "/v1" + path,
            request.scope.get("query_string", b"").decode(),
            body,
            headers,
            base_url(request),
        )
    finally:
        rt.request_finished()
    return Response(
        json.dumps(payload, indent=2).encode(), status_code=status, media_type="application/json", headers=out_headers
    )


@get(["/v3", "/v3/"], include_in_schema=False)
async def stripe_js() -> Response[bytes]:
    return Response(
        (STATIC / "stripe.js").read_bytes(),
        media_type="application/javascript",
        headers={"Access-Control-Allow-Origin": "*", "Cache-Control": "no-cache"},
    )


def create_app(
    state: EmulatorState | None = None,
    *,
    state_file: Path | None = None,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    settings: DeliverySettings | None = None,
) -> Litestar:
    """ASGI app. Deliveries run on a background thread started with the app and stopped on shutdown."""
    runtime = Runtime(state, state_file=state_file, settings=settings)
    if webhook_url:
        control.ensure_endpoint(runtime, webhook_url, webhook_secret, ["*"], default=True)

    def start() -> None:
        runtime.dispatcher.start()

    def stop() -> None:
        runtime.dispatcher.stop()

    app = Litestar(
        route_handlers=[api, stripe_js, *control.HANDLERS, *pages.HANDLERS, *hosted.HANDLERS],
        cors_config=CORSConfig(
            allow_origins=["*"], allow_methods=["*"], allow_headers=["*"], expose_headers=["Request-Id"]
        ),
        on_startup=[start],
        on_shutdown=[stop],
        debug=False,
        openapi_config=None,
    )
    app.state.runtime = runtime
    return app
