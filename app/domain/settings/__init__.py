"""The shop settings an admin edits at /admin/settings (#16 item 6)."""
