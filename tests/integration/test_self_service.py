"""Issue #16 item 8: a customer changes their name and email (the new one proved first), sees where they are
signed in and signs out everywhere else, downloads their data, and closes their account."""

from __future__ import annotations

import io
import json
import re
import zipfile

import httpx
import pytest
from litestar import Litestar
from saq import Queue, Worker
from sqlalchemy import select

from app.db import models as m
from app.lib.runtime import Runtime
from app.stripe_emulator.server import EmulatorServer
from tests.conftest import Factory
from tests.helpers import post_form, sign_in, text_of
from tests.integration.purchase_support import settle
from tests.integration.test_downloads import purchase
from tests.integration.test_subscriptions import load_sub, make_plan, pay_first_invoice, subscribe
from tests.support import Mailbox, body_text

PASSWORD = "correct horse battery"


def second_browser(app: Litestar) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("198.51.100.44", 50000))  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://testserver.local")


async def test_a_new_email_is_used_only_once_its_link_is_opened_and_the_old_address_is_told(
    client: httpx.AsyncClient, app: Litestar, runtime: Runtime, factory: Factory, worker: Worker, mailbox: Mailbox
) -> None:
    user = await factory.user(email="old@example.com", name="Olive", verified=True)
    await sign_in(client, "old@example.com")
    other_device = second_browser(app)
    await sign_in(other_device, "old@example.com")

    wrong = await post_form(client, "/account/profile/email", {"email": "new@example.com", "password": "nope nope"})
    assert wrong.status_code == 422 and "That is not your current password." in wrong.text
    sent = await post_form(client, "/account/profile/email", {"email": "New@Example.com", "password": PASSWORD})
    assert sent.status_code == 303
    [message] = await mailbox.wait_for("new@example.com")
    assert message["Subject"] == "Confirm your new email for Cartwright"
    link = re.search(r"http://testserver\.local(/verify-email/\S+)", body_text(message))
    assert link is not None
    async with runtime.db() as db:
        unchanged = await db.get(m.User, user.id)
        assert unchanged is not None and unchanged.email == "old@example.com"  # nothing moves before the proof

    opened = await client.get(link.group(1))
    assert opened.status_code == 303
    async with runtime.db() as db:
        moved = await db.get(m.User, user.id)
        assert moved is not None and moved.email == "new@example.com" and moved.email_verified_at is not None
    [notice] = await mailbox.wait_for("old@example.com")
    assert notice["Subject"] == "Your Cartwright account now uses another email address"
    assert "new@example.com" in body_text(notice)
    # Every session ends (the other device's, and this one: it was made under the old address).
    assert (await other_device.get("/account")).status_code == 303
    await sign_in(client, "new@example.com")
    assert (await client.get(link.group(1))).status_code == 410  # single use


async def test_an_unconfirmed_account_cannot_move_its_email_and_a_taken_address_reveals_nothing(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory, worker: Worker, mailbox: Mailbox
) -> None:
    await factory.user(email="fresh@example.com")  # never confirmed
    await factory.user(email="taken@example.com", verified=True)
    await sign_in(client, "fresh@example.com")
    refused = await post_form(
        client, "/account/profile/email", {"email": "elsewhere@example.com", "password": PASSWORD}
    )
    assert refused.status_code == 422 and "Confirm your current email first" in text_of(refused.text)

    confirmed = await factory.user(email="mover@example.com", verified=True)
    client.cookies.clear()
    await sign_in(client, confirmed.email)
    answer = await post_form(client, "/account/profile/email", {"email": "taken@example.com", "password": PASSWORD})
    assert answer.status_code == 303  # the same answer as for a free address
    async with runtime.db() as db:
        sent = list(await db.scalars(select(m.EmailMessage.to_address)))
    assert "taken@example.com" not in sent and "elsewhere@example.com" not in sent


async def test_sign_out_everywhere_else_keeps_this_browser(
    client: httpx.AsyncClient, app: Litestar, factory: Factory
) -> None:
    await factory.user(email="two@example.com")
    await sign_in(client, "two@example.com")
    laptop = second_browser(app)
    await sign_in(laptop, "two@example.com")
    page = await client.get("/account/profile")
    assert page.status_code == 200
    assert text_of(page.text).count("Signed in") == 2 and "this device" in page.text
    assert "198.51.100.44" in page.text  # the other device's address

    done = await post_form(client, "/account/sessions/sign-out-others", {})
    assert done.status_code == 303
    assert (await client.get("/account")).status_code == 200
    assert (await laptop.get("/account")).status_code == 303
    assert text_of((await client.get("/account/profile")).text).count("Signed in") == 1


