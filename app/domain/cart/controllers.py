"""The cart page, the mini-cart drawer, and the forms that change the cart (with or without HTMX)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID

from litestar import Controller, Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath
from litestar.response import Template
from sqlalchemy.ext.asyncio import AsyncSession

from app.domain.cart.services import MAX_QUANTITY, CartChange, CartService, PricedCart, QuantityError
from app.domain.promotions.services import SESSION_PROMO_KEY, CartPromo, PromoError, cart_promo, quote_cart
from app.lib import metrics
from app.lib.exceptions import ApplicationError, NotFoundError, RateLimitedError
from app.lib.forms import FormData
from app.lib.htmx import flash, redirect, render, wants_fragment
from app.lib.ratelimit import enforce
from app.lib.urls import same_site_path
from app.server.auth import current_user

PAGE = "cart/show.html.j2"
# The fragment an HTMX change answers with is its route's: the cart page's forms post to /cart/..., the drawer's to
# /cart/drawer/...; the add buttons (which swap nothing) get only the out-of-band badge and status message.
CART_VIEW = "cart/_cart.html.j2"
DRAWER_VIEW = "cart/_drawer.html.j2"
# Fired after a change made outside the cart page (an add button, the drawer), so the page's cart can refresh.
CHANGED_EVENT = "cart-changed"

_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,6}")


def provide_cart_service(db_session: NamedDependency[AsyncSession], request: Request[Any, Any, Any]) -> CartService:
    return CartService(db_session, request.session)


def parse_product_id(raw: str | None) -> UUID:
    try:
        return UUID((raw or "").strip())
    except ValueError:
        raise NotFoundError("We couldn't find that product.") from None


def parse_quantity(raw: str | None, *, default: int | None = None) -> int:
    text = (raw or "").strip()
    if not text and default is not None:
        return default
    if not _WHOLE_NUMBER.fullmatch(text):
        raise QuantityError(f"Enter the quantity as a whole number from 1 to {MAX_QUANTITY}.")
    return int(text)


def back_url(request: Request[Any, Any, Any]) -> str:
    """Where a plain form post returns to: the page it came from when that is one of ours, else the cart."""
    fallback = request.app.route_reverse("cart:show")
    parts = urlsplit(request.headers.get("referer", ""))
    if parts.netloc != request.url.netloc or parts.path.startswith(("/cart/items", "/cart/promo")):
        return fallback
    return same_site_path(parts.path + (f"?{parts.query}" if parts.query else ""), fallback)


def _context(
    cart: PricedCart,
    message: str = "",
    *,
    is_error: bool = False,
    view: str | None = None,
    promo: CartPromo | None = None,
    promo_error: str = "",
) -> dict[str, Any]:
    return {
        "cart": cart,
        "message": message,
        "is_error": is_error,
        "view": view,
        "promo": promo,
        "promo_error": promo_error,
    }


async def _promo(request: Request[Any, Any, Any], cart: CartService, priced: PricedCart) -> CartPromo | None:
    """The stored code re-checked against the cart as it now is (never trusted from an earlier check)."""
    return await cart_promo(cart.db, request.session, priced, user=current_user(request))


class CartController(Controller):
    dependencies = {"cart": Provide(provide_cart_service, sync_to_thread=False)}

    @get("/cart", name="cart:show")
    async def show(self, request: Request[Any, Any, Any], cart: NamedDependency[CartService]) -> Template:
        priced = await cart.priced(current_user(request))
        promo = await _promo(request, cart, priced)
        return render(request, PAGE, _context(priced, promo=promo), fragment="cart/_cart.html.j2")

    @get("/cart/drawer", name="cart:drawer")
    async def drawer(self, request: Request[Any, Any, Any], cart: NamedDependency[CartService]) -> Template:
        """The mini-cart's contents for HTMX; a plain visit (no JavaScript) gets the cart page."""
        priced = await cart.priced(current_user(request))
        promo = await _promo(request, cart, priced)
        return render(request, PAGE, _context(priced, promo=promo), fragment="cart/_drawer.html.j2")

    @post("/cart/items", name="cart:add")
    async def add(
        self, request: Request[Any, Any, Any], data: FormData, cart: NamedDependency[CartService]
    ) -> Response[Any]:
        user = current_user(request)
        response = await self._change(
            request,
            cart,
            lambda: cart.add(
                user, parse_product_id(data.get("product_id")), parse_quantity(data.get("quantity"), default=1)
            ),
            view=None,
        )
        if (response.status_code or 200) < 400:
            metrics.CHECKOUT_STEPS.labels("cart_add").inc()
        return response

    @post("/cart/items/{product_id:str}", name="cart:update")
    async def update(
        self,
        request: Request[Any, Any, Any],
        product_id: FromPath[str],
        data: FormData,
        cart: NamedDependency[CartService],
    ) -> Response[Any]:
        user = current_user(request)
        return await self._change(
            request,
            cart,
            lambda: cart.set_quantity(user, parse_product_id(product_id), parse_quantity(data.get("quantity"))),
            view=CART_VIEW,
        )

    @post("/cart/items/{product_id:str}/remove", name="cart:remove")
    async def remove(
        self, request: Request[Any, Any, Any], product_id: FromPath[str], cart: NamedDependency[CartService]
    ) -> Response[Any]:
        user = current_user(request)
        return await self._change(
            request, cart, lambda: cart.remove(user, parse_product_id(product_id)), view=CART_VIEW
        )

    @post("/cart/drawer/items/{product_id:str}/remove", name="cart:drawer_remove")
    async def drawer_remove(
        self, request: Request[Any, Any, Any], product_id: FromPath[str], cart: NamedDependency[CartService]
    ) -> Response[Any]:
        user = current_user(request)
        return await self._change(
            request, cart, lambda: cart.remove(user, parse_product_id(product_id)), view=DRAWER_VIEW
        )

    async def _change(
        self,
        request: Request[Any, Any, Any],
        cart: CartService,
        change: Callable[[], Awaitable[CartChange]],
        *,
        view: str | None,
    ) -> Response[Any]:
        """HTMX: the route's fragment plus the badge and status out of band. Plain posts: flash and 303 back."""
        try:
            result = await change()
        except ApplicationError as exc:
            # Shown where the shopper is looking, with the cart as it really is; htmx swaps 4xx (base.html.j2).
            priced = await cart.priced(current_user(request))
            promo = await _promo(request, cart, priced)
            context = _context(priced, exc.message, is_error=True, view=view, promo=promo)
            return render(request, PAGE, context, fragment="cart/_changed.html.j2", status_code=exc.status_code)
        if not wants_fragment(request):
            flash(request, result.message, "success")
            return redirect(request, back_url(request))
        promo = await _promo(request, cart, result.cart)
        return render(
            request,
            PAGE,
            _context(result.cart, result.message, view=view, promo=promo),
            fragment="cart/_changed.html.j2",
            trigger=None if view == CART_VIEW else CHANGED_EVENT,
        )

    @post("/cart/promo", name="cart:promo_apply")
    async def apply_promo(
        self, request: Request[Any, Any, Any], data: FormData, cart: NamedDependency[CartService]
    ) -> Response[Any]:
        return await self._apply_promo(request, data, cart, view=CART_VIEW)

    @post("/cart/drawer/promo", name="cart:drawer_promo_apply")
    async def drawer_apply_promo(
        self, request: Request[Any, Any, Any], data: FormData, cart: NamedDependency[CartService]
    ) -> Response[Any]:
        return await self._apply_promo(request, data, cart, view=DRAWER_VIEW)

    async def _apply_promo(
        self, request: Request[Any, Any, Any], data: dict[str, str], cart: CartService, *, view: str
    ) -> Response[Any]:
        """Check the code against the cart now; keep it only if it applies, else say why, next to the field."""
        user = current_user(request)
        priced = await cart.priced(user)
        code = "".join(data.get("code", "").split()).upper()[:40]
        try:
            if not code:
                raise PromoError("Enter a promo code.")
            await enforce(request, "promo_apply_ip", "promo_apply_session")
            quote = await quote_cart(cart.db, code, priced, user=user)
        except RateLimitedError as exc:
            # A plain post gets the 429 page; with HTMX the message shows next to the field, like any other refusal.
            if not wants_fragment(request):
                raise
            response = await self._promo_refused(request, cart, priced, view, code, exc)
            response.headers.update(exc.headers)
            return response
        except PromoError as exc:
            if not wants_fragment(request):
                flash(request, exc.message, "error")
                return redirect(request, back_url(request))
            return await self._promo_refused(request, cart, priced, view, code, exc)
        request.session[SESSION_PROMO_KEY] = quote.code
        message = f"Code {quote.code} applied: {quote.summary}."
        if not wants_fragment(request):
            flash(request, message, "success")
            return redirect(request, back_url(request))
        promo = CartPromo(code=quote.code, quote=quote)
        return render(
            request,
            PAGE,
            _context(priced, message, view=view, promo=promo),
            fragment="cart/_changed.html.j2",
            trigger=None if view == CART_VIEW else CHANGED_EVENT,
        )

    async def _promo_refused(
        self,
        request: Request[Any, Any, Any],
        cart: CartService,
        priced: PricedCart,
        view: str,
        code: str,
        exc: ApplicationError,
    ) -> Template:
        promo = await _promo(request, cart, priced)
        context = _context(priced, view=view, promo=promo, promo_error=exc.message)
        context["promo_input"] = code
        return render(request, PAGE, context, fragment="cart/_changed.html.j2", status_code=exc.status_code)

    @post("/cart/promo/remove", name="cart:promo_remove")
    async def remove_promo(self, request: Request[Any, Any, Any], cart: NamedDependency[CartService]) -> Response[Any]:
        return await self._remove_promo(request, cart, view=CART_VIEW)

    @post("/cart/drawer/promo/remove", name="cart:drawer_promo_remove")
    async def drawer_remove_promo(
        self, request: Request[Any, Any, Any], cart: NamedDependency[CartService]
    ) -> Response[Any]:
        return await self._remove_promo(request, cart, view=DRAWER_VIEW)

    async def _remove_promo(self, request: Request[Any, Any, Any], cart: CartService, *, view: str) -> Response[Any]:
        request.session.pop(SESSION_PROMO_KEY, None)
        message = "Promo code removed."
        if not wants_fragment(request):
            flash(request, message, "success")
            return redirect(request, back_url(request))
        priced = await cart.priced(current_user(request))
        return render(
            request,
            PAGE,
            _context(priced, message, view=view),
            fragment="cart/_changed.html.j2",
            trigger=None if view == CART_VIEW else CHANGED_EVENT,
        )
