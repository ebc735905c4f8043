"""Files in a bucket (STORAGE_URL=s3://…): a shop whose seeded files live in an S3-compatible server (moto, offline)
sells one and the buyer downloads exactly the stored bytes, streamed through the web process.

A stack of its own (web, worker, emulator, embedded Redis) so the main journeys keep the default local storage.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from e2e.conftest import LiveServer, serve_stack, unique_email
from e2e.test_purchase import GUIDE, add_to_cart, continue_to_payment, expect_paid, fill_billing, pay_with
from tests.support import S3Server, s3_server

PREFIX = "e2e-shop"


@pytest.fixture(scope="module")
def bucket_shop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LiveServer, S3Server]]:
    with s3_server() as s3, serve_stack(tmp_path_factory, redis_url=None, extra_env=s3.env(PREFIX)) as server:
        yield server, s3


def test_a_guest_buys_a_file_kept_in_the_bucket_and_downloads_its_exact_bytes(
    browser: Browser, bucket_shop: tuple[LiveServer, S3Server]
) -> None:
    server, s3 = bucket_shop
    slug, name = GUIDE
    key = f"{PREFIX}/products/{slug}.zip"
    assert key in s3.keys(PREFIX)  # `cartwright seed` stored the demo files in the bucket…
    assert not (server.var_dir / "uploads" / "products").exists()  # …and nothing on the web node's disk

    context = browser.new_context(base_url=server.base_url, viewport={"width": 390, "height": 844})
    page = context.new_page()
    add_to_cart(page, slug, name)
    page.goto("/cart")
    page.get_by_role("link", name="Checkout").click()
    fill_billing(page, email=unique_email("bucket"))
    continue_to_payment(page)
    pay_with(page, "4242 4242 4242 4242")
    expect_paid(page)

    with page.expect_download() as download:
        page.get_by_role("link", name="Download").first.click()
    assert download.value.suggested_filename == f"{slug}.zip"
    stored = s3.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read()
    assert Path(download.value.path()).read_bytes() == stored
    context.close()
