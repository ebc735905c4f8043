"""REST resources; importing this package registers every route."""

from app.stripe_emulator.resources import (  # noqa: F401 - imported for route registration
    balance_transactions,
    catalog,
    charges,
    checkout,
    coupons,
    customers,
    disputes,
    events,
    invoices,
    payment_intents,
    payment_methods,
    refunds,
    setup_intents,
    subscriptions,
    tax_rates,
    test_clocks,
)
