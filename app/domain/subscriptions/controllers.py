"""Subscribing in the browser (Payment Element on the first invoice) and managing the plan from the account."""

from __future__ import annotations

import secrets
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
from app.domain.credits.services import CreditService, credit_label
from app.domain.plans.services import PlanService, parse_interval, tier_for
from app.domain.plans.stripe_sync import PlanStripeSync
from app.domain.plans.tax_rates import TaxRateSync, membership_tax, valid_province
from app.domain.promotions.services import PlanQuote, PromoError, normalize_code, quote_plan
from app.domain.subscriptions.services import ProvinceError, SubscriptionError, SubscriptionService
from app.domain.tax.services import PROVINCES
from app.lib.exceptions import NotFoundError, RateLimitedError
from app.lib.forms import FormData
from app.lib.htmx import flash, redirect, render
from app.lib.ratelimit import enforce
from app.lib.runtime import Runtime
from app.lib.stripe_gateway import stripe_message
from app.server.auth import current_user, requires_login

log = structlog.get_logger()


def provide_subscription_service(
    db_session: NamedDependency[AsyncSession], runtime: NamedDependency[Runtime], queue: NamedDependency[Queue]
) -> SubscriptionService:
    return SubscriptionService(db_session, runtime.stripe, queue)


def _user(request: Request[Any, Any, Any]) -> m.User:
    user = current_user(request)
    assert user is not None  # requires_login
    return user


async def _plan(db: AsyncSession, slug: str) -> m.Plan:
    plan = await PlanService(db).by_slug(slug)
    if plan is None:
        raise NotFoundError("That plan doesn't exist or is no longer offered.")
    return plan


