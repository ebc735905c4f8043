"""Turning Stripe's word into our state: payments, fulfilment, refunds. Called by webhook jobs and the return page.

Every function here is idempotent and order-independent:

* Fulfilment (order paid, entitlements granted, stock decremented, receipt queued) happens in one transaction
  guarded by ``UPDATE orders SET fulfilled_at = … WHERE fulfilled_at IS NULL``: two callers racing (the webhook
  job and the return page) both try, exactly one wins. A payment that cannot be delivered (wrong amount, archived
  product, stock gone) is refunded in full instead, once (``PaymentSync.refund_undelivered``).
* Every PaymentIntent event is re-read from Stripe (through the gateway's client) and only that copy is applied:
  an event body is evidence of nothing (a leaked or misconfigured webhook secret would let anyone sign one), and
  a late ``payment_failed`` must not undo a success. Fulfilment also checks the amount, currency, status and the
  ``order_id`` metadata of that copy against the order (``payment_mismatch``).
* Refund events re-read all of the PaymentIntent's refunds and recompute the totals, so duplicates and any order
  of arrival give the same result.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import models as m
from app.db.upsert import insert_if_absent
from app.domain.analytics.feed import announce, order_item, refund_item
from app.domain.catalog.cache import invalidate_catalog
from app.domain.catalog.low_stock import stage_low_stock_alerts
from app.domain.catalog.stock_holds import convert_for_order, put_back, release_for_order, take
from app.domain.downloads.services import DownloadService
from app.domain.notifications.services import EmailService
from app.domain.orders.bookings import cancel_refunded_bookings, confirm_paid_bookings
from app.domain.orders.invoice_links import invoice_url
from app.domain.orders.invoices import issue_invoice
from app.domain.orders.refunds import refund_undelivered
from app.domain.promotions.services import redeem_for_order
from app.domain.settings.services import alert_recipients
from app.lib import metrics
from app.lib.handler_context import HandlerContext
from app.lib.money import format_money
from app.lib.stripe_gateway import as_dict, stripe_id

log = structlog.get_logger()


def payment_status(intent: dict[str, Any]) -> m.PaymentStatus:
    status = str(intent.get("status") or "")
    if status == "requires_payment_method" and intent.get("last_payment_error"):
        return m.PaymentStatus.FAILED
    try:
        return m.PaymentStatus(status)
    except ValueError:
        return m.PaymentStatus.REQUIRES_PAYMENT_METHOD  # requires_confirmation / requires_capture: not paid yet


class PaymentSync:
    def __init__(self, ctx: HandlerContext) -> None:
        self.ctx = ctx
        self.db: AsyncSession = ctx.db
        self.stock_changed = False

    async def _order_for_intent(self, intent_id: str) -> m.Order | None:
        # Row lock on PostgreSQL serialises everything that touches one order's money; SQLite serialises writers.
        stmt = select(m.Order).where(m.Order.payment_intent_id == intent_id)
        if self.db.get_bind().dialect.name == "postgresql":
            # NO KEY: writers of rows that reference the order (a payment, an entitlement) are not blocked by it,
            # so one holding such a row while we wait on it cannot deadlock with us.
            stmt = stmt.with_for_update(key_share=True)
        order: m.Order | None = await self.db.scalar(stmt)
        return order

    async def refresh_payment_intent(self, intent_id: str) -> m.Order | None:
        intent = await self.ctx.stripe.v1.payment_intents.retrieve_async(intent_id)
        return await self.apply_payment_intent(as_dict(intent))

    async def apply_payment_intent(
        self, intent: dict[str, Any], *, event_id: str | None = None, event_created: int = 0
    ) -> m.Order | None:
        """Mirror the PaymentIntent onto its order's payment; fulfil the order if it succeeded. Commits."""
        order = await self._order_for_intent(intent["id"])
        if order is None:
            await self.db.rollback()
            log.info("payment_intent.not_ours", payment_intent=intent["id"])
            return None
        # The return page and the webhook job may both be first here (SQLite takes no row lock): one row, kept by
        # the database, never a unique-key failure for the second.
        await insert_if_absent(
            self.db,
            m.Payment,
            "payment_intent_id",
            {
                "order_id": order.id,
                "payment_intent_id": intent["id"],
                "amount": order.total,
                "currency": order.currency,
                "status": m.PaymentStatus.REQUIRES_PAYMENT_METHOD.value,
                "last_event_created": 0,
            },
        )
        payment = await self.db.scalar(
            select(m.Payment)
            .where(m.Payment.payment_intent_id == intent["id"])
            .execution_options(populate_existing=True)
        )
        assert payment is not None
        new_status = payment_status(intent)
        stale = event_created and event_created < payment.last_event_created
        if payment.status == m.PaymentStatus.SUCCEEDED and new_status != m.PaymentStatus.SUCCEEDED:
            stale = True  # success is terminal; anything else is an older state arriving late
        if not stale:
            first_sight = event_id is None or event_id != payment.last_event_id
            payment.status = new_status.value
            payment.amount = int(intent.get("amount") or payment.amount)
            payment.charge_id = stripe_id(intent.get("latest_charge")) or payment.charge_id
            error = intent.get("last_payment_error") or {}
            payment.failure_message = (error.get("message") or "") if new_status == m.PaymentStatus.FAILED else ""
            if event_id:
                payment.last_event_id = event_id
                payment.last_event_created = max(payment.last_event_created, event_created)
            if new_status == m.PaymentStatus.FAILED and first_sight and event_id:
                self.db.add(m.OrderEvent(order_id=order.id, kind="payment_failed", message=payment.failure_message))
            # A failed or canceled payment puts the units back on sale; a retry that succeeds later takes them again
            # if any are left (or is refunded, see _take_stock).
            unpaid = new_status in {m.PaymentStatus.FAILED, m.PaymentStatus.CANCELED} and order.fulfilled_at is None
            if unpaid and await release_for_order(self.db, order.id):
                self.stock_changed = True
        emails: list[m.EmailMessage] = []
        fulfilled = False
        if new_status == m.PaymentStatus.SUCCEEDED:
            emails, fulfilled = await self._fulfil(order, intent)
        await self.db.commit()
        if fulfilled:
            metrics.PAYMENTS.labels("succeeded", "").inc()
            metrics.CHECKOUT_STEPS.labels("paid").inc()
        if self.stock_changed:  # the shop shows "N left": drop the cached pages now that N changed
            await invalidate_catalog(self.ctx.redis)
            self.stock_changed = False
        await EmailService(self.db, self.ctx.queue).dispatch(emails)
        # Analytics: the success rate may have moved; a fulfilment is a paid order on the live dashboard.
        await announce(self.ctx.redis, [order_item(order)] if fulfilled else None)
        return order

    async def _fulfil(self, order: m.Order, intent: dict[str, Any]) -> tuple[list[m.EmailMessage], bool]:
        """Within the caller's transaction: mark paid and deliver, once. Returns the emails to dispatch and whether
        this call fulfilled the order."""
        if order.fulfilled_at is not None or order.refund_reason:
            # Delivered already (a product archived since must not refund it), or refunded as undeliverable (never
            # delivered later, say after a restock).
            return [], False
        mismatch = payment_mismatch(order, intent) or await self._undeliverable(order)
        if mismatch:
            # Never deliver goods for a payment that does not match the order; support sees it on the timeline.
            kind, message = mismatch
            log.error("payment_intent.mismatch", order=str(order.id), payment_intent=intent.get("id"), kind=kind)
            self.db.add(m.OrderEvent(order_id=order.id, kind=kind, message=message))
            return await on_payment_mismatch(self, order, intent, kind), False
        now = datetime.now(UTC)
        won = await self.db.execute(
            update(m.Order)
            .where(m.Order.id == order.id, m.Order.fulfilled_at.is_(None), m.Order.refund_reason == "")
            .values(fulfilled_at=now, paid_at=now, status=m.OrderStatus.PAID.value, updated_at=now)
        )
        if getattr(won, "rowcount", 0) != 1:
            return [], False  # somebody else fulfilled it
        sold_out = await self._take_stock(order)
        if sold_out is not None:
            # Undo the claim (same transaction: nobody saw it) and give the money back instead.
            await self.db.execute(
                update(m.Order)
                .where(m.Order.id == order.id)
                .values(fulfilled_at=None, paid_at=None, status=order.status, updated_at=now)
            )
            message = f"{sold_out} sold out before the payment arrived."
            self.db.add(m.OrderEvent(order_id=order.id, kind="out_of_stock", message=message))
            return await on_payment_mismatch(self, order, intent, "out_of_stock"), False
        await self.db.refresh(order)
        await issue_invoice(self.db, order)  # gap-free: the number commits (or rolls back) with the fulfilment
        # The code's redemption counts here, once per paid order, in the same transaction as the fulfilment.
        await redeem_for_order(self.db, order)
        downloads = DownloadService(self.db, self.ctx.settings)
        entitlements = await downloads.grant_for_order(order)
        if order.user_id is not None:
            await take_bought_out_of_cart(self.db, order)
        self.db.add(m.OrderEvent(order_id=order.id, kind="paid", message="Payment received."))
        await confirm_paid_bookings(self.db, self.ctx.stripe, order)  # a booking's order: confirm its seat
        mailer = EmailService(self.db, self.ctx.queue)
        receipt = mailer.stage(
            "receipt", order.email, receipt_context(order, entitlements, downloads, self.ctx.settings.base_url)
        )
        self.db.add(m.OrderEvent(order_id=order.id, kind="receipt_queued", message=f"Receipt sent to {order.email}."))
        # The sale may have taken a limited product to the low-stock threshold: the admins hear once per crossing.
        sold = {line.product_id for line in order.lines if line.product_id is not None}
        alerts = await stage_low_stock_alerts(self.db, mailer, sold, base_url=self.ctx.settings.base_url)
        log.info("order.fulfilled", order=str(order.id), number=order.number)
        return [receipt, *alerts], True

    async def _undeliverable(self, order: m.Order) -> tuple[str, str] | None:
        """A line whose product was archived since the order was placed: the shop no longer sells it."""
        ids = [line.product_id for line in order.lines if line.product_id is not None]
        if not ids:
            return None
        archived = set(
            await self.db.scalars(select(m.Product.id).where(m.Product.id.in_(ids), m.Product.is_active.is_(False)))
        )
        for line in order.lines:
            if line.product_id in archived:
                return "product_archived", f"{line.product_name} was archived before the payment arrived."
        return None

    async def _take_stock(self, order: m.Order) -> str | None:
        """Sell the order's limited units: its open holds become sales (no second decrement); a line whose hold
        expired (a late payment) takes its units now with a conditional decrement, never below zero.

        Returns the name of the first line that no longer has the stock, having put back what this call took."""
        held = await convert_for_order(self.db, order.id)
        if held:
            self.stock_changed = True
        taken: list[m.OrderLine] = []
        for line in order.lines:
            if line.product_id is None or line.product_id in held:
                continue
            outcome = await take(self.db, line.product_id, line.quantity)
            if outcome:
                taken.append(line)
                self.stock_changed = True
            elif outcome is False:
                for earlier in taken:
                    assert earlier.product_id is not None
                    await put_back(self.db, earlier.product_id, earlier.quantity)
                # Not delivered after all: the holds just sold become releases, their units back on sale.
                for hold in await self.db.scalars(
                    select(m.StockHold).where(m.StockHold.order_id == order.id, m.StockHold.released_at.is_(None))
                ):
                    hold.converted_at, hold.released_at = None, datetime.now(UTC)
                    await put_back(self.db, hold.product_id, hold.quantity)
                return line.product_name
        return None

    async def refund_undelivered(self, order: m.Order, intent: dict[str, Any], kind: str) -> list[m.EmailMessage]:
        """Within the caller's transaction: refund in full a payment the shop cannot deliver, once.

        Stripe's refund carries a key derived from the order, so a retried job gets the same refund back; the order
        row's ``refund_reason`` is claimed with a conditional update, so only one caller records it and emails."""
        received = int(intent.get("amount_received") or 0)
        if received <= 0 or kind not in UNDELIVERABLE:
            return []  # nothing was taken, or the payment is not this order's to refund (support looks at it)
        now = datetime.now(UTC)
        reason = UNDELIVERABLE[kind]
        # Claim first: only the caller that records the refund asks Stripe and tells anyone. If Stripe fails, the
        # claim rolls back with the transaction and the job's retry tries again with the same key.
        claimed = await self.db.execute(
            update(m.Order)
            .where(m.Order.id == order.id, m.Order.refund_reason == "", m.Order.fulfilled_at.is_(None))
            .values(
                status=m.OrderStatus.REFUNDED.value,
                refunded_at=now,
                refund_reason=reason,
                amount_refunded=min(received, order.total),
                updated_at=now,
            )
        )
        if getattr(claimed, "rowcount", 0) != 1:
            return []  # an earlier run already refunded it and told everyone (or the order was delivered)
        if await release_for_order(self.db, order.id, now=now):  # its held units go back on sale now
            self.stock_changed = True
        refund = as_dict(
            await refund_undelivered(
                self.ctx.stripe, payment_intent_id=str(intent["id"]), amount=received, order_id=order.id
            )
        )
        # The refund.* webhooks find this row (one per Stripe id) and count it once.
        await insert_if_absent(
            self.db,
            m.Refund,
            "stripe_refund_id",
            {
                "order_id": order.id,
                "stripe_refund_id": refund["id"],
                "charge_id": stripe_id(refund.get("charge")),
                "amount": int(refund["amount"]),
                "currency": str(refund["currency"]).upper(),
                "status": str(refund["status"]),
                "reason": "undelivered",
                "notified_at": now,  # the customer gets the email below, not the plain refund notice
            },
        )
        await self.db.refresh(order)
        amount = format_money(received, str(intent.get("currency") or order.currency))
        self.db.add(
            m.OrderEvent(order_id=order.id, kind="refunded_undelivered", message=f"Refunded {amount}: {reason}")
        )
        log.warning("order.refunded_undelivered", order=str(order.id), kind=kind, refund=refund["id"])
        base = self.ctx.settings.base_url
        context = {
            "order": order,
            "amount": received,
            "currency": str(intent.get("currency") or order.currency).upper(),
            "reason": reason,
            "refund_id": refund["id"],
            "order_url": f"{base}/account/orders/{order.id}",
            "admin_url": f"{base}/admin/orders/{order.id}",
        }
        mailer = EmailService(self.db, self.ctx.queue)
        emails = [mailer.stage("order_undelivered", order.email, context)]
        recipients = await alert_recipients(self.db)
        emails += [mailer.stage("order_undelivered_admin", address, context) for address in recipients]
        return emails

    async def sync_refunds(self, intent_id: str) -> m.Order | None:
        """Mirror every refund of the PaymentIntent and recompute the order's refund state. Commits."""
        order = await self._order_for_intent(intent_id)
        if order is None:
            await self.db.rollback()
            return None
        if order.fulfilled_at is None:
            # A refund event overtook the payment's own event: settle the payment first.
            await self.db.rollback()
            await self.refresh_payment_intent(intent_id)
            order = await self._order_for_intent(intent_id)
            if order is None or order.fulfilled_at is None:
                await self.db.rollback()
                return order
        listing = await self.ctx.stripe.v1.refunds.list_async({"payment_intent": intent_id, "limit": 100})
        remote = [as_dict(r) async for r in listing.auto_paging_iter()]
        # Several refund events of one refund (refund.created, charge.refunded, refund.updated) run at the same
        # moment, with the admin's request and the re-sync: the database keeps one row per refund, and only the
        # call that inserted a row announces it.
        created: set[str] = set()
        for data in remote:
            inserted = await insert_if_absent(
                self.db,
                m.Refund,
                "stripe_refund_id",
                {
                    "order_id": order.id,
                    "stripe_refund_id": data["id"],
                    "amount": int(data["amount"]),
                    "currency": str(data["currency"]).upper(),
                    "status": str(data["status"]),
                },
            )
            if inserted:
                created.add(data["id"])
        if remote:
            # On SQLite the insert above took the write lock: re-read what a writer before us committed.
            await self.db.refresh(order)
        rows = {
            r.stripe_refund_id: r
            for r in await self.db.scalars(
                select(m.Refund).where(m.Refund.order_id == order.id).execution_options(populate_existing=True)
            )
        }
        to_notify: list[m.Refund] = []
        failed_now: list[m.Refund] = []
        for data in remote:
            row = rows[data["id"]]
            # Read under the lock (PostgreSQL's order row, SQLite's write lock): one caller sees the change to failed.
            # (A row first seen as failed was inserted as failed: nobody was told of it, there is nothing to undo.)
            if str(data["status"]) == "failed" and row.status != "failed":
                failed_now.append(row)
            row.status = str(data["status"])
            row.amount = int(data["amount"])
            row.charge_id = stripe_id(data.get("charge"))
            row.reason = str(data.get("reason") or "")
            if row.status == "succeeded" and row.notified_at is None:
                row.notified_at = datetime.now(UTC)
                to_notify.append(row)
                self.db.add(
                    m.OrderEvent(
                        order_id=order.id,
                        kind="refunded",
                        message=f"Refunded {format_money(row.amount, order.currency)}.",
                    )
                )
        refunded = min(sum(int(r["amount"]) for r in remote if r["status"] in m.Refund.COUNTED_STATUSES), order.total)
        order.amount_refunded = refunded
        restored = 0
        if refunded >= order.total and order.total > 0:
            if order.status != m.OrderStatus.REFUNDED:
                order.status = m.OrderStatus.REFUNDED.value
                order.refunded_at = datetime.now(UTC)
                await DownloadService(self.db, self.ctx.settings).revoke_for_order(order)
                self.db.add(m.OrderEvent(order_id=order.id, kind="downloads_revoked", message="Fully refunded."))
                await cancel_refunded_bookings(self.db, order)  # and free a booking's seat
        else:
            if order.status == m.OrderStatus.REFUNDED and order.refunded_at is not None:
                # A refund failed after the fact (Stripe's 5126): the money is ours again, so are the customer's
                # downloads. Only what the refund revoked comes back (revoked at or after it was recorded).
                restored = await DownloadService(self.db, self.ctx.settings).restore_for_order(
                    order, revoked_since=order.refunded_at
                )
                order.refunded_at = None
            if refunded > 0:
                order.status = m.OrderStatus.PARTIALLY_REFUNDED.value
            elif order.status in {m.OrderStatus.REFUNDED, m.OrderStatus.PARTIALLY_REFUNDED}:
                order.status = m.OrderStatus.PAID.value
        for row in failed_now:
            self.db.add(
                m.OrderEvent(
                    order_id=order.id,
                    kind="refund_failed",
                    message=f"The refund of {format_money(row.amount, order.currency)} failed at the bank"
                    + (": downloads restored." if restored else "."),
                )
            )
        # Rendered after the status is settled: the notice says whether downloads were revoked.
        mailer = EmailService(self.db, self.ctx.queue)
        emails = [mailer.stage("refund", order.email, {"order": order, "amount": r.amount}) for r in to_notify]
        if failed_now:
            emails += await self._refund_failed_emails(mailer, order, failed_now, restored=bool(restored))
        await self.db.commit()
        await mailer.dispatch(emails)
        await announce(
            self.ctx.redis,
            [
                refund_item(row, order.number)
                for row in rows.values()
                if row.stripe_refund_id in created and row.status in m.Refund.COUNTED_STATUSES
            ],
        )
        return order

    async def _refund_failed_emails(
        self, mailer: EmailService, order: m.Order, failed: list[m.Refund], *, restored: bool
    ) -> list[m.EmailMessage]:
        """The customer learns the refund failed and what happens next; every admin learns it needs handling."""
        base = self.ctx.settings.base_url
        context = {
            "order": order,
            "amount": sum(r.amount for r in failed),
            "refund_ids": [r.stripe_refund_id for r in failed],
            "restored": restored,
            "order_url": f"{base}/account/orders/{order.id}",
            "admin_url": f"{base}/admin/orders/{order.id}",
        }
        emails = [mailer.stage("refund_failed", order.email, context)]
        recipients = await alert_recipients(self.db)  # the shop settings' list, or every active admin
        emails += [mailer.stage("refund_failed_admin", address, context) for address in recipients]
        return emails


