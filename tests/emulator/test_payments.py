"""Payments core: test cards, 3-D Secure, payment methods, refunds — all through the official SDK."""

from __future__ import annotations

import urllib.error
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import stripe

from app.stripe_emulator.server import EmulatorServer
from tests.emulator.conftest import make_client


def card_pm(sc: stripe.StripeClient, number: str) -> stripe.PaymentMethod:
    return sc.v1.payment_methods.create(
        params={"type": "card", "card": {"number": number, "exp_month": 12, "exp_year": 2034, "cvc": "123"}}
    )


def test_success_with_raw_card_number(sc: stripe.StripeClient) -> None:
    cus = sc.v1.customers.create(params={"email": "buyer@example.com"})
    pi = sc.v1.payment_intents.create(
        params={
            "amount": 2000,
            "currency": "usd",
            "customer": cus.id,
            "automatic_payment_methods": {"enabled": True},
            "receipt_email": "buyer@example.com",
            "description": "Order 1",
            "metadata": {"order": "1"},
        }
    )
    assert pi.status == "requires_payment_method"
    assert pi.automatic_payment_methods is not None and pi.automatic_payment_methods.enabled is True
    pm = card_pm(sc, "4242424242424242")
    pi = sc.v1.payment_intents.confirm(pi.id, params={"payment_method": pm.id, "return_url": "https://shop/x"})
    assert pi.status == "succeeded"
    assert pi.amount_received == 2000
    charge = sc.v1.charges.retrieve(str(pi.latest_charge))
    assert charge.paid is True and charge.status == "succeeded"
    assert charge.payment_method_details is not None and charge.payment_method_details.card is not None
    assert charge.payment_method_details.card.last4 == "4242"
    assert charge.payment_method_details.card.brand == "visa"
    assert charge.receipt_email == "buyer@example.com"
    assert charge.customer == cus.id
    types = [e.type for e in sc.v1.events.list().data]
    assert types == ["payment_intent.succeeded", "charge.succeeded", "payment_intent.created", "customer.created"]


def test_status_requires_confirmation_then_cancel(sc: stripe.StripeClient) -> None:
    pi = sc.v1.payment_intents.create(params={"amount": 700, "currency": "usd", "payment_method": "pm_card_visa"})
    assert pi.status == "requires_confirmation"
    pi = sc.v1.payment_intents.update(pi.id, params={"amount": 800, "metadata": {"k": "v"}})
    assert pi.amount == 800
    pi = sc.v1.payment_intents.cancel(pi.id, params={"cancellation_reason": "abandoned"})
    assert pi.status == "canceled" and pi.canceled_at is not None
    with pytest.raises(stripe.InvalidRequestError) as info:
        sc.v1.payment_intents.confirm(pi.id)
    assert info.value.code == "payment_intent_unexpected_state"


@pytest.mark.parametrize(
    ("pm", "decline_code", "message"),
    [
        ("pm_card_chargeDeclined", "generic_decline", "Your card was declined."),
        ("pm_card_chargeDeclinedInsufficientFunds", "insufficient_funds", "Your card has insufficient funds."),
    ],
)
def test_declines(sc: stripe.StripeClient, pm: str, decline_code: str, message: str) -> None:
    pi = sc.v1.payment_intents.create(params={"amount": 1000, "currency": "usd"})
    with pytest.raises(stripe.CardError) as info:
        sc.v1.payment_intents.confirm(pi.id, params={"payment_method": pm})
    err = info.value
    assert err.http_status == 402
    assert err.code == "card_declined"
    assert err.error is not None and err.error.decline_code == decline_code
    assert err.user_message == message
    pi = sc.v1.payment_intents.retrieve(pi.id)
    assert pi.status == "requires_payment_method"
    assert pi.last_payment_error is not None
    assert pi.last_payment_error.code == "card_declined"
    assert pi.last_payment_error.decline_code == decline_code
    charge = sc.v1.charges.retrieve(str(pi.latest_charge))
    assert charge.status == "failed" and charge.failure_code == "card_declined"
    types = [e.type for e in sc.v1.events.list().data]
    assert types[:2] == ["payment_intent.payment_failed", "charge.failed"]
    # The customer can retry with a good card.
    assert sc.v1.payment_intents.confirm(pi.id, params={"payment_method": "pm_card_visa"}).status == "succeeded"


