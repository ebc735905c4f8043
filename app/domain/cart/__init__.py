"""The shopping cart: anonymous carts in the session, signed-in carts in ``cart_items``, prices always re-read."""
