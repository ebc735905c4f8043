"""The back office's tables (sort, filter, paginate, CSV), accounts (roles, disabling) and the audit log."""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from uuid import UUID

import httpx
import pytest
from sqlalchemy import select

from app.db import models as m
from app.lib.runtime import Runtime
from tests.conftest import Factory
from tests.helpers import post_form, sign_in, text_of, texts


async def seed_orders(runtime: Runtime, rows: list[tuple[str, str, int]]) -> list[m.Order]:
    """Orders written straight to the database: (email, status, subtotal); created a minute apart, oldest first."""
    start = datetime(2026, 11, 1, tzinfo=UTC)
    orders = []
    async with runtime.db() as db:
        for i, (email, status, subtotal) in enumerate(rows):
            tax = subtotal * 5 // 100
            order = m.Order(
                number=1000 + i,
                email=email,
                billing_name=email.split("@")[0],
                country="CA",
                region="AB",
                status=status,
                currency="CAD",
                subtotal=subtotal,
                tax_total=tax,
                total=subtotal + tax,
                created_at=start + timedelta(minutes=i),
                updated_at=start + timedelta(minutes=i),
            )
            db.add(order)
            orders.append(order)
        await db.commit()
    return orders


def row_numbers(html: str) -> list[str]:
    return texts(html, 'tbody tr td:first-child a[href^="/admin/orders/"]')  # each row's order number


@pytest.fixture
async def app_client_pair(
    client: httpx.AsyncClient, new_browser: Callable[..., httpx.AsyncClient]
) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
    """Two browsers on the same app: staff in one, the person they manage in the other."""
    async with new_browser() as other:
        yield client, other


async def admin(client: httpx.AsyncClient, factory: Factory, email: str = "admin@example.com") -> m.User:
    user = await factory.user(email=email, role="admin")
    await sign_in(client, email)
    return user