class SubscriptionController(Controller):
    guards = [requires_login]
    dependencies = {"subscriptions": Provide(provide_subscription_service, sync_to_thread=False)}

    @get("/subscribe/{slug:str}", name="subscriptions:start")
    async def start(
        self,
        request: Request[Any, Any, Any],
        slug: FromPath[str],
        db_session: NamedDependency[AsyncSession],
        subscriptions: NamedDependency[SubscriptionService],
        runtime: NamedDependency[Runtime],
        interval: FromQuery[str | None] = None,
        code: FromQuery[str] = "",
        province: FromQuery[str] = "",
    ) -> Template | Response[Any]:
        """The subscribe step; ``?code=`` checks a promo code for this plan and shows the discounted first invoice,
        ``?province=`` the tax for that billing province (else the member's stored one)."""
        user = _user(request)
        plan = await _plan(db_session, slug)
        if await subscriptions.live_for(user) is not None:
            flash(request, "You already have a plan: you can switch it here.", "info")
            return redirect(request, request.app.route_reverse("subscriptions:manage"))
        chosen = parse_interval(interval)
        price = plan.price_for(chosen, tier_for(user))
        if price is None:
            raise NotFoundError("That plan is not offered with this billing interval.")
        request.session["subscribe_attempt"] = secrets.token_urlsafe(12)
        return await self._start_page(
            request,
            db_session,
            runtime,
            plan,
            price,
            chosen,
            code=code,
            province=valid_province(province) or user.billing_province or "",
        )

    async def _start_page(
        self,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
        runtime: Runtime,
        plan: m.Plan,
        price: m.PlanPrice,
        chosen: m.PriceInterval,
        *,
        code: str,
        province: str,
        province_error: str = "",
    ) -> Template:
        user = _user(request)
        quote: PlanQuote | None = None
        promo_error = ""
        refused: RateLimitedError | None = None
        code = normalize_code(code)[:40]
        if code:
            try:
                # A code this session already applied is not a guess: choosing another province (which re-quotes
                # it for the totals) must not spend the promo limiter's budget.
                if request.session.get("subscribe_code_applied") != code:
                    await enforce(request, "promo_apply_ip", "promo_apply_session")
                quote = await quote_plan(db_session, code, plan, price, user=user)
                request.session["subscribe_code_applied"] = code
            except PromoError as exc:
                promo_error = exc.message
            except RateLimitedError as exc:
                # The page still renders (the plan can be bought without a code); the message sits by the field.
                promo_error, refused = exc.message, exc
        subtotal = quote.first_total if quote else price.amount
        response = render(
            request,
            "subscriptions/start.html.j2",
            {
                "plan": plan,
                "price": price,
                "interval": chosen,
                "attempt": request.session["subscribe_attempt"],
                "offers_elements": runtime.settings.offers_elements,
                "offers_hosted": runtime.settings.offers_hosted_checkout,
                "quote": quote,
                "promo_input": code,
                "promo_error": promo_error,
                "provinces": PROVINCES,
                "province": province,
                "province_error": province_error,
                "subtotal": subtotal,
                "tax": membership_tax(subtotal, province),
            },
            fragment="subscriptions/_offer.html.j2",
            status_code=422 if province_error else refused.status_code if refused else 200,
        )
        if refused is not None:
            response.headers.update(refused.headers)
        return response

    @post("/subscribe/{slug:str}", name="subscriptions:create")
    async def create(
        self,
        request: Request[Any, Any, Any],
        slug: FromPath[str],
        data: FormData,
        db_session: NamedDependency[AsyncSession],
        subscriptions: NamedDependency[SubscriptionService],
        runtime: NamedDependency[Runtime],
    ) -> Template | Response[Any]:
        user = _user(request)
        # Card testing through memberships: the subscription's first invoice is a PaymentIntent too.
        await enforce(request, "payment_intent_ip")
        plan = await _plan(db_session, slug)
        interval = parse_interval(data.get("interval"))
        try:
            await PlanStripeSync(db_session, runtime.stripe).ensure(plan)
            price = plan.price_for(interval, tier_for(user))
            if price is None:
                raise NotFoundError("That plan is not offered with this billing interval.")
            attempt = data.get("attempt") or secrets.token_urlsafe(12)
            quote: PlanQuote | None = None
            if code := normalize_code(data.get("promo_code"))[:40]:
                # Checked again here (never trusted from the form), before Stripe is asked.
                quote = await quote_plan(db_session, code, plan, price, user=user)
            promo = quote.promo if quote else None
            province = data.get("province", "")
            if valid_province(province) is None:
                raise ProvinceError
            await TaxRateSync(db_session, runtime.stripe).ensure()
            settings = runtime.settings
            hosted = settings.offers_hosted_checkout and (data.get("via") == "hosted" or not settings.offers_elements)
            if hosted:
                url = await subscriptions.hosted_checkout_url(
                    user,
                    plan,
                    price,
                    attempt=attempt,
                    success_url=settings.base_url
                    + request.app.route_reverse("subscriptions:checkout_return")
                    + "?session_id={CHECKOUT_SESSION_ID}",
                    cancel_url=f"{settings.base_url}{request.app.route_reverse('plans:pricing')}?interval={interval}",
                    province=province,
                    promo=promo,
                )
                return redirect(request, url)
            sub = await subscriptions.subscribe(user, plan, price, attempt=attempt, province=province, promo=promo)
        except ProvinceError as exc:
            # The form again, with the error by the province field (and the code the member had applied).
            assert price is not None
            request.session["subscribe_attempt"] = data.get("attempt") or secrets.token_urlsafe(12)
            return await self._start_page(
                request,
                db_session,
                runtime,
                plan,
                price,
                interval,
                code=normalize_code(data.get("promo_code"))[:40],
                province="",
                province_error=exc.message,
            )
        except PromoError as exc:
            flash(request, exc.message, "error")
            return redirect(
                request, request.app.route_reverse("subscriptions:start", slug=slug) + f"?interval={interval}"
            )
        except stripe.InvalidRequestError as exc:
            if exc.param and "discounts" in exc.param:
                # Stripe's own check of the code (its redemption limit, first-time rule) refused it.
                flash(request, f"That promo code can't be used: {stripe_message(exc)}", "error")
                return redirect(
                    request, request.app.route_reverse("subscriptions:start", slug=slug) + f"?interval={interval}"
                )
            log.warning("subscribe.stripe_failed", error=str(exc))
            flash(request, "We couldn't reach the payment processor. Please try again in a moment.", "error")
            return redirect(request, request.app.route_reverse("plans:pricing"))
        except SubscriptionError as exc:
            flash(request, exc.message, "error")
            return redirect(request, request.app.route_reverse("subscriptions:manage"))
        except stripe.StripeError as exc:
            log.warning("subscribe.stripe_failed", error=str(exc))
            flash(request, "We couldn't reach the payment processor. Please try again in a moment.", "error")
            return redirect(request, request.app.route_reverse("plans:pricing"))
        if sub.status in {m.SubscriptionStatus.ACTIVE, m.SubscriptionStatus.TRIALING}:
            flash(request, f"Welcome to {plan.name}!", "success")
            return redirect(request, request.app.route_reverse("subscriptions:manage"))
        return redirect(request, request.app.route_reverse("subscriptions:pay", subscription_id=sub.id))

    @get("/subscriptions/checkout/return", name="subscriptions:checkout_return")
    async def checkout_return(
        self,
        request: Request[Any, Any, Any],
        subscriptions: NamedDependency[SubscriptionService],
        session_id: FromQuery[str] = "",
    ) -> Response[Any]:
        """Back from Stripe Checkout. The session is re-read from Stripe and must be this customer's."""
        try:
            sub = await subscriptions.finish_hosted_checkout(_user(request), session_id)
        except stripe.InvalidRequestError:
            raise NotFoundError("We couldn't find that checkout.") from None
        if sub is not None and sub.status in {m.SubscriptionStatus.ACTIVE, m.SubscriptionStatus.TRIALING}:
            flash(request, f"Welcome to {sub.plan.name if sub.plan else 'your plan'}!", "success")
            return redirect(request, request.app.route_reverse("subscriptions:manage"))
        if sub is not None:
            return redirect(request, request.app.route_reverse("subscriptions:complete", subscription_id=sub.id))
        flash(request, "The checkout was not completed, so nothing was charged.", "info")
        return redirect(request, request.app.route_reverse("plans:pricing"))

    @get("/subscriptions/{subscription_id:uuid}/pay", name="subscriptions:pay")
    async def pay(
        self,
        request: Request[Any, Any, Any],
        subscription_id: FromPath[UUID],
        subscriptions: NamedDependency[SubscriptionService],
        runtime: NamedDependency[Runtime],
    ) -> Template | Response[Any]:
        sub = await subscriptions.owned(_user(request), subscription_id)
        secret, invoice = await subscriptions.open_invoice(sub)
        if secret is None:
            return redirect(request, request.app.route_reverse("subscriptions:complete", subscription_id=sub.id))
        return render(
            request,
            "subscriptions/pay.html.j2",
            {
                "sub": sub,
                # What Stripe will charge now, its discount included (Stripe computed it, not us).
                "amount_due": int(invoice.get("amount_due") or 0),
                "invoice_currency": str(invoice.get("currency") or "cad").upper(),
                "invoice_discount": sum(int(d.get("amount") or 0) for d in invoice.get("total_discount_amounts") or []),
                "invoice_tax": sum(int(t.get("amount") or 0) for t in invoice.get("total_taxes") or []),
                "client_secret": secret,
                "publishable_key": runtime.settings.stripe.publishable_key,
                "stripe_js_url": runtime.settings.stripe.js_url,
                "return_url": runtime.settings.base_url
                + request.app.route_reverse("subscriptions:complete", subscription_id=sub.id),
            },
        )

    @get("/subscriptions/{subscription_id:uuid}/complete", name="subscriptions:complete")
    async def complete(
        self,
        request: Request[Any, Any, Any],
        subscription_id: FromPath[UUID],
        subscriptions: NamedDependency[SubscriptionService],
    ) -> Template | Response[Any]:
        """Asks Stripe how the first payment went (never the query string); polls while it is processing."""
        sub = await subscriptions.refresh(await subscriptions.owned(_user(request), subscription_id))
        if sub.status in {m.SubscriptionStatus.ACTIVE, m.SubscriptionStatus.TRIALING}:
            if request.headers.get("hx-request") == "true":
                return Response(content=b"", headers={"HX-Redirect": request.app.route_reverse("subscriptions:manage")})
            flash(request, f"Welcome to {sub.plan.name if sub.plan else 'your plan'}!", "success")
            return redirect(request, request.app.route_reverse("subscriptions:manage"))
        if sub.status == m.SubscriptionStatus.INCOMPLETE:
            secret = await subscriptions.payment_secret(sub)
            if secret is not None and request.headers.get("hx-request") != "true":
                return redirect(request, request.app.route_reverse("subscriptions:pay", subscription_id=sub.id))
        if sub.status == m.SubscriptionStatus.INCOMPLETE_EXPIRED:
            flash(request, "That sign-up expired before it was paid. Please choose a plan again.", "error")
            return redirect(request, request.app.route_reverse("plans:pricing"))
        return render(
            request, "subscriptions/processing.html.j2", {"sub": sub}, fragment="subscriptions/_processing.html.j2"
        )

    # --- the account's subscription page ---------------------------------------------------------------------

    @get("/account/subscription", name="subscriptions:manage")
    async def manage(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        subscriptions: NamedDependency[SubscriptionService],
    ) -> Template:
        return await self._manage_page(request, db_session, subscriptions)

    @post("/account/subscription/province", name="subscriptions:province")
    async def change_province(
        self,
        request: Request[Any, Any, Any],
        data: FormData,
        db_session: NamedDependency[AsyncSession],
        subscriptions: NamedDependency[SubscriptionService],
        runtime: NamedDependency[Runtime],
    ) -> Template | Response[Any]:
        """A new billing province: the tax of the next invoice follows it (the current period is not re-billed)."""
        province = valid_province(data.get("province"))
        try:
            if province is None:
                raise ProvinceError
            await TaxRateSync(db_session, runtime.stripe).ensure()
            await subscriptions.change_province(_user(request), province)
        except ProvinceError as exc:
            return await self._manage_page(
                request, db_session, subscriptions, province_error=exc.message, status_code=422
            )
        flash(request, f"Billing province saved: {PROVINCES[province]}. Your next invoice's tax follows it.", "success")
        return redirect(request, request.app.route_reverse("subscriptions:manage"))

    async def _manage_page(
        self,
        request: Request[Any, Any, Any],
        db_session: AsyncSession,
        subscriptions: SubscriptionService,
        *,
        province_error: str = "",
        status_code: int = 200,
    ) -> Template:
        user = _user(request)
        sub = await subscriptions.live_for(user) or await subscriptions.latest_for(user)
        plans = await PlanService(db_session).active_plans()
        tier = tier_for(user)
        choices = [
            (plan, price)
            for plan in plans
            for interval in (m.PriceInterval.MONTH.value, m.PriceInterval.YEAR.value)
            if (price := plan.price_for(interval, tier)) is not None
            and (sub is None or price.stripe_price_id != sub.stripe_price_id)
        ]
        return render(
            request,
            "subscriptions/manage.html.j2",
            {
                "sub": sub,
                "choices": choices,
                "invoices": await subscriptions.invoices(user),
                "credits_left": await CreditService(db_session).left_this_period(
                    user.id, sub.plan if sub and sub.is_live else None
                ),
                "credit_label": credit_label,
                "provinces": PROVINCES,
                "province": user.billing_province or "",
                "province_error": province_error,
            },
            status_code=status_code,
        )

    async def _live(self, request: Request[Any, Any, Any], subscriptions: SubscriptionService) -> m.Subscription:
        sub = await subscriptions.live_for(_user(request))
        if sub is None:
            raise NotFoundError("You don't have an active plan.")
        return sub

    async def _recoverable(self, request: Request[Any, Any, Any], subscriptions: SubscriptionService) -> m.Subscription:
        """A live plan, or one paused after a trial without a card: both take a new card."""
        sub = await subscriptions.recoverable_for(_user(request))
        if sub is None:
            raise NotFoundError("You don't have an active plan.")
        return sub

    @post("/account/subscription/cancel", name="subscriptions:cancel")
    async def cancel(
        self, request: Request[Any, Any, Any], subscriptions: NamedDependency[SubscriptionService]
    ) -> Response[Any]:
        sub = await subscriptions.cancel_at_period_end(await self._live(request, subscriptions))
        when = sub.current_period_end.strftime("%B %-d, %Y") if sub.current_period_end else "the end of the period"
        flash(request, f"Your plan will end on {when}. You can resume it until then.", "success")
        return redirect(request, request.app.route_reverse("subscriptions:manage"))

    @post("/account/subscription/resume", name="subscriptions:resume")
    async def resume(
        self, request: Request[Any, Any, Any], subscriptions: NamedDependency[SubscriptionService]
    ) -> Response[Any]:
        await subscriptions.resume(await self._live(request, subscriptions))
        flash(request, "Welcome back: your plan will renew as usual.", "success")
        return redirect(request, request.app.route_reverse("subscriptions:manage"))

    @post("/account/subscription/cancel-now", name="subscriptions:cancel_now")
    async def cancel_now(
        self, request: Request[Any, Any, Any], subscriptions: NamedDependency[SubscriptionService]
    ) -> Response[Any]:
        sub = await self._live(request, subscriptions)
        if sub.plan is None or not sub.plan.allow_cancel_now:
            flash(request, "This plan ends at the end of a billing period: cancel at period end instead.", "error")
            return redirect(request, request.app.route_reverse("subscriptions:manage"))
        await subscriptions.cancel_now(sub)
        flash(request, "Your plan has ended. We're sorry to see you go.", "success")
        return redirect(request, request.app.route_reverse("subscriptions:manage"))

    async def _price(self, db: AsyncSession, price_id: str | None, user: m.User) -> m.PlanPrice:
        """A price this customer may switch to: active, of an active plan, and of the customer's own tier."""
        try:
            price = await db.get(m.PlanPrice, UUID(str(price_id)))
        except ValueError:
            price = None
        plan = await PlanService(db).by_id(price.plan_id) if price is not None else None
        if price is None or plan is None or not plan.is_active:
            raise NotFoundError("That plan is not offered any more.")
        offered = plan.price_for(price.interval, tier_for(user))
        if offered is None or offered.id != price.id:
            raise NotFoundError("That plan is not offered any more.")
        return price

    @get("/account/subscription/preview", name="subscriptions:preview")
    async def preview(
        self,
        request: Request[Any, Any, Any],
        db_session: NamedDependency[AsyncSession],
        subscriptions: NamedDependency[SubscriptionService],
        runtime: NamedDependency[Runtime],
        price_id: FromQuery[str] = "",
    ) -> Template:
        """The prorated cost of switching, from Stripe's invoice preview, with a button to confirm."""
        sub = await self._live(request, subscriptions)
        price = await self._price(db_session, price_id, _user(request))
        plan = await _plan_by_id(db_session, price.plan_id)
        await PlanStripeSync(db_session, runtime.stripe).ensure(plan)
        await db_session.refresh(price)
        try:
            preview = await subscriptions.preview_change(sub, price)
        except SubscriptionError as exc:
            return render(request, "subscriptions/_preview.html.j2", {"error": exc.message}, status_code=409)
        return render(
            request,
            "subscriptions/_preview.html.j2",
            {"preview": preview, "plan": plan, "price": price, "sub": sub, "error": ""},
        )

    @post("/account/subscription/switch", name="subscriptions:switch")
    async def switch(
        self,
        request: Request[Any, Any, Any],
        data: FormData,
        db_session: NamedDependency[AsyncSession],
        subscriptions: NamedDependency[SubscriptionService],
    ) -> Response[Any]:
        sub = await self._live(request, subscriptions)
        price = await self._price(db_session, data.get("price_id"), _user(request))
        try:
            sub = await subscriptions.change_price(sub, price)
        except SubscriptionError as exc:
            flash(request, exc.message, "error")
        except stripe.CardError as exc:
            flash(request, exc.user_message or "Your card was declined.", "error")
        else:
            plan = await _plan_by_id(db_session, price.plan_id)
            flash(
                request,
                f"You're now on {plan.name}, billed {'yearly' if price.interval == 'year' else 'monthly'}.",
                "success",
            )
        return redirect(request, request.app.route_reverse("subscriptions:manage"))

    @post("/account/subscription/portal", name="subscriptions:portal")
    async def portal(
        self,
        request: Request[Any, Any, Any],
        subscriptions: NamedDependency[SubscriptionService],
        runtime: NamedDependency[Runtime],
    ) -> Response[Any]:
        url = await subscriptions.portal_url(
            _user(request), runtime.settings.base_url + request.app.route_reverse("subscriptions:manage")
        )
        return redirect(request, url)

    @get("/account/subscription/card", name="subscriptions:card")
    async def card(
        self,
        request: Request[Any, Any, Any],
        subscriptions: NamedDependency[SubscriptionService],
        runtime: NamedDependency[Runtime],
    ) -> Template:
        sub = await self._recoverable(request, subscriptions)
        return render(
            request,
            "subscriptions/card.html.j2",
            {
                "sub": sub,
                "client_secret": await subscriptions.setup_secret(_user(request)),
                "publishable_key": runtime.settings.stripe.publishable_key,
                "stripe_js_url": runtime.settings.stripe.js_url,
                "return_url": runtime.settings.base_url + request.app.route_reverse("subscriptions:card_saved"),
            },
        )

    @get("/account/subscription/card/saved", name="subscriptions:card_saved")
    async def card_saved(
        self,
        request: Request[Any, Any, Any],
        subscriptions: NamedDependency[SubscriptionService],
        setup_intent: FromQuery[str] = "",
    ) -> Response[Any]:
        """Stripe.js returns here after saving a card; the SetupIntent is checked against this customer."""
        sub = await self._recoverable(request, subscriptions)
        was_paused = sub.status == m.SubscriptionStatus.PAUSED
        try:
            sub = await subscriptions.use_new_card(sub, setup_intent)
        except SubscriptionError as exc:
            flash(request, exc.message, "error")
            return redirect(request, request.app.route_reverse("subscriptions:card"))
        except stripe.InvalidRequestError:
            raise NotFoundError("We couldn't find that card update.") from None
        message = "Your card is updated."
        if sub.status == m.SubscriptionStatus.ACTIVE and was_paused:
            message += " Your membership is active again."
        elif sub.status == m.SubscriptionStatus.ACTIVE:
            message += " The payment went through and your plan is active."
        flash(request, message, "success")
        return redirect(request, request.app.route_reverse("subscriptions:manage"))


async def _plan_by_id(db: AsyncSession, plan_id: UUID) -> m.Plan:
    plan = await PlanService(db).by_id(plan_id)
    if plan is None:
        raise NotFoundError("That plan doesn't exist.")
    return plan
