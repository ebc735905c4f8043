"""Catalog management in the back office: the product form and table, covers, digital files, Stripe, categories,
the public catalog cache, read-only support and the audit log."""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import tracemalloc
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from uuid import UUID

import httpx
import pytest
from PIL import Image
from saq import Queue, Worker
from sqlalchemy import select

from app.db import models as m
from app.lib.runtime import Runtime
from app.lib.settings import Settings
from app.lib.stripe_gateway import build_stripe_client
from app.stripe_emulator.server import EmulatorServer, free_port
from tests.conftest import Factory
from tests.helpers import CSRF_COOKIE, csrf_token, job_finished, post_form, sign_in, text_of
from tests.integration.purchase_support import add_to_cart, confirm, load_order, open_pay_page, place_order, settle
from tests.support import Mailbox, body_text

pytestmark = pytest.mark.usefixtures("app_server")

PRODUCT_FORM = {
    "name": "Field Notes on Typography",
    "slug": "",
    "summary": "Short essays on letters.",
    "description": "Essays on **type**.",
    "price": "12.50",
    "category_id": "",
    "stock": "",
    "download_limit": "5",
    "seo_title": "",
    "seo_description": "",
    "is_active": "on",
}


async def staff(
    new_browser: Callable[..., httpx.AsyncClient], factory: Factory, role: str = "admin"
) -> httpx.AsyncClient:
    """A second browser, signed in as a new staff member of ``role``."""
    email = f"{role}-{os.urandom(3).hex()}@example.com"
    await factory.user(email=email, role=role)
    browser = new_browser()
    await sign_in(browser, email)
    return browser


async def create_product(admin: httpx.AsyncClient, **fields: str) -> UUID:
    response = await post_form(admin, "/admin/products", {**PRODUCT_FORM, **fields})
    assert response.status_code == 303, response.text
    match = re.fullmatch(r"/admin/products/([0-9a-f-]{36})", response.headers["location"])
    assert match, response.headers["location"]
    return UUID(match.group(1))


async def load_product(runtime: Runtime, product_id: UUID) -> m.Product:
    async with runtime.db() as db:
        product = await db.get(m.Product, product_id)
        assert product is not None
        return product


async def upload(
    admin: httpx.AsyncClient, path: str, field: str, name: str, content: bytes, content_type: str, *, htmx: bool = True
) -> httpx.Response:
    """A multipart upload; with ``htmx`` the CSRF token travels in the header (the streaming path), without it in
    the body, as a browser without JavaScript sends it."""
    token = admin.cookies.get(CSRF_COOKIE) or await csrf_token(admin, "/admin")
    headers = {"x-csrftoken": token, "HX-Request": "true"} if htmx else {}
    data = {} if htmx else {"_csrf_token": token}
    return await admin.post(path, files={field: (name, content, content_type)}, data=data, headers=headers)


def png(width: int = 1200, height: int = 750) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 90, 40)).save(buffer, "PNG")
    return buffer.getvalue()


async def audit_actions(runtime: Runtime) -> list[m.AuditEntry]:
    async with runtime.db() as db:
        return list(await db.scalars(select(m.AuditEntry).order_by(m.AuditEntry.created_at)))


async def test_invalid_product_form_re_renders_in_place_with_every_typed_value(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, new_browser: Callable[..., httpx.AsyncClient]
) -> None:
    admin = await staff(new_browser, factory)
    await factory.product(slug="taken", name="Taken")
    typed = {**PRODUCT_FORM, "name": "", "price": "12.505", "summary": "Kept summary", "stock": "-3"}
    response = await post_form(admin, "/admin/products", typed, htmx=True)
    assert response.status_code == 422
    assert "<html" not in response.text and 'id="product-editor"' in response.text
    assert "Give the product a name." in response.text
    assert "Enter a price such as 12.50 (at most two decimals)." in response.text
    assert "Enter a whole number of copies" in response.text
    assert 'value="Kept summary"' in response.text and 'value="12.505"' in response.text
    assert 'aria-invalid="true"' in response.text

    clash = await post_form(admin, "/admin/products", {**PRODUCT_FORM, "slug": "taken"}, htmx=True)
    assert clash.status_code == 422
    assert "Another product already uses the slug “taken”: choose another." in clash.text
    assert 'value="Field Notes on Typography"' in clash.text
    bad_slug = await post_form(admin, "/admin/products", {**PRODUCT_FORM, "slug": "Not A Slug"}, htmx=True)
    assert bad_slug.status_code == 422 and "not-a-slug" in bad_slug.text
    assert await audit_actions(runtime) == []  # nothing was saved


