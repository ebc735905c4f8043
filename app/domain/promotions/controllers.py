"""Promo codes in the back office: the list needs promo_codes:read (admin, support); creating and archiving full."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import stripe
import structlog
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath
from litestar.response import Stream, Template
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.audit.services import Actor
from app.domain.promotions.admin import (
    CURRENCIES,
    PROMO_CSV_HEADER,
    PROMO_TABLE,
    STATUS_LABELS,
    archive_promo,
    choices,
    create_promo,
    get_promo,
    parse_promo_form,
    promo_csv_row,
    promo_query,
)
from app.domain.promotions.services import describe, describe_duration, status_of
from app.lib.exceptions import ApplicationError, FormError
from app.lib.htmx import flash, redirect, render, render_form
from app.lib.permissions import Access, Resource
from app.lib.runtime import Runtime
from app.lib.stripe_gateway import outcome_unknown, stripe_message
from app.lib.tables import export_for, table_for
from app.lib.tokens import new_form_token
from app.server.auth import requires

log = structlog.get_logger()


async def _form_page(
    request: Request[Any, Any, Any],
    db: AsyncSession,
    *,
    form: dict[str, str] | None = None,
    selected_products: list[str] | None = None,
    selected_plans: list[str] | None = None,
    error: ApplicationError | None = None,
    form_token: str | None = None,
) -> Template:
    products, plans = await choices(db)
    return render_form(
        request,
        "admin/promo_code_new.html.j2",
        {
            "selected_products": set(selected_products or []),
            "selected_plans": set(selected_plans or []),
            "products": products,
            "plans": plans,
            "currencies": CURRENCIES,
            "form_token": form_token or new_form_token(),
        },
        fragment="admin/_promo_code_form.html.j2",
        form=form or {"kind": "percent", "duration": "once", "currency": "CAD"},
        error=error,
    )


class AdminPromoCodeController(Controller):
    path = "/admin/promo-codes"
    guards = [requires(Resource.PROMO_CODES, Access.READ)]

    @get("/", name="admin:promo_codes")
    async def index(self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Template:
        table = await table_for(request, db_session, PROMO_TABLE, promo_query, export_route="admin:promo_codes_export")
        return render(
            request,
            "admin/promo_codes.html.j2",
            {
                "table": table,
                "labels": STATUS_LABELS,
                "status_of": status_of,
                "describe": describe,
                "describe_duration": describe_duration,
                "now": datetime.now(UTC),
            },
            fragment="admin/_promo_codes_table.html.j2",
        )

    @get("/export.csv", name="admin:promo_codes_export")
    async def export(self, request: Request[Any, Any, Any], runtime: NamedDependency[Runtime]) -> Stream:
        return export_for(
            request, runtime, PROMO_TABLE, promo_query, PROMO_CSV_HEADER, promo_csv_row, name="promo-codes"
        )

    @get("/new", name="admin:promo_code_new", guards=[requires(Resource.PROMO_CODES, Access.FULL)])
    async def new(self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]) -> Template:
        return await _form_page(request, db_session)

    @post("/", name="admin:promo_code_create", guards=[requires(Resource.PROMO_CODES, Access.FULL)])
    async def create(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        actor: NamedDependency[Actor],
    ) -> Template | Response[Any]:
        raw = await request.form()
        form = {key: str(value) for key, value in raw.items() if key not in {"product_ids", "plan_ids"}}
        product_ids = [str(v) for v in raw.getall("product_ids")] if "product_ids" in raw else []
        plan_ids = [str(v) for v in raw.getall("plan_ids")] if "plan_ids" in raw else []
        try:
            parsed = parse_promo_form(form, product_ids=product_ids, plan_ids=plan_ids)
            promo = await create_promo(db_session, runtime.stripe, parsed, actor=actor)
        except FormError as exc:
            return await _form_page(
                request,
                db_session,
                form=form,
                selected_products=product_ids,
                selected_plans=plan_ids,
                error=exc,
            )
        except stripe.StripeError as exc:
            await db_session.rollback()
            log.warning("admin.promo_code_refused", error=type(exc).__name__, code=exc.code)
            return await _form_page(
                request,
                db_session,
                form=form,
                selected_products=product_ids,
                selected_plans=plan_ids,
                error=FormError({}, f"Stripe refused the code: {stripe_message(exc)}"),
                # Stripe may have created the coupon: the next press must replay it, with this form's token.
                form_token=form.get("form_token") if outcome_unknown(exc) else None,
            )
        flash(request, f"Promo code {promo.code} created.", "success")
        return redirect(request, request.app.route_reverse("admin:promo_codes"))

    @post(
        "/{promo_id:uuid}/deactivate",
        name="admin:promo_code_deactivate",
        guards=[requires(Resource.PROMO_CODES, Access.FULL)],
    )
    async def deactivate(
        self,
        request: Request[Any, Any, Any],
        promo_id: FromPath[UUID],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        actor: NamedDependency[Actor],
    ) -> Response[Any]:
        promo = await get_promo(db_session, promo_id)
        try:
            changed = await archive_promo(db_session, runtime.stripe, promo, actor=actor)
        except stripe.StripeError as exc:
            await db_session.rollback()
            log.warning("admin.promo_code_archive_failed", code=promo.code, error=type(exc).__name__)
            flash(request, "Stripe could not be reached; the code is still active. Try again.", "error")
        else:
            flash(request, f"{promo.code} deactivated." if changed else f"{promo.code} was already inactive.", "info")
        return redirect(request, request.app.route_reverse("admin:promo_codes"))
