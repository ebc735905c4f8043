"""Shop settings (#16 item 6): admins edit them at /admin/settings, every save is audited, bad input saves nothing,
and every process sees a change on its next request through the Redis version key."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from app.db import models as m
from app.domain.downloads.services import DownloadService
from app.domain.settings.services import alert_recipients, load_shop_settings
from app.lib.localtime import shop_zone
from app.lib.runtime import Runtime
from app.lib.shop_settings import ShopSettings, ShopSettingsCache, announce_change, current_shop_settings
from tests.conftest import Factory
from tests.helpers import post_form, sign_in, text_of

VALID = {
    "legal_name": "Cartwright Digital Inc.",
    "address": "100 King St W\nToronto ON M5X 1A9",
    "gst_hst_number": "123456789 RT0001",
    "qst_number": "1234567890 TQ0001",
    "support_email": "Help@Cartwright.test",
    "time_zone": "America/Vancouver",
    "receipt_footer": "Thank you for shopping local.",
    "download_limit": "7",
    "link_lifetime_hours": "48",
    "low_stock_threshold": "3",
    "alert_recipients": "ops@cartwright.test\nowner@cartwright.test",
}


async def _admin(client: httpx.AsyncClient, factory: Factory) -> m.User:
    admin = await factory.user(email="admin@example.com", role="admin")
    await sign_in(client, admin.email)
    return admin


async def test_an_admin_saves_the_settings_and_the_change_is_audited(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    await _admin(client, factory)
    page = await client.get("/admin/settings")
    assert page.status_code == 200
    assert '<label for="f-legal_name">Legal name</label>' in page.text
    assert "America/Toronto (SHOP_TIME_ZONE)" in page.text  # blank means the environment's zone

    saved = await post_form(client, "/admin/settings", VALID)
    assert saved.status_code == 303, saved.text

    page = await client.get("/admin/settings")
    assert 'value="Cartwright Digital Inc."' in page.text
    assert 'value="help@cartwright.test"' in page.text  # normalised
    assert "ops@cartwright.test\nowner@cartwright.test</textarea>" in page.text
    async with runtime.db() as db:
        stored = await load_shop_settings(db)
        entries = list(await db.scalars(select(m.AuditEntry).where(m.AuditEntry.action == "settings.update")))
    assert stored.gst_hst_number == "123456789 RT0001"
    assert stored.address == "100 King St W\nToronto ON M5X 1A9"  # not the last alert recipient's address
    assert stored.download_limit == 7
    assert stored.alert_recipients == ("ops@cartwright.test", "owner@cartwright.test")
    assert len(entries) == 1
    assert entries[0].actor_email == "admin@example.com"
    assert entries[0].before is not None
    assert entries[0].after is not None
    assert entries[0].before["legal_name"] == ""
    assert entries[0].after["legal_name"] == "Cartwright Digital Inc."

    # The uses that exist today read it: local times, the new-product form, the alert recipients.
    rooms = await client.get("/admin/resources")
    assert "Opening hours are local time in America/Vancouver" in text_of(rooms.text)
    assert shop_zone().key == "America/Vancouver"
    new_product = await client.get("/admin/products/new")
    assert 'name="download_limit" type="text" value="7"' in new_product.text
    async with runtime.db() as db:
        assert await alert_recipients(db) == ["ops@cartwright.test", "owner@cartwright.test"]
        # Signed download links live as long as the settings say (48 hours here, 24 by default).
        link = DownloadService(db, runtime.settings).signed_url(m.Entitlement(id=uuid4()))
    parsed = DownloadService(None, runtime.settings).read_token(link.rsplit("/", 1)[1])  # type: ignore[arg-type]
    assert parsed is not None
    assert timedelta(hours=47, minutes=59) < parsed[1] - datetime.now(UTC) <= timedelta(hours=48)

    # Saving the same values again changes nothing and audits nothing.
    await post_form(client, "/admin/settings", VALID)
    async with runtime.db() as db:
        count = await db.scalar(select(func.count()).select_from(m.AuditEntry))
    assert count == 1


async def test_bad_input_shows_each_field_error_and_saves_nothing(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    await _admin(client, factory)
    bad = {
        **VALID,
        "support_email": "not-an-email",
        "time_zone": "Mars/Olympus_Mons",
        "download_limit": "-1",
        "link_lifetime_hours": "-5",
        "low_stock_threshold": "-2",
        "alert_recipients": "ops@cartwright.test\nnope",
    }
    response = await post_form(client, "/admin/settings", bad, htmx=True)
    assert response.status_code == 422
    assert "<html" not in response.text  # the form fragment, swapped in place
    for name in ("support_email", "time_zone", "download_limit", "link_lifetime_hours", "low_stock_threshold"):
        assert f'id="f-{name}-error"' in response.text, name
    assert "“Mars/Olympus_Mons” is not a time zone" in response.text
    assert "“nope” is not an email address" in response.text
    assert 'value="Cartwright Digital Inc."' in response.text  # what was typed stays in the form
    async with runtime.db() as db:
        assert await db.scalar(select(func.count()).select_from(m.ShopSettingsRow)) == 0
        assert await db.scalar(select(func.count()).select_from(m.AuditEntry)) == 0
    assert shop_zone().key == "America/Toronto"


async def test_only_admins_reach_the_settings(client: httpx.AsyncClient, factory: Factory) -> None:
    await factory.user(email="support@example.com", role="support")
    await sign_in(client, "support@example.com")
    assert (await client.get("/admin/settings")).status_code == 403
    token = client.cookies.get("csrftoken") or ""
    denied = await post_form(client, "/admin/settings", VALID, token=token or None)
    assert denied.status_code == 403


async def test_every_process_sees_a_change_on_its_next_refresh(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    """Another web node or worker holds its own snapshot: it reloads only when the version key changes."""

    other_node = ShopSettingsCache()

    async def from_db() -> ShopSettings:
        async with runtime.db() as db:
            return await load_shop_settings(db)

    assert (await other_node.refresh(runtime.redis, from_db)).legal_name == ""
    await _admin(client, factory)
    assert (await post_form(client, "/admin/settings", VALID)).status_code == 303
    # The save announced a new version: the other node reloads on its next request.
    assert (await other_node.refresh(runtime.redis, from_db)).legal_name == "Cartwright Digital Inc."
    await client.get("/")  # and so does this web process
    assert current_shop_settings().legal_name == "Cartwright Digital Inc."

    # Cached in between: a row changed behind the app's back is not read until a change is announced...
    async with runtime.db() as db:
        row = await db.scalar(select(m.ShopSettingsRow))
        assert row is not None
        row.legal_name = "Renamed Ltd."
        await db.commit()
    assert (await other_node.refresh(runtime.redis, from_db)).legal_name == "Cartwright Digital Inc."
    await client.get("/")
    assert current_shop_settings().legal_name == "Cartwright Digital Inc."
    # ...and is read by every process once it is.
    await announce_change(runtime.redis)
    assert (await other_node.refresh(runtime.redis, from_db)).legal_name == "Renamed Ltd."
    await client.get("/")
    assert current_shop_settings().legal_name == "Renamed Ltd."

    # A Redis that lost its data (restart, flush) never matches a snapshot taken before it.
    await runtime.redis.flushdb()
    async with runtime.db() as db:
        row = await db.scalar(select(m.ShopSettingsRow))
        assert row is not None
        row.legal_name = "After The Flush Ltd."
        await db.commit()
    assert (await other_node.refresh(runtime.redis, from_db)).legal_name == "After The Flush Ltd."


async def test_a_database_outage_keeps_the_last_settings_and_pages_answer(
    client: httpx.AsyncClient, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.domain.settings import services

    async with runtime.db() as db:
        db.add(m.ShopSettingsRow(legal_name="Before The Outage Ltd."))
        await db.commit()
    await announce_change(runtime.redis)
    await client.get("/healthz")
    assert current_shop_settings().legal_name == "Before The Outage Ltd."

    async def down(_db: object) -> ShopSettings:
        raise OperationalError("SELECT", {}, ConnectionRefusedError())

    monkeypatch.setattr(services, "load_shop_settings", down)
    await announce_change(runtime.redis)
    assert (await client.get("/healthz")).status_code == 200
    assert current_shop_settings().legal_name == "Before The Outage Ltd."
    monkeypatch.undo()
    await client.get("/healthz")  # the database is back: the pending change is loaded on the next request
    assert current_shop_settings().legal_name == "Before The Outage Ltd."