async def test_created_product_is_in_the_shop_at_once_and_a_price_change_is_a_new_stripe_price(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, new_browser: Callable[..., httpx.AsyncClient]
) -> None:
    admin = await staff(new_browser, factory)
    assert "Field Notes" not in (await client.get("/products")).text  # warms the cache
    assert (await client.get("/products/field-notes-on-typography")).status_code == 404  # cached too

    product_id = await create_product(admin)
    product = await load_product(runtime, product_id)
    assert (product.slug, product.price, product.currency, product.stock) == (
        "field-notes-on-typography",
        1250,
        "CAD",
        None,
    )
    page = await client.get("/products/field-notes-on-typography")
    assert page.status_code == 200 and "$12.50 CAD" in page.text
    assert "Field Notes on Typography" in (await client.get("/products")).text

    # Mirrored to Stripe right after the save.
    assert product.stripe_product_id and product.stripe_price_id and product.stripe_synced_at
    stripe_product = await runtime.stripe.v1.products.retrieve_async(product.stripe_product_id)
    assert stripe_product.name == "Field Notes on Typography"
    assert stripe_product.metadata["product_id"] == str(product_id)
    first_price = product.stripe_price_id

    form = (await admin.get(f"/admin/products/{product_id}")).text
    assert 'value="12.50"' in form
    edited = await post_form(admin, f"/admin/products/{product_id}", {**PRODUCT_FORM, "price": "15.00"})
    assert edited.status_code == 303
    assert "$15.00 CAD" in (await client.get("/products/field-notes-on-typography")).text  # the very next request
    assert "$15.00 CAD" in (await client.get("/products")).text

    product = await load_product(runtime, product_id)
    assert product.stripe_price_id != first_price
    prices = await runtime.stripe.v1.prices.list_async({"product": product.stripe_product_id, "limit": 10})
    by_id = {p.id: p for p in prices.data}
    assert by_id[first_price].active is False and by_id[first_price].unit_amount == 1250
    assert by_id[product.stripe_price_id].active is True and by_id[product.stripe_price_id].unit_amount == 1500

    entries = await audit_actions(runtime)
    assert [e.action for e in entries] == ["product.create", "product.update"]
    assert entries[1].before == {"price": 1250} and entries[1].after == {"price": 1500}
    assert entries[1].target_id == str(product_id)


