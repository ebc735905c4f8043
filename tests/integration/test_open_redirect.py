"""Issue #12 hole 3: no client-supplied URL sends the browser off-site, with or without HTMX."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import Factory
from tests.helpers import csrf_token, post_form

PASSWORD = "correct horse battery"
OFF_SITE = [
    "/\\evil.example",
    "/%5Cevil.example",
    "//evil.example",
    "http:evil.example",
    "https://evil.example",
    "javascript:alert(1)",
    "/\t/evil.example",
    "/\n/evil.example",
    "/%2F%2Fevil.example",
]


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
async def test_sign_in_never_redirects_off_site(client: httpx.AsyncClient, factory: Factory, htmx: bool) -> None:
    await factory.user(email="ann@example.com")
    for target in OFF_SITE:
        response = await post_form(
            client, "/login", {"email": "ann@example.com", "password": PASSWORD, "next": target}, htmx=htmx
        )
        where = response.headers["hx-redirect"] if htmx else response.headers["location"]
        assert where == "/account", target
        await post_form(client, "/logout", {})
    page = await client.get("/login", params={"next_url": "/\\evil.example"})
    assert "evil.example" not in page.text  # not even carried in the form's hidden field


async def test_the_cart_returns_only_to_pages_of_this_site(client: httpx.AsyncClient, factory: Factory) -> None:
    product = await factory.product(name="Atlas", price=900)
    token = await csrf_token(client, "/")
    for referer in [
        "http://testserver.local/\\evil.example",
        "http://testserver.local//evil.example",
        "http://testserver.local/%5Cevil.example",
        "http://evil.example/products",
    ]:
        response = await client.post(
            "/cart/items",
            data={"product_id": str(product.id), "quantity": "1"},
            headers={"x-csrftoken": token, "referer": referer},
        )
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/cart", referer
    back = await client.post(
        "/cart/items",
        data={"product_id": str(product.id), "quantity": "1"},
        headers={"x-csrftoken": token, "referer": "http://testserver.local/products?page=2"},
    )
    assert back.headers["location"] == "/products?page=2"  # a page of ours: back where the shopper was
