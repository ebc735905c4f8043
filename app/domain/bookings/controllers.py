"""Booking pages: availability by day (polled by HTMX), booking with credits or by card, "Your bookings", credits."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.domain.bookings.card_payments import HOLD_FOR
from app.domain.bookings.services import (
    BookingError,
    BookingService,
    MembershipRequiredError,
    cancel_deadline,
    slot_label,
)
from app.domain.checkout.services import COUNTRIES, parse_billing
from app.domain.credits.services import CreditService, NotEnoughCreditsError, credit_label
from app.domain.orders.bookings import PAID_WITH_CARD
from app.domain.tax.services import PROVINCES
from app.lib.exceptions import FormError
from app.lib.forms import FormData
from app.lib.htmx import flash, redirect, render, wants_fragment
from app.lib.localtime import local_day, local_today
from app.lib.ratelimit import enforce
from app.lib.runtime import Runtime
from app.server.auth import current_user, requires_login

REFRESH_SECONDS = 15


def provide_booking_service(
    db_session: NamedDependency[AsyncSession], runtime: NamedDependency[Runtime]
) -> BookingService:
    return BookingService(db_session, runtime.stripe)


def provide_credit_service(db_session: NamedDependency[AsyncSession]) -> CreditService:
    return CreditService(db_session)


def _signed_in(request: Request[Any, Any, Any]) -> m.User:
    user = current_user(request)
    assert user is not None  # guaranteed by requires_login
    return user


def _parse_day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        return local_today()


def _index_url(request: Request[Any, Any, Any], day: date) -> str:
    return f"{request.app.route_reverse('bookings:index')}?{urlencode({'day': day.isoformat()})}"


class BookingController(Controller):
    guards = [requires_login]
    dependencies = {
        "bookings": Provide(provide_booking_service, sync_to_thread=False),
        "credits": Provide(provide_credit_service, sync_to_thread=False),
    }

    async def _slots_page(
        self,
        request: Request[Any, Any, Any],
        bookings: BookingService,
        day: date,
        *,
        message: str = "",
        category: str = "success",
        status_code: int = 200,
    ) -> Template:
        availability = await bookings.availability(_signed_in(request), day)
        context = {
            "availability": availability,
            "day": day,
            "today": local_today(),
            "prev_day": day - timedelta(days=1),
            "next_day": day + timedelta(days=1),
            "refresh_url": _index_url(request, day),
            "refresh_seconds": REFRESH_SECONDS,
            "pricing_url": request.app.route_reverse("plans:pricing"),
            "plan_url": request.app.route_reverse("subscriptions:manage"),
            "message": message,
            "category": category,
            "credit_label": credit_label,
        }
        return render(
            request, "bookings/index.html.j2", context, fragment="bookings/_slots.html.j2", status_code=status_code
        )

    @get("/bookings", name="bookings:index")
    async def index(
        self, request: Request[Any, Any, Any], bookings: NamedDependency[BookingService], day: FromQuery[str] = ""
    ) -> Template:
        """Slots of every resource for one day; HTMX polls the same URL for the slots fragment."""
        return await self._slots_page(request, bookings, _parse_day(day))

    @post("/bookings/slots/{slot_id:uuid}/book", name="bookings:book")
    async def book(
        self, request: Request[Any, Any, Any], slot_id: FromPath[UUID], bookings: NamedDependency[BookingService]
    ) -> Template | Response[Any]:
        slot = await bookings.slot(slot_id)
        day, label = local_day(slot.starts_at), slot_label(slot)  # read now: a refusal rolls the session back
        try:
            await bookings.book_with_credits(_signed_in(request), slot_id)
        except (BookingError, MembershipRequiredError, NotEnoughCreditsError) as exc:
            if wants_fragment(request):
                return await self._slots_page(
                    request, bookings, day, message=exc.message, category="error", status_code=exc.status_code
                )
            flash(request, exc.message, "error")
            return redirect(request, _index_url(request, day))
        message = f"Booked: {label}."
        if wants_fragment(request):
            return await self._slots_page(request, bookings, day, message=message)
        flash(request, message, "success")
        return redirect(request, _index_url(request, day))

    def _card_form(
        self,
        request: Request[Any, Any, Any],
        slot: m.BookingSlot,
        form: dict[str, str],
        errors: dict[str, str],
        *,
        message: str = "",
        status_code: int = 200,
    ) -> Template:
        context = {
            "slot": slot,
            "resource": slot.resource,
            "form": form,
            "errors": errors,
            "message": message,
            "countries": COUNTRIES,
            "provinces": PROVINCES,
            "user": _signed_in(request),
            "hold_minutes": int(HOLD_FOR.total_seconds() // 60),
            "back_url": _index_url(request, local_day(slot.starts_at)),
        }
        return render(
            request, "bookings/card.html.j2", context, fragment="bookings/_card_form.html.j2", status_code=status_code
        )

    @get("/bookings/slots/{slot_id:uuid}/card", name="bookings:card")
    async def card_form(
        self, request: Request[Any, Any, Any], slot_id: FromPath[UUID], bookings: NamedDependency[BookingService]
    ) -> Template:
        """The billing details for paying a slot by card (the tax depends on the province); members or not."""
        user = _signed_in(request)
        slot = await bookings.slot(slot_id)
        return self._card_form(request, slot, {"country": "CA", "name": user.name}, {})

    @post("/bookings/slots/{slot_id:uuid}/card", name="bookings:hold")
    async def hold(
        self,
        request: Request[Any, Any, Any],
        slot_id: FromPath[UUID],
        data: FormData,
        bookings: NamedDependency[BookingService],
    ) -> Template | Response[Any]:
        """Hold the seat with a pending order, then on to the existing payment page."""
        user = _signed_in(request)
        slot = await bookings.slot(slot_id)
        day, form = local_day(slot.starts_at), dict(data)
        try:
            billing = parse_billing(form, account_email=user.email)
        except FormError as exc:
            return self._card_form(request, slot, form, exc.errors, status_code=422)
        await enforce(request, "place_order_ip")
        try:
            booking = await bookings.hold_for_card(user, slot_id, billing)
        except BookingError as exc:
            flash(request, exc.message, "error")
            return redirect(request, _index_url(request, day))
        assert booking.order_id is not None
        return redirect(request, request.app.route_reverse("checkout:pay", order_id=booking.order_id))

    @get("/account/bookings", name="bookings:mine")
    async def mine(self, request: Request[Any, Any, Any], bookings: NamedDependency[BookingService]) -> Template:
        return await self._mine_page(request, bookings)

    async def _mine_page(
        self,
        request: Request[Any, Any, Any],
        bookings: BookingService,
        *,
        message: str = "",
        category: str = "success",
        status_code: int = 200,
    ) -> Template:
        now = datetime.now(UTC)
        upcoming, past = await bookings.for_user(_signed_in(request), now=now)
        context = {
            "upcoming": upcoming,
            "past": past,
            "now": now,
            "cancel_deadline": cancel_deadline,
            "message": message,
            "category": category,
        }
        return render(
            request, "bookings/mine.html.j2", context, fragment="bookings/_mine.html.j2", status_code=status_code
        )

    @post("/account/bookings/{booking_id:uuid}/cancel", name="bookings:cancel")
    async def cancel(
        self, request: Request[Any, Any, Any], booking_id: FromPath[UUID], bookings: NamedDependency[BookingService]
    ) -> Template | Response[Any]:
        try:
            booking = await bookings.cancel(_signed_in(request), booking_id)
        except BookingError as exc:
            if wants_fragment(request):
                return await self._mine_page(
                    request, bookings, message=exc.message, category="error", status_code=exc.status_code
                )
            flash(request, exc.message, "error")
            return redirect(request, request.app.route_reverse("bookings:mine"))
        message = f"Cancelled: {slot_label(booking.slot)}."
        if booking.paid_with == "credits" and booking.credits_spent:
            message += " Your credits are back in your account."
        elif booking.paid_with == PAID_WITH_CARD and booking.details.get("refund"):
            message += " Your card payment is being refunded; we'll email you when it's done."
        if wants_fragment(request):
            return await self._mine_page(request, bookings, message=message)
        flash(request, message, "success")
        return redirect(request, request.app.route_reverse("bookings:mine"))

    @get("/account/credits", name="credits:mine")
    async def credits_page(self, request: Request[Any, Any, Any], credits: NamedDependency[CreditService]) -> Template:
        user = _signed_in(request)
        context = {
            "balances": await credits.balances(user.id),
            "entries": await credits.entries(user.id, limit=100),
            "credit_label": credit_label,
        }
        return render(request, "bookings/credits.html.j2", context)