async def on_payment_intent_event(ctx: HandlerContext, event: dict[str, Any]) -> None:
    intent = event["data"]["object"]
    if not (intent.get("metadata") or {}).get("order_id"):
        return  # not a shop order (e.g. a subscription invoice's PaymentIntent)
    if event.get("type") == "payment_intent.payment_failed":
        # The metrics count each failed attempt as the event saw it (the PaymentIntent may have succeeded since).
        error = intent.get("last_payment_error") or {}
        outcome = "declined" if error.get("type") == "card_error" else "failed"
        metrics.PAYMENTS.labels(outcome, str(error.get("decline_code") or error.get("code") or "")).inc()
    sync = PaymentSync(ctx)
    # Never the event body: it may be older than the PaymentIntent's state, or forged (see the module docstring).
    # A PaymentIntent Stripe does not know fails the job (visible on the event's row), granting nothing.
    intent = as_dict(await ctx.stripe.v1.payment_intents.retrieve_async(str(intent["id"])))
    order = await sync.apply_payment_intent(intent, event_id=event["id"], event_created=int(event.get("created") or 0))
    if order is None:
        # Stripe says this PaymentIntent pays one of our orders, yet no order carries it (the link was not committed
        # yet, or the database lost it): fail, so the job retries with backoff and an admin sees it in the log.
        raise UnknownOrderError(
            f"PaymentIntent {intent['id']} names order {intent['metadata']['order_id']}, which no local order carries"
        )


