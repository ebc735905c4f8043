"""Issue #12 hole 6 and "denials are logged": tokens never reach logs or the admin's outbox view; refusals are logged.

Logs are captured with structlog's own ``capture_logs`` (it swaps the processors every configured logger shares,
so module-level loggers are caught too): the entries are what the renderer would have written.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import structlog
from sqlalchemy import select
from structlog.testing import capture_logs

from app.db import models as m
from app.lib.redact import MASK, loggable_path, mask_secret_links
from app.lib.runtime import Runtime
from tests.conftest import Factory
from tests.helpers import post_form, sign_in
from tests.integration.test_downloads import link, purchase


@pytest.fixture
def logs() -> Iterator[list[dict[str, Any]]]:
    """Everything logged at INFO and above (production's level; the test run may be quieter)."""
    wrapper = structlog.get_config()["wrapper_class"]
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    try:
        with capture_logs() as entries:
            yield entries
    finally:
        structlog.configure(wrapper_class=wrapper)


async def reset_email(client: httpx.AsyncClient, runtime: Runtime, email: str) -> tuple[m.EmailMessage, str]:
    response = await post_form(client, "/forgot-password", {"email": email}, htmx=True)
    assert response.status_code == 200
    async with runtime.db() as db:
        message = await db.scalar(select(m.EmailMessage).where(m.EmailMessage.to_address == email))
    assert message is not None
    found = re.search(r"/reset-password/([A-Za-z0-9_\-]+)", message.text_body)
    assert found, message.text_body
    return message, found.group(1)


async def test_reset_and_download_tokens_never_reach_the_log(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, logs: list[dict[str, Any]]
) -> None:
    await factory.user(email="ann@example.com")
    _, token = await reset_email(client, runtime, "ann@example.com")
    assert (await client.get(f"/reset-password/{token}?utm_source=mail")).status_code == 200
    bought = await purchase(runtime)
    url = await link(runtime, bought.entitlement)
    download_token = url.rsplit("/", 1)[1]
    assert (await client.get(url.removeprefix("http://testserver.local"))).status_code == 200

    written = repr(logs)
    assert token not in written
    assert download_token not in written
    assert "utm_source" not in written  # no query strings either
    paths = {entry.get("path") for entry in logs if entry.get("event") == "request"}
    assert "/reset-password/{token}" in paths
    assert any(p and p.startswith("/downloads/{") for p in paths), paths


async def test_email_confirmation_tokens_never_reach_the_log(
    client: httpx.AsyncClient, runtime: Runtime, logs: list[dict[str, Any]]
) -> None:
    assert (
        await post_form(client, "/register", {"email": "vic@example.com", "password": "a long passphrase"})
    ).status_code == 200
    async with runtime.db() as db:
        message = await db.scalar(select(m.EmailMessage).where(m.EmailMessage.to_address == "vic@example.com"))
    assert message is not None
    found = re.search(r"/verify-email/([A-Za-z0-9_\-]+)", message.text_body)
    assert found, message.text_body
    assert (await client.get(f"/verify-email/{found.group(1)}?utm_source=mail")).status_code == 303
    assert found.group(1) not in repr(logs)
    paths = {entry.get("path") for entry in logs if entry.get("event") == "request"}
    assert "/verify-email/{token}" in paths


def test_paths_without_a_route_have_token_like_segments_redacted() -> None:
    assert loggable_path("/reset-password/Zm9vYmFyYmF6cXV4cXV1eGNvcmdlZ3JhdWx0") == "/reset-password/{redacted}"
    assert loggable_path("/products/field-guide") == "/products/field-guide"
    assert loggable_path("/x", "/downloads/{token:str}") == "/downloads/{token}"
    text = "Reset: https://shop.test/reset-password/abcdefghijklmnopqrstuvwxyz0123 now; /downloads/resend stays."
    assert mask_secret_links(text) == f"Reset: {MASK} now; /downloads/resend stays."


async def test_the_outbox_shows_a_reset_email_with_its_link_masked(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime
) -> None:
    await factory.user(email="ann@example.com")
    message, token = await reset_email(client, runtime, "ann@example.com")
    assert token in message.html_body  # the email itself goes out intact
    await factory.user(email="admin@example.com", role="admin")
    await sign_in(client, "admin@example.com")
    page = await client.get(f"/admin/emails/{message.id}")
    assert page.status_code == 200
    assert token not in page.text
    assert "link hidden" in page.text
    html = await client.get(f"/admin/emails/{message.id}/html")  # the framed HTML version
    assert html.status_code == 200
    assert token not in html.text
    assert "link hidden" in html.text


async def test_another_customers_order_is_a_404_and_one_access_denied_line(
    client: httpx.AsyncClient, factory: Factory, runtime: Runtime, logs: list[dict[str, Any]]
) -> None:
    owner = await factory.user(email="owner@example.com")
    bought = await purchase(runtime, user=owner)
    intruder = await factory.user(email="intruder@example.com")
    await sign_in(client, "intruder@example.com")
    logs.clear()

    response = await client.get(f"/account/orders/{bought.order.id}?ref=probe")
    assert response.status_code == 404
    assert "find that order" in response.text
    [denied] = [entry for entry in logs if entry.get("event") == "access_denied"]
    assert denied["reason"] == "not_owner"
    assert denied["resource"] == "order"
    assert denied["object_id"] == str(bought.order.id)
    assert denied["account"] == str(intruder.id)
    assert denied["ip"] == "203.0.113.7"  # the test client's address
    assert denied["path"] == "/account/orders/{order_id}"
    assert denied["request_id"] == response.headers["x-request-id"]
    assert "ref=probe" not in repr(denied)


async def test_a_request_id_from_the_client_is_not_trusted(client: httpx.AsyncClient) -> None:
    response = await client.get("/", headers={"X-Request-ID": "forged-id"})
    assert response.headers["x-request-id"] != "forged-id"
    assert re.fullmatch(r"[0-9a-f]{16}", response.headers["x-request-id"])
