"""Subscribing, changing and cancelling, and mirroring what Stripe says about subscriptions and their invoices.

Stripe owns the state: every change is made at Stripe first and our row is then refreshed from Stripe's answer
(and again from the webhooks, which may arrive late, twice or out of order: ``mirror_*`` always re-applies the
object as Stripe returns it now, unless an older event would overwrite a newer one).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any
from uuid import uuid4

import stripe
import structlog
from saq import Queue
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from stripe.params import SubscriptionCreateParams
from stripe.params.checkout import SessionCreateParams, SessionCreateParamsSubscriptionData

from app.db import models as m
from app.db.queries import live_subscription
from app.domain.plans.tax_rates import COUNTRY, invoice_taxes, tax_rate_ids, valid_province
from app.domain.promotions.services import find_code, redeem_for_subscription
from app.domain.subscriptions.mirror import LIVE_STATUSES, SubscriptionMirror
from app.lib.exceptions import ApplicationError, NotFoundError, NotYoursError
from app.lib.stripe_gateway import as_dict, idempotency_key, stripe_id

log = structlog.get_logger()

# A trial that ends with no card on file pauses (no failed invoice, no dunning): the member adds a card to resume.
TRIAL_WITHOUT_CARD_PAUSES: Any = {"end_behavior": {"missing_payment_method": "pause"}}


class SubscriptionError(ApplicationError):
    status_code = 409


@dataclass(frozen=True, slots=True)
class ProrationPreview:
    amount_due: int
    currency: str
    lines: list[dict[str, Any]]
    new_price: m.PlanPrice
    subtotal: int = 0  # before tax (after discounts)
    tax: int = 0
    taxes: tuple[dict[str, Any], ...] = ()  # {code, label, rate, amount} per component, as Stripe computed them


class ProvinceError(ApplicationError):
    """The billing province is missing or not one we know: the form shows it by the field."""

    status_code = 422

    def __init__(self) -> None:
        super().__init__("Choose the province or territory of your billing address.")


class SubscriptionService:
    def __init__(self, db: AsyncSession, stripe_client: stripe.StripeClient, queue: Queue | None = None) -> None:
        self.db = db
        self.stripe = stripe_client
        self.queue = queue
        # What Stripe reports, recorded here: the commands below write through it after each Stripe call.
        self.mirror = SubscriptionMirror(db, stripe_client, queue)

    # --- reading ---------------------------------------------------------------------------------------------

    async def live_for(self, user: m.User) -> m.Subscription | None:
        return await live_subscription(self.db, user.id)

    async def recoverable_for(self, user: m.User) -> m.Subscription | None:
        """The subscription a new card can act on: a live one, or one paused because its trial ended without a card."""
        live = await self.live_for(user)
        if live is not None:
            return live
        latest = await self.latest_for(user)
        return latest if latest is not None and latest.status == m.SubscriptionStatus.PAUSED else None

    async def _check_no_plan(self, user: m.User) -> None:
        current = await self.recoverable_for(user)
        if current is not None and current.status == m.SubscriptionStatus.PAUSED:
            raise SubscriptionError("Your membership is paused: add a card on your plan page to resume it.")
        if current is not None:
            raise SubscriptionError("You already have a plan: switch it from your account instead.")

    async def latest_for(self, user: m.User) -> m.Subscription | None:
        sub: m.Subscription | None = await self.db.scalar(
            select(m.Subscription)
            .where(m.Subscription.user_id == user.id)
            .order_by(m.Subscription.created_at.desc())
            .limit(1)
        )
        return sub

    async def owned(self, user: m.User, subscription_id: Any) -> m.Subscription:
        sub = await self.db.get(m.Subscription, subscription_id)
        if sub is None:
            raise NotFoundError("We couldn't find that subscription.")
        if sub.user_id != user.id:
            raise NotYoursError("We couldn't find that subscription.", resource="subscription", object_id=sub.id)
        return sub

    async def invoices(self, user: m.User, *, limit: int = 24) -> list[m.Invoice]:
        rows = await self.db.scalars(
            select(m.Invoice)
            .where(m.Invoice.user_id == user.id, m.Invoice.status != "draft")
            .order_by(m.Invoice.stripe_created.desc())
            .limit(limit)
        )
        return list(rows)

    # --- subscribing -----------------------------------------------------------------------------------------

    async def customer_id(self, user: m.User) -> str:
        """The user's Stripe customer, created once (idempotently: two tabs get the same customer)."""
        if user.stripe_customer_id:
            return user.stripe_customer_id
        customer = await self.stripe.v1.customers.create_async(
            params={"email": user.email, "name": user.name or user.email, "metadata": {"user_id": str(user.id)}},
            options={"idempotency_key": idempotency_key("customer", user.id)},
        )
        row = await self.db.get(m.User, user.id)
        assert row is not None
        row.stripe_customer_id = customer.id
        user.stripe_customer_id = customer.id
        await self.db.commit()
        return customer.id

    async def subscribe(
        self,
        user: m.User,
        plan: m.Plan,
        price: m.PlanPrice,
        *,
        attempt: str,
        province: str,
        promo: m.PromoCode | None = None,
    ) -> m.Subscription:
        """Create the subscription at Stripe (``default_incomplete``: the first invoice waits for the card).

        ``province`` (the billing address's) is kept on the user and the Stripe customer, and selects the
        subscription's ``default_tax_rates``: Stripe adds that tax to every invoice. ``promo`` (already checked by
        ``quote_plan``) goes to Stripe as ``discounts=[{promotion_code}]``: Stripe discounts the invoices for the
        code's duration and checks the code's own limits again.
        """
        province = self._province(province)
        await self._check_no_plan(user)
        if not price.stripe_price_id:
            raise SubscriptionError("This plan is not available for sale right now.")
        customer = await self.customer_id(user)
        await self._store_province(user, customer, province)
        tax_rates = await tax_rate_ids(self.db, province)
        params: SubscriptionCreateParams = {
            "customer": customer,
            "items": [{"price": price.stripe_price_id}],
            "default_tax_rates": tax_rates,
            "payment_behavior": "default_incomplete",
            "payment_settings": {"save_default_payment_method": "on_subscription"},
            "metadata": {"user_id": str(user.id), "plan": plan.slug},
            "expand": ["latest_invoice.confirmation_secret"],
        }
        if plan.trial_days and not await self._had_subscription(user):
            params["trial_period_days"] = plan.trial_days
            params["trial_settings"] = TRIAL_WITHOUT_CARD_PAUSES
        if promo is not None and promo.stripe_promotion_code_id:
            params["discounts"] = [{"promotion_code": promo.stripe_promotion_code_id}]
        # The code and the tax are part of the request: a retry after changing either must not replay the first answer.
        key = idempotency_key("subscribe", user.id, price.id, attempt, promo.code if promo else "", *tax_rates)
        created = as_dict(
            await self.stripe.v1.subscriptions.create_async(params=params, options={"idempotency_key": key})
        )
        sub = await self.mirror.subscription(created)
        assert sub is not None
        if promo is not None:
            await redeem_for_subscription(self.db, promo, user=user, stripe_subscription_id=created["id"])
        return sub

    async def hosted_checkout_url(
        self,
        user: m.User,
        plan: m.Plan,
        price: m.PlanPrice,
        *,
        success_url: str,
        cancel_url: str,
        attempt: str,
        province: str,
        promo: m.PromoCode | None = None,
    ) -> str:
        """A Stripe Checkout session (subscription mode) for the plan; Stripe hosts the payment page. The
        subscription it creates carries the province's Tax Rates (``subscription_data.default_tax_rates``)."""
        province = self._province(province)
        await self._check_no_plan(user)
        if not price.stripe_price_id:
            raise SubscriptionError("This plan is not available for sale right now.")
        customer = await self.customer_id(user)
        await self._store_province(user, customer, province)
        tax_rates = await tax_rate_ids(self.db, province)
        subscription_data: SessionCreateParamsSubscriptionData = {
            "metadata": {"user_id": str(user.id), "plan": plan.slug},
            "default_tax_rates": tax_rates,
        }
        if plan.trial_days and not await self._had_subscription(user):
            subscription_data["trial_period_days"] = plan.trial_days
            subscription_data["trial_settings"] = TRIAL_WITHOUT_CARD_PAUSES
        params: SessionCreateParams = {
            "mode": "subscription",
            "customer": customer,
            "client_reference_id": str(user.id),
            "line_items": [{"price": price.stripe_price_id, "quantity": 1}],
            "success_url": success_url,
            "cancel_url": cancel_url,
            "subscription_data": subscription_data,
            "metadata": {"user_id": str(user.id), "plan": plan.slug},
        }
        if promo is not None and promo.stripe_promotion_code_id:
            # Counted by Stripe when the subscription is created; our counter follows in finish_hosted_checkout.
            params["discounts"] = [{"promotion_code": promo.stripe_promotion_code_id}]
            params["metadata"] = {"user_id": str(user.id), "plan": plan.slug, "promo_code": promo.code}
        key = idempotency_key("subscribe-checkout", user.id, price.id, attempt, promo.code if promo else "", *tax_rates)
        session = await self.stripe.v1.checkout.sessions.create_async(params=params, options={"idempotency_key": key})
        return str(session.url)

    async def finish_hosted_checkout(self, user: m.User, session_id: str) -> m.Subscription | None:
        """Back from Stripe Checkout: trust only the session as Stripe reports it, and only if it is this user's."""
        session = as_dict(await self.stripe.v1.checkout.sessions.retrieve_async(session_id))
        if not user.stripe_customer_id or stripe_id(session.get("customer")) != user.stripe_customer_id:
            raise NotFoundError("We couldn't find that checkout.")
        subscription_id = stripe_id(session.get("subscription"))
        if session.get("status") != "complete" or not subscription_id:
            return None
        remote = as_dict(await self.stripe.v1.subscriptions.retrieve_async(subscription_id))
        sub = await self.mirror.subscription(remote)
        code = (session.get("metadata") or {}).get("promo_code")
        if sub is not None and code and (promo := await find_code(self.db, str(code))) is not None:
            await redeem_for_subscription(self.db, promo, user=user, stripe_subscription_id=subscription_id)
        return sub

    @staticmethod
    def _province(value: str | None) -> str:
        province = valid_province(value)
        if province is None:
            raise ProvinceError
        return province

    async def _store_province(self, user: m.User, customer_id: str, province: str) -> None:
        """The billing province on our user row and on the Stripe customer's address (country CA, state)."""
        row = await self.db.get(m.User, user.id)
        assert row is not None
        if row.billing_province != province:
            row.billing_province = province
            user.billing_province = province
            await self.db.commit()
        await self.stripe.v1.customers.update_async(
            customer_id,
            params={"address": {"country": COUNTRY, "state": province}},
            # A key per change: back and forth between two provinces must not replay an earlier answer.
            options={"idempotency_key": idempotency_key("customer-province", customer_id, province, uuid4())},
        )

    async def change_province(self, user: m.User, province: str) -> m.Subscription | None:
        """A new billing province: kept on the user and the Stripe customer, and the live (or paused)
        subscription's Tax Rates replaced without proration, so the change applies from the next invoice only
        (the period already invoiced keeps the tax it was charged)."""
        province = self._province(province)
        if not user.stripe_customer_id:
            row = await self.db.get(m.User, user.id)
            assert row is not None
            row.billing_province = user.billing_province = province
            await self.db.commit()
            return None
        previous = user.billing_province
        await self._store_province(user, user.stripe_customer_id, province)
        sub = await self.recoverable_for(user)
        if sub is None:
            return None
        tax_rates = await tax_rate_ids(self.db, province)
        remote = await self.stripe.v1.subscriptions.update_async(
            sub.stripe_subscription_id,
            params={"default_tax_rates": tax_rates, "proration_behavior": "none"},
            options={
                "idempotency_key": idempotency_key(
                    "subscription-tax", sub.stripe_subscription_id, previous, province, sub.updated_at
                )
            },
        )
        return await self.mirror.subscription(as_dict(remote)) or sub

    async def apply_current_tax_rates(self, on: date | None = None) -> int:
        """After the tax table changed (``TaxRateSync.ensure`` archived a rate): every live or paused subscription
        of a member with a billing province gets the Tax Rates of ``on`` (today), without proration, so from its
        next invoice. Stripe keeps archived rates on the subscriptions that carry them until told. Returns how many
        subscriptions changed."""
        rows = await self.db.execute(
            select(m.Subscription, m.User.billing_province)
            .join(m.User, m.User.id == m.Subscription.user_id)
            .where(
                m.Subscription.status.in_([*LIVE_STATUSES, m.SubscriptionStatus.PAUSED.value]),
                m.User.billing_province.is_not(None),
            )
        )
        changed = 0
        for sub, province in rows.all():
            tax_rates = await tax_rate_ids(self.db, str(province), on)
            remote = as_dict(await self.stripe.v1.subscriptions.retrieve_async(sub.stripe_subscription_id))
            if [stripe_id(rate) for rate in remote.get("default_tax_rates") or []] == tax_rates:
                continue
            updated = await self.stripe.v1.subscriptions.update_async(
                sub.stripe_subscription_id,
                params={"default_tax_rates": tax_rates, "proration_behavior": "none"},
                options={
                    "idempotency_key": idempotency_key("subscription-retax", sub.stripe_subscription_id, *tax_rates)
                },
            )
            await self.mirror.subscription(as_dict(updated))
            changed += 1
            log.info("subscriptions.tax_rates_replaced", subscription=sub.stripe_subscription_id)
        return changed

    async def _had_subscription(self, user: m.User) -> bool:
        # One free trial per customer.
        return (
            await self.db.scalar(select(m.Subscription.id).where(m.Subscription.user_id == user.id).limit(1))
            is not None
        )

    async def payment_secret(self, sub: m.Subscription) -> str | None:
        """The client secret that pays the subscription's open invoice (its confirmation secret), if any."""
        secret, _ = await self.open_invoice(sub)
        return secret

    async def open_invoice(self, sub: m.Subscription) -> tuple[str | None, dict[str, Any]]:
        """The open invoice's client secret (None when nothing is due) and the invoice as Stripe has it now."""
        remote = as_dict(
            await self.stripe.v1.subscriptions.retrieve_async(
                sub.stripe_subscription_id, params={"expand": ["latest_invoice.confirmation_secret"]}
            )
        )
        await self.mirror.subscription(remote)
        invoice = remote.get("latest_invoice")
        if not isinstance(invoice, dict) or invoice.get("status") != "open":
            return None, invoice if isinstance(invoice, dict) else {}
        secret = (invoice.get("confirmation_secret") or {}).get("client_secret")
        return (str(secret) if secret else None), invoice

    async def refresh(self, sub: m.Subscription) -> m.Subscription:
        """Re-read the subscription and its latest invoice from Stripe (the return page must not show stale)."""
        remote = as_dict(
            await self.stripe.v1.subscriptions.retrieve_async(
                sub.stripe_subscription_id, params={"expand": ["latest_invoice"]}
            )
        )
        invoice = remote.get("latest_invoice")
        mirrored = await self.mirror.subscription(remote)
        if isinstance(invoice, dict):
            await self.mirror.invoice(invoice)
            await self.db.commit()
            await self.mirror.announce_metrics()
        return mirrored or sub

    # --- managing --------------------------------------------------------------------------------------------

    async def cancel_at_period_end(self, sub: m.Subscription) -> m.Subscription:
        remote = await self.stripe.v1.subscriptions.update_async(
            sub.stripe_subscription_id,
            params={"cancel_at_period_end": True},
            options={"idempotency_key": idempotency_key("cancel-at-end", sub.stripe_subscription_id, sub.updated_at)},
        )
        return await self.mirror.subscription(as_dict(remote)) or sub

    async def resume(self, sub: m.Subscription) -> m.Subscription:
        if not sub.cancel_at_period_end:
            return sub
        remote = await self.stripe.v1.subscriptions.update_async(
            sub.stripe_subscription_id,
            params={"cancel_at_period_end": False},
            options={"idempotency_key": idempotency_key("resume", sub.stripe_subscription_id, sub.updated_at)},
        )
        return await self.mirror.subscription(as_dict(remote)) or sub

    async def cancel_now(self, sub: m.Subscription) -> m.Subscription:
        try:
            remote = as_dict(
                await self.stripe.v1.subscriptions.cancel_async(
                    sub.stripe_subscription_id,
                    options={"idempotency_key": idempotency_key("cancel-now", sub.stripe_subscription_id)},
                )
            )
        except stripe.InvalidRequestError:
            # Already cancelled (a double click, or Stripe got there first): Stripe's current state is the answer.
            remote = as_dict(await self.stripe.v1.subscriptions.retrieve_async(sub.stripe_subscription_id))
        return await self.mirror.subscription(remote) or sub

    async def _item_id(self, sub: m.Subscription) -> str:
        remote = as_dict(await self.stripe.v1.subscriptions.retrieve_async(sub.stripe_subscription_id))
        return str(remote["items"]["data"][0]["id"])

    async def preview_change(self, sub: m.Subscription, price: m.PlanPrice) -> ProrationPreview:
        """What switching to ``price`` would cost now (Stripe's upcoming-invoice preview, prorated)."""
        if not price.stripe_price_id:
            raise SubscriptionError("That plan is not available right now.")
        preview = as_dict(
            await self.stripe.v1.invoices.create_preview_async(
                params={
                    "customer": sub.stripe_customer_id,
                    "subscription": sub.stripe_subscription_id,
                    "subscription_details": {
                        "items": [{"id": await self._item_id(sub), "price": price.stripe_price_id}],
                        "proration_behavior": "always_invoice",
                    },
                }
            )
        )
        lines = [
            {"description": line.get("description") or "", "amount": int(line.get("amount") or 0)}
            for line in (preview.get("lines") or {}).get("data", [])
        ]
        tax, taxes = await invoice_taxes(self.db, self.stripe, preview)
        total = int(preview.get("total") or 0)
        return ProrationPreview(
            amount_due=int(preview.get("amount_due") or 0),
            currency=str(preview.get("currency") or price.currency).upper(),
            lines=lines,
            new_price=price,
            subtotal=int(preview.get("total_excluding_tax") or total - tax),
            tax=tax,
            taxes=tuple(taxes),
        )

    async def change_price(self, sub: m.Subscription, price: m.PlanPrice) -> m.Subscription:
        """Switch plan or interval now, invoicing the prorated difference at once."""
        if not price.stripe_price_id:
            raise SubscriptionError("That plan is not available right now.")
        if price.stripe_price_id == sub.stripe_price_id:
            raise SubscriptionError("You are already on that plan.")
        remote = await self.stripe.v1.subscriptions.update_async(
            sub.stripe_subscription_id,
            params={
                "items": [{"id": await self._item_id(sub), "price": price.stripe_price_id}],
                "proration_behavior": "always_invoice",
                "cancel_at_period_end": False,
            },
            # The current price and row version too: A→B, B→A, A→B again must not replay the first switch.
            options={
                "idempotency_key": idempotency_key(
                    "switch", sub.stripe_subscription_id, sub.stripe_price_id, price.id, sub.updated_at
                )
            },
        )
        return await self.mirror.subscription(as_dict(remote)) or sub

    async def move_at_renewal(self, sub: m.Subscription, price: m.PlanPrice) -> bool:
        """Put ``sub`` on ``price`` (same interval) from its next renewal: no proration, the billing cycle stays, so
        the period already paid is untouched and the next invoice is at the new amount. Stripe's current state
        decides: a subscription already on ``price``, or no longer live there, is only re-mirrored. Returns whether
        it was moved now."""
        if not price.stripe_price_id:
            raise SubscriptionError("That price is not at Stripe yet.")
        remote = as_dict(await self.stripe.v1.subscriptions.retrieve_async(sub.stripe_subscription_id))
        item = ((remote.get("items") or {}).get("data") or [{}])[0]
        current = stripe_id(item.get("price")) or ""
        if current == price.stripe_price_id or remote.get("status") not in LIVE_STATUSES or not item.get("id"):
            await self.mirror.subscription(remote)
            return False
        updated = await self.stripe.v1.subscriptions.update_async(
            sub.stripe_subscription_id,
            params={"items": [{"id": str(item["id"]), "price": price.stripe_price_id}], "proration_behavior": "none"},
            # From this price to that one, once: a second run (or a retry) replays the same answer.
            options={
                "idempotency_key": idempotency_key("move-at-renewal", sub.stripe_subscription_id, current, price.id)
            },
        )
        await self.mirror.subscription(as_dict(updated))
        return True

    async def portal_url(self, user: m.User, return_url: str) -> str:
        session = await self.stripe.v1.billing_portal.sessions.create_async(
            params={"customer": await self.customer_id(user), "return_url": return_url}
        )
        return str(session.url)

    async def setup_secret(self, user: m.User) -> str:
        """A SetupIntent's client secret for saving a new card (update payment method)."""
        intent = await self.stripe.v1.setup_intents.create_async(
            params={
                "customer": await self.customer_id(user),
                "automatic_payment_methods": {"enabled": True},
                "usage": "off_session",
            }
        )
        return str(intent.client_secret)

    async def use_new_card(self, sub: m.Subscription, setup_intent_id: str) -> m.Subscription:
        """After the customer saved a card: make it the default and retry the open invoice (dunning recovery)."""
        intent = as_dict(await self.stripe.v1.setup_intents.retrieve_async(setup_intent_id))
        if intent.get("status") != "succeeded" or intent.get("customer") != sub.stripe_customer_id:
            raise SubscriptionError("The new card was not saved. Please try again.")
        method = stripe_id(intent.get("payment_method"))
        if method is None:
            raise SubscriptionError("The new card was not saved. Please try again.")
        await self.stripe.v1.customers.update_async(
            sub.stripe_customer_id, params={"invoice_settings": {"default_payment_method": method}}
        )
        remote = as_dict(
            await self.stripe.v1.subscriptions.update_async(
                sub.stripe_subscription_id, params={"default_payment_method": method}
            )
        )
        if sub.status == m.SubscriptionStatus.PAUSED:
            # The trial ended without a card: resuming starts a paid cycle now, charged to the new card.
            key = idempotency_key("resume", sub.stripe_subscription_id, setup_intent_id)
            try:  # Stripe's defaults: a new cycle starts now and its invoice is charged at once
                await self.stripe.v1.subscriptions.resume_async(
                    sub.stripe_subscription_id, options={"idempotency_key": key}
                )
            except stripe.CardError as exc:
                raise SubscriptionError(exc.user_message or "That card was declined.") from exc
            remote = as_dict(await self.stripe.v1.subscriptions.retrieve_async(sub.stripe_subscription_id))
            return await self.mirror.subscription(remote) or sub
        invoice_id = stripe_id(remote.get("latest_invoice"))
        if invoice_id and sub.status in {"past_due", "unpaid", "incomplete"}:
            invoice = as_dict(await self.stripe.v1.invoices.retrieve_async(invoice_id))
            if invoice.get("status") == "open":
                try:
                    await self.stripe.v1.invoices.pay_async(
                        invoice_id,
                        params={"payment_method": method},
                        options={"idempotency_key": idempotency_key("retry-invoice", invoice_id, setup_intent_id)},
                    )
                except stripe.CardError as exc:
                    raise SubscriptionError(exc.user_message or "That card was declined too.") from exc
            remote = as_dict(await self.stripe.v1.subscriptions.retrieve_async(sub.stripe_subscription_id))
        return await self.mirror.subscription(remote) or sub
