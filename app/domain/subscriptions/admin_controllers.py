"""Subscriptions in the back office: the list and a member's subscription (subscriptions:read), and the staff
actions on it, each guarded by its own row of the permission table (see app/domain/subscriptions/admin.py)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import stripe
import structlog
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Stream, Template
from saq import Queue
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.audit.services import Actor
from app.domain.orders.refunds import STRIPE_REASONS
from app.domain.subscriptions.admin import (
    PAUSE_BEHAVIORS,
    SUBSCRIPTIONS_CSV_HEADER,
    SUBSCRIPTIONS_TABLE,
    StaffSubscriptionActions,
    SubscriptionDetail,
    parse_invoice_refund,
    subscription_csv_row,
    subscription_detail,
    subscriptions_query,
)
from app.lib.exceptions import FormError
from app.lib.forms import FormData
from app.lib.htmx import flash, redirect, render
from app.lib.permissions import Access, Resource
from app.lib.runtime import Runtime
from app.lib.stripe_gateway import outcome_unknown, stripe_message
from app.lib.tables import export_for, table_for
from app.lib.tokens import new_form_token
from app.server.auth import requires

log = structlog.get_logger()

MANAGE = [requires(Resource.SUBSCRIPTIONS, Access.FULL)]


def _page(
    request: Request[Any, Any, Any],
    detail: SubscriptionDetail,
    *,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    message: str = "",
    status_code: int = 200,
    form_token: str | None = None,
) -> Template:
    return render(
        request,
        "admin/subscription.html.j2",
        {
            "detail": detail,
            "sub": detail.subscription,
            "form": form or {},
            "errors": errors or {},
            "message": message,
            # Every rendering of the refund form gets a fresh token; a resubmission of one rendering replays it.
            "form_token": form_token or new_form_token(),
            "stripe_reasons": STRIPE_REASONS,
            "pause_behaviors": PAUSE_BEHAVIORS,
        },
        status_code=status_code,
    )


class AdminSubscriptionActionController(Controller):
    path = "/admin/subscriptions"
    guards = [requires(Resource.SUBSCRIPTIONS, Access.READ)]

    @get("/{subscription_id:uuid}", name="admin:subscription")
    async def detail(
        self,
        request: Request[Any, Any, Any],
        subscription_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
    ) -> Template:
        return _page(request, await subscription_detail(db_session, subscription_id))

    async def _act(
        self,
        request: Request[Any, Any, Any],
        subscription_id: UUID,
        db_session: AsyncSession,
        runtime: Runtime,
        queue: Queue,
        actor: Actor,
        action: str,
        data: dict[str, str] | None = None,
    ) -> Response[Any] | Template:
        detail = await subscription_detail(db_session, subscription_id)
        staff = StaffSubscriptionActions(db_session, runtime.stripe, queue)
        form = dict(data or {})
        try:
            if action == "cancel_now":
                await staff.cancel_now(detail, actor)
                done = "Subscription canceled: the member's access ended now."
            elif action == "cancel_at_period_end":
                sub = await staff.cancel_at_period_end(detail, actor)
                when = sub.current_period_end.strftime("%B %-d, %Y") if sub.current_period_end else "the period end"
                done = f"The subscription will end on {when}; it can be resumed until then."
            elif action == "resume":
                await staff.resume(detail, actor)
                done = "Resumed: the subscription renews as usual."
            elif action == "pause_collection":
                await staff.pause_collection(detail, form.get("behavior", ""), form.get("resumes_on", ""), actor)
                done = "Payment collection paused."
            elif action == "resume_collection":
                await staff.resume_collection(detail, actor)
                done = "Payment collection resumed: the next invoices are charged as usual."
            elif action == "refund":
                refund = parse_invoice_refund(detail.last_paid_invoice, form)
                refund_id = await staff.refund_last_invoice(detail, refund, actor)
                done = f"Refund {refund_id} requested from Stripe."
            else:
                sub = await staff.apply_promo_code(detail, form.get("code", ""), actor)
                done = f"Code {form.get('code', '').strip().upper()} applied to the next invoices."
        except FormError as exc:
            await db_session.rollback()
            detail = await subscription_detail(db_session, subscription_id)  # as it is now, not as it was loaded
            return _page(request, detail, form=form, errors=exc.errors, message=str(exc), status_code=422)
        except stripe.StripeError as exc:
            await db_session.rollback()
            detail = await subscription_detail(db_session, subscription_id)
            log.warning("admin.subscription_refused", action=action, error=type(exc).__name__, code=exc.code)
            # If Stripe may have done it, the next press must replay it: keep this form's token.
            token = form.get("form_token") if outcome_unknown(exc) else None
            message = f"Stripe refused: {stripe_message(exc)}"
            return _page(request, detail, form=form, message=message, status_code=422, form_token=token)
        flash(request, done, "success")
        return redirect(request, request.app.route_reverse("admin:subscription", subscription_id=subscription_id))

    @post("/{subscription_id:uuid}/cancel-now", name="admin:subscription_cancel_now", guards=MANAGE)
    async def cancel_now(
        self,
        request: Request[Any, Any, Any],
        subscription_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        queue: NamedDependency[Queue],
        actor: NamedDependency[Actor],
    ) -> Response[Any] | Template:
        return await self._act(request, subscription_id, db_session, runtime, queue, actor, "cancel_now")

    @post("/{subscription_id:uuid}/cancel-at-period-end", name="admin:subscription_cancel_at_end", guards=MANAGE)
    async def cancel_at_period_end(
        self,
        request: Request[Any, Any, Any],
        subscription_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        queue: NamedDependency[Queue],
        actor: NamedDependency[Actor],
    ) -> Response[Any] | Template:
        return await self._act(request, subscription_id, db_session, runtime, queue, actor, "cancel_at_period_end")

    @post("/{subscription_id:uuid}/resume", name="admin:subscription_resume", guards=MANAGE)
    async def resume(
        self,
        request: Request[Any, Any, Any],
        subscription_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        queue: NamedDependency[Queue],
        actor: NamedDependency[Actor],
    ) -> Response[Any] | Template:
        return await self._act(request, subscription_id, db_session, runtime, queue, actor, "resume")

    @post("/{subscription_id:uuid}/pause-collection", name="admin:subscription_pause", guards=MANAGE)
    async def pause_collection(
        self,
        request: Request[Any, Any, Any],
        subscription_id: FromPath[UUID],
        data: FormData,
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        queue: NamedDependency[Queue],
        actor: NamedDependency[Actor],
    ) -> Response[Any] | Template:
        return await self._act(request, subscription_id, db_session, runtime, queue, actor, "pause_collection", data)

    @post("/{subscription_id:uuid}/resume-collection", name="admin:subscription_unpause", guards=MANAGE)
    async def resume_collection(
        self,
        request: Request[Any, Any, Any],
        subscription_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        queue: NamedDependency[Queue],
        actor: NamedDependency[Actor],
    ) -> Response[Any] | Template:
        return await self._act(request, subscription_id, db_session, runtime, queue, actor, "resume_collection")

    @post(
        "/{subscription_id:uuid}/refund",
        name="admin:subscription_refund",
        guards=[requires(Resource.REFUNDS, Access.FULL)],
    )
    async def refund(
        self,
        request: Request[Any, Any, Any],
        subscription_id: FromPath[UUID],
        data: FormData,
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        queue: NamedDependency[Queue],
        actor: NamedDependency[Actor],
    ) -> Response[Any] | Template:
        return await self._act(request, subscription_id, db_session, runtime, queue, actor, "refund", data)

    @post(
        "/{subscription_id:uuid}/promo-code",
        name="admin:subscription_promo",
        guards=[requires(Resource.PROMO_CODES, Access.FULL)],
    )
    async def promo_code(
        self,
        request: Request[Any, Any, Any],
        subscription_id: FromPath[UUID],
        data: FormData,
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        queue: NamedDependency[Queue],
        actor: NamedDependency[Actor],
    ) -> Response[Any] | Template:
        return await self._act(request, subscription_id, db_session, runtime, queue, actor, "promo", data)


class AdminSubscriptionController(Controller):
    path = "/admin/subscriptions"
    guards = [requires(Resource.SUBSCRIPTIONS, Access.READ)]

    @get("/", name="admin:subscriptions")
    async def subscriptions(
        self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
    ) -> Template:
        table = await table_for(
            request, db_session, SUBSCRIPTIONS_TABLE, subscriptions_query, export_route="admin:subscriptions_export"
        )
        return render(
            request, "admin/subscriptions.html.j2", {"table": table}, fragment="admin/_subscriptions_table.html.j2"
        )

    @get("/export.csv", name="admin:subscriptions_export")
    async def export(self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]) -> Stream:
        return export_for(
            request,
            runtime,
            SUBSCRIPTIONS_TABLE,
            subscriptions_query,
            SUBSCRIPTIONS_CSV_HEADER,
            subscription_csv_row,
            name="subscriptions",
        )
