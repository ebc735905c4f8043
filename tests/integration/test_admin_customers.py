"""Customers in the back office: list and search, the customer page, holder pricing and manual credit adjustments."""

from __future__ import annotations

import re
from uuid import UUID, uuid4

import httpx
from sqlalchemy import func, select

from app.db import models as m
from app.domain.credits.services import CreditService
from app.lib.runtime import Runtime
from tests.conftest import Factory
from tests.helpers import post_form, sign_in, text_of, texts
from tests.integration.test_bookings import book, member, resource_with_slot
from tests.integration.test_credits import balance_of, credit_type, grant

_numbers = iter(range(5000, 100000))


async def order(runtime: Runtime, user: m.User, *, total: int, status: str = "paid", refunded: int = 0) -> m.Order:
    async with runtime.db() as db:
        created = m.Order(
            number=next(_numbers),
            user_id=user.id,
            email=user.email,
            billing_name=user.name,
            country="CA",
            region="AB",
            status=status,
            currency="CAD",
            subtotal=total,
            tax_total=0,
            total=total,
            amount_refunded=refunded,
        )
        db.add(created)
        await db.commit()
        return created


async def credit_form(client: httpx.AsyncClient, user_id: UUID) -> str:
    page = await client.get(f"/admin/customers/{user_id}")
    assert page.status_code == 200, page.text
    match = re.search(r'name="form_token" value="([^"]+)"', page.text)
    assert match, "the customer page has no credit form"
    return match.group(1)


async def adjustments(runtime: Runtime, user_id: UUID) -> list[m.CreditEntry]:
    async with runtime.db() as db:
        return list(
            await db.scalars(
                select(m.CreditEntry).where(m.CreditEntry.user_id == user_id, m.CreditEntry.kind == "adjustment")
            )
        )


async def holder_flag(runtime: Runtime, user_id: UUID) -> bool:
    async with runtime.db() as db:
        flag = await db.scalar(select(m.User.holder_pricing).where(m.User.id == user_id))
        assert flag is not None
        return flag