def payment_mismatch(order: m.Order, intent: dict[str, Any]) -> tuple[str, str] | None:
    """Why the PaymentIntent (as retrieved from Stripe) does not pay ``order`` in full, or None when it does.

    Returns the order-timeline kind and a sentence for support."""
    status = str(intent.get("status") or "")
    if status != "succeeded":
        return "payment_mismatch", f"Stripe says the payment is {status or 'of unknown status'}, not succeeded."
    named = str((intent.get("metadata") or {}).get("order_id") or "")
    if named != str(order.id):
        return "payment_mismatch", f"The payment names order {named or '(none)'}, not this order."
    received = int(intent.get("amount_received") or 0)
    currency = str(intent.get("currency") or "")
    if received != order.total or currency.upper() != order.currency.upper():
        return "amount_mismatch", (
            f"Stripe received {format_money(received, currency)}; "
            f"the order totals {format_money(order.total, order.currency)}."
        )
    return None


# Why the shop gives the money back, in the customer's words, by timeline kind. Other mismatches (a payment that is
# not succeeded, or that names another order) are not this order's money to return: support handles them.
UNDELIVERABLE = {
    "amount_mismatch": "The amount charged did not match the order total.",
    "product_archived": "A product in your order is no longer sold.",
    "out_of_stock": "A product in your order sold out before your payment completed.",
}


