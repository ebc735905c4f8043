"""Membership credits: the ledger (allocations, usages, refunds, expiries, adjustments) and balances."""