async def test_my_data_is_a_zip_of_my_orders_and_nobody_elses(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    me = await factory.user(email="me@example.com")
    them = await factory.user(email="them@example.com")
    mine = await purchase(runtime, user=me)
    await purchase(runtime, user=them)
    await sign_in(client, "me@example.com")
    response = await client.get("/account/export")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/zip"
    assert "attachment" in response.headers["content-disposition"]
    assert "no-store" in response.headers["cache-control"]
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert {"orders.json", "orders.csv", "subscriptions.json", "credits.csv", "bookings.json", "account.json"} <= set(
        archive.namelist()
    )
    orders = json.loads(archive.read("orders.json"))
    assert [o["number"] for o in orders] == [mine.order.number]
    assert json.loads(archive.read("account.json"))[0]["email"] == "me@example.com"
    assert str(mine.order.number) in archive.read("orders.csv").decode()


async def test_closing_the_account_anonymises_it_keeps_the_order_and_stops_sign_in(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    leaver = await factory.user(email="leaver@example.com", name="Lee Leaver")
    bought = await purchase(runtime, user=leaver)
    await sign_in(client, "leaver@example.com")
    wrong = await post_form(client, "/account/delete", {"password": "not it at all"})
    assert wrong.status_code == 422
    closed = await post_form(client, "/account/delete", {"password": PASSWORD})
    assert (closed.status_code, closed.headers["location"]) == (303, "/")
    assert (await client.get("/account")).status_code == 303
    refused = await post_form(client, "/login", {"email": "leaver@example.com", "password": PASSWORD})
    assert refused.status_code == 422
    async with runtime.db() as db:
        row = await db.get(m.User, leaver.id)
        order = await db.get(m.Order, bought.order.id)
    assert row is not None and not row.is_active and row.name == "" and row.email.endswith("@invalid")
    assert order is not None and order.status == "paid" and order.total == bought.order.total  # the record stays
    assert order.email == row.email  # without the person's address
    await factory.user(email="admin@example.com", role="admin")
    client.cookies.clear()
    await sign_in(client, "admin@example.com")
    admin_view = await client.get(f"/admin/orders/{bought.order.id}")
    assert admin_view.status_code == 200 and "leaver@example.com" not in admin_view.text


@pytest.mark.usefixtures("app_server")
async def test_closing_the_account_ends_the_plan_at_stripe_and_clears_the_customer(
    client: httpx.AsyncClient,
    runtime: Runtime,
    factory: Factory,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
) -> None:
    await make_plan(runtime)
    await factory.user(email="member-leaves@example.com", name="Mel Member")
    await sign_in(client, "member-leaves@example.com")
    sub_id = await subscribe(client)
    await pay_first_invoice(client, runtime, sub_id)
    await settle(stripe_emulator, queue, runtime)
    sub = await load_sub(runtime, sub_id)
    assert sub.status == "active"

    closed = await post_form(client, "/account/delete", {"password": PASSWORD})
    assert closed.status_code == 303
    remote = await runtime.stripe.v1.subscriptions.retrieve_async(sub.stripe_subscription_id)
    assert remote.status == "canceled"
    customer = await runtime.stripe.v1.customers.retrieve_async(sub.stripe_customer_id)
    assert not customer.email and not customer.name
    await settle(stripe_emulator, queue, runtime)
    assert (await load_sub(runtime, sub_id)).status == "canceled"


async def test_a_new_password_voids_a_pending_email_change_and_reset_links(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory, worker: Worker, mailbox: Mailbox
) -> None:
    """The security review: someone who had the session and the password asks to move the account to their own
    address; the owner changes the password; the old link must not work afterwards (nor an old reset link)."""
    await factory.user(email="owner@example.com", verified=True)
    await sign_in(client, "owner@example.com")
    await post_form(client, "/account/profile/email", {"email": "thief@example.com", "password": PASSWORD})
    [change] = await mailbox.wait_for("thief@example.com")
    link = re.search(r"http://testserver\.local(/verify-email/\S+)", body_text(change))
    assert link is not None
    await post_form(client, "/forgot-password", {"email": "owner@example.com"})
    [reset] = await mailbox.wait_for("owner@example.com")
    reset_link = re.search(r"http://testserver\.local(/reset-password/\S+)", body_text(reset))
    assert reset_link is not None

    changed = await post_form(
        client,
        "/account/password",
        {
            "current_password": PASSWORD,
            "new_password": "a brand new passphrase",
            "new_password_confirm": "a brand new passphrase",
        },
    )
    assert changed.status_code == 303
    assert (await client.get(link.group(1))).status_code == 410
    assert (await client.get(reset_link.group(1))).status_code == 410
    async with runtime.db() as db:
        owner = await db.scalar(select(m.User).where(m.User.email == "owner@example.com"))
    assert owner is not None  # still the owner's address
