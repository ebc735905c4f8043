"""Checkout rules: billing details, placing an order from the cart, and its one PaymentIntent."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import stripe
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.db.upsert import insert_if_absent
from app.domain.cart.services import PricedCart
from app.domain.catalog.stock_holds import StockUnavailableError, Wanted, hold_for_order
from app.domain.promotions.services import PromoError, PromoQuote, quote_cart
from app.domain.tax.services import PROVINCES, TaxResult, compute_tax
from app.lib.email_address import InvalidEmailError, clean_email
from app.lib.exceptions import ApplicationError
from app.lib.forms import FormReader
from app.lib.localtime import to_local
from app.lib.stripe_gateway import as_dict, idempotency_key
from app.lib.tokens import new_token

ORDER_NUMBER_OFFSET = 1000  # the first order is #1001
DEFAULT_HOLD = timedelta(minutes=15)  # the STOCK_HOLD_MINUTES setting's default

COUNTRIES: dict[str, str] = {
    "CA": "Canada",
    "US": "United States",
    "GB": "United Kingdom",
    "FR": "France",
    "DE": "Germany",
    "AU": "Australia",
    "NZ": "New Zealand",
    "IE": "Ireland",
    "NL": "Netherlands",
    "JP": "Japan",
    "MX": "Mexico",
}

# First letter of a Canadian postal code by province: a typo in either shows up before the customer pays.
_POSTAL_PREFIXES = {
    "NL": "A",
    "NS": "B",
    "PE": "C",
    "NB": "E",
    "QC": "GHJ",
    "ON": "KLMNP",
    "MB": "R",
    "SK": "S",
    "AB": "T",
    "BC": "V",
    "NT": "X",
    "NU": "X",
    "YT": "Y",
}
_CA_POSTAL = re.compile(r"^([ABCEGHJ-NPRSTVXY]\d[ABCEGHJ-NPRSTV-Z]) ?(\d[ABCEGHJ-NPRSTV-Z]\d)$")
_US_ZIP = re.compile(r"^\d{5}(-\d{4})?$")
_US_STATE = re.compile(r"^[A-Z]{2}$")


class CheckoutError(ApplicationError):
    status_code = 409


class PromoCodeRejectedError(CheckoutError):
    """The cart's code no longer applies at order time: the caller drops it and shows the new total."""


@dataclass(frozen=True, slots=True)
class BillingDetails:
    email: str
    name: str
    country: str
    region: str
    postal_code: str

    @property
    def region_name(self) -> str:
        return PROVINCES.get(self.region, self.region) if self.country == "CA" else self.region


def parse_billing(data: dict[str, str], *, account_email: str | None) -> BillingDetails:
    """Validate the billing form; raise :class:`FormError` with every field's problem at once."""
    read = FormReader(data)
    email = account_email or ""  # a signed-in customer's address was validated when it was set
    if not account_email:
        try:
            email = clean_email(read.raw("email"))
        except InvalidEmailError:
            read.error("email", "Enter the email address your receipt and downloads should go to.")
    name = " ".join(read.raw("name").split())
    if not name:
        read.error("name", "Enter the name on the bill.")
    elif len(name) > 120:
        read.error("name", "Keep the name under 120 characters.")
    country = read.raw("country").upper()
    if country not in COUNTRIES:
        read.error("country", "Choose a country.")
    region = read.raw("region").upper()
    postal = " ".join(read.raw("postal_code").split()).upper()
    if country == "CA":
        if region not in PROVINCES:
            read.error("region", "Choose a province or territory: sales tax depends on it.")
        match = _CA_POSTAL.match(postal)
        if not match:
            read.error("postal_code", "Enter a Canadian postal code like K1A 0B1.")
        else:
            postal = f"{match.group(1)} {match.group(2)}"
            if region in _POSTAL_PREFIXES and postal[0] not in _POSTAL_PREFIXES[region]:
                read.error("postal_code", f"That postal code is not in {PROVINCES[region]}.")
    elif country == "US":
        if not _US_STATE.match(region):
            read.error("region", "Enter the two-letter state code, like NY.")
        if not _US_ZIP.match(postal):
            read.error("postal_code", "Enter a ZIP code like 10001.")
    else:
        region = region[:3]
        if len(postal) > 16:
            read.error("postal_code", "Enter a postal code of at most 16 characters.")
    read.done()
    return BillingDetails(email=email, name=name, country=country, region=region, postal_code=postal)


