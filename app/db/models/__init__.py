"""All models, re-exported: ``from app.db import models as m``."""

from app.db.models.catalog import Category, Product
from app.db.models.email import EmailMessage, EmailStatus
from app.db.models.user import PasswordResetToken, User

__all__ = ["Category", "EmailMessage", "EmailStatus", "PasswordResetToken", "Product", "User"]
