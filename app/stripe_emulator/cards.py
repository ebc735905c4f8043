"""Stripe test cards and their behaviour."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TestCard:
    number: str
    brand: str
    funding: str = "credit"
    # outcome on charge: "succeeded", "decline", "3ds"
    outcome: str = "succeeded"
    decline_code: str | None = None
    code: str = "card_declined"
    attach_fails: bool = False
    country: str = "US"
    # what a refund of its charge does: "succeeded" at once, "pending" then succeeded (Stripe's 7726), or
    # "fails": succeeded, then failed later (Stripe's 5126). The later step is driven by the control API.
    refund: str = "succeeded"
    # Stripe's dispute cards: the charge succeeds, then is disputed at once with this reason (0259: fraudulent).
    dispute: str | None = None


CARDS: dict[str, TestCard] = {
    c.number: c
    for c in (
        TestCard("4242424242424242", "visa"),
        TestCard("4000056655665556", "visa", "debit"),
        TestCard("5555555555554444", "mastercard"),
        TestCard("2223003122003222", "mastercard"),
        TestCard("378282246310005", "amex"),
        TestCard("6011111111111117", "discover"),
        TestCard("4000000000005126", "visa", refund="fails"),
        TestCard("4000000000007726", "visa", refund="pending"),
        TestCard("4000000000000259", "visa", dispute="fraudulent"),
        TestCard("4000000000002685", "visa", dispute="product_not_received"),
        TestCard("4000000000000002", "visa", outcome="decline", decline_code="generic_decline", attach_fails=True),
        TestCard("4000000000009995", "visa", outcome="decline", decline_code="insufficient_funds"),
        TestCard("4000000000009987", "visa", outcome="decline", decline_code="lost_card", attach_fails=True),
        TestCard("4000000000009979", "visa", outcome="decline", decline_code="stolen_card", attach_fails=True),
        TestCard(
            "4000000000000069",
            "visa",
            outcome="decline",
            decline_code="expired_card",
            code="expired_card",
            attach_fails=True,
        ),
        TestCard(
            "4000000000000127",
            "visa",
            outcome="decline",
            decline_code="incorrect_cvc",
            code="incorrect_cvc",
            attach_fails=True,
        ),
        # Attaches fine, every later charge is declined (Stripe's 0341).
        TestCard("4000000000000341", "visa", outcome="decline", decline_code="generic_decline"),
        TestCard("4000002500003155", "visa", outcome="3ds"),
        TestCard("4000002760003184", "visa", outcome="3ds"),
        TestCard("4000000000003220", "visa", outcome="3ds"),
    )
}

# Stripe's magic PaymentMethod ids (``pm_card_visa`` ...) mapped to the card they stand for.
MAGIC_PMS: dict[str, str] = {
    "pm_card_visa": "4242424242424242",
    "pm_card_visa_debit": "4000056655665556",
    "pm_card_mastercard": "5555555555554444",
    "pm_card_amex": "378282246310005",
    "pm_card_discover": "6011111111111117",
    "pm_card_chargeDeclined": "4000000000000002",
    "pm_card_chargeDeclinedInsufficientFunds": "4000000000009995",
    "pm_card_chargeDeclinedLostCard": "4000000000009987",
    "pm_card_chargeDeclinedStolenCard": "4000000000009979",
    "pm_card_chargeDeclinedExpiredCard": "4000000000000069",
    "pm_card_chargeDeclinedIncorrectCvc": "4000000000000127",
    "pm_card_chargeCustomerFail": "4000000000000341",
    "pm_card_authenticationRequired": "4000002500003155",
    "pm_card_threeDSecureRequired": "4000002760003184",
    "pm_card_threeDSecure2Required": "4000000000003220",
    "pm_card_refundFail": "4000000000005126",
    "pm_card_pendingRefund": "4000000000007726",
    "pm_card_createDispute": "4000000000000259",
    "pm_card_createDisputeProductNotReceived": "4000000000002685",
}
MAGIC_TOKENS = {"tok_" + k.removeprefix("pm_card_"): v for k, v in MAGIC_PMS.items()}

DECLINE_MESSAGES = {
    "generic_decline": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
    "lost_card": "Your card was declined.",
    "stolen_card": "Your card was declined.",
    "expired_card": "Your card has expired.",
    "incorrect_cvc": "Your card's security code is incorrect.",
}


def luhn_ok(number: str) -> bool:
    digits = [int(d) for d in number]
    total = 0
    for i, digit in enumerate(reversed(digits)):
        value = digit * 2 if i % 2 else digit
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def brand_for(number: str) -> str:
    if number.startswith("4"):
        return "visa"
    if number[:2] in {"51", "52", "53", "54", "55"} or (number[:4].isdigit() and 2221 <= int(number[:4]) <= 2720):
        return "mastercard"
    if number[:2] in {"34", "37"}:
        return "amex"
    if number.startswith(("6011", "65")):
        return "discover"
    return "unknown"


def lookup(number: str) -> TestCard:
    return CARDS.get(number) or TestCard(number, brand_for(number))
