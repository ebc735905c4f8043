"""All models, re-exported: ``from app.db import models as m``."""

from app.db.models.catalog import Category, Product
from app.db.models.commerce import (
    CartItem,
    Entitlement,
    Order,
    OrderEvent,
    OrderLine,
    OrderNumber,
    OrderStatus,
    Payment,
    PaymentStatus,
    Refund,
    StripeEvent,
    StripeEventStatus,
)
from app.db.models.email import EmailMessage, EmailStatus
from app.db.models.user import PasswordResetToken, User

__all__ = [
    "CartItem",
    "Category",
    "EmailMessage",
    "EmailStatus",
    "Entitlement",
    "Order",
    "OrderEvent",
    "OrderLine",
    "OrderNumber",
    "OrderStatus",
    "PasswordResetToken",
    "Payment",
    "PaymentStatus",
    "Product",
    "Refund",
    "StripeEvent",
    "StripeEventStatus",
    "User",
]
