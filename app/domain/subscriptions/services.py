"""Subscribing, changing and cancelling, and mirroring what Stripe says about subscriptions and their invoices.

Stripe owns the state: every change is made at Stripe first and our row is then refreshed from Stripe's answer
(and again from the webhooks, which may arrive late, twice or out of order: ``mirror_*`` always re-applies the
object as Stripe returns it now, unless an older event would overwrite a newer one).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from uuid import UUID, uuid4

import stripe
import structlog
from saq import Queue
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession
from stripe.params import SubscriptionCreateParams
from stripe.params.checkout import SessionCreateParams, SessionCreateParamsSubscriptionData

from app.db import models as m
from app.db.upsert import insert_if_absent
from app.domain.analytics.feed import announce, movement_item, redis_of
from app.domain.analytics.movements import refresh_customer_metrics
from app.domain.notifications.services import EmailService
from app.domain.plans.tax_rates import COUNTRY, invoice_taxes, tax_rate_ids, valid_province
from app.domain.promotions.services import find_code, redeem_for_subscription
from app.lib.exceptions import ApplicationError, NotFoundError, NotYoursError
from app.lib.stripe_gateway import as_dict, idempotency_key, stripe_id

log = structlog.get_logger()

LIVE_STATUSES = m.LIVE_SUBSCRIPTION_STATUSES
ENDED_STATUSES = frozenset({"canceled", "unpaid", "incomplete_expired"})
# A trial that ends with no card on file pauses (no failed invoice, no dunning): the member adds a card to resume.
TRIAL_WITHOUT_CARD_PAUSES: Any = {"end_behavior": {"missing_payment_method": "pause"}}


async def live_subscription(db: AsyncSession, user_id: UUID) -> m.Subscription | None:
    """The user's newest subscription that still gives access (active, trialing or past_due in dunning)."""
    sub: m.Subscription | None = await db.scalar(
        select(m.Subscription)
        .where(m.Subscription.user_id == user_id, m.Subscription.status.in_(LIVE_STATUSES))
        .order_by(m.Subscription.created_at.desc(), m.Subscription.id.desc())
        .limit(1)
    )
    return sub


class SubscriptionError(ApplicationError):
    status_code = 409


