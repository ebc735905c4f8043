"""Purchased-file downloads: signed expiring links, counted downloads, refunds, ownership, fresh links by email."""

from __future__ import annotations

import asyncio
import html
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from uuid import uuid4

import httpx
import pytest
from saq import Queue, Worker
from sqlalchemy import func, select, text

from app.db import models as m
from app.domain.downloads.services import DownloadService, media_type_for
from app.lib.runtime import Runtime
from app.lib.storage import StorageKeyError, resolve_storage_key
from tests.conftest import Factory
from tests.helpers import job_finished, post_form, sign_in, text_of
from tests.support import Mailbox, body_text

PDF = b"%PDF-1.4\n% a Cartwright test file\n" + bytes(range(256))
LINK_RE = re.compile(r"http://testserver\.local/downloads/[A-Za-z0-9_-]{75}")


@dataclass(frozen=True)
class Purchase:
    order: m.Order
    entitlement: m.Entitlement
    product_name: str
    key: str


@pytest.fixture(autouse=True)
async def _no_orders(request: pytest.FixtureRequest) -> None:
    # conftest empties users and products; orders (and their lines and entitlements) are ours to clear.
    if "runtime" not in request.fixturenames and "client" not in request.fixturenames:
        return
    runtime: Runtime = request.getfixturevalue("runtime")
    async with runtime.db() as db:
        for table in ("entitlements", "order_lines", "orders"):
            await db.execute(text(f"DELETE FROM {table}"))
        await db.commit()


async def purchase(
    runtime: Runtime,
    *,
    user: m.User | None = None,
    email: str = "guest@example.com",
    limit: int = 5,
    used: int = 0,
    filename: str = "field-guide.pdf",
    content: bytes = PDF,
    digital_file: str | None = None,
    extra_plain_line: bool = False,
) -> Purchase:
    """A paid order with one downloadable line (its file written into storage) and its entitlement."""
    key = digital_file
    if key is None:
        key = f"products/{uuid4().hex}/{filename}"
        path = runtime.settings.storage_dir / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    name = f"Field Guide {uuid4().hex[:6]}"
    async with runtime.db() as db:
        product = m.Product(name=name, slug=f"p-{uuid4().hex[:12]}", price=1500, digital_file=key, download_limit=limit)
        number = m.OrderNumber()
        db.add_all([product, number])
        await db.flush()
        order = m.Order(
            number=number.id,
            user_id=user.id if user else None,
            email=user.email if user else email,
            billing_name="Robin Buyer",
            country="CA",
            status=m.OrderStatus.PAID.value,
            currency="CAD",
            subtotal=1500 + (500 if extra_plain_line else 0),
            tax_total=0,
            total=1500 + (500 if extra_plain_line else 0),
        )
        db.add(order)
        await db.flush()
        line = {"order_id": order.id, "quantity": 1, "tax": 0}
        db.add(
            m.OrderLine(
                **line,
                position=0,
                product_id=product.id,
                product_name=name,
                product_slug=product.slug,
                unit_price=1500,
                subtotal=1500,
                download_limit=limit,
                has_download=True,
            )
        )
        if extra_plain_line:  # e.g. a printed edition: nothing to download
            db.add(
                m.OrderLine(
                    **line,
                    position=1,
                    product_name="Printed map",
                    product_slug="printed-map",
                    unit_price=500,
                    subtotal=500,
                    has_download=False,
                )
            )
        await db.flush()
        [entitlement] = await DownloadService(db, runtime.settings).grant_for_order(order)
        entitlement.download_count = used
        await db.commit()
    return Purchase(order=order, entitlement=entitlement, product_name=name, key=key)


async def link(runtime: Runtime, entitlement: m.Entitlement, ttl: timedelta = timedelta(hours=24)) -> str:
    async with runtime.db() as db:
        return DownloadService(db, runtime.settings).signed_url(entitlement, ttl=ttl)


async def count_of(runtime: Runtime, entitlement: m.Entitlement) -> int:
    async with runtime.db() as db:
        value = await db.scalar(select(m.Entitlement.download_count).where(m.Entitlement.id == entitlement.id))
        assert value is not None
        return value


def page_text(response: httpx.Response) -> str:
    return html.unescape(text_of(response.text))


# --- granting and revoking ---------------------------------------------------------------------------------------