async def on_payment_mismatch(
    sync: PaymentSync, order: m.Order, intent: dict[str, Any], kind: str
) -> list[m.EmailMessage]:
    """Money taken that the shop cannot deliver for: refund it in full and tell the customer and the admins.

    Runs inside the caller's transaction, before its commit, so the order's state and the emails commit with the
    timeline entry. Returns the emails to dispatch after the commit."""
    return await sync.refund_undelivered(order, intent, kind)


async def take_bought_out_of_cart(db: AsyncSession, order: m.Order) -> None:
    """What the order bought leaves the customer's cart, and only that: each line's quantity is taken off. The cart
    is not emptied when the order is placed (the customer may come back from the pay page), so by the time the
    payment lands they may have put the same product in again for another order; deleting the whole line lost it
    (the cluster test's second purchase found an empty cart)."""
    assert order.user_id is not None
    for line in order.lines:
        if line.product_id is None:
            continue
        mine = (m.CartItem.user_id == order.user_id, m.CartItem.product_id == line.product_id)
        # Delete first: a quantity may never reach 0 (cart_quantity_positive).
        await db.execute(delete(m.CartItem).where(*mine, m.CartItem.quantity <= line.quantity))
        await db.execute(update(m.CartItem).where(*mine).values(quantity=m.CartItem.quantity - line.quantity))


class UnknownOrderError(Exception):
    """A shop PaymentIntent (it has an ``order_id`` in its metadata) that no local order is linked to."""


async def on_refund_event(ctx: HandlerContext, event: dict[str, Any]) -> None:
    obj = event["data"]["object"]
    intent_id = stripe_id(obj.get("payment_intent"))
    if intent_id:
        await PaymentSync(ctx).sync_refunds(intent_id)


def receipt_context(
    order: m.Order, entitlements: list[m.Entitlement], downloads: DownloadService, base_url: str
) -> dict[str, Any]:
    """What the receipt email shows: lines, tax, total and a fresh signed link per download."""
    return {
        "order": order,
        "lines": list(order.lines),
        "downloads": [
            {"name": e.product_name, "url": downloads.signed_url(e), "limit": e.download_limit} for e in entitlements
        ],
        "account_url": f"{base_url}/account/orders/{order.id}",
        "invoice_url": (
            invoice_url(base_url, downloads.settings.secret_key, order.id)
            if order.user_id is None
            else f"{base_url}/account/orders/{order.id}/invoice"
        ),
        "is_guest": order.user_id is None,
        "resend_url": f"{base_url}/downloads/resend",
    }