def ts(value: Any) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value else None


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
        # Feed items of MRR movements derived in the open transaction, announced after its commit.
        self._pending_feed: list[dict[str, Any]] = []

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
        sub = await self.mirror_subscription(created)
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
        sub = await self.mirror_subscription(remote)
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
        return await self.mirror_subscription(as_dict(remote)) or sub

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
            await self.mirror_subscription(as_dict(updated))
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
        await self.mirror_subscription(remote)
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
        mirrored = await self.mirror_subscription(remote)
        if isinstance(invoice, dict):
            await self.mirror_invoice(invoice)
            await self.db.commit()
            await self.announce_metrics()
        return mirrored or sub

    # --- managing --------------------------------------------------------------------------------------------

    async def cancel_at_period_end(self, sub: m.Subscription) -> m.Subscription:
        remote = await self.stripe.v1.subscriptions.update_async(
            sub.stripe_subscription_id,
            params={"cancel_at_period_end": True},
            options={"idempotency_key": idempotency_key("cancel-at-end", sub.stripe_subscription_id, sub.updated_at)},
        )
        return await self.mirror_subscription(as_dict(remote)) or sub

    async def resume(self, sub: m.Subscription) -> m.Subscription:
        if not sub.cancel_at_period_end:
            return sub
        remote = await self.stripe.v1.subscriptions.update_async(
            sub.stripe_subscription_id,
            params={"cancel_at_period_end": False},
            options={"idempotency_key": idempotency_key("resume", sub.stripe_subscription_id, sub.updated_at)},
        )
        return await self.mirror_subscription(as_dict(remote)) or sub

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
        return await self.mirror_subscription(remote) or sub

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
        return await self.mirror_subscription(as_dict(remote)) or sub

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
            await self.mirror_subscription(remote)
            return False
        updated = await self.stripe.v1.subscriptions.update_async(
            sub.stripe_subscription_id,
            params={"items": [{"id": str(item["id"]), "price": price.stripe_price_id}], "proration_behavior": "none"},
            # From this price to that one, once: a second run (or a retry) replays the same answer.
            options={
                "idempotency_key": idempotency_key("move-at-renewal", sub.stripe_subscription_id, current, price.id)
            },
        )
        await self.mirror_subscription(as_dict(updated))
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
            return await self.mirror_subscription(remote) or sub
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
        return await self.mirror_subscription(remote) or sub

    # --- mirroring -------------------------------------------------------------------------------------------

    async def mirror_subscription(self, remote: dict[str, Any], *, event_created: int = 0) -> m.Subscription | None:
        """Create or update our row from Stripe's subscription object. Commits."""
        customer_id = stripe_id(remote.get("customer")) or ""
        stmt = select(m.Subscription).where(m.Subscription.stripe_subscription_id == remote["id"])
        if self.db.get_bind().dialect.name == "postgresql":
            # The page and a webhook at once: one sees the other. NO KEY: rows referencing this one (mrr_movements)
            # may still be inserted meanwhile, else a metrics rebuild holding its lock deadlocked with us.
            stmt = stmt.with_for_update(of=m.Subscription, key_share=True)
        sub: m.Subscription | None = await self.db.scalar(stmt)
        if sub is None:
            user = await self._user_for(remote, customer_id)
            if user is None:
                log.info("subscription.not_ours", subscription=remote["id"])
                return None
            # The page and a webhook may both find no row: the database keeps one, and both update that one.
            await insert_if_absent(
                self.db,
                m.Subscription,
                "stripe_subscription_id",
                {"user_id": user.id, "stripe_subscription_id": remote["id"], "stripe_customer_id": customer_id},
            )
            sub = await self.db.scalar(stmt.execution_options(populate_existing=True))
            assert sub is not None
        if event_created and event_created < sub.last_event_created:
            return sub  # an older event arriving late: we already hold newer state
        was_live = sub.status in LIVE_STATUSES
        if was_live and remote.get("status") == "incomplete":
            # A read taken before the first payment, applied late: a live subscription never goes back to that.
            return sub
        item = ((remote.get("items") or {}).get("data") or [{}])[0]
        price = item.get("price") or {}
        price_id = stripe_id(price) or ""
        sub.stripe_price_id = price_id
        plan_price = await self.db.scalar(select(m.PlanPrice).where(m.PlanPrice.stripe_price_id == price_id))
        if plan_price is not None:
            sub.plan_price_id = plan_price.id
            sub.plan_id = plan_price.plan_id
        sub.status = str(remote.get("status") or sub.status)
        sub.quantity = int(item.get("quantity") or 1)
        # Since API 2025-03-31 the billing period lives on the subscription items.
        sub.current_period_start = ts(item.get("current_period_start"))
        sub.current_period_end = ts(item.get("current_period_end"))
        sub.cancel_at_period_end = bool(remote.get("cancel_at_period_end"))
        sub.canceled_at = ts(remote.get("canceled_at"))
        sub.ended_at = ts(remote.get("ended_at"))
        sub.trial_end = ts(remote.get("trial_end"))
        sub.latest_invoice_id = stripe_id(remote.get("latest_invoice"))
        paused = remote.get("pause_collection") or {}
        sub.pause_collection = str(paused.get("behavior") or "")
        sub.pause_resumes_at = ts(paused.get("resumes_at"))
        if event_created:
            sub.last_event_created = max(sub.last_event_created, event_created)
        emails: list[m.EmailMessage] = []
        await self.db.flush()
        if was_live and sub.status in ENDED_STATUSES and await self._claim_ended_notice(sub):
            emails.append(await self._ended_email(sub))
        await self.derive_metrics(sub.user_id)
        await self.db.commit()
        await EmailService(self.db, self.queue).dispatch(emails)
        await self.announce_metrics()
        # The plan may have changed (a switch) or never been loaded (a new row): load it now, not lazily later.
        await self.db.refresh(sub, attribute_names=["plan", "price"])
        return sub

    async def _claim_ended_notice(self, sub: m.Subscription) -> bool:
        # The page and a webhook may both see the end at once (SQLite holds no row lock): one of them wins here.
        claimed = await self.db.execute(
            update(m.Subscription)
            .where(m.Subscription.id == sub.id, m.Subscription.ended_notified_at.is_(None))
            .values(ended_notified_at=datetime.now(UTC))
        )
        return getattr(claimed, "rowcount", 0) == 1

    async def _ended_email(self, sub: m.Subscription) -> m.EmailMessage:
        """Staged in the transaction that records the end: sent once, whichever path noticed it first."""
        user = await self.db.get(m.User, sub.user_id)
        assert user is not None
        plan = await self.db.get(m.Plan, sub.plan_id) if sub.plan_id else None
        return EmailService(self.db, self.queue).stage(
            "membership_ended",
            user.email,
            {
                "name": user.display_name,
                "plan_name": plan.name if plan else "Your plan",
                "unpaid": sub.status in {"unpaid", "incomplete_expired"},
            },
        )

    async def _user_for(self, remote: dict[str, Any], customer_id: str) -> m.User | None:
        user_id = (remote.get("metadata") or {}).get("user_id")
        if customer_id:
            user: m.User | None = await self.db.scalar(select(m.User).where(m.User.stripe_customer_id == customer_id))
            if user is not None:
                return user
        if user_id:
            try:
                return await self.db.get(m.User, user_id)
            except (ValueError, TypeError):
                return None
        return None

    async def mirror_invoice(self, remote: dict[str, Any], *, event_created: int = 0) -> m.Invoice | None:
        """Create or update our copy of a subscription invoice. Does not commit (the caller may add credits)."""
        subscription_id = stripe_id(
            ((remote.get("parent") or {}).get("subscription_details") or {}).get("subscription")
        )
        subscription_id = subscription_id or stripe_id(remote.get("subscription"))
        if not subscription_id:
            return None  # not a subscription invoice
        sub = await self.db.scalar(
            select(m.Subscription).where(m.Subscription.stripe_subscription_id == subscription_id)
        )
        if sub is None:
            remote_sub = as_dict(await self.stripe.v1.subscriptions.retrieve_async(subscription_id))
            sub = await self.mirror_subscription(remote_sub)
            if sub is None:
                return None
        # The return page and the webhook mirror a first invoice at the same moment: the database keeps one row.
        await insert_if_absent(
            self.db,
            m.Invoice,
            "stripe_invoice_id",
            {
                "stripe_invoice_id": remote["id"],
                "status": str(remote.get("status") or "draft"),
                "user_id": sub.user_id,
                "subscription_id": sub.id,
                "last_event_created": 0,
            },
        )
        stmt = (
            select(m.Invoice)
            .where(m.Invoice.stripe_invoice_id == remote["id"])
            .execution_options(populate_existing=True)
        )
        if self.db.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update(
                key_share=True
            )  # the other writer's update lands before or after ours, never inside
        invoice = await self.db.scalar(stmt)
        assert invoice is not None  # inserted above, by us or by the other writer
        if event_created and event_created < invoice.last_event_created:
            return invoice
        invoice.user_id = sub.user_id
        invoice.subscription_id = sub.id
        invoice.number = str(remote.get("number") or "")
        invoice.status = str(remote.get("status") or invoice.status)
        invoice.billing_reason = str(remote.get("billing_reason") or "")
        invoice.amount_due = int(remote.get("amount_due") or 0)
        invoice.amount_paid = int(remote.get("amount_paid") or 0)
        invoice.currency = str(remote.get("currency") or "cad").upper()
        invoice.hosted_invoice_url = str(remote.get("hosted_invoice_url") or "")
        invoice.invoice_pdf = str(remote.get("invoice_pdf") or "")
        invoice.period_start = ts(remote.get("period_start"))
        invoice.period_end = ts(remote.get("period_end"))
        invoice.attempt_count = int(remote.get("attempt_count") or 0)
        invoice.next_payment_attempt = ts(remote.get("next_payment_attempt"))
        invoice.stripe_created = ts(remote.get("created"))
        invoice.tax, invoice.tax_breakdown = await invoice_taxes(self.db, self.stripe, remote)
        if event_created:
            invoice.last_event_created = max(invoice.last_event_created, event_created)
        await self.db.flush()
        await self.derive_metrics(sub.user_id)  # the caller commits, then calls announce_metrics()
        return invoice

    # --- analytics -------------------------------------------------------------------------------------------

    async def derive_metrics(self, user_id: UUID) -> None:
        """Re-derive the customer's MRR movements in the open transaction (cheap: one customer's rows)."""
        moves = await refresh_customer_metrics(self.db, user_id)
        if moves:
            user = await self.db.get(m.User, user_id)
            email = user.email if user is not None else ""
            self._pending_feed.extend(
                movement_item(move.kind, move.mrr_delta, move.currency, email, move.occurred_at) for move in moves
            )

    async def announce_metrics(self) -> None:
        """After the commit: invalidate the cached dashboards and push the new movements to open ones."""
        items, self._pending_feed = self._pending_feed, []
        await announce(redis_of(self.queue), items)
