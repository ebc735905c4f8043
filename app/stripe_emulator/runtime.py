"""The emulator runtime: authentication, idempotency, dispatch to resource handlers, persistence."""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

from app.stripe_emulator import resources  # noqa: F401 - registers routes
from app.stripe_emulator.api import Ctx, match, path_known
from app.stripe_emulator.dialect import parse_form
from app.stripe_emulator.errors import StripeError, unauthorized
from app.stripe_emulator.ids import random_token
from app.stripe_emulator.state import API_VERSION, EmulatorState
from app.stripe_emulator.webhooks import DeliverySettings, Dispatcher

Headers = dict[str, str]


class Runtime:
    def __init__(
        self,
        state: EmulatorState | None = None,
        *,
        state_file: Path | None = None,
        settings: DeliverySettings | None = None,
    ) -> None:
        self.state = state or (EmulatorState.load(state_file) if state_file else EmulatorState())
        self.state_file = state_file
        self.dispatcher = Dispatcher(self.state, settings, on_change=self.persist)
        # API requests in flight (counted by the ASGI app around each /v1 request) and the most seen at once.
        self.stats_lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self.api_requests = 0
        self.rate_limited = 0
        if self.state.chaos:
            from app.stripe_emulator.chaos import ChaosConfig

            self.dispatcher.chaos.configure(ChaosConfig.from_json(self.state.chaos))

    def request_started(self) -> None:
        with self.stats_lock:
            self.in_flight += 1
            self.api_requests += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def request_finished(self) -> None:
        with self.stats_lock:
            self.in_flight -= 1

    def stats(self, *, reset: bool = False) -> dict[str, int]:
        with self.stats_lock:
            out = {
                "in_flight": self.in_flight,
                "max_in_flight": self.max_in_flight,
                "api_requests": self.api_requests,
                "rate_limited": self.rate_limited,
            }
            if reset:
                self.max_in_flight = self.in_flight
                self.api_requests = 0
                self.rate_limited = 0
        return out

    def persist(self) -> None:
        if self.state_file is not None:
            self.state.save(self.state_file)

    # --- auth ------------------------------------------------------------------------------------
    @staticmethod
    def _api_key(headers: Headers) -> str | None:
        auth = headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        if auth.lower().startswith("basic "):
            try:
                return base64.b64decode(auth[6:]).decode().split(":", 1)[0]
            except ValueError:
                return None
        return None

    def handle_api(
        self, method: str, path: str, query: str, body: bytes, headers: Headers, base_url: str
    ) -> tuple[int, dict[str, Any], Headers]:
        request_id = "req_" + random_token(14)
        out_headers: Headers = {"Request-Id": request_id, "Stripe-Version": headers.get("stripe-version", API_VERSION)}
        events: list[dict[str, Any]] = []
        with self.stats_lock:
            limited = self.dispatcher.chaos.rate_limited()
            self.rate_limited += limited
        if limited:
            # Stripe's own 429 body; the SDK raises RateLimitError for it (and retries when told it may).
            exc = StripeError(
                "Request rate limit exceeded. You can learn more about rate limits here "
                "https://stripe.com/docs/rate-limits.",
                status=429,
                code="rate_limit",
            )
            should_retry = self.dispatcher.chaos.config.rate_limit_should_retry
            if should_retry:
                out_headers["Stripe-Should-Retry"] = should_retry
            return 429, exc.body(request_id), out_headers
        try:
            status, payload, replayed = self._dispatch(method, path, query, body, headers, base_url, request_id, events)
        except StripeError as exc:
            status, payload, replayed = exc.status, exc.body(request_id), False
        if replayed:
            out_headers["Idempotent-Replayed"] = "true"
        idem = headers.get("idempotency-key")
        if idem:
            out_headers["Idempotency-Key"] = idem
        if events:
            self.dispatcher.submit(events)
        return status, payload, out_headers

    def _dispatch(
        self,
        method: str,
        path: str,
        query: str,
        body: bytes,
        headers: Headers,
        base_url: str,
        request_id: str,
        events: list[dict[str, Any]],
    ) -> tuple[int, dict[str, Any], bool]:
        key = self._api_key(headers)
        if not key:
            raise unauthorized(
                "You did not provide an API key. You need to provide your API key in the Authorization header, "
                "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY')."
            )
        if key.startswith(("sk_test_", "rk_test_")):
            kind = "secret"
        elif key.startswith("pk_test_"):
            kind = "publishable"
        else:
            masked = key[:8] + "*" * max(0, len(key) - 12) + key[-4:] if len(key) > 12 else key
            raise unauthorized(f"Invalid API Key provided: {masked}")
        found = match(method, path)
        if found is None:
            if path_known(path):
                raise StripeError(f"Unrecognized request URL ({method}: {path}).", status=404)
            raise StripeError(
                f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs or we can help "
                "at https://support.stripe.com/.",
                status=404,
            )
        route, args = found
        if kind == "publishable" and not route.publishable:
            raise unauthorized(
                "This API call cannot be made with a publishable API key. Please use a secret API key. You can find "
                "a list of your API keys at https://dashboard.stripe.com/account/apikeys."
            )
        params = parse_form(query) if query else {}
        if body:
            ctype = headers.get("content-type", "")
            if "json" in ctype:
                params.update(json.loads(body))
            else:
                params.update(parse_form(body.decode()))
        idem = headers.get("idempotency-key") if method == "POST" else None
        cache_key = f"{key}:{idem}" if idem else None
        fingerprint = hashlib.sha256(json.dumps([method, path, params], sort_keys=True).encode()).hexdigest()
        with self.state.lock:
            if cache_key:
                self.state.prune_idempotency()
                cached = self.state.idempotency.get(cache_key)
                if cached is not None:
                    if cached["fingerprint"] != fingerprint:
                        raise StripeError(
                            "Keys for idempotent requests can only be used with the same parameters they were first "
                            f"used with. Try using a key other than '{idem}' if you meant to execute a different "
                            "request.",
                            type="idempotency_error",
                            # 400, not 409: Stripe keeps 409 for a key still in flight (the SDK retries 409s and
                            # only maps idempotency_error to IdempotencyError on 400/404).
                            status=400,
                        )
                    return int(cached["status"]), dict(cached["body"]), True
            ctx = Ctx(self.state, params, args, request_id, base_url, kind, idem)
            ctx.events = events
            try:
                status, payload = 200, route.handler(ctx)
            except StripeError as exc:
                status, payload = exc.status, exc.body(request_id)
            # Like Stripe, results are saved once the endpoint starts executing: requests rejected by parameter
            # validation are not saved, so a corrected retry with the same key goes through.
            code = str(payload.get("error", {}).get("code", "")) if status >= 400 else ""
            if cache_key and not code.startswith("parameter_"):
                self.state.idempotency[cache_key] = {
                    "fingerprint": fingerprint,
                    "status": status,
                    "body": payload,
                    "at": time.time(),
                }
            if route.mutating:
                self.persist()
        return status, payload, False