def test_decline_with_raw_numbers(sc: stripe.StripeClient) -> None:
    for number, code in (("4000000000000002", "generic_decline"), ("4000000000009995", "insufficient_funds")):
        pm = card_pm(sc, number)
        with pytest.raises(stripe.CardError) as info:
            sc.v1.payment_intents.create(
                params={"amount": 500, "currency": "usd", "payment_method": pm.id, "confirm": True}
            )
        assert info.value.error is not None and info.value.error.decline_code == code


def test_invalid_card_number(sc: stripe.StripeClient) -> None:
    with pytest.raises(stripe.CardError) as info:
        card_pm(sc, "4242424242424241")
    assert info.value.code == "incorrect_number"


def _three_ds(
    emulator: EmulatorServer, sc: stripe.StripeClient, action: str
) -> tuple[stripe.PaymentIntent, dict[str, list[str]]]:
    pi = sc.v1.payment_intents.create(
        params={
            "amount": 4200,
            "currency": "usd",
            "payment_method": card_pm(sc, "4000002500003155").id,
            "confirm": True,
            "return_url": "https://shop.example/return?order=9",
        }
    )
    assert pi.status == "requires_action"
    assert pi.next_action is not None and pi.next_action.type == "redirect_to_url"
    url = pi.next_action.redirect_to_url.url  # type: ignore[union-attr]
    assert url is not None and url.startswith(emulator.url)
    page = httpx.get(url)
    assert page.status_code == 200
    assert ">Complete</button>" in page.text and ">Fail</button>" in page.text and "Test mode" in page.text
    secret = parse_qs(urlsplit(url).query)["client_secret"][0]
    done = httpx.post(f"{emulator.url}/_emulator/3ds/{pi.id}", data={"client_secret": secret, "action": action})
    assert done.status_code == 303
    location = urlsplit(done.headers["location"])
    assert location.netloc == "shop.example" and location.path == "/return"
    return sc.v1.payment_intents.retrieve(pi.id), parse_qs(location.query)


def test_three_d_secure_complete(emulator: EmulatorServer, sc: stripe.StripeClient) -> None:
    pi, query = _three_ds(emulator, sc, "complete")
    assert pi.status == "succeeded"
    assert query["redirect_status"] == ["succeeded"]
    assert query["payment_intent"] == [pi.id]
    assert query["payment_intent_client_secret"] == [pi.client_secret]
    assert query["order"] == ["9"]


def test_three_d_secure_fail(emulator: EmulatorServer, sc: stripe.StripeClient) -> None:
    pi, query = _three_ds(emulator, sc, "fail")
    assert pi.status == "requires_payment_method"
    assert pi.last_payment_error is not None
    assert pi.last_payment_error.code == "payment_intent_authentication_failure"
    assert query["redirect_status"] == ["failed"]


def test_three_d_secure_off_session_declines(sc: stripe.StripeClient) -> None:
    with pytest.raises(stripe.CardError) as info:
        sc.v1.payment_intents.create(
            params={
                "amount": 500,
                "currency": "usd",
                "confirm": True,
                "off_session": True,
                "payment_method": "pm_card_authenticationRequired",
            }
        )
    assert info.value.error is not None and info.value.error.decline_code == "authentication_required"


def test_0341_attaches_but_charges_fail(sc: stripe.StripeClient) -> None:
    cus = sc.v1.customers.create()
    pm = sc.v1.payment_methods.attach(card_pm(sc, "4000000000000341").id, params={"customer": cus.id})
    assert pm.customer == cus.id
    sc.v1.customers.update(cus.id, params={"invoice_settings": {"default_payment_method": pm.id}})
    with pytest.raises(stripe.CardError) as info:
        sc.v1.payment_intents.create(
            params={
                "amount": 900,
                "currency": "usd",
                "customer": cus.id,
                "payment_method": pm.id,
                "confirm": True,
                "off_session": True,
            }
        )
    assert info.value.code == "card_declined"
    with pytest.raises(stripe.CardError, match=r"Your card was declined"):
        sc.v1.payment_methods.attach(card_pm(sc, "4000000000000002").id, params={"customer": cus.id})


