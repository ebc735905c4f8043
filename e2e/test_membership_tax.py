"""A member in Quebec: GST and QST on /pricing, on the subscribe step and on the paid invoice (#13 item 6)."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from e2e.conftest import register, unique_email
from e2e.test_subscriptions import pay_with, reload_until


def test_a_quebec_member_sees_gst_and_qst_on_pricing_the_subscribe_step_and_the_invoice(page: Page) -> None:
    register(page, email=unique_email("quebec"), password="a long member password", name="Québec Member")

    # /pricing: without a province the price says "plus sales tax"; choosing Quebec shows GST and QST.
    page.goto("/pricing")
    community = page.locator("article.plan-card").filter(has=page.get_by_role("heading", name="Community"))
    expect(community).to_contain_text("Plus sales tax")
    page.get_by_label("Show prices with sales tax for").select_option(label="Quebec")
    page.get_by_role("button", name="Show").click()
    expect(community.locator(".plan-tax")).to_contain_text("+ GST 5% $0.95 CAD + QST 9.975% $1.90 CAD = $21.85 CAD")
    expect(page).to_have_url(re.compile(r"province=QC"))

    # The subscribe step keeps the province and itemises the tax.
    community.get_by_role("link", name="Subscribe: Community, monthly").click()
    province = page.get_by_label("Billing province or territory")
    expect(province).to_have_value("QC")
    totals = page.locator("#subscribe-totals")
    expect(totals).to_contain_text("GST 5%")
    expect(totals).to_contain_text("QST 9.975%")
    expect(page.locator("#subscribe-total")).to_have_text("$21.85 CAD")
    # Another province updates the totals in place (HTMX), and back.
    province.select_option(label="Ontario")
    expect(totals).to_contain_text("HST 13%")
    expect(page.locator("#subscribe-total")).to_have_text("$21.47 CAD")
    province.select_option(label="Quebec")
    expect(page.locator("#subscribe-total")).to_have_text("$21.85 CAD")

    page.get_by_role("button", name="Continue to payment").click()
    expect(page).to_have_url(re.compile(r"/subscriptions/[0-9a-f-]{36}/pay$"))
    expect(page.get_by_text("Including $2.85 CAD sales tax.")).to_be_visible()
    pay_with(page, "4242 4242 4242 4242")
    expect(page).to_have_url(re.compile(r"/account/subscription$"), timeout=20_000)
    expect(page.get_by_role("heading", name=re.compile(r"Community\s+Active"))).to_be_visible()

    # The mirrored invoice carries Stripe's tax per component.
    invoice_tax = page.locator("td.invoice-tax")
    reload_until(page, invoice_tax.filter(has_text="QST 9.975% $1.90 CAD"), count=1)
    expect(invoice_tax).to_contain_text("GST 5% $0.95 CAD")
    expect(page.get_by_label("Billing province or territory")).to_have_value("QC")