async def test_archive_hides_the_product_from_the_shop_at_once(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, new_browser: Callable[..., httpx.AsyncClient]
) -> None:
    admin = await staff(new_browser, factory)
    keep = await factory.product(name="Keeper", slug="keeper")
    gone = await factory.product(name="Goner", slug="goner")
    assert "Goner" in (await client.get("/products")).text
    token = admin.cookies.get(CSRF_COOKIE) or await csrf_token(admin, "/admin/products")
    response = await admin.post(
        "/admin/products/table/archive",  # the table's bulk button: its route answers with the table
        data={"ids": [str(gone.id)]},
        headers={
            "x-csrftoken": token,
            "HX-Request": "true",
            "HX-Current-URL": "http://testserver.local/admin/products?status=archived",
        },
    )
    assert response.status_code == 200 and 'id="admin-products"' in response.text and "<html" not in response.text
    assert "1 product(s) archived." in response.text
    assert "Goner" in response.text and "Keeper" not in response.text  # the table kept its "archived" filter
    listing = await client.get("/products")
    assert "Goner" not in listing.text and "Keeper" in listing.text
    assert (await client.get("/products/goner")).status_code == 404
    assert (await load_product(runtime, gone.id)).is_active is False
    assert (await load_product(runtime, keep.id)).is_active is True
    [entry] = await audit_actions(runtime)
    assert (entry.action, entry.before, entry.after) == ("product.archive", {"is_active": True}, {"is_active": False})
    # The table lists archived products too, filterable.
    table = await admin.get("/admin/products?status=active", headers={"HX-Request": "true"})
    assert "Keeper" in table.text and "Goner" not in table.text

    # Back and forth within minutes: Stripe's Product follows every change (each save is its own request there,
    # not a replay of an earlier one with the same target state).
    for action, active in (("activate", True), ("archive", False)) * 2:
        response = await admin.post(
            f"/admin/products/{action}", data={"ids": [str(gone.id)]}, headers={"x-csrftoken": token}
        )
        assert response.status_code in {200, 303}
        product = await load_product(runtime, gone.id)
        assert product.is_active is active and product.stripe_product_id
        mirrored = await runtime.stripe.v1.products.retrieve_async(product.stripe_product_id)
        assert mirrored.active is active, action


