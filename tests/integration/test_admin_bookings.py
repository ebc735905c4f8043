"""Bookings in the back office: admin and support see every member's bookings; customers do not get in."""

from __future__ import annotations

import httpx

from app.lib.runtime import Runtime
from tests.conftest import Factory
from tests.helpers import sign_in, text_of
from tests.integration.test_bookings import book, member, resource_with_slot


async def test_admin_and_support_see_members_bookings(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    _, slot, rooms = await resource_with_slot(runtime, capacity=2)
    someone = await member(runtime, factory, credits=3, type_id=rooms.id)
    await book(runtime, someone, slot.id)
    for role in ("admin", "support"):
        await factory.user(email=f"{role}@example.com", role=role)
        await sign_in(client, f"{role}@example.com")
        page = await client.get("/admin/bookings")
        assert page.status_code == 200
        text = text_of(page.text)
        assert someone.email in text
        assert "Meeting room A" in text
        assert "Credits (1)" in text
        fragment = await client.get("/admin/bookings?show=all", headers={"HX-Request": "true"})
        assert fragment.status_code == 200
        assert "<html" not in fragment.text
        assert someone.email in fragment.text
        client.cookies.clear()


async def test_customers_cannot_open_the_admin_bookings(client: httpx.AsyncClient, factory: Factory) -> None:
    await factory.user(email="nosy@example.com")
    await sign_in(client, "nosy@example.com")
    assert (await client.get("/admin/bookings")).status_code == 403
