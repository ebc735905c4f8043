"""The shop's settings, one row (``key = 'shop'``): see ``app.lib.shop_settings`` for how processes read them."""

from __future__ import annotations

from advanced_alchemy.base import UUIDv7AuditBase
from sqlalchemy import JSON, String, Text
from sqlalchemy.orm import Mapped, mapped_column

SHOP_SETTINGS_KEY = "shop"


class ShopSettingsRow(UUIDv7AuditBase):
    """What an admin sets at /admin/settings. No row yet means the defaults of ``ShopSettings``."""

    __tablename__ = "shop_settings"

    key: Mapped[str] = mapped_column(String(16), unique=True, default=SHOP_SETTINGS_KEY)  # a single row
    legal_name: Mapped[str] = mapped_column(String(200), default="")
    address: Mapped[str] = mapped_column(Text, default="")
    gst_hst_number: Mapped[str] = mapped_column(String(40), default="")
    qst_number: Mapped[str] = mapped_column(String(40), default="")
    support_email: Mapped[str] = mapped_column(String(320), default="")
    time_zone: Mapped[str] = mapped_column(String(64), default="")  # "" = SHOP_TIME_ZONE
    receipt_footer: Mapped[str] = mapped_column(Text, default="")
    download_limit: Mapped[int] = mapped_column(default=5)
    link_lifetime_hours: Mapped[int] = mapped_column(default=24)
    low_stock_threshold: Mapped[int] = mapped_column(default=5)
    alert_recipients: Mapped[list[str]] = mapped_column(JSON, default=list)