async def test_cover_upload_is_checked_by_content_and_size_and_served_as_thumbnails(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    new_browser: Callable[..., httpx.AsyncClient],
) -> None:
    admin = await staff(new_browser, factory)
    product_id = await create_product(admin)
    path = f"/admin/products/{product_id}/cover"

    fake = await upload(admin, path, "cover", "cover.png", b"this is not an image at all", "image/png")
    assert fake.status_code == 422 and "That file isn&#39;t an image" in fake.text
    huge = await upload(admin, path, "cover", "big.png", b"\x89PNG" + os.urandom(settings.cover_max_bytes), "image/png")
    assert huge.status_code == 422 and "Covers are limited to 5 MB." in huge.text
    gif = io.BytesIO()
    Image.new("RGB", (10, 10)).save(gif, "GIF")
    refused = await upload(admin, path, "cover", "cover.png", gif.getvalue(), "image/png")
    assert refused.status_code == 422 and "GIF images aren" in refused.text
    assert (await load_product(runtime, product_id)).cover_upload is None

    good = await upload(admin, path, "cover", "photo.jpg", png(), "image/jpeg")  # a PNG named .jpg: content wins
    assert good.status_code == 200 and good.headers["hx-redirect"] == f"/admin/products/{product_id}"
    key = (await load_product(runtime, product_id)).cover_upload
    assert key and key.startswith(f"covers/{product_id}/")
    page = (await client.get("/products/field-notes-on-typography")).text
    public = key.removeprefix("covers/")
    assert f"/media/covers/{public}/800.webp" in page
    assert f"/media/covers/{public}/400.webp" in (await client.get("/products")).text
    for width in (400, 800):
        image = await client.get(f"/media/covers/{public}/{width}.webp")
        assert image.status_code == 200 and image.headers["content-type"] == "image/webp"
        assert "immutable" in image.headers["cache-control"]
        assert Image.open(io.BytesIO(image.content)).size == (width, width * 750 // 1200)
    # Only thumbnails are public: nothing else in storage is reachable through the cover route.
    for probe in (f"{public}/original.png", f"../products/{product_id}/x", "x/../../secret_key"):
        assert (await client.get(f"/media/covers/{probe}")).status_code == 404
    assert [e.action for e in await audit_actions(runtime)][-1] == "product.cover"


async def test_digital_file_is_streamed_with_its_checksum_and_the_buyer_downloads_exactly_those_bytes(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    stripe_emulator: EmulatorServer,
    queue: Queue,
    worker: Worker,
    mailbox: Mailbox,
    new_browser: Callable[..., httpx.AsyncClient],
) -> None:
    admin = await staff(new_browser, factory)
    product_id = await create_product(admin, stock="5")
    path = f"/admin/products/{product_id}/file"
    first = os.urandom(1024)
    # Without JavaScript (token in the body): the CSRF check has parsed the form already; replaced below.
    response = await upload(admin, path, "file", "draft.pdf", first, "application/pdf", htmx=False)
    assert response.status_code == 303, response.text
    old_key = (await load_product(runtime, product_id)).digital_file
    assert old_key and (settings.storage_dir / old_key).read_bytes() == first

    content = os.urandom(3 * 1024 * 1024 + 17)
    digest = hashlib.sha256(content).hexdigest()
    response = await upload(admin, path, "file", "../ebook.pdf", content, "application/pdf")
    assert response.status_code == 200, response.text
    product = await load_product(runtime, product_id)
    assert (product.digital_file_name, product.digital_file_size, product.digital_file_sha256) == (
        "ebook.pdf",
        len(content),
        digest,
    )
    assert product.digital_file_content_type == "application/pdf"
    assert product.digital_file and (settings.storage_dir / product.digital_file).read_bytes() == content
    assert not (settings.storage_dir / old_key).exists()  # replaced only once the new one was complete
    shown = text_of((await admin.get(f"/admin/products/{product_id}")).text)
    assert f"ebook.pdf · 3.0 MB · sha256 {digest[:12]}…" in shown
    empty = await upload(admin, path, "file", "empty.pdf", b"", "application/pdf")
    assert empty.status_code == 422 and "That file is empty." in empty.text
    actions = [e.action for e in await audit_actions(runtime)]
    assert actions.count("product.file") == 2

    # A guest buys it, pays, and downloads exactly the uploaded bytes, under the uploaded name.
    assert "5 left" in (await client.get("/products/field-notes-on-typography")).text
    await add_to_cart(client, product)
    order_id = await place_order(client, email="reader@example.com")
    await confirm(runtime, await open_pay_page(client, order_id))
    await settle(stripe_emulator, queue, runtime)
    assert (await load_order(runtime, order_id)).status == "paid"
    assert "4 left" in (await client.get("/products/field-notes-on-typography")).text  # fulfilment invalidated
    [receipt] = await mailbox.wait_for("reader@example.com")
    [link] = re.findall(r"http://testserver\.local/downloads/(?!resend)\S+", body_text(receipt))

    # Archived: gone from the shop, still downloadable by its buyer.
    archived = await post_form(admin, "/admin/products/archive", {"ids": str(product_id)})
    assert archived.status_code == 303
    assert (await client.get("/products/field-notes-on-typography")).status_code == 404
    download = await client.get(link.replace("http://testserver.local", ""))
    assert download.status_code == 200
    assert download.content == content
    assert download.headers["content-type"] == "application/pdf"
    assert 'filename="ebook.pdf"' in download.headers["content-disposition"]


async def test_support_sees_products_read_only_and_every_change_is_refused(
    client: httpx.AsyncClient, factory: Factory, new_browser: Callable[..., httpx.AsyncClient]
) -> None:
    category = await factory.category()
    product = await factory.product(name="Look Only", category_id=category.id)
    support = await staff(new_browser, factory, role="support")
    table = await support.get("/admin/products")
    assert table.status_code == 200 and "Look Only" in table.text
    assert "New product" not in table.text and ">Archive</button>" not in table.text
    assert 'name="ids"' not in table.text
    form = await support.get(f"/admin/products/{product.id}")
    assert form.status_code == 200 and "<fieldset disabled>" in form.text
    for label in ("Save", "Upload cover", "Upload file", "Archive product"):
        assert f">{label}<" not in form.text, label
    categories = await support.get(f"/admin/categories/{category.id}")
    assert categories.status_code == 200 and "Delete category" not in categories.text
    token = support.cookies.get(CSRF_COOKIE) or ""
    for path in (
        "/admin/products",
        f"/admin/products/{product.id}",
        f"/admin/products/{product.id}/cover",
        f"/admin/products/{product.id}/file",
        "/admin/products/archive",
        "/admin/products/activate",
        "/admin/products/table/archive",
        "/admin/products/table/activate",
        "/admin/categories",
        f"/admin/categories/{category.id}",
        f"/admin/categories/{category.id}/delete",
    ):
        response = await post_form(support, path, {**PRODUCT_FORM, "ids": str(product.id)}, token=token)
        assert response.status_code == 403, path
    assert (await support.get("/admin/products/new")).status_code == 403


async def test_description_markdown_never_renders_scripts_or_javascript_links(
    client: httpx.AsyncClient, factory: Factory, new_browser: Callable[..., httpx.AsyncClient]
) -> None:
    admin = await staff(new_browser, factory)
    description = (
        "## Inside\n\nSome **bold** text and [a site](https://example.com).\n\n"
        "<script>alert('x')</script>\n\n[click](javascript:alert(1)) [again](JaVaScRiPt:alert(2)) "
        "<img src=x onerror=alert(3)> ![pic](javascript:alert(4))"
    )
    await create_product(admin, description=description)
    page = (await client.get("/products/field-notes-on-typography")).text
    body = page.split('class="product-description">', 1)[1].split("</div>", 1)[0]
    assert "<h2>Inside</h2>" in body and "<strong>bold</strong>" in body
    assert '<a href="https://example.com">a site</a>' in body
    assert "<script" not in body and "&lt;script&gt;" in body
    assert "javascript:" not in body.lower().replace("](javascript:", "")  # only as escaped text, never an href
    assert 'href="javascript' not in body.lower() and 'src="javascript' not in body.lower()
    assert "<img" not in body


async def test_products_csv_export_follows_the_filter(
    client: httpx.AsyncClient, factory: Factory, new_browser: Callable[..., httpx.AsyncClient]
) -> None:
    admin = await staff(new_browser, factory)
    books = await factory.category(slug="books", name="Books")
    await factory.product(name="=Formula Book", slug="formula-book", category_id=books.id, price=1999)
    await factory.product(name="Other Thing", slug="other-thing")
    response = await admin.get("/admin/products/export.csv?category=books")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["name"], r["category"], r["price"], r["active"]) for r in rows] == [
        ("'=Formula Book", "Books", "19.99", "yes")
    ]
    table = await admin.get("/admin/products?q=other&sort=price")
    assert "Other Thing" in table.text and "Formula Book" not in table.text
    assert 'href="/admin/products/export.csv?q=other&amp;sort=price"' in table.text


