"""Billing: setup intents, subscriptions, invoices, coupons, promotion codes and test clocks."""

from __future__ import annotations

import time

import pytest
import stripe

from app.stripe_emulator.server import EmulatorServer

DAY = 86400


@pytest.fixture
def clock(sc: stripe.StripeClient) -> stripe.test_helpers.TestClock:
    return sc.v1.test_helpers.test_clocks.create(params={"frozen_time": int(time.time()), "name": "billing"})


def monthly_price(sc: stripe.StripeClient, amount: int = 1000, name: str = "Pro") -> stripe.Price:
    return sc.v1.prices.create(
        params={
            "currency": "usd",
            "unit_amount": amount,
            "recurring": {"interval": "month"},
            "product_data": {"name": name},
        }
    )


def customer_with_card(sc: stripe.StripeClient, clock_id: str | None, pm: str = "pm_card_visa") -> stripe.Customer:
    params: stripe.params.CustomerCreateParams = {"email": "sub@example.com"}
    if clock_id:
        params["test_clock"] = clock_id
    cus = sc.v1.customers.create(params=params)
    card = sc.v1.payment_methods.attach(pm, params={"customer": cus.id})
    return sc.v1.customers.update(cus.id, params={"invoice_settings": {"default_payment_method": card.id}})


def event_types(sc: stripe.StripeClient, prefix: str = "") -> list[str]:
    events = sc.v1.events.list(params={"limit": 100}).data
    return [e.type for e in reversed(events) if e.type.startswith(prefix)]


def test_setup_intent_saves_card(sc: stripe.StripeClient) -> None:
    cus = sc.v1.customers.create()
    si = sc.v1.setup_intents.create(
        params={"customer": cus.id, "usage": "off_session", "automatic_payment_methods": {"enabled": True}}
    )
    assert si.status == "requires_payment_method" and si.client_secret and si.client_secret.startswith("seti_")
    si = sc.v1.setup_intents.confirm(si.id, params={"payment_method": "pm_card_visa"})
    assert si.status == "succeeded"
    pm = sc.v1.payment_methods.retrieve(str(si.payment_method))
    assert pm.customer == cus.id
    with pytest.raises(stripe.CardError, match=r"Your card was declined"):
        sc.v1.setup_intents.create(
            params={"customer": cus.id, "payment_method": "pm_card_chargeDeclined", "confirm": True}
        )
    three_ds = sc.v1.setup_intents.create(
        params={
            "customer": cus.id,
            "confirm": True,
            "return_url": "https://x/y",
            "payment_method": "pm_card_authenticationRequired",
        }
    )
    assert three_ds.status == "requires_action"
    assert "setup_intent.succeeded" in event_types(sc, "setup_intent")


def test_subscription_default_incomplete_paid_with_confirmation_secret(sc: stripe.StripeClient) -> None:
    cus = sc.v1.customers.create(params={"email": "new@example.com"})
    price = monthly_price(sc)
    sub = sc.v1.subscriptions.create(
        params={
            "customer": cus.id,
            "items": [{"price": price.id}],
            "payment_behavior": "default_incomplete",
            "payment_settings": {"save_default_payment_method": "on_subscription"},
            "expand": ["latest_invoice.confirmation_secret"],
        }
    )
    assert sub.status == "incomplete"
    invoice = sub.latest_invoice
    assert isinstance(invoice, stripe.Invoice)
    assert invoice.status == "open" and invoice.billing_reason == "subscription_create"
    assert invoice.amount_due == 1000 and invoice.hosted_invoice_url and invoice.invoice_pdf
    assert invoice.confirmation_secret is not None and invoice.confirmation_secret.type == "payment_intent"
    item = sub["items"].data[0]
    assert item.current_period_end - item.current_period_start >= 28 * DAY
    pi_id = invoice.confirmation_secret.client_secret.split("_secret_")[0]
    with pytest.raises(stripe.CardError, match=r"Your card was declined"):
        sc.v1.payment_intents.confirm(pi_id, params={"payment_method": "pm_card_chargeDeclined"})
    assert sc.v1.subscriptions.retrieve(sub.id).status == "incomplete"
    sc.v1.payment_intents.confirm(pi_id, params={"payment_method": "pm_card_visa"})
    sub = sc.v1.subscriptions.retrieve(sub.id, params={"expand": ["latest_invoice.payments"]})
    assert sub.status == "active"
    assert sub.default_payment_method is not None
    paid = sub.latest_invoice
    assert isinstance(paid, stripe.Invoice) and paid.status == "paid" and paid.amount_paid == 1000
    assert paid.payments is not None and paid.payments.data[0].payment.payment_intent == pi_id
    assert event_types(sc, "customer.subscription") == [
        "customer.subscription.created",
        "customer.subscription.updated",
    ]
    assert event_types(sc, "invoice") == [
        "invoice.created",
        "invoice.finalized",
        "invoice.payment_failed",
        "invoice.paid",
        "invoice.payment_succeeded",
    ]


