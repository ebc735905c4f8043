"""Browsing the catalog: listing, filters, search, sort, HTMX pagination and the product page."""

from __future__ import annotations

import httpx

from app.lib.static_assets import static_url
from tests.conftest import Factory
from tests.helpers import select_one, texts


async def seed_catalog(factory: Factory) -> None:
    fonts = await factory.category(slug="fonts", name="Fonts")
    books = await factory.category(slug="ebooks", name="E-books")
    await factory.product(
        name="Maple Serif",
        slug="maple-serif",
        price=3900,
        category_id=fonts.id,
        description="A warm text serif.",
        is_featured=True,
    )
    await factory.product(
        name="Harbour Grotesk",
        slug="harbour-grotesk",
        price=4500,
        category_id=fonts.id,
        description="A clean grotesque.",
    )
    await factory.product(
        name="Taxes for Freelancers",
        slug="freelancer-taxes",
        price=2200,
        category_id=books.id,
        description="Instalments and GST/HST explained.",
    )
    await factory.product(name="Hidden Draft", slug="hidden-draft", price=100, category_id=books.id, is_active=False)


def product_names(html: str) -> list[str]:
    return texts(html, "h3")


async def test_home_shows_featured_products_and_categories(client: httpx.AsyncClient, factory: Factory) -> None:
    await seed_catalog(factory)
    response = await client.get("/")
    assert response.status_code == 200
    assert product_names(response.text) == ["Maple Serif"]
    assert "Fonts" in response.text and "E-books" in response.text


async def test_listing_hides_inactive_products_and_sorts(client: httpx.AsyncClient, factory: Factory) -> None:
    await seed_catalog(factory)
    by_price = await client.get("/products", params={"sort": "price_asc"})
    assert product_names(by_price.text) == ["Taxes for Freelancers", "Maple Serif", "Harbour Grotesk"]
    by_price_desc = await client.get("/products", params={"sort": "price_desc"})
    assert product_names(by_price_desc.text) == ["Harbour Grotesk", "Maple Serif", "Taxes for Freelancers"]
    by_name = await client.get("/products", params={"sort": "name"})
    assert product_names(by_name.text) == ["Harbour Grotesk", "Maple Serif", "Taxes for Freelancers"]
    assert "Hidden Draft" not in by_name.text


async def test_filter_by_category_and_search_name_and_description(client: httpx.AsyncClient, factory: Factory) -> None:
    await seed_catalog(factory)
    fonts = await client.get("/products", params={"category": "fonts", "sort": "name"})
    assert product_names(fonts.text) == ["Harbour Grotesk", "Maple Serif"]
    by_description = await client.get("/products", params={"q": "gst/hst"})
    assert product_names(by_description.text) == ["Taxes for Freelancers"]
    by_name_case_insensitive = await client.get("/products", params={"q": "MAPLE"})
    assert product_names(by_name_case_insensitive.text) == ["Maple Serif"]
    wildcard_is_literal = await client.get("/products", params={"q": "%"})
    assert product_names(wildcard_is_literal.text) == []
    assert "No products match" in wildcard_is_literal.text


async def test_unknown_category_or_garbage_parameters_still_render(client: httpx.AsyncClient, factory: Factory) -> None:
    await seed_catalog(factory)
    response = await client.get("/products", params={"category": "nope", "sort": "bogus", "page": "x"})
    assert response.status_code == 200
    assert "No products match" in response.text


async def test_htmx_request_gets_only_the_grid_fragment(client: httpx.AsyncClient, factory: Factory) -> None:
    for i in range(14):
        await factory.product(name=f"Course {i:02d}", slug=f"course-{i:02d}", price=1000 + i)
    page2 = await client.get("/products", params={"sort": "name", "page": "2"}, headers={"HX-Request": "true"})
    assert page2.status_code == 200
    assert page2.headers["vary"].startswith("HX-Request")
    assert "<html" not in page2.text
    assert page2.text.lstrip().startswith('<section id="product-grid"')
    assert product_names(page2.text) == ["Course 12", "Course 13"]
    assert "Page 2 of 2" in page2.text
    assert 'href="/products?sort=name&amp;page=1"' not in page2.text  # page 1 is the default: left out of links
    assert 'href="/products?sort=name"' in page2.text


async def test_boosted_and_history_restore_requests_get_the_full_page(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    await seed_catalog(factory)
    for headers in (
        {"HX-Request": "true", "HX-Boosted": "true"},
        {"HX-Request": "true", "HX-History-Restore-Request": "true"},
    ):
        response = await client.get("/products", headers=headers)
        assert "<html" in response.text


async def test_product_page_has_price_and_seo_tags(client: httpx.AsyncClient, factory: Factory) -> None:
    await seed_catalog(factory)
    response = await client.get("/products/maple-serif")
    assert response.status_code == 200
    html = response.text
    assert "<title>Maple Serif</title>" in html
    assert select_one(html, 'meta[name="description"]').attributes["content"] == "A product"
    assert select_one(html, 'meta[property="og:title"]').attributes["content"] == "Maple Serif"
    image = select_one(html, 'meta[property="og:image"]').attributes["content"]
    assert image == f"http://testserver.local{static_url('img/logo.svg')}"
    assert "$39.00 CAD" in html
    assert "Harbour Grotesk" in html  # related product in the same category


async def test_missing_or_inactive_product_is_a_404_page(client: httpx.AsyncClient, factory: Factory) -> None:
    await seed_catalog(factory)
    for path in ("/products/hidden-draft", "/products/never-existed"):
        response = await client.get(path)
        assert response.status_code == 404
        assert "Page not found" in response.text
        assert "Traceback" not in response.text


async def test_listing_title_names_the_category_and_follows_htmx_swaps(
    client: httpx.AsyncClient, factory: Factory
) -> None:
    await seed_catalog(factory)
    page = await client.get("/products", params={"category": "ebooks", "q": "tax"})
    assert "<title>“tax” — E-books — Products — Cartwright</title>" in page.text
    assert page.text.count("<title>") == 1
    fragment = await client.get("/products", params={"category": "fonts"}, headers={"HX-Request": "true"})
    assert "<title>Fonts — Products — Cartwright</title>" in fragment.text