async def test_orders_table_sorts_filters_paginates_and_keeps_its_state_in_every_link(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    orders = await seed_orders(
        runtime, [(f"buyer{i}@example.com", "paid" if i % 3 else "pending", 1000 + (i * 37) % 500) for i in range(30)]
    )
    await admin(client, factory)

    newest_first = await client.get("/admin/orders")
    assert row_numbers(newest_first.text)[:2] == [orders[-1].display_number, orders[-2].display_number]
    assert "Page 1 of 2 · 30 orders" in text_of(newest_first.text)

    by_total = await client.get("/admin/orders?sort=total", headers={"HX-Request": "true"})
    assert "<html" not in by_total.text
    cheapest = min(orders, key=lambda o: (o.total, -o.number))
    assert row_numbers(by_total.text)[0] == cheapest.display_number
    assert 'aria-sort="ascending"' in by_total.text
    # The header link flips the direction; the pagination and the filter form keep the sort.
    assert 'href="/admin/orders?sort=-total"' in by_total.text
    assert 'href="/admin/orders?sort=total&amp;page=2"' in by_total.text
    assert 'name="sort" value="total"' in by_total.text

    paid = await client.get("/admin/orders?status=paid&sort=-total&page=9", headers={"HX-Request": "true"})
    expected_paid = [o for o in orders if o.status == "paid"]
    assert "Orders: 20 orders, page 1 of 1" in text_of(paid.text)  # page 9 does not exist: the last page is shown
    assert row_numbers(paid.text)[0] == max(expected_paid, key=lambda o: (o.total, -o.number)).display_number
    assert 'href="/admin/orders/export.csv?status=paid&amp;sort=-total"' in paid.text

    nonsense = await client.get("/admin/orders?sort=password_hash&status=hacked&page=x")
    assert nonsense.status_code == 200
    assert row_numbers(nonsense.text)[0] == orders[-1].display_number  # back to the default: newest first

    empty = await client.get("/admin/orders?q=nobody%40nowhere", headers={"HX-Request": "true"})
    assert "No orders match that filter." in text_of(empty.text)


async def test_csv_export_streams_every_row_of_the_current_filter(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    rows = [(f"c{i}@example.com", "paid" if i % 2 else "pending", 1000 + i) for i in range(2500)]
    rows.append(("=cmd@example.com", "paid", 999))  # a spreadsheet formula must stay text
    await seed_orders(runtime, rows)
    await admin(client, factory)

    response = await client.get("/admin/orders/export.csv?status=paid&sort=total")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"].startswith('attachment; filename="orders-')
    table = list(csv.reader(io.StringIO(response.text)))
    assert table[0][:3] == ["number", "placed_at", "email"]
    body = table[1:]
    assert len(body) == 1251  # every paid order, not one page of them
    assert [r[7] for r in body[:2]] == ["CAD", "CAD"]
    assert body[0][2] == "'=cmd@example.com" and body[0][8:10] == ["9.99", "0.00"]  # the cheapest first, as sorted
    assert {r[6] for r in body} == {"paid"}


async def test_support_reads_refunds_and_subscriptions_but_not_accounts_or_the_audit_log(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    [order] = await seed_orders(runtime, [("ref@example.com", "partially_refunded", 2000)])
    member = await factory.user(email="member@example.com")
    async with runtime.db() as db:
        db.add(
            m.Refund(
                order_id=order.id,
                stripe_refund_id="re_test_1",
                amount=500,
                currency="CAD",
                status="succeeded",
                reason="duplicate",
            )
        )
        db.add(
            m.Subscription(
                user_id=member.id,
                stripe_subscription_id="sub_test_1",
                stripe_customer_id="cus_test_1",
                status="past_due",
                cancel_at_period_end=True,
            )
        )
        await db.commit()
    await factory.user(email="support@example.com", role="support")
    await sign_in(client, "support@example.com")

    refunds = text_of((await client.get("/admin/refunds?q=ref%40example")).text)
    assert "ref@example.com" in refunds and "$5.00 CAD" in refunds and "duplicate" in refunds
    assert "No refunds match" in text_of((await client.get("/admin/refunds?status=failed")).text)
    subs = text_of((await client.get("/admin/subscriptions?status=past_due&ending=yes")).text)
    assert "member@example.com" in subs and "Past due" in subs and "(ends at period end)" in subs
    csv_text = (await client.get("/admin/subscriptions/export.csv")).text
    assert "sub_test_1" in csv_text

    for path in ("/admin/users", "/admin/audit", f"/admin/users/{member.id}"):
        assert (await client.get(path)).status_code == 403, path


async def test_admin_changes_a_role_and_the_person_is_signed_out_and_audited(
    app_client_pair: tuple[httpx.AsyncClient, httpx.AsyncClient], factory: Factory, runtime: Runtime
) -> None:
    staff, person = app_client_pair
    boss = await admin(staff, factory)
    jo = await factory.user(email="jo@example.com")
    await sign_in(person, "jo@example.com")
    assert (await person.get("/account")).status_code == 200

    listing = text_of((await staff.get("/admin/users?role=customer")).text)
    assert "jo@example.com" in listing and "admin@example.com" not in listing

    response = await post_form(staff, f"/admin/users/{jo.id}/role", {"role": "support"})
    assert response.status_code == 303
    page = text_of((await staff.get(f"/admin/users/{jo.id}")).text)
    assert "jo@example.com is now support; their sessions were signed out." in page
    assert "Role changed from Customer to Support" in page  # the account's history

    # Jo's old session is gone: the next request asks them to sign in again.
    again = await person.get("/account")
    assert again.status_code == 303 and again.headers["location"].startswith("/login")
    await sign_in(person, "jo@example.com")
    assert (await person.get("/admin/orders")).status_code == 200  # support now

    audit = await staff.get("/admin/audit?action=user.role")
    text = text_of(audit.text)
    assert "admin@example.com" in text and "user.role" in text and "jo@example.com" in text
    assert "customer → support" in text
    async with runtime.db() as db:
        entry = await db.scalar(select(m.AuditEntry).where(m.AuditEntry.action == "user.role"))
    assert entry is not None
    assert (entry.actor_id, entry.target_id, entry.before, entry.after) == (
        boss.id,
        str(jo.id),
        {"role": "customer"},
        {"role": "support"},
    )


async def test_disabling_an_account_ends_its_sessions_and_sign_in_until_re_enabled(
    app_client_pair: tuple[httpx.AsyncClient, httpx.AsyncClient], factory: Factory, runtime: Runtime
) -> None:
    staff, person = app_client_pair
    await admin(staff, factory)
    kim = await factory.user(email="kim@example.com")
    await sign_in(person, "kim@example.com")

    assert (await post_form(staff, f"/admin/users/{kim.id}/active", {"active": "0"})).status_code == 303
    assert (await person.get("/account")).status_code == 303  # signed out at once
    refused = await post_form(person, "/login", {"email": "kim@example.com", "password": "correct horse battery"})
    assert refused.status_code == 422
    assert "disabled" in text_of((await staff.get("/admin/users?status=disabled")).text).lower()

    assert (await post_form(staff, f"/admin/users/{kim.id}/active", {"active": "1"})).status_code == 303
    await sign_in(person, "kim@example.com")
    actions = [e.action for e in await audit_rows(runtime, kim.id)]
    assert actions == ["user.disable", "user.enable"]


async def test_an_admin_cannot_demote_or_disable_themselves(client: httpx.AsyncClient, factory: Factory) -> None:
    me = await admin(client, factory)
    demote = await post_form(client, f"/admin/users/{me.id}/role", {"role": "customer"})
    assert demote.status_code == 422
    assert "You can&#39;t change the role of your own account: ask another admin." in demote.text
    disable = await post_form(client, f"/admin/users/{me.id}/active", {"active": "0"})
    assert disable.status_code == 422
    assert (await client.get("/admin/users")).status_code == 200  # still an admin, still signed in
    bad = await post_form(client, f"/admin/users/{me.id}/role", {"role": "owner"})
    assert bad.status_code == 422 and "Choose admin, support or customer." in bad.text


async def audit_rows(runtime: Runtime, user_id: UUID) -> list[m.AuditEntry]:
    async with runtime.db() as db:
        rows = await db.scalars(
            select(m.AuditEntry).where(m.AuditEntry.target_id == str(user_id)).order_by(m.AuditEntry.created_at)
        )
        return list(rows)


async def test_the_dashboard_shows_admins_how_the_stripe_mirror_is_doing_and_support_not(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    await admin(client, factory)
    page = text_of((await client.get("/admin")).text)
    assert "Webhook health" in page and "Events in the last hour" in page
    assert "Stripe sync" in page
    client.cookies.clear()
    await factory.user(email="support@example.com", role="support")
    await sign_in(client, "support@example.com")
    page = text_of((await client.get("/admin")).text)
    assert "Dashboard" in page
    assert "Webhook health" not in page and "Stripe sync" not in page