async def test_grant_is_idempotent_one_entitlement_per_downloadable_line(runtime: Runtime, factory: Factory) -> None:
    user = await factory.user(email="ann@example.com")
    bought = await purchase(runtime, user=user, limit=3, extra_plain_line=True)
    first = bought.entitlement
    assert (first.user_id, first.email, first.download_limit) == (user.id, "ann@example.com", 3)
    assert first.product_name == bought.product_name and first.order_id == bought.order.id

    async with runtime.db() as db:
        service = DownloadService(db, runtime.settings)
        again = await service.grant_for_order(bought.order)
        twice = await service.grant_for_order(bought.order)
        await db.commit()
        assert [e.id for e in again] == [e.id for e in twice] == [first.id]
        rows = await db.scalar(select(func.count()).select_from(m.Entitlement))
        assert rows == 1  # the printed line has no download
        assert [e.id for e in await service.for_user(user)] == [first.id]

        assert await service.revoke_for_order(bought.order) == 1
        assert await service.revoke_for_order(bought.order) == 0  # idempotent
        await db.commit()
        [kept] = await service.grant_for_order(bought.order)  # a re-run of fulfilment does not un-revoke
        assert kept.id == first.id and kept.revoked_at is not None


# --- downloading -------------------------------------------------------------------------------------------------