async def test_categories_crud_with_clear_errors_and_the_shop_updates_at_once(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, new_browser: Callable[..., httpx.AsyncClient]
) -> None:
    admin = await staff(new_browser, factory)
    assert "Zines" not in (await client.get("/")).text
    created = await post_form(admin, "/admin/categories", {"name": "Zines", "slug": "", "position": "1"})
    assert created.status_code == 303
    assert "Zines" in (await client.get("/")).text  # cached home page invalidated
    async with runtime.db() as db:
        category = await db.scalar(select(m.Category).where(m.Category.slug == "zines"))
        assert category is not None
    duplicate = await post_form(admin, "/admin/categories", {"name": "Zines again", "slug": "zines"}, htmx=True)
    assert duplicate.status_code == 422 and "Another category already uses the slug “zines”" in duplicate.text
    renamed = await post_form(
        admin, f"/admin/categories/{category.id}", {"name": "Small Zines", "slug": "zines", "position": "2"}
    )
    assert renamed.status_code == 303 and "Small Zines" in (await client.get("/")).text

    await factory.product(name="Archived Zine", slug="archived-zine", category_id=category.id, is_active=False)
    refused = await post_form(admin, f"/admin/categories/{category.id}/delete", {}, htmx=True)
    assert refused.status_code == 409
    assert "still has 1 product(s), archived ones included" in refused.text
    async with runtime.db() as db:
        product = await db.scalar(select(m.Product).where(m.Product.slug == "archived-zine"))
        assert product is not None
        await db.delete(product)
        await db.commit()
    deleted = await post_form(admin, f"/admin/categories/{category.id}/delete", {})
    assert deleted.status_code == 303 and "Small Zines" not in (await client.get("/")).text
    entries = await audit_actions(runtime)
    assert [e.action for e in entries] == ["category.create", "category.update", "category.delete"]
    assert entries[1].before == {"name": "Zines", "position": 1}
    assert entries[1].after == {"name": "Small Zines", "position": 2}