def test_allow_incomplete_charges_default_card(sc: stripe.StripeClient) -> None:
    cus = customer_with_card(sc, None)
    sub = sc.v1.subscriptions.create(params={"customer": cus.id, "items": [{"price": monthly_price(sc).id}]})
    assert sub.status == "active"
    declined = customer_with_card(sc, None, "pm_card_chargeCustomerFail")
    with pytest.raises(stripe.CardError, match=r"Your card was declined"):
        sc.v1.subscriptions.create(
            params={
                "customer": declined.id,
                "items": [{"price": monthly_price(sc).id}],
                "payment_behavior": "error_if_incomplete",
            }
        )


def test_renewals_then_failed_renewal_retries_and_cancels(
    sc: stripe.StripeClient, clock: stripe.test_helpers.TestClock
) -> None:
    cus = customer_with_card(sc, clock.id)
    sub = sc.v1.subscriptions.create(params={"customer": cus.id, "items": [{"price": monthly_price(sc).id}]})
    assert sub.status == "active" and sub.test_clock == clock.id
    start = clock.frozen_time
    clock = sc.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": start + 32 * DAY})
    assert clock.status == "ready"
    invoices = sc.v1.invoices.list(params={"subscription": sub.id}).data
    assert [(i.billing_reason, i.status) for i in invoices] == [
        ("subscription_cycle", "paid"),
        ("subscription_create", "paid"),
    ]
    # The card starts failing: the next renewal fails and is retried on a schedule, then the subscription ends.
    bad = sc.v1.payment_methods.attach("pm_card_chargeCustomerFail", params={"customer": cus.id})
    sc.v1.customers.update(cus.id, params={"invoice_settings": {"default_payment_method": bad.id}})
    sub = sc.v1.subscriptions.retrieve(sub.id)
    renewal = sub["items"].data[0].current_period_end
    sc.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": renewal + DAY})
    sub = sc.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "past_due"
    failing = sc.v1.invoices.retrieve(str(sub.latest_invoice))
    assert failing.status == "open" and failing.attempt_count == 1
    assert failing.next_payment_attempt == renewal + 3 * DAY
    sc.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": renewal + 10 * DAY})
    sub = sc.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "canceled"
    assert sub.cancellation_details is not None and sub.cancellation_details.reason == "payment_failed"
    failing = sc.v1.invoices.retrieve(failing.id)
    assert failing.attempt_count == 4 and failing.next_payment_attempt is None
    assert event_types(sc, "invoice.payment_failed").count("invoice.payment_failed") == 4
    deleted = sc.v1.events.list(params={"type": "customer.subscription.deleted"}).data[0]
    assert deleted.created == renewal + 7 * DAY  # events carry the simulated time
    assert deleted.request is not None and deleted.request.id is None


def test_exhausted_retries_can_mark_unpaid(
    emulator: EmulatorServer, sc: stripe.StripeClient, clock: stripe.test_helpers.TestClock
) -> None:
    assert emulator.control("settings", {"after_failed_retries": "unpaid"})["after_failed_retries"] == "unpaid"
    cus = customer_with_card(sc, clock.id, "pm_card_chargeCustomerFail")
    sub = sc.v1.subscriptions.create(
        params={"customer": cus.id, "items": [{"price": monthly_price(sc).id}], "trial_period_days": 1}
    )
    sc.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": clock.frozen_time + 12 * DAY})
    sub = sc.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "unpaid"
    assert sc.v1.invoices.retrieve(str(sub.latest_invoice)).attempt_count == 4


