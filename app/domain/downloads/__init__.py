"""Purchased-file downloads: entitlements, signed expiring links, counted downloads, fresh links."""