async def test_when_stripe_is_unreachable_the_save_stands_and_the_job_syncs_it_later(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    queue: Queue,
    worker: Worker,
    new_browser: Callable[..., httpx.AsyncClient],
) -> None:
    admin = await staff(new_browser, factory)
    product_id = await create_product(admin)
    first_price = (await load_product(runtime, product_id)).stripe_price_id
    # Stripe unreachable from the web process: a real client aimed at a port nothing listens on.
    reachable = runtime.stripe
    runtime.stripe = build_stripe_client(replace(settings.stripe, api_base=f"http://127.0.0.1:{free_port()}"))
    try:
        saved = await post_form(admin, f"/admin/products/{product_id}", {**PRODUCT_FORM, "price": "20.00"})
    finally:
        runtime.stripe = reachable
    assert saved.status_code == 303
    page = await admin.get(f"/admin/products/{product_id}")
    assert "Saved; Stripe sync will retry." in page.text and "sync pending" in page.text
    assert "$20.00 CAD" in (await client.get("/products/field-notes-on-typography")).text  # the save stood

    job = await job_finished(queue, f"product-sync:{product_id}", timeout=30)  # the worker's own client
    assert job.status == "complete", job.error
    product = await load_product(runtime, product_id)
    assert product.stripe_synced_at is not None and product.stripe_price_id != first_price
    price = await runtime.stripe.v1.prices.retrieve_async(product.stripe_price_id or "")
    assert (price.unit_amount, price.active) == (2000, True)
    assert (await runtime.stripe.v1.prices.retrieve_async(first_price or "")).active is False


async def test_a_large_file_upload_is_streamed_not_held_in_memory(
    client: httpx.AsyncClient,
    factory: Factory,
    runtime: Runtime,
    settings: Settings,
    app_server: str,
    new_browser: Callable[..., httpx.AsyncClient],
) -> None:
    """40 MB through the real HTTP server, sent in 64 KiB pieces: the process never holds more than a few MB."""
    admin = await staff(new_browser, factory)
    product_id = await create_product(admin)
    token = admin.cookies.get(CSRF_COOKIE) or await csrf_token(admin, "/admin")
    boundary = "cartwright-test-boundary"
    piece = os.urandom(64 * 1024)
    pieces = 640  # 40 MiB
    digest = hashlib.sha256()
    for _ in range(pieces):
        digest.update(piece)

    async def body() -> AsyncIterator[bytes]:
        yield (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        for _ in range(pieces):
            yield piece
        yield f"\r\n--{boundary}--\r\n".encode()

    cookies = dict(admin.cookies.items())
    tracemalloc.start()
    try:
        async with httpx.AsyncClient(base_url=app_server, cookies=cookies) as http:
            response = await http.post(
                f"/admin/products/{product_id}/file",
                content=body(),
                headers={
                    "x-csrftoken": token,
                    "HX-Request": "true",
                    "Content-Type": f"multipart/form-data; boundary={boundary}",
                },
            )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 200, response.text
    product = await load_product(runtime, product_id)
    assert (product.digital_file_size, product.digital_file_sha256) == (pieces * len(piece), digest.hexdigest())
    assert peak < 8 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB while uploading 40 MB"