def test_trial_ends_into_paid_subscription(sc: stripe.StripeClient, clock: stripe.test_helpers.TestClock) -> None:
    cus = customer_with_card(sc, clock.id)
    sub = sc.v1.subscriptions.create(
        params={"customer": cus.id, "items": [{"price": monthly_price(sc).id}], "trial_period_days": 7}
    )
    assert sub.status == "trialing" and sub.trial_end == clock.frozen_time + 7 * DAY
    first = sc.v1.invoices.retrieve(str(sub.latest_invoice))
    assert first.amount_due == 0 and first.status == "paid"
    sc.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": clock.frozen_time + 5 * DAY})
    assert "customer.subscription.trial_will_end" in event_types(sc)
    assert sc.v1.subscriptions.retrieve(sub.id).status == "trialing"
    sc.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": clock.frozen_time + 8 * DAY})
    sub = sc.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "active"
    latest = sc.v1.invoices.retrieve(str(sub.latest_invoice))
    assert latest.status == "paid" and latest.amount_paid == 1000


@pytest.mark.parametrize(
    ("behavior", "renewal_status"),
    [("keep_as_draft", "draft"), ("mark_uncollectible", "uncollectible"), ("void", "void")],
)
def test_paused_collection_invoices_each_period_without_charging_until_it_resumes(
    sc: stripe.StripeClient, clock: stripe.test_helpers.TestClock, behavior: str, renewal_status: str
) -> None:
    cus = customer_with_card(sc, clock.id)
    sub = sc.v1.subscriptions.create(params={"customer": cus.id, "items": [{"price": monthly_price(sc).id}]})
    start = clock.frozen_time
    resumes = start + 45 * DAY
    sub = sc.v1.subscriptions.update(
        sub.id,
        params={"pause_collection": {"behavior": behavior, "resumes_at": resumes}},  # type: ignore[typeddict-item]
    )
    assert sub.pause_collection is not None
    assert (sub.pause_collection.behavior, sub.pause_collection.resumes_at) == (behavior, resumes)
    assert sub.status == "active"  # unlike a paused subscription, the service goes on
    sc.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": start + 32 * DAY})
    invoices = sc.v1.invoices.list(params={"subscription": sub.id}).data
    assert [(i.billing_reason, i.status) for i in invoices] == [
        ("subscription_cycle", renewal_status),
        ("subscription_create", "paid"),
    ]
    sc.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": resumes + DAY})  # resumes_at passed
    assert sc.v1.subscriptions.retrieve(sub.id).pause_collection is None
    sc.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": start + 63 * DAY})
    invoices = sc.v1.invoices.list(params={"subscription": sub.id}).data
    assert invoices[0].status == "paid"  # collected again


def test_pause_collection_refuses_an_unknown_behavior_and_resumes_with_an_empty_value(sc: stripe.StripeClient) -> None:
    cus = customer_with_card(sc, None)
    sub = sc.v1.subscriptions.create(params={"customer": cus.id, "items": [{"price": monthly_price(sc).id}]})
    with pytest.raises(stripe.InvalidRequestError) as refused:
        sc.v1.subscriptions.update(sub.id, params={"pause_collection": {"behavior": "nap"}})  # type: ignore[typeddict-item]
    assert refused.value.param == "pause_collection[behavior]"
    sc.v1.subscriptions.update(sub.id, params={"pause_collection": {"behavior": "void"}})
    assert sc.v1.subscriptions.update(sub.id, params={"pause_collection": ""}).pause_collection is None


def test_cancel_at_period_end_resume_and_cancel_now(
    sc: stripe.StripeClient, clock: stripe.test_helpers.TestClock
) -> None:
    cus = customer_with_card(sc, clock.id)
    price = monthly_price(sc)
    sub = sc.v1.subscriptions.create(params={"customer": cus.id, "items": [{"price": price.id}]})
    sub = sc.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
    assert sub.cancel_at_period_end is True and sub.cancel_at is not None
    sub = sc.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": False})
    assert sub.cancel_at_period_end is False and sub.cancel_at is None
    sub = sc.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
    sc.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": clock.frozen_time + 40 * DAY})
    sub = sc.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "canceled" and sub.ended_at == sub["items"].data[0].current_period_end
    other = sc.v1.subscriptions.create(params={"customer": cus.id, "items": [{"price": price.id}]})
    canceled = sc.v1.subscriptions.cancel(other.id)
    assert canceled.status == "canceled" and canceled.canceled_at is not None
    assert sc.v1.subscriptions.list(params={"customer": cus.id}).data == []
    assert len(sc.v1.subscriptions.list(params={"customer": cus.id, "status": "canceled"}).data) == 2