def tax_for(cart: PricedCart, *, country: str, region: str, line_discounts: Sequence[int] | None = None) -> TaxResult:
    """Tax per purchasable line on what the customer pays for it: its subtotal less its share of any discount."""
    discounts = list(line_discounts) if line_discounts is not None else [0] * len(cart.purchasable)
    return compute_tax(
        [line.subtotal - off for line, off in zip(cart.purchasable, discounts, strict=True)],
        country=country,
        region=region,
        on=datetime.now(UTC).date(),
    )


class CheckoutService:
    def __init__(
        self, db: AsyncSession, stripe_client: stripe.StripeClient, *, hold_for: timedelta = DEFAULT_HOLD
    ) -> None:
        self.db = db
        self.stripe = stripe_client
        self.hold_for = hold_for
        self.stock_changed = False  # the caller drops the cached catalog pages ("N left" moved)

    async def place_order(
        self,
        *,
        cart: PricedCart,
        billing: BillingDetails,
        user: m.User | None,
        checkout_token: str,
        promo_code: str | None = None,
    ) -> tuple[m.Order, str | None]:
        """Create the pending order with price snapshots, the promo discount and tax. Commits.

        ``promo_code`` is checked again here, with the billing email (first-order-only codes), against the cart
        as it is now; a code that no longer applies raises :class:`PromoCodeRejectedError` rather than silently
        charging more than the customer was shown.

        Returns ``(order, visitor_token)``; the token (only for a newly created order) proves to the return page
        that this browser placed it. A second submission of the same form returns the first order instead.
        """
        existing = await self.order_for_token(checkout_token)
        if existing is not None:
            return existing, None
        lines = cart.purchasable
        if not lines:
            raise CheckoutError("Your cart has nothing that can be bought right now.")
        quote: PromoQuote | None = None
        if promo_code:
            try:
                quote = await quote_cart(self.db, promo_code, cart, user=user, email=billing.email)
            except PromoError as exc:
                raise PromoCodeRejectedError(
                    f"Your promo code was removed: {exc.message} Check the new total and continue."
                ) from exc
        line_discounts = quote.line_discounts if quote else [0] * len(lines)
        discount_total = quote.discount if quote else 0
        tax = tax_for(cart, country=billing.country, region=billing.region, line_discounts=line_discounts)
        number_id = await self.db.scalar(insert(m.OrderNumber).returning(m.OrderNumber.id))
        visitor_token, visitor_hash = new_token()
        subtotal = sum(line.subtotal for line in lines)
        order = m.Order(
            number=ORDER_NUMBER_OFFSET + int(number_id or 0),
            user_id=user.id if user else None,
            email=billing.email,
            billing_name=billing.name,
            country=billing.country,
            region=billing.region,
            postal_code=billing.postal_code,
            currency=cart.currency,
            subtotal=subtotal,
            discount_total=discount_total,
            promo_code=quote.code if quote else "",
            promo_code_id=quote.promo.id if quote else None,
            tax_total=tax.total,
            total=subtotal - discount_total + tax.total,
            tax_breakdown=[c.as_dict() for c in tax.components],
            checkout_token=checkout_token,
            visitor_token_hash=visitor_hash,
        )
        order.lines = [
            m.OrderLine(
                position=index,
                product_id=line.product.id,
                product_name=line.product.name,
                product_slug=line.product.slug,
                unit_price=line.unit_price,
                quantity=line.quantity,
                subtotal=line.subtotal,
                discount=line_discount,
                tax=line_tax,
                download_limit=line.product.download_limit,
                has_download=bool(line.product.digital_file),
            )
            for index, (line, line_discount, line_tax) in enumerate(
                zip(lines, line_discounts, tax.line_taxes, strict=True)
            )
        ]
        self.db.add(order)
        try:
            await self.db.flush()
        except IntegrityError:
            # The same form submitted twice at once: the other request's order stands.
            await self.db.rollback()
            existing = await self.order_for_token(checkout_token)
            if existing is None:
                raise
            return existing, None
        wanted = [Wanted(line.product.id, line.product.name, line.quantity) for line in lines]
        try:
            # Limited stock is held now, not at payment: two buyers cannot both pay for the last unit.
            held = await hold_for_order(self.db, order.id, wanted, hold_for=self.hold_for)
        except StockUnavailableError as exc:
            await self.db.rollback()  # nothing half-written: no order, nothing held
            left = f"only {exc.available} left" if exc.available else "none left right now"
            raise CheckoutError(
                f"{exc.name}: {left}; another buyer is holding the rest. Lower the quantity in your cart, "
                "or try again in a few minutes."
            ) from exc
        placed = "Order placed, waiting for payment."
        if quote:
            placed = f"Order placed with code {quote.code} ({quote.summary}), waiting for payment."
        self.db.add(m.OrderEvent(order=order, kind="placed", message=placed))
        try:
            await self.db.commit()
            self.stock_changed = held
        except IntegrityError:
            # The same form submitted twice at once: the other request's order stands.
            await self.db.rollback()
            existing = await self.order_for_token(checkout_token)
            if existing is None:
                raise
            return existing, None
        return order, visitor_token

    async def place_booking_order(
        self,
        *,
        booking: m.Booking,
        resource: m.BookableResource,
        slot: m.BookingSlot,
        user: m.User,
        billing: BillingDetails,
    ) -> m.Order:
        """A pending order for one booking paid by card: one line, no product, tax from the billing province.

        Never commits: the booking's seat hold and its order are one transaction (the caller's). The order belongs to
        the signed-in ``user``, which is what lets them open its pay page; it has no checkout or visitor token.
        """
        # "Meeting room A — Tue 1 Dec 10:00\u201311:00 EST": the shop's local time (receipts and emails show it)
        starts, ends = to_local(slot.starts_at), to_local(slot.ends_at)
        when = f"{starts:%a} {starts.day} {starts:%b %H:%M}\u2013{ends:%H:%M %Z}"
        tax = compute_tax([resource.price], country=billing.country, region=billing.region, on=datetime.now(UTC).date())
        number_id = await self.db.scalar(insert(m.OrderNumber).returning(m.OrderNumber.id))
        order = m.Order(
            number=ORDER_NUMBER_OFFSET + int(number_id or 0),
            user_id=user.id,
            email=billing.email,
            billing_name=billing.name,
            country=billing.country,
            region=billing.region,
            postal_code=billing.postal_code,
            currency=resource.currency,
            subtotal=resource.price,
            tax_total=tax.total,
            total=resource.price + tax.total,
            tax_breakdown=[c.as_dict() for c in tax.components],
        )
        order.lines = [
            m.OrderLine(
                position=0,
                product_id=None,
                product_name=f"{resource.name} — {when}",
                product_slug=resource.slug,
                unit_price=resource.price,
                quantity=1,
                subtotal=resource.price,
                tax=tax.line_taxes[0],
                has_download=False,
            )
        ]
        self.db.add(order)
        self.db.add(
            m.OrderEvent(order=order, kind="placed", message=f"Booking {booking.id} held, waiting for payment.")
        )
        await self.db.flush()
        return order

    async def order_for_token(self, checkout_token: str) -> m.Order | None:
        order: m.Order | None = await self.db.scalar(select(m.Order).where(m.Order.checkout_token == checkout_token))
        return order

    async def payment_intent(self, order: m.Order) -> dict[str, Any]:
        """The order's one PaymentIntent: created on first call (idempotently), retrieved afterwards. Commits."""
        if order.payment_intent_id:
            return as_dict(await self.stripe.v1.payment_intents.retrieve_async(order.payment_intent_id))
        metadata = {"order_id": str(order.id), "order_number": str(order.number)}
        if order.promo_code_id is not None:
            # Stripe doesn't discount PaymentIntents: the amount is ours (subtotal - discount + tax); the metadata
            # ties the payment to the promotion code for reporting in the Dashboard.
            promo = await self.db.get(m.PromoCode, order.promo_code_id)
            metadata["promo_code"] = order.promo_code
            metadata["discount"] = str(order.discount_total)
            if promo is not None and promo.stripe_promotion_code_id:
                metadata["promotion_code"] = promo.stripe_promotion_code_id
        intent = as_dict(
            await self.stripe.v1.payment_intents.create_async(
                {
                    "amount": order.total,
                    "currency": order.currency.lower(),
                    "automatic_payment_methods": {"enabled": True},
                    "description": f"Cartwright order {order.display_number}",
                    "metadata": metadata,
                },
                # Derived from the order: a retry, a double click or two tabs all get the same PaymentIntent.
                {"idempotency_key": idempotency_key("order-payment-intent", order.id)},
            )
        )
        order.payment_intent_id = intent["id"]
        # Two tabs create it at once (same idempotency key, so the same PaymentIntent): one row, kept by the database.
        await insert_if_absent(
            self.db,
            m.Payment,
            "payment_intent_id",
            {
                "order_id": order.id,
                "payment_intent_id": intent["id"],
                "amount": order.total,
                "currency": order.currency,
                "status": str(intent.get("status") or m.PaymentStatus.REQUIRES_PAYMENT_METHOD.value),
            },
        )
        await self.db.commit()
        return intent