async def test_admin_lists_and_searches_customers(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    ann = await factory.user(email="ann@example.com", name="Ann Archer")
    bob = await factory.user(email="bob@example.com", name="Bob Baker")
    await order(runtime, ann, total=2100)
    await order(runtime, ann, total=1000, status="partially_refunded", refunded=400)
    await order(runtime, ann, total=9999, status="pending")  # never paid: not in the lifetime value
    async with runtime.db() as db:
        db.add(
            m.Subscription(
                user_id=bob.id,
                stripe_subscription_id=f"sub_{uuid4().hex}",
                stripe_customer_id=f"cus_{uuid4().hex}",
                status="past_due",
            )
        )
        await db.commit()
    await factory.user(email="admin@example.com", role="admin", name="Staff Person")
    await sign_in(client, "admin@example.com")

    page = await client.get("/admin/customers")
    assert page.status_code == 200
    assert "<html" in page.text
    assert 'hx-push-url="true"' in page.text
    text = text_of(page.text)
    assert text.index("bob@example.com") < text.index("ann@example.com")  # newest first
    assert "admin@example.com" not in text  # staff are not customers
    assert "$27.00 CAD" in text  # 21.00 + (10.00 - 4.00)
    assert "Past due" in text

    fragment = await client.get("/admin/customers?q=archer", headers={"HX-Request": "true"})
    assert fragment.status_code == 200
    assert "<html" not in fragment.text
    assert 'id="admin-customers"' in fragment.text
    assert fragment.headers["vary"].startswith("HX-Request")
    assert "ann@example.com" in fragment.text and "bob@example.com" not in fragment.text
    by_email = text_of((await client.get("/admin/customers?q=BOB%40", headers={"HX-Request": "true"})).text)
    assert "bob@example.com" in by_email and "ann@example.com" not in by_email


async def test_customer_page_shows_orders_subscription_credits_and_bookings(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    _, slot, rooms = await resource_with_slot(runtime)
    someone = await member(runtime, factory, credits=3, type_id=rooms.id)
    await book(runtime, someone, slot.id)
    paid = await order(runtime, someone, total=5000, status="partially_refunded", refunded=1250)
    await order(runtime, someone, total=800, status="refunded", refunded=800)
    admin = await factory.user(email="admin@example.com", role="admin")
    await sign_in(client, "admin@example.com")

    page = await client.get(f"/admin/customers/{someone.id}")
    assert page.status_code == 200
    text = text_of(page.text)
    assert someone.email in text
    assert f'href="/admin/orders/{paid.id}"' in page.text
    assert f"#{paid.number}" in text and "Partly refunded" in text
    assert "Active" in text  # the subscription
    assert "Meeting-room hours: 2" in text  # 3 granted, 1 spent on the booking
    assert "test grant" in text and "usage" in text  # ledger rows
    assert "Meeting room A" in text and "Credits (1)" in text  # the booking
    assert texts(page.text, "#customer-ltv") == ["$37.50 CAD"]  # 50.00 - 12.50, the refunded order adds 0
    assert 'name="form_token"' in page.text and 'name="holder_pricing"' in page.text

    assert (await client.get(f"/admin/customers/{uuid4()}")).status_code == 404
    assert (await client.get(f"/admin/customers/{admin.id}")).status_code == 404  # staff are not customers


async def test_admin_and_support_toggle_holder_pricing(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    customer = await factory.user(email="holder@example.com")
    url = f"/admin/customers/{customer.id}/holder-pricing"
    await factory.user(email="admin@example.com", role="admin")
    await sign_in(client, "admin@example.com")
    response = await post_form(client, url, {"holder_pricing": "on"})
    assert response.status_code == 303
    assert response.headers["location"] == f"/admin/customers/{customer.id}"
    assert await holder_flag(runtime, customer.id) is True
    page = await client.get(f"/admin/customers/{customer.id}")
    assert "Holder pricing turned on." in text_of(page.text)
    assert re.search(r'name="holder_pricing" type="checkbox" checked', page.text)
    client.cookies.clear()

    # The permission table gives support full access to customers: support may change the flag too.
    await factory.user(email="support@example.com", role="support")
    await sign_in(client, "support@example.com")
    response = await post_form(client, url, {}, htmx=True)  # an unchecked box sends nothing
    assert response.status_code == 200
    assert response.headers["hx-redirect"] == f"/admin/customers/{customer.id}"
    assert await holder_flag(runtime, customer.id) is False


async def test_customers_get_403_on_the_list_and_the_posts(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    rooms = await credit_type(runtime)
    nosy = await factory.user(email="nosy@example.com")
    await sign_in(client, "nosy@example.com")
    assert (await client.get("/admin/customers")).status_code == 403
    assert (await client.get(f"/admin/customers/{nosy.id}")).status_code == 403
    holder = await post_form(client, f"/admin/customers/{nosy.id}/holder-pricing", {"holder_pricing": "on"})
    assert holder.status_code == 403
    credits = await post_form(
        client,
        f"/admin/customers/{nosy.id}/credits",
        {"credit_type_id": str(rooms.id), "amount": "100", "reason": "free stuff", "form_token": "t"},
    )
    assert credits.status_code == 403
    assert await holder_flag(runtime, nosy.id) is False
    assert await adjustments(runtime, nosy.id) == []


async def test_credit_adjustments_need_a_reason_apply_once_and_never_overdraw(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    rooms = await credit_type(runtime)
    customer = await factory.user(email="member@example.com")
    admin = await factory.user(email="admin@example.com", role="admin")
    await sign_in(client, "admin@example.com")
    url = f"/admin/customers/{customer.id}/credits"

    token = await credit_form(client, customer.id)
    no_reason = await post_form(
        client, url, {"credit_type_id": str(rooms.id), "amount": "5", "reason": "  ", "form_token": token}, htmx=True
    )
    assert no_reason.status_code == 422
    assert "<html" not in no_reason.text and 'id="credit-form"' in no_reason.text
    assert "Say why" in text_of(no_reason.text)
    assert 'value="5"' in no_reason.text  # what was typed stays in the form
    assert await adjustments(runtime, customer.id) == []

    form = {
        "credit_type_id": str(rooms.id),
        "amount": "5",
        "reason": "Goodwill for a cancelled event",
        "form_token": token,
    }
    response = await post_form(client, url, form)
    assert response.status_code == 303
    assert response.headers["location"] == f"/admin/customers/{customer.id}"
    again = await post_form(client, url, form)  # a double click: same token
    assert again.status_code == 303
    rows = await adjustments(runtime, customer.id)
    assert [(r.amount, r.reference, r.created_by_id) for r in rows] == [(5, token, admin.id)]
    assert await balance_of(runtime, customer.id, rooms.id) == 5
    async with runtime.db() as db:
        audit = list(await db.scalars(select(m.AuditEntry).where(m.AuditEntry.action == "customer.credits")))
    assert [(a.actor_id, a.target_id, a.summary) for a in audit] == [
        (admin.id, str(customer.id), "Credits adjusted by +5: Goodwill for a cancelled event")
    ]
    page = text_of((await client.get(f"/admin/customers/{customer.id}")).text)
    assert "Credits adjusted." in page and "That adjustment was already applied." in page
    assert "Goodwill for a cancelled event" in page

    token = await credit_form(client, customer.id)
    overdraw = await post_form(
        client, url, {"credit_type_id": str(rooms.id), "amount": "-6", "reason": "Oops", "form_token": token}, htmx=True
    )
    assert overdraw.status_code == 422
    assert "Not enough credits to take back: the customer has 5 meeting-room hours." in text_of(overdraw.text)
    assert await balance_of(runtime, customer.id, rooms.id) == 5

    take_back = await post_form(
        client, url, {"credit_type_id": str(rooms.id), "amount": "-2", "reason": "Booked twice", "form_token": token}
    )
    assert take_back.status_code == 303
    assert await balance_of(runtime, customer.id, rooms.id) == 3

    nonsense = await post_form(
        client, url, {"credit_type_id": "x", "amount": "1.5", "reason": "x", "form_token": "other"}, htmx=True
    )
    assert nonsense.status_code == 422
    text = text_of(nonsense.text)
    assert "Choose a credit type." in text and "Enter a whole number of credits" in text
    async with runtime.db() as db:
        assert await db.scalar(select(func.count()).select_from(m.CreditEntry)) == 2


async def test_adjusting_a_reference_twice_in_the_service_writes_one_row(factory: Factory, runtime: Runtime) -> None:
    rooms = await credit_type(runtime)
    user = await factory.user(email="svc@example.com")
    await grant(runtime, user.id, rooms.id, 4)
    for _ in range(2):
        async with runtime.db() as db:
            await CreditService(db).adjust(
                user_id=user.id, credit_type_id=rooms.id, amount=-1, reason="r", admin_id=user.id, reference="tok"
            )
            await db.commit()
    assert await balance_of(runtime, user.id, rooms.id) == 3