def test_switch_plan_with_prorations_and_preview(sc: stripe.StripeClient, clock: stripe.test_helpers.TestClock) -> None:
    cus = customer_with_card(sc, clock.id)
    basic, pro = monthly_price(sc, 1000, "Basic"), monthly_price(sc, 3000, "Pro")
    sub = sc.v1.subscriptions.create(params={"customer": cus.id, "items": [{"price": basic.id}]})
    item = sub["items"].data[0]
    half = item.current_period_start + (item.current_period_end - item.current_period_start) // 2
    sc.v1.test_helpers.test_clocks.advance(clock.id, params={"frozen_time": half})
    preview = sc.v1.invoices.create_preview(
        params={
            "customer": cus.id,
            "subscription": sub.id,
            "subscription_details": {
                "items": [{"id": item.id, "price": pro.id}],
                "proration_behavior": "create_prorations",
                "proration_date": half,
            },
        }
    )
    amounts = sorted(line.amount for line in preview.lines.data)
    assert amounts == [-500, 1500, 3000]  # unused Basic, remaining Pro, next month of Pro
    assert preview.amount_due == 4000
    assert sc.v1.subscriptions.retrieve(sub.id)["items"].data[0].price.id == basic.id  # preview changed nothing
    sub = sc.v1.subscriptions.update(
        sub.id,
        params={
            "items": [{"id": item.id, "price": pro.id}],
            "proration_behavior": "always_invoice",
            "proration_date": half,
        },
    )
    assert sub["items"].data[0].price.id == pro.id
    invoice = sc.v1.invoices.retrieve(str(sub.latest_invoice))
    assert invoice.billing_reason == "subscription_update" and invoice.amount_paid == 1000


def test_coupons_and_promotion_codes(sc: stripe.StripeClient) -> None:
    half = sc.v1.coupons.create(params={"id": "HALF", "percent_off": 50, "duration": "once"})
    assert half.id == "HALF" and half.valid is True
    promo = sc.v1.promotion_codes.create(
        params={"promotion": {"type": "coupon", "coupon": half.id}, "code": "WELCOME", "max_redemptions": 1}
    )
    assert promo.code == "WELCOME" and promo.promotion.coupon == "HALF"
    assert [p.id for p in sc.v1.promotion_codes.list(params={"code": "WELCOME"}).data] == [promo.id]
    cus = customer_with_card(sc, None)
    sub = sc.v1.subscriptions.create(
        params={
            "customer": cus.id,
            "items": [{"price": monthly_price(sc).id}],
            "discounts": [{"promotion_code": promo.id}],
        }
    )
    invoice = sc.v1.invoices.retrieve(str(sub.latest_invoice))
    assert invoice.subtotal == 1000 and invoice.total == 500 and invoice.amount_paid == 500
    assert sc.v1.promotion_codes.retrieve(promo.id).times_redeemed == 1
    assert sc.v1.coupons.retrieve("HALF").times_redeemed == 1
    with pytest.raises(stripe.InvalidRequestError, match=r"This promotion code cannot be redeemed: WELCOME"):
        sc.v1.subscriptions.create(
            params={
                "customer": cus.id,
                "items": [{"price": monthly_price(sc).id}],
                "discounts": [{"promotion_code": promo.id}],
            }
        )
    fixed = sc.v1.coupons.create(params={"amount_off": 300, "currency": "usd", "duration": "forever"})
    sub2 = sc.v1.subscriptions.create(
        params={"customer": cus.id, "items": [{"price": monthly_price(sc).id}], "discounts": [{"coupon": fixed.id}]}
    )
    assert sc.v1.invoices.retrieve(str(sub2.latest_invoice)).total == 700
    with pytest.raises(stripe.InvalidRequestError, match=r"exactly one of percent_off or amount_off"):
        sc.v1.coupons.create(params={"percent_off": 10, "amount_off": 5, "currency": "usd"})


