"""Stripe's door into the shop: ``POST /webhooks/stripe``."""

from __future__ import annotations

from typing import Any

import structlog
from litestar import Controller, Request, Response, post
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.status_codes import HTTP_200_OK, HTTP_400_BAD_REQUEST, HTTP_503_SERVICE_UNAVAILABLE
from sqlalchemy.exc import SQLAlchemyError

from app.domain.payments.webhooks import WebhookIntake, WebhookSignatureError, verify_signature
from app.lib import metrics
from app.lib.runtime import Runtime

log = structlog.get_logger()


def provide_webhook_intake(state: State) -> WebhookIntake:
    # The busiest route gets one dependency: Litestar resolves two or more in a task group per request.
    runtime: Runtime = state.runtime
    return WebhookIntake(runtime.alchemy.get_engine(), state.queue, livemode=runtime.settings.stripe.livemode)


class StripeWebhookController(Controller):
    dependencies = {"webhook_intake": Provide(provide_webhook_intake, sync_to_thread=False)}

    @post("/webhooks/stripe", name="payments:webhook", status_code=HTTP_200_OK)
    async def receive(
        self, request: Request[Any, Any, Any], webhook_intake: NamedDependency[WebhookIntake]
    ) -> Response[dict[str, Any]]:
        payload = await request.body()
        runtime: Runtime = request.app.state.runtime
        try:
            event = verify_signature(
                payload, request.headers.get("stripe-signature"), runtime.settings.stripe.webhook_secrets
            )
        except WebhookSignatureError as exc:
            log.warning("stripe_webhook.rejected", reason=str(exc))
            metrics.WEBHOOKS_RECEIVED.labels("bad_signature").inc()
            return Response({"error": "invalid signature"}, status_code=HTTP_400_BAD_REQUEST)
        try:
            intake = await webhook_intake.store(event)
        except (SQLAlchemyError, OSError):
            # Not stored, so not acknowledged: Stripe retries for three days.
            log.exception("stripe_webhook.store_failed", event_id=event["id"])
            return Response({"error": "temporarily unavailable"}, status_code=HTTP_503_SERVICE_UNAVAILABLE)
        metrics.WEBHOOKS_RECEIVED.labels(intake.status if intake.stored else "duplicate").inc()
        return Response({"received": True, "duplicate": not intake.stored, "status": intake.status})
