"""The cart: what a shopper means to buy, priced from the database every time it is shown or checked out.

Anonymous visitors keep ``session["cart"] = {product_id: quantity}``; signed-in customers keep ``cart_items`` rows,
and the session cart merges into them at sign-in. ``session["cart_count"]`` mirrors the cart's size so the header
badge on every page needs no query. The client only ever sends product ids and quantities, never prices.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from sqlalchemy import case, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Executable

from app.db import models as m
from app.domain.catalog.stock_holds import products_on_hold
from app.lib.exceptions import ApplicationError, ConflictError, NotFoundError

MAX_QUANTITY = 10
# The shop sells in Canadian dollars: a cart with nothing buyable in it is priced in them.
DEFAULT_CURRENCY = "CAD"

SESSION_CART_KEY = "cart"
SESSION_COUNT_KEY = "cart_count"
# Kept when sign-in or a password change moves the session to a new id: the anonymous cart until it is merged,
# and the badge count.
# and the promo code typed into the cart ("promo_code", app/domain/promotions/services.py).
CART_SESSION_KEYS = (SESSION_CART_KEY, SESSION_COUNT_KEY, "promo_code")

NO_LONGER_FOR_SALE = "No longer for sale"
SOLD_OUT = "Sold out"
# The last units are held for another buyer's pending order: they come back if that order is not paid in time.
HELD_ELSEWHERE = "Another buyer is checking out the last one; it may be back in a few minutes"


class QuantityError(ApplicationError):
    status_code = 422

    def __init__(self, message: str = f"Choose a quantity from 1 to {MAX_QUANTITY}.") -> None:
        super().__init__(message)


def limit_for(product: m.Product) -> int:
    """The most of ``product`` one cart line may hold: ``MAX_QUANTITY``, or what is left of a limited edition."""
    if product.stock is None:
        return MAX_QUANTITY
    return max(0, min(MAX_QUANTITY, product.stock))


@dataclass(frozen=True)
class CartLine:
    product: m.Product
    quantity: int
    problem: str | None = None  # shown to the shopper; the line is left out of the order and the subtotal
    notice: str | None = None  # shown to the shopper; the line is still bought

    @property
    def unit_price(self) -> int:
        return self.product.price

    @property
    def subtotal(self) -> int:
        return self.unit_price * self.quantity

    @property
    def max_quantity(self) -> int:
        return limit_for(self.product)


@dataclass(frozen=True)
class PricedCart:
    lines: list[CartLine]
    currency: str

    @property
    def purchasable(self) -> list[CartLine]:
        return [line for line in self.lines if line.problem is None]

    @property
    def subtotal(self) -> int:
        """Minor units of ``currency``: the purchasable lines only."""
        return sum(line.subtotal for line in self.purchasable)

    @property
    def count(self) -> int:
        """Items in the cart (every line, flagged or not): the number on the header badge."""
        return sum(line.quantity for line in self.lines)

    @property
    def is_empty(self) -> bool:
        return not self.lines

    @property
    def has_problems(self) -> bool:
        return any(line.problem is not None for line in self.lines)


@dataclass(frozen=True)
class CartChange:
    """The outcome of a change: a sentence for the shopper and the cart as it now is."""

    message: str
    cart: PricedCart


def price_lines(rows: Iterable[tuple[m.Product, int]], *, held: Collection[UUID] = ()) -> PricedCart:
    """Price ``(product, quantity)`` pairs as the products are now and flag what cannot be bought.

    ``held``: sold-out products whose units are held for someone else's pending order (said so, not "sold out")."""
    rows = list(rows)
    buyable = [product for product, _ in rows if product.is_active and product.in_stock]
    currency = buyable[0].currency if buyable else DEFAULT_CURRENCY
    lines: list[CartLine] = []
    for product, stored in rows:
        quantity = max(1, min(stored, MAX_QUANTITY))
        if not product.is_active:
            lines.append(CartLine(product, quantity, problem=NO_LONGER_FOR_SALE))
        elif not product.in_stock:
            lines.append(CartLine(product, quantity, problem=HELD_ELSEWHERE if product.id in held else SOLD_OUT))
        elif product.currency != currency:
            # One order, one currency: the first buyable line's.
            lines.append(CartLine(product, quantity, problem=f"Priced in {product.currency}, not {currency}"))
        elif quantity > (left := limit_for(product)):
            # Stock ran low after it was added. A shopper would rather buy what is left than nothing, so the line
            # stays buyable at the quantity left and says so.
            lines.append(CartLine(product, left, notice=f"Only {left} left, so you can buy at most {left}."))
        else:
            lines.append(CartLine(product, quantity))
    return PricedCart(lines=lines, currency=currency)


