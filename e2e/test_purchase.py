"""Buying: cart → checkout with tax → Payment Element (the emulator's Stripe.js) → webhook → receipt → downloads."""

from __future__ import annotations

import json
import re
import urllib.request

from playwright.sync_api import Page, expect

from e2e.conftest import CUSTOMER, LiveServer, register, sign_in, unique_email, wait_for_mail
from tests.support import body_text

GUIDE = ("field-guide-sourdough", "A Field Guide to Sourdough")  # $15.00
PRICING = ("pricing-digital-products", "Pricing Digital Products")  # $19.00
BOOKS = ("small-shop-bookkeeping", "Bookkeeping for Small Shops")  # $24.00


def add_to_cart(page: Page, slug: str, name: str) -> None:
    page.goto(f"/products/{slug}")
    badge = page.locator("#cart-badge .badge")
    before = int(badge.inner_text() or 0)
    page.get_by_role("button", name=f"Add to cart: {name}").click()
    expect(badge).to_have_text(str(before + 1))


def fill_billing(page: Page, *, email: str | None, province: str = "Ontario", postal: str = "M5V 2T6") -> None:
    expect(page).to_have_url(re.compile(r"/checkout$"))
    if email is not None:
        page.get_by_label("Email").fill(email)
    page.get_by_label("Name on the bill").fill("Gail Guest")
    page.get_by_label("Country").select_option("CA")
    page.get_by_label("Province or territory").select_option(label=province)
    page.get_by_label("Postal code").fill(postal)


def continue_to_payment(page: Page) -> str:
    """Submit the billing form; return the PaymentIntent id the pay page mounted."""
    page.get_by_role("button", name="Continue to payment").click()
    expect(page).to_have_url(re.compile(r"/orders/[0-9a-f-]{36}/pay$"))
    expect(page.get_by_label("Card number")).to_be_visible()
    secret = page.locator("#payment-form").get_attribute("data-client-secret") or ""
    return secret.split("_secret_")[0]


def pay_with(page: Page, number: str) -> None:
    page.get_by_label("Card number").fill(number)
    page.get_by_label("Expiration").fill("12 / 34")
    page.get_by_label("CVC").fill("123")
    page.get_by_label("Postal code").fill("M5V 2T6")
    page.get_by_role("button", name=re.compile(r"^Pay ")).click()


def expect_paid(page: Page) -> str:
    """The return page shows "processing" until the webhook lands, then the confirmation; return the order number."""
    heading = page.get_by_role("heading", name=re.compile(r"Order #\d+ is paid"))
    expect(heading).to_be_visible(timeout=20_000)
    match = re.search(r"#(\d+)", heading.inner_text())
    assert match
    return match.group(1)


def test_guest_buys_two_products_gets_a_receipt_and_downloads_up_to_the_limit(
    page: Page, live_server: LiveServer
) -> None:
    email = unique_email("guest")
    add_to_cart(page, *GUIDE)
    add_to_cart(page, *PRICING)
    page.goto("/cart")
    page.get_by_role("link", name="Checkout").click()
    fill_billing(page, email=email)
    # The tax for Ontario is shown before paying: 13 % HST on $34.00.
    summary = page.locator("#order-summary")
    expect(summary).to_contain_text("HST 13%")
    expect(summary).to_contain_text("$4.42 CAD")
    expect(summary).to_contain_text("$38.42 CAD")
    continue_to_payment(page)
    expect(page.get_by_role("button", name="Pay $38.42 CAD")).to_be_enabled()
    pay_with(page, "4242 4242 4242 4242")
    number = expect_paid(page)
    expect(page.locator("#cart-badge .badge")).to_have_text("0")

    # The confirmation's download button hands over the file.
    with page.expect_download() as download:
        page.get_by_role("link", name="Download").first.click()
    assert download.value.suggested_filename.endswith(".zip")

    [receipt] = wait_for_mail(live_server.mailbox, email)
    assert receipt["Subject"] == f"Your Cartwright receipt for order #{number}"
    body = body_text(receipt)
    assert "HST 13%" in body
    assert "$38.42 CAD" in body
    links = re.findall(rf"{re.escape(live_server.base_url)}/downloads/(?!resend)\S+", body)
    assert len(links) == 2
    # Each file may be downloaded 5 times: one done above for the first file, four more, then a clear refusal.
    first_product_link = next(link for link in links if page.request.get(link).ok)  # download #2 of that file
    for _ in range(3):
        assert page.request.get(first_product_link).ok  # downloads #3-#5
    refused = page.request.get(first_product_link)
    assert refused.status in {403, 410}
    page.goto(first_product_link)
    expect(page.get_by_role("heading", name=re.compile("used all", re.IGNORECASE))).to_be_visible()


