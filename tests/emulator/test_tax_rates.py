"""Exclusive Tax Rates on subscription invoices, computed per line as Stripe does (#13 item 6)."""

from __future__ import annotations

import stripe


def _rate(sc: stripe.StripeClient, name: str, percentage: float, state: str) -> stripe.TaxRate:
    return sc.v1.tax_rates.create(
        params={"display_name": name, "percentage": percentage, "inclusive": False, "country": "CA", "state": state}
    )


def test_quebec_invoice_adds_gst_and_qst_per_line(sc: stripe.StripeClient) -> None:
    gst = _rate(sc, "GST", 5, "QC")
    qst = _rate(sc, "QST", 9.975, "QC")
    customer = sc.v1.customers.create()
    price = sc.v1.prices.create(
        params={
            "currency": "cad",
            "unit_amount": 4900,
            "product_data": {"name": "M"},
            "recurring": {"interval": "month"},
        }
    )
    sub = sc.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": price.id, "tax_rates": [gst.id, qst.id]}],
            "payment_behavior": "default_incomplete",
        }
    )
    invoice = sc.v1.invoices.retrieve(str(sub.latest_invoice))
    # 4900 * 5% = 245; 4900 * 9.975% = 488.775 -> 489; total = 4900 + 245 + 489.
    assert [t.amount for t in invoice.total_taxes or []] == [245, 489]
    assert invoice.total == 5634 and invoice.amount_due == 5634
    assert invoice.total_excluding_tax == 4900 and invoice.subtotal == 4900
    line_taxes = invoice.lines.data[0].taxes or []
    assert [(t.amount, t.tax_behavior, t.taxable_amount) for t in line_taxes] == [
        (245, "exclusive", 4900),
        (489, "exclusive", 4900),
    ]


def test_default_tax_rates_apply_and_inactive_rates_stay_retrievable(sc: stripe.StripeClient) -> None:
    hst = _rate(sc, "HST", 13, "ON")
    customer = sc.v1.customers.create()
    price = sc.v1.prices.create(
        params={
            "currency": "cad",
            "unit_amount": 1000,
            "product_data": {"name": "M"},
            "recurring": {"interval": "month"},
        }
    )
    sub = sc.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": price.id}],
            "default_tax_rates": [hst.id],
            "payment_behavior": "default_incomplete",
        }
    )
    invoice = sc.v1.invoices.retrieve(str(sub.latest_invoice))
    assert invoice.total == 1130
    updated = sc.v1.tax_rates.update(hst.id, params={"active": False})
    assert updated.active is False and sc.v1.tax_rates.retrieve(hst.id).percentage == 13


def test_changing_item_tax_rates_applies_to_the_next_invoice_without_proration(sc: stripe.StripeClient) -> None:
    gst = _rate(sc, "GST", 5, "AB")
    hst = _rate(sc, "HST", 13, "ON")
    customer = sc.v1.customers.create()
    price = sc.v1.prices.create(
        params={
            "currency": "cad",
            "unit_amount": 1000,
            "product_data": {"name": "M"},
            "recurring": {"interval": "month"},
        }
    )
    sub = sc.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": price.id, "tax_rates": [gst.id]}],
            "payment_behavior": "default_incomplete",
        }
    )
    item = sub["items"].data[0]
    sc.v1.subscription_items.update(item.id, params={"tax_rates": [hst.id], "proration_behavior": "none"})
    preview = sc.v1.invoices.create_preview(params={"subscription": sub.id})
    assert preview.total == 1130
    assert sc.v1.invoices.retrieve(str(sub.latest_invoice)).total == 1050