async def test_signed_link_streams_the_file_with_type_and_disposition(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    bought = await purchase(runtime)
    url = await link(runtime, bought.entitlement)
    assert url.startswith("http://testserver.local/downloads/")

    response = await client.get(url)  # a guest: no account, the link is the credential
    assert response.status_code == 200, response.text
    assert response.content == PDF
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["content-disposition"] == 'attachment; filename="field-guide.pdf"'
    assert response.headers["cache-control"] == "private, no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert await count_of(runtime, bought.entitlement) == 1
    async with runtime.db() as db:
        row = await db.get(m.Entitlement, bought.entitlement.id)
        assert row is not None and row.last_downloaded_at is not None

    assert (await client.get(f"/static/{bought.key}")).status_code == 404  # never public


def test_media_types_describe_the_file_itself() -> None:
    assert media_type_for("a.zip") == "application/zip"
    assert media_type_for("a.epub") == "application/epub+zip"
    assert media_type_for("a.tar.gz") == "application/gzip"  # never Content-Encoding: the browser would unpack it
    assert media_type_for("README") == "application/octet-stream"


async def test_tampered_and_foreign_tokens_get_404(client: httpx.AsyncClient, runtime: Runtime) -> None:
    bought = await purchase(runtime)
    url = await link(runtime, bought.entitlement)
    token = url.rsplit("/", 1)[1]
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    middle = token[:30] + ("x" if token[30] != "x" else "y") + token[31:]  # the expiry or the id changed
    async with runtime.db() as db:
        other_key = DownloadService(db, replace(runtime.settings, secret_key="another-shop's-secret"))
        forged = other_key.signed_url(bought.entitlement).rsplit("/", 1)[1]
        nobody = m.Entitlement(id=uuid4(), download_limit=5)
        unknown = DownloadService(db, runtime.settings).signed_url(nobody).rsplit("/", 1)[1]
    for bad in (flipped, middle, forged, unknown, token + "A", token[:-2], "not-a-token", "%2e%2e%2fsecret"):
        response = await client.get(f"/downloads/{bad}")
        assert response.status_code == 404, bad
        assert "<html" in response.text and PDF not in response.content
    assert await count_of(runtime, bought.entitlement) == 0


async def test_expired_link_says_so_and_offers_a_fresh_one(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    bought = await purchase(runtime)
    expired = await link(runtime, bought.entitlement, ttl=timedelta(seconds=-1))
    response = await client.get(expired)
    assert response.status_code == 410
    assert "This link has expired" in page_text(response)
    assert 'action="/downloads/resend"' in response.text and 'name="email"' in response.text
    assert await count_of(runtime, bought.entitlement) == 0

    owner = await factory.user(email="owner@example.com")
    mine = await purchase(runtime, user=owner)
    await sign_in(client, "owner@example.com")
    response = await client.get(await link(runtime, mine.entitlement, ttl=timedelta(seconds=-1)))
    assert response.status_code == 410
    assert 'href="/account/downloads"' in response.text  # signed in: straight to fresh links


async def test_download_limit_is_enforced_with_a_clear_page(client: httpx.AsyncClient, runtime: Runtime) -> None:
    bought = await purchase(runtime, limit=5, used=4)
    url = await link(runtime, bought.entitlement)
    assert (await client.get(url)).status_code == 200  # the 5th
    sixth = await client.get(url)
    assert sixth.status_code == 403
    assert "You've used all 5 downloads" in page_text(sixth)
    assert "shop@cartwright.test" in sixth.text  # who to contact
    assert PDF not in sixth.content
    assert await count_of(runtime, bought.entitlement) == 5


async def test_concurrent_clicks_on_the_last_download_let_exactly_one_through(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    bought = await purchase(runtime, limit=5, used=4)
    url = await link(runtime, bought.entitlement)
    responses = await asyncio.gather(*(client.get(url) for _ in range(6)))
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 403, 403, 403, 403, 403], statuses
    assert await count_of(runtime, bought.entitlement) == 5


async def test_refunded_purchase_is_refused(client: httpx.AsyncClient, runtime: Runtime) -> None:
    bought = await purchase(runtime)
    url = await link(runtime, bought.entitlement)
    async with runtime.db() as db:
        assert await DownloadService(db, runtime.settings).revoke_for_order(bought.order) == 1
        await db.commit()
    response = await client.get(url)
    assert response.status_code == 410
    assert "This purchase was refunded" in page_text(response)
    assert await count_of(runtime, bought.entitlement) == 0


async def test_another_signed_in_customer_gets_404_for_someone_elses_link(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory, new_browser: Callable[..., httpx.AsyncClient]
) -> None:
    ann = await factory.user(email="ann@example.com")
    await factory.user(email="bob@example.com")
    anns = await purchase(runtime, user=ann)
    url = await link(runtime, anns.entitlement)

    await sign_in(client, "bob@example.com")
    response = await client.get(url)
    assert response.status_code == 404
    assert PDF not in response.content and anns.product_name not in response.text
    assert await count_of(runtime, anns.entitlement) == 0
    async with new_browser() as browser:
        await sign_in(browser, "ann@example.com")
        assert (await browser.get(url)).status_code == 200  # the owner
    async with new_browser() as anonymous:
        assert (await anonymous.get(url)).status_code == 200  # from the receipt email, not signed in


async def test_missing_file_or_escaping_storage_key_shows_a_page_and_costs_nothing(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    secret = runtime.settings.storage_dir.parent / "secret.txt"
    secret.parent.mkdir(parents=True, exist_ok=True)
    secret.write_bytes(b"not for sale")
    for key in ("../secret.txt", "products/../../secret.txt", str(secret), "products/does-not-exist.pdf"):
        bought = await purchase(runtime, digital_file=key)
        response = await client.get(await link(runtime, bought.entitlement))
        assert response.status_code == 500, key
        assert "This file isn't available right now" in page_text(response)
        assert b"not for sale" not in response.content
        assert await count_of(runtime, bought.entitlement) == 0


def test_storage_keys_resolve_strictly_inside_the_storage_dir(tmp_path: Path) -> None:
    storage = tmp_path / "uploads"
    (storage / "products").mkdir(parents=True)
    (tmp_path / "outside.txt").write_text("x")
    (storage / "products" / "link.pdf").symlink_to(tmp_path / "outside.txt")
    assert resolve_storage_key(storage, "products/a.pdf") == (storage / "products" / "a.pdf").resolve()
    for key in ("", "../outside.txt", "products/../../outside.txt", "/etc/passwd", "products\\..\\x", "a\x00b", "."):
        with pytest.raises(StorageKeyError):
            resolve_storage_key(storage, key)
    with pytest.raises(StorageKeyError):
        resolve_storage_key(storage, "products/link.pdf")  # a symlink pointing outside
    static = Path(__file__).resolve().parents[2] / "static"
    with pytest.raises(StorageKeyError):
        resolve_storage_key(static, "css/app.css")  # purchased files are never served from static/


# --- the account page and fresh links for owners -------------------------------------------------------------------


async def test_account_downloads_lists_only_ones_own(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory
) -> None:
    assert (await client.get("/account/downloads")).headers["location"].startswith("/login?next_url=")
    ann = await factory.user(email="ann@example.com")
    bob = await factory.user(email="bob@example.com")
    older = await purchase(runtime, user=ann, limit=2, used=2)
    refunded = await purchase(runtime, user=ann)
    newest = await purchase(runtime, user=ann, used=1)
    bobs = await purchase(runtime, user=bob)
    guests = await purchase(runtime, email="ann@example.com")  # same address, no account: not listed
    async with runtime.db() as db:
        await DownloadService(db, runtime.settings).revoke_for_order(refunded.order)
        await db.commit()

    await sign_in(client, "ann@example.com")
    overview = await client.get("/account")
    assert 'href="/account/downloads"' in overview.text
    response = await client.get("/account/downloads")
    assert response.status_code == 200
    page = page_text(response)
    for mine in (older, refunded, newest):
        assert mine.product_name in page and mine.order.display_number in page
    assert bobs.product_name not in page and guests.product_name not in page
    assert page.index(newest.product_name) < page.index(refunded.product_name) < page.index(older.product_name)
    assert "4 of 5 downloads left" in page and "0 of 2 downloads left" in page
    assert "Available" in page and "Used up" in page and "Refunded" in page

    links = LINK_RE.findall(response.text)
    assert len(links) == 1  # only the usable one has a Download button
    download = await client.get(links[0])
    assert download.status_code == 200 and download.content == PDF
    assert await count_of(runtime, newest.entitlement) == 2


async def test_fresh_link_for_the_owner_and_404_for_anyone_else(
    client: httpx.AsyncClient, runtime: Runtime, factory: Factory, new_browser: Callable[..., httpx.AsyncClient]
) -> None:
    ann = await factory.user(email="ann@example.com")
    await factory.user(email="bob@example.com")
    anns = await purchase(runtime, user=ann)
    path = f"/account/downloads/{anns.entitlement.id}/link"

    await sign_in(client, "bob@example.com")
    assert (await post_form(client, path, {})).status_code == 404
    htmx = await post_form(client, path, {}, htmx=True)
    assert htmx.status_code == 404 and "<html" not in htmx.text and anns.product_name not in htmx.text
    assert (await post_form(client, f"/account/downloads/{uuid4()}/link", {})).status_code == 404

    async with new_browser() as browser:
        await sign_in(browser, "ann@example.com")
        fragment = await post_form(browser, path, {}, htmx=True)
        assert fragment.status_code == 200
        assert "<html" not in fragment.text
        assert f'id="download-{anns.entitlement.id}"' in fragment.text
        assert fragment.headers["vary"].startswith("HX-Request")
        [fresh] = set(LINK_RE.findall(fragment.text))
        assert f'id="link-{anns.entitlement.id}"' in fragment.text  # shown in a labelled field to copy
        plain = await post_form(browser, path, {})
        assert plain.status_code == 303 and LINK_RE.fullmatch(plain.headers["location"])
        assert (await browser.get(fresh)).content == PDF


# --- fresh links by email ------------------------------------------------------------------------------------------


async def test_guest_gets_fresh_links_by_email_and_unknown_addresses_get_the_same_answer(
    client: httpx.AsyncClient, runtime: Runtime, worker: Worker, queue: Queue, mailbox: Mailbox
) -> None:
    assert (await client.get("/downloads/resend")).status_code == 200  # not mistaken for a token
    first = await purchase(runtime, email="Guest@Example.com")
    second = await purchase(runtime, email="guest@example.com", used=1)
    used_up = await purchase(runtime, email="guest@example.com", limit=1, used=1)

    known = await post_form(client, "/downloads/resend", {"email": "guest@example.com"}, htmx=True)
    unknown = await post_form(client, "/downloads/resend", {"email": "nobody@example.com"}, htmx=True)
    assert known.status_code == unknown.status_code == 200
    assert "<html" not in known.text and 'id="resend-form"' in known.text
    assert known.text.replace("guest@example.com", "X") == unknown.text.replace("nobody@example.com", "X")
    assert "we've emailed fresh download links" in page_text(known)

    [message] = await mailbox.wait_for("guest@example.com")
    assert message["Subject"] == "Your Cartwright download links"
    body = body_text(message)
    assert first.product_name in body and second.product_name in body and used_up.product_name not in body
    links = LINK_RE.findall(body)
    assert len(links) == 2
    for url in links:
        response = await client.get(url)
        assert response.status_code == 200 and response.content == PDF
    async with runtime.db() as db:
        kinds = list(await db.scalars(select(m.EmailMessage.to_address).where(m.EmailMessage.kind == "download_links")))
        email_id = await db.scalar(select(m.EmailMessage.id).where(m.EmailMessage.kind == "download_links"))
    assert kinds == ["guest@example.com"]  # nothing was written for the unknown address
    await job_finished(queue, f"email:{email_id}")


async def test_resend_is_rate_limited_per_address_without_saying_so(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await purchase(runtime, email="guest@example.com")
    answers = [
        await post_form(client, "/downloads/resend", {"email": "GUEST@example.com "}, htmx=True) for _ in range(5)
    ]
    assert {a.status_code for a in answers} == {200}
    assert len({a.text.replace("GUEST@example.com", "guest@example.com") for a in answers}) == 1
    async with runtime.db() as db:
        sent = await db.scalar(
            select(func.count()).select_from(m.EmailMessage).where(m.EmailMessage.kind == "download_links")
        )
    assert sent == 3


async def test_resend_form_asks_for_a_valid_email(client: httpx.AsyncClient) -> None:
    response = await post_form(client, "/downloads/resend", {"email": "not-an-email"}, htmx=True)
    assert response.status_code == 422
    assert 'id="resend-form"' in response.text and 'aria-invalid="true"' in response.text
    plain = await client.get("/downloads/resend")
    assert '<label for="f-email">Email</label>' in plain.text
