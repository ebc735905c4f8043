"""Membership plans: the catalogue of plans and prices, their Stripe mirror, the pricing page and member downloads."""