def test_coupon_applies_to_limits_the_discount_to_those_products(sc: stripe.StripeClient) -> None:
    pro, basic = monthly_price(sc, 1000, "Pro"), monthly_price(sc, 400, "Basic")
    coupon = sc.v1.coupons.create(
        params={
            "percent_off": 25,
            "duration": "repeating",
            "duration_in_months": 3,
            "applies_to": {"products": [pro.product]},
        }
    )
    assert "applies_to" not in coupon  # includable, like Stripe: only when expanded
    expanded = sc.v1.coupons.retrieve(coupon.id, params={"expand": ["applies_to"]})
    assert expanded.applies_to.products == [pro.product]
    with pytest.raises(stripe.InvalidRequestError, match=r"No such product: 'prod_missing'"):
        sc.v1.coupons.create(params={"percent_off": 5, "applies_to": {"products": ["prod_missing"]}})
    promo = sc.v1.promotion_codes.create(params={"promotion": {"type": "coupon", "coupon": coupon.id}, "code": "PRO25"})
    cus = customer_with_card(sc, None)
    sub = sc.v1.subscriptions.create(
        params={
            "customer": cus.id,
            "items": [{"price": pro.id}, {"price": basic.id}],
            "discounts": [{"promotion_code": promo.id}],
        }
    )
    [discount_id] = sub.discounts
    invoice = sc.v1.invoices.retrieve(str(sub.latest_invoice))
    assert (invoice.subtotal, invoice.total) == (1400, 1150)  # 25 % of the Pro line only
    assert [(d.amount, d.discount) for d in invoice.total_discount_amounts] == [(250, discount_id)]
    by_amount = {line.amount: line for line in invoice.lines.data}
    assert [d.amount for d in by_amount[1000].discount_amounts] == [250]
    assert by_amount[400].discount_amounts == []


def test_checkout_session_with_a_preset_promotion_code(sc: stripe.StripeClient) -> None:
    coupon = sc.v1.coupons.create(params={"percent_off": 20, "duration": "forever"})
    promo = sc.v1.promotion_codes.create(params={"promotion": {"type": "coupon", "coupon": coupon.id}})
    session = sc.v1.checkout.sessions.create(
        params={
            "mode": "subscription",
            "line_items": [{"price": monthly_price(sc).id, "quantity": 1}],
            "success_url": "https://example.com/ok",
            "discounts": [{"promotion_code": promo.id}],
        }
    )
    assert session.discounts[0].promotion_code == promo.id
    assert (session.amount_subtotal, session.total_details.amount_discount, session.amount_total) == (1000, 200, 800)
    with pytest.raises(
        stripe.InvalidRequestError, match=r"only specify one of these parameters: allow_promotion_codes, discounts"
    ):
        sc.v1.checkout.sessions.create(
            params={
                "mode": "subscription",
                "line_items": [{"price": monthly_price(sc).id, "quantity": 1}],
                "success_url": "https://example.com/ok",
                "allow_promotion_codes": True,
                "discounts": [{"promotion_code": promo.id}],
            }
        )


async def test_async_subscription_flow(asc: stripe.StripeClient) -> None:
    cus = await asc.v1.customers.create_async()
    price = await asc.v1.prices.create_async(
        params={
            "currency": "usd",
            "unit_amount": 900,
            "recurring": {"interval": "year"},
            "product_data": {"name": "Annual"},
        }
    )
    sub = await asc.v1.subscriptions.create_async(
        params={
            "customer": cus.id,
            "items": [{"price": price.id}],
            "payment_behavior": "default_incomplete",
            "expand": ["latest_invoice.confirmation_secret"],
        }
    )
    invoice = sub.latest_invoice
    assert isinstance(invoice, stripe.Invoice) and invoice.confirmation_secret is not None
    pi_id = invoice.confirmation_secret.client_secret.split("_secret_")[0]
    await asc.v1.payment_intents.confirm_async(pi_id, params={"payment_method": "pm_card_visa"})
    assert (await asc.v1.subscriptions.retrieve_async(sub.id)).status == "active"