def test_a_signed_in_customer_buys_and_finds_the_order_in_the_account(page: Page) -> None:
    page.goto("/login")
    sign_in(page, *CUSTOMER)
    expect(page.get_by_text(CUSTOMER[0])).to_be_attached()
    add_to_cart(page, *BOOKS)
    page.goto("/checkout")
    expect(page.get_by_text(f"Receipt and downloads go to {CUSTOMER[0]}")).to_be_visible()
    fill_billing(page, email=None, province="Quebec", postal="H2X 1Y4")
    expect(page.locator("#order-summary")).to_contain_text("QST 9.975%")
    continue_to_payment(page)
    pay_with(page, "4242424242424242")
    number = expect_paid(page)
    page.get_by_role("link", name="View in your account").click()
    expect(page.get_by_role("heading", name=re.compile(f"Order #{number}"))).to_be_visible()
    expect(page.locator(".timeline")).to_contain_text("Payment received")
    page.get_by_role("link", name="Orders").click()
    expect(page.get_by_role("link", name=f"#{number}")).to_be_visible()


def test_a_declined_card_then_a_good_one_pays_the_same_order(page: Page) -> None:
    add_to_cart(page, *GUIDE)
    page.goto("/checkout")
    fill_billing(page, email=unique_email("declined"))
    continue_to_payment(page)
    pay_url = page.url
    pay_with(page, "4000 0000 0000 0002")
    expect(page.locator("#payment-errors")).to_have_text("Your card was declined.")
    expect(page).to_have_url(pay_url)  # still on the same order's form
    pay_with(page, "4242 4242 4242 4242")
    expect_paid(page)
    expect(page).to_have_url(re.compile(re.escape(pay_url.removesuffix("/pay")) + r"/complete"))  # same order


def test_3d_secure_challenge_passed_and_failed(page: Page) -> None:
    add_to_cart(page, *PRICING)
    page.goto("/checkout")
    fill_billing(page, email=unique_email("threeds"))
    continue_to_payment(page)
    pay_url = page.url
    pay_with(page, "4000 0025 0000 3155")
    expect(page.get_by_role("heading", name="3D Secure authentication")).to_be_visible()
    page.get_by_role("button", name="Fail").click()
    # Back on our form, with the bank's refusal and a retry on the same order.
    expect(page).to_have_url(pay_url)
    expect(page.locator("#payment-errors")).to_contain_text(re.compile("authenticat", re.IGNORECASE))
    pay_with(page, "4000 0025 0000 3155")
    expect(page.get_by_role("heading", name="3D Secure authentication")).to_be_visible()
    page.get_by_role("button", name="Complete").click()
    expect_paid(page)


def test_a_refund_in_stripe_revokes_the_downloads(page: Page, live_server: LiveServer) -> None:
    email = unique_email("refund")
    add_to_cart(page, *BOOKS)
    page.goto("/checkout")
    fill_billing(page, email=email, province="Alberta", postal="T2P 1J9")
    intent = continue_to_payment(page)
    pay_with(page, "4242 4242 4242 4242")
    expect_paid(page)
    confirmation = page.url
    # The shop owner refunds in the Stripe dashboard (the emulator's stand-in for it).
    request = urllib.request.Request(
        f"{live_server.stripe_url}/_emulator/payment_intents/{intent}/refund",
        data=json.dumps({}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
    notices = wait_for_mail(live_server.mailbox, email, count=2)
    assert any(n["Subject"].startswith("Refund for your Cartwright order") for n in notices)
    page.goto(confirmation)
    expect(page.get_by_text("Not available (refunded)")).to_be_visible()


def emulator_control(live_server: LiveServer, path: str) -> dict[str, object]:
    request = urllib.request.Request(
        f"{live_server.stripe_url}/_emulator/{path}",
        data=json.dumps({}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200
        result: dict[str, object] = json.loads(response.read())
        return result


def test_a_refund_that_fails_later_is_shown_on_the_order_and_the_downloads_come_back(
    page: Page, live_server: LiveServer
) -> None:
    """R2: paid with Stripe's 5126 card; the refund is accepted, then the bank refuses it."""
    email = unique_email("refund-fails")
    register(page, email=email, password="a long enough password")
    add_to_cart(page, *GUIDE)
    page.goto("/checkout")
    fill_billing(page, email=None, province="Alberta", postal="T2P 1J9")
    intent = continue_to_payment(page)
    pay_with(page, "4000 0000 0000 5126")
    expect_paid(page)
    page.get_by_role("link", name="View in your account").click()
    order_page = page.url
    refund = emulator_control(live_server, f"payment_intents/{intent}/refund")  # from the Stripe dashboard
    assert refund["status"] == "succeeded"
    mails = wait_for_mail(live_server.mailbox, email, count=3)  # welcome, receipt, then the refund notice
    assert any(m["Subject"].startswith("Refund for your Cartwright order") for m in mails)
    page.goto(order_page)
    expect(page.locator(".refund-list")).to_contain_text("Refunded")
    expect(page.get_by_role("link", name="Download")).to_have_count(0)  # fully refunded: downloads revoked

    emulator_control(live_server, f"refunds/{refund['id']}/settle")  # some days later: the bank refuses it
    mails = wait_for_mail(live_server.mailbox, email, count=4)
    assert any("did not go through" in m["Subject"] for m in mails)
    page.goto(order_page)
    notice = page.locator("#refund-failed-notice")
    expect(notice).to_be_visible()
    expect(notice).to_contain_text("A refund did not go through.")
    expect(page.locator(".refund-list")).to_contain_text("Failed")
    expect(page.get_by_role("heading", name=re.compile(r"Order #\d+"))).to_contain_text("Paid")
    expect(page.get_by_role("link", name="Download")).to_be_visible()  # the downloads work again
