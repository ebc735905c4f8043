"""Checkout pages: billing details with a live tax preview, the Payment Element page, and the return page."""

from __future__ import annotations

import secrets
from datetime import timedelta
from typing import Any
from uuid import UUID

import stripe
import structlog
from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Template
from saq import Queue
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.domain.cart.services import CartService, PricedCart
from app.domain.catalog.cache import invalidate_catalog
from app.domain.checkout.services import (
    COUNTRIES,
    BillingDetails,
    CheckoutError,
    CheckoutService,
    PromoCodeRejectedError,
    parse_billing,
    tax_for,
)
from app.domain.downloads.services import DownloadService
from app.domain.orders.dependencies import provide_order_service
from app.domain.orders.fulfilment import PaymentSync
from app.domain.orders.services import OrderService, remember_visitor_order
from app.domain.promotions.services import SESSION_PROMO_KEY, CartPromo, cart_promo
from app.domain.tax.services import PROVINCES
from app.lib import metrics
from app.lib.exceptions import ApplicationError, ConflictError, FormError
from app.lib.forms import FormData
from app.lib.handler_context import HandlerContext
from app.lib.htmx import flash, redirect, render, render_form
from app.lib.ratelimit import enforce
from app.lib.runtime import Runtime
from app.server.auth import current_user

log = structlog.get_logger()

CHECKOUT_TOKEN_KEY = "checkout_token"
PAID_SEEN_KEY = "paid_orders_seen"


def provide_checkout_service(
    db_session: NamedDependency[AsyncSession], runtime: NamedDependency[Runtime]
) -> CheckoutService:
    return CheckoutService(db_session, runtime.stripe, hold_for=timedelta(minutes=runtime.settings.stock_hold_minutes))


async def _priced_summary(
    request: Request[Any, Any, Any], db: AsyncSession, cart: PricedCart, country: str, region: str
) -> dict[str, Any]:
    """The summary's figures: the cart's code re-checked now, and tax on the discounted line amounts."""
    promo: CartPromo | None = await cart_promo(db, request.session, cart, user=current_user(request))
    tax = None
    if country != "CA" or region in PROVINCES:
        line_discounts = promo.line_discounts(len(cart.purchasable)) if promo else None
        tax = tax_for(cart, country=country, region=region, line_discounts=line_discounts)
    return {"cart": cart, "tax": tax, "promo": promo, "discount": promo.discount if promo else 0}


def _checkout_token(request: Request[Any, Any, Any]) -> str:
    """One token per checkout form; a new one once it has been used to place an order."""
    token = request.session.get(CHECKOUT_TOKEN_KEY)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(24)
        request.session[CHECKOUT_TOKEN_KEY] = token
    return token


