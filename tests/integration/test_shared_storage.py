"""Product files and covers in an S3-compatible bucket (STORAGE_URL=s3://…), shared by two web nodes.

The bucket is moto's S3 server running offline in a thread; the app talks to it over HTTP as it would to AWS or
MinIO, with credentials from the standard AWS_* variables. Each "node" is a whole app (its own Runtime, storage
client and lifespan) on the suite's database and Redis, so what one node stores the other must serve.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from uuid import uuid4

import httpx
import pytest
from litestar import Litestar
from PIL import Image
from sqlalchemy import select, text

from app.db import models as m
from app.lib.runtime import Runtime
from app.lib.settings import Settings
from app.server.plugin import ApplicationCore
from tests.conftest import Factory
from tests.helpers import CSRF_COOKIE, csrf_token, sign_in
from tests.integration.test_downloads import count_of, link, purchase
from tests.support import S3_CREDENTIALS, S3Server, free_port, s3_server


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    saved = {key: os.environ.get(key) for key in S3_CREDENTIALS}
    os.environ.update(S3_CREDENTIALS)
    try:
        with s3_server() as server:
            yield server
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(autouse=True)
async def _no_orders(runtime: Runtime) -> None:
    async with runtime.db() as db:
        for table in ("entitlements", "order_lines", "orders"):
            await db.execute(text(f"DELETE FROM {table}"))
        await db.commit()


@asynccontextmanager
async def node(settings: Settings, address: str) -> AsyncIterator[httpx.AsyncClient]:
    """One more web node on ``settings``, with its lifespan, and a browser-like client for it."""
    runtime = Runtime(settings, redis_timeout=settings.redis_timeout)
    application = Litestar(plugins=[ApplicationCore(runtime)], openapi_config=None)
    started, stopping = asyncio.Event(), asyncio.Event()

    async def host() -> None:
        async with application.lifespan():
            started.set()
            await stopping.wait()

    task = asyncio.create_task(host())
    await started.wait()
    transport = httpx.ASGITransport(app=application, client=(address, 50000))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as client:
            yield client
    finally:
        stopping.set()
        await task


@pytest.fixture
def bucket_settings(migrated: Settings, s3: S3Server) -> Settings:
    """The suite's settings with files in the bucket, under a prefix of this test's own."""
    return replace(
        migrated,
        storage_url=f"s3://{s3.bucket}/shop-{uuid4().hex[:8]}",
        storage_s3_endpoint_url=s3.endpoint_url,
        storage_s3_region=s3.region,
    )


def _prefix(settings: Settings) -> str:
    return settings.storage_url.split("/", 3)[3]


async def _upload(browser: httpx.AsyncClient, path: str, field: str, name: str, content: bytes, kind: str) -> None:
    token = browser.cookies.get(CSRF_COOKIE) or await csrf_token(browser, "/admin")
    response = await browser.post(
        path, files={field: (name, content, kind)}, headers={"x-csrftoken": token, "HX-Request": "true"}
    )
    assert response.status_code == 200 and response.headers.get("hx-redirect", "").startswith("/admin/products/")


def _png(width: int = 1200, height: int = 750) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (40, 90, 200)).save(buffer, "PNG")
    return buffer.getvalue()


async def test_two_nodes_sharing_a_bucket_serve_each_others_uploads(
    runtime: Runtime, factory: Factory, bucket_settings: Settings, s3: S3Server
) -> None:
    prefix = _prefix(bucket_settings)
    await factory.user(email="admin@example.com", role="admin")
    product = await factory.product(name="Bucket Guide", slug="bucket-guide")
    # Bigger than one multipart part (5 MB) and than one streamed chunk, and not a round number of either.
    content = os.urandom(6 * 1024 * 1024 + 123)

    async with node(bucket_settings, "203.0.113.21") as node_a, node(bucket_settings, "203.0.113.22") as node_b:
        await sign_in(node_a, "admin@example.com")
        await _upload(node_a, f"/admin/products/{product.id}/file", "file", "guide.pdf", content, "application/pdf")
        await _upload(node_a, f"/admin/products/{product.id}/cover", "cover", "cover.png", _png(), "image/png")
        async with runtime.db() as db:
            stored = await db.get(m.Product, product.id)
            assert stored is not None and stored.digital_file and stored.cover_upload
            key, cover = stored.digital_file, stored.cover_upload
            assert stored.digital_file_sha256 == hashlib.sha256(content).hexdigest()

        # In the bucket, and not on node A's disk.
        assert s3.keys(prefix) == sorted(
            [f"{prefix}/{key}", f"{prefix}/{cover}/400.webp", f"{prefix}/{cover}/800.webp"]
        )
        assert not (bucket_settings.storage_dir / key).exists()

        # Node B shows the cover node A stored.
        public = cover.removeprefix("covers/")
        page = await node_b.get("/products/bucket-guide")
        assert f"/media/covers/{public}/800.webp" in page.text
        for width in (400, 800):
            image = await node_b.get(f"/media/covers/{public}/{width}.webp")
            assert image.status_code == 200 and image.headers["content-type"] == "image/webp"
            assert image.headers["cache-control"] == "public, max-age=31536000, immutable"
            assert Image.open(io.BytesIO(image.content)).size == (width, width * 750 // 1200)

        # A buyer's link, used on node B, streams exactly the bytes uploaded through node A.
        bought = await purchase(runtime, digital_file=key)
        url = (await link(runtime, bought.entitlement)).removeprefix("http://testserver.local")
        download = await node_b.get(url)
        assert download.status_code == 200
        assert download.content == content
        assert download.headers["content-length"] == str(len(content))
        assert download.headers["content-disposition"] == 'attachment; filename="guide.pdf"'
        assert download.headers["cache-control"] == "private, no-store"
        assert download.headers["referrer-policy"] == "no-referrer"  # A6: the same headers as a file on disk
        assert download.headers["x-content-type-options"] == "nosniff"
        assert await count_of(runtime, bought.entitlement) == 1

        # A file replaced through node B: node A's upload leaves the bucket once the product points at the new one.
        await sign_in(node_b, "admin@example.com")
        await _upload(node_b, f"/admin/products/{product.id}/file", "file", "guide-v2.pdf", b"v2", "application/pdf")
        assert f"{prefix}/{key}" not in s3.keys(prefix)


async def test_a_missing_object_is_a_clear_page_and_costs_no_download(
    runtime: Runtime, bucket_settings: Settings, s3: S3Server
) -> None:
    async with node(bucket_settings, "203.0.113.23") as shop:
        cover = await shop.get(f"/media/covers/{uuid4()}/{'a' * 16}/400.webp")
        assert cover.status_code == 404
        assert "text/html" in cover.headers["content-type"] and "No such image." in cover.text

        bought = await purchase(runtime, digital_file=f"products/{uuid4()}/gone.pdf")  # never uploaded
        url = (await link(runtime, bought.entitlement)).removeprefix("http://testserver.local")
        refused = await shop.get(url)
        assert refused.status_code == 500
        assert "text/html" in refused.headers["content-type"]
        assert "This file isn&#39;t available right now" in refused.text
        assert await count_of(runtime, bought.entitlement) == 0

        # Once the object is there (restored from the bucket's versioning, say), the same link works.
        s3.client().put_object(Bucket=s3.bucket, Key=f"{_prefix(bucket_settings)}/{bought.key}", Body=b"%PDF-1.4 ok")
        assert (await shop.get(url)).content == b"%PDF-1.4 ok"


async def test_seeding_puts_the_demo_files_in_the_bucket(
    runtime: Runtime, bucket_settings: Settings, s3: S3Server
) -> None:
    from app.cli.seed import seed_demo

    bucket_runtime = Runtime(bucket_settings)
    try:
        async with runtime.db() as db:
            await seed_demo(db, bucket_settings, bucket_runtime.storage)
            await db.commit()
            keys = list(await db.scalars(select(m.Product.digital_file).where(m.Product.digital_file.is_not(None))))
    finally:
        await bucket_runtime.close()
    prefix = _prefix(bucket_settings)
    assert keys and sorted(f"{prefix}/{key}" for key in keys) == s3.keys(prefix)
    assert all(re.fullmatch(r"products/[a-z0-9-]+\.zip", key) for key in keys)


async def test_an_unreachable_bucket_is_a_clear_page_costs_no_download_and_changes_no_product(
    runtime: Runtime, factory: Factory, bucket_settings: Settings
) -> None:
    down = replace(bucket_settings, storage_s3_endpoint_url=f"http://127.0.0.1:{free_port()}")  # nothing listens
    await factory.user(email="admin@example.com", role="admin")
    product = await factory.product(name="Offline Guide", slug="offline-guide", digital_file="products/old.pdf")
    async with node(down, "203.0.113.24") as shop:
        await sign_in(shop, "admin@example.com")
        token = shop.cookies.get(CSRF_COOKIE) or await csrf_token(shop, "/admin")
        headers = {"x-csrftoken": token, "HX-Request": "true"}
        for field, name, content in (("file", "new.pdf", b"%PDF new"), ("cover", "cover.png", _png(400, 300))):
            response = await shop.post(
                f"/admin/products/{product.id}/{field}",
                files={field: (name, content, "application/pdf")},
                headers=headers,
            )
            assert response.status_code == 503, field
            assert "The file store isn&#39;t answering, so nothing was changed." in response.text
        async with runtime.db() as db:
            unchanged = await db.get(m.Product, product.id)
            assert unchanged is not None
            assert (unchanged.digital_file, unchanged.cover_upload) == ("products/old.pdf", None)

        bought = await purchase(runtime, digital_file=f"products/{uuid4()}/guide.pdf")
        url = (await link(runtime, bought.entitlement)).removeprefix("http://testserver.local")
        refused = await shop.get(url)
        assert refused.status_code == 500
        assert "This file isn&#39;t available right now" in refused.text
        assert await count_of(runtime, bought.entitlement) == 0