def _limit_reason(product: m.Product, limit: int) -> str:
    if product.stock is not None and limit == product.stock:
        return f"Only {limit} left"
    return f"You can buy up to {MAX_QUANTITY} of one item"


class CartService:
    """One shopper's cart: ``user`` None is the anonymous cart in ``session``, a user is their ``cart_items``."""

    def __init__(self, db: AsyncSession, session: dict[str, Any]) -> None:
        self.db = db
        self.session = session

    # --- reading ----------------------------------------------------------------------------------------------

    async def priced(self, user: m.User | None) -> PricedCart:
        """The cart priced from the database as it is now (never from anything the client sent).

        Deleted products drop out; inactive, sold-out and other-currency lines are flagged and left out of
        ``purchasable`` and ``subtotal``. Also brings the badge count up to date.
        """
        rows: list[tuple[m.Product, int]]
        if user is None:
            items = self._session_items()
            products = await self._products(items)
            rows = [(products[key], quantity) for key, quantity in items.items() if key in products]
            if len(rows) != len(items):
                self._save_session_items({key: q for key, q in items.items() if key in products})
        else:
            result = await self.db.scalars(
                select(m.CartItem)
                .where(m.CartItem.user_id == user.id)
                .order_by(m.CartItem.created_at, m.CartItem.id)
                .execution_options(populate_existing=True)
            )
            rows = [(item.product, item.quantity) for item in result.unique()]
        sold_out = [product.id for product, _ in rows if not product.in_stock]
        cart = price_lines(rows, held=await products_on_hold(self.db, sold_out) if sold_out else set())
        self._save_count(cart.count)
        return cart

    # --- changing ---------------------------------------------------------------------------------------------

    async def add(self, user: m.User | None, product_id: UUID, quantity: int = 1) -> CartChange:
        """Add ``quantity`` of a product that is for sale; the line is capped at its limit (and says so)."""
        if quantity < 1:
            raise QuantityError
        product = await self._product_for_sale(product_id)
        limit = limit_for(product)
        before = await self._quantity(user, product.id)
        if user is None:
            after = min(before + quantity, limit)
            items = self._session_items()
            items[str(product.id)] = after
            self._save_session_items(items)
        else:
            after = await self._upsert(user.id, product.id, quantity, limit)
        if after >= before + quantity:
            message = f"Added “{product.name}” to your cart."
        else:
            message = f"{_limit_reason(product, limit)}, so your cart has {after} of “{product.name}”."
        return CartChange(message, await self.priced(user))

    async def set_quantity(self, user: m.User | None, product_id: UUID, quantity: int) -> CartChange:
        """Change a line's quantity (capped at its limit); 0 removes it."""
        if quantity < 0:
            raise QuantityError
        if quantity == 0:
            return await self.remove(user, product_id)
        product = await self._product_for_sale(product_id)
        if await self._quantity(user, product.id) == 0:
            raise NotFoundError(f"“{product.name}” is no longer in your cart.")
        limit = limit_for(product)
        after = min(quantity, limit)
        if user is None:
            items = self._session_items()
            items[str(product.id)] = after
            self._save_session_items(items)
        else:
            await self.db.execute(
                update(m.CartItem)
                .where(m.CartItem.user_id == user.id, m.CartItem.product_id == product.id)
                .values(quantity=after, updated_at=datetime.now(UTC))
            )
        if after < quantity:
            message = f"{_limit_reason(product, limit)}, so your cart has {after} of “{product.name}”."
        else:
            message = f"Your cart has {after} of “{product.name}”."
        return CartChange(message, await self.priced(user))

    async def remove(self, user: m.User | None, product_id: UUID) -> CartChange:
        """Take a line out of the cart; removing what is not there is not an error (a second click, another tab)."""
        product = await self.db.get(m.Product, product_id)
        if user is None:
            items = self._session_items()
            items.pop(str(product_id), None)
            self._save_session_items(items)
        else:
            await self.db.execute(
                delete(m.CartItem).where(m.CartItem.user_id == user.id, m.CartItem.product_id == product_id)
            )
        message = f"Removed “{product.name}” from your cart." if product else "Removed from your cart."
        return CartChange(message, await self.priced(user))

    async def clear(self, user: m.User | None) -> None:
        """Empty the cart (after an order is placed)."""
        if user is not None:
            await self.db.execute(delete(m.CartItem).where(m.CartItem.user_id == user.id))
        self._save_session_items({})
        self._save_count(0)

    async def merge_session_cart(self, user: m.User) -> None:
        """At sign-in: add the anonymous cart to the account's (quantities summed and capped), then forget it.

        Also sets the badge count for an account that already had a cart. Sold-out and inactive products come
        along too, so the shopper sees them flagged rather than silently gone.
        """
        items = self._session_items()
        products = await self._products(items)
        for key, quantity in items.items():
            product = products.get(key)
            if product is not None:
                await self._upsert(user.id, product.id, quantity, limit_for(product) or MAX_QUANTITY)
        self._save_session_items({})
        await self.priced(user)

    # --- storage ----------------------------------------------------------------------------------------------

    async def _product_for_sale(self, product_id: UUID) -> m.Product:
        product = await self.db.get(m.Product, product_id, populate_existing=True)
        if product is None or not product.is_active:
            raise NotFoundError("That product is no longer for sale.")
        if not product.in_stock:
            raise ConflictError(f"“{product.name}” is sold out.")
        return product

    async def _products(self, keys: Iterable[str]) -> dict[str, m.Product]:
        ids = [UUID(key) for key in keys]
        if not ids:
            return {}
        rows = await self.db.scalars(
            select(m.Product).where(m.Product.id.in_(ids)).execution_options(populate_existing=True)
        )
        return {str(product.id): product for product in rows.unique()}

    async def _quantity(self, user: m.User | None, product_id: UUID) -> int:
        if user is None:
            return self._session_items().get(str(product_id), 0)
        quantity = await self.db.scalar(
            select(m.CartItem.quantity).where(m.CartItem.user_id == user.id, m.CartItem.product_id == product_id)
        )
        return quantity or 0

    async def _upsert(self, user_id: UUID, product_id: UUID, quantity: int, limit: int) -> int:
        """Add to a line in one statement, so two concurrent adds (a double click, two tabs) both count."""
        values = {"user_id": user_id, "product_id": product_id, "quantity": min(quantity, limit)}
        now = datetime.now(UTC)
        statement: Executable
        if self.db.get_bind().dialect.name == "postgresql":
            pg_insert = postgresql.insert(m.CartItem).values(values)
            total = m.CartItem.quantity + pg_insert.excluded.quantity
            statement = pg_insert.on_conflict_do_update(
                index_elements=["user_id", "product_id"],
                set_={"quantity": case((total > limit, limit), else_=total), "updated_at": now},
            ).returning(m.CartItem.quantity)
        else:
            lite_insert = sqlite.insert(m.CartItem).values(values)
            total = m.CartItem.quantity + lite_insert.excluded.quantity
            statement = lite_insert.on_conflict_do_update(
                index_elements=["user_id", "product_id"],
                set_={"quantity": case((total > limit, limit), else_=total), "updated_at": now},
            ).returning(m.CartItem.quantity)
        return int((await self.db.execute(statement)).scalar_one())

    def _session_items(self) -> dict[str, int]:
        """The anonymous cart, read defensively: the session outlives deploys that might change its shape."""
        raw = self.session.get(SESSION_CART_KEY)
        items: dict[str, int] = {}
        if not isinstance(raw, dict):
            return items
        for key, quantity in raw.items():
            try:
                product_id = UUID(str(key))
            except ValueError:
                continue
            if isinstance(quantity, int) and quantity > 0:
                items[str(product_id)] = min(quantity, MAX_QUANTITY)
        return items

    def _save_session_items(self, items: dict[str, int]) -> None:
        if items:
            self.session[SESSION_CART_KEY] = items
        else:
            self.session.pop(SESSION_CART_KEY, None)  # an otherwise empty session is then deleted, cookie and all

    def _save_count(self, count: int) -> None:
        if count:
            self.session[SESSION_COUNT_KEY] = count
        else:
            self.session.pop(SESSION_COUNT_KEY, None)