class CheckoutController(Controller):
    dependencies = {
        "checkout": Provide(provide_checkout_service, sync_to_thread=False),
        "orders": Provide(provide_order_service, sync_to_thread=False),
    }

    async def _form_page(
        self,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
        form: dict[str, str],
        *,
        error: ApplicationError | None = None,
        cart: PricedCart | None = None,
    ) -> Template:
        user = current_user(request)
        if cart is None:
            cart = await CartService(db_session, request.session).priced(user)
        country = form.get("country", "CA").upper()
        region = form.get("region", "").upper()
        summary = await _priced_summary(request, db_session, cart, country, region)
        return render_form(
            request,
            "checkout/start.html.j2",
            {
                **summary,
                "countries": COUNTRIES,
                "provinces": PROVINCES,
                "user": user,
                "checkout_token": _checkout_token(request),
            },
            fragment="checkout/_form.html.j2",
            form=form,
            error=error,
        )

    @get("/checkout", name="checkout:start")
    async def start(
        self, request: Request[Any, Any, Any], db_session: NamedDependency[AsyncSession]
    ) -> Template | Response[Any]:
        user = current_user(request)
        cart = await CartService(db_session, request.session).priced(user)
        if cart.is_empty:
            flash(request, "Your cart is empty: add something first.", "info")
            return redirect(request, request.app.route_reverse("cart:show"))
        form = {"country": "CA", "email": user.email if user else "", "name": user.name if user else ""}
        metrics.CHECKOUT_STEPS.labels("checkout_view").inc()
        return await self._form_page(request, db_session, form, cart=cart)

    @get("/checkout/summary", name="checkout:summary")
    async def summary(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        country: FromQuery[str] = "CA",
        region: FromQuery[str] = "",
    ) -> Template:
        """The order summary with the tax for the chosen country/province (swapped in as the form changes)."""
        cart = await CartService(db_session, request.session).priced(current_user(request))
        country, region = country.upper(), region.upper()
        summary = await _priced_summary(request, db_session, cart, country, region)
        return render(request, "checkout/_summary.html.j2", {**summary, "country": country})

    @post("/checkout", name="checkout:submit")
    async def submit(
        self,
        request: Request[Any, Any, Any],
        data: FormData,
        db_session: NamedDependency[AsyncSession],
        checkout: NamedDependency[CheckoutService],
        runtime: NamedDependency[Runtime],
    ) -> Template | Response[Any]:
        user = current_user(request)
        form = dict(data)
        try:
            billing: BillingDetails = parse_billing(form, account_email=user.email if user else None)
        except FormError as exc:
            return await self._form_page(request, db_session, form, error=exc)
        token = form.get("checkout_token", "")
        if not token or token != request.session.get(CHECKOUT_TOKEN_KEY):
            # A form from an older checkout (already placed): look it up rather than create a second order.
            previous = await checkout.order_for_token(token) if token else None
            if previous is not None:
                return redirect(request, request.app.route_reverse("checkout:pay", order_id=previous.id))
            expired = ConflictError("This form has expired; please check again.")
            return await self._form_page(request, db_session, form, error=expired)
        await enforce(request, "place_order_ip")
        cart = await CartService(db_session, request.session).priced(user)
        code = request.session.get(SESSION_PROMO_KEY)
        try:
            order, visitor_token = await checkout.place_order(
                cart=cart,
                billing=billing,
                user=user,
                checkout_token=token,
                promo_code=code if isinstance(code, str) else None,
            )
        except PromoCodeRejectedError as exc:
            # Never charge more than the summary showed without saying so: drop the code, show the new total.
            request.session.pop(SESSION_PROMO_KEY, None)
            return await self._form_page(request, db_session, form, error=exc)
        except CheckoutError as exc:
            return await self._form_page(request, db_session, form, error=exc)
        if checkout.stock_changed:  # units now held: the shop's "N left" went down
            await invalidate_catalog(runtime.redis)
        if visitor_token:
            remember_visitor_order(request.session, order, visitor_token)
            request.session.pop(CHECKOUT_TOKEN_KEY, None)
        metrics.CHECKOUT_STEPS.labels("order_placed").inc()
        return redirect(request, request.app.route_reverse("checkout:pay", order_id=order.id))

    @get("/orders/{order_id:uuid}/pay", name="checkout:pay")
    async def pay(
        self,
        request: Request[Any, Any, Any],
        order_id: FromPath[UUID],
        orders: NamedDependency[OrderService],
        checkout: NamedDependency[CheckoutService],
        runtime: NamedDependency[Runtime],
    ) -> Template | Response[Any]:
        order = await orders.for_visitor(order_id, user=current_user(request), session=request.session)
        if order.is_paid:
            return redirect(request, request.app.route_reverse("checkout:complete", order_id=order.id))
        if order.status == m.OrderStatus.CANCELED:
            return render(request, "checkout/canceled.html.j2", {"order": order}, status_code=409)
        # Card testing: each load asks Stripe for this order's PaymentIntent, and the first one creates it.
        await enforce(
            request, "pay_order", *(() if order.payment_intent_id else ("payment_intent_ip",)), order=order.id
        )
        context: dict[str, Any] = {"order": order, "error": "", "client_secret": ""}
        try:
            intent = await checkout.payment_intent(order)
        except stripe.StripeError as exc:
            log.warning("checkout.payment_intent_failed", order=str(order.id), error=str(exc))
            context["error"] = "We couldn't reach the payment processor. Please try again in a moment."
            return render(request, "checkout/pay.html.j2", context, status_code=503)
        status = intent.get("status")
        if status in {"succeeded", "processing"}:
            return redirect(request, request.app.route_reverse("checkout:complete", order_id=order.id))
        if status == "canceled":
            return render(request, "checkout/canceled.html.j2", {"order": order}, status_code=409)
        context.update(
            client_secret=intent["client_secret"],
            publishable_key=runtime.settings.stripe.publishable_key,
            stripe_js_url=runtime.settings.stripe.js_url,
            return_url=runtime.settings.base_url + request.app.route_reverse("checkout:complete", order_id=order.id),
            last_error=((intent.get("last_payment_error") or {}).get("message") or ""),
        )
        metrics.CHECKOUT_STEPS.labels("pay_page").inc()
        return render(request, "checkout/pay.html.j2", context)

    async def _settle(
        self, request: Request[Any, Any, Any], order: m.Order, db: AsyncSession, runtime: Runtime, queue: Queue
    ) -> dict[str, Any] | None:
        """Ask Stripe (never the query string) how the payment stands; fulfil now if it succeeded."""
        if order.fulfilled_at is not None or not order.payment_intent_id:
            return None
        try:
            intent = await CheckoutService(db, runtime.stripe).payment_intent(order)
        except stripe.StripeError:
            log.warning("checkout.return_lookup_failed", order=str(order.id))
            return None
        if intent.get("status") == "succeeded":
            await PaymentSync(
                HandlerContext(db, runtime.stripe, runtime.settings, queue, runtime.redis)
            ).apply_payment_intent(intent)
        return intent

    async def _confirmation_context(
        self, request: Request[Any, Any, Any], order: m.Order, orders: OrderService, runtime: Runtime
    ) -> dict[str, Any]:
        downloads = DownloadService(orders.db, runtime.settings)
        entitlements = await orders.entitlements(order)
        return {
            "order": order,
            "downloads": [
                {"entitlement": e, "url": downloads.signed_url(e) if e.is_usable else ""} for e in entitlements
            ],
        }

    @get("/orders/{order_id:uuid}/complete", name="checkout:complete")
    async def complete(
        self,
        request: Request[Any, Any, Any],
        order_id: FromPath[UUID],
        orders: NamedDependency[OrderService],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        queue: NamedDependency[Queue],
    ) -> Template | Response[Any]:
        user = current_user(request)
        order = await orders.for_visitor(order_id, user=user, session=request.session)
        intent = await self._settle(request, order, db_session, runtime, queue)
        order = await orders.for_visitor(order_id, user=user, session=request.session)
        if not order.is_paid and intent is not None:
            status = intent.get("status")
            if status in {"requires_payment_method", "requires_action", "requires_confirmation"}:
                # Declined or 3-D Secure not completed: back to the form, with Stripe's words, same order.
                if not (intent.get("last_payment_error") or {}).get("message"):
                    # (Stripe's own message, when there is one, is shown by the payment form itself.)
                    flash(request, "The payment was not completed. Please try again.", "error")
                return redirect(request, request.app.route_reverse("checkout:pay", order_id=order.id))
        if order.is_paid:
            await self._forget_cart_once(request, db_session, order)
            context = await self._confirmation_context(request, order, orders, runtime)
            return render(request, "checkout/complete.html.j2", context)
        return render(request, "checkout/complete.html.j2", {"order": order, "downloads": []})

    @get("/orders/{order_id:uuid}/status", name="checkout:status")
    async def status(
        self,
        request: Request[Any, Any, Any],
        order_id: FromPath[UUID],
        orders: NamedDependency[OrderService],
        db_session: NamedDependency[AsyncSession],
        runtime: NamedDependency[Runtime],
        queue: NamedDependency[Queue],
    ) -> Template:
        """Polled by the "processing" panel until the order is paid; then it answers with the confirmation."""
        user = current_user(request)
        order = await orders.for_visitor(order_id, user=user, session=request.session)
        await self._settle(request, order, db_session, runtime, queue)
        order = await orders.for_visitor(order_id, user=user, session=request.session)
        if order.is_paid:
            await self._forget_cart_once(request, db_session, order)
            context = await self._confirmation_context(request, order, orders, runtime)
            return render(request, "checkout/_confirmation.html.j2", context)
        return render(request, "checkout/_processing.html.j2", {"order": order})

    async def _forget_cart_once(self, request: Request[Any, Any, Any], db: AsyncSession, order: m.Order) -> None:
        seen: list[str] = list(request.session.get(PAID_SEEN_KEY) or [])
        if str(order.id) in seen:
            return
        # Only what was bought leaves the cart: anything added since placing the order stays.
        cart = CartService(db, request.session)
        for line in order.lines:
            if line.product_id is not None:
                await cart.remove(current_user(request), line.product_id)
        if order.promo_code and request.session.get(SESSION_PROMO_KEY) == order.promo_code:
            request.session.pop(SESSION_PROMO_KEY, None)  # used: a next order starts without it
        request.session[PAID_SEEN_KEY] = [*seen[-19:], str(order.id)]
