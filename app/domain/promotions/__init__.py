"""Promo codes: the admin pages, the rules that decide whether a code applies, and the discount arithmetic."""