def test_payment_method_attach_detach_list(sc: stripe.StripeClient) -> None:
    cus = sc.v1.customers.create()
    visa = sc.v1.payment_methods.attach("pm_card_visa", params={"customer": cus.id})
    master = sc.v1.payment_methods.attach(card_pm(sc, "5555555555554444").id, params={"customer": cus.id})
    assert master.card is not None and master.card.brand == "mastercard"
    listed = sc.v1.payment_methods.list(params={"customer": cus.id, "type": "card"})
    assert {p.id for p in listed.data} == {visa.id, master.id}
    assert len(sc.v1.customers.payment_methods.list(cus.id).data) == 2
    sc.v1.payment_methods.detach(visa.id)
    assert [p.id for p in sc.v1.payment_methods.list(params={"customer": cus.id}).data] == [master.id]
    types = [e.type for e in sc.v1.events.list(params={"type": "payment_method.*"}).data]
    assert types == ["payment_method.detached", "payment_method.attached", "payment_method.attached"]


def _paid_intent(sc: stripe.StripeClient, amount: int = 5000) -> stripe.PaymentIntent:
    return sc.v1.payment_intents.create(
        params={"amount": amount, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    )


def test_partial_then_full_refund(sc: stripe.StripeClient) -> None:
    pi = _paid_intent(sc)
    partial = sc.v1.refunds.create(
        params={
            "payment_intent": pi.id,
            "amount": 1500,
            "reason": "requested_by_customer",
            "metadata": {"ticket": "42"},
        }
    )
    assert partial.status == "succeeded" and partial.amount == 1500 and partial.reason == "requested_by_customer"
    charge = sc.v1.charges.retrieve(str(pi.latest_charge))
    assert charge.amount_refunded == 1500 and charge.refunded is False
    rest = sc.v1.refunds.create(params={"charge": charge.id})
    assert rest.amount == 3500
    charge = sc.v1.charges.retrieve(charge.id)
    assert charge.amount_refunded == 5000 and charge.refunded is True
    assert {r.id for r in charge.refunds.data} == {partial.id, rest.id}  # type: ignore[union-attr]
    assert [r.id for r in sc.v1.refunds.list(params={"payment_intent": pi.id}).data] == [rest.id, partial.id]
    updated = sc.v1.refunds.update(partial.id, params={"metadata": {"ticket": ""}})
    assert updated.metadata.to_dict() == {}
    types = [e.type for e in sc.v1.events.list(params={"types": ["charge.refunded", "refund.created"]}).data]
    assert types == ["refund.created", "charge.refunded", "refund.created", "charge.refunded"]


def test_over_refund_rejected(sc: stripe.StripeClient) -> None:
    pi = _paid_intent(sc, 1000)
    with pytest.raises(stripe.InvalidRequestError) as info:
        sc.v1.refunds.create(params={"payment_intent": pi.id, "amount": 1001})
    assert info.value.code == "amount_too_large"
    assert info.value.param == "amount"
    sc.v1.refunds.create(params={"payment_intent": pi.id})
    with pytest.raises(stripe.InvalidRequestError) as again:
        sc.v1.refunds.create(params={"payment_intent": pi.id, "amount": 1})
    assert again.value.code == "charge_already_refunded"


def test_refund_of_unpaid_intent_rejected(sc: stripe.StripeClient) -> None:
    pi = sc.v1.payment_intents.create(params={"amount": 1000, "currency": "usd"})
    with pytest.raises(stripe.InvalidRequestError, match=r"does not have a successful charge to refund"):
        sc.v1.refunds.create(params={"payment_intent": pi.id})


def test_dashboard_refund_via_control_api(emulator: EmulatorServer, sc: stripe.StripeClient) -> None:
    pi = _paid_intent(sc, 1200)
    refund = emulator.control(f"payment_intents/{pi.id}/refund", {"amount": 200})
    assert refund["amount"] == 200
    event = sc.v1.events.list(params={"type": "charge.refunded"}).data[0]
    assert event.request is not None and event.request.id is None


def _paid_with(sc: stripe.StripeClient, card_number: str, amount: int = 3000) -> stripe.PaymentIntent:
    pm = card_pm(sc, card_number)
    return sc.v1.payment_intents.create(
        params={"amount": amount, "currency": "usd", "payment_method": pm.id, "confirm": True}
    )


def test_5126_refund_succeeds_then_fails_when_settled(emulator: EmulatorServer, sc: stripe.StripeClient) -> None:
    """Stripe's 4000 0000 0000 5126: the refund starts `succeeded` and fails later (refund.failed)."""
    pi = _paid_with(sc, "4000000000005126")
    refund = sc.v1.refunds.create(params={"payment_intent": pi.id})
    assert refund.status == "succeeded"
    assert sc.v1.charges.retrieve(str(pi.latest_charge)).amount_refunded == 3000
    failed = emulator.control(f"refunds/{refund.id}/settle")
    assert (failed["status"], failed["failure_reason"]) == ("failed", "expired_or_canceled_card")
    assert failed["failure_balance_transaction"].startswith("txn_")
    assert sc.v1.refunds.retrieve(refund.id).status == "failed"
    charge = sc.v1.charges.retrieve(str(pi.latest_charge))
    assert (charge.amount_refunded, charge.refunded) == (0, False)
    types = [e.type for e in sc.v1.events.list(params={"limit": 3}).data]
    assert types == ["charge.refund.updated", "refund.failed", "refund.updated"]
    updated = sc.v1.events.list(params={"type": "refund.updated"}).data[0]
    assert updated.data.previous_attributes is not None
    assert updated.data.previous_attributes["status"] == "succeeded"
    # Settled once: a second settle is refused, and so is settling an ordinary card's refund.
    with pytest.raises(urllib.error.HTTPError):
        emulator.control(f"refunds/{refund.id}/settle")
    plain = sc.v1.refunds.create(params={"payment_intent": _paid_intent(sc).id})
    with pytest.raises(urllib.error.HTTPError):
        emulator.control(f"refunds/{plain.id}/settle")


def test_7726_refund_is_pending_then_succeeds_when_settled(emulator: EmulatorServer, sc: stripe.StripeClient) -> None:
    """Stripe's 4000 0000 0000 7726 (pm_card_pendingRefund): `pending`, then `succeeded` (refund.updated)."""
    pi = sc.v1.payment_intents.create(
        params={"amount": 3000, "currency": "usd", "payment_method": "pm_card_pendingRefund", "confirm": True}
    )
    refund = sc.v1.refunds.create(params={"payment_intent": pi.id, "amount": 1000})
    assert refund.status == "pending"
    assert sc.v1.charges.retrieve(str(pi.latest_charge)).amount_refunded == 1000  # pending counts, as at Stripe
    settled = emulator.control(f"refunds/{refund.id}/settle")
    assert settled["status"] == "succeeded" and "failure_reason" not in settled
    assert sc.v1.charges.retrieve(str(pi.latest_charge)).amount_refunded == 1000
    types = [e.type for e in sc.v1.events.list(params={"limit": 2}).data]
    assert types == ["charge.refund.updated", "refund.updated"]


def test_publishable_key_confirms_with_client_secret(emulator: EmulatorServer, sc: stripe.StripeClient) -> None:
    pi = sc.v1.payment_intents.create(params={"amount": 1000, "currency": "usd"})
    pk = make_client(emulator.url, key="pk_test_shop")
    pm = pk.v1.payment_methods.create(
        params={"type": "card", "card": {"number": "4242424242424242", "exp_month": 1, "exp_year": 2040}}
    )
    with pytest.raises(stripe.AuthenticationError, match=r"publishable API key without a client_secret"):
        pk.v1.payment_intents.retrieve(pi.id)
    confirmed = pk.v1.payment_intents.confirm(
        pi.id,
        params={"payment_method": pm.id, "client_secret": pi.client_secret},  # type: ignore[typeddict-unknown-key]
    )
    assert confirmed.status == "succeeded"
    cors = httpx.options(
        f"{emulator.url}/v1/payment_intents/{pi.id}",
        headers={
            "Origin": "http://shop.local",
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "authorization",
        },
    )
    assert cors.headers.get("access-control-allow-origin") in ("*", "http://shop.local")


async def test_async_payment_flow(asc: stripe.StripeClient) -> None:
    pi = await asc.v1.payment_intents.create_async(params={"amount": 3100, "currency": "usd"})
    pi = await asc.v1.payment_intents.confirm_async(pi.id, params={"payment_method": "pm_card_visa"})
    assert pi.status == "succeeded"
    with pytest.raises(stripe.CardError, match=r"Your card was declined"):
        await asc.v1.payment_intents.create_async(
            params={"amount": 3100, "currency": "usd", "payment_method": "pm_card_chargeDeclined", "confirm": True}
        )
    refund = await asc.v1.refunds.create_async(params={"payment_intent": pi.id, "amount": 100})
    assert refund.amount == 100
