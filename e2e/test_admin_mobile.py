"""The back office on a phone (#16 item 10): at 390x844 no admin page is wider than the screen (wide tables scroll
inside their own box) and every page's heading is on the first screen (the navigation folds behind one "Menu"
control)."""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, Page, expect

from e2e.conftest import ADMIN, register, sign_in, unique_email
from e2e.test_purchase import GUIDE, add_to_cart, continue_to_payment, expect_paid, fill_billing, pay_with
from e2e.test_subscriptions import pay_with as pay_with_card
from e2e.test_subscriptions import start_subscription

pytestmark = pytest.mark.e2e

PHONE = {"width": 390, "height": 844}

# Every admin page an admin can open (GET, HTML); the detail pages are found from their tables below.
PAGES = (
    "/admin",
    "/admin/products",
    "/admin/products/new",
    "/admin/categories",
    "/admin/categories/new",
    "/admin/orders",
    "/admin/customers",
    "/admin/refunds",
    "/admin/promo-codes",
    "/admin/promo-codes/new",
    "/admin/subscriptions",
    "/admin/bookings",
    "/admin/resources",
    "/admin/resources/new",
    "/admin/resources/holidays",
    "/admin/emails",
    "/admin/users",
    "/admin/audit",
    "/admin/webhooks",
    "/admin/settings",
    "/admin/sync",
)
# (list page, link pattern): the first row's page of each table.
DETAILS = (
    ("/admin/products", r"^/admin/products/[0-9a-f-]{36}$"),
    ("/admin/categories", r"^/admin/categories/[0-9a-f-]{36}$"),
    ("/admin/orders", r"^/admin/orders/[0-9a-f-]{36}$"),
    ("/admin/customers", r"^/admin/customers/[0-9a-f-]{36}$"),
    ("/admin/emails", r"^/admin/emails/[0-9a-f-]{36}$"),
    ("/admin/users", r"^/admin/users/[0-9a-f-]{36}$"),
    ("/admin/webhooks", r"^/admin/webhooks/[0-9a-f-]{36}$"),
    ("/admin/resources", r"^/admin/resources/[0-9a-f-]{36}$"),
    ("/admin/subscriptions", r"^/admin/subscriptions/[0-9a-f-]{36}$"),
)


def a_paid_order(page: Page) -> None:
    """Something in every table: an order, its payment's webhook events, its receipt email, a customer."""
    add_to_cart(page, *GUIDE)
    page.goto("/checkout")
    fill_billing(page, email="phone-buyer@example.com")
    continue_to_payment(page)
    pay_with(page, "4242 4242 4242 4242")
    expect_paid(page)


def admin_signs_in(page: Page, base_url: str) -> None:
    page.goto("/admin")
    sign_in(page, *ADMIN)
    expect(page).to_have_url(f"{base_url}/admin")


def a_member(page: Page) -> None:
    """Something in the subscriptions table: a member on a paid monthly plan."""
    register(page, email=unique_email("phone-member"), password="a long member password", name="Pia Phone")
    start_subscription(page, "Studio")
    pay_with_card(page, "4242 4242 4242 4242")
    expect(page).to_have_url(re.compile(r"/account/subscription$"), timeout=20_000)


def first_link(page: Page, pattern: str) -> str:
    hrefs = page.locator("main a[href^='/admin/']").evaluate_all("links => links.map(a => a.getAttribute('href'))")
    matching = [h for h in hrefs if re.match(pattern, h)]
    assert matching, f"{page.url} links to no {pattern}"
    return str(matching[0])


# On failure: the outermost elements sticking out past the screen outside any scrolling box (what widens the page).
WIDENERS_JS = """() => {
  const out = (e) => e.getBoundingClientRect().right > 392;
  const scrolls = (e) => { for (let p = e.parentElement; p; p = p.parentElement) {
    if (getComputedStyle(p).overflowX !== "visible") return true; } return false; };
  return [...document.querySelectorAll("main *")].filter((e) => out(e) && !out(e.parentElement) && !scrolls(e))
    .slice(0, 6).map((e) => `${e.tagName}.${e.className}#${e.id} (inside ${e.parentElement.tagName})`).join(", ");
}"""


def assert_fits(page: Page, path: str) -> None:
    response = page.goto(path)
    assert response is not None and response.status == 200, path
    page.wait_for_load_state("networkidle")
    width = page.evaluate("document.documentElement.scrollWidth")
    culprits = page.evaluate(WIDENERS_JS) if width > PHONE["width"] else ""
    assert width <= PHONE["width"], f"{path} is {width}px wide on a {PHONE['width']}px phone; widened by {culprits}"
    heading = page.get_by_role("heading", level=1).first
    box = heading.bounding_box()
    assert box is not None, f"{path} has no visible heading"
    assert box["y"] + box["height"] <= PHONE["height"], f"{path}: the heading starts at {box['y']}px"


def test_every_admin_page_fits_a_phone(browser: Browser, base_url: str) -> None:
    shopper = browser.new_context(base_url=base_url)
    try:
        a_paid_order(shopper.new_page())
        shopper.clear_cookies()
        a_member(shopper.new_page())
    finally:
        shopper.close()
    context = browser.new_context(base_url=base_url, viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        admin_signs_in(page, base_url)
        details = []
        for path, pattern in DETAILS:
            page.goto(path)
            details.append(first_link(page, pattern))
        order = next(d for d in details if d.startswith("/admin/orders/"))
        problems = []
        for path in (*PAGES, *details, f"{order}/invoice"):
            try:
                assert_fits(page, path)
            except AssertionError as exc:
                problems.append(str(exc).splitlines()[0])
        assert not problems, "\n".join(problems)
    finally:
        context.close()


def test_the_admin_menu_folds_on_a_phone_and_opens_with_one_control(browser: Browser, base_url: str) -> None:
    context = browser.new_context(base_url=base_url, viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        page = context.new_page()
        admin_signs_in(page, base_url)
        page.goto("/admin/orders")
        nav = page.get_by_role("navigation", name="Admin")
        expect(nav.get_by_role("link", name="Products")).to_be_hidden()
        nav.get_by_text("Menu").click()
        expect(nav.get_by_role("link", name="Products")).to_be_visible()
        nav.get_by_role("link", name="Products").click()
        expect(page).to_have_url(f"{base_url}/admin/products")
        expect(page.get_by_role("heading", level=1, name="Products")).to_be_in_viewport()
    finally:
        context.close()


def test_the_admin_menu_stays_open_on_a_desktop(page: Page, base_url: str) -> None:
    admin_signs_in(page, base_url)
    page.goto("/admin/orders")
    nav = page.get_by_role("navigation", name="Admin")
    expect(nav.get_by_role("link", name="Products")).to_be_visible()
    expect(nav.get_by_text("Menu")).to_be_hidden()
